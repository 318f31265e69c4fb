//! kill -9 of the real agentd binary while it edits the tree, in a loop of restarts: after every
//! restart the tree is clean and at a committed generation, every request the ledger recorded
//! ends in `config.committed` or `config.failed`, and no commit is attributed to anyone but the
//! agent that asked for it.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::{git, ClientExt, Process};
use serde_json::{json, Value};

/// Edits attempted in all (across every restart).
const EDITS: usize = 200;
/// Edits acknowledged before each kill (cycled), so the kill lands at varied points of an edit.
const BEFORE_KILL: [usize; 4] = [4, 9, 6, 13];

fn clean_and_committed(tree: &Path) {
    assert_eq!(
        git(tree, &["status", "--porcelain"]),
        "",
        "the tree is clean"
    );
    assert!(
        !tree.join(".git/osmoda-intent").exists(),
        "no intent is left"
    );
    assert!(
        !tree.join(".git/index.lock").exists(),
        "no git lock is left"
    );
    git(tree, &["rev-parse", "--verify", "HEAD^{commit}"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_edits_never_leaves_the_tree_dirty_or_misattributed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../generations");
    let person = osmoda_generations::Actor::new("Test Person", "test@example.org");
    osmoda_generations::Tree::init(&tree, &template, &person).expect("init tree");
    let extra = [std::ffi::OsStr::new("--config-tree"), tree.as_os_str()];

    let attempted = Arc::new(AtomicUsize::new(0));
    let mut round = 0;
    while attempted.load(Ordering::SeqCst) < EDITS {
        let mut agentd = Process::spawn_with(dir.path(), &extra);
        clean_and_committed(&tree);
        let client = osmoda_client::Client::new(&agentd.socket);
        let acked = Arc::new(AtomicUsize::new(0));
        let (a, n) = (acked.clone(), attempted.clone());
        // Edits back to back until the daemon dies under them.
        let editor = tokio::spawn(async move {
            loop {
                let i = n.fetch_add(1, Ordering::SeqCst);
                let body = json!({"path": "services.osmoda.memory.embeddingModel", "value": format!("edit {i}"), "reason": format!("edit {i}")});
                match client.post("/config/set", &body).await {
                    Ok(r) if r.status == 200 => {
                        a.fetch_add(1, Ordering::SeqCst);
                    }
                    Ok(r) => panic!("edit {i} refused: {} {}", r.status, r.body),
                    Err(_) => return,
                }
            }
        });
        let want = BEFORE_KILL[round % BEFORE_KILL.len()];
        while acked.load(Ordering::SeqCst) < want && !editor.is_finished() {
            tokio::task::yield_now().await;
        }
        agentd.kill9();
        editor.await.expect("editor");
        round += 1;
    }
    // One more start recovers the last interrupted edit.
    let agentd = Process::spawn_with(dir.path(), &extra);
    clean_and_committed(&tree);

    // Every commit after the first is the agent's, with its request's event id.
    let log = git(&tree, &["log", "--format=%an|%(trailers:key=Osmoda-Actor,valueonly,separator=)|%(trailers:key=Osmoda-Event,valueonly,separator=)"]);
    let lines: Vec<&str> = log.lines().collect();
    assert!(lines.len() > 10, "edits landed: {}", lines.len());
    for line in &lines[..lines.len() - 1] {
        let parts: Vec<&str> = line.split('|').collect();
        assert_eq!(&parts[..2], ["agent", "agent"], "{line}");
        assert!(parts[2].parse::<i64>().is_ok(), "{line}");
    }

    // The ledger: every request ends in exactly one outcome, and each commit's event is one of
    // them with the matching outcome.
    let client = osmoda_client::Client::new(&agentd.socket);
    let events: Vec<Value> = client
        .get("/events/log?type=config.*&limit=1000")
        .await
        .expect("log")
        .ok_json()
        .expect("json")
        .as_array()
        .expect("array")
        .clone();
    let payload = |e: &Value| -> Value {
        serde_json::from_str(e["payload"].as_str().unwrap_or("{}")).unwrap_or(Value::Null)
    };
    let requested: Vec<i64> = events
        .iter()
        .filter(|e| e["type"] == "config.requested")
        .map(|e| e["id"].as_i64().expect("id"))
        .collect();
    for id in &requested {
        let outcomes = events
            .iter()
            .filter(|e| e["type"] == "config.committed" || e["type"] == "config.failed")
            .filter(|e| payload(e)["requested_event"] == json!(id))
            .count();
        // Even a request cut off before it touched the tree gets its outcome at the next start.
        assert_eq!(
            outcomes, 1,
            "request {id} has {outcomes} outcomes ({round} kills)"
        );
    }
    for line in &lines[..lines.len() - 1] {
        let event: i64 = line.rsplit('|').next().expect("id").parse().expect("id");
        assert!(
            events.iter().any(|e| e["type"] == "config.committed"
                && payload(e)["requested_event"] == json!(event)),
            "commit for request {event} has no config.committed"
        );
    }
}

/// A request recorded just before a crash that came before its intent was saved (nothing in
/// the tree to recover) still gets an outcome at the next start: `config.failed` when no commit
/// carries its id, `config.committed` with the commit when one does. Requests that have their
/// outcome are left alone, and a second start adds nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_cut_off_before_their_intent_get_an_outcome_at_the_next_start() {
    let d = common::Daemon::start_with_tree().await;
    let ok = d
        .agent()
        .post(
            "/config/set",
            &json!({"path": "time.timeZone", "value": "Europe/Paris", "reason": "tz"}),
        )
        .await
        .expect("post");
    assert_eq!(ok.status, 200, "{}", ok.body);
    let request = |why: &str| {
        osmoda_ledger::NewEvent::new(
            "config.requested",
            "openclaw[uid=0,pid=1,exe=node]".to_string(),
            json!({"op": "config.set", "path": "networking.hostName", "reason": why}).to_string(),
        )
    };
    // Cut off before the tree: nothing landed.
    let lost = d
        .state
        .ledger
        .append_blocking(request("lost"))
        .expect("append");
    // Cut off after its commit landed but before both the outcome and the intent's removal
    // mattered: git has a commit naming it.
    let landed = d
        .state
        .ledger
        .append_blocking(request("landed"))
        .expect("append");
    let tree = d.state.config_tree.clone().expect("tree");
    let agent = osmoda_generations::Actor::new("agent", "agent@osmoda.local");
    let generation = tree
        .mutate(&agent, "landed", Some(landed.id), |root| {
            let p = root.join("configuration.nix");
            let text = std::fs::read_to_string(&p).map_err(osmoda_generations::GenError::edit)?;
            std::fs::write(&p, text.replace("\"osmoda\"", "\"web1\""))
                .map_err(osmoda_generations::GenError::edit)?;
            Ok(vec!["configuration.nix".into()])
        })
        .expect("commit");
    let d = d.restart().await;
    agentd::api::config::recover(&d.state).expect("recover");
    agentd::api::config::recover(&d.state).expect("recover again");
    let outcomes: Vec<Value> = d
        .agent()
        .get_ok("/events/log?type=config.*")
        .await
        .as_array()
        .expect("array")
        .iter()
        .filter(|e| e["type"] == "config.committed" || e["type"] == "config.failed")
        .map(|e| {
            let p: Value = serde_json::from_str(e["payload"].as_str().unwrap_or("{}")).expect("payload");
            json!({"type": e["type"], "requested_event": p["requested_event"], "rev": p["rev"], "recovered": p["recovered"]})
        })
        .collect();
    assert_eq!(
        outcomes[1..],
        [
            json!({"type": "config.failed", "requested_event": lost.id, "rev": null, "recovered": true}),
            json!({"type": "config.committed", "requested_event": landed.id, "rev": generation.rev, "recovered": true}),
        ],
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes.len(),
        3,
        "the first edit's own outcome, then one each: {outcomes:?}"
    );
    d.stop().await;
}
