//! The NixOS module's keyd lines, through nixos-eval (the real nixpkgs declarations of systemd,
//! users and etc; `../shared/nixos-eval/check.sh` beside the checkout or `$OSMODA_NIXOS_EVAL`):
//! the unit has no network and the hardened baseline, runs as its own user (the uid agentd
//! trusts with keyd's tickets), gets `secretFile` as the systemd credential `secret` and never
//! its content; the rendered keyd.json passes the binary's `check-config`, which the module
//! also runs at build time. Without nixos-eval it prints "skipped".
#![allow(clippy::unwrap_used)]

#[path = "../../../tests/rust/nixos_eval.rs"]
mod nixos_eval;
use nixos_eval::{check_sh, checked_config, eval};

#[test]
fn nixos_eval_if_present_keyd_unit_has_no_network_and_its_secret_as_a_credential() {
    let Some(check) = check_sh() else { return };
    let json = eval(
        &check,
        r#"services.osmoda = { enable = true;
             keyd = { enable = true; secretFile = "/var/lib/secrets/keyd-master"; maxWallets = 7;
               policy.chains.ethereum = { chainIds = [ 1 ]; perTxMax = "1000"; dailyLimit = "5000"; }; }; };"#,
    );
    let unit = &json["units"]["osmoda-keyd"];
    let exec = unit["ExecStart"].as_str().unwrap();
    assert!(
        exec.contains("--socket /run/osmoda/keyd.sock --config /etc/osmoda/keyd.json --state-dir /var/lib/osmoda/keyd --agentd-socket /run/osmoda/agentd.sock"),
        "{exec}"
    );
    let text = unit["text"].as_str().unwrap();
    for want in [
        "PrivateNetwork=true",
        "RestrictAddressFamilies=AF_UNIX\n",
        "CapabilityBoundingSet=\n",
        "AmbientCapabilities=\n",
        "NoNewPrivileges=true",
        "ProtectSystem=strict",
        "ProtectHome=true",
        "PrivateDevices=true",
        "MemoryDenyWriteExecute=true",
        "StateDirectoryMode=0700",
        "LimitCORE=0",
        "User=osmoda-keyd",
        "Type=notify",
        "LoadCredential=secret:/var/lib/secrets/keyd-master",
    ] {
        assert!(text.contains(want), "{want}:\n{text}");
    }
    assert!(!text.contains("AF_INET"), "{text}");
    // agentd trusts that user, and only it, with keyd's tickets.
    let agentd = json["units"]["osmoda-agentd"]["ExecStart"]
        .as_str()
        .unwrap();
    assert!(agentd.contains("--keyd-user osmoda-keyd"), "{agentd}");

    // keyd.json names the secret's place, never its content (the module cannot read it); the
    // binary accepts the file, and the module checks it at build time.
    let v = checked_config(&json, "keyd", env!("CARGO_BIN_EXE_osmoda-keyd"));
    assert_eq!(v["secret_file"], "/var/lib/secrets/keyd-master");
    assert_eq!(v["policy"]["chains"]["ethereum"]["per_tx_max"], "1000");
    assert_eq!(v["max_wallets"], 7, "{v}");

    // Without secretFile: no credential (keyd makes its own 0600 secret in its state dir).
    let json = eval(
        &check,
        "services.osmoda = { enable = true; keyd.enable = true; };",
    );
    let text = json["units"]["osmoda-keyd"]["text"].as_str().unwrap();
    assert!(
        !text.contains("LoadCredential") && text.contains("PrivateNetwork=true"),
        "{text}"
    );
    // The wallet cap's default, as the binary's own default.
    let v = checked_config(&json, "keyd", env!("CARGO_BIN_EXE_osmoda-keyd"));
    assert_eq!(v["max_wallets"], 1000, "{v}");
    // keyd off: no unit and no file.
    let json = eval(
        &check,
        "services.osmoda = { enable = true; keyd.enable = false; };",
    );
    assert!(json["units"].get("osmoda-keyd").is_none());
    assert!(json["etc"].get("osmoda/keyd.json").is_none());
}

#[test]
fn nixos_eval_if_present_a_secret_file_in_the_store_fails_evaluation() {
    let Some(check) = check_sh() else { return };
    // Every secret-file option the module has, each set to a store path: each named once.
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.nix");
    let store = |n: &str| format!("\"/nix/store/00000000000000000000000000000000-{n}\"");
    std::fs::write(
        &m,
        format!(
            r#"{{ services.osmoda = {{ enable = true;
                 agentd.capabilityKeyFile = {};
                 agentd.ledger.checkpoint.keyFile = {};
                 agentd.ledger.witness.keyFile = {};
                 keyd = {{ enable = true; secretFile = {}; }};
                 mesh.secretFile = {};
                 voice.gatewayTokenFile = {};
                 gateway.environmentFile = {};
                 gateway.channels.telegram = {{ enable = true; botTokenFile = {}; }};
                 routines = {{ enable = true; gatewayTokenFile = {};
                   hook = {{ trigger = {{ type = "webhook"; path = "hook"; secretFile = {}; }};
                            action = {{ type = "command"; command = [ "true" ]; }}; }};
                   kept = {{ trigger = {{ type = "webhook"; path = "kept"; secretFile = "/run/keys/kept"; }};
                            action = {{ type = "command"; command = [ "true" ]; }}; }}; }}; }};
               system.stateVersion = "24.11"; }}"#,
            store("cap"),
            store("ckpt"),
            store("wit"),
            store("keyd"),
            store("mesh"),
            store("voice"),
            store("env"),
            store("tg"),
            store("routines-gw"),
            store("hook"),
        ),
    )
    .unwrap();
    let module = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../modules/osmoda.nix");
    let out = std::process::Command::new(&check)
        .arg(&module)
        .arg(&m)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed: Vec<&str> = v["failedAssertions"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a.as_str())
        .filter(|a| a.contains("is in the Nix store"))
        .collect();
    for name in [
        "agentd.capabilityKeyFile",
        "agentd.ledger.checkpoint.keyFile",
        "agentd.ledger.witness.keyFile",
        "keyd.secretFile",
        "mesh.secretFile",
        "voice.gatewayTokenFile",
        "gateway.environmentFile",
        "gateway.channels.telegram.botTokenFile",
        "routines.gatewayTokenFile",
        "routines.hook.trigger.secretFile",
    ] {
        let want = format!("services.osmoda.{name} is in the Nix store");
        assert_eq!(
            failed.iter().filter(|a| a.starts_with(&want)).count(),
            1,
            "{name}: {failed:?}"
        );
    }
    // A webhook secret outside the store is not named.
    assert!(
        !failed.iter().any(|a| a.contains("routines.kept.")),
        "{failed:?}"
    );
    // Outside the store: no such assertion (the first test evaluates that case whole).
    let json = eval(
        &check,
        r#"services.osmoda = { enable = true; keyd = { enable = true; secretFile = "/run/keys/keyd"; }; };"#,
    );
    assert!(json["units"]["osmoda-keyd"]["text"]
        .as_str()
        .unwrap()
        .contains("LoadCredential=secret:/run/keys/keyd"));
}
