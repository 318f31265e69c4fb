//! agentd benchmark (a separate command, not a test):
//! `cargo run --release -p agentd --example bench`
//!
//! 1. Durable appends/s through agentd's socket with 8 concurrent writers (group commit), with
//!    p50/p99 latency, against a per-event-commit baseline (one SQLite transaction with
//!    `synchronous=FULL` per event, same schema) measured in the same run.
//! 2. agentd's idle RSS, read from /proc after start-up.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

const WRITERS: usize = 8;
const PER_WRITER: usize = 2_000;
const ROUNDS: usize = 5;

fn baseline(dir: &std::path::Path, round: usize, n: usize) -> anyhow::Result<f64> {
    let conn = rusqlite::Connection::open(dir.join(format!("baseline-{round}.db")))?;
    conn.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT, ts TEXT NOT NULL, type TEXT NOT NULL,
           actor TEXT NOT NULL, payload TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);",
    )?;
    let start = Instant::now();
    let mut prev = "0".repeat(64);
    for i in 0..n {
        let ts = osmoda_ledger::now_ts();
        let payload = format!("{{\"i\":{i}}}");
        let id = i as i64 + 1;
        let hash = osmoda_ledger::event_hash(id, &ts, "bench", "bench", &payload, &prev);
        conn.execute(
            "INSERT INTO events (id, ts, type, actor, payload, prev_hash, hash) VALUES (?1, ?2, 'bench', 'bench', ?3, ?4, ?5)",
            rusqlite::params![id, ts, payload, prev, hash],
        )?;
        prev = hash;
    }
    Ok(n as f64 / start.elapsed().as_secs_f64())
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or_else(|| anyhow::anyhow!("no VmRSS"))?;
    Ok(line.split_whitespace().nth(1).unwrap_or("0").parse()?)
}

fn main() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let agentd_bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("agentd"))
        .ok_or_else(|| anyhow::anyhow!("cannot locate target dir"))?;
    anyhow::ensure!(
        agentd_bin.exists(),
        "build agentd first: cargo build --release -p agentd"
    );
    let socket = dir.path().join("agentd.sock");
    let mut child = Command::new(&agentd_bin)
        .args(["--socket", socket.to_str().unwrap_or_default()])
        .args([
            "--approval-socket",
            dir.path().join("a.sock").to_str().unwrap_or_default(),
        ])
        .args([
            "--state-dir",
            dir.path().join("state").to_str().unwrap_or_default(),
        ])
        .args(["--config", "/nonexistent"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    while !socket.exists() {
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    let idle_rss = rss_kib(child.id())?;

    let rt = tokio::runtime::Runtime::new()?;
    let lat = Arc::new(std::sync::Mutex::new(Vec::with_capacity(
        ROUNDS * WRITERS * PER_WRITER,
    )));
    // Rounds alternate the socket load and the baseline so both see the same machine load.
    let (mut socket_rates, mut base_rates) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let start = Instant::now();
        rt.block_on(async {
        let tasks: Vec<_> = (0..WRITERS)
            .map(|w| {
                let client = osmoda_client::Client::new(&socket);
                let lat = lat.clone();
                tokio::spawn(async move {
                    for i in 0..PER_WRITER {
                        let body = json!({"type": "bench", "daemon": "bench", "payload": {"w": w, "i": i}});
                        let t = Instant::now();
                        let r = client.post("/events/append", &body).await;
                        assert!(matches!(r, Ok(ref r) if r.status == 200), "append failed: {r:?}");
                        lat.lock().map(|mut l| l.push(t.elapsed())).ok();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.ok();
        }
    });
        socket_rates.push((WRITERS * PER_WRITER) as f64 / start.elapsed().as_secs_f64());
        base_rates.push(baseline(dir.path(), round, 2_000)?);
    }
    let total = ROUNDS * WRITERS * PER_WRITER;
    let mut l = lat.lock().map_err(|_| anyhow::anyhow!("poisoned"))?.clone();
    l.sort();
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)];
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let socket_rate = median(&mut socket_rates);
    let busy_rss = rss_kib(child.id())?;
    let _ = child.kill();
    let _ = child.wait();

    let base = median(&mut base_rates);
    println!("agentd socket, {WRITERS} writers, {ROUNDS} rounds, {total} durable appends: median {socket_rate:.0} events/s (rounds: {socket_rates:.0?})");
    println!("  latency p50 {:?}  p99 {:?}", pct(0.50), pct(0.99));
    println!("baseline, one SQLite transaction per event (synchronous=FULL): median {base:.0} events/s (rounds: {base_rates:.0?})");
    println!("  speed-up over baseline: {:.1}x", socket_rate / base);
    println!(
        "agentd idle RSS: {:.1} MiB (after the load: {:.1} MiB)",
        idle_rss as f64 / 1024.0,
        busy_rss as f64 / 1024.0
    );
    Ok(())
}
