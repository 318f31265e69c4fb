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

fn check_config(file: &std::path::Path, in_nix_build: bool) -> (bool, String) {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_osmoda-routines"));
    c.arg("check-config").arg(file).env_remove("NIX_BUILD_TOP");
    if in_nix_build {
        c.env("NIX_BUILD_TOP", "/build");
    }
    let out = c.output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn webhook(secret: &std::path::Path) -> serde_json::Value {
    json!({ "hook": { "enable": true,
        "trigger": { "type": "webhook", "path": "hook", "secret_file": secret },
        "action": { "type": "command", "command": ["true"], "timeout_secs": 5 } } })
}

/// A webhook whose secret file is missing, empty, not a file or readable by every user is
/// refused at start and by `check-config` on the machine (the build-time check cannot see
/// secrets and says so); at reload the routines in force stay; a secret that goes away later makes `/health` degraded
/// and the webhook 503 — and no answer or ledger event names the path.
#[tokio::test]
async fn a_webhook_without_a_usable_secret_is_refused_and_never_named() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    let secret = dir.path().join("hook-secret-file");
    let path = secret.display().to_string();
    let file = dir.path().join("routines.json");
    write_config(dir.path(), webhook(&secret));
    for (what, prepare) in [
        ("does not exist", None),
        ("is empty", Some("\n")),
        ("is not a regular file", Some("dir")),
        (
            "is readable by every user on this machine (mode 0644)",
            Some("world"),
        ),
    ] {
        let _ = std::fs::remove_file(&secret);
        let _ = std::fs::remove_dir(&secret);
        match prepare {
            Some("dir") => std::fs::create_dir(&secret).unwrap(),
            Some("world") => {
                use std::os::unix::fs::PermissionsExt;
                common::write_secret(&secret, "s3cret\n");
                let all = std::fs::Permissions::from_mode(0o644);
                std::fs::set_permissions(&secret, all).unwrap();
            }
            Some(text) => common::write_secret(&secret, text),
            None => {}
        }
        let err = match osmoda_routines::AppState::open(options(dir.path(), &agentd.socket)).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("started with a secret that {what}"),
        };
        assert!(
            err.contains(&format!("routines.hook.trigger.secret_file {what}")),
            "{err}"
        );
        assert!(
            err.contains("head -c 32 /dev/urandom"),
            "says what to do: {err}"
        );
        assert!(!err.contains(&path), "{err}");
        let (ok, out) = check_config(&file, false);
        assert!(!ok && out.contains(what), "{out}");
        let (ok, out) = check_config(&file, true);
        assert!(
            ok && out.contains("checked when the daemon starts"),
            "{out}"
        );
    }
    std::fs::remove_file(&secret).unwrap();
    common::write_secret(&secret, "s3cret\n");
    assert!(check_config(&file, false).0);
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    let (_, h) = r.get("/health").await;
    assert_eq!(h["status"], "ok", "{h}");

    // The secret goes away: /health says which routine, the webhook answers 503, no path.
    std::fs::remove_file(&secret).unwrap();
    let (_, h) = r.get("/health").await;
    assert_eq!(h["status"], "degraded", "{h}");
    assert!(
        h["problem"]
            .as_str()
            .unwrap()
            .starts_with("routines.hook.trigger.secret_file does not exist"),
        "{h}"
    );
    assert!(!h.to_string().contains(&path), "{h}");
    let (s, v) = r.post("/webhook/hook", json!({})).await;
    assert_eq!(s, 503, "{v}");
    assert!(!v.to_string().contains(&path), "{v}");
    assert_eq!(
        r.state.engine.history().list(None, None, 10).unwrap().len(),
        0
    );

    // A reload with another routine is refused while the secret is missing, and applied
    // once it is back (no change to routines.json needed).
    let mut both = webhook(&secret);
    both["other"] = json!({ "enable": true, "trigger": { "type": "interval", "seconds": 3600 },
        "action": { "type": "command", "command": ["true"], "timeout_secs": 5 } });
    write_config(dir.path(), both);
    let refused = agentd.wait_events("routine.config.refused", 1).await;
    assert!(refused[0].payload.contains("secret_file does not exist"));
    assert!(
        !refused[0].payload.contains(&path),
        "{}",
        refused[0].payload
    );
    assert_eq!(r.state.engine.config().routines.len(), 1);
    common::write_secret(&secret, "s3cret\n");
    let start = Instant::now();
    while r.state.engine.config().routines.len() != 2 {
        assert!(start.elapsed() < Duration::from_secs(30), "not reloaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, h) = r.get("/health").await;
    assert_eq!(h["status"], "ok", "{h}");
    r.stop().await;
}

/// Schedules that never fire and commands as root are refused at start and by check-config
/// (the sibling checks of the same rule are in osmoda-config's unit tests).
#[tokio::test]
async fn never_firing_schedules_and_root_commands_are_refused_at_load() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    let cmd = json!({ "type": "command", "command": ["true"], "timeout_secs": 5 });
    let root_cmd =
        json!({ "type": "command", "command": ["true"], "timeout_secs": 5, "user": "root" });
    for (trigger, action, want) in [
        (
            json!({ "type": "cron", "schedule": "0 0 30 2 *" }),
            &cmd,
            "routines.r.trigger.schedule \"0 0 30 2 *\" never fires",
        ),
        (
            json!({ "type": "interval", "seconds": u64::MAX }),
            &cmd,
            "routines.r.trigger.seconds is 18446744073709551615",
        ),
        (
            json!({ "type": "interval", "seconds": 60 }),
            &root_cmd,
            "routines.r.action.user is root",
        ),
    ] {
        write_config(
            dir.path(),
            json!({ "r": { "enable": true, "trigger": trigger, "action": action } }),
        );
        let err = match osmoda_routines::AppState::open(options(dir.path(), &agentd.socket)).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("started with {want}"),
        };
        assert!(err.contains(want), "{err}");
        let (ok, out) = check_config(&dir.path().join("routines.json"), true);
        assert!(!ok && out.contains(want), "{out}");
    }
    // The daemon resolves the user: one the machine does not know is refused (and one that
    // resolves to uid 0 under another name is refused as root, by the same lookup).
    let toor = json!({ "type": "command", "command": ["true"], "timeout_secs": 5, "user": "no-such-user-here" });
    write_config(
        dir.path(),
        json!({ "r": { "enable": true, "trigger": { "type": "interval", "seconds": 60 }, "action": toor } }),
    );
    let err = match osmoda_routines::AppState::open(options(dir.path(), &agentd.socket)).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started with an unknown user"),
    };
    assert!(
        err.contains("routines.r.action.user: \"no-such-user-here\" is not a user"),
        "{err}"
    );
}
