//! Database schema, connection settings and row decoding shared by the writer and the readers.

use crate::tree::Frontier;
use crate::{Event, LedgerError, GENESIS_HASH};
use rusqlite::{Connection, OptionalExtension};

/// Schema version stored in `PRAGMA user_version`.
pub(crate) const SCHEMA_VERSION: i64 = 4;

/// The `events` table is exactly the seed schema; the rest are derived indexes and the dedup map.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  ts TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  type TEXT NOT NULL,
  actor TEXT NOT NULL,
  payload TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_type ON events(type);
CREATE INDEX IF NOT EXISTS events_actor ON events(actor);
CREATE INDEX IF NOT EXISTS events_ts ON events(ts);
CREATE TABLE IF NOT EXISTS dedup (
  stream TEXT NOT NULL,
  seq INTEGER NOT NULL,
  event_id INTEGER NOT NULL,
  PRIMARY KEY (stream, seq)
) WITHOUT ROWID;
CREATE VIRTUAL TABLE IF NOT EXISTS events_fts USING fts5(payload, content='events', content_rowid='id');
CREATE TABLE IF NOT EXISTS fts_progress (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  indexed_upto INTEGER NOT NULL
);
";

/// Columns in the order [`row_to_event`] expects.
pub(crate) const EVENT_COLUMNS: &str = "id, ts, type, actor, payload, prev_hash, hash";

/// Settings every connection gets: WAL (readers never block the writer), fully durable commits.
pub(crate) fn configure(conn: &Connection) -> Result<(), LedgerError> {
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(LedgerError::Malformed(format!(
            "could not switch the database to WAL mode (it stays in {mode:?})"
        )));
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// Creates the schema if it is missing, or upgrades an older one in place, in one transaction
/// (a crash or a concurrent open sees the old schema or the new one), and checks the version of
/// an existing one.
pub(crate) fn create(conn: &Connection) -> Result<(), LedgerError> {
    let tx = rusqlite::Transaction::new_unchecked(conn, rusqlite::TransactionBehavior::Immediate)?;
    let version: i64 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(LedgerError::Malformed(format!(
            "schema version {version} is newer than this build understands ({SCHEMA_VERSION}); upgrade osmoda"
        )));
    }
    let had_fts: bool = tx.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE name = 'events_fts'",
        [],
        |r| r.get(0),
    )?;
    tx.execute_batch(SCHEMA)?;
    tx.execute_batch(crate::tree::SCHEMA)?;
    if !had_fts {
        // A ledger created with only the seed schema: index the events it already holds.
        tx.execute("INSERT INTO events_fts (events_fts) VALUES ('rebuild')", [])?;
    }
    if !had_fts || version < 2 {
        // Fully indexed now: just rebuilt, or written by version 1, which indexed every append
        // inside its own transaction.
        tx.execute(
            "INSERT OR REPLACE INTO fts_progress (id, indexed_upto) \
             VALUES (1, (SELECT coalesce(max(id), 0) FROM events))",
            [],
        )?;
    }
    if version < 4 {
        // Version 3 kept one row per tree hash; repack them into runs.
        crate::tree::migrate_v3(&tx)?;
    }
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)?;
    tx.commit()?;
    Ok(())
}

/// Where the next append goes: its id and the hash it links to.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Tail {
    /// Id for the next event.
    pub next_id: i64,
    /// `hash` of the last stored event (genesis zeros for an empty ledger).
    pub prev_hash: String,
    /// The right edge of the Merkle tree over the stored events.
    pub tree: Frontier,
}

/// The largest id ever handed out, per SQLite's AUTOINCREMENT bookkeeping (0 if none).
pub(crate) fn allocated_id(conn: &Connection) -> rusqlite::Result<i64> {
    // Runs once per transaction on the writer's hot path: keep the statement prepared.
    Ok(conn
        .prepare_cached("SELECT seq FROM sqlite_sequence WHERE name = 'events'")?
        .query_row([], |r| r.get(0))
        .optional()?
        .unwrap_or(0))
}

/// Reads the tail from the database.
///
/// The next id follows the largest id ever allocated, not just the last row, so a truncated tail
/// shows up as a gap in `verify` instead of being silently overwritten.
pub(crate) fn load_tail(conn: &Connection) -> rusqlite::Result<Tail> {
    let last: Option<(i64, String)> = conn
        .query_row(
            "SELECT id, hash FROM events ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (last_id, prev_hash) = last.unwrap_or((0, GENESIS_HASH.to_owned()));
    let next_id = last_id.max(allocated_id(conn)?) + 1;
    let tree = Frontier::load(conn)?;
    Ok(Tail {
        next_id,
        prev_hash,
        tree,
    })
}

/// Decodes a row selected with [`EVENT_COLUMNS`].
pub(crate) fn row_to_event(row: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: row.get(0)?,
        ts: row.get(1)?,
        kind: row.get(2)?,
        actor: row.get(3)?,
        payload: row.get(4)?,
        prev_hash: row.get(5)?,
        hash: row.get(6)?,
    })
}

/// Loads one event by id.
pub(crate) fn get_event(conn: &Connection, id: i64) -> rusqlite::Result<Option<Event>> {
    conn.prepare_cached(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = ?1"))?
        .query_row([id], row_to_event)
        .optional()
}
