//! Test harness: a real git config tree, an in-process agentd on a temp socket, and the real
//! `osmoda-watch` binary (local backend) started as a child process with a systemd-style
//! readiness socket, so nothing sleeps to wait for startup or for a pause point.
#![allow(dead_code, clippy::unwrap_used)]

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use osmoda_generations::{Actor, Tree};
use serde_json::{json, Value};

/// Base osmoda.nix: short TTL, no default checks, no watchers.
pub const BASE: &str = r#"{ ... }:

{
  services.osmoda = {
    enable = true;
    watch.safeSwitch = {
      ttlSecs = 1;
      healthChecks = [ ];
    };
  };
}
"#;

/// osmoda.nix with one extra routine, so generation `i` differs from every other.
pub fn variant(i: usize) -> String {
    BASE.replace(
        "    enable = true;\n",
        &format!(
            "    enable = true;\n    routines.run{i} = {{\n      trigger = {{ type = \"interval\"; seconds = 60; }};\n      action = {{ type = \"command\"; command = [ \"true\" ]; }};\n    }};\n"
        ),
    )
}

pub struct Agentd {
    pub socket: PathBuf,
    pub state: Arc<agentd::AppState>,
    trigger: Option<agentd::Trigger>,
}

impl Agentd {
    pub async fn events(&self, kind_prefix: &str) -> Vec<osmoda_ledger::Event> {
        let q = osmoda_ledger::Query {
            kind: Some(format!("{kind_prefix}*")),
            limit: Some(10_000),
            ..Default::default()
        };
        self.state.ledger.query(&q).unwrap()
    }
}

impl Drop for Agentd {
    fn drop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
    }
}

pub struct Env {
    pub dir: tempfile::TempDir,
    pub tree_dir: PathBuf,
    pub etc_dir: PathBuf,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub tree: Tree,
    pub agentd: Agentd,
}

pub struct Watchd {
    child: Child,
    notify: UnixDatagram,
}

impl Env {
    pub async fn new() -> Env {
        // Outside /tmp (commands get a private one) and traversable, so a check sees what a
        // check on a real machine would, and only the boundary hides the approval path.
        let dir = tempfile::tempdir_in(outside_tmp()).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let admin = dir.path().join("osmoda-admin");
        std::fs::create_dir(&admin).unwrap();
        let tree_dir = dir.path().join("tree");
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../generations");
        let tree = Tree::init(&tree_dir, &template, &actor()).unwrap();
        std::fs::write(tree_dir.join("osmoda.nix"), BASE).unwrap();
        tree.commit_worktree(&actor(), "test base settings", None)
            .unwrap();
        let socket = dir.path().join("agentd.sock");
        let state = agentd::AppState::open(
            dir.path().join("agentd"),
            agentd::Settings::default(),
            Some(&tree_dir),
        )
        .unwrap();
        let agent = tokio::net::UnixListener::bind(&socket).unwrap();
        let human = tokio::net::UnixListener::bind(admin.join("approval.sock")).unwrap();
        let (trigger, shutdown) = agentd::shutdown_channel();
        tokio::spawn(agentd::serve(agent, human, state.clone(), shutdown));
        let agentd = Agentd {
            socket,
            state,
            trigger: Some(trigger),
        };
        Env {
            etc_dir: dir.path().join("etc"),
            state_dir: dir.path().join("watch"),
            socket: dir.path().join("watch.sock"),
            tree_dir,
            tree,
            agentd,
            dir,
        }
    }

    /// Commits new osmoda.nix content as a person would; returns the generation.
    pub fn commit(&self, text: &str, reason: &str) -> String {
        std::fs::write(self.tree_dir.join("osmoda.nix"), text).unwrap();
        self.tree
            .commit_worktree(&actor(), reason, None)
            .unwrap()
            .rev
    }

    /// Starts osmoda-watch (optionally paused in a state) and waits for READY=1.
    pub fn spawn(&self, pause: Option<&str>) -> Watchd {
        let notify_path = self.dir.path().join("notify.sock");
        let _ = std::fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        notify
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut cmd = self.command();
        cmd.env("NOTIFY_SOCKET", &notify_path);
        match pause {
            Some(p) => cmd.env("OSMODA_WATCH_PAUSE_IN", p),
            None => cmd.env_remove("OSMODA_WATCH_PAUSE_IN"),
        };
        let child = cmd.spawn().unwrap();
        let w = Watchd { child, notify };
        w.wait_for("READY=1");
        w
    }

    /// The real binary with this environment's flags (local backend), not started.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_osmoda-watch"));
        cmd.args(["--backend", "local", "--probe-interval-ms", "100"])
            .arg("--socket")
            .arg(&self.socket)
            .arg("--config")
            .arg(self.etc_dir.join("osmoda/watch.json"))
            .arg("--state-dir")
            .arg(&self.state_dir)
            .arg("--agentd-socket")
            .arg(&self.agentd.socket)
            .arg("--config-tree")
            .arg(&self.tree_dir)
            .arg("--etc-dir")
            .arg(&self.etc_dir)
            .arg("--mask")
            .arg(self.approval_dir())
            .env("RUST_LOG", "error")
            .stdin(Stdio::null());
        cmd
    }

    /// The approval socket's directory (masked from commands, as `/run/osmoda-admin` is).
    pub fn approval_dir(&self) -> PathBuf {
        self.dir.path().join("osmoda-admin")
    }

    /// agentd's human-only approval socket.
    pub fn approval_socket(&self) -> PathBuf {
        self.approval_dir().join("approval.sock")
    }

    pub fn client(&self) -> osmoda_client::Client {
        osmoda_client::Client::new(&self.socket)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client().get(path).await.unwrap();
        (r.status, r.body)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.client().post(path, &body).await.unwrap();
        (r.status, r.body)
    }

    pub async fn begin(&self, body: Value) -> Value {
        let (status, v) = self.post("/switch/begin", body).await;
        assert_eq!(status, 200, "{v}");
        v
    }

    /// Polls the switch until it is terminal (the API offers no push channel).
    pub async fn wait_terminal(&self, id: u64) -> Value {
        let start = Instant::now();
        loop {
            let (status, s) = self.get(&format!("/switch/status/{id}")).await;
            assert_eq!(status, 200, "{s}");
            if ["committed", "rolled-back", "failed"].contains(&s["state"].as_str().unwrap_or("")) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "switch {id} did not finish: {s}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until agentd's ledger holds at least `n` events of `kind` (delivery is asynchronous).
    pub async fn wait_events(&self, kind: &str, n: usize) -> Vec<osmoda_ledger::Event> {
        let start = Instant::now();
        loop {
            let evs = self.agentd.events(kind).await;
            if evs.len() >= n {
                return evs;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "only {} {kind} events: {evs:?}",
                evs.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn active_link(&self) -> Option<PathBuf> {
        std::fs::read_link(self.etc_dir.join("osmoda")).ok()
    }

    /// The invariant every switch must end in: committed with the new generation active and
    /// tagged, or rolled back with the previous system active and the tree reverted.
    pub fn assert_consistent(&self, s: &Value) {
        let state = s["state"].as_str().unwrap();
        let link = self.active_link().map(|p| p.to_string_lossy().into_owned());
        match state {
            "committed" => {
                assert_eq!(
                    link.as_deref(),
                    s["built"].as_str(),
                    "etc dir points at the new generation: {s}"
                );
                let meta: Value = serde_json::from_slice(
                    &std::fs::read(self.etc_dir.join("osmoda/generation.json")).unwrap(),
                )
                .unwrap();
                assert_eq!(meta["rev"], s["generation"]);
                let deployed = self.tree.last_deployed().unwrap().unwrap();
                assert_eq!(json!(deployed.rev), s["generation"], "tagged deployed");
                assert!(self.etc_dir.join("osmoda/watch.json").is_file());
            }
            "rolled-back" => {
                assert_eq!(
                    link.as_deref(),
                    s["previous_system"].as_str(),
                    "etc dir back to the previous system: {s}"
                );
                if let Some(prev) = s["previous_generation"].as_str() {
                    let head = self.tree.head().unwrap();
                    assert_eq!(
                        self.tree.diff(prev, &head).unwrap(),
                        "",
                        "tree reverted to {prev}"
                    );
                    assert_eq!(
                        self.tree.last_deployed().unwrap().unwrap().rev,
                        prev,
                        "deployed tag unchanged"
                    );
                }
            }
            other => panic!("switch ended {other}: {s}"),
        }
    }
}

impl Watchd {
    /// Blocks until the daemon sends a notify datagram containing `want`.
    pub fn wait_for(&self, want: &str) {
        let mut buf = [0u8; 512];
        loop {
            let n = self
                .notify
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {want} from osmoda-watch: {e}"));
            if String::from_utf8_lossy(&buf[..n]).contains(want) {
                return;
            }
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "osmoda-watch exited with {status}");
    }
}

impl Drop for Watchd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn actor() -> Actor {
    Actor::new("Test Person", "test@example.org")
}

/// A scratch root that commands inside the boundary can see: the target dir's tmp, unless the
/// checkout itself lives under `/tmp` (commands get a private `/tmp`), then `/var/tmp`.
fn outside_tmp() -> &'static std::path::Path {
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    if root.starts_with("/tmp") {
        std::path::Path::new("/var/tmp")
    } else {
        root
    }
}
