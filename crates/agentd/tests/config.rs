//! The config API end to end: real git tree, real rnix edits, real ledger, real sockets.

mod common;

use common::{git, ClientExt, Daemon};
use serde_json::{json, Value};

fn commits(d: &Daemon) -> usize {
    git(&d.tree_dir(), &["rev-list", "--count", "HEAD"])
        .trim()
        .parse()
        .expect("count")
}

async fn config_events(d: &Daemon) -> Vec<Value> {
    let log = d.agent().get_ok("/events/log?type=config.*").await;
    log.as_array().expect("array").clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_set_is_one_generation_linked_to_the_ledger_both_ways() {
    let d = Daemon::start_with_tree().await;
    let watcher = json!({"check": {"type": "http", "url": "http://127.0.0.1:8080/", "expectStatus": 200},
                         "intervalSecs": 15, "actions": ["restart", "notify"]});
    let before = std::fs::read_to_string(d.tree_dir().join("osmoda.nix")).expect("read");
    let r = d
        .agent()
        .post_ok("/config/set", &json!({"path": "services.osmoda.watch.watchers.web", "value": watcher, "reason": "watch the web app"})).await;
    let rev = r["generation"]["rev"].as_str().expect("rev");
    assert_eq!(commits(&d), 2);
    assert_eq!(git(&d.tree_dir(), &["rev-parse", "HEAD"]).trim(), rev);
    let msg = git(&d.tree_dir(), &["log", "-1", "--format=%an <%ae>%n%B"]);
    // A stable, readable author; the kernel's identity of the caller goes into a trailer.
    assert!(
        msg.starts_with("agent <agent@osmoda.local>\n"),
        "author is the agent: {msg}"
    );
    assert!(msg.contains("\nOsmoda-Actor: agent\n"), "{msg}");
    assert!(msg.contains("\nOsmoda-Peer: uid="), "{msg}");
    assert!(msg.contains("watch the web app"));
    assert!(
        msg.contains(&format!("Osmoda-Event: {}", r["requested_event"])),
        "{msg}"
    );
    assert_eq!(git(&d.tree_dir(), &["status", "--porcelain"]), "");

    // The file gained exactly the new binding; everything else is byte for byte the same.
    let after = std::fs::read_to_string(d.tree_dir().join("osmoda.nix")).expect("read");
    let prefix = before
        .bytes()
        .zip(after.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    let suffix = before
        .bytes()
        .rev()
        .zip(after.bytes().rev())
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        prefix + suffix >= before.len(),
        "only an insertion happened"
    );
    assert!(after.contains("web"));

    // Reads back through the API as written.
    let got = d
        .agent()
        .get_ok("/config/get?path=services.osmoda.watch.watchers.web")
        .await;
    assert_eq!(got["value"], watcher);

    let events = config_events(&d).await;
    let kinds: Vec<&str> = events.iter().filter_map(|e| e["type"].as_str()).collect();
    assert_eq!(kinds, ["config.requested", "config.committed"]);
    let committed: Value =
        serde_json::from_str(events[1]["payload"].as_str().expect("payload")).expect("json");
    assert_eq!(committed["rev"], rev);
    assert_eq!(events[0]["id"], r["requested_event"]);

    let gens = d.agent().get_ok("/config/generations").await;
    assert_eq!(gens.as_array().map(Vec::len), Some(2));
    assert_eq!(gens[0]["event_id"], r["requested_event"]);
    let show = d.agent().get_ok(&format!("/config/generation/{rev}")).await;
    assert!(show["patch"].as_str().expect("patch").contains("+"));
    let first = gens[1]["rev"].as_str().expect("rev");
    let diff = d
        .agent()
        .get_ok(&format!("/config/diff?from={first}&to={rev}"))
        .await;
    assert!(diff["patch"]
        .as_str()
        .expect("patch")
        .contains("intervalSecs = 15"));

    // Revert: a new generation, history kept, the file back to what it was.
    let rv = d
        .agent()
        .post_ok(
            "/config/revert",
            &json!({"rev": rev, "reason": "not needed after all"}),
        )
        .await;
    assert_eq!(commits(&d), 3);
    assert_eq!(
        std::fs::read_to_string(d.tree_dir().join("osmoda.nix")).expect("read"),
        before
    );
    assert_ne!(rv["generation"]["rev"], json!(rev));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_edits_change_nothing() {
    let d = Daemon::start_with_tree().await;
    let head = git(&d.tree_dir(), &["rev-parse", "HEAD"]);
    let bad = [
        json!({"path": "services.osmoda.enable", "nix": "1 +", "reason": "broken nix"}),
        json!({"path": "services.osmoda.enable", "nix": "a b; c", "reason": "two exprs"}),
        json!({"path": "services.osmoda.enable.deeper", "value": 1, "reason": "through a bool"}),
        json!({"path": "services..osmoda", "value": 1, "reason": "bad path"}),
        json!({"path": "services.osmoda.x", "value": 1, "nix": "1", "reason": "both"}),
        json!({"path": "services.osmoda.x", "value": 1, "reason": ""}),
        json!({"path": "services.osmoda.x", "value": 1, "reason": "escape", "file": "../outside.nix"}),
        // More precise than a double: no Nix float carries it (was a 500).
        serde_json::from_str(r#"{"path": "services.osmoda.x", "value": 1.0000000000000001, "reason": "float"}"#).expect("json"),
        serde_json::from_str(r#"{"path": "services.osmoda.x", "value": {"a": [0.10000000000000000001]}, "reason": "float"}"#).expect("json"),
    ];
    for body in bad {
        let r = d.agent().post("/config/set", &body).await.expect("post");
        assert!(
            (400..500).contains(&r.status),
            "{body} → {} {}",
            r.status,
            r.body
        );
        assert!(r.body["error"].as_str().is_some_and(|e| !e.is_empty()));
        if body["reason"] == "float" {
            assert_eq!(r.status, 400, "{}", r.body);
            assert!(
                r.body["error"]
                    .as_str()
                    .is_some_and(|e| e.contains("Nix float")),
                "{}",
                r.body
            );
        }
    }
    assert_eq!(git(&d.tree_dir(), &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&d.tree_dir(), &["status", "--porcelain"]), "");
    assert_eq!(
        config_events(&d).await,
        Vec::<Value>::new(),
        "bad input writes nothing to the ledger"
    );
    let missing = d
        .agent()
        .get("/config/get?path=services.nothing.here")
        .await
        .expect("get");
    assert_eq!(missing.status, 404);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_edits_are_refused_for_the_agent_until_a_person_commits_them() {
    let d = Daemon::start_with_tree().await;
    let conf = d.tree_dir().join("configuration.nix");
    let mut text = std::fs::read_to_string(&conf).expect("read");
    text.push_str("# a note from the operator\n");
    std::fs::write(&conf, text).expect("write");

    let status = d.agent().get_ok("/config/status").await;
    assert_eq!(status["clean"], false);
    let r = d
        .agent()
        .post(
            "/config/set",
            &json!({"path": "services.osmoda.enable", "value": true, "reason": "agent edit"}),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body["error"]
        .as_str()
        .expect("error")
        .contains("agentctl config commit"));
    assert_eq!(commits(&d), 1);

    let c = d
        .agent()
        .post_ok("/config/commit", &json!({"reason": "operator note"}))
        .await;
    let author = git(&d.tree_dir(), &["log", "-1", "--format=%an"]);
    let me = nix::unistd::User::from_uid(nix::unistd::geteuid())
        .expect("getpwuid")
        .expect("user")
        .name;
    assert_eq!(
        author.trim(),
        me,
        "a hand edit is recorded as the person's generation"
    );
    assert_eq!(
        c["generation"]["reason"].as_str().map(str::trim),
        Some("operator note")
    );
    let again = d
        .agent()
        .post("/config/commit", &json!({"reason": "nothing"}))
        .await
        .expect("post");
    assert_eq!(again.status, 409);

    d.agent()
        .post(
            "/config/set",
            &json!({"path": "services.osmoda.watch.enable", "value": true, "reason": "agent edit"}),
        )
        .await
        .expect("post")
        .ok_json()
        .expect("agent edit lands on the clean tree");
    assert_eq!(commits(&d), 3);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destructive_edits_need_an_approved_ticket_for_that_exact_edit() {
    let d = Daemon::start_with_tree().await;
    let body =
        json!({"path": "services.osmoda.enable", "value": false, "reason": "turn osmoda off"});
    let r = d.agent().post("/config/set", &body).await.expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(commits(&d), 1);

    // The refusal opened the ticket (the agent cannot request one in the gate's shape).
    let id = r.body["detail"]["ticket"].as_str().expect("ticket");
    let mut with_ticket = body.clone();
    with_ticket["approval"] = json!(id);
    let r = d
        .agent()
        .post("/config/set", &with_ticket)
        .await
        .expect("post");
    assert_eq!(r.status, 409, "pending ticket refused: {}", r.body);

    d.human()
        .post_ok(&format!("/approval/{id}/approve"), &json!({}))
        .await;
    // The ticket does not cover a different destructive edit.
    let other = json!({"path": "services.osmoda.watch.enable", "value": false, "reason": "x", "approval": id});
    assert_eq!(
        d.agent()
            .post("/config/set", &other)
            .await
            .expect("post")
            .status,
        403
    );
    d.agent()
        .post("/config/set", &with_ticket)
        .await
        .expect("post")
        .ok_json()
        .expect("approved edit lands");
    assert_eq!(commits(&d), 2);
    // Single use.
    let r = d
        .agent()
        .post("/config/set", &with_ticket)
        .await
        .expect("post");
    assert_eq!(r.status, 409);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_parallel_sets_make_fifty_linear_commits() {
    let d = Daemon::start_with_tree().await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            // The 50th waits for 49 edits (each judged by the gate, validated and committed) on
            // a shared 2-core machine whose load nobody controls: this test is about order, not
            // latency, so no client gives up (an hour stands for "never"; the daemon's own
            // evaluator caps are what bound an edit).
            let c = d.agent().with_timeout(std::time::Duration::from_secs(3600));
            tokio::spawn(async move {
                c.post(
                    "/config/set",
                    &json!({"path": format!("services.osmoda.routines.r{i}"),
                            "value": {"trigger": {"type": "interval", "seconds": 60 + i},
                                      "action": {"type": "command", "command": ["true"]}},
                            "reason": format!("routine {i}")}),
                )
                .await
            })
        })
        .collect();
    // Readers running beside the writers never see a half-written file.
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let c = d.agent().with_timeout(std::time::Duration::from_secs(3600));
            tokio::spawn(async move {
                for _ in 0..25 {
                    let r = c
                        .get("/config/get?path=services.osmoda.enable")
                        .await
                        .expect("get");
                    assert_eq!(r.status, 200, "{}", r.body);
                }
            })
        })
        .collect();
    for t in tasks {
        let r = t.await.expect("join").expect("post");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    for r in readers {
        r.await.expect("reader");
    }
    assert_eq!(commits(&d), 51);
    let merges = git(&d.tree_dir(), &["rev-list", "--merges", "HEAD"]);
    assert_eq!(merges, "", "history is linear");
    let text = std::fs::read_to_string(d.tree_dir().join("osmoda.nix")).expect("read");
    for i in 0..50 {
        let got = d
            .agent()
            .get_ok(&format!(
                "/config/get?path=services.osmoda.routines.r{i}.trigger.seconds"
            ))
            .await;
        assert_eq!(got["value"], json!(60 + i), "routine {i} in {text}");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_reports_hand_edits_as_drift_events() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../generations");
    let person = osmoda_generations::Actor::new("Test Person", "test@example.org");
    osmoda_generations::Tree::init(&tree, &template, &person).expect("init");
    let agentd =
        common::Process::spawn_with(dir.path(), &["--config-tree".as_ref(), tree.as_os_str()]);
    let client = osmoda_client::Client::new(&agentd.socket);

    let conf = tree.join("configuration.nix");
    let mut text = std::fs::read_to_string(&conf).expect("read");
    text.push_str("# edited by hand\n");
    std::fs::write(&conf, text).expect("write");

    // The watcher debounces; wait for its event (bounded).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let drift = loop {
        let log = client.get_ok("/events/log?type=config.drift").await;
        if let Some(ev) = log.as_array().and_then(|a| a.first()).cloned() {
            break ev;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no config.drift event"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let payload: Value =
        serde_json::from_str(drift["payload"].as_str().expect("payload")).expect("json");
    assert_eq!(payload["clean"], false);
    assert_eq!(payload["changes"][0]["path"], "configuration.nix");
}
