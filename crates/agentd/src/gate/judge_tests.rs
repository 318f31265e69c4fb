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

/// configuration.nix with `from` replaced by `to` and an inline module appended to `imports`.
fn with_module(module: &str) -> Files {
    with_imports(&format!("[ ./osmoda.nix {module} ]"))
}

#[test]
fn old_option_names_weak_definitions_and_hidden_modules_are_judged_as_nixos_reads_them() {
    if !nix() {
        return;
    }
    let before = starter();
    // `(case, the changed tree, a kind its effect must have)`.
    let gated: Vec<(&str, Files, &str)> = vec![
        // Names NixOS keeps as aliases of the ones the rules read (review 3, bypasses 1, 3, 4, 11).
        ("sshd by its alias", with_module("{ services.sshd.enable = lib.mkForce false; }"), "service.disable"),
        // Two definitions at one priority (NixOS refuses them): the new value cannot be decided.
        ("sshd's alias at the default priority", with_line("services.sshd.enable = false;"), "service.disable"),
        ("admin group through users.extraUsers", with_module("{ users.extraUsers.alice.extraGroups = lib.mkForce [ ]; }"), "user.demote"),
        ("account through users.extraUsers", with_module("{ users.extraUsers.alice.enable = false; }"), "user.remove"),
        ("keys through users.extraUsers", with_module("{ users.extraUsers.alice.openssh.authorizedKeys.keys = lib.mkForce [ ]; }"), "user.credentials"),
        ("sshd's unit through jobs", with_line("jobs.sshd.enable = false;"), "service.disable"),
        ("sshd's unit through boot.systemd", with_line("boot.systemd.services.sshd.enable = false;"), "service.disable"),
        ("PermitRootLogin by its old name", with_module("{ services.openssh.permitRootLogin = lib.mkForce \"no\"; }"), "ssh.access"),
        ("passwords by the oldest name", with_module("{ services.openssh.challengeResponseAuthentication = lib.mkForce true; services.openssh.settings.PasswordAuthentication = lib.mkForce true; services.openssh.settings.PermitRootLogin = lib.mkForce \"no\"; }"), "ssh.access"),
        // A definition weaker than the option's default is not the value (bypass 2).
        ("sshd on, weaker than its default", edited("    enable = true;\n    settings", "    enable = lib.mkOverride 1600 true;\n    settings"), "service.disable"),
        ("sshd on, as weak as its default", edited("    enable = true;\n    settings", "    enable = lib.mkOptionDefault true;\n    settings"), "service.disable"),
        ("alice's admin group, weaker than its default", edited("extraGroups = [ \"wheel\" ];", "extraGroups = lib.mkOverride 1501 [ \"wheel\" ];"), "user.demote"),
        ("the whole sshd block weaker than the defaults", edited("services.openssh = {", "services.openssh = lib.mkOverride 2000 {"), "service.disable"),
        // Modules NixOS reads that the gate did not follow (bypasses 9, 10).
        ("require of a module", with_line("require = [ ./ssh-off ];"), "gate.undecidable"),
        ("a key hides a module", with_module("{ key = toString ./osmoda.nix; }"), "gate.undecidable"),
        ("a file's own key", edited("{ config, pkgs, lib, ... }:\n\n{", "{ config, pkgs, lib, ... }:\n\n{\n  key = \"hidden\";"), "gate.undecidable"),
    ];
    let mut required = starter();
    required.insert(
        "ssh-off.nix".into(),
        "{ lib, ... }: { services.openssh.enable = lib.mkForce false; }".into(),
    );
    let cfg = required
        .get_mut(Path::new("configuration.nix"))
        .expect("cfg");
    *cfg = cfg.replacen(
        "  networking.hostName = \"osmoda\";",
        "  networking.hostName = \"osmoda\";\n  require = [ ./ssh-off.nix ];",
        1,
    );
    for (name, after, kind) in
        gated
            .iter()
            .chain([&("require of a .nix module", required, "service.disable")])
    {
        let k = kinds(&before, after);
        assert!(k.contains(kind), "{name}: gave {k:?}, wanted {kind}");
    }
    // The same effect by the old and the new name is one effect (one ticket).
    let by = |after: &Files| {
        judge(&before, after, &[], Mutation::Edit)
            .expect("judge")
            .findings
    };
    assert_eq!(
        by(&with_module(
            "{ services.sshd.enable = lib.mkForce false; }"
        )),
        by(&with_module(
            "{ services.openssh.enable = lib.mkForce false; }"
        ))
    );
    assert_eq!(
        by(&edited(
            "    enable = true;\n    settings",
            "    enable = lib.mkOverride 1600 true;\n    settings"
        )),
        by(&edited(
            "    enable = true;\n    settings",
            "    enable = false;\n    settings"
        ))
    );
    // Harmless edits by old names, weak definitions that still win or lose harmlessly, and keys
    // that were there before stay ungated.
    for (name, after) in [
        (
            "X11 forwarding by its old name",
            with_module("{ services.openssh.forwardX11 = true; }"),
        ),
        (
            "a weak default under a stronger one",
            with_module("{ services.openssh.enable = lib.mkOverride 1600 false; }"),
        ),
        (
            "nginx by mkDefault",
            with_line("services.nginx.enable = lib.mkDefault true;"),
        ),
        (
            "a user added through users.extraUsers",
            with_module("{ users.extraUsers.bob.isNormalUser = true; }"),
        ),
        (
            "a service added through jobs",
            with_line("jobs.backup = { script = \"true\"; serviceConfig.DynamicUser = true; };"),
        ),
    ] {
        let k = kinds(&before, &after);
        assert!(k.is_empty(), "{name} is harmless but gave {k:?}");
    }
    let keyed = with_module("{ key = \"extra\"; services.nginx.enable = true; }");
    let mut later = keyed.clone();
    let cfg = later.get_mut(Path::new("configuration.nix")).expect("cfg");
    *cfg = cfg.replacen("time.timeZone = \"UTC\"", "time.timeZone = \"CET\"", 1);
    assert_eq!(kinds(&keyed, &later), Vec::<&str>::new());
}

#[test]
fn a_collection_nixos_fills_too_replaced_by_force_is_judged_by_what_goes_away() {
    if !nix() {
        return;
    }
    let before = starter();
    // `(case, inline module, a kind its effect must have)` (review 3, bypasses 5, 6, 7, 12–15).
    for (name, module, kind) in [
        ("sshd's port, opened by openFirewall", "{ networking.firewall.allowedTCPPorts = lib.mkForce [ 80 ]; }", "firewall.ssh"),
        ("every unit", "{ systemd.services = lib.mkForce { }; }", "service.remove"),
        ("every unit, forced from above", "{ systemd = lib.mkForce { services.nginx.enable = true; }; }", "service.remove"),
        ("every user NixOS defines", "{ users.users = lib.mkForce { alice = { isNormalUser = true; extraGroups = [ \"wheel\" ]; openssh.authorizedKeys.keys = [ \"ssh-ed25519 AAAA alice\" ]; }; }; }", "user.remove"),
        ("wheel's members", "{ users.groups.wheel.members = lib.mkForce [ ]; }", "user.demote"),
        ("wheel's members by the old name", "{ users.extraGroups.wheel.members = lib.mkForce [ \"alice\" ]; }", "user.demote"),
        ("sudo's own rules", "{ security.sudo.extraRules = lib.mkForce [ ]; }", "user.demote"),
        ("the packages every system has", "{ environment.systemPackages = lib.mkForce [ pkgs.git ]; }", "package.remove_critical"),
        ("/etc", "{ environment.etc = lib.mkForce { }; }", "ssh.access"),
        ("PAM", "{ security.pam.services = lib.mkForce { }; }", "ssh.access"),
        ("initrd modules", "{ boot.initrd.availableKernelModules = lib.mkOverride 10 [ ]; }", "boot.kernel"),
        ("a condition that cannot be decided", "{ users.users = lib.mkIf (pkgs ? x) (lib.mkForce { }); }", "user.remove"),
    ] {
        let k = kinds(&before, &with_module(module));
        assert!(k.contains(&kind), "{name}: `{module}` gave {k:?}, wanted {kind}");
    }
    // Forcing a value (not a collection), forcing under a false condition, and a forced list that
    // keeps sshd's port stay ungated; a collection forced before and after is judged by its value.
    for (name, module) in [
        (
            "a forced leaf",
            "{ services.openssh.enable = lib.mkForce true; }",
        ),
        (
            "a forced port list keeping 22",
            "{ networking.firewall.allowedTCPPorts = lib.mkForce [ 22 80 ]; }",
        ),
        (
            "forced under a false condition",
            "{ systemd.services = lib.mkIf false (lib.mkForce { }); }",
        ),
        (
            "one unit forced",
            "{ systemd.services.nginx = lib.mkForce { enable = true; }; }",
        ),
    ] {
        let k = kinds(&before, &with_module(module));
        assert!(
            k.is_empty(),
            "{name}: `{module}` is harmless but gave {k:?}"
        );
    }
    let forced = with_module("{ environment.systemPackages = lib.mkForce [ pkgs.git ]; }");
    let more = with_module("{ environment.systemPackages = lib.mkForce [ pkgs.git pkgs.vim ]; }");
    assert_eq!(kinds(&forced, &more), Vec::<&str>::new());
}

#[test]
fn a_file_of_the_tree_counts_by_its_content_whatever_its_name() {
    if !nix() {
        return;
    }
    let mut before = with_line("users.users.bob = { isNormalUser = true; openssh.authorizedKeys.keyFiles = [ ./keys/bob.pub ]; };\n  environment.etc.\"ssh/sshd_config.d/x.conf\".source = ./x.conf;\n  imports = [ ./extra ];");
    // (`imports` twice is refused by Nix: merge the two lists.)
    let cfg = before.get_mut(Path::new("configuration.nix")).expect("cfg");
    *cfg = cfg
        .replacen("  imports = [ ./osmoda.nix ];\n", "", 1)
        .replacen(
            "imports = [ ./extra ];",
            "imports = [ ./osmoda.nix ./extra ];",
            1,
        );
    before.insert("keys/bob.pub".into(), "ssh-ed25519 AAAA bob\n".into());
    before.insert("x.conf".into(), "ClientAliveInterval 60\n".into());
    before.insert(
        "extra".into(),
        "{ ... }: { services.nginx.enable = true; }\n".into(),
    );
    before.insert("README.md".into(), "notes\n".into());
    // Adding a file under /etc/ssh is judged on its own (`ssh.access`); the rest adds nothing.
    assert_eq!(kinds(&starter(), &before), ["ssh.access"]);
    let rewrite = |f: &str, text: &str| {
        let mut after = before.clone();
        after.insert(f.into(), text.into());
        kinds(&before, &after)
    };
    // Review 3, bypass 8: the key file rewritten; its siblings: a file /etc takes as `source`,
    // a module with another name than `*.nix`.
    assert!(rewrite("keys/bob.pub", "ssh-ed25519 ZZZZ mallory\n").contains(&"user.credentials"));
    assert!(rewrite("keys/bob.pub", "").contains(&"user.credentials"));
    assert!(rewrite("x.conf", "DenyUsers *\n").contains(&"ssh.access"));
    assert!(rewrite(
        "extra",
        "{ lib, ... }: { services.openssh.enable = lib.mkForce false; }\n"
    )
    .contains(&"service.disable"));
    // A file nothing imports or names, and a module rewritten harmlessly, stay ungated.
    assert_eq!(rewrite("README.md", "other notes\n"), Vec::<&str>::new());
    assert_eq!(
        rewrite("notes.txt", "{ services.openssh.enable = false; }"),
        Vec::<&str>::new()
    );
    assert_eq!(
        rewrite(
            "extra",
            "{ ... }: { services.nginx.enable = true; services.redis.servers.a.enable = true; }\n"
        ),
        Vec::<&str>::new()
    );
}

#[test]
fn a_unit_turned_off_by_its_file_name_or_stopped_by_a_conflict_is_judged() {
    if !nix() {
        return;
    }
    check_gated(&[
        // Review 3, bypass 16: NixOS's unit of sshd, by its file name.
        (
            "sshd's unit file off",
            "systemd.units.\"sshd.service\".enable = false;",
            "service.disable",
        ),
        (
            "a unit's file off by force",
            "systemd.units.\"nginx.service\".enable = lib.mkForce false;",
            "service.disable",
        ),
        // Bypass 17: a unit that conflicts with sshd stops it when it starts.
        (
            "a service conflicting with sshd",
            "systemd.services.evil = { wantedBy = [ \"multi-user.target\" ]; conflicts = [ \"sshd.service\" ]; script = \"sleep infinity\"; };",
            "service.disable",
        ),
        (
            "a conflict through unitConfig",
            "systemd.services.evil.unitConfig.Conflicts = \"sshd.service nginx.service\";",
            "service.disable",
        ),
        (
            "a timer conflicting with sshd",
            "systemd.timers.evil = { wantedBy = [ \"timers.target\" ]; conflicts = [ \"sshd.service\" ]; timerConfig.OnCalendar = \"hourly\"; };",
            "service.disable",
        ),
        (
            "a conflict that cannot be decided",
            "systemd.services.evil.conflicts = lib.optional (pkgs ? x) \"sshd.service\";",
            "service.disable",
        ),
    ]);
    check_harmless(&[
        ("a unit file kept on", "systemd.units.\"nginx.service\".enable = true;"),
        (
            "a service stopped at shutdown",
            "systemd.services.backup = { conflicts = [ \"shutdown.target\" ]; before = [ \"shutdown.target\" ]; script = \"true\"; serviceConfig.DynamicUser = true; };",
        ),
        (
            "a service ordered after sshd",
            "systemd.services.tunnel = { after = [ \"sshd.service\" ]; wants = [ \"sshd.service\" ]; script = \"true\"; serviceConfig.DynamicUser = true; };",
        ),
    ]);
}

#[test]
fn sudo_wrappers_login_limits_and_a_home_others_can_write_are_judged() {
    if !nix() {
        return;
    }
    check_gated(&[
        // Review 3, bypasses 21–23.
        ("sudo not setuid", "security.wrappers.sudo.setuid = lib.mkForce false;", "user.demote"),
        ("every setuid wrapper replaced", "security.wrappers = lib.mkForce { };", "user.demote"),
        ("su's wrapper pointed elsewhere", "security.wrappers.su.source = lib.mkForce \"/run/current-system/sw/bin/false\";", "user.demote"),
        ("no logins for alice", "security.pam.loginLimits = [ { domain = \"alice\"; item = \"maxlogins\"; type = \"-\"; value = \"0\"; } ];", "user.demote"),
        ("no processes for wheel", "security.pam.loginLimits = [ { domain = \"@wheel\"; item = \"nproc\"; type = \"hard\"; value = 0; } ];", "user.demote"),
        ("limits that cannot be decided", "security.pam.loginLimits = lib.optionals (pkgs ? x) [ ];", "user.demote"),
        ("alice's home writable by all", "users.users.alice.homeMode = \"777\";", "user.credentials"),
        ("alice's home group-writable", "users.users.alice.homeMode = \"0770\";", "user.credentials"),
    ]);
    check_harmless(&[
        ("more open files", "security.pam.loginLimits = [ { domain = \"*\"; item = \"nofile\"; type = \"-\"; value = \"65536\"; } ];"),
        ("a private home", "users.users.alice.homeMode = \"700\";"),
        ("a wrapper for another program", "security.wrappers.ping = { owner = \"root\"; group = \"root\"; capabilities = \"cap_net_raw+p\"; source = \"${pkgs.iputils}/bin/ping\"; };"),
    ]);
}

mod code;
