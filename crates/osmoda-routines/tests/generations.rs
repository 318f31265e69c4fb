//! `/routine/add` and `/routine/remove` produce generations: an edit of
//! `services.osmoda.routines.<name>` through agentd's config API (a commit in the tree), applied
//! by osmoda-watch's SafeSwitch (local backend, in process); the routine then runs from the
//! `routines.json` that generation rendered.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{scratch, Agentd, Routines};
use serde_json::json;

async fn wait_listed(r: &Routines, name: &str, present: bool) {
    let start = Instant::now();
    loop {
        let (_, list) = r.get("/routine/list").await;
        let found = list.as_array().unwrap().iter().any(|x| x["name"] == name);
        if found == present {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{name} listed={found}: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_commits_switches_and_the_routine_runs_from_the_rendered_config() {
    let dir = scratch();
    let (tree_dir, tree) = common::quick_tree(dir.path());
    let agentd = Agentd::start(dir.path(), Some(&tree_dir));

    let w = common::Watch::start(dir.path(), &agentd.socket, &tree_dir).await;
    let watch = w.client();

    // The first generation renders /etc/osmoda (the module's default routines included).
    assert_eq!(
        w.switch(json!({ "health_checks": [] })).await["state"],
        "committed"
    );
    let mut opts = common::options(dir.path(), &agentd.socket);
    opts.config = dir.path().join("etc/osmoda/routines.json");
    opts.watch_socket = w.socket.clone();
    let r = Routines::start(opts).await;
    wait_listed(&r, "health-snapshot", true).await;

    // A routine that does not validate is refused before anything is written.
    let head = tree.head().unwrap();
    let (s, v) = r
        .post(
            "/routine/add",
            json!({ "name": "bad", "trigger": { "type": "cron", "schedule": "61 * * * *" },
               "action": { "type": "command", "command": ["true"], "timeout_secs": 5 } }),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("routines.bad.trigger.schedule"),
        "{v}"
    );
    let (s, v) = r
        .post(
            "/routine/add",
            json!({ "name": "a.b", "trigger": { "type": "interval", "seconds": 5 },
               "action": { "type": "command", "command": ["true"], "timeout_secs": 5 } }),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(tree.head().unwrap(), head, "nothing committed");

    let (s, v) = r
        .post(
            "/routine/add",
            json!({
                "name": "nightly-report",
                "trigger": { "type": "cron", "schedule": "0 30 2 * * *", "timezone": "Europe/Berlin" },
                "action": { "type": "command", "command": ["sh", "-c", "echo report $GREETING"],
                            "timeout_secs": 30, "env": { "GREETING": "hi" } },
                "missed": "runOnce",
                "concurrency": "queue",
                "reason": "a nightly report, please",
                "ttl_secs": 1,
            }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let rev = v["config"]["generation"]["rev"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(w.wait(&v["switch"]["id"]).await["state"], "committed");
    let log = tree.generations(5).unwrap();
    assert_eq!(log[0].rev, rev);
    assert!(
        log[0]
            .message
            .starts_with("a nightly report, please (asked by uid="),
        "{:?}",
        log[0]
    );
    let text = std::fs::read_to_string(tree_dir.join("osmoda.nix")).unwrap();
    assert!(
        text.contains("nightly-report") && text.contains("runOnce") && text.contains("GREETING"),
        "{text}"
    );

    // The rendered config reaches the daemon; the routine runs from it.
    wait_listed(&r, "nightly-report", true).await;
    let (_, list) = r.get("/routine/list").await;
    let listed = list
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["name"] == "nightly-report")
        .unwrap()
        .clone();
    assert_eq!(listed["missed"], "runOnce");
    assert_eq!(listed["trigger"]["timezone"], "Europe/Berlin");
    let (s, t) = r.post("/routine/trigger/nightly-report", json!({})).await;
    assert_eq!(s, 200, "{t}");
    let run = r.wait_run(t["run_id"].as_i64().unwrap()).await;
    assert_eq!(
        (run.status.as_str(), run.output.as_deref()),
        ("ok", Some("report hi\n")),
        "{run:?}"
    );

    // Remove: a second generation, and the routine is gone.
    let (s, v) = r
        .client()
        .delete("/routine/remove/nightly-report?reason=not%20needed")
        .await
        .map(|x| (x.status, x.body))
        .unwrap();
    assert_eq!(s, 200, "{v}");
    assert_eq!(w.wait(&v["switch"]["id"]).await["state"], "committed");
    wait_listed(&r, "nightly-report", false).await;
    assert!(tree.generations(1).unwrap()[0]
        .message
        .starts_with("not needed"));
    let (s, v) = r
        .client()
        .delete("/routine/remove/nightly-report")
        .await
        .map(|x| (x.status, x.body))
        .unwrap();
    assert_eq!(s, 404, "{v}");
    // A default routine is not in the tree: removing it says how to turn it off.
    let (s, v) = r
        .client()
        .delete("/routine/remove/health-snapshot")
        .await
        .map(|x| (x.status, x.body))
        .unwrap();
    assert_eq!(s, 409, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("enable = false"),
        "{v}"
    );
    // Overridden in the tree, a default is still not removable: unsetting the override would
    // bring the default back while the answer said "removed". Refused, nothing committed.
    let (s, v) = r
        .post(
            "/routine/add",
            json!({ "name": "health-snapshot", "trigger": { "type": "interval", "seconds": 600 },
                    "action": { "type": "http", "method": "GET", "path": "/health" },
                    "ttl_secs": 1 }),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(w.wait(&v["switch"]["id"]).await["state"], "committed");
    let start = Instant::now();
    loop {
        let (_, list) = r.get("/routine/list").await;
        let hs = list
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == "health-snapshot")
            .cloned()
            .unwrap();
        if hs["trigger"]["seconds"] == 600 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{hs}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let head = tree.head().unwrap();
    let (s, v) = r
        .client()
        .delete("/routine/remove/health-snapshot")
        .await
        .map(|x| (x.status, x.body))
        .unwrap();
    assert_eq!(s, 409, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("default routines")
            && e.contains("enable = false")
            && e.contains("nothing was committed"),
        "{v}"
    );
    assert_eq!(tree.head().unwrap(), head, "nothing committed");

    // Two edits in a row (another switch probing): the second commit lands and its switch is
    // queued, then begun by osmoda-routines as soon as osmoda-watch takes one — it is not left
    // committed but unapplied.
    let busy = watch
        .post(
            "/switch/begin",
            &json!({ "ttl_secs": 600, "health_checks": [] }),
        )
        .await
        .unwrap();
    assert_eq!(busy.status, 200, "{}", busy.body);
    let (s, v) = r
        .post(
            "/routine/add",
            json!({ "name": "second", "trigger": { "type": "interval", "seconds": 3600 },
                    "action": { "type": "command", "command": ["true"], "timeout_secs": 5 },
                    "ttl_secs": 1 }),
        )
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(
        (&v["applied"], &v["switch"]["state"]),
        (&json!(false), &json!("queued")),
        "{v}"
    );
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .starts_with("waiting for osmoda-watch"),
        "{v}"
    );
    let c = watch
        .post(&format!("/switch/commit/{}", busy.body["id"]), &json!({}))
        .await
        .unwrap();
    assert_eq!(c.status, 200, "{}", c.body);
    wait_listed(&r, "second", true).await;

    r.stop().await;
}

/// `/routine/add` and `/routine/remove` leave no half-done state: with osmoda-watch
/// unreachable nothing is committed (502); when SafeSwitch fails after the commit (here a
/// stand-in watch whose `/switch/begin` fails — the real switch is tested above) the answer
/// is 202 `applied: false` with the rev and how to apply or undo it; and remove finds a
/// routine the tree defines but no generation has applied yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_and_remove_say_what_happened_when_watch_fails() {
    let dir = scratch();
    let (tree_dir, tree) = common::quick_tree(dir.path());
    let agentd = Agentd::start(dir.path(), Some(&tree_dir));
    common::write_config(dir.path(), json!({}));
    let wsock = dir.path().join("watch.sock");
    let r = Routines::start(common::options(dir.path(), &agentd.socket)).await;
    let add = json!({ "name": "later", "trigger": { "type": "interval", "seconds": 60 },
                      "action": { "type": "command", "command": ["true"], "timeout_secs": 5 } });

    let head = tree.head().unwrap();
    let (s, v) = r.post("/routine/add", add.clone()).await;
    assert_eq!(s, 502, "{v}");
    assert!(
        v["error"].as_str().unwrap().contains("not reachable")
            && v["error"]
                .as_str()
                .unwrap()
                .contains("nothing was committed"),
        "{v}"
    );
    let del = |id: &str| {
        let c = r.client();
        let path = format!("/routine/remove/{id}");
        async move { c.delete(&path).await.map(|x| (x.status, x.body)).unwrap() }
    };
    let (s, v) = del("later").await;
    assert_eq!(s, 502, "{v}");
    assert_eq!(tree.head().unwrap(), head, "nothing committed");

    // A watch that is up but whose switch fails.
    let app = axum::Router::new()
        .route(
            "/health",
            axum::routing::get(|| async { axum::Json(json!({ "status": "ok" })) }),
        )
        .route(
            "/switch/begin",
            axum::routing::post(|| async {
                (
                    axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                    axum::Json(json!({ "error": "activation failed" })),
                )
            }),
        );
    let listener = tokio::net::UnixListener::bind(&wsock).unwrap();
    let fake = tokio::spawn(async move { axum::serve(listener, app).await });

    // A TTL SafeSwitch would refuse is refused before the commit, not after it.
    for ttl in [0, 86_401] {
        let mut bad = add.clone();
        bad["ttl_secs"] = json!(ttl);
        let (s, v) = r.post("/routine/add", bad).await;
        assert_eq!(s, 400, "{v}");
        assert!(v["error"].as_str().unwrap().contains("ttl_secs"), "{v}");
    }
    assert_eq!(tree.head().unwrap(), head, "nothing committed");

    let (s, v) = r.post("/routine/add", add.clone()).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["applied"], false, "{v}");
    let rev = tree.head().unwrap();
    assert_ne!(rev, head, "committed");
    let err = v["error"].as_str().unwrap();
    assert!(
        err.starts_with(&format!(
            "committed to the config tree as {rev} but not applied"
        )),
        "{v}"
    );
    assert!(err.contains("activation failed"), "{v}");
    assert!(
        v["hint"]
            .as_str()
            .unwrap()
            .contains(&format!("--generation {rev}")),
        "{v}"
    );
    assert!(std::fs::read_to_string(tree_dir.join("osmoda.nix"))
        .unwrap()
        .contains("later"));
    // Not in force (no generation applied it), but the tree defines it: remove finds it.
    assert!(!r.state.engine.config().routines.contains_key("later"));
    let (s, v) = del("later").await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(
        (v["removed"].as_str(), &v["applied"]),
        (Some("later"), &json!(false))
    );
    assert_ne!(tree.head().unwrap(), rev, "the removal is a commit too");
    assert!(!std::fs::read_to_string(tree_dir.join("osmoda.nix"))
        .unwrap()
        .contains("later"));
    // Now it is nowhere.
    let (s, v) = del("later").await;
    assert_eq!(s, 404, "{v}");
    assert!(
        v["error"]
            .as_str()
            .unwrap()
            .contains("in force or defined in the config tree"),
        "{v}"
    );
    fake.abort();
    r.stop().await;
}
