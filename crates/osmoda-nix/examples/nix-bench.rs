//! nix-bench: the editor's cost on a generated, data-only osmoda.nix of about 5,000 lines,
//! next to one bare rnix parse of the same file (the unit every step is measured against).
//!
//! `cargo run --release -p osmoda-nix --example nix-bench [-- ITERATIONS]` (default 200).
//! Every operation runs on the unchanged file (not cumulatively), so each iteration does the
//! same work; prints p50/p99 per operation and its p50 in bare parses.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use osmoda_nix::{AttrPath, Value};

#[path = "fixture/big_osmoda_nix.rs"]
mod fixture;
use fixture::{big_osmoda_nix, WATCHERS};

/// One benchmarked operation, called with the iteration number.
type Op<'a> = Box<dyn Fn(usize) -> Result<()> + 'a>;

fn main() -> Result<()> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200);
    let src = big_osmoda_nix();
    println!(
        "osmoda.nix: {} lines ({} KiB), {iterations} iterations per operation",
        src.lines().count(),
        src.len() / 1024
    );
    let interval = |i: usize| path(&format!("w{:03}", i % WATCHERS), "intervalSecs");
    let fresh = |i: usize| path(&format!("w{:03}", i % WATCHERS), "retries");
    let actions = |i: usize| path(&format!("w{:03}", i % WATCHERS), "actions");

    let parse = bench(iterations, |_| {
        let parsed = rnix::Root::parse(&src);
        ensure!(parsed.errors().is_empty(), "bench file parses");
        Ok(())
    })?;
    let unit = parse.as_secs_f64();
    report("rnix parse (reference)", parse, unit);
    let rows: [(&str, Op); 6] = [
        (
            "get (existing scalar)",
            Box::new(|i| {
                ensure!(osmoda_nix::get(&src, &interval(i)?)? == 30, "reads 30");
                Ok(())
            }),
        ),
        (
            "set (existing scalar)",
            Box::new(|i| {
                osmoda_nix::set(&src, &interval(i)?, &Value::Json((31 + i).into()))?;
                Ok(())
            }),
        ),
        (
            "set (new binding)",
            Box::new(|i| {
                osmoda_nix::set(&src, &fresh(i)?, &Value::Json(3.into()))?;
                Ok(())
            }),
        ),
        (
            "unset",
            Box::new(|i| {
                osmoda_nix::unset(&src, &interval(i)?)?;
                Ok(())
            }),
        ),
        (
            "append",
            Box::new(|i| {
                osmoda_nix::append(&src, &actions(i)?, &Value::Json("log".into()))?;
                Ok(())
            }),
        ),
        (
            "remove",
            Box::new(|i| {
                osmoda_nix::remove(&src, &actions(i)?, &Value::Json("notify".into()))?;
                Ok(())
            }),
        ),
    ];
    for (name, op) in &rows {
        let p50 = bench(iterations, op)?;
        report(name, p50, unit);
    }
    Ok(())
}

fn path(watcher: &str, leaf: &str) -> Result<AttrPath> {
    Ok(AttrPath::new([
        "services", "osmoda", "watch", "watchers", watcher, leaf,
    ])?)
}

/// Runs `op` `iterations` times (after a few warm-up runs); returns the p50.
fn bench(iterations: usize, op: impl Fn(usize) -> Result<()>) -> Result<Duration> {
    for i in 0..3 {
        op(i)?;
    }
    let mut times = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let start = Instant::now();
        op(i)?;
        times.push(start.elapsed());
    }
    times.sort();
    Ok(times[times.len() / 2])
}

fn report(what: &str, p50: Duration, parse: f64) {
    println!(
        "{what:<28} p50 {:>7.3} ms  = {:>5.2} parses",
        p50.as_secs_f64() * 1000.0,
        p50.as_secs_f64() / parse.max(f64::EPSILON)
    );
}
