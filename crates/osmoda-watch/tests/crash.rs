//! Crash safety: `kill -9` of osmoda-watch in each state of a switch, then a restart, must end
#![allow(clippy::unwrap_used)]
//! every switch committed or rolled back (committing, a decided commit, is covered too), with the etc dir and the tree consistent with it.
//! `OSMODA_WATCH_PAUSE_IN=<state>[:after]` makes the daemon block there (and tell us through
//! the notify socket) so the kill lands deterministically before or after the state's side effect.

mod common;

use common::{variant, Env};
use serde_json::json;

/// Runs per state (each: begin, pause, kill -9, restart, finish, check).
const RUNS: usize = 20;

async fn crash_in(state: &str, failing: bool) {
    let env = Env::new().await;
    // A deployed generation to fall back to.
    let w = env.spawn(None);
    let s = env.begin(json!({"ttl_secs": 1})).await;
    assert_eq!(
        env.wait_terminal(s["id"].as_u64().unwrap()).await["state"],
        "committed"
    );
    w.stop();

    let check = if failing {
        json!(["false"])
    } else {
        json!(["true"])
    };
    let mut ended = std::collections::BTreeMap::<String, usize>::new();
    for i in 0..RUNS {
        // Alternate the kill before and after the state's side effect where there is one.
        let point = if i % 2 == 1 && state != "probing" {
            format!("{state}:after")
        } else {
            state.to_string()
        };
        let rev = env.commit(&variant(i), &format!("run {i}"));
        let w = env.spawn(Some(&point));
        let s = env
            .begin(json!({"generation": rev, "ttl_secs": 2, "health_checks": [{"type": "command", "command": check}]}))
            .await;
        let marker = format!("paused-in-{}", point.replace(":after", "-after"));
        w.wait_for(&marker);
        w.kill9();
        assert!(env.state_dir.join(&marker).is_file());
        std::fs::remove_file(env.state_dir.join(&marker)).unwrap();

        let w = env.spawn(None);
        let done = env.wait_terminal(s["id"].as_u64().unwrap()).await;
        env.assert_consistent(&done);
        assert!(done["recoveries"].as_u64().unwrap() >= 1, "{done}");
        if failing {
            assert_eq!(
                done["state"], "rolled-back",
                "a failing switch never commits: {done}"
            );
        }
        *ended
            .entry(done["state"].as_str().unwrap().to_string())
            .or_default() += 1;
        w.stop();
    }
    eprintln!("kill -9 in {state}: {ended:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_building() {
    crash_in("building", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_activating() {
    crash_in("activating", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_probing() {
    crash_in("probing", false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_rolling_back() {
    crash_in("rolling-back", true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_committing() {
    crash_in("committing", false).await;
}

/// `kill -9` of the daemon while a command check runs leaves no process behind: the check's
/// sandbox dies with its parent. Needs root (bwrap); says `skipped: needs root` otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_during_a_check_leaves_no_process() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let env = Env::new().await;
    let w = env.spawn(None);
    let first = env.begin(json!({"ttl_secs": 1})).await;
    assert_eq!(
        env.wait_terminal(first["id"].as_u64().unwrap()).await["state"],
        "committed"
    );
    let marker = format!("900.{}", std::process::id());
    let rev = env.commit(&variant(9), "slow check");
    let check = json!({"type": "command", "command": ["sleep", marker], "timeout_secs": 3600});
    env.begin(json!({"generation": rev, "ttl_secs": 3600, "health_checks": [check]}))
        .await;
    let running = || -> usize {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .filter(|c| {
                String::from_utf8_lossy(c)
                    .replace('\0', " ")
                    .starts_with(&format!("sleep {marker}"))
            })
            .count()
    };
    let start = std::time::Instant::now();
    while running() == 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "the check never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    w.kill9();
    let start = std::time::Instant::now();
    while running() > 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "the check outlived the daemon"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
