//! `kill -9` of the real agentd binary during a restore, in a loop: after the restart the
//! machine is entirely in the old state or entirely in the restored one (ledger, checkpoints,
//! config tree, a daemon's database and files), never a mix. A kill once the restore's journal
//! is on disk always ends restored.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{git, ClientExt};
use serde_json::json;

struct Agentd {
    child: Child,
    socket: PathBuf,
    approval: PathBuf,
}

impl Agentd {
    fn spawn(dir: &Path) -> Agentd {
        let socket = dir.join("agentd.sock");
        let approval = dir.join("approval.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_agentd"))
            .arg("--socket")
            .arg(&socket)
            .arg("--approval-socket")
            .arg(&approval)
            .arg("--state-dir")
            .arg(dir.join("state"))
            .arg("--config")
            .arg(dir.join("agentd.json"))
            .arg("--config-tree")
            .arg(dir.join("tree"))
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn agentd");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.contains("agentd ready") => break,
                Some(Ok(_)) => continue,
                other => panic!("agentd exited before it was ready: {other:?}"),
            }
        }
        std::thread::spawn(move || for _ in lines {});
        Agentd {
            child,
            socket,
            approval,
        }
    }

    fn agent(&self) -> osmoda_client::Client {
        osmoda_client::Client::new(&self.socket)
    }

    fn kill9(&mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("wait");
    }
}

impl Drop for Agentd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn dump(path: &Path) -> Vec<(String, Vec<u8>)> {
    let conn = rusqlite::Connection::open(path).expect("db");
    let mut s = conn
        .prepare("SELECT name, value FROM items ORDER BY name")
        .expect("select");
    s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows")
}

fn write_db(path: &Path, rows: &[(&str, &[u8])]) {
    let conn = rusqlite::Connection::open(path).expect("db");
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .expect("wal");
    conn.execute_batch("CREATE TABLE IF NOT EXISTS items (name TEXT PRIMARY KEY, value BLOB)")
        .expect("table");
    conn.execute("DELETE FROM items", []).expect("clear");
    for (k, v) in rows {
        conn.execute("INSERT INTO items (name, value) VALUES (?1, ?2)", (k, v))
            .expect("insert");
    }
}

fn kinds(ledger: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(ledger).expect("ledger");
    let mut s = conn
        .prepare("SELECT type FROM events ORDER BY id")
        .expect("select");
    s.query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows")
}

async fn note(a: &Agentd, kind: &str) {
    a.agent()
        .post_ok(
            "/events/append",
            &json!({ "type": kind, "daemon": "tester", "payload": {} }),
        )
        .await;
}

fn setup(dir: &Path) {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../generations");
    let actor = osmoda_generations::Actor::new("Test Person", "test@example.org");
    osmoda_generations::Tree::init(&dir.join("tree"), &template, &actor).expect("init tree");
    std::fs::create_dir_all(dir.join("keyd")).expect("mkdir");
    let cfg = json!({
        "approval": { "required": [], "ttl_secs": 900, "critical_packages": [] },
        "memory": { "embedding_endpoint": null, "embedding_model": "m", "max_injected_tokens": 100 },
        "daemons": { "watch": null, "routines": null, "keyd": null, "mesh": null, "voice": null, "egress": null },
        "ledger": { "checkpoint": { "enable": true, "every_events": 2, "interval_secs": 3600, "key_file": null } },
        "backup": { "dir": dir.join("backups"), "keep": null, "sources": { "keyd": dir.join("keyd") } },
    });
    std::fs::write(dir.join("agentd.json"), cfg.to_string()).expect("config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_a_restore_leaves_the_old_or_the_new_state() {
    let mut restored_runs = 0;
    for run in 0..6u64 {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path();
        setup(dir);
        let keyd_db = dir.join("keyd/keyd.db");
        write_db(&keyd_db, &[("wallet", b"sealed key v1")]);
        std::fs::write(dir.join("keyd/secret"), "secret v1").expect("secret");
        let mut a = Agentd::spawn(dir);
        for _ in 0..3 {
            note(&a, "test.before").await;
        }
        let b = a.agent().post_ok("/backup/create", &json!({})).await;
        let id = b["id"].as_str().expect("id").to_string();
        let old_head = git(&dir.join("tree"), &["rev-parse", "HEAD"]);
        let old_db = dump(&keyd_db);

        // The state a restore replaces.
        for _ in 0..3 {
            note(&a, "test.after").await;
        }
        a.agent()
            .post_ok(
                "/config/set",
                &json!({ "path": "services.osmoda.agentd.approvalTtlSecs", "value": 600, "reason": "later change" }),
            )
            .await;
        write_db(&keyd_db, &[("wallet", b"sealed key v2"), ("other", b"x")]);
        std::fs::write(dir.join("keyd/secret"), "secret v2").expect("secret");
        let new_head = git(&dir.join("tree"), &["rev-parse", "HEAD"]);
        let new_db = dump(&keyd_db);

        let r = a
            .agent()
            .post("/backup/restore", &json!({ "backup_id": id }))
            .await
            .expect("post");
        assert_eq!(r.status, 403, "{}", r.body);
        let ticket = r.body["detail"]["ticket"]
            .as_str()
            .expect("ticket")
            .to_string();
        osmoda_client::Client::new(&a.approval)
            .post_ok(&format!("/approval/{ticket}/approve"), &json!({}))
            .await;
        let client = a.agent();
        let body = json!({ "backup_id": id, "approval": ticket });
        let request = tokio::spawn(async move { client.post("/backup/restore", &body).await });
        let journal = dir.join("state/restore.json");
        let at_journal = run % 2 == 0;
        if at_journal {
            // Kill as soon as the restore is committed to its journal.
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !journal.exists() && !request.is_finished() {
                assert!(std::time::Instant::now() < deadline, "no journal in time");
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        } else {
            // Other runs kill at varied points; the check below holds wherever it lands.
            tokio::time::sleep(Duration::from_millis(run * 7)).await;
        }
        a.kill9();
        let _ = request.await;
        drop(a);

        let a = Agentd::spawn(dir);
        let head = git(&dir.join("tree"), &["rev-parse", "HEAD"]);
        let db = dump(&keyd_db);
        let secret = std::fs::read_to_string(dir.join("keyd/secret")).expect("secret");
        let ledger = dir.join("state/ledger.db");
        let events = kinds(&ledger);
        assert!(
            osmoda_ledger::verify(&ledger).expect("verify").is_ok(),
            "run {run}: chain"
        );
        let restored = head == old_head;
        eprintln!(
            "run {run}: killed {}, ended {}",
            if at_journal {
                "at the journal"
            } else {
                "after a delay"
            },
            if restored { "restored" } else { "old" }
        );
        if restored {
            restored_runs += 1;
            assert_eq!(db, old_db, "run {run}: restored tree, old keyd.db");
            assert_eq!(secret, "secret v1", "run {run}");
            assert!(
                !events.iter().any(|k| k == "test.after"),
                "run {run}: {events:?}"
            );
            assert!(events.iter().any(|k| k == "backup.restored"), "run {run}");
        } else {
            assert_eq!(head, new_head, "run {run}: neither old nor new tree");
            assert_eq!(db, new_db, "run {run}: old tree, restored keyd.db");
            assert_eq!(secret, "secret v2", "run {run}");
            assert!(events.iter().any(|k| k == "test.after"), "run {run}");
            assert!(!events.iter().any(|k| k == "backup.restored"), "run {run}");
            assert!(!at_journal, "run {run}: a committed restore was lost");
        }
        // The checkpoints on disk agree with the ledger either way.
        let vkey = std::fs::read_to_string(dir.join("state/checkpoint.vkey")).expect("vkey");
        let cps = osmoda_ledger::CheckpointFile::new(dir.join("state/checkpoints.jsonl"))
            .read()
            .expect("checkpoints");
        let report = osmoda_ledger::verify_checkpoints(&ledger, &cps, vkey.trim()).expect("anchor");
        assert!(report.is_ok(), "run {run}: {report:?}");
        assert!(
            !journal.exists(),
            "run {run}: the journal is finished at start"
        );
        assert!(
            !dir.join(format!("backups/.restore-{id}")).exists() || !restored,
            "run {run}: staging left behind"
        );
        drop(a);
    }
    assert!(restored_runs >= 3, "the journal runs all end restored");
}
