//! Checks a ledger file against its signed checkpoints: every checkpoint's root must be the root
//! recomputed from the event rows at its size, so a shortened ledger or one whose chain was
//! recomputed after an edit is caught, and the first event that disagrees is named.

use crate::checkpoint::{verify_signed, SignedCheckpoint};
use crate::proof::hash_hex;
use crate::tree::{leaf_hash, RootBuilder};
use crate::LedgerError;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde::Serialize;
use std::path::Path;

/// Outcome of [`verify_checkpoints`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AnchorReport {
    /// Checkpoints whose signature verified and that were compared.
    pub checkpoints: usize,
    /// Size of the newest checkpoint (0 when there is none).
    pub newest_size: u64,
    /// Rows in the ledger.
    pub events: u64,
    /// The first disagreement, if any.
    pub first_bad: Option<Disagreement>,
}

impl AnchorReport {
    /// True when every checkpoint matches the rows.
    pub fn is_ok(&self) -> bool {
        self.first_bad.is_none()
    }
}

/// Where the rows stop matching the checkpoints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Disagreement {
    /// The ledger has fewer events than a checkpoint covers: events were removed from its end.
    Missing {
        /// The first event id the checkpoint covers that is not in the ledger.
        first_missing: i64,
        /// Size of that checkpoint.
        checkpoint_size: u64,
    },
    /// The root recomputed from the rows is not the checkpoint's: an event at or before
    /// `checkpoint_size` was changed (and the chain recomputed to hide it).
    Changed {
        /// The first event that disagrees (`exact`), or the first that can (the one after the
        /// newest checkpoint that still matches).
        first_event: i64,
        /// True when `first_event` is known exactly: its row no longer matches the tree leaf
        /// stored when it was appended.
        exact: bool,
        /// Size of the oldest checkpoint that disagrees.
        checkpoint_size: u64,
    },
}

impl std::fmt::Display for Disagreement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Disagreement::Missing {
                first_missing,
                checkpoint_size,
            } => write!(
                f,
                "event {first_missing} is missing: the signed checkpoint of size {checkpoint_size} covers it (events were removed from the end)"
            ),
            Disagreement::Changed {
                first_event,
                exact: true,
                checkpoint_size,
            } => write!(
                f,
                "event {first_event} was changed after it was written: the rows no longer match the signed checkpoint of size {checkpoint_size} (the chain was recomputed to hide it)"
            ),
            Disagreement::Changed {
                first_event,
                exact: false,
                checkpoint_size,
            } => write!(
                f,
                "the rows no longer match the signed checkpoint of size {checkpoint_size}: an event from {first_event} to {checkpoint_size} was changed (the chain and tree were recomputed; event {first_event} is the first that can differ)"
            ),
        }
    }
}

/// Checks the ledger at `path` against `checkpoints` signed by `vkey`.
///
/// Each checkpoint's signature is verified first (one that does not verify is an error: the
/// file was tampered with or the key is wrong). Then the rows are walked in id order once,
/// recomputing the tree root at every checkpoint size. The oldest checkpoint that disagrees
/// decides: for a root mismatch the stored tree leaves between the newest matching checkpoint
/// and it are compared with the rows to name the changed event exactly when they still can.
///
/// # Errors
/// [`LedgerError::ProofFailed`] or [`LedgerError::InvalidKey`] from a checkpoint that does not
/// verify (naming its position in the list); [`LedgerError::Sqlite`] when the database cannot be
/// read.
pub fn verify_checkpoints(
    path: &Path,
    checkpoints: &[SignedCheckpoint],
    vkey: &str,
) -> Result<AnchorReport, LedgerError> {
    verify_checkpoints_by(path, checkpoints, &[vkey])
}

/// As [`verify_checkpoints`], with several verifier keys (the keys the ledger was signed with
/// over time, after a key rotation), each a [`crate::KeyRange`] line (`<vkey>` or `<vkey> <last
/// size>` for a retired key): each checkpoint must verify with one of them within its range.
///
/// # Errors
/// As [`verify_checkpoints`]; [`LedgerError::InvalidKey`] for any malformed key or none.
pub fn verify_checkpoints_by(
    path: &Path,
    checkpoints: &[SignedCheckpoint],
    vkeys: &[&str],
) -> Result<AnchorReport, LedgerError> {
    if vkeys.is_empty() {
        return Err(LedgerError::InvalidKey("no verifier key given".into()));
    }
    let mut sizes = Vec::with_capacity(checkpoints.len());
    for (i, cp) in checkpoints.iter().enumerate() {
        // A key whose signature holds but whose range does not says more than another key's
        // signature failing: that reason wins.
        let (mut past_range, mut bad_signature) = (None, None);
        let mut verified = None;
        for line in vkeys {
            let key = crate::KeyRange::parse(line)?;
            match verify_signed(cp, key.vkey) {
                Ok(v) if key.last_size.is_some_and(|last| v.size > last) => {
                    past_range = Some(key.past_range(v.size));
                }
                Ok(v) => {
                    verified = Some(v);
                    break;
                }
                Err(e @ LedgerError::InvalidKey(_)) => return Err(e),
                Err(e) => bad_signature = Some(e),
            }
        }
        if let Some(v) = verified {
            sizes.push((v.size, v.root));
            continue;
        }
        if let Some(e) = past_range.or(bad_signature) {
            return Err(match e {
                LedgerError::ProofFailed(m) => LedgerError::ProofFailed(format!(
                    "checkpoint {} (size {}): {m}",
                    i + 1,
                    cp.size
                )),
                other => other,
            });
        }
    }
    sizes.sort_by_key(|(s, _)| *s);
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mut stmt = conn.prepare("SELECT hash FROM events ORDER BY id")?;
    let mut rows = stmt.query([])?;
    let mut builder = RootBuilder::new();
    let mut next = sizes.iter().peekable();
    let mut good = 0u64;
    let mut first_bad = None;
    // A checkpoint of the empty tree is checked before any row.
    while let Some((size, root)) = next.peek() {
        if *size != 0 {
            break;
        }
        if builder.root() != *root {
            first_bad = Some(changed(&conn, 0, 0)?);
        }
        next.next();
    }
    while first_bad.is_none() {
        let Some(row) = rows.next()? else { break };
        let hash: String = row.get(0)?;
        builder.push(leaf_hash(&hash));
        while let Some((size, root)) = next.peek() {
            if *size != builder.size() {
                break;
            }
            if builder.root() == *root {
                good = *size;
            } else {
                first_bad = Some(changed(&conn, good, *size)?);
                break;
            }
            next.next();
        }
    }
    drop(rows);
    let events: i64 = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
    let events = u64::try_from(events).unwrap_or(0);
    if first_bad.is_none() {
        if let Some((size, _)) = next.peek() {
            first_bad = Some(Disagreement::Missing {
                first_missing: i64::try_from(events + 1).unwrap_or(i64::MAX),
                checkpoint_size: *size,
            });
        }
    }
    Ok(AnchorReport {
        checkpoints: sizes.len(),
        newest_size: sizes.last().map_or(0, |(s, _)| *s),
        events,
        first_bad,
    })
}

/// The first row in `good+1 ..= bad` whose leaf differs from the stored tree's, if the stored
/// tree still says so; otherwise `good + 1`. Reads the tree as this version stores it
/// (`tree_runs`) or, in a file not yet opened by this version, as version 3 did (`tree_hashes`).
fn changed(conn: &Connection, good: u64, bad: u64) -> Result<Disagreement, LedgerError> {
    let table = |name: &str| -> rusqlite::Result<bool> {
        conn.query_row(
            "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |r| r.get(0),
        )
    };
    let (runs, v3) = (table("tree_runs")?, table("tree_hashes")?);
    let first_possible = i64::try_from(good + 1).unwrap_or(i64::MAX);
    if runs || v3 {
        let mut rows = conn.prepare("SELECT hash FROM events ORDER BY id LIMIT ?1 OFFSET ?2")?;
        let mut v3_leaf = if runs {
            None
        } else {
            Some(conn.prepare("SELECT hash FROM tree_hashes WHERE idx = ?1")?)
        };
        let count = i64::try_from(bad - good).unwrap_or(i64::MAX);
        let hashes: Vec<String> = rows
            .query_map((count, i64::try_from(good).unwrap_or(i64::MAX)), |r| {
                r.get(0)
            })?
            .collect::<Result<_, _>>()?;
        for (k, hash) in hashes.iter().enumerate() {
            let n = good + k as u64;
            let stored: Option<Vec<u8>> = match &mut v3_leaf {
                None => crate::tree::stored_leaf(conn, n)?.map(|h| h.0.to_vec()),
                Some(stmt) => {
                    let idx =
                        i64::try_from(tlog_tiles::stored_hash_index(0, n)).unwrap_or(i64::MAX);
                    stmt.query_row([idx], |r| r.get(0)).optional()?
                }
            };
            if let Some(stored) = stored {
                if stored != leaf_hash(hash).0 {
                    return Ok(Disagreement::Changed {
                        first_event: i64::try_from(n + 1).unwrap_or(i64::MAX),
                        exact: true,
                        checkpoint_size: bad,
                    });
                }
            }
        }
    }
    Ok(Disagreement::Changed {
        first_event: first_possible,
        exact: false,
        checkpoint_size: bad,
    })
}

/// The root the rows give at `size`, hex (for messages and tests).
///
/// # Errors
/// [`LedgerError::Sqlite`] when the database cannot be read.
pub fn rows_root(path: &Path, size: u64) -> Result<String, LedgerError> {
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut stmt = conn.prepare("SELECT hash FROM events ORDER BY id LIMIT ?1")?;
    let mut b = RootBuilder::new();
    let mut rows = stmt.query([i64::try_from(size).unwrap_or(i64::MAX)])?;
    while let Some(r) = rows.next()? {
        b.push(leaf_hash(&r.get::<_, String>(0)?));
    }
    Ok(hash_hex(&b.root()))
}

/// The checkpoints the ledger at `path` records about itself (its `agentd.checkpoint` events,
/// whose payload carries the signed note), with the id of each recording event, oldest first.
/// Their signatures are not checked here.
///
/// # Errors
/// [`LedgerError::Sqlite`] when the database cannot be read; [`LedgerError::Malformed`] naming
/// an `agentd.checkpoint` event whose payload is not a checkpoint.
pub fn recorded_checkpoints(path: &Path) -> Result<Vec<(i64, SignedCheckpoint)>, LedgerError> {
    #[derive(serde::Deserialize)]
    struct Recorded {
        origin: String,
        size: u64,
        root: String,
        note: String,
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    let mut stmt = conn.prepare(
        "SELECT id, ts, payload FROM events WHERE type = 'agentd.checkpoint' ORDER BY id",
    )?;
    let rows: Vec<(i64, String, String)> = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    rows.into_iter()
        .map(|(id, ts, payload)| {
            let r: Recorded = serde_json::from_str(&payload).map_err(|e| {
                LedgerError::Malformed(format!(
                    "event {id} (agentd.checkpoint) does not hold a checkpoint: {e}"
                ))
            })?;
            Ok((
                id,
                SignedCheckpoint {
                    origin: r.origin,
                    size: r.size,
                    root: r.root,
                    ts,
                    note: r.note,
                },
            ))
        })
        .collect()
}
