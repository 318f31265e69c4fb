//! Benchmark (a separate command, never part of the test suite):
//!
//!     cargo run --release -p osmoda-routines --example routines-bench
//!
//! 1. 10,000 cron routines (`ROUTINES=n` for another count) (`* * * * *`) in one scheduler on the wall clock: process CPU time
//!    over 10 s of idle, and from just before a minute boundary until all 10,000 runs are due.
//! 2. Event-trigger latency: an in-process agentd and osmoda-routines with one event routine;
//!    from sending `POST /events/append` to the routine's action starting, 300 events one at a
//!    time; p50/p99.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Timelike;
use osmoda_config::RoutinesConfig;
use osmoda_routines::history::History;
use osmoda_routines::scheduler::{self, Clock};
use serde_json::json;
use tokio::sync::{mpsc, watch};

fn cpu() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let t = |tv: nix::sys::time::TimeVal| {
        Duration::from_secs(tv.tv_sec() as u64) + Duration::from_micros(tv.tv_usec() as u64)
    };
    t(u.user_time()) + t(u.system_time())
}

async fn scheduler_cpu() {
    let n: usize = std::env::var("ROUTINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let mut routines = serde_json::Map::new();
    for i in 0..n {
        routines.insert(
            format!("r{i:05}"),
            json!({ "enable": true, "trigger": { "type": "cron", "schedule": "* * * * *" },
                    "action": { "type": "command", "command": ["true"], "timeout_secs": 5 } }),
        );
    }
    let cfg: RoutinesConfig = serde_json::from_value(json!({ "routines": routines })).unwrap();
    cfg.validate().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (h, _) = History::open(&dir.path().join("r.db")).unwrap();
    let (tx, mut rx) = mpsc::channel(n * 2);
    let (_cfg_tx, cfg_rx) = watch::channel(Arc::new(cfg));
    let (_trigger, shutdown) = osmoda_routines::shutdown::channel();
    let c0 = cpu();
    let t0 = Instant::now();
    tokio::spawn(scheduler::run(
        Clock::System,
        cfg_rx,
        Arc::new(h),
        tx,
        shutdown,
    ));
    // Measure idle away from a minute boundary.
    let now = chrono::Utc::now();
    let to_boundary = Duration::from_secs(u64::from(60 - now.second()));
    if to_boundary < Duration::from_secs(14) {
        // Let this minute's runs pass first.
        let mut got = 0;
        while got < n {
            rx.recv().await.unwrap();
            got += 1;
        }
    }
    // Start-up ends when the process stops burning CPU (the scheduler sleeps).
    loop {
        let before = cpu();
        tokio::time::sleep(Duration::from_millis(500)).await;
        if cpu() - before < Duration::from_millis(5) {
            break;
        }
    }
    println!(
        "scheduler start-up with {n} routines: {:?} CPU, {:?} wall",
        cpu() - c0,
        t0.elapsed()
    );
    let i0 = cpu();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle = cpu() - i0;
    println!(
        "idle, 10 s: {idle:?} CPU = {:.3} % of one core",
        idle.as_secs_f64() * 10.0
    );
    let now = chrono::Utc::now();
    let wait = 60 - u64::from(now.second());
    if wait > 2 {
        tokio::time::sleep(Duration::from_secs(wait - 2)).await;
    }
    let b0 = cpu();
    let w0 = Instant::now();
    let mut got = 0;
    let mut first = None;
    while got < n {
        rx.recv().await.unwrap();
        first.get_or_insert_with(Instant::now);
        got += 1;
    }
    let spent = cpu() - b0;
    println!(
        "minute boundary: {n} runs due, {spent:?} CPU from 2 s before until the last was handed to the engine ({:?} after the first)",
        first.map(|f| f.elapsed()).unwrap_or_default()
    );
    let _ = w0;
}

async fn event_latency() {
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("agentd.sock");
    std::fs::create_dir_all(dir.path().join("admin")).unwrap();
    let state =
        agentd::AppState::open(dir.path().join("agentd"), agentd::Settings::default(), None)
            .unwrap();
    let a = tokio::net::UnixListener::bind(&socket).unwrap();
    let h = tokio::net::UnixListener::bind(dir.path().join("admin/approval.sock")).unwrap();
    let (_atrigger, ashutdown) = agentd::shutdown_channel();
    tokio::spawn(agentd::serve(a, h, state, ashutdown));
    std::fs::write(
        dir.path().join("routines.json"),
        json!({ "routines": { "on-bench": { "enable": true,
            "trigger": { "type": "event", "match": "bench.*" },
            "action": { "type": "http", "method": "GET", "path": "/health" },
            "concurrency": "queue" } } })
        .to_string(),
    )
    .unwrap();
    let opts = osmoda_routines::Options {
        config: dir.path().join("routines.json"),
        state_dir: dir.path().join("routines"),
        agentd_socket: socket.clone(),
        watch_socket: dir.path().join("watch.sock"),
        socket: dir.path().join("routines.sock"),
        masks: vec![],
        clock: Clock::System,
        gateway_token: None,
        gateway_uid: None,
    };
    let rstate = osmoda_routines::AppState::open(opts).await.unwrap();
    let listener = tokio::net::UnixListener::bind(dir.path().join("routines.sock")).unwrap();
    let (_rtrigger, rshutdown) = osmoda_routines::shutdown::channel();
    let mut started = rstate.engine.started();
    tokio::spawn(osmoda_routines::serve(
        listener,
        Arc::clone(&rstate),
        rshutdown,
    ));
    while rstate.engine.history().cursor().unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let client = osmoda_client::Client::new(&socket);
    let mut lat = Vec::new();
    for i in 0..N {
        let t = Instant::now();
        let r = client
            .post(
                "/events/append",
                &json!({ "type": "bench.tick", "daemon": "bench", "payload": { "i": i } }),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        let s = started.recv().await.unwrap();
        lat.push(s.at.duration_since(t));
    }
    lat.sort();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "event trigger, ledger append sent -> action start, {N} events: p50 {:?}, p99 {:?}, max {:?}",
        p(0.5),
        p(0.99),
        lat[lat.len() - 1]
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    // The scheduler first: nothing else lives in the process while its CPU time is read.
    scheduler_cpu().await;
    event_latency().await;
}
