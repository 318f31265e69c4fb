//! Backups through a real agentd: create → change everything → restore gives back identical
//! databases (compared by a full dump), the config tree at the same `HEAD` and keys that still
//! open; a damaged archive is refused before anything changes; restores need a person.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{git, ClientExt, Daemon};
use serde_json::{json, Value};

/// Every table's schema and rows (ordered by rowid), the way `sqlite3 .dump` would show them.
fn dump(path: &Path) -> String {
    let conn = rusqlite::Connection::open(path).expect("open db");
    let mut out = String::new();
    let mut tables = conn
        .prepare("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL ORDER BY name")
        .expect("schema");
    let schema: Vec<(String, String)> = tables
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("schema")
        .collect::<Result<_, _>>()
        .expect("schema");
    for (name, sql) in schema {
        out.push_str(&sql);
        out.push('\n');
        if !sql.starts_with("CREATE TABLE") || sql.contains("VIRTUAL") {
            continue;
        }
        let mut rows = conn
            .prepare(&format!("SELECT * FROM \"{name}\" ORDER BY rowid"))
            .expect("select");
        let n = rows.column_count();
        let mut q = rows.query([]).expect("rows");
        while let Some(row) = q.next().expect("row") {
            let vals: Vec<String> = (0..n)
                .map(|i| format!("{:?}", row.get_ref(i).expect("value")))
                .collect();
            out.push_str(&format!("  {name}: {}\n", vals.join(", ")));
        }
    }
    out
}

struct Machine {
    _root: tempfile::TempDir,
    d: Daemon,
    keyd: PathBuf,
    mesh: PathBuf,
    memory: PathBuf,
    kek: osmoda_vault::Kek,
}

fn backup_settings(root: &Path, keep: Option<usize>) -> agentd::backup::BackupSettings {
    agentd::backup::BackupSettings {
        dir: Some(root.join("backups")),
        keep,
        sources: BTreeMap::from([
            ("keyd".to_string(), root.join("keyd")),
            ("mesh".to_string(), root.join("mesh")),
            ("memory".to_string(), root.join("memory")),
        ]),
    }
}

/// A daemon's database in WAL mode, open while the backup runs (as a daemon would hold it).
fn write_db(path: &Path, rows: &[(&str, &[u8])]) {
    let conn = rusqlite::Connection::open(path).expect("db");
    conn.query_row("PRAGMA journal_mode=WAL", [], |_| Ok(()))
        .expect("wal");
    conn.execute_batch("CREATE TABLE IF NOT EXISTS items (name TEXT PRIMARY KEY, value BLOB)")
        .expect("table");
    for (k, v) in rows {
        conn.execute(
            "INSERT OR REPLACE INTO items (name, value) VALUES (?1, ?2)",
            (k, v),
        )
        .expect("insert");
    }
}

fn seal(kek: &osmoda_vault::Kek, plain: &[u8]) -> Vec<u8> {
    let s = kek.seal(b"wallet", plain).expect("seal");
    let mut out = s.nonce.to_vec();
    out.extend(s.ciphertext);
    out
}

fn open(kek: &osmoda_vault::Kek, bytes: &[u8]) -> Option<Vec<u8>> {
    let sealed = osmoda_vault::Sealed {
        nonce: bytes[..12].try_into().ok()?,
        ciphertext: bytes[12..].to_vec(),
    };
    kek.open(b"wallet", &sealed).map(|z| z.to_vec())
}

fn sealed_key(dir: &Path, kek: &osmoda_vault::Kek) -> Vec<u8> {
    let conn = rusqlite::Connection::open(dir.join("keyd.db")).expect("db");
    let sealed: Vec<u8> = conn
        .query_row("SELECT value FROM items WHERE name = 'wallet'", [], |r| {
            r.get(0)
        })
        .expect("wallet row");
    open(kek, &sealed).expect("the key opens with the machine's secret")
}

async fn machine(keep: Option<usize>, checkpoints: bool) -> Machine {
    let tmp = tempfile::tempdir().expect("tmp");
    let root = tmp.path().to_path_buf();
    let settings = agentd::Settings {
        backup: backup_settings(&root, keep),
        checkpoint: checkpoints.then(|| agentd::checkpoints::CheckpointSettings {
            every_events: 3,
            interval: Duration::from_secs(3600),
            key_file: None,
        }),
        ..agentd::Settings::default()
    };
    let d = Daemon::start_with_tree_and(settings).await;
    let (keyd, mesh, memory) = (root.join("keyd"), root.join("mesh"), root.join("memory"));
    for dir in [&keyd, &mesh, &memory.join("memory")] {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    // keyd keeps its key-encryption secret (when no credential is given) and sealed keys.
    let secret = osmoda_vault::load_secret(None, &keyd).expect("secret");
    let kek = osmoda_vault::Kek::derive(&secret, osmoda_vault::KdfParams::fresh().expect("kdf"))
        .expect("kek");
    std::fs::write(keyd.join("kdf"), kek.kdf().encode()).expect("kdf");
    write_db(
        &keyd.join("keyd.db"),
        &[("wallet", &seal(&kek, b"private key one"))],
    );
    write_db(
        &mesh.join("mesh.db"),
        &[("identity", b"sealed identity v1")],
    );
    std::fs::write(
        memory.join("MEMORY.md"),
        "# Facts\n- the web app runs on 8080\n",
    )
    .expect("md");
    std::fs::write(memory.join("memory/2026-11-30.md"), "restarted nginx\n").expect("md");
    Machine {
        _root: tmp,
        d,
        keyd,
        mesh,
        memory,
        kek,
    }
}

async fn note(d: &Daemon, i: usize) {
    d.agent()
        .post_ok(
            "/events/append",
            &json!({ "type": "test.note", "daemon": "tester", "payload": { "i": i } }),
        )
        .await;
}

/// Restores `id` the way a person does: the refusal's ticket, approved on the approval socket.
async fn restore_approved(d: &Daemon, id: &str, force: bool) -> Value {
    let r = d
        .agent()
        .post(
            "/backup/restore",
            &json!({ "backup_id": id, "force": force }),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 403, "a restore needs a person: {}", r.body);
    let ticket = r.body["detail"]["ticket"]
        .as_str()
        .expect("ticket")
        .to_string();
    d.human()
        .post_ok(&format!("/approval/{ticket}/approve"), &json!({}))
        .await;
    let done = d
        .agent()
        .post(
            "/backup/restore",
            &json!({ "backup_id": id, "approval": ticket, "force": force }),
        )
        .await
        .expect("post");
    assert_eq!(done.status, 200, "{}", done.body);
    // The ticket cannot be used twice.
    let again = d
        .agent()
        .post(
            "/backup/restore",
            &json!({ "backup_id": id, "approval": ticket, "force": force }),
        )
        .await
        .expect("post");
    assert!(
        matches!(again.status, 404 | 409),
        "a used ticket: {}",
        again.body
    );
    done.body
}

fn ledger_rows(d: &Daemon, upto: i64) -> Vec<osmoda_ledger::Event> {
    d.state
        .ledger
        .query(&osmoda_ledger::Query {
            before_id: Some(upto + 1),
            limit: Some(10_000),
            ..Default::default()
        })
        .expect("query")
}

fn files_of(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("ls") {
            let p = e.expect("entry").path();
            let name = p.to_string_lossy().to_string();
            if p.is_dir() {
                stack.push(p);
            } else if !name.ends_with(".db") && !name.ends_with("-wal") && !name.ends_with("-shm") {
                out.insert(name, std::fs::read(&p).expect("read"));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_change_everything_restore_gives_back_the_same_state() {
    let m = machine(None, true).await;
    let c = m.d.agent();
    for i in 0..7 {
        note(&m.d, i).await;
    }
    c.post_ok(
        "/config/set",
        &json!({ "path": "services.osmoda.agentd.approvalTtlSecs", "value": 600, "reason": "shorter tickets" }),
    )
    .await;
    let tree = m.d.tree_dir();
    let head = git(&tree, &["rev-parse", "HEAD"]).trim().to_string();
    let before_keyd = dump(&m.keyd.join("keyd.db"));
    let before_mesh = dump(&m.mesh.join("mesh.db"));
    let before_files = (files_of(&m.keyd), files_of(&m.memory));

    let b = c
        .post_ok("/backup/create", &json!({ "reason": "before the upgrade" }))
        .await;
    let id = b["id"].as_str().expect("id").to_string();
    assert_eq!(b["tree_commit"], json!(head));
    let size = b["ledger_size"].as_u64().expect("size");
    let archived = ledger_rows(&m.d, i64::try_from(size).expect("size"));
    let listed = c.get_ok("/backup/list").await;
    assert_eq!(listed["backups"][0]["id"], json!(id));
    assert_eq!(
        listed["backups"][0]["manifest_sha256"],
        b["manifest_sha256"]
    );
    let mode = std::fs::metadata(b["file"].as_str().expect("file"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("archive");
    assert_eq!(mode, 0o600, "archives hold secrets: private");
    // The archive is a plain tar with the manifest first.
    let tar = std::process::Command::new("tar")
        .arg("tf")
        .arg(b["file"].as_str().expect("file"))
        .output()
        .expect("tar");
    let names = String::from_utf8_lossy(&tar.stdout);
    assert_eq!(names.lines().next(), Some("manifest.json"));
    for want in [
        "agentd/ledger.db",
        "agentd/checkpoints.jsonl",
        "tree.bundle",
        "sources/keyd/keyd.db",
        "sources/keyd/secret",
        "sources/mesh/mesh.db",
        "sources/memory/MEMORY.md",
        "sources/memory/memory/2026-11-30.md",
    ] {
        assert!(names.lines().any(|l| l == want), "{want} in {names}");
    }
    assert!(!names.contains("-wal") && !names.contains("checkpoint.key"));

    // Change everything.
    for i in 0..5 {
        note(&m.d, 100 + i).await;
    }
    c.post_ok(
        "/config/set",
        &json!({ "path": "services.osmoda.agentd.approvalTtlSecs", "value": 300, "reason": "even shorter" }),
    )
    .await;
    let changed_head = git(&tree, &["rev-parse", "HEAD"]).trim().to_string();
    assert_ne!(changed_head, head);
    write_db(
        &m.keyd.join("keyd.db"),
        &[("wallet", &seal(&m.kek, b"another key")), ("second", b"x")],
    );
    write_db(
        &m.mesh.join("mesh.db"),
        &[("identity", b"rotated identity")],
    );
    std::fs::write(m.keyd.join("stray"), "new file").expect("write");
    std::fs::write(m.memory.join("MEMORY.md"), "# Facts\n- rewritten\n").expect("md");
    std::fs::remove_file(m.memory.join("memory/2026-11-30.md")).expect("rm");
    assert_ne!(dump(&m.keyd.join("keyd.db")), before_keyd);

    let done = restore_approved(&m.d, &id, false).await;
    assert_eq!(done["backup_id"], json!(id));
    assert_eq!(done["restored"]["size"].as_u64(), Some(size));
    assert_eq!(dump(&m.keyd.join("keyd.db")), before_keyd);
    assert_eq!(dump(&m.mesh.join("mesh.db")), before_mesh);
    assert_eq!((files_of(&m.keyd), files_of(&m.memory)), before_files);
    assert_eq!(sealed_key(&m.keyd, &m.kek), b"private key one");
    assert_eq!(git(&tree, &["rev-parse", "HEAD"]).trim(), head);
    assert_eq!(git(&tree, &["status", "--porcelain"]).trim(), "");
    assert_eq!(
        git(
            &tree,
            &["rev-parse", &format!("refs/osmoda/before-restore/{id}")]
        )
        .trim(),
        changed_head,
        "the replaced history is kept"
    );
    // The ledger is the archived one plus the restore's own record.
    let s = i64::try_from(size).expect("size");
    assert_eq!(ledger_rows(&m.d, s), archived);
    let after =
        m.d.state
            .ledger
            .query(&osmoda_ledger::Query {
                after_id: Some(s),
                ..Default::default()
            })
            .expect("query");
    assert_eq!(after[0].kind, "backup.restored");
    let payload: Value = serde_json::from_str(&after[0].payload).expect("json");
    assert_eq!(
        payload["previous"]["size"].as_u64().map(|p| p > size),
        Some(true)
    );
    // The restored ledger verifies, also against the restored checkpoints.
    let state = m.d.state.state_dir.clone();
    assert!(osmoda_ledger::verify(&state.join("ledger.db"))
        .expect("verify")
        .is_ok());
    let cps = osmoda_ledger::CheckpointFile::new(state.join("checkpoints.jsonl"))
        .read()
        .expect("checkpoints");
    let vkey = std::fs::read_to_string(state.join("checkpoint.vkey")).expect("vkey");
    let report = osmoda_ledger::verify_checkpoints(&state.join("ledger.db"), &cps, vkey.trim())
        .expect("anchor");
    assert!(report.is_ok(), "{report:?}");
    // Kept under a name of this restore's own (`<id>-r<time>`).
    assert!(std::fs::read_dir(&state).expect("ls").flatten().any(|e| e
        .file_name()
        .to_string_lossy()
        .starts_with(&format!("checkpoints.jsonl.before-{id}-r"))));
    assert!(!state.join("restore.json").exists());
    // Appends continue the restored chain.
    note(&m.d, 999).await;
    assert!(osmoda_ledger::verify(&state.join("ledger.db"))
        .expect("verify")
        .is_ok());
    m.d.stop().await;
}

/// One way to damage an archive.
type Damage = fn(&Path);

fn flip_in(file: &Path, needle: &[u8]) {
    let mut bytes = std::fs::read(file).expect("read");
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("needle in the archive");
    bytes[at] ^= 0x01;
    std::fs::write(file, bytes).expect("write");
}

fn damages() -> Vec<(&'static str, Damage)> {
    vec![
        ("a flipped bit in a database", |f| {
            flip_in(f, b"sealed identity v1")
        }),
        ("a flipped bit in a markdown file", |f| {
            flip_in(f, b"restarted nginx")
        }),
        ("a flipped bit in the manifest", |f| {
            flip_in(f, b"\"format\"")
        }),
        ("a cut-off archive", |f| {
            let len = std::fs::metadata(f).expect("meta").len();
            let file = std::fs::OpenOptions::new()
                .write(true)
                .open(f)
                .expect("open");
            file.set_len(len / 2).expect("truncate");
        }),
        ("an entry added at the end", |f| {
            let bytes = std::fs::read(f).expect("read");
            // Drop tar's two zero end blocks, append one more entry and end it again.
            let body = &bytes[..bytes.len() - 1024];
            let mut b = tar::Builder::new(body.to_vec());
            let mut h = tar::Header::new_gnu();
            h.set_size(4);
            h.set_mode(0o600);
            b.append_data(&mut h, "sources/keyd/evil", &b"evil"[..])
                .expect("append");
            std::fs::write(f, b.into_inner().expect("tar")).expect("write");
        }),
        ("an empty file", |f| std::fs::write(f, b"").expect("write")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_archive_is_refused_before_anything_changes() {
    let m = machine(None, false).await;
    let c = m.d.agent();
    note(&m.d, 1).await;
    let b = c.post_ok("/backup/create", &json!({})).await;
    let id = b["id"].as_str().expect("id").to_string();
    let file = PathBuf::from(b["file"].as_str().expect("file"));
    let good = std::fs::read(&file).expect("archive");
    write_db(&m.mesh.join("mesh.db"), &[("identity", b"changed since")]);
    let mesh = dump(&m.mesh.join("mesh.db"));
    let head = git(&m.d.tree_dir(), &["rev-parse", "HEAD"]);
    for (name, damage) in damages() {
        std::fs::write(&file, &good).expect("reset");
        damage(&file);
        let events = m.d.state.ledger.head().expect("head").events;
        let r = c
            .post("/backup/restore", &json!({ "backup_id": id }))
            .await
            .expect("post");
        assert_eq!(r.status, 422, "{name}: {}", r.body);
        assert!(
            r.body["error"].as_str().expect("error").contains("damaged"),
            "{name}: {}",
            r.body
        );
        // Nothing changed: no ticket, no event, same databases and tree, nothing staged.
        assert_eq!(
            m.d.state.ledger.head().expect("head").events,
            events,
            "{name}"
        );
        assert_eq!(dump(&m.mesh.join("mesh.db")), mesh, "{name}");
        assert_eq!(git(&m.d.tree_dir(), &["rev-parse", "HEAD"]), head, "{name}");
        assert!(!m.d.state.state_dir.join("restore.json").exists(), "{name}");
        let staged: Vec<_> = std::fs::read_dir(file.parent().expect("dir"))
            .expect("ls")
            .filter_map(Result::ok)
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(staged.is_empty(), "{name}: {staged:?}");
    }
    m.d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_retention_and_another_history() {
    let m = machine(Some(2), false).await;
    let c = m.d.agent();
    let mut ids = Vec::new();
    for i in 0..3 {
        note(&m.d, i).await;
        ids.push(c.post_ok("/backup/create", &json!({})).await["id"].clone());
    }
    let listed = c.get_ok("/backup/list").await;
    let listed: Vec<&Value> = listed["backups"].as_array().expect("list").iter().collect();
    assert_eq!(
        listed.iter().map(|b| &b["id"]).collect::<Vec<_>>(),
        vec![&ids[2], &ids[1]],
        "keep = 2 keeps the newest two"
    );
    // A burst of new archives removes only the same day's older ones: the last archive of an
    // earlier day (an older copy under an earlier day's id) stays.
    let dir = m._root.path().join("backups");
    let earlier = "20250101T000000000Z-0000aaaa";
    std::fs::copy(
        dir.join(format!("{}.tar", ids[1].as_str().expect("id"))),
        dir.join(format!("{earlier}.tar")),
    )
    .expect("copy");
    let mut burst = Vec::new();
    for i in 3..6 {
        note(&m.d, i).await;
        burst.push(c.post_ok("/backup/create", &json!({})).await["id"].clone());
    }
    let listed = c.get_ok("/backup/list").await;
    let listed: Vec<&Value> = listed["backups"].as_array().expect("list").iter().collect();
    assert_eq!(
        listed.iter().map(|b| &b["id"]).collect::<Vec<_>>(),
        vec![&burst[2], &burst[1], &json!(earlier)],
        "keep = 2: the two newest and the last archive of the earlier day"
    );
    // The person deciding a restore is told whether this machine's ledger recorded the archive
    // (archives are not signed): one made here is named by its backup.created event (another
    // machine's, below, is not).
    let effect_of = |id: &str, force: bool| {
        let c = m.d.agent();
        let id = id.to_string();
        async move {
            let r = c
                .post(
                    "/backup/restore",
                    &json!({ "backup_id": id, "force": force }),
                )
                .await
                .expect("post");
            assert_eq!(r.status, 403, "{}", r.body);
            r.body["detail"]["effect"].to_string()
        }
    };
    let effect = effect_of(burst[2].as_str().expect("id"), false).await;
    assert!(
        effect.contains("the archive is the one this machine's backup.created event"),
        "{effect}"
    );
    for (body, status) in [
        (json!({ "backup_id": "../../etc/passwd" }), 400),
        (json!({ "backup_id": "20261130T000000000Z-00000000" }), 404),
        (json!({ "backup_id": burst[2], "extra": 1 }), 422),
        (json!({}), 422),
    ] {
        let r = c.post("/backup/restore", &body).await.expect("post");
        assert_eq!(r.status, status, "{body}: {}", r.body);
    }
    // An archive of another machine's ledger is not a prefix of this one: refused unless forced.
    let other = machine(None, false).await;
    note(&other.d, 42).await;
    let theirs = other.d.agent().post_ok("/backup/create", &json!({})).await;
    let their_id = theirs["id"].as_str().expect("id").to_string();
    let dir = PathBuf::from(listed[0]["file"].as_str().expect("file"))
        .parent()
        .expect("dir")
        .to_path_buf();
    std::fs::copy(
        theirs["file"].as_str().expect("file"),
        dir.join(format!("{their_id}.tar")),
    )
    .expect("copy");
    let r = c
        .post("/backup/restore", &json!({ "backup_id": their_id }))
        .await
        .expect("post");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(r.body["error"]
        .as_str()
        .expect("error")
        .contains("another history"));
    let effect = effect_of(&their_id, true).await;
    assert!(
        effect.contains("no backup.created event in this machine's ledger records this archive"),
        "{effect}"
    );
    let done = restore_approved(&m.d, &their_id, true).await;
    assert_eq!(done["forced"], json!(true));
    other.d.stop().await;
    m.d.stop().await;
}
