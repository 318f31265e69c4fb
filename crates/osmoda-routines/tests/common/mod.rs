//! Test harness: an in-process agentd and osmoda-routines on Unix sockets in a temp dir (real
//! SQLite ledger and history, real sandbox), restartable on the same state.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use osmoda_routines::scheduler::Clock;
use serde_json::Value;

pub struct Agentd {
    pub socket: PathBuf,
    pub state: Arc<agentd::AppState>,
    trigger: Option<agentd::Trigger>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Agentd {
    pub fn start(dir: &Path, tree: Option<&Path>) -> Agentd {
        Agentd::start_with(dir, tree, agentd::Settings::default())
    }

    /// As [`Agentd::start`], with `settings` (egress's config, proxy socket and binary).
    pub fn start_with(dir: &Path, tree: Option<&Path>, settings: agentd::Settings) -> Agentd {
        let socket = dir.join("agentd.sock");
        let admin = dir.join("osmoda-admin");
        std::fs::create_dir_all(&admin).unwrap();
        let state = agentd::AppState::open(dir.join("agentd"), settings, tree).unwrap();
        let _ = std::fs::remove_file(&socket);
        let _ = std::fs::remove_file(admin.join("approval.sock"));
        let agent = tokio::net::UnixListener::bind(&socket).unwrap();
        let human = tokio::net::UnixListener::bind(admin.join("approval.sock")).unwrap();
        let (trigger, shutdown) = agentd::shutdown_channel();
        let task = tokio::spawn(agentd::serve(agent, human, state.clone(), shutdown));
        Agentd {
            socket,
            state,
            trigger: Some(trigger),
            task,
        }
    }

    pub fn events(&self, kind_prefix: &str) -> Vec<osmoda_ledger::Event> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let q = osmoda_ledger::Query {
                kind: Some(format!("{kind_prefix}*")),
                after_id: Some(after),
                limit: Some(10_000),
                ..Default::default()
            };
            let batch = self.state.ledger.query(&q).unwrap();
            let Some(last) = batch.last() else { return out };
            after = last.id;
            out.extend(batch);
        }
    }

    pub fn client(&self) -> osmoda_client::Client {
        osmoda_client::Client::new(&self.socket)
    }

    pub async fn append(&self, kind: &str, payload: Value) -> i64 {
        let r = self
            .client()
            .post(
                "/events/append",
                &serde_json::json!({ "type": kind, "daemon": "test", "payload": payload }),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        r.body["id"].as_i64().unwrap()
    }

    /// Waits until the ledger holds at least `n` events of `kind` (delivery is asynchronous).
    pub async fn wait_events(&self, kind: &str, n: usize) -> Vec<osmoda_ledger::Event> {
        let start = Instant::now();
        loop {
            let evs = self.events(kind);
            if evs.len() >= n {
                return evs;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "only {} {kind} events after 120 s",
                evs.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Agentd {
    /// Like a process exit: every connection is cut (a long poll in flight included).
    fn drop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
        self.task.abort();
    }
}

/// A running osmoda-routines.
pub struct Routines {
    pub socket: PathBuf,
    pub state: Arc<osmoda_routines::AppState>,
    trigger: Option<osmoda_routines::shutdown::Trigger>,
    task: Option<tokio::task::JoinHandle<osmoda_routines::Result<()>>>,
}

pub fn options(dir: &Path, agentd: &Path) -> osmoda_routines::Options {
    osmoda_routines::Options {
        config: dir.join("routines.json"),
        state_dir: dir.join("state/routines"),
        agentd_socket: agentd.to_path_buf(),
        watch_socket: dir.join("watch.sock"),
        socket: dir.join("routines.sock"),
        masks: vec![dir.join("osmoda-admin"), dir.join("agentd")],
        clock: Clock::System,
        gateway_token: Some("test-token".into()),
        gateway_uid: None,
    }
}

impl Routines {
    pub async fn start(opts: osmoda_routines::Options) -> Routines {
        let socket = opts.socket.clone();
        let state = osmoda_routines::AppState::open(opts).await.unwrap();
        let listener = osmoda_daemon::bind_unix(&socket, 0o660).unwrap();
        let (trigger, shutdown) = osmoda_routines::shutdown::channel();
        let task = tokio::spawn(osmoda_routines::serve(listener, state.clone(), shutdown));
        Routines {
            socket,
            state,
            trigger: Some(trigger),
            task: Some(task),
        }
    }

    /// SIGTERM-like stop: the listener closes, running actions finish, state is dropped.
    pub async fn stop(mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
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

    /// Waits until run `id` has ended and returns it.
    pub async fn wait_run(&self, id: i64) -> osmoda_routines::history::Run {
        let start = Instant::now();
        loop {
            let runs = self
                .state
                .engine
                .history()
                .list(None, Some(id + 1), 1)
                .unwrap();
            if let Some(r) = runs.into_iter().find(|r| r.id == id) {
                if !["queued", "running"].contains(&r.status.as_str()) {
                    return r;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "run {id} did not end"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for Routines {
    fn drop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
    }
}

pub fn write_config(dir: &Path, routines: Value) {
    write_config_full(dir, serde_json::json!({ "routines": routines }));
}

pub fn write_config_full(dir: &Path, cfg: Value) {
    let tmp = dir.join("routines.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    std::fs::rename(tmp, dir.join("routines.json")).unwrap();
}

/// A scratch dir commands inside the boundary can see (outside `/tmp`, which they get
/// privately), traversable.
pub fn scratch() -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let root = if root.starts_with("/tmp") {
        Path::new("/var/tmp")
    } else {
        root
    };
    let dir = tempfile::tempdir_in(root).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// Waits until the daemon holds an event cursor (its subscription answered once).
pub async fn subscribed(r: &Routines) {
    let start = Instant::now();
    while r.state.engine.history().cursor().unwrap().is_none() {
        assert!(start.elapsed() < Duration::from_secs(30), "no subscription");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until every event routine has seen the ledger's tip, no run is queued or running,
/// and neither changed over two looks; returns every run.
pub async fn settle(r: &Routines, agentd: &Agentd) -> Vec<osmoda_routines::history::Run> {
    let start = Instant::now();
    let mut quiet = 0;
    let mut last = (0, 0);
    while quiet < 2 {
        let tip = agentd.events("").last().map_or(0, |e| e.id);
        let cursor = r.state.engine.history().cursor().unwrap().unwrap_or(0);
        let runs = r.state.engine.history().list(None, None, 1000).unwrap();
        let busy = runs
            .iter()
            .any(|x| ["queued", "running"].contains(&x.status.as_str()));
        if cursor >= tip && !busy && (tip, runs.len()) == last {
            quiet += 1;
        } else {
            quiet = 0;
        }
        last = (tip, runs.len());
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "still running after 60 s: {} runs, cursor {cursor}, tip {tip}",
            runs.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    r.state.engine.history().list(None, None, 1000).unwrap()
}

/// `osmoda.nix` for a tree whose switches commit after a 1 s probation with no default checks.
pub const QUICK_SWITCHES: &str = r#"{ ... }:

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

/// A config tree under `dir/tree` made from the starter with [`QUICK_SWITCHES`] committed.
pub fn quick_tree(dir: &Path) -> (PathBuf, osmoda_generations::Tree) {
    let tree_dir = dir.join("tree");
    let actor = osmoda_generations::Actor::new("Test Person", "test@example.org");
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../generations");
    let tree = osmoda_generations::Tree::init(&tree_dir, &template, &actor).unwrap();
    std::fs::write(tree_dir.join("osmoda.nix"), QUICK_SWITCHES).unwrap();
    tree.commit_worktree(&actor, "test base settings", None)
        .unwrap();
    (tree_dir, tree)
}

/// An in-process osmoda-watch (local backend) on `dir/watch.sock`, rendering into `dir/etc`.
pub struct Watch {
    pub socket: PathBuf,
    _trigger: osmoda_watch::shutdown::Trigger,
}

impl Watch {
    pub async fn start(dir: &Path, agentd: &Path, tree: &Path) -> Watch {
        let etc = dir.join("etc");
        let opts = osmoda_watch::Options {
            config: etc.join("osmoda/watch.json"),
            state_dir: dir.join("watch"),
            agentd_socket: agentd.to_path_buf(),
            backend: osmoda_watch::BackendKind::Local,
            config_tree: tree.to_path_buf(),
            etc_dir: etc,
            lib_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lib"),
            host: String::new(),
            probe_interval: Duration::from_millis(100),
            retry_delay: Duration::from_millis(100),
            pause: None,
            masks: vec![dir.join("osmoda-admin")],
        };
        let state = osmoda_watch::AppState::open(opts).await.unwrap();
        let socket = dir.join("watch.sock");
        let listener = osmoda_daemon::bind_unix(&socket, 0o660).unwrap();
        let (trigger, shutdown) = osmoda_watch::shutdown::channel();
        tokio::spawn(osmoda_watch::serve(listener, state, shutdown));
        Watch {
            socket,
            _trigger: trigger,
        }
    }

    pub fn client(&self) -> osmoda_client::Client {
        osmoda_client::Client::new(&self.socket)
    }

    /// Begins a switch with `body` and waits until it ends; returns its final state.
    pub async fn switch(&self, body: Value) -> Value {
        let s = self.client().post("/switch/begin", &body).await.unwrap();
        assert_eq!(s.status, 200, "{}", s.body);
        self.wait(&s.body["id"]).await
    }

    /// Waits until switch `id` ends.
    pub async fn wait(&self, id: &Value) -> Value {
        let start = Instant::now();
        loop {
            let s = self
                .client()
                .get(&format!("/switch/status/{id}"))
                .await
                .unwrap()
                .body;
            if ["committed", "rolled-back", "failed"].contains(&s["state"].as_str().unwrap_or("")) {
                return s;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "switch {id}: {s}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Writes a webhook secret file readable only by its owner (the daemon refuses one every user
/// can read).
pub fn write_secret(path: &Path, text: impl AsRef<[u8]>) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}
