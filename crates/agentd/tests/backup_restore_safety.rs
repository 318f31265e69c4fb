//! What a restore must never do: follow a link a daemon planted in its state dir, install an
//! archived ledger's triggers, re-arm a used approval ticket, lose the events written since the
//! backup, the files made since or a person's uncommitted edits, or leave agentd unable to
//! start when it cannot finish.

mod common;

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use common::{git, ClientExt, Daemon};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

struct Machine {
    root: tempfile::TempDir,
    d: Daemon,
    keyd: PathBuf,
}

async fn machine() -> Machine {
    let root = tempfile::tempdir().expect("tmp");
    let keyd = root.path().join("keyd");
    std::fs::create_dir_all(&keyd).expect("mkdir");
    std::fs::write(keyd.join("note.txt"), "hello\n").expect("write");
    let settings = agentd::Settings {
        backup: agentd::backup::BackupSettings {
            dir: Some(root.path().join("backups")),
            keep: None,
            sources: BTreeMap::from([("keyd".to_string(), keyd.clone())]),
        },
        ..agentd::Settings::default()
    };
    let d = Daemon::start_with_tree_and(settings).await;
    Machine { root, d, keyd }
}

async fn create(d: &Daemon) -> String {
    let s = d.agent().post_ok("/backup/create", &json!({})).await;
    s["id"].as_str().expect("id").to_owned()
}

/// The restore's ticket (the 403's), approved by a person.
async fn approved_ticket(d: &Daemon, id: &str, force: bool) -> String {
    let r = d
        .agent()
        .post(
            "/backup/restore",
            &json!({ "backup_id": id, "force": force }),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    let t = r.body["detail"]["ticket"]
        .as_str()
        .expect("ticket")
        .to_owned();
    d.human()
        .post_ok(&format!("/approval/{t}/approve"), &json!({}))
        .await;
    t
}

async fn restore_with(d: &Daemon, id: &str, ticket: &str, force: bool) -> (u16, Value) {
    let r = d
        .agent()
        .post(
            "/backup/restore",
            &json!({ "backup_id": id, "approval": ticket, "force": force }),
        )
        .await
        .expect("post");
    (r.status, r.body)
}

/// Rewrites archive `id` as a new archive (returned id) after `change` edits the extracted
/// files; the manifest's sums are recomputed, as someone with write access to the backup dir
/// could.
fn repack(dir: &Path, id: &str, new_id: &str, change: impl FnOnce(&Path)) {
    let work = tempfile::tempdir().expect("tmp");
    let mut ar =
        tar::Archive::new(std::fs::File::open(dir.join(format!("{id}.tar"))).expect("open"));
    let mut names = Vec::new();
    for e in ar.entries().expect("entries") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").to_string_lossy().to_string();
        let dest = work.path().join(&name);
        std::fs::create_dir_all(dest.parent().expect("parent")).expect("mkdir");
        let mut bytes = Vec::new();
        e.read_to_end(&mut bytes).expect("read");
        std::fs::write(&dest, bytes).expect("write");
        names.push(name);
    }
    change(work.path());
    let mut m: Value =
        serde_json::from_slice(&std::fs::read(work.path().join("manifest.json")).expect("m"))
            .expect("json");
    m["id"] = json!(new_id);
    for f in m["files"].as_array_mut().expect("files") {
        let Ok(bytes) = std::fs::read(work.path().join(f["path"].as_str().expect("p"))) else {
            continue; // an entry only the manifest has
        };
        f["sha256"] = json!(hex::encode(Sha256::digest(&bytes)));
        f["bytes"] = json!(bytes.len());
    }
    std::fs::write(
        work.path().join("manifest.json"),
        serde_json::to_vec(&m).expect("json"),
    )
    .expect("write");
    let out = std::fs::File::create(dir.join(format!("{new_id}.tar"))).expect("create");
    let mut b = tar::Builder::new(out);
    for n in names {
        b.append_path_with_name(work.path().join(&n), &n)
            .expect("append");
    }
    b.finish().expect("finish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_never_follows_a_planted_link() {
    let m = machine().await;
    let id = create(&m.d).await;
    let victim = m.root.path().join("victim");
    std::fs::write(&victim, "VICTIM ORIGINAL\n").expect("write");
    // The daemon owning the dir replaces its file by a link to a root-only file.
    std::fs::remove_file(m.keyd.join("note.txt")).expect("rm");
    std::os::unix::fs::symlink(&victim, m.keyd.join("note.txt")).expect("link");
    // And plants links at the old fixed temporary name.
    std::os::unix::fs::symlink(&victim, m.keyd.join(".note.txt.restore")).expect("link");
    let t = approved_ticket(&m.d, &id, false).await;
    let (status, body) = restore_with(&m.d, &id, &t, false).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "VICTIM ORIGINAL\n"
    );
    let meta = std::fs::symlink_metadata(m.keyd.join("note.txt")).expect("note");
    assert!(
        meta.is_file(),
        "the link was replaced by the file, not followed"
    );
    assert_eq!(
        std::fs::read_to_string(m.keyd.join("note.txt")).expect("note"),
        "hello\n"
    );

    // A directory on the way that became a link: refused before a ticket, nothing changed.
    let out = m.root.path().join("outside");
    std::fs::create_dir(&out).expect("mkdir");
    std::fs::create_dir(m.keyd.join("sub")).expect("mkdir");
    std::fs::write(m.keyd.join("sub/x"), "x\n").expect("write");
    let id2 = create(&m.d).await;
    std::fs::remove_dir_all(m.keyd.join("sub")).expect("rm");
    std::os::unix::fs::symlink(&out, m.keyd.join("sub")).expect("link");
    let r =
        m.d.agent()
            .post("/backup/restore", &json!({ "backup_id": id2 }))
            .await
            .expect("post");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("symbolic link"),
        "{}",
        r.body
    );
    assert_eq!(std::fs::read_dir(&out).expect("ls").count(), 0);
    m.d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_archived_ledger_with_a_trigger_or_a_bad_tree_commit_is_refused_before_a_ticket() {
    let m = machine().await;
    keyd_db(&m.keyd);
    let id = create(&m.d).await;
    let dir = m.root.path().join("backups");
    let trig = "20991231T000000000Z-0000cafe";
    repack(&dir, &id, trig, |w| {
        rusqlite::Connection::open(w.join("agentd/ledger.db"))
            .expect("db")
            .execute_batch("CREATE TRIGGER hide AFTER INSERT ON events BEGIN UPDATE events SET payload = '{}' WHERE id = NEW.id; END;")
            .expect("trigger");
    });
    let view = "20991231T000000000Z-0000beef";
    repack(&dir, &id, view, |w| {
        rusqlite::Connection::open(w.join("sources/keyd/keyd.db"))
            .expect("db")
            .execute_batch(
                "CREATE TABLE t (a); CREATE TRIGGER z AFTER INSERT ON t BEGIN DELETE FROM t; END;",
            )
            .expect("trigger");
    });
    let commit = "20991231T000000000Z-0000dead";
    repack(&dir, &id, commit, |w| {
        let p = w.join("manifest.json");
        let mut v: Value = serde_json::from_slice(&std::fs::read(&p).expect("m")).expect("json");
        v["tree"]["commit"] = json!("1".repeat(40));
        std::fs::write(&p, serde_json::to_vec(&v).expect("json")).expect("write");
    });
    let both = "20991231T000000000Z-0000f00d";
    repack(&dir, &id, both, |w| {
        let p = w.join("manifest.json");
        let mut v: Value = serde_json::from_slice(&std::fs::read(&p).expect("m")).expect("json");
        v["files"].as_array_mut().expect("files").push(json!({
            "path": "sources/keyd/note.txt/x", "kind": "file", "sha256": "0".repeat(64), "bytes": 0, "mode": 420,
        }));
        std::fs::write(&p, serde_json::to_vec(&v).expect("json")).expect("write");
    });
    for (bad, why) in [
        (trig, "trigger hide"),
        (view, "trigger z"),
        (commit, "not a head"),
        (both, "sources/keyd/note.txt is both a file and a directory"),
    ] {
        let r =
            m.d.agent()
                .post("/backup/restore", &json!({ "backup_id": bad }))
                .await
                .expect("post");
        assert_eq!(r.status, 422, "{bad}: {}", r.body);
        assert!(
            r.body["error"].as_str().unwrap_or_default().contains(why),
            "{bad}: {}",
            r.body
        );
    }
    m.d.stop().await;
}

/// A daemon's database in a source dir.
fn keyd_db(dir: &Path) {
    rusqlite::Connection::open(dir.join("keyd.db"))
        .expect("db")
        .execute_batch("CREATE TABLE items (k, v); INSERT INTO items VALUES ('a', 1);")
        .expect("db");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_since_the_backup_is_lost_and_no_used_ticket_comes_back() {
    let m = machine().await;
    keyd_db(&m.keyd);
    let x = create(&m.d).await;
    let tx = approved_ticket(&m.d, &x, false).await;
    // B2's ledger holds TX approved and unused.
    let b2 = create(&m.d).await;
    // Since then: a new wallet key, a person's uncommitted edit, events.
    std::fs::create_dir(m.keyd.join("wallets")).expect("mkdir");
    std::fs::write(m.keyd.join("wallets/w-new.key"), "NEW KEY\n").expect("write");
    let tree = m.d.tree_dir();
    let nix = tree.join("configuration.nix");
    let mut text = std::fs::read_to_string(&nix).expect("read");
    text.push_str("# uncommitted work of a person\n");
    std::fs::write(&nix, &text).expect("write");
    let before = m.d.state.ledger.tree_head().expect("head").size;

    let (status, done) = restore_with(&m.d, &x, &tx, false).await;
    assert_eq!(status, 200, "{done}");
    // The replaced ledger is kept whole, its file named; the approval survives in the record.
    let kept = PathBuf::from(done["replaced_ledger"]["file"].as_str().expect("file"));
    let n = osmoda_ledger::verify(&kept).expect("kept ledger").events;
    assert!(n >= before, "{n} < {before}");
    assert_eq!(done["approval"]["ticket"], json!(tx));
    assert!(done["approval"]["approved_by"].is_string(), "{done}");
    // The new key was moved aside, not deleted, and its path named.
    assert!(!m.keyd.join("wallets/w-new.key").exists());
    let aside = done["kept_aside"].as_array().expect("kept_aside");
    let k = aside
        .iter()
        .find(|k| k["path"] == json!("wallets/w-new.key"))
        .unwrap_or_else(|| panic!("{done}"));
    assert_eq!(
        std::fs::read_to_string(k["kept"].as_str().expect("kept")).expect("kept"),
        "NEW KEY\n"
    );
    // The uncommitted edit is kept under a named ref.
    let r = done["tree_uncommitted"]["ref"]
        .as_str()
        .expect("ref")
        .to_owned();
    assert!(
        r.starts_with(&format!("refs/osmoda/uncommitted-before-restore/{x}-r")),
        "{done}"
    );
    assert!(git(&tree, &["show", &format!("{r}:configuration.nix")])
        .contains("uncommitted work of a person"));
    assert_eq!(
        git(&tree, &["rev-parse", &r]).trim(),
        done["tree_uncommitted"]["commit"].as_str().expect("commit")
    );

    // Restoring B2 (whose ledger holds TX approved and unused) does not re-arm TX.
    let t2 = approved_ticket(&m.d, &b2, true).await;
    let (status, body) = restore_with(&m.d, &b2, &t2, true).await;
    assert_eq!(status, 200, "{body}");
    assert_ne!(
        body["replaced_ledger"]["file"], done["replaced_ledger"]["file"],
        "each restore keeps its own copy"
    );
    assert!(
        body["tickets_closed"]
            .as_array()
            .expect("closed")
            .contains(&json!(tx)),
        "{body}"
    );
    let (status, body) = restore_with(&m.d, &x, &tx, false).await;
    assert_eq!(status, 409, "a used ticket works once: {body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("already used"),
        "{body}"
    );
    m.d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinishable_restore_leaves_agentd_running_and_says_what_to_do() {
    let m = machine().await;
    let id = create(&m.d).await;
    let state = m.d.state.state_dir.clone();
    let head = m.d.state.ledger.tree_head().expect("head");
    // A journal whose staged archive is gone (a disk that failed under it).
    let journal = json!({
        "backup_id": id, "manifest_sha256": "0".repeat(64),
        "staging": m.root.path().join("backups/.restore-gone"),
        "manifest": { "format": "osmoda-backup/1", "id": id, "created_at": "2026-11-30T00:00:00Z",
            "ledger": { "size": head.size, "root": head.root }, "tree": null, "sources": {}, "files": [] },
        "previous": { "size": head.size, "root": head.root }, "targets": {}, "tree": null,
        "actor": "test", "ticket": null, "forced": false,
    });
    let d = m.d.restart().await;
    // restart() reopens without running recover(); run it as agentd's start does.
    std::fs::write(state.join("restore.json"), journal.to_string()).expect("journal");
    agentd::backup::restore::recover(&d.state)
        .await
        .expect("agentd starts anyway");
    let h = d.agent().get_ok("/health").await;
    let why = h["degraded"][0].as_str().unwrap_or_default().to_owned();
    assert!(
        why.contains("not finished") && why.contains("restore.json"),
        "{h}"
    );
    let failed = d
        .state
        .ledger
        .query(&osmoda_ledger::Query {
            kind: Some("agentd.restore.failed".into()),
            ..Default::default()
        })
        .expect("query");
    assert_eq!(failed.len(), 1);
    let r = d
        .agent()
        .post("/backup/restore", &json!({ "backup_id": id }))
        .await
        .expect("post");
    assert_eq!(r.status, 409, "{}", r.body);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_records_what_it_deletes_and_says_when_the_ledger_is_broken() {
    let root = tempfile::tempdir().expect("tmp");
    let keyd = root.path().join("keyd");
    std::fs::create_dir_all(&keyd).expect("mkdir");
    // A note that starts like an SQLite database is archived as the file it is.
    std::fs::write(keyd.join("fake.md"), b"SQLite format 3\0 just a note").expect("write");
    let d = Daemon::start_with(agentd::Settings {
        backup: agentd::backup::BackupSettings {
            dir: Some(root.path().join("backups")),
            keep: Some(1),
            sources: BTreeMap::from([("keyd".to_string(), keyd.clone())]),
        },
        ..agentd::Settings::default()
    })
    .await;
    let first = create(&d).await;
    let second = d.agent().post_ok("/backup/create", &json!({})).await;
    assert!(second.get("warnings").is_none(), "{second}");
    let deleted = d
        .state
        .ledger
        .query(&osmoda_ledger::Query {
            kind: Some("backup.deleted".into()),
            ..Default::default()
        })
        .expect("query");
    assert_eq!(deleted.len(), 1);
    assert!(
        deleted[0].payload.contains(&first),
        "{}",
        deleted[0].payload
    );
    // Nobody else may write agentd's backup records.
    let r = d
        .agent()
        .post(
            "/events/append",
            &json!({ "type": "backup.restored", "daemon": "tester", "payload": { "backup_id": first } }),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 400, "{}", r.body);
    // A broken row in the live ledger: the backup still runs and says so.
    rusqlite::Connection::open(d.state.state_dir.join("ledger.db"))
        .expect("db")
        .execute("UPDATE events SET payload = '{\"x\":1}' WHERE id = 1", [])
        .expect("tamper");
    let third = d.agent().post_ok("/backup/create", &json!({})).await;
    let w = third["warnings"][0].as_str().unwrap_or_default();
    assert!(w.contains("event 1"), "{third}");
    d.stop().await;
}

/// Whether any archive in `dir` holds `needle` (an archive is a plain tar: its bytes hold
/// every file's content as is).
fn archives_holding(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("ls")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "tar"))
        .filter(|p| {
            let bytes = std::fs::read(p).expect("archive");
            bytes.windows(needle.len()).any(|w| w == needle)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_never_reads_through_a_link_swapped_in_while_it_runs() {
    let m = machine().await;
    // Root-only things outside the source: a file, a directory with a file, a database.
    let secret = m.root.path().join("secret");
    std::fs::write(&secret, "TOPSECRET-file\n").expect("write");
    let outside = m.root.path().join("outside");
    std::fs::create_dir(&outside).expect("mkdir");
    std::fs::write(outside.join("x"), "TOPSECRET-dir\n").expect("write");
    let secret_db = m.root.path().join("secret.db");
    rusqlite::Connection::open(&secret_db)
        .expect("db")
        .execute_batch("CREATE TABLE s (v); INSERT INTO s VALUES ('TOPSECRET-db');")
        .expect("db");
    keyd_db(&m.keyd);
    std::fs::create_dir(m.keyd.join("sub")).expect("mkdir");
    std::fs::write(m.keyd.join("sub/x"), "harmless\n").expect("write");
    // The daemon owning the dir swaps each name between the real thing and a link, as fast
    // as it can, while backups run.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flipper = {
        let (stop, k) = (stop.clone(), m.keyd.clone());
        let (secret, outside, secret_db) = (secret.clone(), outside.clone(), secret_db.clone());
        std::thread::spawn(move || {
            let real_db = k.join(".real.db");
            std::fs::copy(k.join("keyd.db"), &real_db).expect("copy");
            let mut flips = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let link = flips % 2 == 0;
                for (name, target, real) in [
                    ("note.txt", &secret, None),
                    ("sub", &outside, None),
                    ("keyd.db", &secret_db, Some(&real_db)),
                ] {
                    let tmp = k.join(format!(".{name}.flip"));
                    let _ = std::fs::remove_file(&tmp);
                    let _ = std::fs::remove_dir_all(&tmp);
                    if link {
                        std::os::unix::fs::symlink(target, &tmp).expect("link");
                    } else if name == "sub" {
                        std::fs::create_dir(&tmp).expect("mkdir");
                        std::fs::write(tmp.join("x"), "harmless\n").expect("write");
                    } else if let Some(real) = real {
                        std::fs::copy(real, &tmp).expect("copy");
                    } else {
                        std::fs::write(&tmp, "harmless\n").expect("write");
                    }
                    let dest = k.join(name);
                    if !link && name == "sub" && dest.is_symlink() {
                        let _ = std::fs::remove_file(&dest);
                    }
                    if link && name == "sub" && dest.is_dir() && !dest.is_symlink() {
                        let _ = std::fs::remove_dir_all(&dest);
                    }
                    let _ = std::fs::rename(&tmp, &dest);
                }
                flips += 1;
            }
            flips
        })
    };
    let backups = m.root.path().join("backups");
    let mut made = 0;
    for _ in 0..20 {
        let r =
            m.d.agent()
                .post("/backup/create", &json!({}))
                .await
                .expect("post");
        // A database swapped during its snapshot fails that backup, clearly.
        if r.status == 200 {
            made += 1;
        } else {
            assert!(
                r.body["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("replaced while it was archived"),
                "{}: {}",
                r.status,
                r.body
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let flips = flipper.join().expect("flipper");
    assert!(flips > 20, "the swaps ran ({flips})");
    eprintln!("{made} of 20 backups made during {flips} swaps");
    // Once the swapping stops, a backup is made again (the files restored to regular ones).
    create(&m.d).await;
    assert_eq!(
        archives_holding(&backups, b"TOPSECRET"),
        Vec::<PathBuf>::new(),
        "no outside file entered an archive"
    );
    m.d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_append_acknowledged_during_a_restore_is_kept_or_restored() {
    let m = machine().await;
    let id = create(&m.d).await;
    for round in 0..2 {
        let t = approved_ticket(&m.d, &id, false).await;
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..3 {
            let (client, stop) = (m.d.agent(), stop.clone());
            writers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut n = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let r = client
                        .post(
                            "/events/append",
                            &json!({ "type": "test.append", "daemon": "tester",
                                     "payload": { "w": w, "n": n, "round": round } }),
                        )
                        .await
                        .expect("post");
                    if r.status == 200 {
                        acked.push(format!("{w}/{n}/{round}"));
                    }
                    n += 1;
                }
                acked
            }));
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (status, body) = restore_with(&m.d, &id, &t, false).await;
        assert_eq!(status, 200, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut acked = Vec::new();
        for w in writers {
            acked.extend(w.await.expect("writer"));
        }
        let seen = |ledger: &Path| -> std::collections::BTreeSet<String> {
            let c = rusqlite::Connection::open(ledger).expect("ledger");
            let mut s = c
                .prepare("SELECT payload FROM events WHERE type = 'test.append'")
                .expect("query");
            s.query_map([], |r| r.get::<_, String>(0))
                .expect("rows")
                .map(|p| {
                    let v: Value = serde_json::from_str(&p.expect("row")).expect("json");
                    format!("{}/{}/{}", v["w"], v["n"], v["round"])
                })
                .collect()
        };
        let kept = PathBuf::from(body["replaced_ledger"]["file"].as_str().expect("file"));
        let mut all = seen(&kept);
        all.extend(seen(&m.d.state.state_dir.join("ledger.db")));
        let lost: Vec<&String> = acked.iter().filter(|a| !all.contains(*a)).collect();
        assert!(
            acked.len() > 10,
            "round {round}: appends ran ({})",
            acked.len()
        );
        assert!(
            lost.is_empty(),
            "round {round}: acknowledged and lost: {lost:?}"
        );
    }
    m.d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_an_interrupted_backup_left_is_removed_at_start() {
    let m = machine().await;
    let id = create(&m.d).await;
    let dir = m.root.path().join("backups");
    let part = dir.join(".20261130T000000000Z-deadbeef.tar.part");
    std::fs::write(&part, vec![0u8; 4096]).expect("part");
    std::fs::create_dir(dir.join(".work-20261130T000000000Z-deadbeef")).expect("work");
    std::fs::write(dir.join("unrelated.part"), "not agentd's").expect("write");
    agentd::backup::restore::recover(&m.d.state)
        .await
        .expect("recover");
    assert!(!part.exists(), "the half-written archive is removed");
    assert!(!dir.join(".work-20261130T000000000Z-deadbeef").exists());
    assert!(dir.join(format!("{id}.tar")).is_file(), "archives stay");
    assert!(
        dir.join("unrelated.part").exists(),
        "only what agentd names"
    );
    m.d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_do_not_queue_up_and_a_backup_needs_the_space_it_writes() {
    let m = machine().await;
    // Big enough that a create takes a while.
    std::fs::write(m.keyd.join("big"), vec![7u8; 8 * 1024 * 1024]).expect("write");
    let asks: Vec<_> = (0..6)
        .map(|_| {
            let c = m.d.agent();
            tokio::spawn(async move { c.post("/backup/create", &json!({})).await.expect("post") })
        })
        .collect();
    let mut made = 0;
    let mut refused = 0;
    for a in asks {
        let r = a.await.expect("join");
        match r.status {
            200 => made += 1,
            409 => {
                assert_eq!(r.body["detail"]["retryable"], json!(true), "{}", r.body);
                assert!(
                    r.body["error"]
                        .as_str()
                        .unwrap_or_default()
                        .contains("already being made"),
                    "{}",
                    r.body
                );
                refused += 1;
            }
            s => panic!("{s}: {}", r.body),
        }
    }
    assert!(made >= 1 && refused >= 1, "made {made}, refused {refused}");
    let archives = std::fs::read_dir(m.root.path().join("backups"))
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tar"))
        .count();
    assert_eq!(archives, made, "each refused ask wrote nothing");

    // A source larger than the free space (a sparse file: its size, none of its blocks).
    let free = nix::sys::statvfs::statvfs(&m.root.path().join("backups")).expect("statvfs");
    let huge = u64::from(free.blocks_available()) * u64::from(free.fragment_size()) + (1 << 30);
    std::fs::File::create(m.keyd.join("huge"))
        .and_then(|f| f.set_len(huge))
        .expect("sparse");
    let r =
        m.d.agent()
            .post("/backup/create", &json!({}))
            .await
            .expect("post");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not enough free space"),
        "{}",
        r.body
    );
    let left: Vec<String> = std::fs::read_dir(m.root.path().join("backups"))
        .expect("ls")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    m.d.stop().await;
}
