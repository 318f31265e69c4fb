//! Read-only verification of the whole hash chain.

use crate::hash::{hash_input_into, sha256_hex, GENESIS_HASH};
use crate::LedgerError;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use std::path::Path;

/// Outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    /// Number of rows walked.
    pub events: u64,
    /// The first row that breaks the chain, if any.
    pub first_bad: Option<BadEvent>,
}

impl VerifyReport {
    /// True when every row checked out.
    pub fn is_ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// A row that breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BadEvent {
    /// Id of the offending row.
    pub id: i64,
    /// What is wrong with it.
    pub reason: BadReason,
}

/// Why a row breaks the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BadReason {
    /// The stored hash does not match the row's contents: the row was edited.
    HashMismatch,
    /// `prev_hash` is not the previous row's hash: rows were replaced, reordered or inserted.
    BrokenLink,
    /// The id is not the previous id + 1 (or the first id is not 1): rows were deleted.
    Gap {
        /// The id that should have come next.
        expected: i64,
    },
}

impl std::fmt::Display for BadReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadReason::HashMismatch => write!(
                f,
                "hash mismatch: the row's contents were changed after it was written"
            ),
            BadReason::BrokenLink => {
                write!(f, "broken link: prev_hash is not the previous row's hash (rows replaced or reordered)")
            }
            BadReason::Gap { expected } => {
                write!(f, "gap: expected id {expected} here (rows were deleted)")
            }
        }
    }
}

impl std::fmt::Display for BadEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "event {}: {}", self.id, self.reason)
    }
}

/// Walks the whole chain of the ledger at `path` in id order, opening it read-only.
///
/// Per row, in this order: the id must be the previous id + 1 (the first must be 1), `prev_hash`
/// must equal the previous row's `hash` (genesis zeros for the first), and `hash` must equal the
/// SHA-256 of the row. Reports the first failure and keeps counting rows.
///
/// # Errors
/// [`LedgerError::Sqlite`] if the file cannot be opened or read; [`LedgerError::Malformed`] if it
/// has no `events` table.
pub fn verify(path: &Path) -> Result<VerifyReport, LedgerError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let has_table: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'events'",
        [],
        |r| r.get(0),
    )?;
    if !has_table {
        return Err(LedgerError::Malformed(format!(
            "{} has no events table; is it an osModa ledger?",
            path.display()
        )));
    }
    let mut stmt = conn
        .prepare("SELECT id, ts, type, actor, payload, prev_hash, hash FROM events ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut buf = Vec::with_capacity(4096);
    let mut prev = [0u8; 64];
    prev.copy_from_slice(GENESIS_HASH.as_bytes());
    let mut expected_id = 1i64;
    let mut events = 0u64;
    let mut first_bad = None;
    while let Some(row) = rows.next()? {
        events += 1;
        let id: i64 = row.get(0)?;
        let text = |i: usize| row.get_ref(i).map(|v| v.as_bytes().unwrap_or(b""));
        let (ts, kind, actor, payload, prev_hash, stored) =
            (text(1)?, text(2)?, text(3)?, text(4)?, text(5)?, text(6)?);
        if first_bad.is_none() {
            let reason = if id != expected_id {
                Some(BadReason::Gap {
                    expected: expected_id,
                })
            } else if prev_hash != prev.as_slice() {
                Some(BadReason::BrokenLink)
            } else {
                hash_input_into(&mut buf, id, ts, kind, actor, payload, prev_hash);
                (sha256_hex(&buf).as_slice() != stored).then_some(BadReason::HashMismatch)
            };
            if let Some(reason) = reason {
                first_bad = Some(BadEvent { id, reason });
            }
        }
        // Continue from what is stored so a single bad row is reported once, not cascaded.
        prev = [0u8; 64];
        let n = stored.len().min(64);
        prev[..n].copy_from_slice(&stored[..n]);
        expected_id = id.saturating_add(1);
    }
    Ok(VerifyReport { events, first_bad })
}
