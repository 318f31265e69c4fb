//! What the approval gate costs per edit of the starter tree: judges a harmless one-line edit of
//! `generations/configuration.nix` (before and after are two evaluator runs, in parallel) `N`
//! times and prints the wall clock per judgement and the evaluator's CPU time per judgement.
//!
//! `cargo run --release -p agentd --example gate_cost [N]` (default 10).

use std::path::PathBuf;
use std::time::Instant;

use agentd::gate::{eval::Files, judge, Mutation};

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../generations");
    let mut before = Files::new();
    for f in ["configuration.nix", "osmoda.nix"] {
        let text = std::fs::read_to_string(root.join(f)).expect("starter tree");
        before.insert(f.into(), text);
    }
    let mut walls = Vec::new();
    let cpu0 = children_cpu();
    for i in 0..n {
        let mut after = before.clone();
        let cfg = after
            .get_mut(std::path::Path::new("configuration.nix"))
            .expect("cfg");
        *cfg = cfg.replacen("\"osmoda\"", &format!("\"osmoda{i}\""), 1);
        let t = Instant::now();
        let e = judge(&before, &after, &[], Mutation::Edit).expect("judge");
        walls.push(t.elapsed().as_secs_f64() * 1000.0);
        assert!(e.findings.is_empty(), "{:?}", e.findings);
    }
    let cpu = (children_cpu() - cpu0) * 1000.0 / n as f64;
    walls.sort_by(f64::total_cmp);
    println!(
        "{n} judgements of a one-line edit of the starter tree: wall p50 {:.0} ms (min {:.0}, max {:.0}); evaluator CPU {:.0} ms per judgement (two runs)",
        walls[n / 2],
        walls[0],
        walls[n - 1],
        cpu
    );
}

/// User + system CPU seconds of the waited-for children (the evaluator runs), from
/// `/proc/self/stat` (`cutime`, `cstime`; clock ticks of 1/100 s on Linux).
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("stat");
    // Fields after the `(comm)`: state is field 3, cutime 16, cstime 17.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f[13] + f[14]) / 100.0
}
