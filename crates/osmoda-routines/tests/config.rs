//! Config errors are loud: an invalid routines.json stops the daemon from starting with the
//! reason, `check-config` fails on it, and a bad new file at runtime is refused (the routines
//! in force stay, `/health` and the ledger say why) — never a silent fall back to defaults.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{options, scratch, write_config, Agentd, Routines};
use serde_json::json;

fn bad_cron() -> serde_json::Value {
    json!({ "r": { "enable": true, "trigger": { "type": "cron", "schedule": "0 25 * * *" },
                   "action": { "type": "command", "command": ["true"], "timeout_secs": 5 } } })
}

#[tokio::test]
async fn an_invalid_config_is_refused_at_start_and_at_reload() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    write_config(dir.path(), bad_cron());
    let err = match osmoda_routines::AppState::open(options(dir.path(), &agentd.socket)).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started on an invalid config"),
    };
    assert!(err.contains("routines.r.trigger.schedule"), "{err}");

    // check-config, the build-time gate, says the same.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_osmoda-routines"))
        .arg("check-config")
        .arg(dir.path().join("routines.json"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("routines.r.trigger.schedule"));

    // No file at all is an error too, not an empty set of routines.
    std::fs::remove_file(dir.path().join("routines.json")).unwrap();
    assert!(
        osmoda_routines::AppState::open(options(dir.path(), &agentd.socket))
            .await
            .is_err()
    );

    write_config(
        dir.path(),
        json!({ "ok": { "enable": true, "trigger": { "type": "interval", "seconds": 3600 },
                        "action": { "type": "command", "command": ["true"], "timeout_secs": 5 } } }),
    );
    let ok = std::process::Command::new(env!("CARGO_BIN_EXE_osmoda-routines"))
        .arg("check-config")
        .arg(dir.path().join("routines.json"))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    write_config(dir.path(), bad_cron());
    let start = Instant::now();
    let health = loop {
        let (_, h) = r.get("/health").await;
        if h["status"] == "config_refused" {
            break h;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        health["config_error"]
            .as_str()
            .unwrap()
            .contains("routines.r.trigger.schedule"),
        "{health}"
    );
    let (_, list) = r.get("/routine/list").await;
    assert_eq!(list[0]["name"], "ok", "the routines in force stay: {list}");
    let refused = agentd.wait_events("routine.config.refused", 1).await;
    assert!(refused[0].payload.contains("schedule"));
    r.stop().await;
}
