//! agentctl against a real agentd on temp sockets: readable output, --json, exit codes.

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{json, Value};
use tokio::net::UnixListener;

struct Env {
    dir: tempfile::TempDir,
    _trigger: agentd::Trigger,
}

impl Env {
    fn sock(&self) -> PathBuf {
        self.dir.path().join("agentd.sock")
    }
    fn approval(&self) -> PathBuf {
        self.dir.path().join("approval.sock")
    }
    fn tree(&self) -> PathBuf {
        self.dir.path().join("tree")
    }
    async fn ctl(&self, args: &[&str]) -> Output {
        let (sock, approval) = (self.sock(), self.approval());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_agentctl"))
                .arg("--socket")
                .arg(sock)
                .arg("--approval-socket")
                .arg(approval)
                .args(args)
                .output()
                .expect("run agentctl")
        })
        .await
        .expect("join")
    }
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Start agentd in-process with a config tree created by `agentctl config init`.
async fn start() -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    let init = std::process::Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .args(["config", "init"])
        .arg(&tree)
        .output()
        .expect("init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    assert!(
        stdout(&init).contains("Initial generation"),
        "{}",
        stdout(&init)
    );
    let state = agentd::AppState::open(
        dir.path().join("state"),
        agentd::Settings::default(),
        Some(&tree),
    )
    .expect("state");
    let a = UnixListener::bind(dir.path().join("agentd.sock")).expect("bind");
    let h = UnixListener::bind(dir.path().join("approval.sock")).expect("bind");
    let (trigger, shutdown) = agentd::shutdown_channel();
    tokio::spawn(agentd::serve(a, h, state, shutdown));
    Env {
        dir,
        _trigger: trigger,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_events_and_json_output() {
    let env = start().await;
    let o = env.ctl(&["health"]).await;
    assert!(o.status.success());
    assert!(stdout(&o).contains("uptime"), "{}", stdout(&o));
    let o = env.ctl(&["--json", "health"]).await;
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(v["ram"]["total_bytes"].as_u64().expect("ram") > 0);

    env.ctl(&[
        "config",
        "set",
        "services.osmoda.watch.enable",
        "true",
        "--reason",
        "enable watch",
    ])
    .await;
    let o = env.ctl(&["events", "--type", "config.*"]).await;
    let table = stdout(&o);
    assert!(table.starts_with("    ID  TIME"), "{table}");
    assert!(
        table.contains("config.requested") && table.contains("config.committed"),
        "{table}"
    );
    let o = env.ctl(&["--json", "events", "--limit", "1"]).await;
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v[0]["type"], "config.committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_round_trip_and_refusals_exit_non_zero() {
    let env = start().await;
    let o = env
        .ctl(&["config", "set", "services.osmoda.watch.watchers.web", r#"{"check":{"type":"tcp","host":"127.0.0.1","port":80},"intervalSecs":10,"actions":["notify"]}"#, "--reason", "watch web"])
        .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("generation "), "{}", stdout(&o));
    let o = env
        .ctl(&[
            "config",
            "get",
            "services.osmoda.watch.watchers.web.intervalSecs",
        ])
        .await;
    assert_eq!(stdout(&o).trim(), "10");
    let o = env
        .ctl(&[
            "config",
            "set",
            "environment.systemPackages",
            "--nix",
            "[ pkgs.htop ]",
            "--file",
            "configuration.nix",
            "--reason",
            "htop",
        ])
        .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(env.tree().join("configuration.nix")).expect("read");
    assert!(text.contains("pkgs.htop"));
    let o = env.ctl(&["config", "log"]).await;
    let log = stdout(&o);
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(log.lines().next().expect("line").contains("htop"));

    // Refusals: non-zero exit, the reason on stderr, nothing committed.
    for args in [
        vec![
            "config",
            "set",
            "services.osmoda.enable",
            "not-json",
            "--reason",
            "x",
        ],
        vec![
            "config",
            "set",
            "services.osmoda.enable",
            "--nix",
            "1 +",
            "--reason",
            "x",
        ],
        vec![
            "config",
            "unset",
            "services.osmoda",
            "--reason",
            "drop it all",
        ],
        vec!["config", "show", "0000000000000000000000000000000000000000"],
    ] {
        let o = env.ctl(&args).await;
        assert!(!o.status.success(), "{args:?} should fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.starts_with("agentctl: ") && err.len() > 20,
            "{args:?}: {err}"
        );
    }
    let o = env.ctl(&["config", "log"]).await;
    assert_eq!(stdout(&o).lines().count(), 3);
    let o = env
        .ctl(&["config", "init", env.tree().to_str().expect("utf8")])
        .await;
    assert!(!o.status.success(), "init refuses a non-empty directory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_decided_from_agentctl() {
    let env = start().await;
    let agent = osmoda_client::Client::new(env.sock());
    let t = agent
        .post(
            "/approval/request",
            &json!({"operation": {"op": "wallet.delete", "id": "w1"}, "detail": "cleanup"}),
        )
        .await
        .expect("post")
        .ok_json()
        .expect("200");
    let id = t["id"].as_str().expect("id");
    let o = env.ctl(&["approvals", "list"]).await;
    assert!(
        stdout(&o).contains(id) && stdout(&o).contains("pending"),
        "{}",
        stdout(&o)
    );
    let o = env
        .ctl(&["approvals", "approve", id, "--reason", "fine"])
        .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("approved"));
    let o = env.ctl(&["approvals", "deny", id]).await;
    assert!(
        !o.status.success(),
        "a decided ticket cannot be decided again"
    );
}

fn verify(db: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .args(["verify-ledger", "--db"])
        .arg(db)
        .output()
        .expect("run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ledger_reads_the_file_and_names_the_first_bad_event() {
    let env = start().await;
    let agent = osmoda_client::Client::new(env.sock());
    for i in 0..5 {
        agent
            .post(
                "/events/append",
                &json!({"type": "t", "daemon": "test", "payload": {"i": i}}),
            )
            .await
            .expect("post")
            .ok_json()
            .expect("200");
    }
    let db = env.dir.path().join("state/ledger.db");
    let o = verify(&db);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("5 events verified"), "{}", stdout(&o));
    // Tamper with event 3's payload behind agentd's back.
    let conn = rusqlite::Connection::open(&db).expect("open");
    assert_eq!(
        conn.execute("UPDATE events SET payload = '{\"i\":99}' WHERE id = 3", [])
            .expect("tamper"),
        1
    );
    let o = verify(&db);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("event 3"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = verify(&env.dir.path().join("missing.db"));
    assert!(!o.status.success());
}

/// osmoda-watch (local backend) in-process beside the agentd of `env`.
async fn start_watch(env: &Env) -> PathBuf {
    let socket = env.dir.path().join("watch.sock");
    let opts = osmoda_watch::Options {
        config: env.dir.path().join("etc/osmoda/watch.json"),
        state_dir: env.dir.path().join("watch-state"),
        agentd_socket: env.sock(),
        backend: osmoda_watch::BackendKind::Local,
        config_tree: env.tree(),
        etc_dir: env.dir.path().join("etc"),
        lib_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lib"),
        host: "test".into(),
        probe_interval: std::time::Duration::from_millis(100),
        retry_delay: std::time::Duration::from_millis(50),
        pause: None,
    };
    let state = osmoda_watch::AppState::open(opts)
        .await
        .expect("watch state");
    let listener = UnixListener::bind(&socket).expect("bind");
    let (trigger, shutdown) = osmoda_watch::shutdown::channel();
    std::mem::forget(trigger); // lives as long as the test process
    tokio::spawn(osmoda_watch::serve(listener, state, shutdown));
    socket
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_and_watchers_through_agentctl() {
    if std::process::Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_err()
    {
        println!("skipped: nix-instantiate not installed (the local backend renders with lib/)");
        return;
    }
    let env = start().await;
    let watch = start_watch(&env).await;
    let ctl = |args: Vec<String>| {
        let watch = watch.clone();
        let env = &env;
        async move {
            let mut all = vec![
                "--watch-socket".to_string(),
                watch.to_string_lossy().into_owned(),
            ];
            all.extend(args);
            let refs: Vec<&str> = all.iter().map(String::as_str).collect();
            env.ctl(&refs).await
        }
    };
    let args = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let o = ctl(args(&[
        "config",
        "unset",
        "services.osmoda.watch.watchers.sshd",
        "--reason",
        "no systemd here",
    ]))
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = ctl(args(&[
        "config",
        "set",
        "services.osmoda.watch.watchers.alive",
        r#"{"check":{"type":"agentd"},"intervalSecs":30,"actions":["notify"]}"#,
        "--reason",
        "watch agentd",
    ]))
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let o = ctl(args(&[
        "--json",
        "switch",
        "begin",
        "--ttl",
        "1",
        "--check",
        r#"{"type":"agentd"}"#,
        "--plan",
        "add alive",
    ]))
    .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    let id = v["id"].to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let o = ctl(args(&["switch", "status", &id])).await;
        let line = stdout(&o);
        if line.contains("committed") && !line.contains("committing") {
            break;
        }
        assert!(
            !line.contains("rolled-back") && !line.contains("failed"),
            "{line}"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "switch did not finish: {line}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let o = ctl(args(&["switch", "history"])).await;
    assert!(
        stdout(&o).contains(&format!("switch {id}")),
        "{}",
        stdout(&o)
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let table = stdout(&ctl(args(&["watchers", "list"])).await);
        assert!(table.starts_with("NAME"), "{table}");
        if table
            .lines()
            .any(|l| l.starts_with("alive") && l.contains("agentd") && l.contains("ok:"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "watcher never ran: {table}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let o = ctl(args(&["switch", "status", "999"])).await;
    assert!(!o.status.success(), "unknown switch is an error");
}
