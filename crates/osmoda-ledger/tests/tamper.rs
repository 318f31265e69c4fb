//! `verify` against ledgers edited behind the library's back with a raw SQLite connection.

use osmoda_ledger::{event_hash, verify, BadEvent, BadReason, Ledger, NewEvent};
use rusqlite::Connection;
use std::path::{Path, PathBuf};

/// A ledger with `n` events, closed again, plus its temp dir.
fn ledger_with(n: usize) -> anyhow::Result<(tempfile::TempDir, PathBuf)> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(&path)?;
    for i in 1..=n {
        ledger.append_blocking(NewEvent::new(
            "test.event",
            "tester",
            format!("{{\"i\":{i}}}"),
        ))?;
    }
    drop(ledger);
    assert!(verify(&path)?.is_ok());
    Ok((dir, path))
}

fn first_bad(path: &Path) -> anyhow::Result<Option<BadEvent>> {
    let report = verify(path)?;
    Ok(report.first_bad)
}

fn raw(path: &Path) -> anyhow::Result<Connection> {
    Ok(Connection::open(path)?)
}

#[test]
fn edited_payload_is_a_hash_mismatch() -> anyhow::Result<()> {
    let (_dir, path) = ledger_with(10)?;
    raw(&path)?.execute("UPDATE events SET payload = '{\"i\":999}' WHERE id = 4", [])?;
    assert_eq!(
        first_bad(&path)?,
        Some(BadEvent {
            id: 4,
            reason: BadReason::HashMismatch
        })
    );
    Ok(())
}

#[test]
fn edited_timestamp_actor_and_type_are_hash_mismatches() -> anyhow::Result<()> {
    for (column, value) in [
        ("ts", "2000-01-01T00:00:00.000Z"),
        ("actor", "someone"),
        ("type", "other"),
    ] {
        let (_dir, path) = ledger_with(5)?;
        raw(&path)?.execute(
            &format!("UPDATE events SET {column} = ?1 WHERE id = 2"),
            [value],
        )?;
        assert_eq!(
            first_bad(&path)?,
            Some(BadEvent {
                id: 2,
                reason: BadReason::HashMismatch
            }),
            "{column}"
        );
    }
    Ok(())
}

#[test]
fn deleted_row_is_a_gap() -> anyhow::Result<()> {
    let (_dir, path) = ledger_with(10)?;
    raw(&path)?.execute("DELETE FROM events WHERE id = 6", [])?;
    let report = verify(&path)?;
    assert_eq!(report.events, 9);
    assert_eq!(
        report.first_bad,
        Some(BadEvent {
            id: 7,
            reason: BadReason::Gap { expected: 6 }
        })
    );
    Ok(())
}

#[test]
fn deleted_first_row_is_a_gap() -> anyhow::Result<()> {
    let (_dir, path) = ledger_with(3)?;
    raw(&path)?.execute("DELETE FROM events WHERE id = 1", [])?;
    assert_eq!(
        first_bad(&path)?,
        Some(BadEvent {
            id: 2,
            reason: BadReason::Gap { expected: 1 }
        })
    );
    Ok(())
}

#[test]
fn swapped_rows_break_the_link() -> anyhow::Result<()> {
    let (_dir, path) = ledger_with(10)?;
    let conn = raw(&path)?;
    // Swap everything but the ids of rows 3 and 4, i.e. reorder two events.
    conn.execute_batch(
        "CREATE TEMP TABLE t AS SELECT * FROM events WHERE id IN (3, 4);
         UPDATE events SET (ts, type, actor, payload, prev_hash, hash) =
           (SELECT ts, type, actor, payload, prev_hash, hash FROM t WHERE t.id = 7 - events.id)
         WHERE id IN (3, 4);",
    )?;
    let swapped: String =
        conn.query_row("SELECT payload FROM events WHERE id = 3", [], |r| r.get(0))?;
    assert_eq!(swapped, "{\"i\":4}");
    assert_eq!(
        first_bad(&path)?,
        Some(BadEvent {
            id: 3,
            reason: BadReason::BrokenLink
        })
    );
    Ok(())
}

#[test]
fn rehashed_row_with_a_wrong_link_is_a_broken_link() -> anyhow::Result<()> {
    let (_dir, path) = ledger_with(10)?;
    let conn = raw(&path)?;
    // An attacker edits row 5 and recomputes its hash, but cannot fix the link into row 5.
    let (ts, kind, actor): (String, String, String) =
        conn.query_row("SELECT ts, type, actor FROM events WHERE id = 5", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
    let fake_prev = "1".repeat(64);
    let payload = "{\"i\":\"forged\"}";
    let h = event_hash(5, &ts, &kind, &actor, payload, &fake_prev);
    conn.execute(
        "UPDATE events SET payload = ?1, prev_hash = ?2, hash = ?3 WHERE id = 5",
        (payload, &fake_prev, &h),
    )?;
    assert_eq!(
        first_bad(&path)?,
        Some(BadEvent {
            id: 5,
            reason: BadReason::BrokenLink
        })
    );
    // Row 6 still links to the original row 5 hash, so fixing 5's link alone moves the break to 6.
    let real_prev: String =
        conn.query_row("SELECT hash FROM events WHERE id = 4", [], |r| r.get(0))?;
    let h = event_hash(5, &ts, &kind, &actor, payload, &real_prev);
    conn.execute(
        "UPDATE events SET prev_hash = ?1, hash = ?2 WHERE id = 5",
        (&real_prev, &h),
    )?;
    assert_eq!(
        first_bad(&path)?,
        Some(BadEvent {
            id: 6,
            reason: BadReason::BrokenLink
        })
    );
    Ok(())
}

#[test]
fn truncated_tail_then_append_shows_a_gap() -> anyhow::Result<()> {
    let (_dir, path) = ledger_with(5)?;
    raw(&path)?.execute("DELETE FROM events WHERE id >= 4", [])?;
    assert!(
        verify(&path)?.is_ok(),
        "a cut tail alone is indistinguishable from a shorter chain"
    );
    let ledger = Ledger::open(&path)?;
    let next = ledger.append_blocking(NewEvent::new("test.event", "tester", "{}"))?;
    assert_eq!(next.id, 6, "ids deleted from the tail are never reused");
    drop(ledger);
    assert_eq!(
        first_bad(&path)?,
        Some(BadEvent {
            id: 6,
            reason: BadReason::Gap { expected: 4 }
        })
    );
    Ok(())
}

#[test]
fn bad_reasons_explain_themselves() {
    let msg = BadEvent {
        id: 7,
        reason: BadReason::Gap { expected: 6 },
    }
    .to_string();
    assert_eq!(msg, "event 7: gap: expected id 6 here (rows were deleted)");
    assert!(BadReason::HashMismatch
        .to_string()
        .starts_with("hash mismatch"));
    assert!(BadReason::BrokenLink.to_string().starts_with("broken link"));
}

#[test]
fn verify_rejects_files_that_are_not_ledgers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let missing = verify(&dir.path().join("nope.db"));
    assert!(missing.is_err());
    let other = dir.path().join("other.db");
    Connection::open(&other)?.execute_batch("CREATE TABLE x (a)")?;
    let err = verify(&other)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("has no events table"), "{err}");
    Ok(())
}
