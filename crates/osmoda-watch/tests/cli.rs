//! `osmoda-watch check-config FILE`, as the NixOS module runs it at build time.
#![allow(clippy::unwrap_used)]

use std::process::Command;

fn check(json: &str) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("watch.json");
    std::fs::write(&file, json).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_osmoda-watch"))
        .arg("check-config")
        .arg(&file)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn accepts_a_valid_file() {
    let (ok, out) = check(
        r#"{"watchers":{"web":{"check":{"type":"http","url":"http://127.0.0.1/","expect_status":200},
            "interval_secs":30,"actions":["restart","rollback","notify"]}},
            "safe_switch":{"ttl_secs":120,"health_checks":[{"type":"agentd"}]}}"#,
    );
    assert!(ok, "{out}");
    assert!(out.contains(": ok"), "{out}");
}

#[test]
fn rejects_typos_and_bad_values_with_the_field() {
    let (ok, out) =
        check(r#"{"watchers":{},"safe_switch":{"ttl_secs":1,"health_checks":[]},"extra":1}"#);
    assert!(!ok && out.contains("extra"), "{out}");
    let (ok, out) = check(
        r#"{"watchers":{"w":{"check":{"type":"tcp","host":"h","port":1},"interval_secs":0,"actions":[]}},
            "safe_switch":{"ttl_secs":1,"health_checks":[]}}"#,
    );
    assert!(!ok && out.contains("watchers.w.interval_secs"), "{out}");
    let (ok, out) = check("not json");
    assert!(!ok && out.contains("watch.json"), "{out}");
}
