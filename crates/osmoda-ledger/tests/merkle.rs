//! The Merkle tree of a real ledger: it follows every append (batched and concurrent), survives
//! reopening, is built for ledgers from before it, and serves proofs that verify; bad requests
//! and edited rows are refused.

use osmoda_ledger::{
    hash_hex, leaf_hash, verify_consistency, verify_inclusion, Ledger, LedgerError, NewEvent,
    OpenOptions, Query, RootBuilder,
};
use rusqlite::Connection;
use std::path::Path;

fn ev(i: usize) -> NewEvent {
    NewEvent::new("test.event", "tester", format!(r#"{{"i":{i}}}"#))
}

/// The root recomputed from the event rows, independently of the stored tree.
fn recomputed_root(ledger: &Ledger, size: usize) -> String {
    let events = ledger
        .query(&Query {
            limit: Some(10_000),
            ..Default::default()
        })
        .expect("query");
    let mut b = RootBuilder::new();
    for e in events.iter().take(size) {
        b.push(leaf_hash(&e.hash));
    }
    hash_hex(&b.root())
}

#[test]
fn every_append_extends_the_tree_and_every_proof_verifies() {
    let dir = tempfile::tempdir().expect("tmp");
    let ledger = Ledger::open(&dir.path().join("ledger.db")).expect("open");
    let empty = ledger.tree_head().expect("head");
    assert_eq!(empty.size, 0);
    assert_eq!(
        empty.root,
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
    let mut roots = vec![empty.root];
    for i in 0..37 {
        ledger.append_blocking(ev(i)).expect("append");
        let head = ledger.tree_head().expect("head");
        assert_eq!(head.size, i as u64 + 1);
        assert_eq!(head.root, recomputed_root(&ledger, i + 1), "size {}", i + 1);
        roots.push(head.root);
    }
    for size in 1..=37u64 {
        assert_eq!(ledger.root_at(size).expect("root"), roots[size as usize]);
        for id in 1..=size as i64 {
            let p = ledger.inclusion_proof(id, Some(size)).expect("inclusion");
            assert_eq!(p.root, roots[size as usize]);
            verify_inclusion(&p).expect("inclusion verifies");
        }
        for from in 0..=size {
            let p = ledger.consistency_proof(from, size).expect("consistency");
            assert_eq!(p.from_root, roots[from as usize]);
            assert_eq!(p.to_root, roots[size as usize]);
            verify_consistency(&p).expect("consistency verifies");
        }
    }
    // A proof with a changed element or for another event does not verify.
    let mut p = ledger.inclusion_proof(5, None).expect("inclusion");
    p.proof[1] = p.proof[0].clone();
    assert!(matches!(
        verify_inclusion(&p),
        Err(LedgerError::ProofFailed(_))
    ));
    let mut p = ledger.inclusion_proof(5, None).expect("inclusion");
    p.event_hash = ledger.get(6).expect("get").expect("event 6").hash;
    assert!(matches!(
        verify_inclusion(&p),
        Err(LedgerError::ProofFailed(_))
    ));
    let mut c = ledger.consistency_proof(10, 37).expect("consistency");
    c.from_root = roots[11].clone();
    assert!(matches!(
        verify_consistency(&c),
        Err(LedgerError::ProofFailed(_))
    ));
}

#[test]
fn concurrent_batches_build_the_same_tree_as_the_rows() {
    let dir = tempfile::tempdir().expect("tmp");
    let ledger = Ledger::open(&dir.path().join("ledger.db")).expect("open");
    std::thread::scope(|s| {
        for t in 0..8 {
            let l = ledger.clone();
            s.spawn(move || {
                for i in 0..125 {
                    l.append_blocking(ev(t * 1000 + i)).expect("append");
                }
            });
        }
    });
    assert!(ledger.stats().transactions < 1000, "appends were batched");
    let head = ledger.tree_head().expect("head");
    assert_eq!(head.size, 1000);
    assert_eq!(head.root, recomputed_root(&ledger, 1000));
    verify_inclusion(&ledger.inclusion_proof(777, None).expect("p")).expect("verifies");
}

#[test]
fn the_tree_survives_reopening_and_keeps_growing() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ledger.db");
    let first = {
        let ledger = Ledger::open(&path).expect("open");
        for i in 0..11 {
            ledger.append_blocking(ev(i)).expect("append");
        }
        ledger.tree_head().expect("head")
    };
    let ledger = Ledger::open(&path).expect("reopen");
    assert_eq!(ledger.tree_head().expect("head"), first);
    for i in 11..30 {
        ledger.append_blocking(ev(i)).expect("append");
    }
    assert_eq!(
        ledger.tree_head().expect("head").root,
        recomputed_root(&ledger, 30)
    );
    verify_consistency(&ledger.consistency_proof(11, 30).expect("c")).expect("consistent");
}

/// Drops the tree as a ledger of schema version 2 (before the tree) had none.
fn make_pre_tree(path: &Path) {
    let conn = Connection::open(path).expect("sqlite");
    conn.execute_batch("DROP TABLE tree_runs; PRAGMA user_version = 2;")
        .expect("drop tree");
}

#[test]
fn a_ledger_from_before_the_tree_gets_one_at_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ledger.db");
    let full = {
        let ledger = Ledger::open(&path).expect("open");
        for i in 0..50 {
            ledger.append_blocking(ev(i)).expect("append");
        }
        ledger.tree_head().expect("head")
    };
    make_pre_tree(&path);
    let ledger = Ledger::open(&path).expect("reopen");
    assert_eq!(ledger.tree_head().expect("head"), full);
    ledger.append_blocking(ev(50)).expect("append");
    assert_eq!(
        ledger.tree_head().expect("head").root,
        recomputed_root(&ledger, 51)
    );
}

#[test]
fn appends_with_the_tree_off_are_covered_at_the_next_open() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ledger.db");
    {
        let ledger = Ledger::open(&path).expect("open");
        for i in 0..5 {
            ledger.append_blocking(ev(i)).expect("append");
        }
    }
    {
        let off = OpenOptions {
            merkle_tree: false,
            ..Default::default()
        };
        let ledger = Ledger::open_with(&path, off).expect("open without tree");
        for i in 5..20 {
            ledger.append_blocking(ev(i)).expect("append");
        }
        assert_eq!(ledger.tree_head().expect("head").size, 5, "the tree lags");
    }
    let ledger = Ledger::open(&path).expect("open with tree");
    let head = ledger.tree_head().expect("head");
    assert_eq!(head.size, 20);
    assert_eq!(head.root, recomputed_root(&ledger, 20));
}

#[test]
fn bad_proof_requests_are_refused_with_the_valid_range() {
    let dir = tempfile::tempdir().expect("tmp");
    let ledger = Ledger::open(&dir.path().join("ledger.db")).expect("open");
    for i in 0..4 {
        ledger.append_blocking(ev(i)).expect("append");
    }
    let invalid = |r: Result<_, LedgerError>| match r {
        Err(LedgerError::InvalidQuery(m)) => m,
        other => panic!("expected InvalidQuery, got {other:?}"),
    };
    assert!(invalid(ledger.inclusion_proof(0, None).map(|_| ())).contains("1..=4"));
    assert!(invalid(ledger.inclusion_proof(5, None).map(|_| ())).contains("1..=4"));
    assert!(invalid(ledger.inclusion_proof(-3, None).map(|_| ())).contains("1..=4"));
    assert!(invalid(ledger.inclusion_proof(3, Some(2)).map(|_| ())).contains("1..=2"));
    assert!(
        invalid(ledger.inclusion_proof(1, Some(9)).map(|_| ())).contains("larger than the tree")
    );
    assert!(invalid(ledger.consistency_proof(3, 2).map(|_| ())).contains("larger than to"));
    assert!(invalid(ledger.consistency_proof(1, 5).map(|_| ())).contains("larger than the tree"));
    assert!(invalid(ledger.root_at(5).map(|_| ())).contains("larger than the tree"));
}

#[test]
fn an_edited_row_gets_no_inclusion_proof() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(&path).expect("open");
    for i in 0..6 {
        ledger.append_blocking(ev(i)).expect("append");
    }
    let conn = Connection::open(&path).expect("sqlite");
    // Rewrite event 3 with a consistent hash of its own; the tree still holds the old leaf.
    let e = ledger.get(3).expect("get").expect("event 3");
    let forged = osmoda_ledger::event_hash(
        3,
        &e.ts,
        &e.kind,
        &e.actor,
        r#"{"i":"forged"}"#,
        &e.prev_hash,
    );
    conn.execute(
        "UPDATE events SET payload = '{\"i\":\"forged\"}', hash = ?1 WHERE id = 3",
        [&forged],
    )
    .expect("tamper");
    match ledger.inclusion_proof(3, None) {
        Err(LedgerError::Malformed(m)) => assert!(m.contains("event 3"), "{m}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
    conn.execute("DELETE FROM events WHERE id = 4", [])
        .expect("delete");
    assert!(matches!(
        ledger.inclusion_proof(4, None),
        Err(LedgerError::NotFound(_))
    ));
    verify_inclusion(&ledger.inclusion_proof(5, None).expect("untouched row")).expect("ok");
}
