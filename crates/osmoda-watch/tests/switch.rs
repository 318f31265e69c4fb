//! SafeSwitch end to end: real daemon, real git tree, local backend, in-process agentd.
#![allow(clippy::unwrap_used)]

mod common;

use common::{variant, Env};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_switch_commits() {
    let env = Env::new().await;
    let w = env.spawn(None);
    let (_, preview) = env.get("/switch/preview").await;
    assert_eq!(preview["first_deploy"], true);
    let s = env
        .begin(json!({"plan": "first deploy", "ttl_secs": 1, "health_checks": [{"type": "command", "command": ["true"]}]}))
        .await;
    assert_eq!(s["state"], "pending");
    assert_eq!(s["previous_generation"], serde_json::Value::Null);
    let done = env.wait_terminal(s["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "committed", "{done}");
    env.assert_consistent(&done);

    // A second generation: the preview shows the diff, the switch commits it.
    let rev = env.commit(&variant(1), "add a routine");
    let (_, preview) = env.get(&format!("/switch/preview?generation={rev}")).await;
    assert_eq!(preview["files"], json!(["osmoda.nix"]));
    assert!(
        preview["diff"]
            .as_str()
            .unwrap()
            .contains("+    routines.run1"),
        "{preview}"
    );
    let s2 = env
        .begin(json!({"generation": rev, "ttl_secs": 1, "health_checks": [{"type": "agentd"}]}))
        .await;
    assert_eq!(s2["previous_generation"], done["generation"]);
    let done2 = env.wait_terminal(s2["id"].as_u64().unwrap()).await;
    assert_eq!(done2["state"], "committed", "{done2}");
    env.assert_consistent(&done2);
    let routines = std::fs::read_to_string(env.etc_dir.join("osmoda/routines.json")).unwrap();
    assert!(routines.contains("run1"));

    let states: Vec<String> = env
        .wait_events("watch.switch.", 12)
        .await
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    let want = [
        "pending",
        "building",
        "activating",
        "probing",
        "committing",
        "committed",
    ]
    .map(|s| format!("watch.switch.{s}"));
    assert_eq!(&states[..6], &want, "{states:?}");
    let (_, hist) = env.get("/switch/history").await;
    assert_eq!(hist.as_array().unwrap().len(), 2);
    w.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_check_rolls_back() {
    let env = Env::new().await;
    let w = env.spawn(None);
    let first = env.begin(json!({"ttl_secs": 1})).await;
    let first = env.wait_terminal(first["id"].as_u64().unwrap()).await;
    assert_eq!(first["state"], "committed");
    let good_link = env.active_link().unwrap();

    let bad = env.commit(&variant(2), "a change that breaks the health check");
    let s = env
        .begin(json!({"generation": bad, "ttl_secs": 5, "health_checks": [{"type": "tcp", "host": "127.0.0.1", "port": 1}]}))
        .await;
    let done = env.wait_terminal(s["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "rolled-back", "{done}");
    env.assert_consistent(&done);
    assert_eq!(env.active_link().unwrap(), good_link);
    assert!(
        done["reason"]
            .as_str()
            .unwrap()
            .contains("health check tcp 127.0.0.1:1 failed"),
        "{done}"
    );

    // The tree records the rollback as a new commit; history is kept.
    let revert = done["revert_commit"].as_str().unwrap();
    assert_eq!(env.tree.head().unwrap(), revert);
    let gens = env.tree.generations(10).unwrap();
    let short = &first["generation"].as_str().unwrap()[..12];
    // Through agentd's config API: a short subject, the error in the body, the trailers.
    let subject = gens[0].message.lines().next().unwrap();
    assert_eq!(
        subject,
        format!(
            "Revert to generation {short}: SafeSwitch {} rolled back generation {}",
            done["id"],
            &bad[..12]
        ),
        "{}",
        gens[0].message
    );
    assert!(
        gens[0]
            .reason
            .contains("health check tcp 127.0.0.1:1 failed"),
        "{}",
        gens[0].message
    );
    assert!(gens[0].event_id.is_some(), "{}", gens[0].message);
    assert_eq!(
        gens[0].actor.as_deref(),
        Some("osmoda-watch"),
        "{}",
        gens[0].message
    );
    assert!(!gens[0].message.contains(".eval-") && !gens[0].message.contains("/tmp/"));
    assert!(
        gens.iter().any(|g| g.rev == bad),
        "the failed generation stays in history"
    );

    let kinds: Vec<String> = env
        .wait_events("watch.switch.rolled-back", 1)
        .await
        .iter()
        .map(|e| e.kind.clone())
        .collect();
    assert_eq!(kinds, ["watch.switch.rolled-back"]);
    assert_eq!(
        env.agentd.events("watch.switch.rolling-back").await.len(),
        1
    );
    let incident = done["incident_id"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| done["incident_id"].to_string());
    let inc = env.agentd.events("incident.created").await;
    assert!(
        inc.iter()
            .any(|e| e.id.to_string() == incident && e.payload.contains("rolled back")),
        "{inc:?}"
    );
    w.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors_and_change_nothing() {
    let env = Env::new().await;
    let w = env.spawn(None);
    let head = env.tree.head().unwrap();
    for (body, needle) in [
        (json!({"generation": "nope-not-a-rev"}), "nope-not-a-rev"),
        (json!({"ttl_secs": 999999}), "maximum"),
        (json!({"ttl_secs": 0}), "at least 1"),
        (
            json!({"health_checks": [{"type": "command", "command": ["true"], "timeout_secs": 18446744073709551615u64}]}),
            "maximum",
        ),
        (
            json!({"health_checks": [{"type": "command", "command": []}]}),
            "health_checks[0]",
        ),
        (json!({"health_checks": [{"type": "ping"}]}), "ping"),
        (json!({"bogus": 1}), "bogus"),
    ] {
        let (status, v) = env.post("/switch/begin", body.clone()).await;
        assert_eq!(status, 400, "{body} → {v}");
        assert_eq!(v["detail"]["kind"], "bad_request");
        assert!(v["detail"]["hint"].is_string(), "{v}");
        assert!(
            v["error"].as_str().unwrap().contains(needle),
            "{body} → {v}"
        );
    }
    let (status, v) = env.get("/switch/status/42").await;
    assert_eq!(
        (status, v["detail"]["kind"].as_str()),
        (404, Some("not_found"))
    );
    let (status, v) = env.get("/switch/begin").await;
    assert_eq!(
        (status, v["detail"]["kind"].as_str()),
        (405, Some("method_not_allowed")),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("GET"), "{v}");
    let (status, v) = env.get("/switch/status/abc").await;
    assert_eq!(
        (status, v["detail"]["kind"].as_str()),
        (400, Some("bad_request"))
    );
    assert!(v["error"].as_str().unwrap().contains("\"abc\""), "{v}");
    let (status, _) = env.get("/switch/preview?generation=zzz").await;
    assert_eq!(status, 400);
    assert_eq!(env.tree.head().unwrap(), head);
    assert!(env.active_link().is_none());
    let (_, hist) = env.get("/switch/history").await;
    assert_eq!(hist, json!([]));

    // One switch at a time; early commit and manual rollback.
    let s = env.begin(json!({"ttl_secs": 30})).await;
    let id = s["id"].as_u64().unwrap();
    let (status, v) = env.post("/switch/begin", json!({})).await;
    assert_eq!(status, 409, "{v}");
    let committed = loop {
        let (status, v) = env.post(&format!("/switch/commit/{id}"), json!({})).await;
        if status == 200 {
            break v;
        }
        assert_eq!(status, 409, "{v}"); // still building/activating
    };
    assert_eq!(committed["state"], "committed");
    let (status, v) = env.post(&format!("/switch/rollback/{id}"), json!({})).await;
    assert_eq!(status, 409, "{v}");
    let rev = env.commit(&common::variant(3), "another");
    let s = env.begin(json!({"generation": rev, "ttl_secs": 30})).await;
    let (status, v) = env
        .post(
            &format!("/switch/rollback/{}", s["id"]),
            json!({"reason": "changed my mind"}),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["state"], "rolled-back");
    env.assert_consistent(&v);
    let (_, h) = env.get("/health").await;
    assert_eq!(h["active_switches"], 0);
    assert_eq!(h["backend"], "local");
    w.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_that_cannot_happen_ends_failed_with_an_incident() {
    let env = Env::new().await;
    let w = env.spawn(None);
    let first = env.begin(json!({"ttl_secs": 1})).await;
    let first = env.wait_terminal(first["id"].as_u64().unwrap()).await;
    // Someone deletes the deployed generation's directory.
    std::fs::remove_dir_all(first["built"].as_str().unwrap()).unwrap();
    let rev = env.commit(&variant(9), "another change");
    let s = env
        .begin(json!({"generation": rev, "ttl_secs": 5, "health_checks": [{"type": "command", "command": ["false"]}]}))
        .await;
    let done = env.wait_terminal(s["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["reason"].as_str().unwrap().contains("is gone"),
        "{done}"
    );
    assert!(!done["incident_id"].is_null(), "{done}");
    env.wait_events("watch.switch.failed", 1).await;
    let inc = env.wait_events("incident.created", 1).await;
    assert!(inc[0].payload.contains("failed"), "{inc:?}");
    // The next switch is not blocked by a failed one.
    let again = env.begin(json!({"ttl_secs": 1})).await;
    assert_eq!(
        env.wait_terminal(again["id"].as_u64().unwrap()).await["state"],
        "committed"
    );
    w.stop();
}

/// Processes whose command line contains `marker` (a unique `sleep` argument).
fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.starts_with("sleep") && c.contains(marker))
        .collect()
}

/// Waits (bounded) until no process carries `marker`: killing is asynchronous to the answer.
async fn assert_gone(marker: &str) {
    let start = std::time::Instant::now();
    while !processes_with(marker).is_empty() {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "left running: {:?}",
            processes_with(marker)
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// The TTL bounds everything: a check with a huge timeout is cut at the TTL (needs root for
/// the command sandbox; we run as root here and in CI).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ttl_bounds_every_check_and_rollback_answers_at_once() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let env = Env::new().await;
    let w = env.spawn(None);
    let first = env.begin(json!({"ttl_secs": 1})).await;
    assert_eq!(
        env.wait_terminal(first["id"].as_u64().unwrap()).await["state"],
        "committed"
    );

    let marker = format!("1000.{}", std::process::id());
    let slow = json!({"type": "command", "command": ["sleep", marker], "timeout_secs": 86400});
    let rev = env.commit(&variant(7), "slow check");
    let s = env
        .begin(json!({"generation": rev, "ttl_secs": 2, "health_checks": [slow]}))
        .await;
    let done = env.wait_terminal(s["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "rolled-back", "{done}");
    assert!(
        done["reason"].as_str().unwrap().contains("within the TTL"),
        "{done}"
    );
    env.assert_consistent(&done);
    assert_gone(&marker).await;

    // A long TTL: rollback does not wait for the running check.
    let rev = env.commit(&variant(8), "slow check again");
    let s = env
        .begin(json!({"generation": rev, "ttl_secs": 3600, "health_checks": [slow]}))
        .await;
    let id = s["id"].as_u64().unwrap();
    loop {
        let (_, st) = env.get(&format!("/switch/status/{id}")).await;
        if st["state"] == "probing" && !processes_with(&marker).is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, rolled) = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        env.post(
            &format!("/switch/rollback/{id}"),
            json!({"reason": "enough"}),
        ),
    )
    .await
    .expect("rollback answered");
    assert_eq!(status, 200, "{rolled}");
    assert_eq!(rolled["state"], "rolled-back", "{rolled}");
    assert_gone(&marker).await;
    // Nothing is left blocking the next switch.
    let again = env.begin(json!({"ttl_secs": 1})).await;
    assert_eq!(
        env.wait_terminal(again["id"].as_u64().unwrap()).await["state"],
        "committed"
    );
    w.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_to_an_older_generation_is_a_commit_of_its_tree() {
    let env = Env::new().await;
    let w = env.spawn(None);
    let first = env.begin(json!({"ttl_secs": 1})).await;
    let first = env.wait_terminal(first["id"].as_u64().unwrap()).await;
    assert_eq!(first["state"], "committed");
    let old = first["generation"].as_str().unwrap().to_string();
    let newer = env.commit(&variant(4), "a newer generation");
    let s = env.begin(json!({"generation": newer, "ttl_secs": 1})).await;
    assert_eq!(
        env.wait_terminal(s["id"].as_u64().unwrap()).await["state"],
        "committed"
    );

    let s = env
        .begin(json!({"generation": &old[..12], "ttl_secs": 1, "plan": "back to the first one"}))
        .await;
    let done = env.wait_terminal(s["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "committed", "{done}");
    env.assert_consistent(&done);
    let head = env.tree.head().unwrap();
    assert_eq!(
        done["generation"], head,
        "the switch applied the new commit"
    );
    assert_eq!(
        env.tree.diff(&old, &head).unwrap(),
        "",
        "HEAD's tree is the old one"
    );
    let g = &env.tree.generations(1).unwrap()[0];
    assert_eq!(
        g.message.lines().next().unwrap(),
        format!("Switch to generation {}: back to the first one", &old[..12])
    );
    assert!(
        g.event_id.is_some() && g.restores.as_deref() == Some(old.as_str()),
        "{}",
        g.message
    );
    // Switching to what HEAD already holds adds nothing.
    let again = env.begin(json!({"generation": &old, "ttl_secs": 1})).await;
    assert_eq!(
        env.wait_terminal(again["id"].as_u64().unwrap()).await["state"],
        "committed"
    );
    assert_eq!(env.tree.head().unwrap(), head);
    w.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switch_refused_before_activation_ends_failed() {
    let env = Env::new().await;
    let w = env.spawn(None);
    let first = env.begin(json!({"ttl_secs": 1})).await;
    assert_eq!(
        env.wait_terminal(first["id"].as_u64().unwrap()).await["state"],
        "committed"
    );
    let link = env.active_link().unwrap();
    let head_before = env.commit(
        &common::BASE.replace("ttlSecs = 1;", "ttlSecs = 0;"),
        "renders an invalid watch.json",
    );
    let s = env.begin(json!({"ttl_secs": 1})).await;
    let done = env.wait_terminal(s["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["reason"].as_str().unwrap().contains("build failed"),
        "{done}"
    );
    let states: Vec<&str> = done["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["pending", "building", "failed"]);
    assert_eq!(env.active_link().unwrap(), link, "nothing was activated");
    assert_eq!(env.tree.head().unwrap(), head_before, "no revert commit");
    assert!(done["revert_commit"].is_null());
    w.stop();
}

/// Issue 11 item 5: a tree value reading a file outside the tree (here a 0600 secret, committed
/// by hand, so agentd's own check never saw it) is evaluated by the local backend in restricted
/// mode: the switch fails at build, and the secret's bytes are in no file under the etc dir, no
/// API answer and no ledger row; what was rendered before keeps the module's mode (0444).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_value_reading_a_secret_outside_the_tree_is_never_rendered() {
    use std::os::unix::fs::PermissionsExt;
    let env = Env::new().await;
    let w = env.spawn(None);
    let first = env.begin(json!({"ttl_secs": 1})).await;
    assert_eq!(
        env.wait_terminal(first["id"].as_u64().unwrap()).await["state"],
        "committed"
    );
    let secret_bytes = "osmoda-secret-5f1c2e9a7b";
    let secret = env.dir.path().join("secret");
    std::fs::write(&secret, secret_bytes).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    env.commit(
        &common::BASE.replace(
            "    enable = true;\n",
            &format!(
                "    enable = true;\n    routines.leak = {{\n      trigger = {{ type = \"interval\"; seconds = 60; }};\n      action = {{ type = \"command\"; command = [ (builtins.readFile {}) ]; }};\n    }};\n",
                secret.display()
            ),
        ),
        "reads a secret",
    );
    let s = env.begin(json!({"ttl_secs": 1})).await;
    let done = env.wait_terminal(s["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "failed", "{done}");
    assert!(
        done["reason"].as_str().unwrap().contains("restricted mode"),
        "the evaluation reached the read and refused it: {done}"
    );
    let mut answers = vec![done.to_string(), s.to_string()];
    for path in [
        "/switch/history",
        "/watcher/list",
        "/switch/preview",
        "/health",
    ] {
        answers.push(env.get(path).await.1.to_string());
    }
    for a in &answers {
        assert!(
            !a.contains(secret_bytes),
            "an API answer holds the secret: {a}"
        );
    }
    let mut files = vec![env.etc_dir.clone()];
    let mut seen = 0;
    while let Some(p) = files.pop() {
        // Followed: the etc dir's entries are links into the active generation.
        let m = std::fs::metadata(&p).unwrap();
        if m.is_dir() {
            files.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if m.is_file() {
            seen += 1;
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret_bytes),
                "{} holds the secret",
                p.display()
            );
            // Rendered daemon configs keep the module's mode; `generation.json` (the active
            // rev and its time, written by watch itself, no tree value) is 0644.
            if p.file_name().is_some_and(|n| n != "generation.json") {
                assert_eq!(m.permissions().mode() & 0o777, 0o444, "{}", p.display());
            }
        }
    }
    assert!(
        seen > 0,
        "the first switch rendered files under the etc dir"
    );
    for e in env.agentd.events("").await {
        assert!(
            !format!("{e:?}").contains(secret_bytes),
            "a ledger row holds the secret: {e:?}"
        );
    }
    w.stop();
}
