//! The NixOS module's routines lines, through nixos-eval (the real nixpkgs declarations of
//! systemd, users, etc; `../shared/nixos-eval/check.sh` beside the checkout or
//! `$OSMODA_NIXOS_EVAL`): the unit is hardened and dumps no core (the gateway's environment
//! file it may load holds model API keys); routines.json carries each egress capability's bind
//! paths and the other daemons' secret files by option, and the real binary's build-time
//! `check-config` refuses a ring1 routine whose capability would bind one of them. Without
//! nixos-eval it prints "skipped".
#![allow(clippy::unwrap_used)]

use std::process::Command;

#[path = "../../../tests/rust/nixos_eval.rs"]
mod nixos_eval;
use nixos_eval::{check_sh, eval};

#[test]
fn nixos_eval_if_present_routines_unit_and_no_bind_over_a_secret() {
    let Some(check) = check_sh() else { return };
    let settings = |bind: &str| {
        format!(
            r#"services.osmoda = {{ enable = true;
                 agentd.capabilityKeyFile = "/etc/secrets/capability.key";
                 keyd.secretFile = "/var/lib/secrets/keyd-master";
                 egress.capabilities.web = {{ domains = [ "example.org" ]; ports = [ 443 ]; readOnlyPaths = [ "{bind}" ]; }};
                 routines.fetch = {{ trigger = {{ type = "interval"; seconds = 3600; }};
                   action = {{ type = "command"; command = [ "true" ]; timeoutSecs = 60; sandbox = "ring1"; capabilities = [ "web" ]; }}; }}; }};"#
        )
    };
    let json = eval(&check, &settings("/srv/data"));
    let text = json["units"]["osmoda-routines"]["text"].as_str().unwrap();
    for want in [
        "LimitCORE=0",
        "User=osmoda-routines",
        "NoNewPrivileges=true",
    ] {
        assert!(text.contains(want), "{want}:\n{text}");
    }
    let check_config = |rendered: &str| {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("routines.json");
        std::fs::write(&f, rendered).unwrap();
        // As the module's build-time check runs it: inside a Nix build.
        Command::new(env!("CARGO_BIN_EXE_osmoda-routines"))
            .arg("check-config")
            .arg(&f)
            .env("NIX_BUILD_TOP", "/build")
            .output()
            .unwrap()
    };
    let rendered = json["etc"]["osmoda/routines.json"]["text"]
        .as_str()
        .unwrap();
    let cfg: serde_json::Value = serde_json::from_str(rendered).unwrap();
    assert_eq!(
        cfg["capability_paths"]["web"],
        serde_json::json!(["/srv/data"])
    );
    assert_eq!(
        cfg["daemon_secrets"]["agentd.capabilityKeyFile"],
        "/etc/secrets/capability.key"
    );
    let out = check_config(rendered);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (bind, option) in [
        ("/etc/secrets", "agentd.capabilityKeyFile"),
        ("/var/lib/secrets", "keyd.secretFile"),
    ] {
        let json = eval(&check, &settings(bind));
        let out = check_config(
            json["etc"]["osmoda/routines.json"]["text"]
                .as_str()
                .unwrap(),
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains(&format!("\"web\" binds {bind} into the ring1 sandbox"))
                && err.contains(&format!("({option})")),
            "{bind}: {err}"
        );
    }
}

/// others-13: with the gateway on, routines is told which user runs it (`--gateway-user`), so
/// a prompt's token goes only to a port that user's socket holds; with it off, no such flag.
#[test]
fn nixos_eval_if_present_routines_knows_the_gateways_user() {
    let Some(check) = check_sh() else { return };
    let json = eval(
        &check,
        r#"services.osmoda = { enable = true;
             gateway = { enable = true; port = 18790; environmentFile = "/var/lib/secrets/gw.env"; }; };"#,
    );
    let exec = json["units"]["osmoda-routines"]["ExecStart"]
        .as_str()
        .unwrap();
    assert!(exec.contains("--gateway-user osmoda-gateway"), "{exec}");
    let gateway = json["units"]["osmoda-gateway"]["text"].as_str().unwrap();
    assert!(gateway.contains("User=osmoda-gateway"), "{gateway}");
    let rendered: serde_json::Value = serde_json::from_str(
        json["etc"]["osmoda/routines.json"]["text"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(rendered["gateway_url"], "http://127.0.0.1:18790");
    let json = eval(&check, "services.osmoda.enable = true;");
    let exec = json["units"]["osmoda-routines"]["ExecStart"]
        .as_str()
        .unwrap();
    assert!(!exec.contains("--gateway-user"), "{exec}");
}
