//! The RFC 6962 Merkle tree over the event hashes, kept in the ledger database and extended in
//! the same transaction as the events it covers.
//!
//! Leaf `i` (0-based) is event `i + 1`; its leaf input is the 32 bytes of the event's chain hash
//! (the hex `hash` column decoded), so the leaf hash is `SHA-256(0x00 || hash)`. Hashing, the
//! storage layout and the proofs are those of `golang.org/x/mod/sumdb/tlog` as ported by the
//! [`tlog_tiles`] crate: every appended record stores its leaf hash plus the hashes of the
//! subtrees it completes (just under two 32-byte hashes per event on average) at the dense
//! indexes of [`tlog_tiles::stored_hash_index`], in `tree_hashes`. An append reads nothing: the
//! writer keeps the tree's right edge (the roots of its perfect subtrees, [`Frontier`]) in
//! memory and reloads it from `tree_hashes` at start. `tree_state.size` says how many events the
//! tree covers; it is updated in the same transaction as the hashes.

use crate::LedgerError;
use rusqlite::{Connection, OptionalExtension};
use tlog_tiles::{
    node_hash, record_hash, stored_hash_index, stored_hashes_for_record_hash, sub_tree_index, Hash,
    HashReader,
};

/// Tables of the tree (created with the rest of the schema).
pub(crate) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS tree_hashes (
  idx INTEGER PRIMARY KEY,
  hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tree_state (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  size INTEGER NOT NULL,
  last_id INTEGER NOT NULL
);
INSERT OR IGNORE INTO tree_state (id, size, last_id) VALUES (1, 0, 0);
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

/// The right edge of the tree: stored index and hash of each perfect subtree, largest first.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Frontier {
    /// Number of leaves.
    pub size: u64,
    /// Id of the event of the last leaf (0 for none).
    pub last_id: i64,
    nodes: Vec<(u64, Hash)>,
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
        })
    }

    /// Appends one leaf: returns the first stored index and the hashes to store from there,
    /// and moves the edge.
    pub fn push(&mut self, id: i64, leaf: Hash) -> (u64, Vec<Hash>) {
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
        (stored_hash_index(0, n), hashes)
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

/// Number of events the stored tree covers, and the id of the last one.
pub(crate) fn stored_state(conn: &Connection) -> rusqlite::Result<(u64, i64)> {
    let state: Option<(i64, i64)> = conn
        .prepare_cached("SELECT size, last_id FROM tree_state WHERE id = 1")?
        .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let (size, last_id) = state.unwrap_or((0, 0));
    Ok((u64::try_from(size).unwrap_or(0), last_id))
}

/// Stores the hashes [`Frontier::push`] returned.
pub(crate) fn store(conn: &Connection, first: u64, hashes: &[Hash]) -> rusqlite::Result<()> {
    let mut insert =
        conn.prepare_cached("INSERT OR REPLACE INTO tree_hashes (idx, hash) VALUES (?1, ?2)")?;
    for (k, h) in hashes.iter().enumerate() {
        let idx = i64::try_from(first + k as u64).unwrap_or(i64::MAX);
        insert.execute((idx, &h.0[..]))?;
    }
    Ok(())
}

/// Records what the tree covers after a batch.
pub(crate) fn save_state(conn: &Connection, edge: &Frontier) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE tree_state SET size = ?1, last_id = ?2 WHERE id = 1")?
        .execute((i64::try_from(edge.size).unwrap_or(i64::MAX), edge.last_id))?;
    Ok(())
}

/// Adds the events after `edge.last_id` (at most `limit`) to the tree, inside the caller's
/// transaction; returns how many were added. The caller saves the state.
pub(crate) fn extend(conn: &Connection, edge: &mut Frontier, limit: i64) -> rusqlite::Result<u64> {
    let start = edge.size;
    let mut select =
        conn.prepare_cached("SELECT id, hash FROM events WHERE id > ?1 ORDER BY id LIMIT ?2")?;
    let mut rows = select.query((edge.last_id, limit))?;
    while let Some(row) = rows.next()? {
        let id: i64 = row.get(0)?;
        let hash: String = row.get(1)?;
        let (first, hashes) = edge.push(id, leaf_hash(&hash));
        store(conn, first, &hashes)?;
    }
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
        save_state(&tx, &edge)?;
        tx.commit()?;
    }
}

fn read_indexes(conn: &Connection, indexes: &[u64]) -> rusqlite::Result<Vec<Hash>> {
    let mut select = conn.prepare_cached("SELECT hash FROM tree_hashes WHERE idx = ?1")?;
    indexes
        .iter()
        .map(|&i| {
            let idx = i64::try_from(i).unwrap_or(i64::MAX);
            let blob: Vec<u8> = select.query_row([idx], |r| r.get(0))?;
            let arr: [u8; 32] = blob.try_into().map_err(|b: Vec<u8>| {
                rusqlite::Error::FromSqlConversionFailure(
                    b.len(),
                    rusqlite::types::Type::Blob,
                    format!("tree hash at index {i} is {} bytes, not 32", b.len()).into(),
                )
            })?;
            Ok(Hash(arr))
        })
        .collect()
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

    #[test]
    fn frontier_and_root_builder_agree_with_tlog_tree_hash() {
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
        let mut mem = Mem(Default::default());
        let mut edge = Frontier {
            size: 0,
            last_id: 0,
            nodes: Vec::new(),
        };
        let mut builder = RootBuilder::new();
        for n in 0..300u64 {
            let leaf = record_hash(&n.to_be_bytes());
            let (first, hashes) = edge.push(n as i64 + 1, leaf);
            let expected =
                tlog_tiles::stored_hashes_for_record_hash(n, leaf, &mem).expect("hashes");
            assert_eq!(hashes, expected, "record {n}");
            for (k, h) in hashes.iter().enumerate() {
                mem.0.insert(first + k as u64, *h);
            }
            builder.push(leaf);
            let root = tlog_tiles::tree_hash(n + 1, &mem).expect("root");
            assert_eq!(edge.root(), root, "size {}", n + 1);
            assert_eq!(builder.root(), root, "size {}", n + 1);
        }
    }
}
