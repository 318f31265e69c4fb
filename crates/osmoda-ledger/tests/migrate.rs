//! Ledgers of schema version 3 (the tree as one `tree_hashes` row per stored hash plus a
//! `tree_state` row) are upgraded in place at open, in one transaction, keeping the hashes they
//! stored (not recomputing them from the rows), and can be restored from a backup.
//!
//! The version-3 layout is written here the way version 3's writer wrote it: for each record,
//! `tlog_tiles::stored_hashes_for_record_hash` at `stored_hash_index(0, n)`, one row per hash.

use osmoda_ledger::{
    hash_hex, leaf_hash, verify_consistency, verify_inclusion, Ledger, LedgerError, NewEvent,
    RootBuilder, TreeHead,
};
use rusqlite::Connection;
use std::collections::HashMap;
use std::path::Path;
use tlog_tiles::{stored_hash_index, stored_hashes_for_record_hash, Hash, HashReader};

struct Mem(HashMap<u64, Hash>);

impl HashReader for Mem {
    fn read_hashes(&self, ix: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        ix.iter()
            .map(|i| {
                self.0
                    .get(i)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

fn ev(i: usize) -> NewEvent {
    NewEvent::new("test.event", "tester", format!(r#"{{"i":{i}}}"#))
}

/// A ledger of `n` events appended by 4 threads (so batches of several events), closed.
fn ledger_with(path: &Path, n: usize) -> TreeHead {
    let ledger = Ledger::open(path).expect("open");
    std::thread::scope(|s| {
        for t in 0..4 {
            let ledger = ledger.clone();
            s.spawn(move || {
                for i in (t..n).step_by(4) {
                    ledger.append_blocking(ev(i)).expect("append");
                }
            });
        }
    });
    ledger.tree_head().expect("head")
}

/// Rewrites the file's tree as version 3 stored it (from the event rows as they are now) and
/// marks it version 3. Returns the number of hash rows written.
fn make_v3(path: &Path) -> usize {
    let conn = Connection::open(path).expect("sqlite");
    let hashes: Vec<(i64, String)> = conn
        .prepare("SELECT id, hash FROM events ORDER BY id")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let mut mem = Mem(HashMap::new());
    for (n, (_, h)) in hashes.iter().enumerate() {
        let n = n as u64;
        let stored = stored_hashes_for_record_hash(n, leaf_hash(h), &mem).expect("hashes");
        for (k, s) in stored.into_iter().enumerate() {
            mem.0.insert(stored_hash_index(0, n) + k as u64, s);
        }
    }
    conn.execute_batch(
        "DROP TABLE tree_runs;
         CREATE TABLE tree_hashes (idx INTEGER PRIMARY KEY, hash BLOB NOT NULL);
         CREATE TABLE tree_state (id INTEGER PRIMARY KEY CHECK (id = 1), size INTEGER NOT NULL, last_id INTEGER NOT NULL);
         PRAGMA user_version = 3;",
    )
    .expect("v3 schema");
    let mut insert = conn
        .prepare("INSERT INTO tree_hashes (idx, hash) VALUES (?1, ?2)")
        .expect("prepare");
    for (idx, h) in &mem.0 {
        insert.execute((*idx as i64, &h.0[..])).expect("insert");
    }
    let last_id = hashes.last().map_or(0, |(id, _)| *id);
    conn.execute(
        "INSERT INTO tree_state (id, size, last_id) VALUES (1, ?1, ?2)",
        (hashes.len() as i64, last_id),
    )
    .expect("state");
    mem.0.len()
}

fn tables(path: &Path) -> (i64, Vec<String>) {
    let conn = Connection::open(path).expect("sqlite");
    let version = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .expect("version");
    let names = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'tree%' ORDER BY name")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("names");
    (version, names)
}

fn rows_root(ledger: &Ledger, size: u64) -> String {
    let mut b = RootBuilder::new();
    for id in 1..=size as i64 {
        b.push(leaf_hash(
            &ledger.get(id).expect("get").expect("event").hash,
        ));
    }
    hash_hex(&b.root())
}

#[test]
fn a_version_3_ledger_is_upgraded_in_place_keeping_its_stored_hashes() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ledger.db");
    let head = ledger_with(&path, 1000);
    let hash_rows = make_v3(&path);
    assert!(hash_rows > 1900, "{hash_rows} version-3 rows");
    assert_eq!(
        tables(&path),
        (3, vec!["tree_hashes".into(), "tree_state".into()])
    );
    // Changed after it was appended (the stored leaf is the evidence): the upgrade must move
    // the stored leaf, not recompute it from the row.
    Connection::open(&path)
        .expect("sqlite")
        .execute(
            "UPDATE events SET hash = ?1 WHERE id = 7",
            ["ab".repeat(32)],
        )
        .expect("tamper");

    let ledger = Ledger::open(&path).expect("open upgrades");
    assert_eq!(tables(&path), (4, vec!["tree_runs".into()]));
    let runs: i64 = Connection::open(&path)
        .expect("sqlite")
        .query_row("SELECT count(*) FROM tree_runs", [], |r| r.get(0))
        .expect("count");
    assert!(runs <= (hash_rows / 256 + 2) as i64, "{runs} runs");
    assert_eq!(ledger.tree_head().expect("head"), head);
    match ledger.inclusion_proof(7, None) {
        Err(LedgerError::Malformed(m)) => assert!(m.contains("event 7"), "{m}"),
        other => panic!("the moved leaf must still expose the change, got {other:?}"),
    }
    for id in [1, 6, 8, 500, 999, 1000] {
        verify_inclusion(&ledger.inclusion_proof(id, None).expect("proof")).expect("verifies");
    }
    verify_consistency(&ledger.consistency_proof(333, 1000).expect("c")).expect("consistent");
    // Appends continue the upgraded tree.
    for i in 1000..1010 {
        ledger.append_blocking(ev(i)).expect("append");
    }
    let grown = ledger.tree_head().expect("head");
    assert_eq!(grown.size, 1010);
    verify_consistency(&ledger.consistency_proof(1000, 1010).expect("c")).expect("consistent");
    assert_eq!(ledger.root_at(1000).expect("root"), head.root);
    drop(ledger);
    // A second open changes nothing.
    let again = Ledger::open(&path).expect("reopen");
    assert_eq!(again.tree_head().expect("head"), grown);
}

#[test]
fn a_damaged_version_3_tree_keeps_its_intact_prefix_and_is_rebuilt_from_there() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ledger.db");
    let head = ledger_with(&path, 300);
    make_v3(&path);
    let conn = Connection::open(&path).expect("sqlite");
    // Leaf 100's hash row is gone, leaf 5's event was changed afterwards.
    conn.execute(
        "DELETE FROM tree_hashes WHERE idx = ?1",
        [stored_hash_index(0, 100) as i64],
    )
    .expect("delete");
    let e5 = conn
        .query_row("SELECT hash FROM events WHERE id = 5", [], |r| {
            r.get::<_, String>(0)
        })
        .expect("e5");
    conn.execute(
        "UPDATE events SET hash = ?1 WHERE id = 5",
        ["cd".repeat(32)],
    )
    .expect("tamper");
    drop(conn);
    let ledger = Ledger::open(&path).expect("open");
    let now = ledger.tree_head().expect("head");
    assert_eq!(now.size, 300);
    // Leaves 0..100 are the stored ones (leaf 4 still the original), the rest from the rows.
    assert!(matches!(
        ledger.inclusion_proof(5, None),
        Err(LedgerError::Malformed(_))
    ));
    let mut b = RootBuilder::new();
    for id in 1..=300i64 {
        let h = if id == 5 {
            e5.clone()
        } else {
            ledger.get(id).expect("get").expect("event").hash
        };
        b.push(leaf_hash(&h));
    }
    assert_eq!(now.root, hash_hex(&b.root()));
    // Only leaf 4's row was changed, and its stored leaf was kept: the root is the original.
    assert_eq!(now.root, head.root);
    verify_inclusion(&ledger.inclusion_proof(250, None).expect("proof")).expect("verifies");
}

#[test]
fn the_upgrade_is_one_transaction() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ledger.db");
    let head = ledger_with(&path, 1000);
    let hash_rows = make_v3(&path);
    // Make the upgrade fail after it has written some runs (the table is created here, empty,
    // as the upgrade itself would, only to hang the trigger on it).
    let conn = Connection::open(&path).expect("sqlite");
    conn.execute_batch(
        "CREATE TABLE tree_runs (first INTEGER PRIMARY KEY, size INTEGER NOT NULL, \
         last_id INTEGER NOT NULL, hashes BLOB NOT NULL); \
         CREATE TRIGGER fail_late BEFORE INSERT ON tree_runs WHEN NEW.size > 700 \
         BEGIN SELECT RAISE(ABORT, 'injected failure'); END;",
    )
    .expect("trigger");
    match Ledger::open(&path) {
        Err(e) => assert!(e.to_string().contains("injected failure"), "{e}"),
        Ok(_) => panic!("the upgrade should have failed"),
    }
    // Nothing of it stayed: still version 3 with every hash row and no run.
    assert_eq!(
        tables(&path),
        (
            3,
            vec![
                "tree_hashes".into(),
                "tree_runs".into(),
                "tree_state".into()
            ]
        )
    );
    let (left, runs): (i64, i64) = conn
        .query_row(
            "SELECT (SELECT count(*) FROM tree_hashes), (SELECT count(*) FROM tree_runs)",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("count");
    assert_eq!((left as usize, runs), (hash_rows, 0));
    conn.execute_batch("DROP TRIGGER fail_late")
        .expect("drop trigger");
    drop(conn);
    let ledger = Ledger::open(&path).expect("open");
    assert_eq!(ledger.tree_head().expect("head"), head);
    assert_eq!(rows_root(&ledger, 1000), head.root);
}

#[test]
fn a_version_3_backup_is_restored_and_upgraded() {
    let dir = tempfile::tempdir().expect("tmp");
    let old = dir.path().join("old.db");
    let head = ledger_with(&old, 120);
    make_v3(&old);
    let live_path = dir.path().join("live.db");
    let live = Ledger::open(&live_path).expect("open");
    for i in 0..5 {
        live.append_blocking(ev(1000 + i)).expect("append");
    }
    live.restore_from(&old).expect("restore a version-3 file");
    assert_eq!(live.tree_head().expect("head"), head);
    assert_eq!(tables(&live_path), (4, vec!["tree_runs".into()]));
    let next = live.append_blocking(ev(120)).expect("append");
    assert_eq!(next.id, 121);
    assert_eq!(live.tree_head().expect("head").size, 121);
    assert_eq!(rows_root(&live, 121), live.tree_head().expect("head").root);
    // Version 2 (no tree) or a future version is still refused, changing nothing.
    for version in [2, 5] {
        let other = dir.path().join(format!("v{version}.db"));
        ledger_with(&other, 3);
        Connection::open(&other)
            .expect("sqlite")
            .pragma_update(None, "user_version", version)
            .expect("version");
        match live.restore_from(&other) {
            Err(LedgerError::Malformed(m)) => assert!(m.contains("nothing was restored"), "{m}"),
            r => panic!("version {version}: {r:?}"),
        }
        assert_eq!(live.tree_head().expect("head").size, 121);
    }
}
