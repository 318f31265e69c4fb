//! Shared helpers for agentd's integration tests: real daemons on Unix sockets in temp dirs.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// An in-process agentd serving on sockets in a temp dir.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub approval_socket: PathBuf,
    pub state: Arc<agentd::AppState>,
    trigger: Option<agentd::Trigger>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Daemon {
    pub async fn start() -> Daemon {
        Self::start_with(agentd::Settings::default()).await
    }

    pub async fn start_with(settings: agentd::Settings) -> Daemon {
        Self::start_full(settings, false).await
    }

    /// Start with a configuration tree at `<dir>/tree`, created from the repo's template.
    pub async fn start_with_tree() -> Daemon {
        Self::start_full(agentd::Settings::default(), true).await
    }

    /// Start with a configuration tree (as [`Daemon::start_with_tree`]) and `settings`.
    pub async fn start_with_tree_and(settings: agentd::Settings) -> Daemon {
        Self::start_full(settings, true).await
    }

    pub fn tree_dir(&self) -> PathBuf {
        self.dir.path().join("tree")
    }

    async fn start_full(settings: agentd::Settings, with_tree: bool) -> Daemon {
        let dir = tempfile::tempdir().expect("tempdir");
        let tree = dir.path().join("tree");
        if with_tree {
            let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../generations");
            let actor = osmoda_generations::Actor::new("Test Person", "test@example.org");
            osmoda_generations::Tree::init(&tree, &template, &actor).expect("init tree");
        }
        let tree = with_tree.then_some(tree);
        Self::serve_in(dir, settings, tree.as_deref())
    }

    /// As [`Daemon::start`], with the state at `<dir>/osmoda/agentd`: the module's
    /// `<stateDir>/<daemon>` layout, beside the other daemons' state dirs.
    pub async fn start_in_state_root() -> Daemon {
        Self::start_in_state_root_under(&std::env::temp_dir()).await
    }

    /// As [`Daemon::start_in_state_root`], in a temp dir under `parent` (`/var/tmp` for a
    /// state commands can name: they get a fresh `/tmp`).
    pub async fn start_in_state_root_under(parent: &Path) -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("osmoda-")
            .tempdir_in(parent)
            .expect("tempdir");
        let state = dir.path().join("osmoda/agentd");
        Self::serve_at(dir, &state, agentd::Settings::default(), None)
    }

    /// Open the state under `dir` and serve it on `<dir>/agentd.sock` and `<dir>/approval.sock`.
    fn serve_in(dir: tempfile::TempDir, settings: agentd::Settings, tree: Option<&Path>) -> Daemon {
        let state = dir.path().join("state");
        Self::serve_at(dir, &state, settings, tree)
    }

    fn serve_at(
        dir: tempfile::TempDir,
        state: &Path,
        settings: agentd::Settings,
        tree: Option<&Path>,
    ) -> Daemon {
        let socket = dir.path().join("agentd.sock");
        let approval_socket = dir.path().join("approval.sock");
        let state =
            agentd::AppState::open(state.to_path_buf(), settings, tree).expect("open state");
        let agent = UnixListener::bind(&socket).expect("bind");
        let human = UnixListener::bind(&approval_socket).expect("bind");
        let (trigger, shutdown) = agentd::shutdown_channel();
        let task = tokio::spawn(agentd::serve(agent, human, state.clone(), shutdown));
        Daemon {
            dir,
            socket,
            approval_socket,
            state,
            trigger: Some(trigger),
            task: Some(task),
        }
    }

    /// Stop serving, drop all state, and start again on the same directory.
    pub async fn restart(mut self) -> Daemon {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("serve");
        }
        let Daemon {
            dir,
            socket,
            approval_socket,
            state,
            ..
        } = self;
        std::fs::remove_file(&socket).expect("rm socket");
        std::fs::remove_file(&approval_socket).expect("rm socket");
        let tree = state.config_tree.as_ref().map(|t| t.dir().to_path_buf());
        drop(state);
        Self::serve_in(dir, agentd::Settings::default(), tree.as_deref())
    }

    pub fn agent(&self) -> osmoda_client::Client {
        osmoda_client::Client::new(&self.socket)
    }

    pub fn human(&self) -> osmoda_client::Client {
        osmoda_client::Client::new(&self.approval_socket)
    }

    pub async fn stop(mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("serve");
        }
    }
}

/// Run the real git CLI in `dir` and return its stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Send raw bytes as an HTTP request and return (status, body as JSON or Null).
pub async fn raw(socket: &Path, request: &[u8]) -> (u16, serde_json::Value) {
    let mut s = UnixStream::connect(socket).await.expect("connect");
    // The server may answer (413) and close before it has read an oversized body.
    let _ = s.write_all(request).await;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf).await;
    let text = String::from_utf8_lossy(&buf);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .expect("status line");
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (
        status,
        serde_json::from_str(body).unwrap_or(serde_json::Value::Null),
    )
}

/// A POST with an arbitrary body and content type, connection closed after.
pub fn post_bytes(path: &str, content_type: &str, body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: agentd\r\nConnection: close\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

/// The real agentd binary, started as a child process.
pub struct Process {
    pub child: Child,
    pub socket: PathBuf,
}

impl Process {
    /// Start `agentd` with its state in `dir` and wait until it logs that it is ready.
    pub fn spawn(dir: &Path) -> Process {
        Self::spawn_with(dir, &[])
    }

    /// As [`Process::spawn`], with extra command-line arguments.
    pub fn spawn_with(dir: &Path, extra: &[&std::ffi::OsStr]) -> Process {
        Self::spawn_full(dir, &dir.join("approval.sock"), extra)
    }

    /// As [`Process::spawn_with`], with the approval socket at `approval`.
    pub fn spawn_full(dir: &Path, approval: &Path, extra: &[&std::ffi::OsStr]) -> Process {
        let socket = dir.join("agentd.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentd"))
            .args(extra)
            .arg("--socket")
            .arg(&socket)
            .arg("--approval-socket")
            .arg(approval)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--config")
            .arg(dir.join("absent.json"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn agentd");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("agentd ready") => break,
                Some(Ok(_)) => continue,
                other => panic!("agentd exited before it was ready: {other:?}"),
            }
        }
        // Keep draining stdout so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Process { child, socket }
    }

    pub fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const SHORT: Duration = Duration::from_millis(50);

/// Requests that must succeed: panic with the status and body otherwise, return the JSON.
#[allow(async_fn_in_trait)]
pub trait ClientExt {
    async fn get_ok(&self, path: &str) -> serde_json::Value;
    async fn post_ok(&self, path: &str, body: &serde_json::Value) -> serde_json::Value;
}

impl ClientExt for osmoda_client::Client {
    async fn get_ok(&self, path: &str) -> serde_json::Value {
        self.get(path).await.expect("get").ok_json().expect("200")
    }

    async fn post_ok(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        self.post(path, body)
            .await
            .expect("post")
            .ok_json()
            .expect("200")
    }
}
