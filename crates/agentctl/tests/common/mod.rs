//! Test harness: a real agentd (and osmoda-watch with the local backend) in-process on temp
//! sockets, and the real agentctl binary talking to them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tokio::net::UnixListener;

/// Daemons in a temp dir; dropped at the end of the test.
pub struct Env {
    pub dir: tempfile::TempDir,
    _trigger: agentd::Trigger,
    watch: Option<PathBuf>,
}

impl Env {
    pub fn sock(&self) -> PathBuf {
        self.dir.path().join("agentd.sock")
    }
    pub fn approval(&self) -> PathBuf {
        self.dir.path().join("approval.sock")
    }
    pub fn tree(&self) -> PathBuf {
        self.dir.path().join("tree")
    }
    pub fn watch(&self) -> PathBuf {
        self.watch
            .clone()
            .unwrap_or_else(|| self.dir.path().join("no-watch.sock"))
    }

    /// agentctl with this environment's sockets.
    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_agentctl"));
        c.env("OSMODA_AGENTD_SOCKET", self.sock())
            .env("OSMODA_APPROVAL_SOCKET", self.approval())
            .env("OSMODA_WATCH_SOCKET", self.watch());
        c
    }

    /// Runs agentctl with `args` to completion.
    pub async fn ctl(&self, args: &[&str]) -> Output {
        let mut c = self.command();
        c.args(args);
        tokio::task::spawn_blocking(move || c.output().expect("run agentctl"))
            .await
            .expect("join")
    }

    /// Runs agentctl; panics with its stderr unless it exits with `code`.
    pub async fn ctl_code(&self, code: i32, args: &[&str]) -> String {
        let o = self.ctl(args).await;
        assert_eq!(
            o.status.code(),
            Some(code),
            "agentctl {args:?}\nstdout: {}\nstderr: {}",
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Start agentd in-process with a config tree created by `agentctl config init`.
pub async fn start() -> Env {
    start_with(agentd::Settings::default()).await
}

/// [`start`] with these agentd settings.
pub async fn start_with(settings: agentd::Settings) -> Env {
    let dir = tempfile::tempdir().expect("tempdir");
    let tree = dir.path().join("tree");
    let init = Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .args(["config", "init"])
        .arg(&tree)
        .output()
        .expect("init");
    assert!(init.status.success(), "{}", stderr(&init));
    assert!(
        stdout(&init).contains("Initial generation"),
        "{}",
        stdout(&init)
    );
    let state =
        agentd::AppState::open(dir.path().join("state"), settings, Some(&tree)).expect("state");
    let a = UnixListener::bind(dir.path().join("agentd.sock")).expect("bind");
    let h = UnixListener::bind(dir.path().join("approval.sock")).expect("bind");
    let (trigger, shutdown) = agentd::shutdown_channel();
    tokio::spawn(agentd::serve(a, h, state, shutdown));
    Env {
        dir,
        _trigger: trigger,
        watch: None,
    }
}

/// True when `nix-instantiate` runs (the local backend renders with lib/); otherwise prints
/// why the caller skips.
pub fn nix_available(test: &str) -> bool {
    let ok = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        println!(
            "skipped: {test}: nix-instantiate not installed (the local backend renders with lib/)"
        );
    }
    ok
}

/// agentd plus osmoda-watch (local backend) in-process. The template's sshd watcher is removed
/// first (there is no systemd here, and a switch also probes every declared watcher's check),
/// and the default probation is 1 s once a first switch deployed it (to keep the suite fast).
pub async fn start_with_watch() -> Env {
    let mut env = start().await;
    env.ctl_code(
        0,
        &[
            "config",
            "unset",
            "services.osmoda.watch.watchers.sshd",
            "--reason",
            "no systemd here",
        ],
    )
    .await;
    env.ctl_code(
        0,
        &[
            "config",
            "set",
            "services.osmoda.watch.safeSwitch.ttlSecs",
            "1",
            "--reason",
            "short probation for tests",
        ],
    )
    .await;
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
        masks: Vec::new(),
    };
    let state = osmoda_watch::AppState::open(opts)
        .await
        .expect("watch state");
    let listener = UnixListener::bind(&socket).expect("bind");
    let (trigger, shutdown) = osmoda_watch::shutdown::channel();
    std::mem::forget(trigger); // lives as long as the test process
    tokio::spawn(osmoda_watch::serve(listener, state, shutdown));
    env.watch = Some(socket);
    env
}

/// Waits until no switch is running (polls `switch history`).
pub async fn settle(env: &Env) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    loop {
        let out = env.ctl_code(0, &["--json", "switch", "history"]).await;
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        let running = v.as_array().into_iter().flatten().any(|s| {
            !matches!(
                s["state"].as_str(),
                Some("committed" | "rolled-back" | "failed")
            )
        });
        if !running {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "a switch never ended: {out}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The `id` of a switch printed with `--json`.
pub fn switch_id(json_out: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json_out).expect("json");
    v["id"].to_string()
}

/// `--ttl` of a switch a test expects to commit. A switch commits only after a whole round of
/// its checks finished inside the TTL (the TTL bounds everything, issue 11). On a loaded 2-core
/// machine one round of the default checks took over 1 s, and in CI (the bridge suite beside the
/// cargo tests) a 3 s TTL rolled back the default tree's switch; 8 s leaves room for a slow round.
pub const TTL: &str = "8";
