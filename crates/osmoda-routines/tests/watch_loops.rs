//! Cycles through osmoda-watch: a routine whose action begins a switch, fired by the events
//! that switch produces, runs once per seed. osmoda-watch carries the `X-Osmoda-Action` label
//! of the request that began a switch into everything the switch causes — its `watch.switch.*`
//! events (written later by the switch's own task), its incident and its revert commit — so
//! the loop guard traces them to the run that asked for the switch. Real agentd, osmoda-watch
//! (local backend, rendering with `lib/`) and osmoda-routines, in process.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::{options, quick_tree, scratch, settle, subscribed, write_config, Agentd, Routines};
use common::{Watch, QUICK_SWITCHES};
use serde_json::{json, Value};

/// An event routine on `pattern` whose http action posts `body` to osmoda-watch's `path`.
fn on_watch(pattern: &str, watch: &Watch, path: &str, body: Value) -> Value {
    json!({ "enable": true, "trigger": { "type": "event", "match": pattern },
            "concurrency": "queue",
            "action": { "type": "http", "socket": watch.socket, "method": "POST", "path": path,
                        "body": body, "timeout_secs": 60 } })
}

/// Waits until no switch runs, every event routine has seen the ledger's tip and nothing changed
/// over a second look (a switch a routine began goes on after its run ended).
async fn quiet(r: &Routines, agentd: &Agentd, watch: &Watch) -> Vec<osmoda_routines::history::Run> {
    let start = Instant::now();
    let mut last = None;
    loop {
        let runs = settle(r, agentd).await;
        let history = watch.client().get("/switch/history").await.unwrap().body;
        let running = history.as_array().unwrap().iter().any(|s| {
            !["committed", "rolled-back", "failed"].contains(&s["state"].as_str().unwrap_or(""))
        });
        let tip = agentd.events("").last().map_or(0, |e| e.id);
        let now = (tip, runs.len(), history.as_array().unwrap().len());
        if !running && last == Some(now) {
            return runs;
        }
        last = Some(now);
        assert!(
            start.elapsed() < Duration::from_secs(240),
            "still switching after 240 s: {} runs, {history}",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A switch whose check fails: it rolls back.
fn failing() -> Value {
    json!({ "ttl_secs": 5, "health_checks": [ { "type": "command", "command": ["false"] } ] })
}

/// agentd and osmoda-watch on a quick tree, with a first generation deployed.
async fn deployed(
    dir: &std::path::Path,
) -> (std::path::PathBuf, osmoda_generations::Tree, Agentd, Watch) {
    let (tree_dir, tree) = quick_tree(dir);
    let agentd = Agentd::start(dir, Some(&tree_dir));
    let watch = Watch::start(dir, &agentd.socket, &tree_dir).await;
    assert_eq!(
        watch.switch(json!({ "ttl_secs": 1 })).await["state"],
        "committed"
    );
    (tree_dir, tree, agentd, watch)
}

fn labelled(events: &[osmoda_ledger::Event]) -> Vec<&osmoda_ledger::Event> {
    events
        .iter()
        .filter(|e| e.actor.contains("[action=routine-run."))
        .collect()
}

/// `again` begins a switch whenever one commits; `retry` begins a failing switch whenever one
/// rolls back. A person's committed switch runs `again` once, a person's rolled-back switch
/// runs `retry` once: the switches they begin commit (or roll back) with events that name
/// their run (`osmoda-watch[action=routine-run.<id>,…]`, watch keeping its standing), and the
/// incident of the routine's rollback is recorded for the run as well, so the next firing is
/// cut. Each new switch of the person is a new seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routine_that_begins_a_switch_on_switch_events_runs_once_per_seed() {
    let dir = scratch();
    let (_, _, agentd, watch) = deployed(dir.path()).await;
    write_config(
        dir.path(),
        json!({
            "again": on_watch("watch.switch.committed", &watch, "/switch/begin", json!({ "ttl_secs": 1 })),
            "retry": on_watch("watch.switch.rolled-back", &watch, "/switch/begin", failing()),
        }),
    );
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    subscribed(&r).await;
    let committed_before = agentd.events("watch.switch.committed").len();
    assert_eq!(committed_before, 1);

    for round in 1..=2 {
        assert_eq!(
            watch.switch(json!({ "ttl_secs": 1 })).await["state"],
            "committed"
        );
        // `again`'s switch runs now; only one switch runs at a time.
        quiet(&r, &agentd, &watch).await;
        assert_eq!(watch.switch(failing()).await["state"], "rolled-back");
        let runs = quiet(&r, &agentd, &watch).await;
        for name in ["again", "retry"] {
            let mine: Vec<_> = runs.iter().filter(|x| x.routine == name).collect();
            assert_eq!(mine.len(), round, "{name}: {runs:#?}");
            assert!(mine.iter().all(|x| x.status == "ok"), "{mine:#?}");
        }
    }

    // Per round: the person's switch and the one `again` began commit; the person's failing
    // switch and the one `retry` began roll back. The routines' ones name their run.
    let committed = agentd.events("watch.switch.committed");
    assert_eq!(committed.len(), committed_before + 4, "{committed:#?}");
    let rolled = agentd.events("watch.switch.rolled-back");
    assert_eq!(rolled.len(), 4, "{rolled:#?}");
    for evs in [&committed, &rolled] {
        let mine = labelled(evs);
        assert_eq!(mine.len(), 2, "{evs:#?}");
        assert!(
            mine.iter()
                .all(|e| e.actor.starts_with("osmoda-watch[action=routine-run.")),
            "{mine:#?}"
        );
    }
    // Every state a routine's switch went through names the run, not only the last one.
    let pending = agentd.events("watch.switch.pending");
    assert_eq!(labelled(&pending).len(), 4, "{pending:#?}");
    let incidents = agentd.events("incident.created");
    assert_eq!(incidents.len(), 4, "{incidents:#?}");
    assert_eq!(labelled(&incidents).len(), 2, "{incidents:#?}");
    let cut = agentd.events("routine.loop.cut");
    assert!(cut.len() >= 4, "each routine's own switch is cut: {cut:#?}");
    r.stop().await;
}

/// A labelled request that rolls a switch back causes its revert commit: the commit's
/// `config.*` events name the run, so a routine on `config.committed` that begins a failing
/// switch (whose rollback writes a revert commit, a new `config.committed`) runs once per seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revert_commits_of_a_routines_switch_name_its_run() {
    let dir = scratch();
    let (tree_dir, tree, agentd, watch) = deployed(dir.path()).await;
    // The routine applies whatever HEAD holds with a check that fails: its rollback reverts
    // the tree to the deployed generation in a new commit.
    write_config(
        dir.path(),
        json!({ "apply": on_watch("config.committed", &watch, "/switch/begin", failing()) }),
    );
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    subscribed(&r).await;
    for round in 1..=2 {
        // A person's edit through agentd: a `config.committed` no run caused.
        let edit = agentd
            .client()
            .post(
                "/config/set",
                &json!({ "path": "services.osmoda.watch.safeSwitch.ttlSecs",
                         "value": round + 1, "reason": format!("a person's edit {round}") }),
            )
            .await
            .unwrap();
        assert_eq!(edit.status, 200, "{}", edit.body);
        let runs = quiet(&r, &agentd, &watch).await;
        let applied: Vec<_> = runs.iter().filter(|x| x.routine == "apply").collect();
        assert_eq!(applied.len(), round, "{runs:#?}");
    }
    let commits = agentd.events("config.committed");
    assert_eq!(
        commits.len(),
        4,
        "two edits, two revert commits: {commits:#?}"
    );
    let reverts = labelled(&commits);
    assert_eq!(reverts.len(), 2, "{commits:#?}");
    let text = std::fs::read_to_string(tree_dir.join("osmoda.nix")).unwrap();
    assert_eq!(text, QUICK_SWITCHES, "both edits reverted");
    assert!(tree.generations(1).unwrap()[0]
        .message
        .contains("rolled back"));
    r.stop().await;
}

/// How a daemon records an event because of a labelled request: `/events/append`'s `action`
/// keeps the caller's name (and standing) and names the action in the actor; an invalid label,
/// or one the request's own `X-Osmoda-Action` contradicts, is a 400 with nothing written.
#[tokio::test]
async fn an_appended_event_names_the_action_it_was_recorded_for() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    let body = |action: &str| json!({ "type": "cause.test", "daemon": "pinger", "payload": {}, "action": action });
    let plain = agentd.client();
    let r = plain
        .post("/events/append", &body("routine-run.5"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body["actor"]
            .as_str()
            .unwrap()
            .starts_with("pinger[action=routine-run.5,uid="),
        "{}",
        r.body
    );
    for bad in ["Routine Run", "", "a|b"] {
        let r = plain.post("/events/append", &body(bad)).await.unwrap();
        assert_eq!(r.status, 400, "{bad:?}: {}", r.body);
        assert!(
            r.body["error"].as_str().unwrap().contains("action"),
            "{}",
            r.body
        );
    }
    let marked = agentd.client().for_action("routine-run.6");
    let r = marked
        .post("/events/append", &body("routine-run.5"))
        .await
        .unwrap();
    assert_eq!(r.status, 400, "{}", r.body);
    let r = marked
        .post("/events/append", &body("routine-run.6"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(agentd.events("cause.").len(), 2);
}
