//! The full-text index over payloads, kept off the append path.
//!
//! `events_fts` is derived data. Indexing inside every append transaction cost about a quarter of
//! the durable append rate, so the writer indexes in bulk instead: when it is idle, when the
//! backlog reaches [`MAX_LAG`], and on demand before every search (so searches are complete).
//! `fts_progress.indexed_upto` records how far the index goes and is updated in the same
//! transaction as the rows it covers, so a crash at any point leaves a consistent watermark and
//! the writer simply continues from it.

use rusqlite::{Connection, TransactionBehavior};

/// Index at most this many events per transaction.
pub(crate) const CHUNK: i64 = 4096;
/// Index as soon as this many events are unindexed, even under load.
pub(crate) const MAX_LAG: i64 = 2048;
/// Index once the writer has been idle this long with a backlog.
pub(crate) const IDLE: std::time::Duration = std::time::Duration::from_millis(20);

/// The id up to which `events_fts` is complete.
pub(crate) fn indexed_upto(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row(
        "SELECT indexed_upto FROM fts_progress WHERE id = 1",
        [],
        |r| r.get(0),
    )
}

/// Index the next (at most [`CHUNK`]) unindexed events in one transaction and return the new
/// watermark.
pub(crate) fn catch_up_chunk(conn: &mut Connection, from: i64) -> rusqlite::Result<i64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut upto = indexed_upto(&tx)?.max(from);
    {
        let mut select =
            tx.prepare_cached("SELECT id, payload FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")?;
        let mut insert =
            tx.prepare_cached("INSERT INTO events_fts (rowid, payload) VALUES (?1, ?2)")?;
        let start = upto;
        let mut rows = select.query((upto, CHUNK))?;
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let payload: String = row.get(1)?;
            insert.execute((id, payload))?;
            upto = id;
        }
        if upto == start {
            return Ok(upto); // nothing to index: roll back, write nothing
        }
        tx.prepare_cached("UPDATE fts_progress SET indexed_upto = ?1 WHERE id = 1")?
            .execute([upto])?;
    }
    tx.commit()?;
    Ok(upto)
}

/// Index everything up to `last_id`; returns `last_id` once no event at or below it is left
/// unindexed (ids that do not exist need no indexing).
pub(crate) fn catch_up(
    conn: &mut Connection,
    mut upto: i64,
    last_id: i64,
) -> rusqlite::Result<i64> {
    while upto < last_id {
        let next = catch_up_chunk(conn, upto)?;
        if next == upto {
            return Ok(last_id);
        }
        upto = next;
    }
    Ok(upto)
}
