//! Test harness: one "host" = an in-process agentd (real ledger, real git tree), osmoda-watch
//! (local backend: renders /etc/osmoda/mesh.json into the host's etc dir with the real Nix
//! evaluator) and osmoda-mesh on a Unix socket and a loopback TCP port, in a temp dir.
//! A mesh can be stopped and started again on the same state and config.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The longest one step on a socket, or on a task of the test's own, may take: a peer or
/// daemon that never answers fails the test with what it was waiting for instead of hanging
/// it. Requests to the daemons go through `osmoda_client`, whose own timeout is 30 s.
pub const STEP: Duration = Duration::from_secs(60);

/// Awaits `f` for at most [`STEP`]; panics naming `what` when it has not finished by then.
pub async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(STEP, f).await {
        Ok(v) => v,
        Err(_) => panic!("{what}: not done within {STEP:?}"),
    }
}

pub struct Host {
    pub name: String,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub tree: osmoda_generations::Tree,
    pub agentd: Arc<agentd::AppState>,
    pub agentd_socket: PathBuf,
    pub watch: osmoda_client::Client,
    pub mesh: Option<Mesh>,
    pub tuning: osmoda_mesh::Tuning,
    _agentd_trigger: agentd::Trigger,
    _watch_trigger: osmoda_watch::shutdown::Trigger,
}

pub struct Mesh {
    pub socket: PathBuf,
    pub state: Arc<osmoda_mesh::AppState>,
    trigger: Option<osmoda_mesh::shutdown::Trigger>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

fn base(port: u16) -> String {
    format!(
        r#"{{ ... }}:

{{
  services.osmoda = {{
    enable = true;
    mesh.listen = "127.0.0.1:{port}";
    watch.safeSwitch = {{
      ttlSecs = 1;
      healthChecks = [ ];
    }};
  }};
}}
"#
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Host {
    pub async fn start(name: &str, tuning: osmoda_mesh::Tuning) -> Host {
        let mut h = Host::start_without_mesh(name, tuning).await;
        h.start_mesh().await;
        h
    }

    /// agentd and osmoda-watch only: the test runs mesh (in process with
    /// [`Host::start_mesh`], or the real binary with [`MeshProcess::spawn`]).
    pub async fn start_without_mesh(name: &str, tuning: osmoda_mesh::Tuning) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let port = free_port();
        let tree_dir = d.join("tree");
        let actor = osmoda_generations::Actor::new("Test Person", "test@example.org");
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../generations");
        let tree = osmoda_generations::Tree::init(&tree_dir, &template, &actor).unwrap();
        std::fs::write(tree_dir.join("osmoda.nix"), base(port)).unwrap();
        tree.commit_worktree(&actor, "test base settings", None)
            .unwrap();

        let agentd_socket = d.join("agentd.sock");
        let admin = d.join("osmoda-admin");
        std::fs::create_dir_all(&admin).unwrap();
        let astate = agentd::AppState::open(
            d.join("agentd"),
            agentd::Settings::default(),
            Some(&tree_dir),
        )
        .unwrap();
        let agent = tokio::net::UnixListener::bind(&agentd_socket).unwrap();
        let human = tokio::net::UnixListener::bind(admin.join("approval.sock")).unwrap();
        let (atrigger, ashutdown) = agentd::shutdown_channel();
        tokio::spawn(agentd::serve(agent, human, astate.clone(), ashutdown));

        let etc = d.join("etc");
        let wopts = osmoda_watch::Options {
            config: etc.join("osmoda/watch.json"),
            state_dir: d.join("watch"),
            agentd_socket: agentd_socket.clone(),
            backend: osmoda_watch::BackendKind::Local,
            config_tree: tree_dir.clone(),
            etc_dir: etc.clone(),
            lib_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lib"),
            host: String::new(),
            probe_interval: Duration::from_millis(100),
            retry_delay: Duration::from_millis(100),
            pause: None,
            masks: vec![admin.clone()],
        };
        let wstate = osmoda_watch::AppState::open(wopts).await.unwrap();
        let wsock = d.join("watch.sock");
        let wl = osmoda_daemon::bind_unix(&wsock, 0o660).unwrap();
        let (wtrigger, wshutdown) = osmoda_watch::shutdown::channel();
        tokio::spawn(osmoda_watch::serve(wl, wstate, wshutdown));
        let watch = osmoda_client::Client::new(&wsock);
        // The first generation renders /etc/osmoda/mesh.json. Its TTL is given: until that
        // switch has rendered watch.json (ttlSecs = 1), watch probes for its built-in 60 s,
        // which made every host start wait a minute, idle.
        let s = watch
            .post(
                "/switch/begin",
                &json!({ "health_checks": [], "ttl_secs": 1 }),
            )
            .await
            .unwrap();
        assert_eq!(s.status, 200, "{}", s.body);
        assert_eq!(
            wait_switch(&watch, &s.body["id"]).await["state"],
            "committed"
        );

        Host {
            name: name.to_string(),
            dir,
            port,
            tree,
            agentd: astate,
            agentd_socket,
            watch,
            mesh: None,
            tuning,
            _agentd_trigger: atrigger,
            _watch_trigger: wtrigger,
        }
    }

    pub fn mesh_json(&self) -> PathBuf {
        self.dir.path().join("etc/osmoda/mesh.json")
    }

    pub async fn start_mesh(&mut self) {
        let d = self.dir.path();
        let opts = osmoda_mesh::Options {
            config: self.mesh_json(),
            state_dir: d.join("mesh"),
            agentd_socket: self.agentd_socket.clone(),
            watch_socket: d.join("watch.sock"),
            key_file: None,
            name: self.name.clone(),
            tuning: self.tuning.clone(),
        };
        let state = osmoda_mesh::AppState::open(opts).unwrap();
        let socket = d.join("mesh.sock");
        let listener = osmoda_daemon::bind_unix(&socket, 0o660).unwrap();
        let tcp = bind_retry(self.port).await;
        let (trigger, shutdown) = osmoda_mesh::shutdown::channel();
        let task = tokio::spawn(osmoda_mesh::serve(listener, tcp, state.clone(), shutdown));
        self.mesh = Some(Mesh {
            socket,
            state,
            trigger: Some(trigger),
            task: Some(task),
        });
    }

    /// SIGTERM-like: the listener and every link close; state stays on disk.
    pub async fn stop_mesh(&mut self) {
        if let Some(mut m) = self.mesh.take() {
            if let Some(t) = m.trigger.take() {
                t.fire();
            }
            if let Some(t) = m.task.take() {
                within(
                    &format!("{}: mesh to stop after its shutdown", self.name),
                    t,
                )
                .await
                .unwrap()
                .unwrap();
            }
        }
    }

    pub fn mesh(&self) -> &Mesh {
        self.mesh.as_ref().unwrap()
    }

    /// mesh's socket (in process or the real binary's).
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("mesh.sock")
    }

    pub fn client(&self) -> osmoda_client::Client {
        osmoda_client::Client::new(self.socket())
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client().get(path).await.unwrap();
        (r.status, r.body)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.client().post(path, &body).await.unwrap();
        (r.status, r.body)
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub async fn invite(&self, name: &str) -> String {
        let (s, v) = self.post("/invite/create", json!({ "name": name })).await;
        assert_eq!(s, 200, "{v}");
        v["invite_code"].as_str().unwrap().to_string()
    }

    /// Delivers the mesh's spooled events and returns agentd's `mesh.<kind>` payloads.
    pub async fn events(&self, kind: &str) -> Vec<Value> {
        if let Some(m) = &self.mesh {
            m.state.agentd.flush().await.unwrap();
        }
        let q = osmoda_ledger::Query {
            kind: Some(format!("mesh.{kind}")),
            limit: Some(10_000),
            ..Default::default()
        };
        self.agentd
            .ledger
            .query(&q)
            .unwrap()
            .into_iter()
            .map(|e| serde_json::from_str(&e.payload).unwrap())
            .collect()
    }

    /// Waits until a `mesh.<kind>` event satisfies `pred` (events are recorded asynchronously).
    pub async fn wait_event(&self, kind: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            if let Some(e) = self.events(kind).await.into_iter().find(|e| pred(e)) {
                return e;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{}: no such mesh.{kind} event",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `GET /peer/{peer}` satisfies `pred`.
    pub async fn wait_peer(&self, peer: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let start = Instant::now();
        loop {
            let (_, v) = self.get(&format!("/peer/{peer}")).await;
            if pred(&v) {
                return v;
            }
            assert!(
                start.elapsed() < Duration::from_secs(90),
                "{}: {peer} never {what}: {v}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_connected(&self, peer: &str) -> Value {
        self.wait_peer(peer, "connected", |v| v["connection"]["connected"] == true)
            .await
    }

    /// Waits until the rendered mesh.json declares `peer`.
    pub async fn wait_declared(&self, peer: &str) -> Value {
        self.wait_peer(peer, "declared", |v| v["declared"] == true)
            .await
    }

    pub async fn inbox(&self, peer: &str) -> Vec<Value> {
        let (s, v) = self.get(&format!("/peer/{peer}/inbox")).await;
        assert_eq!(s, 200, "{v}");
        v["messages"].as_array().unwrap().clone()
    }

    pub async fn wait_inbox(&self, peer: &str, n: usize) -> Vec<Value> {
        let start = Instant::now();
        loop {
            let m = self.inbox(peer).await;
            if m.len() >= n {
                return m;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{}: inbox of {peer}: {m:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn bind_retry(port: u16) -> tokio::net::TcpListener {
    let start = Instant::now();
    loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => return l,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "bind {port}: {e}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

pub async fn wait_switch(watch: &osmoda_client::Client, id: &Value) -> Value {
    let start = Instant::now();
    loop {
        let s = watch
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

pub fn fast() -> osmoda_mesh::Tuning {
    osmoda_mesh::Tuning {
        keepalive: Duration::from_millis(300),
        dead_after: Duration::from_secs(10),
        backoff_min: Duration::from_millis(50),
        backoff_max: Duration::from_millis(500),
        tick: Duration::from_millis(50),
        ..Default::default()
    }
}

/// A pairs with B through an invite from A: both trees get the other as a peer (a commit),
/// both switches commit, both sides see each other declared and connected.
pub async fn pair(a: &Host, b: &Host) {
    let code = a.invite(&b.name).await;
    let (s, v) = b
        .post("/invite/accept", json!({ "invite_code": code }))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["peer"], a.name.as_str());
    assert_eq!(
        wait_switch(&b.watch, &v["switch"]["id"]).await["state"],
        "committed"
    );
    b.wait_declared(&a.name).await;
    a.wait_declared(&b.name).await;
    a.wait_connected(&b.name).await;
    b.wait_connected(&a.name).await;
}

/// The real osmoda-mesh binary serving `host`'s socket, state and mesh.json (agentd and watch
/// stay in the test's process), so a test can `kill -9` it.
pub struct MeshProcess {
    child: std::process::Child,
    state_dir: PathBuf,
}

impl MeshProcess {
    /// Starts the binary; with `pause`, `OSMODA_MESH_PAUSE_IN` stops it at that point.
    pub async fn spawn(host: &Host, pause: Option<&str>) -> MeshProcess {
        let d = host.dir.path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(d.join("mesh.log"))
            .unwrap();
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_osmoda-mesh"));
        cmd.arg("--socket")
            .arg(host.socket())
            .arg("--config")
            .arg(host.mesh_json())
            .arg("--state-dir")
            .arg(d.join("mesh"))
            .arg("--agentd-socket")
            .arg(&host.agentd_socket)
            .arg("--watch-socket")
            .arg(d.join("watch.sock"))
            .arg("--name")
            .arg(&host.name)
            .env("RUST_LOG", "osmoda_mesh=debug,info")
            .env_remove("OSMODA_MESH_PAUSE_IN")
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        if let Some(p) = pause {
            cmd.env("OSMODA_MESH_PAUSE_IN", p);
        }
        let child = cmd.spawn().unwrap();
        let p = MeshProcess {
            child,
            state_dir: d.join("mesh"),
        };
        let start = Instant::now();
        loop {
            if let Ok(r) = host.client().get("/health").await {
                if r.status == 200 {
                    break;
                }
            }
            assert!(
                start.elapsed() < STEP,
                "{}: the mesh binary did not serve /health: {}",
                host.name,
                std::fs::read_to_string(d.join("mesh.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        p
    }

    /// Waits until the binary stopped at `point` (its marker file), then removes the marker.
    pub async fn wait_paused(&self, point: &str) {
        let marker = self.state_dir.join(format!("paused-in-{point}"));
        let start = Instant::now();
        while !marker.is_file() {
            assert!(start.elapsed() < STEP, "mesh never paused in {point}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        std::fs::remove_file(marker).unwrap();
    }

    /// `kill -9`, and waits for the process to be gone.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for MeshProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
