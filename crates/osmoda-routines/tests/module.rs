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
    // The gateway's environment file (model API keys) never reaches the routines unit; without
    // a token file of its own the module warns that the prompts will be refused.
    let unit = json["units"]["osmoda-routines"]["text"].as_str().unwrap();
    assert!(!unit.contains("EnvironmentFile"), "{unit}");
    assert!(!unit.contains("gw.env"), "{unit}");
    assert!(
        json["warnings"]
            .to_string()
            .contains("services.osmoda.routines.gatewayTokenFile"),
        "{}",
        json["warnings"]
    );
    // With one: that file alone, as the credential `gateway-token` the daemon reads at start,
    // and listed among the secrets no routine's sandbox may bind.
    let json = eval(
        &check,
        r#"services.osmoda = { enable = true;
             gateway = { enable = true; port = 18790; environmentFile = "/var/lib/secrets/gw.env"; };
             routines.gatewayTokenFile = "/var/lib/secrets/gw-token"; };"#,
    );
    let unit = json["units"]["osmoda-routines"]["text"].as_str().unwrap();
    assert!(
        unit.contains("LoadCredential=gateway-token:/var/lib/secrets/gw-token")
            && !unit.contains("EnvironmentFile"),
        "{unit}"
    );
    let exec = json["units"]["osmoda-routines"]["ExecStart"]
        .as_str()
        .unwrap();
    assert!(
        exec.contains(
            "--gateway-token-file /run/credentials/osmoda-routines.service/gateway-token"
        ),
        "{exec}"
    );
    assert!(
        !json["warnings"]
            .to_string()
            .contains("routines.gatewayTokenFile"),
        "{}",
        json["warnings"]
    );
    let rendered: serde_json::Value = serde_json::from_str(
        json["etc"]["osmoda/routines.json"]["text"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        rendered["daemon_secrets"]["routines.gatewayTokenFile"],
        "/var/lib/secrets/gw-token"
    );
    assert!(
        rendered.get("gatewayTokenFile").is_none()
            && rendered["routines"].get("gatewayTokenFile").is_none()
    );
    assert_eq!(
        rendered["default_routines"],
        serde_json::json!([
            "failed-units",
            "health-snapshot",
            "log-scan",
            "morning-briefing"
        ])
    );
    let json = eval(&check, "services.osmoda.enable = true;");
    let exec = json["units"]["osmoda-routines"]["ExecStart"]
        .as_str()
        .unwrap();
    assert!(!exec.contains("--gateway-user"), "{exec}");
}

/// The token file is read at start: a missing or empty one stops the daemon before it binds
/// anything, naming the option (a daemon that started without it would send every prompt
/// unauthenticated).
#[test]
fn an_unusable_gateway_token_file_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("token");
    std::fs::write(&empty, "\n").unwrap();
    for (file, why) in [
        (empty.clone(), "is empty"),
        (dir.path().join("missing"), "cannot read"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_osmoda-routines"))
            .arg("--socket")
            .arg(dir.path().join("r.sock"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--config")
            .arg(dir.path().join("routines.json"))
            .arg("--gateway-token-file")
            .arg(&file)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success()
                && err.contains(why)
                && err.contains("services.osmoda.routines.gatewayTokenFile"),
            "{why}: {err}"
        );
        assert!(!dir.path().join("r.sock").exists());
        assert!(!dir.path().join("state").exists());
    }
}
