//! `Ledger::snapshot_to` and `Ledger::restore_from`: a consistent copy while appends go on, and
//! a replacement in one transaction after which appends continue the restored chain; a file that
//! is not a ledger changes nothing.

use osmoda_ledger::{verify, Ledger, LedgerError, NewEvent};

fn ev(i: usize) -> NewEvent {
    NewEvent::new("test.event", "tester", format!("{{\"i\":{i}}}"))
}

#[test]
fn a_snapshot_restores_and_the_chain_continues_from_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let ledger = Ledger::open(&dir.path().join("ledger.db")).expect("open");
    for i in 0..10 {
        ledger.append_blocking(ev(i)).expect("append");
    }
    let snap = dir.path().join("snap.db");
    ledger.snapshot_to(&snap).expect("snapshot");
    assert!(
        matches!(ledger.snapshot_to(&snap), Err(LedgerError::Io { .. })),
        "never over an existing file"
    );
    let root10 = ledger.tree_head().expect("head").root;
    for i in 10..15 {
        ledger.append_blocking(ev(i)).expect("append");
    }
    assert!(verify(&snap).expect("verify").is_ok());

    ledger.restore_from(&snap).expect("restore");
    let head = ledger.head().expect("head");
    assert_eq!(head.events, 10);
    assert_eq!(ledger.tree_head().expect("tree").root, root10);
    let next = ledger.append_blocking(ev(99)).expect("append");
    assert_eq!(next.id, 11);
    assert_eq!(next.prev_hash, head.last_hash);
    assert_eq!(ledger.tree_head().expect("tree").size, 11);
    assert!(verify(&dir.path().join("ledger.db"))
        .expect("verify")
        .is_ok());
    // Search sees the restored rows, not the replaced ones.
    assert_eq!(ledger.search("99", 10).expect("search").len(), 1);
}

#[test]
fn a_file_that_is_not_a_ledger_changes_nothing() {
    let dir = tempfile::tempdir().expect("tmp");
    let ledger = Ledger::open(&dir.path().join("ledger.db")).expect("open");
    for i in 0..3 {
        ledger.append_blocking(ev(i)).expect("append");
    }
    let before = ledger.head().expect("head");
    let other = dir.path().join("other.db");
    rusqlite::Connection::open(&other)
        .expect("db")
        .execute_batch("CREATE TABLE items (x)")
        .expect("table");
    let text = dir.path().join("text");
    std::fs::write(&text, "not a database at all, just some words").expect("write");
    for bad in [other, text, dir.path().join("missing.db")] {
        assert!(ledger.restore_from(&bad).is_err(), "{}", bad.display());
        assert_eq!(ledger.head().expect("head"), before, "{}", bad.display());
    }
    ledger.append_blocking(ev(3)).expect("still appends");
}
