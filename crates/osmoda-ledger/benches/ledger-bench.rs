//! Ledger benchmark: durable appends/s through group commit with the Merkle tree on and off
//! (same run, alternating) and vs. one commit per event, append latency, the time to verify a
//! 1,000,000-event chain, to build the tree over it, and proof generation latency at that size.
//!
//! Run: `cargo bench -p osmoda-ledger --bench ledger-bench [-- --writers 8 --per-writer 1000
//! --pairs 6 --baseline 1000 --verify-events 1000000 --dir /var/tmp]`. The directory must be on the disk
//! you care about: fsync cost is the whole point.

use anyhow::Context as _;
use osmoda_ledger::{
    event_hash, now_ts, verify, verify_consistency, verify_inclusion, Ledger, NewEvent,
    OpenOptions, GENESIS_HASH,
};
use rusqlite::Connection;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

struct Args {
    writers: usize,
    per_writer: usize,
    baseline: usize,
    verify_events: usize,
    pairs: usize,
    dir: Option<PathBuf>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        writers: 8,
        per_writer: 1000,
        baseline: 1000,
        verify_events: 1_000_000,
        pairs: 6,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--bench" {
            continue;
        }
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--writers" => a.writers = value.parse()?,
            "--per-writer" => a.per_writer = value.parse()?,
            "--baseline" => a.baseline = value.parse()?,
            "--verify-events" => a.verify_events = value.parse()?,
            "--pairs" => a.pairs = value.parse()?,
            "--dir" => a.dir = Some(PathBuf::from(value)),
            _ => anyhow::bail!("unknown flag {flag}; known: --writers --per-writer --baseline --verify-events --pairs --dir"),
        }
    }
    Ok(a)
}

fn payload(i: usize) -> String {
    format!(
        r#"{{"unit":"nginx.service","action":"restart","attempt":{i},"reason":"health check failed"}}"#
    )
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// CPU time (user + system) of the calling thread, from /proc (10 ms resolution), so that verify
/// can be judged on a machine shared with other work.
fn thread_cpu() -> Option<Duration> {
    cpu_of("/proc/thread-self/stat")
}

/// CPU time of the whole process (every thread, the ledger's writer included).
fn process_cpu() -> Option<Duration> {
    cpu_of("/proc/self/stat")
}

fn cpu_of(stat: &str) -> Option<Duration> {
    let stat = std::fs::read_to_string(stat).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// What one group-commit run measured.
struct Run {
    /// Durable appends per second.
    throughput: f64,
    /// CPU time of the whole process per event, µs (NaN without /proc).
    cpu_per_event: f64,
}

/// Group commit: `writers` threads each append `per_writer` events, waiting for each ack.
fn bench_group_commit(
    dir: &Path,
    writers: usize,
    per_writer: usize,
    tree: bool,
    run: usize,
) -> anyhow::Result<Run> {
    let path = dir.join(format!("group-{writers}-{tree}-{run}.db"));
    let ledger = Ledger::open_with(
        &path,
        OpenOptions {
            merkle_tree: tree,
            ..Default::default()
        },
    )?;
    let cpu0 = process_cpu();
    let start = Instant::now();
    let mut lat: Vec<Duration> = std::thread::scope(|s| -> anyhow::Result<Vec<Duration>> {
        let handles: Vec<_> = (0..writers)
            .map(|w| {
                let ledger = ledger.clone();
                s.spawn(move || -> anyhow::Result<Vec<Duration>> {
                    let mut lat = Vec::with_capacity(per_writer);
                    for i in 0..per_writer {
                        let t = Instant::now();
                        ledger.append_blocking(NewEvent::new(
                            "svc.restart",
                            format!("writer{w}"),
                            payload(i),
                        ))?;
                        lat.push(t.elapsed());
                    }
                    Ok(lat)
                })
            })
            .collect();
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.join().map_err(|_| anyhow::anyhow!("writer panicked"))??);
        }
        Ok(all)
    })?;
    let elapsed = start.elapsed();
    let cpu = process_cpu()
        .zip(cpu0)
        .map_or(f64::NAN, |(b, a)| b.saturating_sub(a).as_secs_f64());
    lat.sort_unstable();
    let n = lat.len();
    let stats = ledger.stats();
    let tree_label = if tree { "tree on" } else { "tree off" };
    println!(
        "group commit ({writers} concurrent writers, {n} events, synchronous=FULL, WAL, {tree_label}):"
    );
    let throughput = n as f64 / elapsed.as_secs_f64();
    println!(
        "  throughput      {:>10.0} durable appends/s  ({:.2} s total)",
        throughput,
        elapsed.as_secs_f64()
    );
    println!("  latency p50     {:>10.3} ms", ms(percentile(&lat, 0.50)));
    println!("  latency p99     {:>10.3} ms", ms(percentile(&lat, 0.99)));
    println!("  latency max     {:>10.3} ms", ms(percentile(&lat, 1.0)));
    let cpu_per_event = cpu * 1e6 / n as f64;
    println!("  process CPU     {cpu_per_event:>10.1} µs per event ({cpu:.2} s)");
    println!(
        "  transactions    {:>10}  (mean batch {:.1} events)",
        stats.transactions,
        stats.events as f64 / stats.transactions.max(1) as f64
    );
    drop(ledger);
    let report = verify(&path)?;
    anyhow::ensure!(
        report.is_ok() && report.events == n as u64,
        "group-commit chain does not verify: {report:?}"
    );
    if tree {
        let ledger = Ledger::open(&path)?;
        let head = ledger.tree_head()?;
        anyhow::ensure!(head.size == n as u64, "tree covers {} of {n}", head.size);
    }
    Ok(Run {
        throughput,
        cpu_per_event,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Baseline: one event per transaction, same schema and hashing, plain loop on one connection.
fn bench_per_event_commit(dir: &Path, count: usize) -> anyhow::Result<()> {
    let path = dir.join("baseline.db");
    drop(Ledger::open(&path)?); // creates the same schema
    let conn = Connection::open(&path)?;
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    let mut prev = GENESIS_HASH.to_owned();
    let mut lat = Vec::with_capacity(count);
    let start = Instant::now();
    for i in 0..count {
        let t = Instant::now();
        let id = i as i64 + 1;
        let ts = now_ts();
        let p = payload(i);
        let h = event_hash(id, &ts, "svc.restart", "baseline", &p, &prev);
        conn.execute_batch("BEGIN IMMEDIATE")?;
        conn.prepare_cached("INSERT INTO events (id, ts, type, actor, payload, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?
            .execute((id, &ts, "svc.restart", "baseline", &p, &prev, &h))?;
        conn.prepare_cached("INSERT INTO events_fts (rowid, payload) VALUES (?1, ?2)")?
            .execute((id, &p))?;
        conn.execute_batch("COMMIT")?;
        prev = h;
        lat.push(t.elapsed());
    }
    let elapsed = start.elapsed();
    lat.sort_unstable();
    println!("per-event commit baseline (1 writer loop, {count} events, one transaction each):");
    println!(
        "  throughput      {:>10.0} durable appends/s  ({:.2} s total)",
        count as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    );
    println!("  latency p50     {:>10.3} ms", ms(percentile(&lat, 0.50)));
    println!("  latency p99     {:>10.3} ms", ms(percentile(&lat, 0.99)));
    drop(conn);
    anyhow::ensure!(verify(&path)?.is_ok(), "baseline chain does not verify");
    Ok(())
}

/// Builds an `n`-event chain quickly (one bulk transaction, same schema and hash) and verifies it.
fn bench_verify(dir: &Path, n: usize) -> anyhow::Result<()> {
    let path = dir.join("verify.db");
    drop(Ledger::open(&path)?);
    let build = Instant::now();
    {
        let mut conn = Connection::open(&path)?;
        conn.pragma_update(None, "synchronous", "OFF")?;
        let tx = conn.transaction()?;
        {
            let mut stmt = tx.prepare(
                "INSERT INTO events (id, ts, type, actor, payload, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?;
            let mut prev = GENESIS_HASH.to_owned();
            let ts = now_ts();
            for i in 0..n {
                let id = i as i64 + 1;
                let p = payload(i);
                let actor = format!("osmoda-watch[uid=0,pid={},exe=osmoda-watch]", 1000 + i % 50);
                let h = event_hash(id, &ts, "svc.restart", &actor, &p, &prev);
                stmt.execute((id, &ts, "svc.restart", &actor, &p, &prev, &h))?;
                prev = h;
            }
        }
        tx.commit()?;
        conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")?;
    }
    let size = std::fs::metadata(&path)?.len();
    println!(
        "verify ({n} events, {:.0} MiB database, built in {:.1} s):",
        size as f64 / 1048576.0,
        build.elapsed().as_secs_f64()
    );
    let mut best = Duration::MAX;
    for run in 1..=3 {
        let (t, cpu0) = (Instant::now(), thread_cpu());
        let report = verify(&path)?;
        let d = t.elapsed();
        let cpu = thread_cpu()
            .zip(cpu0)
            .map_or(f64::NAN, |(b, a)| b.saturating_sub(a).as_secs_f64());
        anyhow::ensure!(
            report.is_ok() && report.events == n as u64,
            "bulk chain does not verify: {report:?}"
        );
        println!(
            "  run {run}           {:>10.3} s  ({:.0} events/s, {cpu:.2} s CPU)",
            d.as_secs_f64(),
            n as f64 / d.as_secs_f64()
        );
        best = best.min(d);
    }
    println!(
        "  best            {:>10.3} s  (target <= 1 s for 1,000,000)",
        best.as_secs_f64()
    );
    bench_proofs(&path, n)
}

/// Builds the Merkle tree over the bulk chain (what opening a ledger from before the tree
/// does), then times inclusion and consistency proofs at spread-out ids.
fn bench_proofs(path: &Path, n: usize) -> anyhow::Result<()> {
    let t = Instant::now();
    let ledger = Ledger::open(path)?;
    let head = ledger.tree_head()?;
    anyhow::ensure!(head.size == n as u64, "tree covers {} of {n}", head.size);
    println!(
        "merkle tree over {n} events built at open in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    let samples = 1000u64;
    let step = (n as u64 / samples).max(1);
    let (mut inc, mut con) = (Vec::new(), Vec::new());
    for k in 0..samples.min(n as u64) {
        // Spread over the whole tree, with a small odd offset so sizes are not powers of two.
        let id = (k * step + 1 + k % 7).min(n as u64);
        let t = Instant::now();
        let p = ledger.inclusion_proof(id as i64, None)?;
        inc.push(t.elapsed());
        verify_inclusion(&p)?;
        let t = Instant::now();
        let c = ledger.consistency_proof(id, n as u64)?;
        con.push(t.elapsed());
        verify_consistency(&c)?;
    }
    inc.sort_unstable();
    con.sort_unstable();
    println!(
        "proofs at {n} events ({} each, verified after timing):",
        inc.len()
    );
    println!(
        "  inclusion p50   {:>10.3} ms   p99 {:.3} ms",
        ms(percentile(&inc, 0.5)),
        ms(percentile(&inc, 0.99))
    );
    println!(
        "  consistency p50 {:>10.3} ms   p99 {:.3} ms",
        ms(percentile(&con, 0.5)),
        ms(percentile(&con, 0.99))
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let tmp = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    println!(
        "ledger-bench in {} ({} cores)",
        tmp.path().display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    // Tree off and on run in adjacent pairs (off-on, then on-off, ...) so that the load of the
    // shared machine, which swings by 2x within a minute, hits both sides of a pair alike; the
    // ratio is the median of the pairs' ratios (and the medians of each side are shown too).
    let (mut off, mut on, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    let (mut cpu_off, mut cpu_on) = (Vec::new(), Vec::new());
    for pair in 0..args.pairs {
        let run = |tree| bench_group_commit(tmp.path(), args.writers, args.per_writer, tree, pair);
        let (a, b) = if pair % 2 == 0 {
            let a = run(false)?;
            (a, run(true)?)
        } else {
            let b = run(true)?;
            (run(false)?, b)
        };
        ratios.push(b.throughput / a.throughput);
        off.push(a.throughput);
        on.push(b.throughput);
        cpu_off.push(a.cpu_per_event);
        cpu_on.push(b.cpu_per_event);
    }
    println!(
        "merkle tree cost over {} pairs: median of the pairs' ratios {:.1} % (target >= 90 %); medians {:.0} appends/s with the tree vs {:.0} without; ratios {:.2?}; on {on:.0?}; off {off:.0?}",
        args.pairs,
        100.0 * median(ratios.clone()),
        median(on.clone()),
        median(off.clone()),
        ratios,
    );
    println!(
        "merkle tree CPU: median {:.1} µs per event with the tree vs {:.1} without (whole process)",
        median(cpu_on),
        median(cpu_off)
    );
    if args.writers < 64 {
        // More writers than the default, to show how batches grow with concurrency.
        let per = (args.writers * args.per_writer / 64).max(1);
        bench_group_commit(tmp.path(), 64, per, true, 0)?;
    }
    bench_per_event_commit(tmp.path(), args.baseline)?;
    bench_verify(tmp.path(), args.verify_events)?;
    Ok(())
}
