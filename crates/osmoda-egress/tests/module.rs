//! The NixOS module's egress and sandbox lines, through nixos-eval (the real nixpkgs
//! declarations of systemd, users and etc; `../shared/nixos-eval/check.sh` beside the checkout
//! or `$OSMODA_NIXOS_EVAL`): the egress unit starts the proxy with its file and its Unix socket,
//! hardened; agentd gets that socket and the egress binary for Ring 1, and its capability key
//! as a systemd credential (never through the store or an etc file); the rendered egress.json
//! passes the real binary's `check-config`, which the module also runs at build time. Without
//! nixos-eval it prints "skipped".
#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

#[path = "../../../tests/rust/nixos_eval.rs"]
mod nixos_eval;
use nixos_eval::{check_sh, eval};

#[test]
fn nixos_eval_if_present_egress_unit_agentd_flags_and_key_credential() {
    let Some(check) = check_sh() else { return };
    let json = eval(
        &check,
        r#"services.osmoda = { enable = true;
             agentd.capabilityKeyFile = "/etc/secrets/capability.key";
             egress = { proxySocket = "/run/osmoda/egress-test.sock"; allowRanges = [ "192.168.10.0/24" ];
                        capabilities.github = { domains = [ "github.com" "*.githubusercontent.com" ]; ports = [ 443 ]; }; }; };"#,
    );
    let egress = &json["units"]["osmoda-egress"];
    let exec = egress["ExecStart"].as_str().unwrap();
    for want in [
        "--config /etc/osmoda/egress.json",
        "--proxy-socket /run/osmoda/egress-test.sock",
        "--socket /run/osmoda/egress.sock",
    ] {
        assert!(exec.contains(want), "{want}: {exec}");
    }
    let text = egress["text"].as_str().unwrap();
    for want in [
        "NoNewPrivileges=true",
        "CapabilityBoundingSet=\n",
        "User=osmoda-egress",
        "LimitCORE=0",
        "PrivateUsers=true",
        "ProtectSystem=strict",
        "RestrictAddressFamilies=AF_INET6",
    ] {
        assert!(text.contains(want), "{want}:\n{text}");
    }
    let agentd = &json["units"]["osmoda-agentd"];
    let exec = agentd["ExecStart"].as_str().unwrap();
    for want in [
        "--egress-proxy-socket /run/osmoda/egress-test.sock",
        "-osmoda-egress/bin/osmoda-egress",
        "--capability-key /run/credentials/osmoda-agentd.service/capability-key",
    ] {
        assert!(exec.contains(want), "{want}: {exec}");
    }
    let text = agentd["text"].as_str().unwrap();
    assert!(
        text.contains("LoadCredential=capability-key:/etc/secrets/capability.key"),
        "{text}"
    );
    // What the sandboxes need of agentd's unit (bubblewrap as root), and no more than that.
    for want in [
        "RestrictNamespaces=false",
        "CapabilityBoundingSet=CAP_SYS_ADMIN",
        "CapabilityBoundingSet=CAP_NET_ADMIN",
        "SystemCallFilter=@mount",
        "NoNewPrivileges=true",
    ] {
        assert!(text.contains(want), "{want}:\n{text}");
    }
    // The key's path is a credential source only: no etc file names it, except routines.json's
    // `daemon_secrets`, the paths a routine's sandbox binds must stay clear of.
    for (name, f) in json["etc"].as_object().unwrap() {
        let mut f = f.clone();
        if name == "osmoda/routines.json" {
            let mut r: Value = serde_json::from_str(f["text"].as_str().unwrap()).unwrap();
            assert!(
                r["daemon_secrets"].to_string().contains("capability.key"),
                "routines.json's daemon_secrets name the key: {r}"
            );
            r.as_object_mut().unwrap().remove("daemon_secrets");
            f["text"] = Value::String(r.to_string());
        }
        assert!(
            !f.to_string().contains("capability.key"),
            "{name} names the key"
        );
    }
    // The rendered file is what the binary accepts (and the module checks it at build time).
    let rendered = json["etc"]["osmoda/egress.json"]["text"].as_str().unwrap();
    let v: Value = serde_json::from_str(rendered).unwrap();
    assert_eq!(
        v["capabilities"]["github"]["ports"],
        serde_json::json!([443])
    );
    assert!(
        v.get("proxy_socket").is_none(),
        "a unit flag, not a file key"
    );
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("egress.json");
    std::fs::write(&f, rendered).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_osmoda-egress"))
        .arg("check-config")
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(json["checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c == "osmoda-egress-json-checked"));

    // Without egress and without a key file: no Ring 1 flags, no credential.
    let json = eval(
        &check,
        "services.osmoda = { enable = true; egress.enable = false; };",
    );
    let agentd = &json["units"]["osmoda-agentd"];
    let exec = agentd["ExecStart"].as_str().unwrap();
    assert!(
        !exec.contains("--egress-bin") && !exec.contains("--capability-key"),
        "{exec}"
    );
    assert!(!agentd["text"].as_str().unwrap().contains("LoadCredential"));
    assert!(json["units"]["osmoda-egress"].is_null());
}
