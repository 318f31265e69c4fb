//! `agentctl switch …` against real daemons: exit codes a script can trust (0 committed or the
//! asked state, 3 rolled back, 4 failed, 5 not finished, 1 refused), tables with headers, the
//! preview as a diff, and no panic when the reader of stdout goes away.

mod common;

use std::time::{Duration, Instant};

use common::{start_with_watch, stderr, stdout, Env};
use serde_json::Value;

const FAIL_CHECK: &str = r#"{"type":"command","command":["false"]}"#;

async fn json(env: &Env, code: i32, args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let out = env.ctl_code(code, &all).await;
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

/// Polls `switch status` (exit 5 while running) until the switch is probing.
async fn until_probing(env: &Env, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = json(env, 5, &["switch", "status", id]).await;
        if v["state"] == "probing" {
            return;
        }
        assert!(Instant::now() < deadline, "never probing: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exit_codes_follow_the_final_state() {
    if !common::nix_available("exit_codes_follow_the_final_state") {
        return;
    }
    let env = start_with_watch().await;

    // committed: 0, with a table and the progress on stderr.
    let o = env
        .ctl(&[
            "switch",
            "begin",
            "--wait",
            "--ttl",
            common::TTL,
            "-m",
            "first deploy",
        ])
        .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let table = stdout(&o);
    assert!(table.starts_with("ID    STATE"), "{table}");
    assert!(
        table.lines().nth(1).expect("row").contains("committed"),
        "{table}"
    );
    assert!(
        table.contains("first deploy") && !table.contains("null"),
        "{table}"
    );
    assert!(stderr(&o).contains(": probing"), "{}", stderr(&o));
    let first = json(&env, 0, &["switch", "status", "1"]).await;
    assert_eq!(first["state"], "committed");

    // rolled back by a failing check: 3, from begin --wait and from status.
    let v = json(
        &env,
        3,
        &[
            "switch", "begin", "--wait", "--ttl", "5", "--check", FAIL_CHECK, "--reason", "doomed",
        ],
    )
    .await;
    assert_eq!(v["state"], "rolled-back");
    let id = v["id"].to_string();
    let table = env.ctl_code(3, &["switch", "status", &id]).await;
    assert!(
        table.contains("rolled-back") && table.contains("FAIL"),
        "{table}"
    );
    let out = env.ctl_code(3, &["switch", "status", &id, "--wait"]).await;
    assert!(out.contains("rolled-back"), "{out}");

    // A running switch: status exits 5, --timeout gives up with 5, rollback asked: 0.
    let v = json(
        &env,
        0,
        &["switch", "begin", "--ttl", "600", "--reason", "slow"],
    )
    .await;
    let id = v["id"].to_string();
    until_probing(&env, &id).await;
    env.ctl_code(5, &["switch", "status", &id, "--wait", "--timeout", "1"])
        .await;
    let out = env
        .ctl_code(
            0,
            &["switch", "rollback", &id, "--reason", "changed my mind"],
        )
        .await;
    assert!(
        out.contains("rolled-back") && out.contains("changed my mind"),
        "{out}"
    );
    env.ctl_code(3, &["switch", "status", &id]).await;

    // Commit early: 0. Rolling back a committed switch is refused: 1, with the daemon's
    // error and its detail (what to do instead).
    let v = json(&env, 0, &["switch", "begin", "--ttl", "600", "-m", "early"]).await;
    let id = v["id"].to_string();
    until_probing(&env, &id).await;
    env.ctl_code(0, &["switch", "commit", &id]).await;
    let o = env.ctl(&["switch", "rollback", &id]).await;
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.starts_with("agentctl: ") && err.contains("(HTTP 409)"),
        "{err}"
    );
    assert!(
        err.contains("begin a new switch"),
        "the detail is printed: {err}"
    );

    // failed: a rollback that cannot work (the previous system is gone) ends `failed`: 4.
    let deployed = json(&env, 0, &["switch", "status", &id]).await;
    let active = deployed["built"].as_str().expect("built");
    std::fs::remove_dir_all(active).expect("remove the active generation");
    let v = json(
        &env,
        4,
        &[
            "switch",
            "begin",
            "--wait",
            "--ttl",
            "5",
            "--check",
            FAIL_CHECK,
            "-m",
            "no way back",
        ],
    )
    .await;
    assert_eq!(v["state"], "failed", "{v}");
    env.ctl_code(4, &["switch", "status", &v["id"].to_string()])
        .await;

    // History: a table with a header, one row per switch, no literal null.
    let history = env.ctl_code(0, &["switch", "history"]).await;
    assert!(history.starts_with("ID    STATE"), "{history}");
    assert_eq!(history.lines().count(), 1 + 5, "{history}");
    assert!(!history.contains("null"), "{history}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn preview_is_a_diff_and_json_for_machines() {
    if !common::nix_available("preview_is_a_diff_and_json_for_machines") {
        return;
    }
    let env = start_with_watch().await;
    let out = env.ctl_code(0, &["switch", "preview"]).await;
    assert!(out.starts_with("nothing deployed yet"), "{out}");
    env.ctl_code(0, &["switch", "begin", "--wait", "--ttl", common::TTL])
        .await;
    let out = env.ctl_code(0, &["switch", "preview"]).await;
    assert!(
        out.contains("(deployed)") && out.contains("no changes"),
        "{out}"
    );
    env.ctl_code(
        0,
        &[
            "config",
            "set",
            "services.osmoda.watch.watchers.alive",
            r#"{"check":{"type":"agentd"},"intervalSecs":30,"actions":["notify"]}"#,
            "--reason",
            "watch agentd",
        ],
    )
    .await;
    let out = env.ctl_code(0, &["switch", "preview"]).await;
    assert!(out.contains("files: osmoda.nix"), "{out}");
    assert!(
        out.contains("--- a/osmoda.nix") && out.contains("+++ b/osmoda.nix"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with('+') && l.contains("alive")),
        "{out}"
    );
    assert!(
        !out.trim_start().starts_with('{'),
        "readable, not JSON: {out}"
    );
    let v: Value = serde_json::from_str(&env.ctl_code(0, &["--json", "switch", "preview"]).await)
        .expect("--json is JSON");
    assert_eq!(v["files"], serde_json::json!(["osmoda.nix"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_stdout_is_not_a_panic() {
    if !common::nix_available("a_closed_stdout_is_not_a_panic") {
        return;
    }
    let env = start_with_watch().await;
    for _ in 0..3 {
        env.ctl_code(0, &["switch", "begin", "--wait", "--ttl", common::TTL])
            .await;
    }
    // The shell pipeline from the issue: `agentctl switch history | head -1` exits 0.
    let mut sh = std::process::Command::new("bash");
    sh.args(["-c", "set -o pipefail; \"$0\" switch history | head -1"])
        .arg(env!("CARGO_BIN_EXE_agentctl"));
    for (k, v) in env.command().get_envs() {
        if let Some(v) = v {
            sh.env(k, v);
        }
    }
    let o = sh.output().expect("bash");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).starts_with("ID    STATE"), "{}", stdout(&o));

    // Deterministically: the reader is gone before agentctl writes anything.
    for args in [
        &["switch", "history"][..],
        &["events", "--limit", "1000"],
        &["--json", "switch", "history"],
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut c = env.command();
        c.args(args).stdout(writer);
        let o = c.output().expect("run");
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("panicked"), "{args:?}: {}", stderr(&o));
    }

    // stderr on the same closed pipe (`agentctl … 2>&1 | head -1`): progress lines and a
    // refusal are written there; the exit code is still the switch's or the refusal's.
    for (args, code) in [
        (&["switch", "begin", "--wait", "--ttl", common::TTL][..], 0),
        (&["switch", "begin", "--ttl", common::TTL][..], 0),
        (&["switch", "status", "424242"][..], 1),
        (&["switch", "begin", "--ttl", "0"][..], 1),
    ] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut c = env.command();
        c.args(args)
            .stdout(writer.try_clone().expect("dup"))
            .stderr(writer);
        let o = c.output().expect("run");
        assert_eq!(
            o.status.code(),
            Some(code),
            "{args:?} with stdout and stderr closed"
        );
        common::settle(&env).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_back_to_a_generation_without_a_user_needs_an_approval() {
    if !common::nix_available("a_switch_back_to_a_generation_without_a_user_needs_an_approval") {
        return;
    }
    let env = start_with_watch().await;
    let rev = |env: &Env| {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(env.tree())
            .args(["rev-parse", "HEAD"])
            .output()
            .expect("git");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let without_alice = rev(&env);
    env.ctl_code(
        0,
        &[
            "config",
            "set",
            "users.users.alice",
            r#"{"isNormalUser":true,"extraGroups":["wheel"]}"#,
            "--file",
            "configuration.nix",
            "--reason",
            "add alice",
        ],
    )
    .await;
    env.ctl_code(
        0,
        &[
            "switch",
            "begin",
            "--wait",
            "--ttl",
            common::TTL,
            "-m",
            "deploy alice",
        ],
    )
    .await;

    // Back to the generation without alice: refused, and the refusal names the ticket.
    let o = env
        .ctl(&[
            "switch",
            "begin",
            "--generation",
            &without_alice,
            "--wait",
            "--ttl",
            common::TTL,
            "-m",
            "back",
        ])
        .await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("removes user alice"), "{}", stderr(&o));
    let list: Value =
        serde_json::from_str(&env.ctl_code(0, &["--json", "approvals", "list"]).await)
            .expect("json");
    let id = list
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["status"] == "pending")
        .and_then(|t| t["id"].as_str())
        .expect("a pending ticket")
        .to_string();
    assert!(stderr(&o).contains(&id), "{}", stderr(&o));
    // A person approves; the same switch with --approval lands and commits.
    env.ctl_code(0, &["approvals", "approve", &id]).await;
    env.ctl_code(
        0,
        &[
            "switch",
            "begin",
            "--generation",
            &without_alice,
            "--approval",
            &id,
            "--wait",
            "--ttl",
            common::TTL,
            "-m",
            "back",
        ],
    )
    .await;
    let tree = std::fs::read_to_string(env.tree().join("configuration.nix")).expect("read");
    assert!(!tree.contains("alice"), "{tree}");
    let list: Value =
        serde_json::from_str(&env.ctl_code(0, &["--json", "approvals", "list"]).await)
            .expect("json");
    assert!(
        list.as_array()
            .expect("list")
            .iter()
            .any(|t| t["id"] == id.as_str() && t["status"] == "used"),
        "{list}"
    );
}

/// `OSMODA_ACTION` in agentctl's environment (what a routine's command gets) marks every
/// request as made for that action, without a flag: agentd's events for a config edit name
/// it, and a switch agentctl begins carries it into every `watch.switch.*` event (osmoda-watch
/// keeping its own name) and its rollback's incident; `--action-label` does the same. An invalid
/// label is a usage error naming the variable, before anything is sent. Without it, nothing
/// is labelled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn osmoda_action_in_the_environment_labels_every_request() {
    if !common::nix_available("osmoda_action_in_the_environment_labels_every_request") {
        return;
    }
    let env = start_with_watch().await;
    let labelled = |label: &str, args: &[&str]| {
        let mut c = env.command();
        c.env("OSMODA_ACTION", label).args(args);
        c
    };
    let run = |mut c: std::process::Command| async move {
        tokio::task::spawn_blocking(move || c.output().expect("run agentctl"))
            .await
            .expect("join")
    };
    let shared = &env;
    let events = |kind: &'static str| async move {
        json(shared, 0, &["events", "--type", kind, "--limit", "1000"]).await
    };
    let actors = |v: &Value| -> Vec<String> {
        v.as_array()
            .expect("events")
            .iter()
            .map(|e| e["actor"].as_str().expect("actor").to_string())
            .collect()
    };

    // The setup's edits were a person's: no label anywhere yet.
    let before = actors(&events("*").await);
    assert!(before.iter().all(|a| !a.contains("action=")), "{before:?}");

    let o = run(labelled(
        "routine-run.7",
        &[
            "config",
            "set",
            "services.osmoda.watch.safeSwitch.ttlSecs",
            "2",
            "--reason",
            "r",
        ],
    ))
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let committed = actors(&events("config.committed").await);
    assert!(
        committed[0].starts_with("agent[action=routine-run.7,uid="),
        "{committed:?}"
    );

    let o = run(labelled(
        "routine-run.7",
        &["--json", "switch", "begin", "--wait", "--ttl", common::TTL],
    ))
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let s: Value = serde_json::from_str(&stdout(&o)).expect("json");
    assert_eq!(s["action"], "routine-run.7", "{s}");
    let switched = events("watch.switch.*").await;
    let mine: Vec<&Value> = switched
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| {
            let p = match &e["payload"] {
                Value::String(text) => serde_json::from_str(text).expect("payload"),
                other => other.clone(),
            };
            p["id"] == s["id"]
        })
        .collect();
    assert!(mine.len() >= 5, "pending … committed: {switched}");
    for e in &mine {
        let actor = e["actor"].as_str().expect("actor");
        assert!(
            actor.starts_with("osmoda-watch[action=routine-run.7,uid="),
            "{e}"
        );
    }

    // --action-label: a failing switch rolls back; its events and its incident name the action.
    let o = env
        .ctl(&[
            "--action-label",
            "routine-run.8",
            "--json",
            "switch",
            "begin",
            "--wait",
            "--ttl",
            "5",
            "--check",
            FAIL_CHECK,
        ])
        .await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let rolled = actors(&events("watch.switch.rolled-back").await);
    assert!(
        rolled[0].starts_with("osmoda-watch[action=routine-run.8,"),
        "{rolled:?}"
    );
    let incidents = actors(&events("incident.created").await);
    assert!(
        incidents[0].starts_with("agent[action=routine-run.8,"),
        "{incidents:?}"
    );

    // An invalid label: usage error naming the variable; nothing recorded.
    let count = events("*").await.as_array().expect("events").len();
    let o = run(labelled(
        "Routine Run",
        &[
            "config",
            "set",
            "services.osmoda.watch.safeSwitch.ttlSecs",
            "4",
            "--reason",
            "r",
        ],
    ))
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("OSMODA_ACTION") || stderr(&o).contains("--action-label"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("[a-z0-9._-]"), "{}", stderr(&o));
    assert_eq!(events("*").await.as_array().expect("events").len(), count);

    // Unlabelled again: nothing names an action.
    env.ctl_code(
        0,
        &[
            "config",
            "set",
            "services.osmoda.watch.safeSwitch.ttlSecs",
            "3",
            "--reason",
            "r",
        ],
    )
    .await;
    let committed = actors(&events("config.committed").await);
    assert!(committed[0].starts_with("agent[uid="), "{committed:?}");
}
