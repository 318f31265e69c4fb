//! The gate on whole tree states with the real evaluator: each bypass kind of the last review
//! (imports the gate could not read, users and `/etc` files turned off, sshd narrowed to
//! loopback, boot breakers) as its small case plus siblings, and the harmless edits beside them.

use super::*;

/// The starter tree of `generations/`, with an admin alice.
fn starter() -> Files {
    let mut f = Files::new();
    let cfg = include_str!("../../../../generations/configuration.nix").replace(
        "  networking.firewall = {",
        "  users.users.alice = {\n    isNormalUser = true;\n    extraGroups = [ \"wheel\" ];\n    openssh.authorizedKeys.keys = [ \"ssh-ed25519 AAAA alice\" ];\n  };\n\n  networking.firewall = {",
    );
    f.insert("configuration.nix".into(), cfg);
    f.insert(
        "osmoda.nix".into(),
        include_str!("../../../../generations/osmoda.nix").into(),
    );
    f
}

/// `starter()` with `from` replaced by `to` in configuration.nix.
fn edited(from: &str, to: &str) -> Files {
    let mut f = starter();
    let cfg = f.get_mut(Path::new("configuration.nix")).expect("cfg");
    assert!(cfg.contains(from), "{from:?}");
    *cfg = cfg.replacen(from, to, 1);
    f
}

/// Insert `line` after the opening of configuration.nix's body.
fn with_line(line: &str) -> Files {
    edited(
        "  networking.hostName = \"osmoda\";",
        &format!("  networking.hostName = \"osmoda\";\n  {line}"),
    )
}

fn kinds(before: &Files, after: &Files) -> Vec<&'static str> {
    let e = judge(before, after, &[], Mutation::Edit).expect("judge");
    let mut k: Vec<&str> = e.findings.iter().map(|f| f.kind).collect();
    k.dedup();
    k
}

fn nix() -> bool {
    let ok = osmoda_generations::validate::find_nix_instantiate().is_some();
    if !ok {
        eprintln!("skipped: nix-instantiate not found");
    }
    ok
}

/// `(case, line added to configuration.nix, a kind the effect must have)`.
fn check_gated(cases: &[(&str, &str, &str)]) {
    let before = starter();
    for (name, line, kind) in cases {
        let k = kinds(&before, &with_line(line));
        assert!(
            k.contains(kind),
            "{name}: `{line}` gave {k:?}, wanted {kind}"
        );
    }
}

fn check_harmless(cases: &[(&str, &str)]) {
    let before = starter();
    for (name, line) in cases {
        let k = kinds(&before, &with_line(line));
        assert!(k.is_empty(), "{name}: `{line}` is harmless but gave {k:?}");
    }
}

/// configuration.nix with its `imports` list replaced by `list`.
fn with_imports(list: &str) -> Files {
    edited("imports = [ ./osmoda.nix ];", &format!("imports = {list};"))
}

#[test]
fn imports_the_gate_cannot_read_are_undecidable_and_inline_modules_are_judged() {
    if !nix() {
        return;
    }
    let before = starter();
    for (name, list, kind) in [
        (
            "inline module disables sshd",
            "[ ./osmoda.nix { services.openssh.enable = lib.mkForce false; } ]",
            "service.disable",
        ),
        (
            "inline function module",
            "[ ./osmoda.nix ({ lib, ... }: { services.openssh.enable = lib.mkForce false; }) ]",
            "service.disable",
        ),
        (
            "inline module strips alice",
            "[ ./osmoda.nix { users.users.alice.extraGroups = lib.mkForce [ ]; } ]",
            "user.demote",
        ),
        (
            "nested inline module",
            "[ ./osmoda.nix { imports = [ { services.openssh.enable = lib.mkForce false; } ]; } ]",
            "service.disable",
        ),
        (
            "inline module in full form",
            "[ ./osmoda.nix { config.services.openssh.enable = lib.mkForce false; } ]",
            "service.disable",
        ),
        (
            "absolute path outside the tree",
            "[ ./osmoda.nix /tmp/evil.nix ]",
            "gate.undecidable",
        ),
        (
            "string path",
            "[ ./osmoda.nix \"/tmp/evil.nix\" ]",
            "gate.undecidable",
        ),
        (
            "path built by an expression",
            "[ ./osmoda.nix (/. + \"tmp/evil.nix\") ]",
            "gate.undecidable",
        ),
        (
            "missing file of the tree",
            "[ ./osmoda.nix ./missing.nix ]",
            "gate.undecidable",
        ),
        (
            "entry chosen by a stand-in",
            "[ ./osmoda.nix (if pkgs ? foo then ./osmoda.nix else /tmp/evil.nix) ]",
            "gate.undecidable",
        ),
        (
            "list chosen by a stand-in",
            "[ ./osmoda.nix ] ++ lib.optional (pkgs.foo.bar or false) /tmp/evil.nix",
            "gate.undecidable",
        ),
        (
            "entry that throws",
            "[ ./osmoda.nix (throw \"x\") ]",
            "gate.undecidable",
        ),
        (
            "a module of nixpkgs",
            "[ ./osmoda.nix (modulesPath + \"/profiles/minimal.nix\") ]",
            "gate.undecidable",
        ),
    ] {
        let k = kinds(&before, &with_imports(list));
        assert!(
            k.contains(&kind),
            "{name}: `{list}` gave {k:?}, wanted {kind}"
        );
    }
    // An import the gate cannot read, kept while something else changes, is not judged again;
    // taking it out (its definitions go away unseen) is.
    let with = with_imports("[ ./osmoda.nix /tmp/evil.nix ]");
    let mut other = with.clone();
    let cfg = other.get_mut(Path::new("configuration.nix")).expect("cfg");
    *cfg = cfg.replacen("time.timeZone = \"UTC\"", "time.timeZone = \"CET\"", 1);
    assert_eq!(kinds(&with, &other), Vec::<&str>::new());
    assert_eq!(kinds(&with, &before), ["gate.undecidable"]);
    for (name, list) in [
        (
            "inline module adds a service",
            "[ ./osmoda.nix { services.nginx.enable = true; } ]",
        ),
        (
            "inline function module adds a user",
            "[ ./osmoda.nix ({ ... }: { users.users.bob.isNormalUser = true; }) ]",
        ),
        ("the same file twice", "[ ./osmoda.nix ./osmoda.nix ]"),
    ] {
        let k = kinds(&before, &with_imports(list));
        assert!(k.is_empty(), "{name}: `{list}` is harmless but gave {k:?}");
    }
}

#[test]
fn what_the_options_mean_decides_users_etc_files_sshd_addresses_and_the_boot_chain() {
    if !nix() {
        return;
    }
    check_gated(&[
        // A user turned off is no account (bypass 3).
        (
            "alice turned off",
            "users.users.alice.enable = false;",
            "user.remove",
        ),
        (
            "alice turned off by force",
            "users.users.alice.enable = lib.mkForce (1 == 2);",
            "user.remove",
        ),
        (
            "alice turned off by a stand-in",
            "users.users.alice.enable = pkgs.foo.bar or true;",
            "user.remove",
        ),
        // Login files NixOS writes under /etc (bypass 4).
        (
            "sshd_config turned off",
            "environment.etc.\"ssh/sshd_config\".enable = false;",
            "ssh.access",
        ),
        (
            "sshd_config replaced",
            "environment.etc.\"ssh/sshd_config\".text = \"DenyUsers *\";",
            "ssh.access",
        ),
        (
            "sshd_config from a file",
            "environment.etc.\"ssh/sshd_config\".source = ./osmoda.nix;",
            "ssh.access",
        ),
        (
            "alice's keys turned off",
            "environment.etc.\"ssh/authorized_keys.d/alice\".enable = false;",
            "user.credentials",
        ),
        (
            "alice's keys replaced",
            "environment.etc.\"ssh/authorized_keys.d/alice\".text = \"\";",
            "user.credentials",
        ),
        (
            "alice's keys by another name",
            "environment.etc.keys = { target = \"ssh/authorized_keys.d/alice\"; text = \"\"; };",
            "user.credentials",
        ),
        (
            "PAM for sshd replaced",
            "environment.etc.\"pam.d/sshd\".text = \"auth required pam_deny.so\";",
            "user.demote",
        ),
        (
            "sudoers replaced",
            "environment.etc.sudoers.text = \"\";",
            "user.demote",
        ),
        (
            "a file whose target cannot be decided",
            "environment.etc.x = { target = pkgs.foo.name; text = \"\"; };",
            "ssh.access",
        ),
        (
            "every /etc file undecidable",
            "environment.etc = lib.mapAttrs (n: v: v) config.environment.foo;",
            "ssh.access",
        ),
        // sshd on loopback only, or narrowed from every address (bypass 5).
        (
            "sshd on loopback",
            "services.openssh.listenAddresses = [ { addr = \"127.0.0.1\"; port = 22; } ];",
            "ssh.access",
        ),
        (
            "sshd on IPv6 loopback",
            "services.openssh.listenAddresses = [ { addr = \"[::1]\"; } ];",
            "ssh.access",
        ),
        (
            "sshd on one address",
            "services.openssh.listenAddresses = [ { addr = \"10.0.0.5\"; } ];",
            "ssh.access",
        ),
        // The boot chain (bypass 6).
        (
            "stage 1 stops in a shell",
            "boot.kernelParams = [ \"boot.debug1\" ];",
            "boot.kernel",
        ),
        (
            "stage 1 shell on failure",
            "boot.kernelParams = [ \"boot.shell_on_fail\" ];",
            "boot.kernel",
        ),
        (
            "init replaced",
            "boot.kernelParams = [ \"init=/bin/sh\" ];",
            "boot.kernel",
        ),
        (
            "initrd command before LVM",
            "boot.initrd.preLVMCommands = \"exit 1\";",
            "boot.kernel",
        ),
        (
            "initrd command after devices",
            "boot.initrd.postDeviceCommands = \"poweroff -f\";",
            "boot.kernel",
        ),
        (
            "stage 2 command",
            "boot.postBootCommands = \"poweroff\";",
            "boot.kernel",
        ),
        (
            "disk driver blacklisted",
            "boot.blacklistedKernelModules = [ \"virtio_blk\" ];",
            "boot.kernel",
        ),
        (
            "stage-1 systemd",
            "boot.initrd.systemd.enable = true;",
            "boot.kernel",
        ),
        (
            "modprobe configuration",
            "boot.extraModprobeConfig = \"install virtio_net /bin/false\";",
            "boot.kernel",
        ),
    ]);
    check_harmless(&[
        (
            "a quiet boot",
            "boot.kernelParams = [ \"quiet\" \"loglevel=3\" \"console=ttyS0\" ];",
        ),
        (
            "a kernel module added",
            "boot.kernelModules = [ \"kvm-intel\" ];",
        ),
        ("a sysctl", "boot.kernel.sysctl.\"vm.swappiness\" = 10;"),
        ("tmp on tmpfs", "boot.tmp.useTmpfs = true;"),
        (
            "an /etc file that is not a login file",
            "environment.etc.\"motd.d/hello\".text = \"hi\";",
        ),
        (
            "an /etc file turned off that is not a login file",
            "environment.etc.\"issue\".enable = false;",
        ),
        (
            "a user added",
            "users.users.bob = { isNormalUser = true; enable = true; };",
        ),
        ("alice said to be on", "users.users.alice.enable = true;"),
        (
            "sshd on every address plus loopback",
            "services.openssh.listenAddresses = [ ];",
        ),
        ("a service added", "services.nginx.enable = true;"),
    ]);
    // The SSH port closed: sshd's own opening (`openFirewall`, on by default) keeps it open
    // while the firewall's list drops 22; turning that off too closes it.
    let ports = edited("allowedTCPPorts = [ 22 ];", "allowedTCPPorts = [ 80 ];");
    assert!(kinds(&starter(), &ports).is_empty());
    let mut closed = ports.clone();
    let cfg = closed.get_mut(Path::new("configuration.nix")).expect("cfg");
    *cfg = cfg.replacen(
        "    enable = true;\n    settings",
        "    enable = true;\n    openFirewall = false;\n    settings",
        1,
    );
    assert_eq!(kinds(&starter(), &closed), ["firewall.ssh"]);
    assert_eq!(kinds(&ports, &closed), ["firewall.ssh"]);
    let off = edited(
        "    enable = true;\n    allowedTCPPorts",
        "    enable = false;\n    allowedTCPPorts",
    );
    assert!(
        kinds(&starter(), &off).is_empty(),
        "no firewall: 22 stays open"
    );
    // From loopback back to every address is harmless; from one address to another is not.
    let one = with_line("services.openssh.listenAddresses = [ { addr = \"10.0.0.5\"; } ];");
    assert!(kinds(&one, &starter()).is_empty());
    let other = with_line("services.openssh.listenAddresses = [ { addr = \"10.0.0.6\"; } ];");
    assert_eq!(kinds(&one, &other), ["ssh.access"]);
}
