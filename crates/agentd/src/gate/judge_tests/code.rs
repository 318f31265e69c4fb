//! Root code, what `pkgs.X` is, specialisations and files read with `readFile` (the limits the
//! third review left in docs/STATUS.md), each as its small case plus siblings, with the real
//! evaluator.

use super::*;

#[test]
fn new_or_changed_root_code_needs_a_person_and_a_service_accounts_code_does_not() {
    if !nix() {
        return;
    }
    check_gated(&[
        ("a unit's script", "systemd.services.evil = { wantedBy = [ \"multi-user.target\" ]; script = \"systemctl stop sshd\"; };", "code.root"),
        ("a unit's ExecStart", "systemd.services.evil.serviceConfig.ExecStart = \"/run/current-system/sw/bin/systemctl stop sshd\";", "code.root"),
        ("a unit by its old name", "jobs.evil.script = \"systemctl stop sshd\";", "code.root"),
        ("a unit's preStart", "systemd.services.nginx.preStart = \"rm -rf /root/.ssh\";", "code.root"),
        ("a unit as a login account", "systemd.services.evil = { script = \"rm -rf ~/.ssh\"; serviceConfig.User = \"alice\"; };", "code.root"),
        ("a unit as root by name", "systemd.services.evil = { script = \"true\"; serviceConfig.User = \"root\"; };", "code.root"),
        ("a + line ignores User", "systemd.services.evil.serviceConfig = { User = \"nobody\"; ExecStart = \"+/bin/sh -c 'systemctl stop sshd'\"; };", "code.root"),
        ("a ! line ignores User", "systemd.services.evil.serviceConfig = { DynamicUser = true; ExecStartPre = [ \"-!/bin/true\" ]; ExecStart = \"/bin/true\"; };", "code.root"),
        ("PermissionsStartOnly", "systemd.services.evil = { preStart = \"true\"; serviceConfig = { User = \"nobody\"; PermissionsStartOnly = true; }; };", "code.root"),
        ("an ambient capability", "systemd.services.evil = { script = \"true\"; serviceConfig = { DynamicUser = true; AmbientCapabilities = [ \"CAP_SYS_ADMIN\" ]; }; };", "code.root"),
        ("wheel as a group", "systemd.services.evil = { script = \"true\"; serviceConfig = { User = \"nobody\"; SupplementaryGroups = \"wheel\"; }; };", "code.root"),
        // osModa's own accounts and groups (issue 8 review, thirteenth session, H2): the gateway's
        // user reaches the approval relay, keyd's holds the wallets.
        ("a unit as the gateway's user", "systemd.services.helper = { wantedBy = [ \"multi-user.target\" ]; serviceConfig = { Type = \"oneshot\"; User = \"osmoda-gateway\"; ExecStart = \"/run/current-system/sw/bin/curl --unix-socket /run/osmoda-relay/relay.sock http://x/relay/approval/T\"; }; };", "code.root"),
        ("a unit as keyd's user", "systemd.services.helper = { script = \"rm -rf /var/lib/osmoda/keyd\"; serviceConfig.User = \"osmoda-keyd\"; };", "code.root"),
        ("a unit in the relay's group", "systemd.services.helper = { script = \"true\"; serviceConfig = { User = \"nobody\"; SupplementaryGroups = [ \"osmoda-relay\" ]; }; };", "code.root"),
        ("a unit with osModa's group", "systemd.services.helper = { script = \"true\"; serviceConfig = { DynamicUser = true; Group = \"osmoda\"; }; };", "code.root"),
        ("a unit as a uid", "systemd.services.helper = { script = \"true\"; serviceConfig.User = \"997\"; };", "code.root"),
        ("a unit as a blank-padded name", "systemd.services.helper = { script = \"true\"; serviceConfig.User = \" osmoda-gateway\"; };", "code.root"),
        ("a unit as root padded", "systemd.services.helper = { script = \"true\"; serviceConfig.User = \" root \"; };", "code.root"),
        ("a mount moved onto the homes", "fileSystems.\"/srv/x\" = { mountPoint = \"/home\"; device = \"none\"; fsType = \"tmpfs\"; };", "filesystem.change"),
        ("a tmpfs over /etc/static", "fileSystems.\"/etc/static\" = { device = \"none\"; fsType = \"tmpfs\"; };", "filesystem.change"),
        ("a tmpfs over keyd's state", "fileSystems.\"/var/lib/osmoda/keyd\" = { device = \"none\"; fsType = \"tmpfs\"; };", "filesystem.change"),
        ("a mount unit over the store", "systemd.mounts = [ { what = \"none\"; where = \"/nix/store\"; type = \"tmpfs\"; } ];", "filesystem.change"),
        ("a cron job as the gateway's user", "services.cron.systemCronJobs = [ \"* * * * * osmoda-gateway curl --unix-socket /run/osmoda-relay/relay.sock http://x/\" ];", "code.root"),
        // New mounts over login places (issue 8 review, thirteenth session, H4).
        ("a tmpfs over NixOS's authorized keys", "fileSystems.\"/etc/ssh/authorized_keys.d\" = { device = \"none\"; fsType = \"tmpfs\"; };", "filesystem.change"),
        ("a tmpfs over the homes", "fileSystems.\"/home\" = { device = \"none\"; fsType = \"tmpfs\"; };", "filesystem.change"),
        ("a tmpfs over sshd's configuration", "fileSystems.\"/etc/ssh\" = { device = \"none\"; fsType = \"tmpfs\"; };", "filesystem.change"),
        ("a mount unit over root's home", "systemd.mounts = [ { what = \"none\"; where = \"/root\"; type = \"tmpfs\"; wantedBy = [ \"multi-user.target\" ]; } ];", "filesystem.change"),
        ("an automount over /home", "systemd.automounts = [ { where = \"/home\"; wantedBy = [ \"multi-user.target\" ]; } ];", "filesystem.change"),
        ("a user that cannot be decided", "systemd.services.evil = { script = \"true\"; serviceConfig.User = config.users.users.alice.name; };", "code.root"),
        ("a user unit", "systemd.user.services.evil.script = \"rm -rf ~/.ssh\";", "code.root"),
        ("an environment that changes root code", "systemd.services.nginx.environment.LD_PRELOAD = \"/tmp/evil.so\";", "code.root"),
        ("a socket's hook", "systemd.sockets.evil.socketConfig.ExecStartPre = \"/bin/sh -c 'systemctl stop sshd'\";", "code.root"),
        ("an activation script", "system.activationScripts.evil = \"systemctl stop sshd\";", "code.root"),
        ("an activation script with deps", "system.activationScripts.evil = lib.stringAfter [ \"users\" ] \"rm -rf /root/.ssh\";", "code.root"),
        ("NixOS's activation script replaced", "system.activationScripts.users = lib.mkForce \"\";", "code.root"),
        ("every activation script replaced", "system.activationScripts = lib.mkForce { };", "code.root"),
        ("a user activation script", "system.userActivationScripts.evil = \"rm -rf ~/.ssh\";", "code.root"),
        ("power-up commands", "powerManagement.powerUpCommands = \"systemctl stop sshd\";", "code.root"),
        ("network commands", "networking.localCommands = \"ip link set eth0 down\";", "code.root"),
        ("shell start-up code", "environment.shellInit = \"exit 1\";", "code.root"),
        ("bash interactive start-up", "programs.bash.interactiveShellInit = \"logout\";", "code.root"),
        ("a root cron job", "services.cron.systemCronJobs = [ \"* * * * * root systemctl stop sshd\" ];", "code.root"),
        ("a cron job at boot as alice", "services.cron.systemCronJobs = [ \"@reboot alice rm -rf ~/.ssh\" ];", "code.root"),
        ("a udev rule running a program", "services.udev.extraRules = ''ACTION==\"add\", RUN+=\"/bin/sh -c 'systemctl stop sshd'\"'';", "code.root"),
        ("tmpfiles removing a home's .ssh", "systemd.tmpfiles.rules = [ \"R /home/alice/.ssh - - - - -\" ];", "code.root"),
        ("tmpfiles removing root's keys", "systemd.tmpfiles.rules = [ \"r /root/.ssh/authorized_keys\" ];", "code.root"),
        ("tmpfiles on /etc recursively", "systemd.tmpfiles.rules = [ \"Z /etc 0777 - - -\" ];", "code.root"),
        ("tmpfiles with a specifier", "systemd.tmpfiles.rules = [ \"R %h/.ssh\" ];", "code.root"),
        ("tmpfiles with a glob", "systemd.tmpfiles.rules = [ \"R /home/*/.ssh\" ];", "code.root"),
        ("tmpfiles by a dotted path", "systemd.tmpfiles.rules = [ \"R /var/../home/alice/.ssh\" ];", "code.root"),
        ("tmpfiles settings", "systemd.tmpfiles.settings.evil.\"/home/alice/.ssh\".R = { };", "code.root"),
        ("an overlay", "nixpkgs.overlays = [ (final: prev: { openssh = prev.dropbear; }) ];", "code.root"),
        ("packageOverrides", "nixpkgs.config.packageOverrides = pkgs: { sudo = pkgs.hello; };", "code.root"),
        ("nixpkgs' config as a function", "nixpkgs.config = pkgs: { };", "code.root"),
        ("another pkgs", "_module.args.pkgs = lib.mkForce { };", "code.root"),
        ("nixpkgs.pkgs", "nixpkgs.pkgs = { };", "code.root"),
        ("a specialisation", "specialisation.rescue.configuration = { services.openssh.enable = lib.mkForce false; };", "gate.undecidable"),
        ("a specialisation as a function", "specialisation.rescue.configuration = { lib, ... }: { };", "gate.undecidable"),
    ]);
    check_harmless(&[
        ("a service account's script", "systemd.services.app = { wantedBy = [ \"multi-user.target\" ]; script = \"sleep infinity\"; serviceConfig.DynamicUser = true; };"),
        ("a named service account", "systemd.services.app = { script = \"true\"; serviceConfig.User = \"nobody\"; };"),
        ("a data disk", "fileSystems.\"/srv/data\" = { device = \"/dev/vdb\"; fsType = \"ext4\"; };"),
        ("a mount unit for an app", "systemd.mounts = [ { what = \"none\"; where = \"/var/lib/app/cache\"; type = \"tmpfs\"; } ];"),
        ("an account whose name only starts like osModa's", "systemd.services.app = { script = \"true\"; serviceConfig = { User = \"osmodafan\"; Group = \"nogroup\"; }; };"),
        ("low ports only", "systemd.services.app.serviceConfig = { User = \"app\"; ExecStart = \"/bin/app\"; AmbientCapabilities = [ \"CAP_NET_BIND_SERVICE\" ]; };"),
        ("a unit's order", "systemd.services.nginx = { wantedBy = [ \"multi-user.target\" ]; after = [ \"network.target\" ]; };"),
        ("a unit's restart policy", "systemd.services.nginx.serviceConfig.Restart = \"always\";"),
        ("a tmpfiles directory for an app", "systemd.tmpfiles.rules = [ \"d /var/lib/app 0750 nobody nogroup -\" \"x /tmp/keep\" ];"),
        ("tmpfiles settings for an app", "systemd.tmpfiles.settings.app.\"/var/lib/app\".d = { mode = \"0750\"; };"),
        ("unfree packages", "nixpkgs.config.allowUnfree = true;"),
        ("shell aliases", "environment.shellAliases.ll = \"ls -l\";"),
        ("bash completion", "programs.bash.completion.enable = true;"),
        ("a cron job as a service account", "services.cron.systemCronJobs = [ \"0 3 * * * nobody /bin/true\" ];"),
        ("a udev rule naming a device", "services.udev.extraRules = ''SUBSYSTEM==\"net\", ATTR{address}==\"aa:bb:cc:dd:ee:ff\", NAME=\"lan0\"'';"),
        ("an empty activation script", "system.activationScripts = { };"),
        // Opening the firewall exposes the machine but locks nobody out and removes nothing it
        // protects (docs/api.md): not gated.
        ("every TCP port open", "networking.firewall.allowedTCPPortRanges = [ { from = 1; to = 65535; } ];"),
        ("a trusted interface", "networking.firewall.trustedInterfaces = [ \"eth0\" ];"),
    ]);
    let off = edited(
        "enable = true;\n    allowedTCPPorts",
        "enable = false;\n    allowedTCPPorts",
    );
    assert!(kinds(&starter(), &off).is_empty(), "the firewall off");
}

/// `starter()` plus `extra` as a module file `units.nix` imported from configuration.nix.
fn with_units(extra: &str) -> Files {
    let mut f = with_imports("[ ./osmoda.nix ./units.nix ]");
    f.insert("units.nix".into(), extra.into());
    f
}

#[test]
fn root_code_the_gate_cannot_read_is_bound_to_its_files_text() {
    if !nix() {
        return;
    }
    let unit = |user: &str, pkg: &str, cmd: &str| {
        format!("{{ pkgs, ... }}: {{ systemd.services.x.serviceConfig = {{ {user} ExecStart = \"${{pkgs.{pkg}}}/bin/{cmd}\"; }}; }}\n")
    };
    // Names packages: the bare world cannot build the string, so it is undecidable.
    let before = with_units(&unit("", "hello", "hello"));
    let after = with_units(&unit("", "systemd", "systemctl stop sshd"));
    assert_eq!(kinds(&before, &after), ["code.root"]);
    let overlay = |body: &str| {
        format!("{{ ... }}: {{ nixpkgs.overlays = [ (final: prev: {{ {body} }}) ]; }}\n")
    };
    let before = with_units(&overlay("hello = prev.hello;"));
    let after = with_units(&overlay("openssh = prev.dropbear;"));
    assert_eq!(kinds(&before, &after), ["code.root"]);
    let spec = |body: &str| {
        format!("{{ ... }}: {{ specialisation.x.configuration = {{ lib, ... }}: {{ {body} }}; }}\n")
    };
    let before = with_units(&spec(""));
    let after = with_units(&spec("services.openssh.enable = lib.mkForce false;"));
    assert_eq!(kinds(&before, &after), ["gate.undecidable"]);
    // A line the gate cannot read may start with `+` (full privileges whatever `User` says),
    // so a service account's such code counts too; one it reads does not.
    let before = with_units(&unit("DynamicUser = true;", "hello", "hello"));
    let after = with_units(&unit(
        "DynamicUser = true;",
        "systemd",
        "systemctl stop sshd",
    ));
    assert_eq!(kinds(&before, &after), ["code.root"]);
    let plain = |cmd: &str| {
        format!("{{ ... }}: {{ systemd.services.x.serviceConfig = {{ DynamicUser = true; ExecStart = \"/run/current-system/sw/bin/{cmd}\"; }}; }}\n")
    };
    assert!(kinds(
        &with_units(&plain("hello")),
        &with_units(&plain("systemctl stop sshd"))
    )
    .is_empty());
    // An edit of another file is not bound to that code.
    let before = with_units(&unit("", "hello", "hello"));
    let mut after = before.clone();
    let cfg = after.get_mut(Path::new("configuration.nix")).expect("cfg");
    *cfg = cfg.replacen("time.timeZone = \"UTC\"", "time.timeZone = \"CET\"", 1);
    assert!(kinds(&before, &after).is_empty());
}

/// `starter()` where alice's keys are read from `alice.keys` by `keys` (a Nix expression).
fn keys_from_file(keys: &str, file: &str) -> Files {
    let mut f = edited(
        "openssh.authorizedKeys.keys = [ \"ssh-ed25519 AAAA alice\" ];",
        &format!("openssh.authorizedKeys.keys = {keys};"),
    );
    f.insert("alice.keys".into(), file.into());
    f
}

#[test]
fn a_file_read_with_read_file_is_part_of_the_value_it_feeds() {
    if !nix() {
        return;
    }
    let two = "ssh-ed25519 AAAA alice\nssh-ed25519 BBBB alice@desk\n";
    let one = "ssh-ed25519 BBBB alice@desk\n";
    let three =
        "ssh-ed25519 AAAA alice\nssh-ed25519 BBBB alice@desk\nssh-ed25519 CCCC alice@phone\n";
    for keys in [
        "lib.splitString \"\\n\" (builtins.readFile ./alice.keys)",
        "lib.strings.splitString \"\\n\" (lib.fileContents ./alice.keys)",
        "builtins.filter (k: k != \"\") (lib.splitString \"\\n\" (__readFile ./alice.keys))",
        "[ (builtins.head (lib.splitString \"\\n\" (builtins.readFile (./. + \"/alice.keys\")))) ]",
    ] {
        let before = keys_from_file(keys, two);
        let e = judge(&before, &keys_from_file(keys, one), &[], Mutation::Edit).expect("judge");
        let k: Vec<&str> = e.findings.iter().map(|f| f.kind).collect();
        assert!(k.contains(&"user.credentials"), "{keys}: {:?}", e.findings);
        assert!(
            !k.contains(&"gate.undecidable"),
            "{keys}: decided: {:?}",
            e.findings
        );
        assert!(
            kinds(&before, &keys_from_file(keys, three)).is_empty(),
            "{keys}: a key added"
        );
    }
    // Where the reading module has a value the gate cannot decide, rewriting the file is
    // undecidable.
    let keys = "lib.mkIf config.services.openssh.enable (lib.splitString \"\\n\" (builtins.readFile ./alice.keys))";
    let e = judge(
        &keys_from_file(keys, two),
        &keys_from_file(keys, three),
        &[],
        Mutation::Edit,
    )
    .expect("judge");
    assert_eq!(
        e.findings
            .iter()
            .map(|f| (f.kind, f.path.as_str()))
            .collect::<Vec<_>>(),
        [("gate.undecidable", "alice.keys (read by configuration.nix)")]
    );
}
