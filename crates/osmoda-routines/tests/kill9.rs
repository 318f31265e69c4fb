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
