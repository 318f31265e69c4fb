//! Schema version 3 kept the tree as one `tree_hashes (idx, hash)` row per stored hash plus a
//! `tree_state (size, last_id)` row. [`migrate`] repacks those rows, as they are, into
//! `tree_runs` inside the caller's transaction (the schema upgrade at open), so a database
//! upgraded in place keeps the hashes written when its events were appended: they are evidence
//! (a row changed later no longer matches its stored leaf), so they are moved, never recomputed.

use super::{add_record, insert_runs, stored_hash_index, Hash, Run};
use rusqlite::{Connection, OptionalExtension};

fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get(0),
    )
}

/// Moves a version-3 tree into `tree_runs` and drops the old tables; does nothing when there is
/// none. Records are moved in order while every hash of the record is present and 32 bytes
/// long; at the first that is not (a row deleted or damaged by hand), the rest of the tree is
/// left to be rebuilt from the event rows by the catch-up at open, and a warning names where.
/// Returns the number of leaves moved.
///
/// The event id of each run's last leaf is taken from the events in id order (leaf `n` is the
/// `n + 1`-th event, as the tree was built); the last run gets `tree_state.last_id` itself.
pub(crate) fn migrate(conn: &Connection) -> rusqlite::Result<u64> {
    if !table_exists(conn, "tree_hashes")? {
        conn.execute_batch("DROP TABLE IF EXISTS tree_state")?;
        return Ok(0);
    }
    let runs_empty: bool =
        conn.query_row("SELECT count(*) = 0 FROM tree_runs", [], |r| r.get(0))?;
    if !runs_empty {
        tracing::warn!(
            "the ledger has both tree_runs and version-3 tree_hashes; leaving tree_hashes as it is"
        );
        return Ok(0);
    }
    let (size, last_id): (i64, i64) = if table_exists(conn, "tree_state")? {
        conn.query_row(
            "SELECT size, last_id FROM tree_state WHERE id = 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?
        .unwrap_or((0, 0))
    } else {
        (0, 0)
    };
    let size = u64::try_from(size).unwrap_or(0);
    let end = i64::try_from(stored_hash_index(0, size)).unwrap_or(i64::MAX);
    let mut hash_rows =
        conn.prepare("SELECT idx, hash FROM tree_hashes WHERE idx < ?1 ORDER BY idx")?;
    let mut id_rows = conn.prepare("SELECT id FROM events ORDER BY id")?;
    let mut hashes = hash_rows.query([end])?;
    let mut ids = id_rows.query([])?;
    let mut runs: Vec<Run> = Vec::new();
    let mut record: Vec<Hash> = Vec::new();
    let mut moved = 0u64;
    'records: while moved < size {
        let (lo, hi) = (stored_hash_index(0, moved), stored_hash_index(0, moved + 1));
        record.clear();
        for want in lo..hi {
            let Some(row) = hashes.next()? else {
                break 'records;
            };
            let idx: i64 = row.get(0)?;
            let blob: Vec<u8> = row.get(1)?;
            let Ok(h) = <[u8; 32]>::try_from(blob.as_slice()) else {
                break 'records;
            };
            if u64::try_from(idx).ok() != Some(want) {
                break 'records;
            }
            record.push(Hash(h));
        }
        let positional = ids.next()?.map(|r| r.get::<_, i64>(0)).transpose()?;
        let id = if moved + 1 == size {
            last_id
        } else {
            positional.unwrap_or(last_id)
        };
        moved += 1;
        add_record(&mut runs, lo, &record, moved, id);
        if runs.len() > 64 {
            let done = runs.len() - 1;
            insert_runs(conn, runs.drain(..done))?;
        }
    }
    insert_runs(conn, runs.into_iter())?;
    drop((hashes, ids));
    drop((hash_rows, id_rows));
    if moved < size {
        tracing::warn!(
            moved,
            size,
            "the version-3 Merkle tree is missing or has a damaged hash of leaf {moved}; the leaves from there on are rebuilt from the event rows"
        );
    }
    conn.execute_batch("DROP TABLE tree_hashes; DROP TABLE IF EXISTS tree_state;")?;
    Ok(moved)
}
