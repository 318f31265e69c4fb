//! Tree heads, inclusion proofs and consistency proofs from the stored Merkle tree, and their
//! verification (RFC 6962 §2.1.1 and §2.1.2, as `golang.org/x/mod/sumdb/tlog` computes them).
//!
//! Hashes travel as lowercase hex. Proof hashes are ordered from the leaf (or the smaller
//! tree) upwards, as in RFC 6962.

use crate::tree::{self, DbReader};
use crate::{Ledger, LedgerError};
use serde::{Deserialize, Serialize};
use tlog_tiles::{check_record, check_tree, prove_record, prove_tree, tree_hash, Hash};

/// Size and root of the Merkle tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeHead {
    /// Number of leaves (events 1..=size).
    pub size: u64,
    /// RFC 6962 root, hex (`e3b0c442…` for the empty tree).
    pub root: String,
}

/// Proof that event `id` is leaf `id - 1` of the tree of `tree_size` leaves with `root`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionProof {
    /// Event id.
    pub id: i64,
    /// Its 0-based leaf index (`id - 1`).
    pub leaf_index: u64,
    /// The event's chain hash (the leaf input, hex).
    pub event_hash: String,
    /// `SHA-256(0x00 || event_hash bytes)`, hex.
    pub leaf_hash: String,
    /// Size of the tree the proof is for.
    pub tree_size: u64,
    /// Root of that tree, hex.
    pub root: String,
    /// Audit path, leaf upwards, hex.
    pub proof: Vec<String>,
}

/// Proof that the tree of `from` leaves is a prefix of the tree of `to` leaves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsistencyProof {
    /// Smaller size.
    pub from: u64,
    /// Larger size.
    pub to: u64,
    /// Root of the smaller tree, hex.
    pub from_root: String,
    /// Root of the larger tree, hex.
    pub to_root: String,
    /// Consistency proof, hex (empty when `from` is 0 or equals `to`).
    pub proof: Vec<String>,
}

/// Hex of a hash.
pub fn hash_hex(h: &Hash) -> String {
    hex::encode(h.0)
}

/// Parses 64 hex digits.
///
/// # Errors
/// [`LedgerError::InvalidQuery`] naming `what` when it is not 64 hex digits.
pub fn parse_hash(what: &str, s: &str) -> Result<Hash, LedgerError> {
    let mut out = [0u8; 32];
    hex::decode_to_slice(s, &mut out)
        .map_err(|_| LedgerError::InvalidQuery(format!("{what} {s:?} is not 64 hex digits")))?;
    Ok(Hash(out))
}

fn parse_all(what: &str, v: &[String]) -> Result<Vec<Hash>, LedgerError> {
    v.iter().map(|s| parse_hash(what, s)).collect()
}

fn size_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl Ledger {
    /// The tree's current size and root.
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`] on read failure, [`LedgerError::Malformed`] if stored hashes are
    /// missing.
    pub fn tree_head(&self) -> Result<TreeHead, LedgerError> {
        self.with_reader(|conn| {
            let tx = conn.unchecked_transaction()?;
            let (size, _) = tree::stored_state(&tx)?;
            let root = tree_hash(size, &DbReader(&tx)).map_err(tree::proof_error)?;
            Ok(TreeHead {
                size,
                root: hash_hex(&root),
            })
        })
    }

    /// In one read transaction: the tree's head, the number of event rows, and the tree's root
    /// at `at` leaves (`None` when the tree is smaller). A ledger whose rows and tree disagree
    /// was changed outside the writer.
    ///
    /// # Errors
    /// As [`Ledger::tree_head`].
    pub fn tree_snapshot(&self, at: u64) -> Result<(TreeHead, u64, Option<String>), LedgerError> {
        self.with_reader(|conn| {
            let tx = conn.unchecked_transaction()?;
            let (size, _) = tree::stored_state(&tx)?;
            let reader = DbReader(&tx);
            let root = tree_hash(size, &reader).map_err(tree::proof_error)?;
            let rows: i64 = tx.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
            let at_root = if at <= size {
                Some(hash_hex(
                    &tree_hash(at, &reader).map_err(tree::proof_error)?,
                ))
            } else {
                None
            };
            Ok((
                TreeHead {
                    size,
                    root: hash_hex(&root),
                },
                u64::try_from(rows).unwrap_or(0),
                at_root,
            ))
        })
    }

    /// The root of the tree when it had `size` leaves.
    ///
    /// # Errors
    /// [`LedgerError::InvalidQuery`] if `size` is larger than the tree; as [`Ledger::tree_head`].
    pub fn root_at(&self, size: u64) -> Result<String, LedgerError> {
        self.with_reader(|conn| {
            let tx = conn.unchecked_transaction()?;
            let (now, _) = tree::stored_state(&tx)?;
            check_size("size", size, now)?;
            let root = tree_hash(size, &DbReader(&tx)).map_err(tree::proof_error)?;
            Ok(hash_hex(&root))
        })
    }

    /// Proof that event `id` is in the tree of `size` leaves (default: the current tree).
    ///
    /// # Errors
    /// [`LedgerError::InvalidQuery`] for an id outside `1..=size` or a size beyond the tree;
    /// [`LedgerError::NotFound`] if the event row is missing; [`LedgerError::Malformed`] if the
    /// row no longer matches its leaf (the row was changed after it was written).
    pub fn inclusion_proof(
        &self,
        id: i64,
        size: Option<u64>,
    ) -> Result<InclusionProof, LedgerError> {
        self.with_reader(|conn| {
            let tx = conn.unchecked_transaction()?;
            let (now, _) = tree::stored_state(&tx)?;
            let t = size.unwrap_or(now);
            check_size("size", t, now)?;
            if id < 1 || id > size_i64(t) {
                return Err(LedgerError::InvalidQuery(format!(
                    "id {id} is not in the tree of size {t}; ids 1..={t} are"
                )));
            }
            let event = crate::schema::get_event(&tx, id)?.ok_or_else(|| {
                LedgerError::NotFound(format!(
                    "event {id} is missing from the ledger although the tree covers it; run `agentctl verify-ledger`"
                ))
            })?;
            let n = u64::try_from(id - 1).unwrap_or(0);
            let reader = DbReader(&tx);
            let leaf = tree::leaf_hash(&event.hash);
            let stored = tlog_tiles::HashReader::read_hashes(
                &reader,
                &[tlog_tiles::stored_hash_index(0, n)],
            )
            .map_err(tree::proof_error)?;
            if stored.first() != Some(&leaf) {
                return Err(LedgerError::Malformed(format!(
                    "event {id} does not match leaf {n} of the Merkle tree: the row was changed after it was written; run `agentctl verify-ledger`"
                )));
            }
            let proof = prove_record(t, n, &reader).map_err(tree::proof_error)?;
            let root = tree_hash(t, &reader).map_err(tree::proof_error)?;
            Ok(InclusionProof {
                id,
                leaf_index: n,
                event_hash: event.hash,
                leaf_hash: hash_hex(&leaf),
                tree_size: t,
                root: hash_hex(&root),
                proof: proof.iter().map(hash_hex).collect(),
            })
        })
    }

    /// Proof that the tree of `from` leaves is a prefix of the tree of `to` leaves.
    ///
    /// # Errors
    /// [`LedgerError::InvalidQuery`] unless `from <= to <= ` the tree's size; as
    /// [`Ledger::tree_head`].
    pub fn consistency_proof(&self, from: u64, to: u64) -> Result<ConsistencyProof, LedgerError> {
        self.with_reader(|conn| {
            let tx = conn.unchecked_transaction()?;
            let (now, _) = tree::stored_state(&tx)?;
            check_size("to", to, now)?;
            if from > to {
                return Err(LedgerError::InvalidQuery(format!(
                    "from ({from}) is larger than to ({to}); a tree can only be consistent with a smaller one"
                )));
            }
            let reader = DbReader(&tx);
            let proof = if from == 0 {
                Vec::new()
            } else {
                prove_tree(to, from, &reader).map_err(tree::proof_error)?
            };
            Ok(ConsistencyProof {
                from,
                to,
                from_root: hash_hex(&tree_hash(from, &reader).map_err(tree::proof_error)?),
                to_root: hash_hex(&tree_hash(to, &reader).map_err(tree::proof_error)?),
                proof: proof.iter().map(hash_hex).collect(),
            })
        })
    }
}

fn check_size(what: &str, size: u64, now: u64) -> Result<(), LedgerError> {
    if size > now {
        return Err(LedgerError::InvalidQuery(format!(
            "{what} {size} is larger than the tree ({now} events)"
        )));
    }
    Ok(())
}

/// Checks an inclusion proof on its own terms: the leaf hash is that of `event_hash`, and the
/// audit path leads from it to `root`.
///
/// # Errors
/// [`LedgerError::InvalidQuery`] for malformed hex; [`LedgerError::ProofFailed`] when the proof
/// does not hold.
pub fn verify_inclusion(p: &InclusionProof) -> Result<(), LedgerError> {
    let leaf = tree::leaf_hash(&p.event_hash);
    if hash_hex(&leaf) != p.leaf_hash || p.leaf_index + 1 != u64::try_from(p.id).unwrap_or(0) {
        return Err(LedgerError::ProofFailed(format!(
            "leaf of event {} is not SHA-256(0x00 || its hash) at index id - 1",
            p.id
        )));
    }
    let proof = parse_all("proof hash", &p.proof)?;
    let root = parse_hash("root", &p.root)?;
    check_record(&proof, p.tree_size, root, p.leaf_index, leaf).map_err(|e| {
        LedgerError::ProofFailed(format!(
            "event {} is not in the tree of size {} with root {}: {e}",
            p.id, p.tree_size, p.root
        ))
    })
}

/// Checks a consistency proof: the tree of `from` leaves with `from_root` is a prefix of the
/// tree of `to` leaves with `to_root`.
///
/// # Errors
/// As [`verify_inclusion`].
pub fn verify_consistency(p: &ConsistencyProof) -> Result<(), LedgerError> {
    let from_root = parse_hash("from_root", &p.from_root)?;
    let to_root = parse_hash("to_root", &p.to_root)?;
    let proof = parse_all("proof hash", &p.proof)?;
    let failed = |e: String| {
        LedgerError::ProofFailed(format!(
            "the tree of size {} is not a prefix of the tree of size {}: {e}",
            p.from, p.to
        ))
    };
    if p.from == 0 {
        // Every tree extends the empty one; the proof must be empty and the root the empty hash.
        return if proof.is_empty() && from_root == tlog_tiles::EMPTY_HASH {
            Ok(())
        } else {
            Err(failed(
                "the empty tree has an empty proof and the empty root".into(),
            ))
        };
    }
    check_tree(&proof, p.to, to_root, p.from, from_root).map_err(|e| failed(e.to_string()))
}
