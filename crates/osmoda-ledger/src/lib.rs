//! osModa's hash-chained SQLite event ledger: group-committed appends, queries, full-text search
//! and chain verification.
//!
//! Every row's `hash` is the lowercase hex SHA-256 of `id|ts|type|actor|payload|prev_hash`, and
//! `prev_hash` is the previous row's `hash` (64 zeros for the first row). `type` and `actor` may
//! not contain `|`, which keeps that encoding unambiguous. Only [`Ledger`] writes the ledger; all
//! appends go through one writer thread that commits them in batches (group commit) and answers
//! each caller only after its batch is durable.

mod anchor;
mod checkpoint;
mod error;
mod hash;
mod index;
mod ledger;
mod proof;
mod query;
mod restore;
mod schema;
mod tree;
mod validate;
#[cfg(test)]
mod vectors;
mod verify;
pub mod witness;
mod writer;

pub use anchor::{
    recorded_checkpoints, rows_root, verify_checkpoints, verify_checkpoints_by, AnchorReport,
    Disagreement,
};
pub use checkpoint::{
    generate_key, generate_unique_key, open_note, unique_name, verify_signed,
    verify_signed_in_range, CheckpointFile, CheckpointSigner, JsonLine, JsonlFile, KeyRange,
    SignedCheckpoint, VerifiedCheckpoint,
};
pub use error::LedgerError;
pub use hash::{event_hash, format_ts, now_ts, GENESIS_HASH};
pub use ledger::{Head, Ledger, OpenOptions, WriterStats};
pub use proof::{
    hash_hex, parse_hash, verify_consistency, verify_inclusion, ConsistencyProof, InclusionProof,
    TreeHead,
};
pub use query::{DEFAULT_LIMIT, MAX_LIMIT, MAX_SEARCH_TERMS, SEARCH_BUDGET};
pub use restore::{
    foreign_objects, sqlite_active_objects, sqlite_replace, sqlite_snapshot,
    sqlite_snapshot_nofollow,
};
pub use signed_note::is_key_name_valid;
pub use tlog_tiles::Hash;
pub use tree::{leaf_hash, RootBuilder};
pub use validate::{validate_label, validate_payload, MAX_LABEL_BYTES, MAX_PAYLOAD_BYTES};
pub use verify::{verify, BadEvent, BadReason, VerifyReport};

use serde::{Deserialize, Serialize};

/// An event to append. `kind` is the `type` column; `payload` is JSON text stored verbatim.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Event type, e.g. `config.edit` (a label: 1-128 bytes, no `|`, no control characters).
    pub kind: String,
    /// Who caused the event (a label, same rules as `kind`).
    pub actor: String,
    /// JSON text, at most [`MAX_PAYLOAD_BYTES`]; stored and hashed byte for byte as given.
    pub payload: String,
    /// Exactly-once key for spooled events: a second append with the same key returns the first.
    pub dedup: Option<DedupKey>,
}

impl NewEvent {
    /// An event without a dedup key.
    pub fn new(
        kind: impl Into<String>,
        actor: impl Into<String>,
        payload: impl Into<String>,
    ) -> Self {
        NewEvent {
            kind: kind.into(),
            actor: actor.into(),
            payload: payload.into(),
            dedup: None,
        }
    }

    /// The same event with a dedup key.
    #[must_use]
    pub fn with_dedup(mut self, stream: impl Into<String>, seq: u64) -> Self {
        self.dedup = Some(DedupKey {
            stream: stream.into(),
            seq,
        });
        self
    }
}

/// Identifies one event of a reporter's spool: its stream id and sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DedupKey {
    /// Random id of the reporting spool (a label).
    pub stream: String,
    /// Monotonic sequence number within the stream (at most `i64::MAX`).
    pub seq: u64,
}

/// One stored ledger row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the chain, starting at 1, without gaps.
    pub id: i64,
    /// UTC time of the append, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    pub ts: String,
    /// Event type.
    #[serde(rename = "type")]
    pub kind: String,
    /// Who caused it.
    pub actor: String,
    /// JSON text as given.
    pub payload: String,
    /// `hash` of the previous event (64 zeros for id 1).
    pub prev_hash: String,
    /// SHA-256 over `id|ts|type|actor|payload|prev_hash`, lowercase hex.
    pub hash: String,
}

/// Filters for [`Ledger::query`]; all set filters must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// Exact type, or a prefix if it ends with `*` (`"config.*"`).
    pub kind: Option<String>,
    /// Exact actor, or a prefix if it ends with `*`.
    pub actor: Option<String>,
    /// Only events with `ts >= since`; RFC 3339 (any offset) or `YYYY-MM-DD`.
    pub since: Option<String>,
    /// Only events with `id > after_id` (paging forward).
    pub after_id: Option<i64>,
    /// Only events with `id < before_id` (paging backward, with `descending`).
    pub before_id: Option<i64>,
    /// At most this many events: default 100, 1..=10 000.
    pub limit: Option<usize>,
    /// Newest first instead of oldest first.
    pub descending: bool,
}
