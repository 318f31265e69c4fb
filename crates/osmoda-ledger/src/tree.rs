//! The RFC 6962 Merkle tree over the event hashes, kept in the ledger database and extended in
//! the same transaction as the events it covers.
//!
//! Leaf `i` (0-based) is event `i + 1`; its leaf input is the 32 bytes of the event's chain hash
//! (the hex `hash` column decoded), so the leaf hash is `SHA-256(0x00 || hash)`. Hashing, the
//! storage layout and the proofs are those of `golang.org/x/mod/sumdb/tlog` as ported by the
//! [`tlog_tiles`] crate: every appended record adds its leaf hash plus the hashes of the
//! subtrees it completes (just under two 32-byte hashes per event on average) at the dense
//! indexes of [`tlog_tiles::stored_hash_index`].
//!
//! Storage (schema version 4): the hashes of consecutive records are contiguous in that index
//! (record `n`'s are `stored_hash_index(0, n) .. stored_hash_index(0, n + 1)`), so a batch's
//! hashes go into `tree_runs` as rows of one start index plus one blob of at most
//! [`RUN_HASHES`] hashes (8 KiB, the width of a C2SP tlog tile), cut at record boundaries: one
//! INSERT per batch instead of about two per event. Each row also says how many leaves the tree
//! has after it and the event id of its last leaf, so the newest row is the tree's state and an
//! append writes nothing else (no separate state row to update). A hash is read by seeking the
//! row with the largest start index at or below it (a rowid seek) and slicing its blob.
//!
//! An append reads nothing: the writer keeps the tree's right edge (the roots of its perfect
//! subtrees, [`Frontier`]) in memory, collects the batch's hashes in it, writes them with
//! [`store`] just before the commit and reloads the edge from `tree_runs` at start. A rolled-back
//! batch drops its hashes with the events. Version 3 stored one row per hash in `tree_hashes`
//! plus a `tree_state` row; [`v3::migrate`] repacks such a table in place at open.

mod v3;

pub(crate) use v3::migrate as migrate_v3;

use crate::LedgerError;
use rusqlite::{Connection, OptionalExtension};
use tlog_tiles::{
    node_hash, record_hash, stored_hash_index, stored_hashes_for_record_hash, sub_tree_index, Hash,
    HashReader,
};

/// Most hashes in one `tree_runs` row (8 KiB of blob).
pub(crate) const RUN_HASHES: usize = 256;

/// Tables of the tree (created with the rest of the schema).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tree_runs (
  first INTEGER PRIMARY KEY,
  size INTEGER NOT NULL,
  last_id INTEGER NOT NULL,
  hashes BLOB NOT NULL
);
";

/// The leaf hash of an event: `SHA-256(0x00 || bytes)` where `bytes` is the decoded 32-byte
/// chain hash. A stored hash that is not 64 hex digits (only possible by editing the file) is
/// hashed as its text, which can never match a checkpoint made from the real row.
pub fn leaf_hash(event_hash: &str) -> Hash {
    let mut raw = [0u8; 32];
    match hex::decode_to_slice(event_hash, &mut raw) {
        Ok(()) => record_hash(&raw),
        Err(_) => record_hash(event_hash.as_bytes()),
    }
}

/// The right edge of the tree: stored index and hash of each perfect subtree, largest first;
/// plus the hashes pushed since the last [`store`].
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Frontier {
    /// Number of leaves.
    pub size: u64,
    /// Id of the event of the last leaf (0 for none).
    pub last_id: i64,
    nodes: Vec<(u64, Hash)>,
    pending: Vec<Run>,
}

/// One `tree_runs` row: the hashes at `first, first + 1, ...` of whole records.
#[derive(Debug, Clone, PartialEq)]
struct Run {
    first: u64,
    /// Leaves of the tree after this run.
    size: u64,
    /// Event id of the run's last leaf.
    last_id: i64,
    /// Concatenated 32-byte hashes.
    hashes: Vec<u8>,
}

impl Run {
    fn end(&self) -> u64 {
        self.first + (self.hashes.len() / 32) as u64
    }
}

impl HashReader for Frontier {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| {
                self.nodes
                    .iter()
                    .find(|(idx, _)| idx == i)
                    .map(|(_, h)| *h)
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl Frontier {
    /// Loads the right edge of the stored tree.
    pub fn load(conn: &Connection) -> rusqlite::Result<Frontier> {
        let (size, last_id) = stored_state(conn)?;
        let indexes = if size == 0 {
            Vec::new()
        } else {
            sub_tree_index(0, size, Vec::new())
        };
        let hashes = read_indexes(conn, &indexes)?;
        Ok(Frontier {
            size,
            last_id,
            nodes: indexes.into_iter().zip(hashes).collect(),
            pending: Vec::new(),
        })
    }

    /// Appends one leaf for event `id`: moves the edge and keeps the record's stored hashes
    /// (its leaf hash and the subtrees it completes) for the next [`store`].
    pub fn push(&mut self, id: i64, leaf: Hash) {
        let n = self.size;
        // The hashes it reads are exactly the edge's last subtrees, so this cannot fail.
        let hashes = stored_hashes_for_record_hash(n, leaf, &*self).unwrap_or_else(|_| vec![leaf]);
        let completed = hashes.len() - 1;
        self.nodes
            .truncate(self.nodes.len().saturating_sub(completed));
        let level = u8::try_from(completed).unwrap_or(u8::MAX);
        if let Some(top) = hashes.last() {
            self.nodes
                .push((stored_hash_index(level, n >> completed), *top));
        }
        self.size = n + 1;
        self.last_id = id;
        add_record(
            &mut self.pending,
            stored_hash_index(0, n),
            &hashes,
            self.size,
            id,
        );
    }

    /// The root hash of the tree as it stands.
    #[cfg(test)]
    pub fn root(&self) -> Hash {
        fold_right(self.nodes.iter().map(|(_, h)| *h))
    }
}

/// RFC 6962's root of a tree whose perfect subtrees (largest first) are `nodes`.
fn fold_right(nodes: impl DoubleEndedIterator<Item = Hash>) -> Hash {
    let mut nodes = nodes.rev();
    let Some(mut h) = nodes.next() else {
        return tlog_tiles::EMPTY_HASH;
    };
    for left in nodes {
        h = node_hash(left, h);
    }
    h
}

/// Builds a root over leaves given one at a time, in memory (O(log n) space): what a verifier
/// recomputes from the events to compare with a checkpoint.
#[derive(Debug, Clone, Default)]
pub struct RootBuilder {
    size: u64,
    /// (level, hash) of each perfect subtree, largest first.
    stack: Vec<(u32, Hash)>,
}

impl RootBuilder {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the next leaf hash (see [`leaf_hash`]).
    pub fn push(&mut self, leaf: Hash) {
        let mut node = (0u32, leaf);
        while let Some(&(level, left)) = self.stack.last() {
            if level != node.0 {
                break;
            }
            self.stack.pop();
            node = (level + 1, node_hash(left, node.1));
        }
        self.stack.push(node);
        self.size += 1;
    }

    /// Leaves added so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The RFC 6962 root of the leaves added so far ([`tlog_tiles::EMPTY_HASH`] for none).
    pub fn root(&self) -> Hash {
        fold_right(self.stack.iter().map(|(_, h)| *h))
    }
}

/// Number of events the stored tree covers, and the id of the last one: the newest row's.
pub(crate) fn stored_state(conn: &Connection) -> rusqlite::Result<(u64, i64)> {
    let state: Option<(i64, i64)> = conn
        .prepare_cached("SELECT size, last_id FROM tree_runs ORDER BY first DESC LIMIT 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (size, last_id) = state.unwrap_or((0, 0));
    Ok((u64::try_from(size).unwrap_or(0), last_id))
}

/// Adds one record's stored hashes (starting at index `first`) to the runs being collected:
/// to the last run when they continue it and fit, else as a new run.
fn add_record(runs: &mut Vec<Run>, first: u64, hashes: &[Hash], size: u64, last_id: i64) {
    let run = match runs.last_mut() {
        Some(r) if r.end() == first && r.hashes.len() / 32 + hashes.len() <= RUN_HASHES => r,
        _ => {
            runs.push(Run {
                first,
                size,
                last_id,
                hashes: Vec::with_capacity(hashes.len().max(16) * 32),
            });
            runs.last_mut().expect("just pushed")
        }
    };
    for h in hashes {
        run.hashes.extend_from_slice(&h.0);
    }
    run.size = size;
    run.last_id = last_id;
}

/// Inserts runs as `tree_runs` rows.
fn insert_runs(conn: &Connection, runs: impl Iterator<Item = Run>) -> rusqlite::Result<()> {
    let mut insert = conn.prepare_cached(
        "INSERT INTO tree_runs (first, size, last_id, hashes) VALUES (?1, ?2, ?3, ?4)",
    )?;
    for run in runs {
        insert.execute((
            i64::try_from(run.first).unwrap_or(i64::MAX),
            i64::try_from(run.size).unwrap_or(i64::MAX),
            run.last_id,
            &run.hashes,
        ))?;
    }
    Ok(())
}

/// Writes the hashes pushed since the last call (one row per run, usually one per batch) inside
/// the caller's transaction; this is also what records the tree's new size.
pub(crate) fn store(conn: &Connection, edge: &mut Frontier) -> rusqlite::Result<()> {
    insert_runs(conn, edge.pending.drain(..))
}

/// Adds the events after `edge.last_id` (at most `limit`) to the tree and stores their hashes,
/// inside the caller's transaction; returns how many were added.
pub(crate) fn extend(conn: &Connection, edge: &mut Frontier, limit: i64) -> rusqlite::Result<u64> {
    let start = edge.size;
    let mut select =
        conn.prepare_cached("SELECT id, hash FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let mut rows = select.query((edge.last_id, limit))?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let hash: String = row.get(1)?;
        edge.push(id, leaf_hash(&hash));
        if edge.pending.len() >= 64 {
            store(conn, edge)?;
        }
    }
    store(conn, edge)?;
    Ok(edge.size - start)
}

/// Extends the stored tree over events it does not cover yet (a ledger from before the tree, or
/// one appended to with the tree off), one transaction per chunk; returns the tree's size.
pub(crate) fn catch_up(conn: &mut Connection) -> rusqlite::Result<u64> {
    const CHUNK: i64 = 16_384;
    loop {
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let mut edge = Frontier::load(&tx)?;
        if extend(&tx, &mut edge, CHUNK)? == 0 {
            return Ok(edge.size);
        }
        tx.commit()?;
    }
}

/// The stored hashes at `indexes`, each read from the row whose run holds it (consecutive
/// indexes in one run read it once).
fn read_indexes(conn: &Connection, indexes: &[u64]) -> rusqlite::Result<Vec<Hash>> {
    let mut select = conn.prepare_cached(
        "SELECT first, hashes FROM tree_runs WHERE first <= ?1 ORDER BY first DESC LIMIT 1",
    )?;
    let mut row: Option<(u64, Vec<u8>)> = None;
    let mut out = Vec::with_capacity(indexes.len());
    for &i in indexes {
        let holds = |r: &Option<(u64, Vec<u8>)>| matches!(r, Some((first, blob)) if i >= *first && (i - first) < (blob.len() / 32) as u64);
        if !holds(&row) {
            let idx = i64::try_from(i).unwrap_or(i64::MAX);
            row = select
                .query_row([idx], |r| {
                    Ok((u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0), r.get(1)?))
                })
                .optional()?;
            if let Some((first, blob)) = &row {
                if blob.len() % 32 != 0 {
                    return Err(rusqlite::Error::FromSqlConversionFailure(
                        blob.len(),
                        rusqlite::types::Type::Blob,
                        format!(
                            "tree run at index {first} is {} bytes, not a multiple of 32",
                            blob.len()
                        )
                        .into(),
                    ));
                }
            }
        }
        let (first, blob) = match &row {
            Some(r) if holds(&row) => r,
            // No row holds it: the hash was never stored or its row was deleted.
            _ => return Err(rusqlite::Error::QueryReturnedNoRows),
        };
        let at = usize::try_from(i - first).unwrap_or(usize::MAX) * 32;
        let mut h = [0u8; 32];
        h.copy_from_slice(&blob[at..at + 32]);
        out.push(Hash(h));
    }
    Ok(out)
}

/// The stored leaf hash of leaf `n`, if a row still holds it (for naming a changed event).
pub(crate) fn stored_leaf(conn: &Connection, n: u64) -> rusqlite::Result<Option<Hash>> {
    match read_indexes(conn, &[stored_hash_index(0, n)]) {
        Ok(mut v) => Ok(v.pop()),
        Err(rusqlite::Error::QueryReturnedNoRows) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads stored hashes from a connection (inside the caller's read transaction).
pub(crate) struct DbReader<'c>(pub &'c Connection);

impl HashReader for DbReader<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        read_indexes(self.0, indexes).map_err(|e| {
            tracing::error!(error = %e, "reading the ledger's tree hashes");
            tlog_tiles::Error::IndexesNotInTree
        })
    }
}

/// Checks a proof request's sizes and maps the crate's errors to ours.
pub(crate) fn proof_error(e: tlog_tiles::Error) -> LedgerError {
    LedgerError::Malformed(format!(
        "the stored Merkle tree cannot produce this proof ({e}); run `agentctl verify-ledger`"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Mem(std::collections::HashMap<u64, Hash>);

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

    fn empty() -> Frontier {
        Frontier {
            size: 0,
            last_id: 0,
            nodes: Vec::new(),
            pending: Vec::new(),
        }
    }

    #[test]
    fn frontier_and_root_builder_agree_with_tlog_tree_hash() {
        let mut mem = Mem(Default::default());
        let mut edge = empty();
        let mut builder = RootBuilder::new();
        for n in 0..300u64 {
            let leaf = record_hash(&n.to_be_bytes());
            let expected =
                tlog_tiles::stored_hashes_for_record_hash(n, leaf, &mem).expect("hashes");
            edge.push(n as i64 + 1, leaf);
            // One record per store: its run is exactly tlog's stored hashes for it.
            let run = edge.pending.pop().expect("one run");
            assert!(edge.pending.is_empty());
            assert_eq!(run.first, stored_hash_index(0, n), "record {n}");
            assert_eq!(run.end(), stored_hash_index(0, n + 1), "record {n}");
            assert_eq!((run.size, run.last_id), (n + 1, n as i64 + 1));
            let flat: Vec<u8> = expected.iter().flat_map(|h| h.0).collect();
            assert_eq!(run.hashes, flat, "record {n}");
            for (k, h) in expected.iter().enumerate() {
                mem.0.insert(run.first + k as u64, *h);
            }
            builder.push(leaf);
            let root = tlog_tiles::tree_hash(n + 1, &mem).expect("root");
            assert_eq!(edge.root(), root, "size {}", n + 1);
            assert_eq!(builder.root(), root, "size {}", n + 1);
        }
    }

    /// Batches of every size from 1 to 700 leaves (runs cut at 256 hashes inside a batch, and
    /// batches ending mid-run) store the same hashes as tlog computes one record at a time, and
    /// the edge reloaded from the rows is the one the writer had.
    #[test]
    fn batched_runs_hold_the_same_hashes_and_reload() {
        let conn = Connection::open_in_memory().expect("sqlite");
        conn.execute_batch(SCHEMA).expect("schema");
        let mut mem = Mem(Default::default());
        let mut edge = Frontier::load(&conn).expect("empty");
        let mut n = 0u64;
        for batch in [1u64, 2, 7, 129, 300, 700, 3, 1] {
            for _ in 0..batch {
                let leaf = record_hash(&n.to_le_bytes());
                let hashes =
                    tlog_tiles::stored_hashes_for_record_hash(n, leaf, &mem).expect("hashes");
                for (k, h) in hashes.iter().enumerate() {
                    mem.0.insert(stored_hash_index(0, n) + k as u64, *h);
                }
                edge.push(n as i64 + 10, leaf);
                n += 1;
            }
            for run in &edge.pending {
                assert!(run.hashes.len() / 32 <= RUN_HASHES && run.hashes.len() % 32 == 0);
            }
            store(&conn, &mut edge).expect("store");
            assert_eq!(stored_state(&conn).expect("state"), (n, n as i64 + 9));
            let reloaded = Frontier::load(&conn).expect("reload");
            assert_eq!(reloaded, edge, "after {n} leaves");
        }
        let every: Vec<u64> = (0..stored_hash_index(0, n)).collect();
        let stored = read_indexes(&conn, &every).expect("read all");
        let want: Vec<Hash> = every.iter().map(|i| mem.0[i]).collect();
        assert_eq!(stored, want);
        // Reading in any order (as proofs do) gives the same hashes.
        let spread: Vec<u64> = every.iter().rev().step_by(37).copied().collect();
        let got = DbReader(&conn).read_hashes(&spread).expect("spread");
        assert_eq!(got, spread.iter().map(|i| mem.0[i]).collect::<Vec<_>>());
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM tree_runs", [], |r| r.get(0))
            .expect("count");
        assert!(rows < 30, "{rows} rows for {n} leaves");
        // An index beyond the tree, or in a deleted row, is an error, not a wrong hash.
        assert!(read_indexes(&conn, &[stored_hash_index(0, n)]).is_err());
        conn.execute(
            "DELETE FROM tree_runs WHERE first = (SELECT min(first) FROM tree_runs WHERE first > 0)",
            [],
        )
        .expect("delete");
        assert!(matches!(
            read_indexes(&conn, &every),
            Err(rusqlite::Error::QueryReturnedNoRows)
        ));
        assert_eq!(stored_leaf(&conn, 0).expect("leaf 0"), Some(mem.0[&0]));
    }
}
