//! agentctl follows the pages of osmoda-watch's lists: 2,500 watchers (three pages of
//! `/watcher/list`) all appear in `agentctl watchers list`.

mod common;

use std::path::Path;

use serde_json::json;
use tokio::net::UnixListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_list_follows_every_page() {
    let env = common::start().await;
    let n = 2500;
    let dir = env.dir.path();
    let mut ws = serde_json::Map::new();
    for i in 0..n {
        ws.insert(
            format!("w{i:04}"),
            json!({"check": {"type": "disk", "path": "/", "min_free_percent": 0},
                   "interval_secs": 3600, "actions": ["notify"]}),
        );
    }
    let cfg = dir.join("watch.json");
    std::fs::write(
        &cfg,
        json!({"watchers": ws, "safe_switch": {"ttl_secs": 1, "health_checks": []}}).to_string(),
    )
    .expect("write watch.json");
    let opts = osmoda_watch::Options {
        config: cfg,
        state_dir: dir.join("watch-state"),
        agentd_socket: env.sock(),
        backend: osmoda_watch::BackendKind::Local,
        config_tree: env.tree(),
        etc_dir: dir.join("etc"),
        lib_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lib"),
        host: "test".into(),
        probe_interval: std::time::Duration::from_millis(100),
        retry_delay: std::time::Duration::from_millis(50),
        pause: None,
        masks: Vec::new(),
    };
    let state = osmoda_watch::AppState::open(opts)
        .await
        .expect("watch state");
    let socket = dir.join("watch.sock");
    let listener = UnixListener::bind(&socket).expect("bind");
    let (trigger, shutdown) = osmoda_watch::shutdown::channel();
    tokio::spawn(osmoda_watch::serve(listener, state, shutdown));

    let mut c = env.command();
    c.env("OSMODA_WATCH_SOCKET", &socket)
        .args(["--json", "watchers", "list"]);
    let out = tokio::task::spawn_blocking(move || c.output().expect("run agentctl"))
        .await
        .expect("join");
    assert!(out.status.success(), "{}", common::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let names: Vec<&str> = v
        .as_array()
        .expect("array")
        .iter()
        .map(|w| w["name"].as_str().expect("name"))
        .collect();
    let want: Vec<String> = (0..n).map(|i| format!("w{i:04}")).collect();
    assert_eq!(names, want);

    // The table has a header and one line per watcher.
    let mut c = env.command();
    c.env("OSMODA_WATCH_SOCKET", &socket)
        .args(["watchers", "list"]);
    let out = tokio::task::spawn_blocking(move || c.output().expect("run agentctl"))
        .await
        .expect("join");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), n + 1);
    trigger.fire();
}
