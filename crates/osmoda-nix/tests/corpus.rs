//! A corpus of real-world-shaped NixOS configurations (written for this test: top-level
//! `let`/`with`, `mkForce`/`mkDefault`, inline imports, CRLF, tabs, a BOM, `rec`, a generated
//! 5,000-line file), five or more edits each, applied in sequence. After every edit: the bytes
//! outside the reported range are unchanged, the file still parses (with `nix-instantiate` where
//! installed), its line endings and BOM are kept, and the path reads back as asked.

#[path = "../examples/fixture/big_osmoda_nix.rs"]
mod fixture;

use std::path::Path;
use std::process::Command;

use osmoda_nix::{edit, get, read, AttrPath, Op, Value};
use serde_json::json;

enum E {
    Set(&'static str, serde_json::Value),
    Raw(&'static str, &'static str),
    Unset(&'static str),
    Append(&'static str, serde_json::Value),
    AppendNix(&'static str, &'static str),
    RemoveNix(&'static str, &'static str),
}

fn p(s: &str) -> AttrPath {
    s.parse().unwrap_or_else(|e| panic!("bad path {s}: {e}"))
}

fn cases() -> Vec<(&'static str, Vec<E>)> {
    use E::*;
    vec![
        (
            "desktop.nix",
            vec![
                Set("time.timeZone", json!("Europe/Berlin")),
                Set("hardware.pulseaudio.enable", json!(true)),
                AppendNix("environment.systemPackages", "htop"),
                RemoveNix("environment.systemPackages", "pkgs.firefox"),
                Append("users.users.alice.extraGroups", json!("docker")),
                Unset("services.xserver.desktopManager.gnome.enable"),
                Set("services.osmoda.enable", json!(true)),
            ],
        ),
        (
            "server.nix",
            vec![
                Set(
                    "services.openssh.settings.PermitRootLogin",
                    json!("prohibit-password"),
                ),
                Append("networking.firewall.allowedTCPPorts", json!(8443)),
                Set(
                    "services.nginx.virtualHosts.\"example.org\".root",
                    json!("/srv/www"),
                ),
                Unset("security.acme.defaults.email"),
                Raw("services.nginx.package", "nginxMainline"),
                Set("boot.loader.grub.device", json!("/dev/vda")),
            ],
        ),
        (
            "wsl-crlf.nix",
            vec![
                Set("wsl.defaultUser", json!("alice")),
                AppendNix("environment.systemPackages", "pkgs.curl"),
                Set("services.openssh", json!({"enable": true, "ports": [2222]})),
                Unset("programs.git.enable"),
                Set("networking.hostName", json!("wsl2")),
            ],
        ),
        (
            "router-tabs.nix",
            vec![
                Set("networking.hostName", json!("gw")),
                Append("networking.firewall.allowedUDPPorts", json!(123)),
                Set(
                    "services.dnsmasq.settings.server",
                    json!(["9.9.9.9", "1.1.1.1"]),
                ),
                Set("networking.nat.externalInterface", json!("eth0")),
                Set("services.openssh.enable", json!(true)),
            ],
        ),
        (
            "hardware-configuration.nix",
            vec![
                Set("networking.useDHCP", json!(false)),
                Append("boot.initrd.availableKernelModules", json!("sd_mod")),
                Set("fileSystems.\"/\".fsType", json!("btrfs")),
                Set(
                    "fileSystems.\"/boot\"",
                    json!({"device": "/dev/disk/by-label/BOOT", "fsType": "vfat"}),
                ),
                Append("boot.kernelModules", json!("kvm-amd")),
            ],
        ),
        (
            "osmoda-rec.nix",
            vec![
                Set("services.osmoda.watch.watchers.db.intervalSecs", json!(15)),
                Set("services.osmoda.routines.backup.schedule", json!("hourly")),
                Append("services.osmoda.routines.backup.command", json!("/home")),
                Set("services.osmoda.enable", json!(false)),
                Unset("services.osmoda.watch.watchers.db.intervalSecs"),
            ],
        ),
        (
            "explicit-module.nix",
            vec![
                Set("services.prometheus.port", json!(9091)),
                Append(
                    "services.prometheus.exporters.node.enabledCollectors",
                    json!("processes"),
                ),
                Set("services.grafana.enable", json!(true)),
                Unset("services.prometheus.exporters.node.enable"),
                Set("services.prometheus.retentionTime", json!("30d")),
            ],
        ),
        (
            "home-lab.nix",
            vec![
                Set("services.jellyfin.enable", json!(false)),
                Append("networking.firewall.allowedTCPPorts", json!(445)),
                Set("services.samba.settings.media.\"read only\"", json!("no")),
                Set("boot.kernel.sysctl.\"vm.swappiness\"", json!(1)),
                Unset("users.groups.media"),
            ],
        ),
        (
            "containers.nix",
            vec![
                Set(
                    "virtualisation.oci-containers.containers.grafana.image",
                    json!("grafana/grafana:11.0.0"),
                ),
                Append(
                    "virtualisation.oci-containers.containers.grafana.ports",
                    json!("3001:3001"),
                ),
                Append("users.users.deploy.extraGroups", json!("wheel")),
                Set("virtualisation.docker.enable", json!(false)),
                Set(
                    "virtualisation.oci-containers.containers.grafana.environment.GF_LOG_LEVEL",
                    json!("warn"),
                ),
            ],
        ),
        (
            "laptop-bom.nix",
            vec![
                Set(
                    "services.tlp.settings.CPU_SCALING_GOVERNOR_ON_BAT",
                    json!("schedutil"),
                ),
                Unset("services.printing.enable"),
                Set("hardware.bluetooth.powerOnBoot", json!(false)),
                Set("programs.firefox.enable", json!(false)),
                Set("time.timeZone", json!("UTC")),
            ],
        ),
    ]
}

fn nix_parses(text: &str) -> Option<bool> {
    let out = Command::new("nix-instantiate")
        .args(["--parse", "-E"])
        .arg(text.trim_start_matches('\u{feff}'))
        .output()
        .ok()?;
    Some(out.status.success())
}

/// Applies `op`, checks the invariants, returns the new text.
fn apply(name: &str, src: &str, op: &Op) -> String {
    let out = edit(src, op).unwrap_or_else(|e| panic!("{name}: {op:?}: {e}"));
    let tail = src.len() - out.changed.end;
    assert_eq!(
        out.text[..out.changed.start],
        src[..out.changed.start],
        "{name}: prefix changed"
    );
    assert_eq!(
        out.text[out.text.len() - tail..],
        src[out.changed.end..],
        "{name}: suffix changed"
    );
    let crlf = src.contains("\r\n");
    if crlf {
        assert_eq!(
            out.text.matches('\n').count(),
            out.text.matches("\r\n").count(),
            "{name}: LF-only lines in a CRLF file"
        );
    }
    assert_eq!(
        src.starts_with('\u{feff}'),
        out.text.starts_with('\u{feff}'),
        "{name}: BOM"
    );
    out.text
}

#[test]
fn every_corpus_file_survives_its_edits() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus");
    let mut nix_checked = 0;
    let cases = cases();
    assert!(cases.len() >= 10);
    for (name, edits) in cases {
        assert!(edits.len() >= 5, "{name}");
        let mut text = std::fs::read_to_string(dir.join(name)).expect("read");
        for e in edits {
            let (op, want) = match e {
                E::Set(path, v) => (Op::Set(p(path), Value::Json(v.clone())), Some((path, v))),
                E::Raw(path, raw) => (Op::Set(p(path), Value::Raw(raw.into())), None),
                E::Unset(path) => (Op::Unset(p(path)), None),
                E::Append(path, v) => (Op::Append(p(path), Value::Json(v)), None),
                E::AppendNix(path, raw) => (Op::Append(p(path), Value::Raw(raw.into())), None),
                E::RemoveNix(path, raw) => (Op::Remove(p(path), Value::Raw(raw.into())), None),
            };
            text = apply(name, &text, &op);
            if let Some((path, v)) = want {
                assert_eq!(
                    read(&text, 0, &p(path)).expect("read back").value,
                    Some(v),
                    "{name}: {path}"
                );
            }
            if let Op::Unset(path) = &op {
                assert!(get(&text, path).is_err(), "{name}: {path} still set");
            }
            match nix_parses(&text) {
                Some(true) => nix_checked += 1,
                Some(false) => panic!("{name}: nix-instantiate rejects:\n{text}"),
                None => {}
            }
        }
    }
    if nix_checked == 0 {
        println!("skipped: nix-instantiate not found; outputs were only checked with rnix");
    }
}

#[test]
fn a_five_thousand_line_file_survives_its_edits() {
    let mut text = fixture::big_osmoda_nix();
    assert!(text.lines().count() > 1_000);
    for (path, v) in [
        (
            "services.osmoda.watch.watchers.w100.intervalSecs",
            json!(10),
        ),
        ("services.osmoda.routines.r149.trigger.seconds", json!(7)),
        (
            "services.osmoda.watch.watchers.w265.check.timeoutSecs",
            json!(2),
        ),
        (
            "services.osmoda.watch.watchers.new",
            json!({"check": {"type": "tcp", "port": 1}}),
        ),
        ("services.osmoda.enable", json!(false)),
    ] {
        text = apply("big", &text, &Op::Set(p(path), Value::Json(v.clone())));
        assert_eq!(get(&text, &p(path)).expect("read back"), v);
    }
    text = apply(
        "big",
        &text,
        &Op::Unset(p("services.osmoda.watch.watchers.w000")),
    );
    assert!(!text.contains("w000 ="));
    assert!(
        !text.contains("# Watcher 0: keep"),
        "its comment went with it"
    );
    assert!(text.contains("# Watcher 1: keep"));
}
