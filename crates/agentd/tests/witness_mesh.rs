//! Witnesses over real mesh links: two hosts on loopback, each a real agentd (checkpoints,
//! witness), osmoda-watch (local backend, renders mesh.json) and osmoda-mesh, paired by an
//! invite. Each cosigns the other's checkpoints; the cosignatures verify under the peer's
//! witness key. Then one host restores an old backup (refused until forced, because a witness
//! cosigned past it): its peer refuses to cosign its next checkpoint, the refusal is recorded,
//! and the newest checkpoint has no cosignature (`verify-ledger --witnesses 1` fails).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

struct Host {
    name: String,
    dir: PathBuf,
    port: u16,
    agentd: Arc<agentd::AppState>,
    agent: osmoda_client::Client,
    human: osmoda_client::Client,
    watch: osmoda_client::Client,
    mesh: osmoda_client::Client,
    _triggers: (
        agentd::Trigger,
        osmoda_watch::shutdown::Trigger,
        osmoda_mesh::shutdown::Trigger,
    ),
}

struct Keys {
    log_key: PathBuf,
    log_vkey: String,
    witness_key: PathBuf,
    witness_vkey: String,
}

fn keys(dir: &Path, name: &str) -> Keys {
    let (skey, vkey) = osmoda_ledger::generate_key(&format!("{name}/osmoda-ledger")).unwrap();
    let log_key = dir.join("log.key");
    std::fs::write(&log_key, format!("{skey}\n")).unwrap();
    // A checkpoint key is agentd's secret: 0600 (agentd refuses a looser one).
    std::fs::set_permissions(
        &log_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    let witness_key = dir.join("witness.key");
    std::fs::write(&witness_key, hex::encode(seed)).unwrap();
    // So is the witness key (the same rule).
    std::fs::set_permissions(
        &witness_key,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let witness_vkey = agentd::witness::vkey_of(&witness_key).unwrap();
    Keys {
        log_key,
        log_vkey: vkey,
        witness_key,
        witness_vkey,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(90), "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn wait_switch(watch: &osmoda_client::Client, id: &Value) -> Value {
    until(&format!("switch {id}"), async || {
        let s = watch
            .get(&format!("/switch/status/{id}"))
            .await
            .unwrap()
            .body;
        ["committed", "rolled-back", "failed"]
            .contains(&s["state"].as_str().unwrap_or(""))
            .then_some(s)
    })
    .await
}

impl Host {
    async fn start(name: &str, dir: PathBuf, own: &Keys, peer: (&str, &Keys)) -> Host {
        let port = free_port();
        let tree_dir = dir.join("tree");
        let actor = osmoda_generations::Actor::new("Test Person", "test@example.org");
        let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../generations");
        let tree = osmoda_generations::Tree::init(&tree_dir, &template, &actor).unwrap();
        std::fs::write(
            tree_dir.join("osmoda.nix"),
            format!(
                "{{ ... }}:\n\n{{\n  services.osmoda = {{\n    enable = true;\n    mesh.listen = \"127.0.0.1:{port}\";\n    watch.safeSwitch = {{\n      ttlSecs = 1;\n      healthChecks = [ ];\n    }};\n  }};\n}}\n"
            ),
        )
        .unwrap();
        tree.commit_worktree(&actor, "test base settings", None)
            .unwrap();
        let mesh_socket = dir.join("mesh.sock");
        let settings = agentd::Settings {
            checkpoint: Some(agentd::checkpoints::CheckpointSettings {
                every_events: 2,
                interval: Duration::from_secs(3600),
                key_file: Some(own.log_key.clone()),
            }),
            witness: Some(agentd::witness::WitnessSettings {
                mesh_socket: mesh_socket.clone(),
                peers: [(peer.0.to_string(), peer.1.witness_vkey.clone())].into(),
                logs: vec![peer.1.log_vkey.clone()],
                key_file: Some(own.witness_key.clone()),
            }),
            backup: agentd::backup::BackupSettings {
                dir: Some(dir.join("backups")),
                ..Default::default()
            },
            ..agentd::Settings::default()
        };
        let agentd_socket = dir.join("agentd.sock");
        let admin = dir.join("osmoda-admin");
        std::fs::create_dir_all(&admin).unwrap();
        let astate = agentd::AppState::open(dir.join("agentd"), settings, Some(&tree_dir)).unwrap();
        let agent = tokio::net::UnixListener::bind(&agentd_socket).unwrap();
        let human = tokio::net::UnixListener::bind(admin.join("approval.sock")).unwrap();
        let (atrigger, ashutdown) = agentd::shutdown_channel();
        tokio::spawn(agentd::serve(agent, human, astate.clone(), ashutdown));

        let etc = dir.join("etc");
        let wopts = osmoda_watch::Options {
            config: etc.join("osmoda/watch.json"),
            state_dir: dir.join("watch"),
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
        let wsock = dir.join("watch.sock");
        let wl = osmoda_daemon::bind_unix(&wsock, 0o660).unwrap();
        let (wtrigger, wshutdown) = osmoda_watch::shutdown::channel();
        tokio::spawn(osmoda_watch::serve(wl, wstate, wshutdown));
        let watch = osmoda_client::Client::new(&wsock);
        let s = watch
            .post("/switch/begin", &json!({ "health_checks": [] }))
            .await
            .unwrap();
        assert_eq!(s.status, 200, "{}", s.body);
        assert_eq!(
            wait_switch(&watch, &s.body["id"]).await["state"],
            "committed"
        );

        let opts = osmoda_mesh::Options {
            config: etc.join("osmoda/mesh.json"),
            state_dir: dir.join("mesh"),
            agentd_socket: agentd_socket.clone(),
            watch_socket: wsock.clone(),
            key_file: None,
            name: name.to_string(),
            tuning: osmoda_mesh::Tuning {
                keepalive: Duration::from_millis(300),
                dead_after: Duration::from_secs(10),
                backoff_min: Duration::from_millis(50),
                backoff_max: Duration::from_millis(500),
                tick: Duration::from_millis(50),
                ..Default::default()
            },
        };
        let mstate = osmoda_mesh::AppState::open(opts).unwrap();
        let ml = osmoda_daemon::bind_unix(&mesh_socket, 0o660).unwrap();
        let tcp = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let (mtrigger, mshutdown) = osmoda_mesh::shutdown::channel();
        tokio::spawn(osmoda_mesh::serve(ml, tcp, mstate, mshutdown));
        Host {
            name: name.to_string(),
            port,
            agentd: astate,
            agent: osmoda_client::Client::new(&agentd_socket),
            human: osmoda_client::Client::new(admin.join("approval.sock")),
            watch,
            mesh: osmoda_client::Client::new(&mesh_socket),
            dir,
            _triggers: (atrigger, wtrigger, mtrigger),
        }
    }

    async fn peer_state(&self, peer: &str) -> Value {
        self.mesh.get(&format!("/peer/{peer}")).await.unwrap().body
    }

    async fn notes(&self, n: usize) {
        for i in 0..n {
            let r = self
                .agent
                .post(
                    "/events/append",
                    &json!({ "type": "test.note", "daemon": "tester", "payload": { "i": i } }),
                )
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
        }
    }

    fn state(&self) -> PathBuf {
        self.dir.join("agentd")
    }

    /// The newest checkpoint's size and how many of the peer's witness keys cosigned it.
    fn newest_cosigned(&self, peer_key: &str) -> Option<(u64, usize)> {
        let cps = osmoda_ledger::CheckpointFile::new(self.state().join("checkpoints.jsonl"))
            .read()
            .unwrap();
        let cos = osmoda_ledger::witness::read_cosignatures(
            &self.state().join(agentd::witness::COSIGNATURES_FILE),
        )
        .unwrap();
        osmoda_ledger::witness::newest_cosigned(&cps, &cos, &[peer_key.to_string()]).unwrap()
    }

    async fn wait_cosigned(&self, peer_key: &str, above: u64) -> u64 {
        until(
            &format!("{}: newest checkpoint cosigned", self.name),
            async || match self.newest_cosigned(peer_key) {
                Some((size, 1)) if size > above => Some(size),
                _ => None,
            },
        )
        .await
    }
}

async fn pair(a: &Host, b: &Host) {
    let r = a
        .mesh
        .post("/invite/create", &json!({ "name": b.name }))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let code = r.body["invite_code"].clone();
    let r = b
        .mesh
        .post("/invite/accept", &json!({ "invite_code": code }))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        wait_switch(&b.watch, &r.body["switch"]["id"]).await["state"],
        "committed"
    );
    for (h, p) in [(a, &b.name), (b, &a.name)] {
        until(&format!("{} sees {p} connected", h.name), async || {
            let v = h.peer_state(p).await;
            (v["declared"] == true && v["connection"]["connected"] == true).then_some(())
        })
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_cosign_each_other_and_refuse_a_rolled_back_ledger() {
    let tmp = tempfile::tempdir().unwrap();
    let (da, db) = (tmp.path().join("alpha"), tmp.path().join("beta"));
    std::fs::create_dir_all(&da).unwrap();
    std::fs::create_dir_all(&db).unwrap();
    let (ka, kb) = (keys(&da, "alpha"), keys(&db, "beta"));
    let a = Host::start("alpha", da, &ka, ("beta", &kb)).await;
    let b = Host::start("beta", db, &kb, ("alpha", &ka)).await;
    pair(&a, &b).await;
    assert!(a.port != b.port);

    // Each side's checkpoints gather the other's cosignature, valid under its witness key.
    a.notes(3).await;
    b.notes(3).await;
    let first = a.wait_cosigned(&kb.witness_vkey, 0).await;
    b.wait_cosigned(&ka.witness_vkey, 0).await;
    assert_eq!(
        std::fs::read_to_string(b.state().join("witness.vkey"))
            .unwrap()
            .trim(),
        kb.witness_vkey
    );
    // A cosignature by the wrong key does not count.
    assert_eq!(a.newest_cosigned(&ka.witness_vkey).map(|(_, n)| n), Some(0));

    let backup = a.agent.post("/backup/create", &json!({})).await.unwrap();
    assert_eq!(backup.status, 200, "{}", backup.body);
    let id = backup.body["id"].as_str().unwrap().to_string();
    a.notes(4).await;
    let witnessed = a.wait_cosigned(&kb.witness_vkey, first).await;

    // Restoring the older backup would roll back past what beta cosigned: refused until forced.
    let r = a
        .agent
        .post("/backup/restore", &json!({ "backup_id": id }))
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.body);
    let err = r.body["error"].as_str().unwrap();
    assert!(err.contains("beta") && err.contains("cosigned"), "{err}");
    let r = a
        .agent
        .post(
            "/backup/restore",
            &json!({ "backup_id": id, "force": true }),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    let ticket = r.body["detail"]["ticket"].as_str().unwrap().to_string();
    let ok = a
        .human
        .post(&format!("/approval/{ticket}/approve"), &json!({}))
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);
    let done = a
        .agent
        .post(
            "/backup/restore",
            &json!({ "backup_id": id, "approval": ticket, "force": true }),
        )
        .await
        .unwrap();
    assert_eq!(done.status, 200, "{}", done.body);

    // The restored ledger grows into a fork of what beta cosigned: beta refuses.
    a.notes(6).await;
    let refusal = until("alpha records beta's refusal", async || {
        let q = osmoda_ledger::Query {
            kind: Some("agentd.witness.refused".into()),
            ..Default::default()
        };
        a.agentd.ledger.query(&q).unwrap().into_iter().next()
    })
    .await;
    let p: Value = serde_json::from_str(&refusal.payload).unwrap();
    assert_eq!(p["peer"], json!("beta"));
    assert!(
        p["reason"].as_str().unwrap().contains("consistent")
            || p["reason"].as_str().unwrap().contains("rollback")
            || p["reason"].as_str().unwrap().contains("cosigned size"),
        "{p}"
    );
    // Beta records the refusal in its own ledger too (issue 18 item 3: the rollback is
    // visible on the peer, not only in the ledger of the machine that was rolled back), once
    // per checkpoint.
    let refusing = until("beta records its refusal in its own ledger", async || {
        let q = osmoda_ledger::Query {
            kind: Some("agentd.witness.refusing".into()),
            ..Default::default()
        };
        let found = b.agentd.ledger.query(&q).unwrap();
        (!found.is_empty()).then_some(found)
    })
    .await;
    let mine: Value = serde_json::from_str(&refusing[0].payload).unwrap();
    assert_eq!(mine["peer"], json!("alpha"), "{mine}");
    assert_eq!(mine["log"], json!("alpha/osmoda-ledger"), "{mine}");
    assert!(
        matches!(mine["refusal"].as_str(), Some("inconsistent" | "rollback")),
        "{mine}"
    );
    assert!(mine["cosigned_size"].as_u64().is_some(), "{mine}");
    let mut sizes: Vec<u64> = refusing
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&e.payload).unwrap()["size"]
                .as_u64()
                .unwrap()
        })
        .collect();
    let all = sizes.len();
    sizes.dedup();
    assert_eq!(
        all,
        sizes.len(),
        "one event per refused checkpoint: {refusing:?}"
    );
    // The newest checkpoint has no cosignature: `verify-ledger --witnesses 1` fails.
    let (size, n) = a.newest_cosigned(&kb.witness_vkey).unwrap();
    assert_eq!(n, 0, "checkpoint {size} must not be cosigned");
    // Beta still holds what it cosigned before the restore (the fork did not move it).
    let state: Value =
        serde_json::from_slice(&std::fs::read(b.state().join("witness-state.json")).unwrap())
            .unwrap();
    // Kept under a name of the restore's own (`<id>-r<time>`).
    let kept_file = std::fs::read_dir(a.state())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name().is_some_and(|n| {
                n.to_string_lossy()
                    .starts_with(&format!("cosignatures.jsonl.before-{id}-r"))
            })
        })
        .expect("the replaced cosignatures are kept");
    let kept = osmoda_ledger::witness::read_cosignatures(&kept_file).unwrap();
    let top = kept.iter().map(|c| c.size).max().unwrap();
    assert!(top >= witnessed);
    // Beta may have cosigned one more pre-restore checkpoint whose answer reached alpha only
    // after the restore moved its cosignatures aside (the restore's own events make one), so
    // beta's state is at least what alpha kept, and the fork (refused above) never moved it.
    // (Kept by log key: logs of one origin are told apart by their keys.)
    let held = state[ka.log_vkey.as_str()]["size"].as_u64().unwrap();
    assert!(
        held >= top,
        "beta holds {held}, alpha kept cosignatures up to {top}"
    );
    // Beta's own ledger keeps being cosigned by alpha.
    let before = b.newest_cosigned(&ka.witness_vkey).unwrap().0;
    b.notes(3).await;
    b.wait_cosigned(&ka.witness_vkey, before).await;
}
