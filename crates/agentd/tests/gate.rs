//! The approval gate end to end: a real agentd on a real git tree, every change judged by its
//! evaluated effect (the Nix evaluator), tickets opened by the refusal and bound to the effect.

mod common;

use common::{git, ClientExt, Daemon};
use osmoda_client::Response;
use serde_json::{json, Value};
use std::time::Duration;

const CFG: &str = "configuration.nix";
const OSM: &str = "osmoda.nix";

/// The starter tree plus, as separate generations: sshd's firewall opening turned off (port 22
/// stays open through `allowedTCPPorts`), sshd turned off and on again, an admin user alice, a
/// user bob, and a mesh peer, a wallet and an egress capability.
struct Fixture {
    d: Daemon,
    /// The generation that turned sshd back on.
    sshd_on: String,
    /// The generation that added alice.
    alice: String,
    /// The generation before alice.
    before_alice: String,
}

fn commit_file(d: &Daemon, file: &str, from: &str, to: &str, msg: &str) -> String {
    let path = d.tree_dir().join(file);
    let text = std::fs::read_to_string(&path).expect("read");
    assert!(text.contains(from), "{file} lacks {from:?}");
    std::fs::write(&path, text.replacen(from, to, 1)).expect("write");
    let dir = d.tree_dir();
    git(
        &dir,
        &[
            "-c",
            "user.name=Test Person",
            "-c",
            "user.email=t@example.org",
            "commit",
            "-qam",
            msg,
        ],
    );
    git(&dir, &["rev-parse", "HEAD"]).trim().to_string()
}

const ALICE: &str = r#"  users.users.alice = {
    isNormalUser = true;
    extraGroups = [ "wheel" ];
    openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIalice alice@laptop" ];
    hashedPassword = "$6$salt$0123456789abcdef";
  };

  networking.firewall = {"#;

const BOB: &str = r#"  time.timeZone = "UTC";

  users.users.bob = {
    isNormalUser = true;
    openssh.authorizedKeys.keys = [ "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIbob bob@desk" ];
  };"#;

const OSMODA: &str = r#"  services.osmoda = {
    enable = true;

    mesh.peers.relay = {
      endpoint = "10.0.0.2:18800";
      publicKeys = { ed25519 = "AAAA"; x25519 = "BBBB"; mlKem768 = "CCCC"; };
    };
    keyd.policy.wallets.main = {
      dailyLimit = "1000000000000000000";
    };
    egress.capabilities.web = {
      domains = [ "example.org" ];
    };
"#;

async fn fixture(settings: agentd::Settings) -> Fixture {
    let d = Daemon::start_with_tree_and(settings).await;
    commit_file(
        &d,
        CFG,
        "    enable = true;\n    settings",
        "    enable = true;\n    openFirewall = false;\n    settings",
        "sshd: no automatic firewall opening",
    );
    let on = "    enable = true;\n    openFirewall";
    let off = "    enable = false;\n    openFirewall";
    commit_file(&d, CFG, on, off, "sshd off");
    let sshd_on = commit_file(&d, CFG, off, on, "sshd on");
    let before_alice = sshd_on.clone();
    let alice = commit_file(&d, CFG, "  networking.firewall = {", ALICE, "add alice");
    commit_file(&d, CFG, "  time.timeZone = \"UTC\";", BOB, "add bob");
    commit_file(
        &d,
        OSM,
        "  services.osmoda = {\n    enable = true;\n",
        OSMODA,
        "add a peer, a wallet, a capability",
    );
    Fixture {
        d,
        sshd_on,
        alice,
        before_alice,
    }
}

/// One way to ask for a change.
#[derive(Clone, Debug)]
enum Edit {
    Set(&'static str, &'static str, Value),
    Nix(&'static str, &'static str, &'static str),
    Unset(&'static str, &'static str),
    /// Append a raw Nix value to a list.
    Append(&'static str, &'static str, &'static str),
    /// Revert the fixture generation that turned sshd on.
    RevertSshdOn,
    /// Revert the fixture generation that added alice.
    RevertAlice,
    /// Edit configuration.nix by hand (replace the first text by the second) and commit it.
    Hand(&'static str, &'static str),
    /// Edit a file of the tree by hand (replace the first text by the second) and commit it.
    HandIn(&'static str, &'static str, &'static str),
}

async fn send(f: &Fixture, e: &Edit, approval: Option<&str>) -> Response {
    let mut body = match e {
        Edit::Set(file, path, v) => json!({"file": file, "path": path, "value": v}),
        Edit::Nix(file, path, n) | Edit::Append(file, path, n) => {
            json!({"file": file, "path": path, "nix": n})
        }
        Edit::Unset(file, path) => json!({"file": file, "path": path}),
        Edit::RevertSshdOn => json!({"rev": f.sshd_on}),
        Edit::RevertAlice => json!({"rev": f.alice}),
        Edit::Hand(from, to) | Edit::HandIn(_, from, to) => {
            let file = match e {
                Edit::HandIn(file, ..) => file,
                _ => CFG,
            };
            let p = f.d.tree_dir().join(file);
            let text = std::fs::read_to_string(&p).expect("read");
            assert!(text.contains(from), "{file} lacks {from:?}");
            std::fs::write(&p, text.replacen(from, to, 1)).expect("write");
            json!({})
        }
    };
    body["reason"] = json!(format!("test {e:?}"));
    if let Some(a) = approval {
        body["approval"] = json!(a);
    }
    let endpoint = match e {
        Edit::Set(..) | Edit::Nix(..) => "/config/set",
        Edit::Unset(..) => "/config/unset",
        Edit::Append(..) => "/config/append",
        Edit::RevertSshdOn | Edit::RevertAlice => "/config/revert",
        Edit::Hand(..) | Edit::HandIn(..) => "/config/commit",
    };
    let r = f.d.agent().post(endpoint, &body).await.expect("post");
    if matches!(e, Edit::Hand(..) | Edit::HandIn(..)) && r.status != 200 {
        // A refused commit leaves the hand edit in place; put the file back for the next case.
        git(&f.d.tree_dir(), &["checkout", "--", "."]);
    }
    r
}

fn commits(d: &Daemon) -> usize {
    git(&d.tree_dir(), &["rev-list", "--count", "HEAD"])
        .trim()
        .parse()
        .expect("count")
}

struct Case {
    name: &'static str,
    kind: &'static str,
    /// Different phrasings of one effect: the first opens the ticket, the last lands with it.
    phrasings: Vec<Edit>,
}

fn settings_with_htop_critical() -> agentd::Settings {
    let mut s = agentd::Settings::default();
    s.critical_packages.push("htop".into());
    s
}

/// A module outside the tree (as `/fs/write` could leave one) that strips alice's admin group.
fn outside_module() -> &'static str {
    static PATH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PATH.get_or_init(|| {
        let p =
            std::env::temp_dir().join(format!("osmoda-gate-outside-{}.nix", std::process::id()));
        std::fs::write(
            &p,
            "{ lib, ... }: { users.users.alice.extraGroups = lib.mkForce [ ]; }\n",
        )
        .expect("write");
        p.display().to_string()
    })
}

fn cases() -> Vec<Case> {
    use Edit::*;
    let outside = outside_module();
    let outside_list: &'static str =
        Box::leak(format!("[ ./osmoda.nix {outside} ]").into_boxed_str());
    vec![
        // The review's bypasses of the second session of 2026-11-30 (docs/STATUS.md).
        Case {
            name: "an inline module disables sshd",
            kind: "service.disable",
            phrasings: vec![
                Append(
                    CFG,
                    "imports",
                    "{ services.openssh.enable = lib.mkForce false; }",
                ),
                Append(
                    CFG,
                    "imports",
                    "({ lib, ... }: { services.openssh.enable = lib.mkForce false; })",
                ),
                Append(
                    CFG,
                    "imports",
                    "{ imports = [ { services.openssh.enable = lib.mkForce false; } ]; }",
                ),
                Set(CFG, "services.openssh.enable", json!(false)),
            ],
        },
        Case {
            name: "a module outside the tree is imported",
            kind: "gate.undecidable",
            phrasings: vec![
                Append(CFG, "imports", outside),
                Nix(CFG, "imports", outside_list),
            ],
        },
        Case {
            name: "alice turned off",
            kind: "user.remove",
            phrasings: vec![
                Set(CFG, "users.users.alice.enable", json!(false)),
                Nix(CFG, "users.users.alice.enable", "lib.mkForce (1 == 2)"),
                Unset(CFG, "users.users.alice"),
            ],
        },
        Case {
            name: "sshd_config replaced through /etc",
            kind: "ssh.access",
            phrasings: vec![
                Set(
                    CFG,
                    "environment.etc",
                    json!({"ssh/sshd_config": {"text": "DenyUsers *"}}),
                ),
                Nix(
                    CFG,
                    "environment.etc",
                    "{ \"ssh/sshd_config\".text = \"DenyUsers \" + \"*\"; }",
                ),
            ],
        },
        Case {
            name: "alice's authorized keys turned off through /etc",
            kind: "user.credentials",
            phrasings: vec![
                Set(
                    CFG,
                    "environment.etc",
                    json!({"ssh/authorized_keys.d/alice": {"enable": false}}),
                ),
                Nix(
                    CFG,
                    "environment.etc",
                    "{ \"ssh/authorized_keys.d/alice\".enable = 1 == 2; }",
                ),
            ],
        },
        Case {
            name: "sshd listens on loopback only",
            kind: "ssh.access",
            phrasings: vec![
                Set(
                    CFG,
                    "services.openssh.listenAddresses",
                    json!([{"addr": "127.0.0.1"}]),
                ),
                Nix(
                    CFG,
                    "services.openssh.listenAddresses",
                    "[ { addr = \"127.0.0.\" + \"1\"; } ]",
                ),
            ],
        },
        Case {
            name: "stage 1 stops in a shell",
            kind: "boot.kernel",
            phrasings: vec![
                Set(CFG, "boot.kernelParams", json!(["boot.debug1"])),
                Nix(CFG, "boot.kernelParams", "[ (\"boot.\" + \"debug1\") ]"),
            ],
        },
        Case {
            name: "the initrd powers off before LVM",
            kind: "boot.kernel",
            phrasings: vec![
                Set(CFG, "boot.initrd.preLVMCommands", json!("poweroff -f")),
                Nix(CFG, "boot.initrd.preLVMCommands", "\"poweroff\" + \" -f\""),
            ],
        },
        Case {
            name: "a disk driver blacklisted",
            kind: "boot.kernel",
            phrasings: vec![
                Set(CFG, "boot.blacklistedKernelModules", json!(["virtio_blk"])),
                Nix(
                    CFG,
                    "boot.blacklistedKernelModules",
                    "[ (\"virtio\" + \"_blk\") ]",
                ),
            ],
        },
        Case {
            name: "sshd disabled",
            kind: "service.disable",
            phrasings: vec![
                Set(CFG, "services.openssh.enable", json!(false)),
                Nix(CFG, "services.openssh.enable", "false"),
                Nix(CFG, "services.openssh.enable", "!true"),
                Nix(CFG, "services.openssh.enable", "lib.mkForce false"),
                Set(CFG, "services.openssh", json!({"enable": false})),
                Nix(
                    CFG,
                    "services.openssh",
                    "lib.mkMerge [ { enable = false; } ]",
                ),
                Nix(CFG, "services.openssh.enable", "lib.mkMerge [ false ]"),
                RevertSshdOn,
                Hand(
                    "    enable = true;\n    openFirewall",
                    "    enable = false;\n    openFirewall",
                ),
            ],
        },
        Case {
            name: "sshd off where only the stand-ins could tell",
            kind: "service.disable",
            phrasings: vec![
                Nix(
                    CFG,
                    "services.openssh.enable",
                    "!(builtins.isString pkgs.openssh.version)",
                ),
                Nix(
                    CFG,
                    "services.openssh.enable",
                    "(builtins.tryEval (throw \"x\")).success",
                ),
                Nix(
                    CFG,
                    "services.openssh.enable",
                    "builtins.getEnv \"HOME\" == \"\"",
                ),
                Nix(
                    CFG,
                    "services.openssh.enable",
                    "builtins.pathExists ./hardware.nix",
                ),
                Nix(
                    CFG,
                    "services.openssh.enable",
                    "builtins.length (builtins.attrNames pkgs) < 100",
                ),
            ],
        },
        Case {
            name: "sshd block removed",
            kind: "service.remove",
            phrasings: vec![
                Unset(CFG, "services.openssh"),
                Set(CFG, "services", json!({})),
                Set(CFG, "services.openssh", json!({})),
                Nix(CFG, "services.openssh", "lib.mkIf false { enable = true; }"),
            ],
        },
        Case {
            name: "alice emptied",
            kind: "user.demote",
            phrasings: vec![
                Set(CFG, "users.users.alice", json!({})),
                Nix(CFG, "users.users.alice", "{ }"),
                Set(CFG, "users.users.alice", json!({"isNormalUser": false})),
            ],
        },
        Case {
            name: "alice not a normal user",
            kind: "user.demote",
            phrasings: vec![
                Nix(CFG, "users.users.alice.isNormalUser", "false"),
                Set(CFG, "users.users.alice.isNormalUser", json!(false)),
                Nix(CFG, "users.users.alice.isNormalUser", "!true"),
                Unset(CFG, "users.users.alice.isNormalUser"),
            ],
        },
        Case {
            name: "alice removed",
            kind: "user.remove",
            phrasings: vec![
                Unset(CFG, "users.users.alice"),
                Nix(
                    CFG,
                    "users.users.alice",
                    "lib.mkIf false { isNormalUser = true; }",
                ),
                RevertAlice,
            ],
        },
        Case {
            name: "alice loses her key",
            kind: "user.credentials",
            phrasings: vec![
                Set(
                    CFG,
                    "users.users.alice.openssh.authorizedKeys.keys",
                    json!([]),
                ),
                Unset(CFG, "users.users.alice.openssh"),
            ],
        },
        Case {
            name: "every mesh peer removed",
            kind: "mesh.peer.remove",
            phrasings: vec![
                Set(OSM, "services.osmoda.mesh.peers", json!({})),
                Unset(OSM, "services.osmoda.mesh.peers.relay"),
                Unset(OSM, "services.osmoda.mesh"),
            ],
        },
        Case {
            name: "sshd unit disabled",
            kind: "service.disable",
            phrasings: vec![
                Set(CFG, "systemd.services.sshd.enable", json!(false)),
                Nix(CFG, "systemd.services.sshd.enable", "lib.mkForce (1 == 2)"),
            ],
        },
        Case {
            name: "wallet removed",
            kind: "wallet.delete",
            phrasings: vec![
                Unset(OSM, "services.osmoda.keyd.policy.wallets.main"),
                Set(OSM, "services.osmoda.keyd.policy.wallets", json!({})),
            ],
        },
        Case {
            name: "capability removed",
            kind: "capability.remove",
            phrasings: vec![
                Unset(OSM, "services.osmoda.egress.capabilities.web"),
                Set(OSM, "services.osmoda.egress", json!({})),
            ],
        },
        Case {
            name: "ledger checkpoints turned off",
            kind: "audit.weaken",
            phrasings: vec![
                Set(
                    OSM,
                    "services.osmoda.agentd.ledger.checkpoint.enable",
                    json!(false),
                ),
                Nix(
                    OSM,
                    "services.osmoda.agentd.ledger.checkpoint.enable",
                    "1 == 2",
                ),
            ],
        },
        Case {
            name: "backup retention cut to one archive",
            kind: "audit.weaken",
            phrasings: vec![
                Set(OSM, "services.osmoda.agentd.backup.keep", json!(1)),
                Nix(OSM, "services.osmoda.agentd.backup.keep", "7 - 6"),
            ],
        },
        Case {
            name: "wallet limit raised",
            kind: "policy.weaken",
            phrasings: vec![
                Set(
                    OSM,
                    "services.osmoda.keyd.policy.wallets.main.dailyLimit",
                    json!("1000000000000000000000"),
                ),
                Nix(
                    OSM,
                    "services.osmoda.keyd.policy.wallets.main",
                    "{ dailyLimit = \"1000000000000000000000\"; }",
                ),
            ],
        },
        Case {
            name: "a chain allowed without a threshold",
            kind: "policy.weaken",
            phrasings: vec![
                Set(
                    OSM,
                    "services.osmoda.keyd.policy.chains.solana",
                    json!({"perTxMax": "1000000000000000", "dailyLimit": "1000000000000000"}),
                ),
                Nix(
                    OSM,
                    "services.osmoda.keyd.policy.chains",
                    "{ solana = { perTxMax = \"1000000000000000\"; dailyLimit = \"1000000000000000\"; }; }",
                ),
            ],
        },
        Case {
            name: "every path writable without a person",
            kind: "policy.weaken",
            phrasings: vec![
                Set(OSM, "services.osmoda.agentd.writableRoots", json!(["/"])),
                Nix(
                    OSM,
                    "services.osmoda.agentd.writableRoots",
                    "[ (\"/\" + \"\") ]",
                ),
            ],
        },
        Case {
            name: "sshd moved to another port",
            kind: "ssh.access",
            phrasings: vec![
                Set(CFG, "services.openssh.ports", json!([2222])),
                Nix(CFG, "services.openssh.ports", "[ (2000 + 222) ]"),
            ],
        },
        Case {
            name: "root login forbidden",
            kind: "ssh.access",
            phrasings: vec![
                Set(
                    CFG,
                    "services.openssh.settings.PermitRootLogin",
                    json!("no"),
                ),
                Nix(
                    CFG,
                    "services.openssh.settings.PermitRootLogin",
                    "\"n\" + \"o\"",
                ),
            ],
        },
        Case {
            name: "firewall closes ssh",
            kind: "firewall.ssh",
            phrasings: vec![
                Set(CFG, "networking.firewall.allowedTCPPorts", json!([])),
                Nix(CFG, "networking.firewall.allowedTCPPorts", "[ 80 443 ]"),
            ],
        },
        Case {
            name: "sshd refuses everyone",
            kind: "ssh.access",
            phrasings: vec![
                Set(CFG, "services.openssh.extraConfig", json!("DenyUsers *")),
                Nix(
                    CFG,
                    "services.openssh.extraConfig",
                    "\"DenyUsers \" + \"*\"",
                ),
            ],
        },
        Case {
            name: "sshd's unit no longer runs sshd",
            kind: "ssh.access",
            phrasings: vec![
                Set(
                    CFG,
                    "systemd.services.sshd.serviceConfig.ExecStart",
                    json!("/bin/true"),
                ),
                Nix(
                    CFG,
                    "systemd.services.sshd",
                    "{ serviceConfig.ExecStart = \"/bin/\" + \"true\"; }",
                ),
            ],
        },
        Case {
            name: "custom firewall rule drops ssh",
            kind: "firewall.ssh",
            phrasings: vec![
                Set(
                    CFG,
                    "networking.firewall.extraCommands",
                    json!("iptables -I INPUT -p tcp --dport 22 -j DROP"),
                ),
                Nix(
                    CFG,
                    "networking.firewall.extraCommands",
                    "\"iptables -I INPUT -p tcp --dport ${toString 22} -j DROP\"",
                ),
            ],
        },
        Case {
            name: "alice gets a shell nobody logs in with",
            kind: "user.demote",
            phrasings: vec![
                Set(
                    CFG,
                    "users.users.alice.shell",
                    json!("/run/current-system/sw/bin/nologin"),
                ),
                Nix(
                    CFG,
                    "users.users.alice.shell",
                    "\"/run/current-system/sw/bin/\" + \"nologin\"",
                ),
            ],
        },
        Case {
            name: "wheel loses sudo",
            kind: "user.demote",
            phrasings: vec![
                Set(CFG, "security.sudo.enable", json!(false)),
                Nix(CFG, "security.sudo.enable", "lib.mkForce (!true)"),
            ],
        },
        Case {
            name: "the machine stops asking for an address",
            kind: "ssh.access",
            phrasings: vec![
                Set(CFG, "networking.useDHCP", json!(false)),
                Nix(CFG, "networking.useDHCP", "1 == 2"),
            ],
        },
        Case {
            name: "disabledModules turns off a module of the tree",
            kind: "mesh.peer.remove",
            phrasings: vec![
                Nix(CFG, "disabledModules", "[ ./osmoda.nix ]"),
                Nix(CFG, "disabledModules", "[ (./. + \"/osmoda.nix\") ]"),
            ],
        },
        Case {
            name: "disabledModules turns off a NixOS module",
            kind: "gate.undecidable",
            phrasings: vec![
                Nix(
                    CFG,
                    "disabledModules",
                    "[ \"services/networking/ssh/sshd.nix\" ]",
                ),
                Nix(
                    CFG,
                    "disabledModules",
                    "[ (\"services/networking/ssh/\" + \"sshd.nix\") ]",
                ),
            ],
        },
        // The third review of issue 8 (docs/STATUS.md): names NixOS reads that the gate did not.
        Case {
            name: "sshd off by its alias",
            kind: "service.disable",
            phrasings: vec![
                Nix(CFG, "services.sshd.enable", "lib.mkForce false"),
                Append(
                    CFG,
                    "imports",
                    "{ services.sshd.enable = lib.mkForce false; }",
                ),
                Set(CFG, "services.openssh.enable", json!(false)),
            ],
        },
        Case {
            name: "sshd on, weaker than its default",
            kind: "service.disable",
            phrasings: vec![
                Nix(CFG, "services.openssh.enable", "lib.mkOverride 1600 true"),
                Set(CFG, "services.openssh.enable", json!(false)),
            ],
        },
        Case {
            name: "alice's admin group through users.extraUsers",
            kind: "user.demote",
            phrasings: vec![
                Nix(CFG, "users.extraUsers.alice.extraGroups", "lib.mkForce [ ]"),
                Set(CFG, "users.users.alice.extraGroups", json!([])),
            ],
        },
        Case {
            name: "sshd's unit off through jobs",
            kind: "service.disable",
            phrasings: vec![
                Set(CFG, "jobs.sshd.enable", json!(false)),
                Set(CFG, "boot.systemd.services.sshd.enable", json!(false)),
                Set(CFG, "systemd.services.sshd.enable", json!(false)),
            ],
        },
        Case {
            name: "PermitRootLogin by its old name",
            kind: "ssh.access",
            phrasings: vec![
                Nix(
                    CFG,
                    "services.openssh.permitRootLogin",
                    "lib.mkForce \"no\"",
                ),
                Set(
                    CFG,
                    "services.openssh.settings.PermitRootLogin",
                    json!("no"),
                ),
            ],
        },
        Case {
            name: "a module key hides a module",
            kind: "gate.undecidable",
            phrasings: vec![
                Append(CFG, "imports", "{ key = toString ./osmoda.nix; }"),
                Append(CFG, "imports", "{ key = \"${toString ./.}/osmoda.nix\"; }"),
            ],
        },
        Case {
            name: "require of a file",
            kind: "gate.undecidable",
            phrasings: vec![
                Nix(CFG, "require", "[ ./ssh-off ]"),
                Nix(CFG, "require", "[ (./. + \"/ssh-off\") ]"),
            ],
        },
        Case {
            name: "every unit NixOS defines replaced",
            kind: "service.remove",
            phrasings: vec![
                Nix(CFG, "systemd.services", "lib.mkForce { }"),
                Append(
                    CFG,
                    "imports",
                    "{ systemd = lib.mkForce { services = { }; }; }",
                ),
            ],
        },
        Case {
            name: "wheel's members replaced",
            kind: "user.demote",
            phrasings: vec![
                Nix(CFG, "users.groups.wheel.members", "lib.mkForce [ ]"),
                Append(
                    CFG,
                    "imports",
                    "{ users.extraGroups.wheel.members = lib.mkOverride 10 [ ]; }",
                ),
            ],
        },
        Case {
            name: "sshd's unit off by its file name",
            kind: "service.disable",
            phrasings: vec![
                Nix(CFG, "systemd.units", "{ \"sshd.service\".enable = false; }"),
                Append(CFG, "imports", "{ systemd.units.\"sshd.service\".enable = lib.mkForce false; }"),
            ],
        },
        Case {
            name: "a unit that stops sshd when it starts",
            kind: "service.disable",
            phrasings: vec![
                Nix(
                    CFG,
                    "systemd.services.evil",
                    "{ wantedBy = [ \"multi-user.target\" ]; conflicts = [ \"sshd.service\" ]; script = \"sleep infinity\"; serviceConfig.DynamicUser = true; }",
                ),
                Append(CFG, "imports", "{ systemd.services.evil.unitConfig.Conflicts = \"sshd.service\"; }"),
            ],
        },
        Case {
            name: "sudo without its setuid wrapper",
            kind: "user.demote",
            phrasings: vec![
                Nix(CFG, "security.wrappers.sudo.setuid", "lib.mkForce false"),
                Append(CFG, "imports", "{ security.wrappers.sudo = { setuid = lib.mkForce false; }; }"),
            ],
        },
        Case {
            name: "critical package removed",
            kind: "package.remove_critical",
            phrasings: vec![
                Nix(CFG, "environment.systemPackages", "with pkgs; [ git curl ]"),
                Nix(CFG, "environment.systemPackages", "[ pkgs.git pkgs.curl ]"),
                Unset(CFG, "environment.systemPackages"),
            ],
        },
    ]
}

/// A destructive change of another kind: no ticket of the cases above may cover it.
fn different_effect() -> Edit {
    Edit::Unset(CFG, "users.users.bob")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_phrasing_of_a_destructive_effect_needs_the_same_ticket() {
    for case in cases() {
        let f = fixture(settings_with_htop_critical()).await;
        check_case(&f, &case).await;
        f.d.stop().await;
    }
}

/// One case of the bypass table on `f`: the first phrasing is refused and opens a ticket that
/// names the effect, every other phrasing is bound to it, a different effect cannot use it, and
/// after a person approved it the last phrasing lands and uses it up.
async fn check_case(f: &Fixture, case: &Case) {
    {
        let name = case.name;
        let first = &case.phrasings[0];
        let n = commits(&f.d);

        // The refusal opens the ticket and says what the change does and how to approve it.
        let r = send(f, first, None).await;
        assert_eq!(r.status, 403, "{name}: {}", r.body);
        let detail = &r.body["detail"];
        let id = detail["ticket"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no ticket in {}", r.body))
            .to_string();
        assert!(
            detail["kinds"]
                .as_array()
                .expect("kinds")
                .contains(&json!(case.kind)),
            "{name}: {detail}"
        );
        assert_eq!(
            detail["approve"],
            json!(format!("agentctl approvals approve {id}")),
            "{name}"
        );
        assert!(
            !detail["effect"].as_array().expect("effect").is_empty(),
            "{name}"
        );
        let listed = f.d.human().get_ok("/approvals").await;
        let t = listed
            .as_array()
            .expect("list")
            .iter()
            .find(|t| t["id"] == json!(id))
            .expect("listed");
        assert_eq!(t["status"], "pending");
        assert_eq!(
            t["effect"], detail["effect"],
            "{name}: the listing shows the effect"
        );
        // Asking again does not pile up tickets.
        let again = send(f, first, None).await;
        assert_eq!(
            again.body["detail"]["ticket"],
            json!(id),
            "{name}: {}",
            again.body
        );

        // Every other phrasing of the same effect is bound to this ticket: refused only because
        // no person has decided yet.
        for p in &case.phrasings[1..] {
            let r = send(f, p, Some(&id)).await;
            assert_eq!(
                r.status, 409,
                "{name}: {p:?} must be the same effect: {}",
                r.body
            );
            assert!(
                r.body["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("waiting for a human decision")),
                "{name}: {p:?}: {}",
                r.body
            );
        }
        assert_eq!(
            commits(&f.d),
            n,
            "{name}: nothing landed without a decision"
        );

        f.d.human()
            .post_ok(&format!("/approval/{id}/approve"), &json!({}))
            .await;
        let r = send(f, &different_effect(), Some(&id)).await;
        assert_eq!(
            r.status, 403,
            "{name}: a different effect cannot use the ticket: {}",
            r.body
        );
        let last = case.phrasings.last().expect("phrasing");
        let r = send(f, last, Some(&id)).await;
        assert_eq!(
            r.status, 200,
            "{name}: {last:?} lands with the approved ticket: {}",
            r.body
        );
        assert_eq!(commits(&f.d), n + 1, "{name}");
        let listed = f.d.human().get_ok("/approvals").await;
        let t = listed
            .as_array()
            .expect("list")
            .iter()
            .find(|t| t["id"] == json!(id))
            .expect("listed");
        assert_eq!(t["status"], "used", "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_that_destroy_nothing_are_not_gated() {
    use Edit::*;
    let f = fixture(settings_with_htop_critical()).await;
    for e in [
        Set(CFG, "services.nginx.enable", json!(true)),
        Set(
            CFG,
            "users.users.carol",
            json!({"isNormalUser": true, "extraGroups": ["wheel"]}),
        ),
        Set(CFG, "services.openssh.settings.X11Forwarding", json!(false)),
        Set(
            CFG,
            "services.openssh.settings.PasswordAuthentication",
            json!(true),
        ),
        Set(CFG, "services.openssh.ports", json!([22, 2222])),
        Set(
            CFG,
            "users.users.alice.extraGroups",
            json!(["wheel", "docker"]),
        ),
        Nix(
            CFG,
            "users.users.bob.openssh.authorizedKeys.keys",
            "[ \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIbob bob@desk\" \"ssh-ed25519 new\" ]",
        ),
        Nix(
            CFG,
            "environment.systemPackages",
            "with pkgs; [ git htop curl jq ]",
        ),
        Nix(CFG, "networking.firewall.allowedTCPPorts", "[ 22 80 ]"),
        Set(CFG, "networking.hostName", json!("web1")),
        Set(
            OSM,
            "services.osmoda.mesh.peers.relay2",
            json!({"endpoint": "10.0.0.3:18800", "publicKeys": {"ed25519": "DDDD", "x25519": "EEEE", "mlKem768": "FFFF"}}),
        ),
        Set(
            OSM,
            "services.osmoda.watch.watchers.sshd.intervalSecs",
            json!(60),
        ),
        // More tamper evidence, not less (audit.weaken's siblings).
        Set(
            OSM,
            "services.osmoda.agentd.ledger.checkpoint.everyEvents",
            json!(100),
        ),
        Set(OSM, "services.osmoda.agentd.backup.keep", json!(30)),
        // Tighter policy, not looser (policy.weaken's siblings).
        Set(
            OSM,
            "services.osmoda.keyd.policy.wallets.main.dailyLimit",
            json!("1000"),
        ),
        Set(OSM, "services.osmoda.agentd.writableRoots", json!(["/srv"])),
        Set(OSM, "services.osmoda.agentd.approvalTtlSecs", json!(300)),
        Unset(CFG, "services.openssh.settings.X11Forwarding"),
        Set(
            CFG,
            "services.openssh.extraConfig",
            json!("ClientAliveInterval 60"),
        ),
        Nix(CFG, "users.users.alice.shell", "pkgs.zsh"),
        Set(CFG, "security.sudo.wheelNeedsPassword", json!(true)),
        Set(CFG, "networking.firewall.extraCommands", json!("")),
        Set(CFG, "networking.nameservers", json!(["1.1.1.1"])),
        Append(CFG, "imports", "{ services.nginx.enable = true; }"),
        Set(CFG, "boot.kernelParams", json!(["quiet", "console=ttyS0"])),
        Set(
            CFG,
            "environment.etc",
            json!({"motd.d/hello": {"text": "hi"}}),
        ),
        Set(CFG, "users.users.bob.enable", json!(true)),
        // Old names, weak and forced definitions that destroy nothing (third review).
        Set(CFG, "services.openssh.forwardX11", json!(true)),
        Nix(CFG, "services.fail2ban.enable", "lib.mkDefault true"),
        Nix(CFG, "time.timeZone", "lib.mkForce \"CET\""),
        Nix(
            CFG,
            "networking.firewall.allowedTCPPorts",
            "lib.mkForce [ 22 80 443 ]",
        ),
        Set(CFG, "users.extraUsers.dave", json!({"isNormalUser": true})),
        Set(
            CFG,
            "jobs.backup",
            json!({"script": "true", "serviceConfig": {"User": "nobody"}}),
        ),
        Nix(
            CFG,
            "systemd.services.report",
            "{ startAt = \"daily\"; script = \"df -h\"; serviceConfig.DynamicUser = true; }",
        ),
    ] {
        let r = send(&f, &e, None).await;
        assert_eq!(r.status, 200, "{e:?} is not destructive: {}", r.body);
    }
    assert!(f
        .d
        .human()
        .get_ok("/approvals")
        .await
        .as_array()
        .expect("list")
        .is_empty());
    f.d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_to_an_older_generation_needs_a_ticket_bound_to_both_generations() {
    let f = fixture(agentd::Settings::default()).await;
    let dir = f.d.tree_dir();
    let head = git(&dir, &["rev-parse", "HEAD"]).trim().to_string();
    // SafeSwitch has deployed HEAD: it is the running generation.
    git(&dir, &["tag", "deployed/1", &head]);
    let ask = |approval: Option<&str>| {
        let mut b = json!({"rev": f.before_alice, "reason": "back", "purpose": "switch"});
        if let Some(a) = approval {
            b["approval"] = json!(a);
        }
        b
    };
    // Going back to before alice and bob removes them (and the peer, wallet, capability).
    let r =
        f.d.agent()
            .post("/config/restore", &ask(None))
            .await
            .expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body["detail"]["kind"], "approval_required", "{}", r.body);
    let kinds = r.body["detail"]["kinds"].clone();
    for k in [
        "user.remove",
        "mesh.peer.remove",
        "wallet.delete",
        "capability.remove",
    ] {
        assert!(
            kinds.as_array().expect("kinds").contains(&json!(k)),
            "{k} in {kinds}"
        );
    }
    assert_eq!(
        r.body["detail"]["operation"]["gate"],
        json!({"switch": {"target": f.before_alice, "current": head}}),
        "{}",
        r.body
    );
    let id = r.body["detail"]["ticket"]
        .as_str()
        .expect("ticket")
        .to_string();
    f.d.human()
        .post_ok(&format!("/approval/{id}/approve"), &json!({}))
        .await;
    // The ticket names both generations: the same target from another running one is not it.
    git(&dir, &["tag", "deployed/2", &f.alice]);
    let r =
        f.d.agent()
            .post("/config/restore", &ask(Some(&id)))
            .await
            .expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("different operation"),
        "{}",
        r.body
    );
    git(&dir, &["tag", "-d", "deployed/2"]);
    f.d.agent()
        .post_ok("/config/restore", &ask(Some(&id)))
        .await;
    // The old `/gate/switch` question without an effect is gone (no endpoint that does nothing).
    let r =
        f.d.agent()
            .post("/gate/switch", &json!({}))
            .await
            .expect("post");
    assert_eq!(r.status, 404, "{}", r.body);
    f.d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentd_on_the_rendered_default_config_gates_disabling_sshd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lib");
    let out = std::process::Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E"])
        .arg(format!("(import {}).render {{ }}", lib.display()))
        .output()
        .expect("nix-instantiate (the gate needs the Nix evaluator)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rendered: Value = serde_json::from_slice(&out.stdout).expect("json");
    let path = dir.path().join("agentd.json");
    std::fs::write(&path, rendered["agentd"].to_string()).expect("write");
    let settings = agentd::config::load(&path).expect("the rendered agentd.json loads");
    assert!(settings.critical_packages.contains(&"openssh".to_string()));
    let d = Daemon::start_with_tree_and(settings).await;
    let body =
        json!({"file": CFG, "path": "services.openssh.enable", "value": false, "reason": "x"});
    let r = d.agent().post("/config/set", &body).await.expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body["detail"]["ticket"].is_string());
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_bind_numbers_exactly_and_the_ledger_keeps_them() {
    let d = Daemon::start().await;
    for (a, b) in [
        ("100000000000000000000", "100000000000000008191"),
        ("18446744073709551616", "18446744073709551617"),
        ("1.0", "1.0000000000000001"),
    ] {
        let op_a: Value =
            serde_json::from_str(&format!(r#"{{"op":"wallet.send","amount":{a}}}"#)).expect("a");
        let op_b: Value =
            serde_json::from_str(&format!(r#"{{"op":"wallet.send","amount":{b}}}"#)).expect("b");
        let t = d
            .agent()
            .post_ok(
                "/approval/request",
                &json!({"operation": op_a, "detail": "send"}),
            )
            .await;
        let id = t["id"].as_str().expect("id").to_string();
        let t2 = d
            .agent()
            .post_ok(
                "/approval/request",
                &json!({"operation": op_b, "detail": "send"}),
            )
            .await;
        assert_ne!(t["operation_hash"], t2["operation_hash"], "{a} vs {b}");
        d.human()
            .post_ok(&format!("/approval/{id}/approve"), &json!({}))
            .await;
        let r = d
            .agent()
            .post("/approval/check", &json!({"id": id, "operation": op_b}))
            .await
            .expect("post");
        assert_eq!(r.status, 403, "{a} approved, {b} attempted: {}", r.body);
        d.agent()
            .post_ok("/approval/check", &json!({"id": id, "operation": op_a}))
            .await;
    }
    // Large integers in event payloads are stored digit for digit.
    let big = "123456789012345678901234567890";
    let payload: Value = serde_json::from_str(&format!(r#"{{"wei":{big}}}"#)).expect("payload");
    d.agent()
        .post_ok(
            "/events/append",
            &json!({"type": "test.big", "daemon": "test", "payload": payload}),
        )
        .await;
    let raw = common::raw(
        &d.socket,
        b"GET /events/log?type=test.big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(raw.1.to_string().contains(big), "{}", raw.1);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edits_harmless_alone_cannot_land_together_unjudged() {
    let d = Daemon::start_with_tree().await;
    std::fs::write(
        d.tree_dir().join("extra.nix"),
        "{ lib, ... }:\n{\n  services.openssh.enable = lib.mkDefault true;\n}\n",
    )
    .expect("write");
    commit_file(
        &d,
        CFG,
        "imports = [ ./osmoda.nix ];",
        "imports = [ ./osmoda.nix ./extra.nix ];",
        "extra module",
    );
    git(&d.tree_dir(), &["add", "extra.nix"]);
    git(
        &d.tree_dir(),
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@e",
            "commit",
            "-qm",
            "add extra.nix",
        ],
    );
    // Each alone keeps sshd on (priority 950 true; or 900 false under the plain `true`), together
    // 900 false wins.
    let a = json!({"file": CFG, "path": "services.openssh.enable", "nix": "lib.mkOverride 950 true", "reason": "a"});
    let b = json!({"file": "extra.nix", "path": "services.openssh.enable", "nix": "lib.mkOverride 900 false", "reason": "b"});
    for _ in 0..3 {
        let (ca, cb) = (d.agent(), d.agent());
        let (ra, rb) = tokio::join!(ca.post("/config/set", &a), cb.post("/config/set", &b));
        let (ra, rb) = (ra.expect("a"), rb.expect("b"));
        assert!(
            ra.status == 403 || rb.status == 403,
            "both landed: {} / {}",
            ra.body,
            rb.body
        );
        if ra.status == 200 || rb.status == 200 {
            break;
        }
    }
    d.stop().await;
}

/// Two edits of one file racing: the second is planned from the file before the first lands
/// and judged after it. What lands must be what was judged — the fresh review of issue 8
/// (thirteenth session, H1): `false` planned against `lib.mkDefault true` was judged harmless
/// (osmoda.nix's `true` wins), then re-applied to the landed `lib.mkForce true` kept the wrapper
/// and wrote `lib.mkForce false`, disabling sshd with no ticket. Now the gate plans again under
/// its lock and judges that: a 403 with a ticket. Independent edits of one file still all land
/// (`config.rs` `fifty_parallel_sets_make_fifty_linear_commits`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_edits_of_one_file_land_only_as_judged() {
    let d = Daemon::start_with_tree().await;
    commit_file(
        &d,
        CFG,
        "    enable = true;",
        "    enable = lib.mkDefault true;",
        "sshd at default priority",
    );
    // A second definition of sshd at normal priority, written by hand (agentd refuses to add one).
    std::fs::write(
        d.tree_dir().join("keep.nix"),
        "{ ... }:\n{\n  services.openssh.enable = true;\n}\n",
    )
    .expect("write");
    git(&d.tree_dir(), &["add", "keep.nix"]);
    commit_file(
        &d,
        CFG,
        "imports = [ ./osmoda.nix ];",
        "imports = [ ./osmoda.nix ./keep.nix ];",
        "keep sshd on",
    );
    let forced = json!({"file": CFG, "path": "services.openssh.enable", "nix": "lib.mkForce true", "reason": "y"});
    let off =
        json!({"file": CFG, "path": "services.openssh.enable", "value": false, "reason": "x"});
    let reset = json!({"file": CFG, "path": "services.openssh.enable", "nix": "lib.mkDefault true", "reason": "reset"});
    let (mut refused, mut landed) = (0, 0);
    for round in 0..6 {
        let (cy, cx) = (d.agent(), d.agent());
        let delay = Duration::from_millis(60 * round);
        let (ry, rx) = tokio::join!(cy.post("/config/set", &forced), async {
            tokio::time::sleep(delay).await;
            cx.post("/config/set", &off).await
        });
        let (ry, rx) = (ry.expect("y"), rx.expect("x"));
        assert_eq!(ry.status, 200, "{}", ry.body);
        let text = std::fs::read_to_string(d.tree_dir().join(CFG)).expect("read");
        assert!(
            !text.contains("lib.mkForce false"),
            "round {round}: sshd disabled with no ticket ({} {}):\n{text}",
            rx.status,
            rx.body
        );
        match rx.status {
            // Judged as it lands, on top of `mkForce true`: `mkForce false` disables sshd.
            403 => {
                refused += 1;
                assert!(rx.body.to_string().contains("openssh"), "{}", rx.body);
            }
            // Landed before the other (judged as `mkDefault false`, harmless).
            200 => landed += 1,
            s => panic!("round {round}: {s} {}", rx.body),
        }
        let now = std::fs::read_to_string(d.tree_dir().join(CFG)).expect("read");
        if !now.contains("enable = lib.mkDefault true;") {
            d.agent().post_ok("/config/set", &reset).await;
        }
    }
    eprintln!("same-file races: {refused} judged on what lands and refused, {landed} landed first");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_an_old_tree_is_judged_against_the_running_generation() {
    let f = fixture(agentd::Settings::default()).await;
    let tree = f.d.state.config_tree.clone().expect("tree");
    let head = git(&f.d.tree_dir(), &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    tree.tag_deployed(&head).expect("deploy HEAD");
    let st = &f.d.state;
    // Bringing back the tree from before alice removes what runs now: a ticket bound to both.
    let e = agentd::gate::check_restore(st, "test", &f.before_alice, None)
        .await
        .err()
        .expect("refused");
    assert_eq!(e.status.as_u16(), 403, "{}", e.error);
    assert_eq!(
        e.detail["operation"]["gate"]["switch"],
        json!({"target": f.before_alice, "current": head})
    );
    // An agent edit (carol) is not deployed yet: recording a rollback to the running generation
    // removes carol from the tree but nothing from the machine, so it passes.
    let body = json!({"file": CFG, "path": "users.users.carol", "value": {"isNormalUser": true}, "reason": "carol"});
    f.d.agent().post_ok("/config/set", &body).await;
    let g = agentd::gate::check_restore(st, "test", &head, None).await;
    assert!(g.is_ok(), "{:?}", g.err().map(|e| e.error));
    drop(g);
    f.d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restoring_a_generation_whose_inline_module_disabled_sshd_needs_a_ticket() {
    let f = fixture(agentd::Settings::default()).await;
    let plain = "imports = [ ./osmoda.nix ];";
    let inline = "imports = [ ./osmoda.nix { services.openssh.enable = lib.mkForce false; } ];";
    let off = commit_file(&f.d, CFG, plain, inline, "person: sshd off inline");
    commit_file(&f.d, CFG, inline, plain, "person: sshd back");
    let head = git(&f.d.tree_dir(), &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    let tree = f.d.state.config_tree.clone().expect("tree");
    tree.tag_deployed(&head).expect("deploy HEAD");
    let n = commits(&f.d);
    for purpose in ["switch", "restore"] {
        let body = json!({"rev": off, "reason": "go back", "purpose": purpose});
        let r =
            f.d.agent()
                .post("/config/restore", &body)
                .await
                .expect("post");
        assert_eq!(r.status, 403, "{purpose}: {}", r.body);
        assert!(
            r.body["detail"]["kinds"]
                .as_array()
                .expect("kinds")
                .contains(&json!("service.disable")),
            "{purpose}: {}",
            r.body
        );
    }
    assert_eq!(commits(&f.d), n, "nothing recorded before a person decides");
    f.d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_to_an_older_generation_through_restore_needs_its_ticket() {
    let f = fixture(agentd::Settings::default()).await;
    let head = git(&f.d.tree_dir(), &["rev-parse", "HEAD"])
        .trim()
        .to_string();
    let tree = f.d.state.config_tree.clone().expect("tree");
    tree.tag_deployed(&head).expect("deploy HEAD");
    let body = |approval: Option<&str>| json!({"rev": f.before_alice, "reason": "go back", "purpose": "switch", "approval": approval});
    let n = commits(&f.d);
    let r =
        f.d.agent()
            .post("/config/restore", &body(None))
            .await
            .expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.body["detail"]["operation"]["gate"]["switch"],
        json!({"target": f.before_alice, "current": head})
    );
    let id = r.body["detail"]["ticket"]
        .as_str()
        .expect("ticket")
        .to_string();
    let pending =
        f.d.agent()
            .post("/config/restore", &body(Some(&id)))
            .await
            .expect("post");
    assert_eq!(pending.status, 409, "{}", pending.body);
    assert_eq!(commits(&f.d), n, "nothing recorded before a person decides");
    f.d.human()
        .post_ok(&format!("/approval/{id}/approve"), &json!({}))
        .await;
    f.d.agent()
        .post_ok("/config/restore", &body(Some(&id)))
        .await;
    assert_eq!(commits(&f.d), n + 1);
    f.d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_accepts_only_tickets_it_opened_itself() {
    let f = fixture(agentd::Settings::default()).await;
    let demote = Edit::Set(CFG, "users.users.alice.isNormalUser", json!(false));
    let n = commits(&f.d);

    // The agent cannot open a ticket in the gate's own shape, whatever its detail says.
    let forged_op = json!({"gate": "config", "effect": [{"kind": "user.demote",
        "path": "users.users.alice.isNormalUser", "was": true, "now": false}]});
    for op in [
        forged_op.clone(),
        json!({"gate": {"target": "a", "current": "b"}, "effect": []}),
    ] {
        let r =
            f.d.agent()
                .post(
                    "/approval/request",
                    &json!({"operation": op, "detail": "add a disk-space watcher (harmless)"}),
                )
                .await
                .expect("post");
        assert_eq!(r.status, 403, "{}", r.body);
        assert!(
            r.body["error"]
                .as_str()
                .is_some_and(|e| e.contains("reserved")),
            "{}",
            r.body
        );
    }
    let listed = f.d.human().get_ok("/approvals").await;
    assert_eq!(listed, json!([]), "nothing was written");

    // The gate's own refusal names the operation it binds the ticket to.
    let r = send(&f, &demote, None).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let op = r.body["detail"]["operation"].clone();
    let gate_id = r.body["detail"]["ticket"]
        .as_str()
        .expect("ticket")
        .to_string();

    // Even a ticket of exactly that operation that the gate did not open (as a direct request
    // made before this check existed would have left in the ledger) does not let it through.
    let forged_id = "f0".repeat(16);
    let ev =
        f.d.state
            .record(
                "approval.requested",
                "agent[test]",
                &json!({"id": forged_id, "operation": op, "detail": "harmless",
                    "effect": [], "expires_unix": 4_000_000_000i64}),
            )
            .await
            .expect("record");
    f.d.state.approvals().apply(&ev);
    f.d.human()
        .post_ok(&format!("/approval/{forged_id}/approve"), &json!({}))
        .await;
    let r = send(&f, &demote, Some(&forged_id)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not opened by the approval gate")),
        "{}",
        r.body
    );
    // Nor can the agent consume it (or the gate's ticket) through /approval/check.
    for id in [&forged_id, &gate_id] {
        let r =
            f.d.agent()
                .post("/approval/check", &json!({"id": id, "operation": op}))
                .await
                .expect("post");
        assert_eq!(r.status, 403, "{}", r.body);
    }
    assert_eq!(commits(&f.d), n, "nothing landed");

    // The listing says who opened which ticket; the gate's ticket still works.
    let listed = f.d.human().get_ok("/approvals").await;
    let origin = |id: &str| {
        listed
            .as_array()
            .expect("list")
            .iter()
            .find(|t| t["id"] == json!(id))
            .expect("listed")["origin"]
            .clone()
    };
    assert_eq!(origin(&gate_id), json!("gate"));
    assert_eq!(origin(&forged_id), json!("agent"));
    f.d.human()
        .post_ok(&format!("/approval/{gate_id}/approve"), &json!({}))
        .await;
    let r = send(&f, &demote, Some(&gate_id)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(commits(&f.d), n + 1);
    f.d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_printed_approve_command_names_the_socket_agentd_serves() {
    let settings = agentd::Settings {
        approval_socket: Some("/srv/admin/approval.sock".into()),
        ..Default::default()
    };
    let d = Daemon::start_with_tree_and(settings).await;
    let r = d
        .agent()
        .post(
            "/config/set",
            &json!({"file": CFG, "path": "services.openssh.enable", "value": false, "reason": "t"}),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    let id = r.body["detail"]["ticket"].as_str().expect("ticket");
    assert_eq!(
        r.body["detail"]["approve"],
        json!(format!(
            "agentctl --approval-socket /srv/admin/approval.sock approvals approve {id}"
        ))
    );
    d.stop().await;
}

async fn ticket_status(d: &Daemon, id: &str) -> Value {
    d.human()
        .get_ok("/approvals")
        .await
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["id"] == json!(id))
        .expect("listed")["status"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_change_that_fails_validation_keeps_its_ticket() {
    let f = fixture(agentd::Settings::default()).await;
    let r = send(
        &f,
        &Edit::Set(OSM, "services.osmoda.mesh.peers", json!({})),
        None,
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let id = r.body["detail"]["ticket"]
        .as_str()
        .expect("ticket")
        .to_string();
    f.d.human()
        .post_ok(&format!("/approval/{id}/approve"), &json!({}))
        .await;
    // The same effect by hand, with a typo elsewhere that validation refuses.
    let path = f.d.tree_dir().join(OSM);
    let original = std::fs::read_to_string(&path).expect("read");
    let peer = "    mesh.peers.relay = {\n      endpoint = \"10.0.0.2:18800\";\n      publicKeys = { ed25519 = \"AAAA\"; x25519 = \"BBBB\"; mlKem768 = \"CCCC\"; };\n    };\n";
    assert!(original.contains(peer));
    let without = original.replacen(peer, "", 1);
    let typo = without.replacen(
        "{ ... }:\n\n{\n",
        "{ ... }:\n\n{\n  time.typo = 1 + \"a\";\n",
        1,
    );
    assert_ne!(typo, without);
    std::fs::write(&path, &typo).expect("write");
    let n = commits(&f.d);
    let body = json!({"reason": "remove the relay", "approval": id});
    let r =
        f.d.agent()
            .post("/config/commit", &body)
            .await
            .expect("post");
    assert!(
        (400..500).contains(&r.status) && r.status != 403 && r.status != 409,
        "validation refuses the typo: {} {}",
        r.status,
        r.body
    );
    assert_eq!(commits(&f.d), n);
    assert_eq!(
        ticket_status(&f.d, &id).await,
        "approved",
        "the ticket is not used by a change that did not land"
    );
    // The corrected change lands with the same ticket, which is then used.
    std::fs::write(&path, &without).expect("write");
    let r =
        f.d.agent()
            .post("/config/commit", &body)
            .await
            .expect("post");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(commits(&f.d), n + 1);
    assert_eq!(ticket_status(&f.d, &id).await, "used");
    f.d.stop().await;
}

fn person_commit(dir: &std::path::Path, msg: &str) {
    git(dir, &["add", "-A"]);
    git(
        dir,
        &[
            "-c",
            "user.name=Test Person",
            "-c",
            "user.email=t@example.org",
            "commit",
            "-qm",
            msg,
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn symbolic_links_in_the_tree_are_judged_by_what_they_point_to() {
    let d = Daemon::start_with_tree_and(agentd::Settings::default()).await;
    let dir = d.tree_dir();
    // nixos-generate-config's file, linked from /etc/nixos as people do, and a link inside.
    std::os::unix::fs::symlink(
        "/etc/nixos/hardware-configuration.nix",
        dir.join("hardware-configuration.nix"),
    )
    .expect("link");
    std::fs::write(
        dir.join("hw-real.nix"),
        "{ ... }: { boot.kernelModules = [ \"kvm\" ]; }\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("sshd-off.nix"),
        "{ ... }: { services.openssh.enable = false; }\n",
    )
    .expect("write");
    std::os::unix::fs::symlink("hw-real.nix", dir.join("hw.nix")).expect("link");
    let cfg = dir.join(CFG);
    let text = std::fs::read_to_string(&cfg).expect("read");
    let text = text.replacen(
        "imports = [ ./osmoda.nix ];",
        "imports = [ ./osmoda.nix ./hw.nix ./hardware-configuration.nix ];",
        1,
    );
    std::fs::write(&cfg, &text).expect("write");
    person_commit(&dir, "hardware configuration, linked");

    // A harmless hand edit next to them passes.
    std::fs::write(
        &cfg,
        text.replacen(
            "networking.hostName = \"osmoda\";",
            "networking.hostName = \"web1\";",
            1,
        ),
    )
    .expect("write");
    let r = d
        .agent()
        .post("/config/commit", &json!({"reason": "rename"}))
        .await
        .expect("post");
    assert_eq!(r.status, 200, "{}", r.body);

    // Pointing the outside link elsewhere cannot be judged: a ticket, bound to the new target.
    std::fs::remove_file(dir.join("hardware-configuration.nix")).expect("rm");
    std::os::unix::fs::symlink("/srv/other.nix", dir.join("hardware-configuration.nix"))
        .expect("link");
    let r = d
        .agent()
        .post("/config/commit", &json!({"reason": "other hardware"}))
        .await
        .expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.body["detail"]["kinds"],
        json!(["gate.undecidable"]),
        "{}",
        r.body
    );
    std::fs::remove_file(dir.join("hardware-configuration.nix")).expect("rm");
    std::os::unix::fs::symlink(
        "/etc/nixos/hardware-configuration.nix",
        dir.join("hardware-configuration.nix"),
    )
    .expect("link");

    // Pointing the inside link at a module that turns sshd off is judged by that module (and
    // by what the old one no longer says: the `kvm` module it loaded at boot goes away).
    std::fs::remove_file(dir.join("hw.nix")).expect("rm");
    std::os::unix::fs::symlink("sshd-off.nix", dir.join("hw.nix")).expect("link");
    let r = d
        .agent()
        .post("/config/commit", &json!({"reason": "swap"}))
        .await
        .expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.body["detail"]["kinds"],
        json!(["boot.kernel", "service.disable"]),
        "{}",
        r.body
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boot_loader_kernel_and_mounts_of_the_starter_tree_are_gated() {
    let d = Daemon::start_with_tree().await;
    let set = |path: &str, value: Value| json!({"file": CFG, "path": path, "value": value, "reason": "x"});
    let nix = |path: &str, nix: &str| json!({"file": CFG, "path": path, "nix": nix, "reason": "x"});
    for (body, kind) in [
        (
            set("boot.loader.grub.device", json!("/dev/vdb")),
            "boot.loader",
        ),
        (set("boot.loader.grub.enable", json!(false)), "boot.loader"),
        (
            nix("boot.kernelParams", r#"[ "quiet" "init=/bin/sh" ]"#),
            "boot.kernel",
        ),
        (
            set("fileSystems./.device", json!("/dev/vdb1")),
            "filesystem.change",
        ),
        (nix("fileSystems", "{ }"), "filesystem.change"),
        // Another kernel runs first at the next boot, where no health check sees it.
        (
            nix("boot.kernelPackages", "pkgs.linuxPackages_latest"),
            "boot.kernel",
        ),
        (
            nix(
                "boot.kernelPackages",
                "with pkgs; linuxKernel.packages.linux_6_12",
            ),
            "boot.kernel",
        ),
    ] {
        let r = d.agent().post("/config/set", &body).await.expect("post");
        assert_eq!(r.status, 403, "{body}: {}", r.body);
        assert!(
            r.body["detail"]["kinds"]
                .as_array()
                .is_some_and(|k| k.contains(&json!(kind))),
            "{kind} for {body}: {}",
            r.body
        );
    }
    // Their harmless siblings land without a ticket.
    for body in [
        set("boot.loader.timeout", json!(3)),
        set("boot.loader.grub.configurationLimit", json!(20)),
        nix("boot.kernelParams", r#"[ "quiet" "console=ttyS0" ]"#),
        set("fileSystems./.options", json!(["noatime"])),
        // NixOS's default kernel said out loud.
        nix("boot.kernelPackages", "pkgs.linuxPackages"),
    ] {
        let r = d.agent().post("/config/set", &body).await.expect("post");
        assert_eq!(r.status, 200, "{body}: {}", r.body);
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attribute_tests_on_the_stand_ins_cannot_tell_the_gate_from_nixpkgs() {
    let d = Daemon::start_with_tree().await;
    let nix = |nix: &str| json!({"file": CFG, "path": "services.openssh.enable", "nix": nix, "reason": "x"});
    // With real nixpkgs each of these is false (pkgs.hello exists); in both of the gate's worlds
    // the stand-ins know no `hello`, so without the guard they read as true and sshd went off
    // with no ticket.
    for phrasing in [
        r#"!(pkgs ? ${"hel" + "lo"})"#,
        r#"(pkgs.${"hel" + "lo"}.pname or "none") == "none""#,
        r#"!(lib ? ${"hel" + "lo"})"#,
        r#"!(config ? ${"hel" + "lo"})"#,
        r#"(let p = pkgs // { }; in !(p ? ${"hel" + "lo"}))"#,
    ] {
        let r = d
            .agent()
            .post("/config/set", &nix(phrasing))
            .await
            .expect("post");
        assert_eq!(r.status, 403, "{phrasing}: {}", r.body);
        assert!(
            r.body["detail"]["kinds"]
                .as_array()
                .is_some_and(|k| k.contains(&json!("service.disable"))),
            "{phrasing}: {}",
            r.body
        );
    }
    // On ordinary sets `?` and `or` are decided as Nix decides them: sshd stays on, no ticket.
    for phrasing in [r#"{ a = 1; } ? a"#, r#"{ a = 1; }.b or true"#] {
        let r = d
            .agent()
            .post("/config/set", &nix(phrasing))
            .await
            .expect("post");
        assert_eq!(r.status, 200, "{phrasing}: {}", r.body);
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_a_module_names_is_judged_by_its_content_when_rewritten() {
    let d = Daemon::start_with_tree_and(agentd::Settings::default()).await;
    let dir = d.tree_dir();
    // A person's admin with a key file, and a module whose name does not end in `.nix`.
    std::fs::create_dir_all(dir.join("keys")).expect("dir");
    std::fs::write(dir.join("keys/alice.pub"), "ssh-ed25519 AAAA alice\n").expect("write");
    std::fs::write(
        dir.join("extra"),
        "{ ... }: { services.nginx.enable = true; }\n",
    )
    .expect("write");
    let cfg = dir.join(CFG);
    let text = std::fs::read_to_string(&cfg).expect("read").replacen(
        "imports = [ ./osmoda.nix ];",
        "imports = [ ./osmoda.nix ./extra ];\n\n  users.users.alice = {\n    isNormalUser = true;\n    extraGroups = [ \"wheel\" ];\n    openssh.authorizedKeys.keyFiles = [ ./keys/alice.pub ];\n  };",
        1,
    );
    std::fs::write(&cfg, &text).expect("write");
    person_commit(&dir, "alice with a key file, an extra module");
    let commit = |msg: &str| {
        let body = json!({ "reason": msg });
        let agent = d.agent();
        async move { agent.post("/config/commit", &body).await.expect("post") }
    };

    // Review 3, bypass 8: the key file rewritten and committed as a hand edit.
    std::fs::write(dir.join("keys/alice.pub"), "ssh-ed25519 ZZZZ mallory\n").expect("write");
    let r = commit("rotate alice's key").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body["detail"]["kinds"]
            .as_array()
            .expect("kinds")
            .contains(&json!("user.credentials")),
        "{}",
        r.body
    );
    git(&dir, &["checkout", "--", "keys/alice.pub"]);
    // The module named `extra` rewritten to turn sshd off.
    std::fs::write(
        dir.join("extra"),
        "{ lib, ... }: { services.openssh.enable = lib.mkForce false; }\n",
    )
    .expect("write");
    let r = commit("tidy extra").await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body["detail"]["kinds"]
            .as_array()
            .expect("kinds")
            .contains(&json!("service.disable")),
        "{}",
        r.body
    );
    git(&dir, &["checkout", "--", "extra"]);
    // A key added to the file and a file nothing names pass.
    std::fs::write(
        dir.join("keys/alice.pub"),
        "ssh-ed25519 AAAA alice\nssh-ed25519 BBBB alice@phone\n",
    )
    .expect("write");
    std::fs::write(dir.join("NOTES.md"), "services.openssh.enable = false;\n").expect("write");
    let r = commit("alice's phone, notes").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(d
        .human()
        .get_ok("/approvals")
        .await
        .as_array()
        .expect("list")
        .iter()
        .all(|t| t["status"] == "pending"));
    d.stop().await;
}

/// alice's keys read from a file of the tree (committed by a person).
const ALICE_KEYS_FROM_FILE: &str = "openssh.authorizedKeys.keys = builtins.filter (k: k != \"\") (lib.splitString \"\\n\" (builtins.readFile ./alice.keys));";

/// The limits the third review left (docs/STATUS.md), as rows of the bypass table on one
/// fixture (each case lands its own, independent change): root code, what `pkgs.X` is, a
/// specialisation, and a file that `readFile` feeds into alice's keys.
fn code_cases() -> Vec<Case> {
    use Edit::*;
    let unit = "{ wantedBy = [ \"multi-user.target\" ]; script = \"systemctl stop sshd\"; }";
    let overlay = "{ nixpkgs.overlays = [ (final: prev: { openssh = prev.dropbear; }) ]; }";
    let overlay_list: &'static str =
        Box::leak(format!("[ ./osmoda.nix {overlay} ]").into_boxed_str());
    vec![
        Case {
            name: "a root unit stops sshd",
            kind: "code.root",
            phrasings: vec![
                Nix(CFG, "systemd.services.evil", unit),
                Append(
                    CFG,
                    "imports",
                    "{ systemd.services.evil.script = \"systemctl \" + \"stop sshd\"; }",
                ),
                Set(
                    CFG,
                    "jobs.evil",
                    json!({"wantedBy": ["multi-user.target"], "script": "systemctl stop sshd"}),
                ),
            ],
        },
        Case {
            name: "an activation script removes root's keys",
            kind: "code.root",
            phrasings: vec![
                Set(
                    CFG,
                    "system.activationScripts.evil",
                    json!("rm -rf /root/.ssh"),
                ),
                Nix(
                    CFG,
                    "system.activationScripts.evil",
                    "lib.mkForce (\"rm -rf \" + \"/root/.ssh\")",
                ),
            ],
        },
        Case {
            name: "tmpfiles remove alice's .ssh at boot",
            kind: "code.root",
            phrasings: vec![
                Set(
                    CFG,
                    "systemd.tmpfiles.rules",
                    json!(["R /home/alice/.ssh - - - - -"]),
                ),
                Nix(
                    CFG,
                    "systemd.tmpfiles.rules",
                    "[ (\"R /home/alice/\" + \".ssh - - - - -\") ]",
                ),
            ],
        },
        Case {
            name: "a specialisation without sshd",
            kind: "gate.undecidable",
            phrasings: vec![
                Nix(
                    CFG,
                    "specialisation.rescue.configuration",
                    "{ services.openssh.enable = false; }",
                ),
                Append(
                    CFG,
                    "imports",
                    "{ specialisation.rescue.configuration.services.openssh.enable = 1 == 2; }",
                ),
                Set(
                    CFG,
                    "specialisation.rescue.configuration.services.openssh.enable",
                    json!(false),
                ),
            ],
        },
        Case {
            name: "alice's key file rewritten",
            kind: "user.credentials",
            phrasings: vec![
                Set(
                    CFG,
                    "users.users.alice.openssh.authorizedKeys.keys",
                    json!([]),
                ),
                HandIn(
                    "alice.keys",
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIalice alice@laptop\n",
                    "",
                ),
            ],
        },
        // Last: code the gate cannot read binds every later change of its file to the file's text.
        Case {
            name: "an overlay swaps openssh",
            kind: "code.root",
            phrasings: vec![
                Append(CFG, "imports", overlay),
                Nix(CFG, "imports", overlay_list),
            ],
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_code_packages_specialisations_and_read_files_need_the_same_ticket() {
    use Edit::*;
    let f = fixture(settings_with_htop_critical()).await;
    // A person moves alice's keys into a file that the configuration reads.
    std::fs::write(
        f.d.tree_dir().join("alice.keys"),
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIalice alice@laptop\n",
    )
    .expect("write");
    git(&f.d.tree_dir(), &["add", "alice.keys"]);
    commit_file(
        &f.d,
        CFG,
        "openssh.authorizedKeys.keys = [ \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIalice alice@laptop\" ];",
        ALICE_KEYS_FROM_FILE,
        "alice's keys from a file",
    );
    // The harmless siblings: a service account's code, a directory for an app, unfree packages,
    // the firewall opened (it exposes the machine but locks nobody out).
    for e in [
        Nix(
            CFG,
            "systemd.services.app",
            "{ wantedBy = [ \"multi-user.target\" ]; script = \"sleep infinity\"; serviceConfig.DynamicUser = true; }",
        ),
        Set(
            CFG,
            "systemd.tmpfiles.rules",
            json!(["d /var/lib/app 0750 nobody nogroup -"]),
        ),
        Set(CFG, "nixpkgs.config.allowUnfree", json!(true)),
        Set(CFG, "networking.firewall.enable", json!(false)),
        Nix(
            CFG,
            "networking.firewall.allowedTCPPortRanges",
            "[ { from = 1; to = 65535; } ]",
        ),
    ] {
        let r = send(&f, &e, None).await;
        assert_eq!(r.status, 200, "{e:?} is not destructive: {}", r.body);
    }
    for case in code_cases() {
        check_case(&f, &case).await;
    }
    // A key added to the file alice's keys are read from is not destructive.
    let add = Edit::HandIn(
        "alice.keys",
        "",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAInew alice@phone\n",
    );
    let r = send(&f, &add, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    f.d.stop().await;
}
