//! The NixOS module's mesh lines, through nixos-eval (the real nixpkgs declarations of systemd,
//! users, etc and firewall; `../shared/nixos-eval/check.sh` beside the checkout or
//! `$OSMODA_NIXOS_EVAL`): the unit starts osmoda-mesh with its file and watch's socket,
//! hardened; `openFirewall` opens exactly the listen port; peers are rendered into mesh.json,
//! which the real binary's `check-config` accepts. Without nixos-eval it prints "skipped".
#![allow(clippy::unwrap_used)]

use std::process::Command;

use serde_json::Value;

#[path = "../../../tests/rust/nixos_eval.rs"]
mod nixos_eval;
use nixos_eval::{check_sh, eval};

#[test]
fn nixos_eval_if_present_mesh_unit_firewall_and_peers() {
    let Some(check) = check_sh() else { return };
    let id = osmoda_mesh::identity::Identity::generate()
        .unwrap()
        .public();
    let json = eval(
        &check,
        &format!(
            r#"services.osmoda = {{ enable = true; mesh = {{ enable = true; listen = "0.0.0.0:18801"; openFirewall = true;
               peers.beta = {{ endpoint = "192.0.2.7:18800"; publicKeys = {{ ed25519 = "{}"; x25519 = "{}"; mlKem768 = "{}"; }}; }}; }}; }};"#,
            id.ed25519, id.x25519, id.ml_kem_768
        ),
    );
    let unit = &json["units"]["osmoda-mesh"];
    let exec = unit["ExecStart"].as_str().unwrap();
    for want in [
        "--config /etc/osmoda/mesh.json",
        "--watch-socket /run/osmoda/watch.sock",
        "--socket /run/osmoda/mesh.sock",
    ] {
        assert!(exec.contains(want), "{want}: {exec}");
    }
    let text = unit["text"].as_str().unwrap();
    for want in [
        "NoNewPrivileges=true",
        "CapabilityBoundingSet=",
        "LimitCORE=0",
        "User=osmoda-mesh",
        "RestrictAddressFamilies=AF_INET6",
    ] {
        assert!(text.contains(want), "{want}:\n{text}");
    }
    assert!(
        unit["after"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a == "osmoda-watch.service"),
        "{unit}"
    );
    assert_eq!(
        json["firewall"]["allowedTCPPorts"],
        serde_json::json!([18801])
    );
    let rendered = json["etc"]["osmoda/mesh.json"]["text"].as_str().unwrap();
    let cfg: Value = serde_json::from_str(rendered).unwrap();
    assert_eq!(cfg["listen"], "0.0.0.0:18801");
    assert_eq!(
        cfg["peers"]["beta"]["public_keys"]["ml_kem_768"],
        id.ml_kem_768.as_str()
    );
    // The real binary accepts what the module renders.
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("mesh.json");
    std::fs::write(&f, rendered).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_osmoda-mesh"))
        .arg("check-config")
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Refused at build time: a bad port, a key of the wrong size, a key of the right size
    // that is no ML-KEM-768 key (coefficients over q), an endpoint that is no host:port.
    use base64::Engine as _;
    let not_ml_kem = base64::engine::general_purpose::STANDARD.encode([0xffu8; 1184]);
    for (bad, why) in [
        (rendered.replace("18801", "0"), "port"),
        (
            rendered.replace(&id.x25519, "AAAA"),
            "x25519 must have 32 bytes",
        ),
        (rendered.replace(&id.ml_kem_768, &not_ml_kem), "ml_kem_768"),
        (rendered.replace("192.0.2.7:18800", "a b:1"), "host must be"),
    ] {
        std::fs::write(&f, bad).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_osmoda-mesh"))
            .arg("check-config")
            .arg(&f)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(why), "{why}: {err}");
    }
    // No LoadCredential without secretFile (the secret is generated in the state dir).
    assert!(!text.contains("LoadCredential"), "{text}");

    // secretFile arrives as the systemd credential `secret`, never through the store.
    let json = eval(
        &check,
        r#"services.osmoda = { enable = true; mesh = { enable = true; secretFile = "/run/keys/mesh-secret"; }; };"#,
    );
    let text = json["units"]["osmoda-mesh"]["text"].as_str().unwrap();
    assert!(
        text.contains("LoadCredential=secret:/run/keys/mesh-secret"),
        "{text}"
    );

    // Firewall closed by default; mesh off by default means no unit.
    let json = eval(
        &check,
        r#"services.osmoda = { enable = true; mesh.enable = true; };"#,
    );
    assert_eq!(json["firewall"]["allowedTCPPorts"], serde_json::json!([]));
    let json = eval(&check, r#"services.osmoda.enable = true;"#);
    assert!(json["units"]["osmoda-mesh"].is_null());
}
