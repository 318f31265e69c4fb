//! Event triggers against a real agentd: 1,000 matching events while osmoda-routines restarts
//! twice give exactly 1,000 runs, none twice; agentd restarting does not lose or repeat any.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{options, scratch, settle, subscribed, write_config, Agentd, Routines};
use serde_json::json;

fn load_events(agentd: &Agentd) -> usize {
    agentd.events("load.").len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_events_fire_exactly_once_across_two_restarts() {
    const N: usize = 1000;
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    write_config(
        dir.path(),
        json!({
            "on-load": {
                "enable": true,
                "trigger": { "type": "event", "match": "load.*" },
                "action": { "type": "http", "method": "POST", "path": "/events/append",
                            "body": { "type": "effect.ran", "daemon": "effect", "payload": {} } },
                "concurrency": "queue",
            },
            "exact": {
                "enable": true,
                "trigger": { "type": "event", "match": "load.7" },
                "action": { "type": "http", "method": "GET", "path": "/health" },
                "concurrency": "queue",
            },
        }),
    );
    let mut r = Routines::start(options(dir.path(), &agentd.socket)).await;
    subscribed(&r).await;
    // Events that arrived before the routine existed do not fire it; the cursor starts at the tip.
    let client = agentd.client();
    let appender = tokio::spawn(async move {
        let mut ids = Vec::new();
        for i in 0..N {
            let resp = client
                .post("/events/append", &json!({ "type": format!("load.{i}"), "daemon": "test", "payload": { "i": i } }))
                .await
                .unwrap();
            assert_eq!(resp.status, 200, "{}", resp.body);
            ids.push(resp.body["id"].as_i64().unwrap());
        }
        ids
    });
    for at in [300, 650] {
        while load_events(&agentd) < at {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        r.stop().await;
        r = Routines::start(options(dir.path(), &agentd.socket)).await;
    }
    let ids = appender.await.unwrap();

    let finished = agentd.wait_events("routine.run.finished", N + 1).await;
    let h = r.state.engine.history();
    let runs: Vec<_> = {
        let mut all = Vec::new();
        let mut before = None;
        loop {
            let page = h.list(Some("on-load"), before, 1000).unwrap();
            let Some(last) = page.last() else { break };
            before = Some(last.id);
            all.extend(page);
        }
        all
    };
    assert_eq!(runs.len(), N, "one run per event");
    assert!(
        runs.iter()
            .all(|r| r.status == "ok" && r.trigger == "event"),
        "{:?}",
        runs.iter().find(|r| r.status != "ok")
    );
    let refs: BTreeSet<i64> = runs
        .iter()
        .map(|r| r.trigger_ref.parse().unwrap())
        .collect();
    assert_eq!(
        refs,
        ids.iter().copied().collect::<BTreeSet<_>>(),
        "each event fired once"
    );
    // The action itself ran exactly N times: its own ledger events.
    assert_eq!(agentd.events("effect.ran").len(), N);
    let started: Vec<String> = agentd
        .events("routine.run.started")
        .iter()
        .map(|e| serde_json::from_str::<serde_json::Value>(&e.payload).unwrap())
        .filter(|p| p["routine"] == "on-load")
        .map(|p| p["ref"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(started.len(), N);
    assert_eq!(
        started.iter().collect::<BTreeSet<_>>().len(),
        N,
        "no run started twice"
    );
    assert_eq!(finished.len(), N + 1, "plus the exact match of load.7 only");
    let exact = h.list(Some("exact"), None, 10).unwrap();
    assert_eq!(exact.len(), 1);
    assert_eq!(exact[0].trigger_ref, ids[7].to_string());
    r.stop().await;
}

#[tokio::test]
async fn agentd_restarting_loses_and_repeats_nothing() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    write_config(
        dir.path(),
        json!({ "deploys": {
            "enable": true,
            "trigger": { "type": "event", "match": "deploy.done" },
            "action": { "type": "command", "command": ["true"], "timeout_secs": 20 },
            "concurrency": "queue",
        }}),
    );
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    subscribed(&r).await;
    let first = agentd.append("deploy.done", json!({ "n": 1 })).await;
    // agentd goes down (the routine daemon keeps retrying) and comes back on the same ledger.
    drop(agentd);
    let agentd = Agentd::start(dir.path(), None);
    let second = agentd.append("deploy.done", json!({ "n": 2 })).await;
    let start = Instant::now();
    loop {
        let runs = r
            .state
            .engine
            .history()
            .list(Some("deploys"), None, 10)
            .unwrap();
        if runs.len() >= 2 && runs.iter().all(|x| x.status == "ok") {
            let refs: Vec<String> = runs.iter().rev().map(|x| x.trigger_ref.clone()).collect();
            assert_eq!(refs, [first.to_string(), second.to_string()]);
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{runs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    r.stop().await;
}

fn on(m: &str, action: serde_json::Value) -> serde_json::Value {
    json!({ "enable": true, "trigger": { "type": "event", "match": m }, "action": action,
            "concurrency": "queue" })
}

fn nothing() -> serde_json::Value {
    json!({ "type": "command", "command": ["true"], "timeout_secs": 20 })
}

fn append(kind: &str) -> serde_json::Value {
    json!({ "type": "http", "method": "POST", "path": "/events/append",
            "body": { "type": kind, "daemon": "pinger", "payload": {} } })
}

fn kick() -> serde_json::Value {
    json!({ "enable": true, "trigger": { "type": "interval", "seconds": 86400 },
            "action": nothing() })
}

/// Two event routines that each fire on the other's `routine.run.finished` (and a third
/// routine starting it): each runs once for the seed (b matches `routine.run.*` and fires from
/// kick's `started` event first), every later event of that seed is cut with a
/// `routine.loop.cut` naming the routines and why; 3 runs, whatever the interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_routines_triggering_each_other_are_cut() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    write_config(
        dir.path(),
        json!({
            "a": on("routine.run.finished", nothing()),
            "b": on("routine.run.*", nothing()),
            "kick": kick(),
        }),
    );
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    subscribed(&r).await;
    let (s, v) = r.post("/routine/trigger/kick", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let kick_run = v["run_id"].as_i64().unwrap();
    let runs = settle(&r, &agentd).await;
    let mut names: Vec<&str> = runs.iter().map(|x| x.routine.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["a", "b", "kick"], "{runs:#?}");
    let cuts = agentd.events("routine.loop.cut");
    assert!(!cuts.is_empty());
    for c in &cuts {
        let p: serde_json::Value = serde_json::from_str(&c.payload).unwrap();
        assert_eq!(p["origin"], format!("run:{kick_run}"), "{p}");
        assert!(!p["cut"].as_array().unwrap().is_empty(), "{p}");
    }
    // Every run's finished event names its chain and the one seed.
    for e in agentd.events("routine.run.finished") {
        let p: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
        let chain: Vec<&str> = p["chain"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
        let set: BTreeSet<&&str> = chain.iter().collect();
        assert_eq!(
            set.len(),
            chain.len(),
            "a routine ran twice in one chain: {chain:?}"
        );
        assert_eq!(chain.first(), Some(&"kick"), "{chain:?}");
        assert_eq!(p["origin"], format!("run:{kick_run}"), "{p}");
    }
    r.stop().await;
}

/// Eight routines all matching `routine.run.finished` (per path, every ordering of distinct
/// routines would run: ~110,000 runs): one seed runs each of them once, 9 runs in all; a
/// second seed does the same again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fan_out_is_bounded_by_the_seed_not_the_path() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    let mut routines = serde_json::Map::new();
    for i in 0..8 {
        routines.insert(format!("r{i}"), on("routine.run.finished", nothing()));
    }
    routines.insert("kick".into(), kick());
    write_config(dir.path(), serde_json::Value::Object(routines));
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    subscribed(&r).await;
    for round in 1..=2 {
        let (s, v) = r.post("/routine/trigger/kick", json!({})).await;
        assert_eq!(s, 200, "{v}");
        let runs = settle(&r, &agentd).await;
        assert_eq!(runs.len(), 9 * round, "{runs:#?}");
        for i in 0..8 {
            let n = runs.iter().filter(|x| x.routine == format!("r{i}")).count();
            assert_eq!(n, round, "r{i}");
        }
    }
    r.stop().await;
}

/// A routine whose http action appends the very event type that fires it runs once per seed:
/// agentd records the appended event as made for that run (`action=routine-run.<id>`), so it
/// descends from the same seed. The same through two routines feeding each other (A appends
/// B's event, B appends A's), and each outside event is a new seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_that_write_their_own_trigger_run_once_per_seed() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    write_config(
        dir.path(),
        json!({
            "echo": on("ping.self", append("ping.self")),
            "left": on("ping.left", append("ping.right")),
            "right": on("ping.right", append("ping.left")),
        }),
    );
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    subscribed(&r).await;
    for round in 1..=2 {
        agentd.append("ping.self", json!({})).await;
        agentd.append("ping.left", json!({})).await;
        let runs = settle(&r, &agentd).await;
        for name in ["echo", "left", "right"] {
            let mine: Vec<_> = runs.iter().filter(|x| x.routine == name).collect();
            assert_eq!(mine.len(), round, "{name}: {runs:#?}");
            assert!(mine.iter().all(|x| x.status == "ok"), "{mine:#?}");
        }
    }
    // The appended events name the run they were made for.
    let echoed = agentd.events("ping.self");
    assert_eq!(echoed.len(), 4, "two seeds, two echoes");
    assert!(
        echoed
            .iter()
            .filter(|e| e.actor.contains("[action=routine-run."))
            .count()
            == 2,
        "{echoed:#?}"
    );
    assert!(!agentd.events("routine.loop.cut").is_empty());
    r.stop().await;
}

/// A cycle through another API of agentd: a routine on `config.committed` whose http action
/// changes the configuration (a new commit, so a new `config.committed`) runs once per seed.
/// agentd records the commit's events with the run's action label in their actor, so the
/// routine's own commit descends from the person's edit that fired it and is cut there; a
/// second edit by the person is a new seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routine_that_changes_the_config_on_config_events_runs_once_per_seed() {
    let dir = scratch();
    let tree_dir = dir.path().join("tree");
    let actor = osmoda_generations::Actor::new("Test Person", "test@example.org");
    let template = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../generations");
    osmoda_generations::Tree::init(&tree_dir, &template, &actor).unwrap();
    let agentd = Agentd::start(dir.path(), Some(&tree_dir));
    let add = |pkg: &str, reason: &str| {
        json!({ "path": "environment.systemPackages", "nix": format!("pkgs.{pkg}"),
                "reason": reason })
    };
    write_config(
        dir.path(),
        json!({ "tune": on("config.committed", json!({ "type": "http", "method": "POST",
            "path": "/config/append", "body": add("jq", "tune adds jq"), "timeout_secs": 120 })) }),
    );
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    subscribed(&r).await;
    for round in 1..=2 {
        let edit = agentd
            .client()
            .post("/config/append", &add("hello", "a person adds hello"))
            .await
            .unwrap();
        assert_eq!(edit.status, 200, "{}", edit.body);
        let runs = settle(&r, &agentd).await;
        let tuned: Vec<_> = runs.iter().filter(|x| x.routine == "tune").collect();
        assert_eq!(tuned.len(), round, "{runs:#?}");
        assert!(tuned.iter().all(|x| x.status == "ok"), "{tuned:#?}");
    }
    let commits = agentd.events("config.committed");
    assert_eq!(
        commits.len(),
        4,
        "two edits, two routine commits: {commits:#?}"
    );
    assert_eq!(
        commits
            .iter()
            .filter(|e| e.actor.contains("[action=routine-run."))
            .count(),
        2,
        "{commits:#?}"
    );
    let cut = agentd.wait_events("routine.loop.cut", 2).await;
    assert_eq!(cut.len(), 2, "each routine commit's event is cut: {cut:#?}");
    r.stop().await;
}

/// An event pattern holding URL characters (`&`, `%`, `+`, `#`, `=`, `?`, `,`) is matched as
/// written, and never changes what the other routines subscribe to: each routine fires once
/// for its own type (not for a look-alike such as the decoded `p%41` → `pA`). When agentd's
/// subscription fails, `/health` says event triggers are not being received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_patterns_with_url_characters_fire_and_never_stop_the_others() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    let kinds = ["zz&foo=1", "p%41", "x+y", "h#t", "q=1?", "rv.ping"];
    let mut routines = serde_json::Map::new();
    for (i, k) in kinds.iter().enumerate() {
        routines.insert(format!("r{i}"), on(k, nothing()));
    }
    routines.insert("prefix".into(), on("rv.*", nothing()));
    write_config(dir.path(), serde_json::Value::Object(routines.clone()));
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    subscribed(&r).await;
    for k in kinds.iter().chain(&["pA", "x", "h", "zz"]) {
        agentd.append(k, json!({})).await;
    }
    let count = |runs: &[osmoda_routines::history::Run], name: &str| {
        runs.iter().filter(|x| x.routine == name).count()
    };
    let runs = settle(&r, &agentd).await;
    for i in 0..kinds.len() {
        assert_eq!(count(&runs, &format!("r{i}")), 1, "r{i}: {runs:#?}");
    }
    assert_eq!(count(&runs, "prefix"), 1, "{runs:#?}");
    let (_, h) = r.get("/health").await;
    assert_eq!(h["status"], "ok", "{h}");

    // A pattern with agentd's separator `,`: the daemon filters by itself.
    routines.insert("comma".into(), on("a,b", nothing()));
    write_config(dir.path(), serde_json::Value::Object(routines));
    assert!(r.state.reload().await);
    agentd.append("a,b", json!({})).await;
    agentd.append("rv.ping", json!({})).await;
    let runs = settle(&r, &agentd).await;
    assert_eq!(count(&runs, "comma"), 1, "{runs:#?}");
    assert_eq!(count(&runs, "r5"), 2, "{runs:#?}");
    assert_eq!(count(&runs, "r0"), 1, "{runs:#?}");

    // agentd gone: event triggers are not received, and /health says so.
    drop(agentd);
    let start = Instant::now();
    loop {
        let (_, h) = r.get("/health").await;
        if h["status"] == "degraded" {
            let p = h["problem"].as_str().unwrap_or_default();
            assert!(p.contains("event triggers are not being received"), "{h}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "still {h}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    r.stop().await;
}

/// A boundary command that calls agentd itself and labels its requests with the run's
/// `$OSMODA_ACTION` (`X-Osmoda-Action`) is traced like an http action: a command that appends
/// its own trigger, and two commands appending each other's, run once per outside event; the
/// events it wrote name the run in their actor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boundary_commands_that_label_their_calls_run_once_per_seed() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    // The harness's agentd socket is root's; the command runs as nobody.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&agentd.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let call = |kind: &str| {
        json!({ "type": "command", "timeout_secs": 30, "command": ["sh", "-c", format!(
            "curl -sS --fail-with-body --max-time 20 --unix-socket {} \
               -H \"X-Osmoda-Action: $OSMODA_ACTION\" -H 'content-type: application/json' \
               -d '{{\"type\":\"{kind}\",\"daemon\":\"pinger\",\"payload\":{{}}}}' \
               http://agentd/events/append",
            agentd.socket.display()
        )] })
    };
    write_config(
        dir.path(),
        json!({
            "echo": on("cmd.self", call("cmd.self")),
            "left": on("cmd.left", call("cmd.right")),
            "right": on("cmd.right", call("cmd.left")),
        }),
    );
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    subscribed(&r).await;
    for round in 1..=2 {
        agentd.append("cmd.self", json!({})).await;
        agentd.append("cmd.left", json!({})).await;
        let runs = settle(&r, &agentd).await;
        for name in ["echo", "left", "right"] {
            let mine: Vec<_> = runs.iter().filter(|x| x.routine == name).collect();
            assert_eq!(mine.len(), round, "{name}: {runs:#?}");
            assert!(mine.iter().all(|x| x.status == "ok"), "{mine:#?}");
        }
    }
    let echoed = agentd.events("cmd.self");
    assert_eq!(echoed.len(), 4, "two seeds, two echoes: {echoed:#?}");
    let labelled = echoed
        .iter()
        .filter(|e| e.actor.contains("[action=routine-run."))
        .count();
    assert_eq!(labelled, 2, "{echoed:#?}");
    assert!(!agentd.events("routine.loop.cut").is_empty());
    r.stop().await;
}

/// An http action runs with none of the daemon's standing: it cannot write `routine.*` (a
/// forged `routine.run.finished` with a chain of its choosing), claim osmoda-routines' or
/// another daemon's name (and so reuse their dedup streams), or write another daemon's
/// namespace; what it may write is recorded as made for its run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_actions_cannot_act_as_the_daemon() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    let forge = |kind: &str, daemon: &str| {
        json!({ "type": "http", "method": "POST", "path": "/events/append",
                "body": { "type": kind, "daemon": daemon,
                          "payload": { "routine": "x", "chain": [], "origin": "forged-origin" },
                          "dedup": { "stream": "spool", "seq": 1 } } })
    };
    let manual = |action: serde_json::Value| {
        json!({ "enable": true, "trigger": { "type": "interval", "seconds": 86400 },
                "action": action })
    };
    write_config(
        dir.path(),
        json!({
            "forge-run": manual(forge("routine.run.finished", "osmoda-routines")),
            "forge-name": manual(forge("custom.thing", "osmoda-routines")),
            "forge-watch": manual(forge("watch.switch.committed", "osmoda-watch")),
            "forge-ns": manual(forge("routine.loop.cut", "pinger")),
            "own": manual(forge("custom.thing", "pinger")),
        }),
    );
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    let before = agentd.events("routine.").len();
    for (name, want) in [
        ("forge-run", 403),
        ("forge-name", 403),
        ("forge-watch", 403),
        ("forge-ns", 403),
        ("own", 200),
    ] {
        let (s, v) = r.post(&format!("/routine/trigger/{name}"), json!({})).await;
        assert_eq!(s, 200, "{v}");
        let run = r.wait_run(v["run_id"].as_i64().unwrap()).await;
        assert_eq!(run.exit, Some(want), "{name}: {run:?}");
    }
    // Only the daemon's own run events were added to `routine.*`; no forged one.
    let added: Vec<_> = agentd.events("routine.").into_iter().skip(before).collect();
    assert!(
        added
            .iter()
            .all(|e| e.actor.starts_with("osmoda-routines[uid=")),
        "{added:#?}"
    );
    assert!(
        added.iter().all(|e| !e.payload.contains("forged-origin")),
        "{added:#?}"
    );
    assert!(agentd.events("watch.").is_empty());
    let own = agentd.events("custom.thing");
    assert_eq!(own.len(), 1);
    assert!(
        own[0].actor.starts_with("pinger[action=routine-run."),
        "{}",
        own[0].actor
    );
    r.stop().await;
}

/// An event larger than a routine is handed (agentd takes up to 1 MiB) still fires the routine,
/// which learns what fired it and that the payload was left out (size and SHA-256), never an
/// unset `OSMODA_PAYLOAD`; a small one arrives whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_the_payload_limit_is_handed_as_a_note() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    write_config(
        dir.path(),
        json!({ "on-big": { "enable": true, "trigger": { "type": "event", "match": "big.*" },
                "action": { "type": "command", "timeout_secs": 20,
                            "command": ["sh", "-c", "printf %s \"${OSMODA_PAYLOAD-unset}\""] },
                "concurrency": "queue" } }),
    );
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    subscribed(&r).await;
    let text = "x".repeat(100 * 1024);
    let big = agentd.append("big.one", json!({ "text": text })).await;
    let small = agentd.append("big.two", json!({ "text": "hi" })).await;
    let start = Instant::now();
    let runs = loop {
        let runs = r.state.engine.history().list(None, None, 10).unwrap();
        if runs.len() == 2 && runs.iter().all(|x| x.status == "ok") {
            break runs;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "{runs:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let out = |id: i64| -> serde_json::Value {
        let run = runs
            .iter()
            .find(|x| x.trigger_ref == id.to_string())
            .unwrap();
        serde_json::from_str(run.output.as_deref().unwrap()).unwrap()
    };
    let b = out(big);
    assert_eq!(b["id"], big, "{b}");
    assert_eq!(b["type"], "big.one", "{b}");
    let inner = json!({ "text": text }).to_string();
    assert_eq!(b["payload_omitted"]["bytes"], inner.len(), "{b}");
    assert_eq!(
        b["payload_omitted"]["sha256"],
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(inner.as_bytes())),
        "{b}"
    );
    assert_eq!(out(small)["payload"]["text"], "hi");
    r.stop().await;
}

/// Waits until event routine `name` has its start recorded (it is in force for events).
async fn started(r: &Routines, name: &str) {
    let start = Instant::now();
    while !r
        .state
        .engine
        .history()
        .event_starts()
        .unwrap()
        .contains_key(name)
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{name} never started"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// An event routine fires only on events after it came into force: one a reload adds is not
/// fired by the events from before it (while no event routine existed the shared cursor stood
/// still), and one a restart brings is not either, while a routine in force before the
/// restart still gets every event appended while the daemon was down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_event_routine_is_not_fired_by_events_from_before_it() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    write_config(dir.path(), json!({ "a": on("old.a", nothing()) }));
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    subscribed(&r).await;
    write_config(dir.path(), json!({ "kick": kick() }));
    assert!(r.state.reload().await);
    for _ in 0..3 {
        agentd.append("late.b", json!({})).await;
    }
    write_config(dir.path(), json!({ "b": on("late.*", nothing()) }));
    assert!(r.state.reload().await);
    let fresh = agentd.append("late.b", json!({})).await;
    let runs = settle(&r, &agentd).await;
    let b: Vec<_> = runs.iter().filter(|x| x.routine == "b").collect();
    assert_eq!(b.len(), 1, "{runs:#?}");
    assert_eq!(b[0].trigger_ref, fresh.to_string());
    r.stop().await;

    // Down: two events; back with a new routine `c` on them.
    let mut down = Vec::new();
    for _ in 0..2 {
        down.push(agentd.append("late.c", json!({})).await);
    }
    write_config(
        dir.path(),
        json!({ "b": on("late.*", nothing()), "c": on("late.c", nothing()) }),
    );
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    started(&r, "c").await;
    let after = agentd.append("late.c", json!({})).await;
    let runs = settle(&r, &agentd).await;
    let refs = |name: &str| -> Vec<String> {
        let mut v: Vec<String> = runs
            .iter()
            .filter(|x| x.routine == name)
            .map(|x| x.trigger_ref.clone())
            .collect();
        v.sort_unstable();
        v
    };
    let mut want_b: Vec<String> = [fresh, down[0], down[1], after]
        .iter()
        .map(i64::to_string)
        .collect();
    want_b.sort_unstable();
    assert_eq!(refs("b"), want_b, "{runs:#?}");
    assert_eq!(refs("c"), [after.to_string()], "{runs:#?}");
    r.stop().await;
}

/// A claimed batch's `routine.loop.cut` records are all written whatever a config change does:
/// the cursor moved past the cut events in the claim, so a record dropped with the subscription
/// step (which a config change cancels) would be lost for good. Routine `a` matches its own
/// `routine.run.*` events (each is cut: `a` is in the chain); 150 manual runs give 300 cut
/// events in few batches while the config changes as fast as it can be reloaded: one record
/// per cut event, none missing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loop_cut_records_survive_config_changes() {
    const RUNS: usize = 150;
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    let config = |i: u64| {
        json!({
            "a": on("routine.run.*", nothing()),
            "x": { "enable": true, "trigger": { "type": "interval", "seconds": 86_400 + i },
                   "action": nothing() },
        })
    };
    write_config(dir.path(), config(0));
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    subscribed(&r).await;
    let state = std::sync::Arc::clone(&r.state);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop2 = std::sync::Arc::clone(&stop);
    let dir2 = dir.path().to_path_buf();
    let churn = tokio::spawn(async move {
        let mut i = 1;
        while !stop2.load(std::sync::atomic::Ordering::SeqCst) {
            write_config(&dir2, config(i));
            // `false` when the daemon's own poll took this change first.
            state.reload().await;
            i += 1;
            tokio::task::yield_now().await;
        }
        i
    });
    for _ in 0..RUNS {
        let (s, v) = r.post("/routine/trigger/a", json!({})).await;
        assert_eq!(s, 200, "{v}");
    }
    // Churn until every run ended (each config change is a ledger event: no settling before).
    let start = Instant::now();
    loop {
        let runs = r
            .state
            .engine
            .history()
            .list(Some("a"), None, 1000)
            .unwrap();
        if runs.len() == RUNS
            && runs
                .iter()
                .all(|x| !["queued", "running"].contains(&x.status.as_str()))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "runs never ended"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let reloads = churn.await.unwrap();
    let runs = settle(&r, &agentd).await;
    // Delivery of the spooled records to agentd is asynchronous: wait for them.
    let start = Instant::now();
    let a_runs = runs.iter().filter(|x| x.routine == "a").count();
    assert_eq!(a_runs, RUNS, "only the manual runs: every own event is cut");
    loop {
        let cut_events: BTreeSet<i64> = agentd
            .events("routine.run.")
            .iter()
            .filter(|e| e.actor.starts_with("osmoda-routines["))
            .map(|e| e.id)
            .collect();
        let recorded: BTreeSet<i64> = agentd
            .events("routine.loop.cut")
            .iter()
            .map(|c| {
                let p: serde_json::Value = serde_json::from_str(&c.payload).unwrap();
                p["event_id"].as_i64().unwrap()
            })
            .collect();
        if recorded == cut_events {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} cut events, {} loop.cut records after {reloads} config changes; missing: {:?}",
            cut_events.len(),
            recorded.len(),
            cut_events
                .difference(&recorded)
                .take(10)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    r.stop().await;
}
