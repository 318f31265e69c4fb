//! 100,000 watchers in one osmoda-watch: every one is probed, memory stays bounded, and the
//! probes in flight never exceed the scheduler's pool. Its own test binary, so no other test's
//! allocations share the process whose RSS is measured.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use osmoda_config::{WatchConfig, Watcher};
use osmoda_generations::{Actor, Tree};
use osmoda_watch::watcher::MAX_CONCURRENT_PROBES;
use osmoda_watch::{AppState, BackendKind, Options};
use serde_json::json;

const N: usize = 100_000;

/// Growth of RSS allowed for N watchers (with the allocator's slack and the 100,000-entry
/// config passed to `apply`). Each costs its definition, its probe, its status and a map and
/// heap entry: about 1 KiB.
/// One tokio task per watcher, as before the scheduler, cost ~6 KiB each (611 MB at 100,000).
const MAX_GROWTH_BYTES: u64 = 160 * 1024 * 1024;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

fn options(dir: &Path) -> Options {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    Options {
        config: dir.join("etc/osmoda/watch.json"),
        state_dir: dir.join("state"),
        agentd_socket: dir.join("no-agentd.sock"),
        backend: BackendKind::Local,
        config_tree: dir.join("tree"),
        etc_dir: dir.join("etc"),
        lib_dir: repo.join("lib"),
        host: "test".into(),
        probe_interval: Duration::from_millis(100),
        retry_delay: Duration::ZERO,
        pause: None,
        masks: Vec::new(),
    }
}

fn config(dir: &Path, n: usize) -> WatchConfig {
    let def: Watcher = serde_json::from_value(json!({
        "check": {"type": "disk", "path": dir.display().to_string(), "min_free_percent": 0},
        "interval_secs": 3600,
        "actions": ["notify"],
    }))
    .unwrap();
    WatchConfig {
        watchers: (0..n).map(|i| (format!("w{i:06}"), def.clone())).collect(),
        safe_switch: serde_json::from_value(json!({"ttl_secs": 1, "health_checks": []})).unwrap(),
        boundary: Default::default(),
    }
}

/// Walks `/watcher/list`'s pages; returns how many watchers have not been probed yet.
fn unprobed(st: &AppState) -> usize {
    let (mut after, mut n) = (None::<String>, 0);
    loop {
        let page = st.watchers.list(after.as_deref(), 1000);
        n += page.iter().filter(|w| w.status.health == "unknown").count();
        match page.last() {
            Some(w) => after = Some(w.name.clone()),
            None => return n,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_watchers_are_probed_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let actor = Actor::new("test", "test@localhost");
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    Tree::init(&dir.path().join("tree"), &repo.join("generations"), &actor).unwrap();
    let st = AppState::open(options(dir.path())).await.unwrap();
    assert_eq!(st.watchers.count(), 0);
    // Warm the allocator and the code paths with a few watchers first, then measure from there.
    st.watchers.apply(&config(dir.path(), 10));
    while unprobed(&st) > 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let base = rss_bytes();

    let started = Instant::now();
    st.watchers.apply(&config(dir.path(), N));
    assert_eq!(st.watchers.count(), N);
    let mut peak_probing = 0;
    loop {
        peak_probing = peak_probing.max(st.watchers.probing());
        if unprobed(&st) == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "{} of {N} watchers still unprobed after 5 minutes",
            unprobed(&st)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all_probed = started.elapsed();
    let grown = rss_bytes().saturating_sub(base);
    println!(
        "{N} watchers: all probed once in {:.1} s; RSS {:.1} MiB -> +{:.1} MiB ({} bytes per watcher); \
         at most {peak_probing} probes seen at once",
        all_probed.as_secs_f64(),
        base as f64 / 1048576.0,
        grown as f64 / 1048576.0,
        grown / N as u64,
    );
    assert!(
        grown < MAX_GROWTH_BYTES,
        "RSS grew by {grown} bytes for {N} watchers (bound {MAX_GROWTH_BYTES})"
    );
    assert!(peak_probing <= MAX_CONCURRENT_PROBES, "{peak_probing}");
    // Every watcher answered ok and nothing was written per probe (only incidents are persisted).
    let page = st.watchers.list(None, 5);
    assert!(
        page.iter().all(|w| w.status.health == "ok"),
        "{:?}",
        page[0].status
    );
    let files = std::fs::read_dir(dir.path().join("state/watchers"))
        .unwrap()
        .count();
    assert_eq!(files, 0, "no status file for a watcher that never failed");

    // Removing them all stops them and frees the scheduler.
    st.watchers.apply(&config(dir.path(), 0));
    assert_eq!(st.watchers.count(), 0);
    assert_eq!(st.watchers.probing(), 0);
    st.watchers.stop();
}
