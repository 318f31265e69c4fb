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
    assert!(
        gens[0]
            .message
            .starts_with(&format!("Revert to generation {short}: health check")),
        "{}",
        gens[0].message
    );
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
        (
            json!({"health_checks": [{"type": "command", "command": []}]}),
            "health_checks[0]",
        ),
        (json!({"health_checks": [{"type": "ping"}]}), "ping"),
        (json!({"bogus": 1}), "bogus"),
    ] {
        let (status, v) = env.post("/switch/begin", body.clone()).await;
        assert_eq!(status, 400, "{body} → {v}");
        assert_eq!(v["error"], "bad_request");
        assert!(
            v["detail"].as_str().unwrap().contains(needle),
            "{body} → {v}"
        );
    }
    let (status, v) = env.get("/switch/status/42").await;
    assert_eq!((status, v["error"].as_str()), (404, Some("not_found")));
    let (status, v) = env.get("/switch/status/abc").await;
    assert_eq!((status, v["error"].as_str()), (400, Some("bad_request")));
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
    let first = env.begin(json!({"ttl_secs": 0})).await;
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
    let again = env.begin(json!({"ttl_secs": 0})).await;
    assert_eq!(
        env.wait_terminal(again["id"].as_u64().unwrap()).await["state"],
        "committed"
    );
    w.stop();
}
