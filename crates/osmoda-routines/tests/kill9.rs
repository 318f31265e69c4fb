//! The osmoda-routines binary killed with SIGKILL twice while matching events stream in: no event
//! is lost and none starts twice. A run the kill cut short is `interrupted` (its action may or may
//! not have had its effect; it is never re-run), every other event's run is `ok`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{scratch, write_config, Agentd};
use osmoda_routines::history::History;
use serde_json::json;

/// Starts the daemon binary and waits until it has subscribed to agentd's events.
async fn spawn(dir: &Path, agentd: &Path) -> Child {
    let socket = dir.join("routines.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_osmoda-routines"))
        .arg("--socket")
        .arg(&socket)
        .arg("--config")
        .arg(dir.join("routines.json"))
        .arg("--state-dir")
        .arg(dir.join("routines"))
        .arg("--agentd-socket")
        .arg(agentd)
        .arg("--watch-socket")
        .arg(dir.join("watch.sock"))
        .arg("--mask")
        .arg(dir.join("osmoda-admin"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let client = osmoda_client::Client::new(&socket);
    let start = Instant::now();
    loop {
        if let Ok(r) = client.get("/health").await {
            if r.status == 200 && !r.body["event_cursor"].is_null() {
                return child;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "never subscribed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_stream_loses_no_event_and_starts_none_twice() {
    const N: usize = 300;
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
        }),
    );
    let mut child = spawn(dir.path(), &agentd.socket).await;
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
    // Kill once runs are flowing, at two points of the stream.
    for at in [N / 3, 2 * N / 3] {
        while agentd.events("effect.ran").len() < at {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        child = spawn(dir.path(), &agentd.socket).await;
    }
    let ids = appender.await.unwrap();

    // Wait until every event has a run that ended, then stop the daemon with SIGTERM.
    let socket = dir.path().join("routines.sock");
    let start = Instant::now();
    loop {
        let r = osmoda_client::Client::new(&socket)
            .get("/routine/history?routine=on-load&limit=1000")
            .await
            .unwrap();
        let ended = r.body.as_array().map_or(0, |runs| {
            runs.iter()
                .filter(|x| !["queued", "running"].contains(&x["status"].as_str().unwrap_or("")))
                .count()
        });
        if ended >= N {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "only {ended} of {N} runs ended: {}",
            r.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(child.wait().unwrap().success());

    let (h, left_running) = History::open(&dir.path().join("routines/routines.db")).unwrap();
    assert_eq!(left_running, 0, "a clean stop leaves no run running");
    let runs = h.list(Some("on-load"), None, 1000).unwrap();
    assert_eq!(runs.len(), N, "one run per event, none twice");
    let refs: BTreeSet<i64> = runs
        .iter()
        .map(|r| r.trigger_ref.parse().unwrap())
        .collect();
    assert_eq!(
        refs,
        ids.iter().copied().collect::<BTreeSet<_>>(),
        "every event has its run"
    );
    let interrupted = runs.iter().filter(|r| r.status == "interrupted").count();
    assert!(
        runs.iter()
            .all(|r| r.status == "ok" || r.status == "interrupted"),
        "{:?}",
        runs.iter()
            .find(|r| r.status != "ok" && r.status != "interrupted")
    );
    assert!(
        interrupted <= 2,
        "at most one run cut short per kill, not {interrupted}"
    );
    // Each action had its effect at most once; only the interrupted ones may lack it.
    let effects = agentd.events("effect.ran").len();
    eprintln!("{N} events, 2 SIGKILLs: {interrupted} runs interrupted, {effects} effects");
    assert!(
        (N - interrupted..=N).contains(&effects),
        "{effects} effects for {N} events with {interrupted} interrupted runs"
    );
}

/// A daemon killed when the test ends, failed or not.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The runs of `routine` in the daemon's history (opened beside the daemon: WAL).
fn runs_of(dir: &Path, routine: &str) -> Vec<osmoda_routines::history::Run> {
    let (h, _) = History::open(&dir.join("routines/routines.db")).unwrap();
    h.list(Some(routine), None, 100).unwrap()
}

/// A scheduled run waiting out its jitter when the daemon is killed is neither lost nor
/// doubled: its schedule mark moves only in the transaction that records the run, so the next
/// start finds it missed and `runOnce` runs it (kind `missed`), exactly once. A run recorded
/// before the kill (no jitter) has moved its mark: the next start runs no catch-up for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_inside_the_jitter_delay_neither_loses_nor_doubles_a_scheduled_run() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    let hourly = |jitter: u64| {
        json!({ "enable": true, "trigger": { "type": "interval", "seconds": 3600 },
                "action": { "type": "command", "command": ["true"], "timeout_secs": 20 },
                "missed": "runOnce", "jitter_secs": jitter })
    };
    write_config(
        dir.path(),
        json!({ "jittered": hourly(86_400), "prompt": hourly(0),
                // An event routine: `spawn` waits for the event subscription.
                "idle": { "enable": true, "trigger": { "type": "event", "match": "test.never" },
                          "action": { "type": "command", "command": ["true"],
                                      "timeout_secs": 20 } } }),
    );
    // Both last ran 3600 s - 15 s ago: each is due 15 s from now.
    let due = chrono::Utc::now() + chrono::Duration::seconds(15);
    std::fs::create_dir_all(dir.path().join("routines")).unwrap();
    {
        let (h, _) = History::open(&dir.path().join("routines/routines.db")).unwrap();
        let last = (due - chrono::Duration::seconds(3600)).timestamp_millis();
        h.set_mark("jittered", last).unwrap();
        h.set_mark("prompt", last).unwrap();
    }
    let mut child = Reaped(spawn(dir.path(), &agentd.socket).await);
    assert!(
        chrono::Utc::now() < due,
        "the daemon took 15 s to start: the due time passed before it ran"
    );
    // `prompt` runs at the due time; `jittered` waits up to a day.
    let start = Instant::now();
    while !runs_of(dir.path(), "prompt")
        .iter()
        .any(|r| r.status == "ok")
    {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "prompt never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    child.0.kill().unwrap(); // SIGKILL, inside jittered's delay (a random 0..=86,400 s)
    child.0.wait().unwrap();
    let before = runs_of(dir.path(), "jittered").len();
    assert_eq!(runs_of(dir.path(), "prompt").len(), 1);

    let mut child = Reaped(spawn(dir.path(), &agentd.socket).await);
    // A catch-up is sent at start; wait for it (or, had the delay been under ~1 s and the run
    // recorded before the kill, make sure none comes).
    let start = Instant::now();
    loop {
        let runs = runs_of(dir.path(), "jittered");
        if before == 0 && runs.iter().any(|r| r.status == "ok") {
            break;
        }
        if before == 1 && start.elapsed() > Duration::from_secs(3) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the run killed in its jitter delay never came back: {runs:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let jittered = runs_of(dir.path(), "jittered");
    assert_eq!(jittered.len(), 1, "one run for one due time: {jittered:#?}");
    if before == 0 {
        assert_eq!(jittered[0].trigger, "missed", "{jittered:#?}");
    }
    let prompt = runs_of(dir.path(), "prompt");
    assert_eq!(
        prompt.len(),
        1,
        "a recorded run is not caught up again: {prompt:#?}"
    );
    assert_eq!(prompt[0].trigger, "interval");
}
