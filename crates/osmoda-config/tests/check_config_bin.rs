//! The `osmoda-check-config DAEMON FILE` binary the NixOS module can run at build time.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_osmoda-check-config"))
        .args(args)
        .output()
        .expect("binary runs");
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn exit_codes_and_messages() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("voice.json");
    std::fs::write(&good, r#"{"whisper_model":"/m/ggml.bin","language":"en"}"#)?;
    let (code, out, _) = run(&["voice", good.to_str().unwrap_or_default()]);
    assert_eq!(code, 0);
    assert!(out.contains("valid voice config"), "{out}");

    let bad = dir.path().join("mesh.json");
    std::fs::write(
        &bad,
        "{\n  \"listen\": \"127.0.0.1:18800\",\n  \"peers\": {\"a\": {\"endpoint\": \"h:1\"}}\n}",
    )?;
    let (code, _, err) = run(&["mesh", bad.to_str().unwrap_or_default()]);
    assert_eq!(code, 1);
    assert!(
        err.contains("mesh.json:3:")
            && err.contains("peers.a")
            && err.contains("missing field `public_keys`"),
        "{err}"
    );

    let (code, _, err) = run(&["nosuchd", good.to_str().unwrap_or_default()]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown daemon"), "{err}");

    let (code, _, err) = run(&["voice"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("usage: osmoda-check-config DAEMON FILE"),
        "{err}"
    );
    Ok(())
}
