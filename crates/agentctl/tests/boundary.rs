//! The command boundary with the real agentctl: a SafeSwitch check and a watcher that run
//! `agentctl approvals approve <ticket>` cannot reach the approval socket, the ticket stays
//! pending, and a person's agentctl outside still approves. Needs root (bwrap, as osmoda-watch
//! runs it under the module); says `skipped: needs root` otherwise. We run as root here and in CI.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use osmoda_client::Client;
use serde_json::{json, Value};
use tokio::net::UnixListener;

struct Env {
    dir: tempfile::TempDir,
    _trigger: agentd::Trigger,
}

impl Env {
    fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }
    fn approval(&self) -> PathBuf {
        self.path("osmoda-admin/approval.sock")
    }
    /// A person's agentctl, outside the boundary.
    fn ctl(&self, args: &[&str]) -> std::process::Output {
        Command::new(env!("CARGO_BIN_EXE_agentctl"))
            .env("OSMODA_AGENTD_SOCKET", self.path("agentd.sock"))
            .env("OSMODA_APPROVAL_SOCKET", self.approval())
            .env("OSMODA_WATCH_SOCKET", self.path("watch.sock"))
            .args(args)
            .output()
            .expect("run agentctl")
    }
    /// The argv a check runs: agentctl approving `id` on the approval socket.
    fn approve_argv(&self, id: &str) -> Vec<String> {
        [
            env!("CARGO_BIN_EXE_agentctl"),
            "--approval-socket",
            &self.approval().display().to_string(),
            "approvals",
            "approve",
            id,
        ]
        .map(String::from)
        .to_vec()
    }
}

async fn start() -> Env {
    // Outside /tmp (commands get a private one) and traversable: only the boundary hides the
    // approval socket, exactly as `/run/osmoda-admin` is hidden on a machine.
    let dir = tempfile::tempdir_in(outside_tmp()).expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let admin = dir.path().join("osmoda-admin");
    std::fs::create_dir(&admin).expect("mkdir");
    std::fs::set_permissions(&admin, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let tree = dir.path().join("tree");
    let init = Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .args(["config", "init"])
        .arg(&tree)
        .output()
        .expect("init");
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let state = agentd::AppState::open(
        dir.path().join("state"),
        agentd::Settings::default(),
        Some(&tree),
    )
    .expect("state");
    let (trigger, shutdown) = agentd::shutdown_channel();
    tokio::spawn(agentd::serve(
        UnixListener::bind(dir.path().join("agentd.sock")).expect("bind"),
        UnixListener::bind(admin.join("approval.sock")).expect("bind"),
        state,
        shutdown,
    ));
    let env = Env {
        dir,
        _trigger: trigger,
    };
    for args in [
        &[
            "config",
            "unset",
            "services.osmoda.watch.watchers.sshd",
            "--reason",
            "no systemd here",
        ][..],
        &[
            "config",
            "set",
            "services.osmoda.watch.safeSwitch.ttlSecs",
            "1",
            "--reason",
            "short",
        ][..],
    ] {
        let o = env.ctl(args);
        assert!(
            o.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let opts = osmoda_watch::Options {
        config: env.path("etc/osmoda/watch.json"),
        state_dir: env.path("watch-state"),
        agentd_socket: env.path("agentd.sock"),
        backend: osmoda_watch::BackendKind::Local,
        config_tree: tree,
        etc_dir: env.path("etc"),
        lib_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lib"),
        host: "test".into(),
        probe_interval: Duration::from_millis(100),
        retry_delay: Duration::from_millis(50),
        pause: None,
        masks: vec![admin],
    };
    let state = osmoda_watch::AppState::open(opts).await.expect("watch");
    let (trigger, shutdown) = osmoda_watch::shutdown::channel();
    std::mem::forget(trigger); // lives as long as the test process
    tokio::spawn(osmoda_watch::serve(
        UnixListener::bind(env.path("watch.sock")).expect("bind"),
        state,
        shutdown,
    ));
    env
}

/// The effective uid is 0 (from /proc, without a libc binding).
fn root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

async fn wait_switch(watch: &Client, id: u64) -> Value {
    let start = Instant::now();
    loop {
        let s = watch
            .get(&format!("/switch/status/{id}"))
            .await
            .expect("status")
            .body;
        if ["committed", "rolled-back", "failed"].contains(&s["state"].as_str().unwrap_or("")) {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ticket_status(env: &Env, id: &str) -> String {
    let o = env.ctl(&["--json", "approvals", "list"]);
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    v.as_array()
        .expect("list")
        .iter()
        .find(|t| t["id"] == id)
        .expect("ticket")["status"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentctl_in_a_check_or_watcher_cannot_approve_and_a_person_can() {
    if !root() {
        eprintln!("skipped: needs root");
        return;
    }
    let env = start().await;
    let agent = Client::new(env.path("agentd.sock"));
    let watch = Client::new(env.path("watch.sock"));
    let t = agent
        .post(
            "/approval/request",
            &json!({"operation": {"op": "user.remove", "user": "alice"}, "detail": "test"}),
        )
        .await
        .expect("request");
    let id = t.body["id"].as_str().expect("id").to_string();

    // A SafeSwitch check running agentctl as root: it cannot reach the socket, the switch
    // rolls back (or, the first time, has nothing to roll back to), the ticket stays pending.
    let check = json!({"type": "command", "user": "root", "command": env.approve_argv(&id)});
    let s = watch
        .post(
            "/switch/begin",
            &json!({"ttl_secs": 1, "health_checks": [check]}),
        )
        .await
        .expect("begin");
    assert_eq!(s.status, 200, "{}", s.body);
    let done = wait_switch(&watch, s.body["id"].as_u64().expect("id")).await;
    assert_ne!(done["state"], "committed", "{done}");
    assert!(
        done["reason"]
            .as_str()
            .unwrap_or("")
            .contains("agentctl failed"),
        "{done}"
    );
    assert_eq!(ticket_status(&env, &id), "pending");

    // Control: a switch without that check commits, and then a watcher running agentctl.
    let s = watch
        .post("/switch/begin", &json!({"ttl_secs": 1}))
        .await
        .expect("begin");
    assert_eq!(
        wait_switch(&watch, s.body["id"].as_u64().expect("id")).await["state"],
        "committed"
    );
    let added = watch
        .post(
            "/watcher/add",
            &json!({"name": "sneaky", "check": check, "interval_secs": 1, "actions": ["notify"], "ttl_secs": 1}),
        )
        .await
        .expect("add");
    assert_eq!(added.status, 200, "{}", added.body);
    let start = Instant::now();
    loop {
        let list = watch.get("/watcher/list").await.expect("list").body;
        let w = list
            .as_array()
            .and_then(|l| l.iter().find(|w| w["name"] == "sneaky"))
            .cloned();
        if let Some(w) = w.filter(|w| w["status"]["last_check_at"].is_string()) {
            assert_eq!(w["status"]["health"], "failing", "{w}");
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{list}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(ticket_status(&env, &id), "pending");

    // A person's agentctl, outside the boundary.
    let o = env.ctl(&["approvals", "approve", &id]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(ticket_status(&env, &id), "approved");
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
