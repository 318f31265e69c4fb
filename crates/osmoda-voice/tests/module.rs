//! The NixOS module's voice lines, through nixos-eval (the real nixpkgs declarations of systemd,
//! users and etc; `../shared/nixos-eval/check.sh` beside the checkout or `$OSMODA_NIXOS_EVAL`):
//! the unit is hardened with no network, reaches PipeWire's socket directory and reads only the
//! audio dirs; it gets the gateway's token alone as a credential (never the gateway's
//! environment file with the model API keys), dumps no core and has a `MemoryMax`; with the
//! gateway on, voice.json names the forwarding socket, which a socket unit owned by osmoda-voice
//! and `systemd-socket-proxyd` to the gateway's port provide, and a missing token file is a
//! warning; the rendered voice.json passes the daemon's own check. Without nixos-eval it prints
//! "skipped".
#![allow(clippy::unwrap_used)]

use serde_json::Value;

#[path = "../../../tests/rust/nixos_eval.rs"]
mod nixos_eval;
use nixos_eval::{check_sh, eval};

#[test]
fn nixos_eval_if_present_voice_unit_pipewire_and_gateway_socket() {
    let Some(check) = check_sh() else { return };
    let json = eval(
        &check,
        r#"services.osmoda = { enable = true;
             voice = { enable = true; whisperModel = "/var/lib/models/ggml-tiny.en.bin"; audioDirs = [ "/srv/audio" ]; pipewireRuntimeDir = "/run/pw";
                       gatewayTokenFile = "/var/lib/secrets/gw-token"; memoryMax = "2G"; };
             gateway = { enable = true; port = 18790; environmentFile = "/var/lib/secrets/gw.env"; }; };"#,
    );
    let unit = &json["units"]["osmoda-voice"];
    let exec = unit["ExecStart"].as_str().unwrap();
    assert!(
        exec.contains("--config /etc/osmoda/voice.json --state-dir /var/lib/osmoda/voice"),
        "{exec}"
    );
    assert!(
        exec.ends_with("--gateway-token-file /run/credentials/osmoda-voice.service/gateway-token"),
        "{exec}"
    );
    let text = unit["text"].as_str().unwrap();
    for want in [
        "PrivateNetwork=true",
        "RestrictAddressFamilies=AF_UNIX\n",
        "PrivateDevices=true",
        "CapabilityBoundingSet=\n",
        "User=osmoda-voice",
        "Environment=PIPEWIRE_RUNTIME_DIR=/run/pw",
        "ReadWritePaths=-/run/pw",
        "ReadOnlyPaths=-/srv/audio",
        "SupplementaryGroups=pipewire",
        "LoadCredential=gateway-token:/var/lib/secrets/gw-token\n",
        "LimitCORE=0",
        "MemoryMax=2G",
        "Type=notify",
    ] {
        assert!(text.contains(want), "{want}:\n{text}");
    }
    assert!(!text.contains("AF_INET"), "{text}");
    // The gateway's environment file (model API keys) is the gateway's alone.
    assert!(!text.contains("EnvironmentFile"), "{text}");
    assert!(!text.contains("gw.env"), "{text}");
    assert_eq!(json["warnings"], serde_json::json!([]));

    let voice: Value =
        serde_json::from_str(json["etc"]["osmoda/voice.json"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(voice["gateway_url"], "unix:/run/osmoda/voice-gateway.sock");
    assert_eq!(voice["audio_dirs"], serde_json::json!(["/srv/audio"]));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), voice.to_string()).unwrap();
    osmoda_config::check_config("voice", file.path()).unwrap();

    let sock = json["sockets"]["osmoda-voice-gateway"].as_str().unwrap();
    for want in [
        "ListenStream=/run/osmoda/voice-gateway.sock",
        "SocketUser=osmoda-voice",
        "SocketMode=0600",
    ] {
        assert!(sock.contains(want), "{want}:\n{sock}");
    }
    let proxy = json["units"]["osmoda-voice-gateway"]["text"]
        .as_str()
        .unwrap();
    for want in [
        "systemd-socket-proxyd 127.0.0.1:18790",
        "DynamicUser=true",
        "IPAddressDeny=any",
        "IPAddressAllow=127.0.0.1",
    ] {
        assert!(proxy.contains(want), "{want}:\n{proxy}");
    }

    // The gateway on but no token file: the unit still gets no environment file, and the
    // operator is told what the voice will lack; the default memory limit applies.
    let json = eval(
        &check,
        r#"services.osmoda = { enable = true; voice.enable = true;
             gateway = { enable = true; environmentFile = "/var/lib/secrets/gw.env"; }; };"#,
    );
    let text = json["units"]["osmoda-voice"]["text"].as_str().unwrap();
    for absent in ["EnvironmentFile", "LoadCredential", "--gateway-token-file"] {
        assert!(!text.contains(absent), "{absent}:\n{text}");
    }
    assert!(text.contains("MemoryMax=1536M\n"), "{text}");
    let warnings = json["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("services.osmoda.voice.gatewayTokenFile"),
        "{warnings:?}"
    );

    // Without the gateway: no forwarding socket, no gateway_url, no warning.
    let json = eval(
        &check,
        r#"services.osmoda = { enable = true; voice.enable = true; };"#,
    );
    assert!(json["sockets"].get("osmoda-voice-gateway").is_none());
    let voice: Value =
        serde_json::from_str(json["etc"]["osmoda/voice.json"]["text"].as_str().unwrap()).unwrap();
    assert!(voice.get("gateway_url").is_none(), "{voice}");
    assert_eq!(json["warnings"], serde_json::json!([]));
}
