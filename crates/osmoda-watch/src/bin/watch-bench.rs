//! Benchmarks for osmoda-watch (a separate command, never part of `cargo test`):
//!
//! * `rollback`: local backend, time from a failed health check (the switch entering
//!   `rolling-back`) to the previous generation being active again and the switch persisted
//!   `rolled-back` (revert commit included). Target ≤ 200 ms.
//! * `watchers`: 1,000 watchers with a 1 s interval (TCP checks against a loopback listener);
//!   CPU used by the whole process over the window, as % of one core. Target ≤ 5 %.
//!
//! Usage: `watch-bench [rollback [RUNS]] [watchers [N] [SECS]]` (default: both).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use osmoda_generations::{Actor, Tree};
use osmoda_watch::switch::{BeginRequest, SwitchState};
use osmoda_watch::{AppState, BackendKind, Options};
use serde_json::json;

const BASE: &str = "{ ... }:\n{\n  services.osmoda = {\n    enable = true;\n    watch.safeSwitch = { ttlSecs = 1; healthChecks = [ ]; };\n  };\n}\n";

fn repo_dir(rel: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn options(dir: &Path, config: std::path::PathBuf) -> Options {
    Options {
        config,
        state_dir: dir.join("state"),
        agentd_socket: dir.join("no-agentd.sock"),
        backend: BackendKind::Local,
        config_tree: dir.join("tree"),
        etc_dir: dir.join("etc"),
        lib_dir: repo_dir("lib"),
        host: "bench".into(),
        probe_interval: Duration::from_millis(100),
        retry_delay: Duration::ZERO,
        pause: None,
        masks: Vec::new(),
    }
}

fn actor() -> Actor {
    Actor::new("bench", "bench@localhost")
}

fn init_tree(dir: &Path) -> Result<Tree> {
    let tree_dir = dir.join("tree");
    let tree = Tree::init(&tree_dir, &repo_dir("generations"), &actor())?;
    std::fs::write(tree_dir.join("osmoda.nix"), BASE)?;
    tree.commit_worktree(&actor(), "bench base", None)?;
    Ok(tree)
}

fn ms(a: &str, b: &str) -> Result<f64> {
    let f = &time::format_description::well_known::Rfc3339;
    let a = time::OffsetDateTime::parse(a, f)?;
    let b = time::OffsetDateTime::parse(b, f)?;
    Ok((b - a).as_seconds_f64() * 1000.0)
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

async fn rollback(runs: usize) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let tree = init_tree(dir.path())?;
    let st = AppState::open(options(
        dir.path(),
        dir.path().join("etc/osmoda/watch.json"),
    ))
    .await?;
    let first = st
        .engine
        .begin(BeginRequest {
            ttl_secs: Some(0),
            ..Default::default()
        })
        .await?;
    if st.engine.wait(first.id).await?.state != SwitchState::Committed {
        bail!("the first deploy did not commit");
    }
    let failing: osmoda_config::HealthCheck =
        serde_json::from_value(json!({"type": "command", "command": ["false"]}))?;
    let (mut to_active, mut total) = (Vec::new(), Vec::new());
    for i in 0..runs {
        std::fs::write(tree.dir().join("osmoda.nix"), BASE.replace("enable = true;", &format!("enable = true;\n    routines.r{i} = {{ trigger = {{ type = \"interval\"; seconds = 60; }}; action = {{ type = \"command\"; command = [ \"true\" ]; }}; }};")))?;
        let rev = tree
            .commit_worktree(&actor(), &format!("bench {i}"), None)?
            .rev;
        let s = st
            .engine
            .begin(BeginRequest {
                generation: Some(rev),
                ttl_secs: Some(5),
                health_checks: vec![failing.clone()],
                ..Default::default()
            })
            .await?;
        let done = st.engine.wait(s.id).await?;
        if done.state != SwitchState::RolledBack {
            bail!("switch {} ended {:?}", done.id, done.state);
        }
        let at = |state: SwitchState| {
            done.history
                .iter()
                .find(|t| t.state == state)
                .map(|t| t.at.clone())
                .context("missing transition")
        };
        let (probing, rolling, rolled) = (
            at(SwitchState::Probing)?,
            at(SwitchState::RollingBack)?,
            at(SwitchState::RolledBack)?,
        );
        to_active.push(ms(&rolling, &rolled)?);
        total.push(ms(&probing, &rolled)?);
    }
    println!(
        "rollback (local backend, {runs} runs): failed check -> previous generation active + rolled-back persisted: p50 {:.1} ms, p95 {:.1} ms, max {:.1} ms (target <= 200 ms); probing start -> rolled-back: p50 {:.1} ms",
        pct(&mut to_active.clone(), 0.5), pct(&mut to_active.clone(), 0.95), pct(&mut to_active, 1.0), pct(&mut total, 0.5)
    );
    Ok(())
}

fn cpu_split() -> Result<(f64, f64)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = stat.rsplit_once(") ").context("stat format")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    Ok((f[11].parse::<f64>()? / 100.0, f[12].parse::<f64>()? / 100.0))
}

fn cpu_secs() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = stat.rsplit_once(") ").context("stat format")?.1;
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>()? + f[12].parse::<f64>()?;
    Ok(ticks / 100.0)
}

async fn watchers(n: usize, secs: u64) -> Result<()> {
    let dir = tempfile::tempdir()?;
    init_tree(dir.path())?;
    // The loopback server runs in a child process so only osmoda-watch's own CPU is measured.
    let mut server = std::process::Command::new(std::env::current_exe()?)
        .arg("listen")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(server.stdout.take().context("server stdout")?),
        &mut line,
    )?;
    let port: u16 = line.trim().parse().context("server port")?;
    let mut ws = serde_json::Map::new();
    for i in 0..n {
        ws.insert(format!("w{i}"), json!({"check": {"type": "tcp", "host": "127.0.0.1", "port": port}, "interval_secs": 1, "actions": ["notify"]}));
    }
    let cfg = json!({"watchers": ws, "safe_switch": {"ttl_secs": 1, "health_checks": []}});
    let cfg_path = dir.path().join("watch.json");
    std::fs::write(&cfg_path, cfg.to_string())?;
    let st = AppState::open(options(dir.path(), cfg_path)).await?;
    anyhow::ensure!(
        st.watchers.count() == n,
        "{} watchers running",
        st.watchers.count()
    );
    tokio::time::sleep(Duration::from_secs(2)).await; // let the first ticks spread out
    let (c0, s0, t0) = (cpu_secs()?, cpu_split()?, Instant::now());
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let (c1, s1, el) = (cpu_secs()?, cpu_split()?, t0.elapsed().as_secs_f64());
    println!("  user {:.2} s, system {:.2} s", s1.0 - s0.0, s1.1 - s0.1);
    let failing = st
        .watchers
        .list(None, usize::MAX)
        .iter()
        .filter(|w| w.status.health != "ok")
        .count();
    println!(
        "watchers: {n} x 1 s tcp checks for {el:.1} s: {:.2} % of one core (target <= 5 %), {failing} not ok",
        (c1 - c0) / el * 100.0
    );
    st.watchers.stop();
    let _ = server.kill();
    let _ = server.wait();
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let num = |i: usize, d: u64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    match args.first().map(String::as_str) {
        Some("listen") => {
            let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
            println!("{}", listener.local_addr()?.port());
            for s in listener.incoming() {
                drop(s);
            }
            Ok(())
        }
        Some("rollback") => rollback(num(1, 20) as usize).await,
        Some("watchers") => watchers(num(1, 1000) as usize, num(2, 10)).await,
        None => {
            rollback(20).await?;
            watchers(1000, 10).await
        }
        Some(other) => bail!("unknown benchmark {other:?}; use rollback or watchers"),
    }
}
