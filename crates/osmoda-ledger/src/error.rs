//! The single error type of the ledger crate.

/// Everything that can go wrong when opening, writing, reading or verifying a ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// An event `type`, `actor` or dedup stream is not an acceptable label; nothing was written.
    #[error(
        "invalid {field} {value:?}: {reason}; use 1-128 bytes without '|' or control characters"
    )]
    InvalidLabel {
        /// Which field was rejected (`type`, `actor`, `dedup.stream`).
        field: &'static str,
        /// The offending value, truncated to 160 bytes for the message.
        value: String,
        /// What exactly is wrong with it.
        reason: &'static str,
    },
    /// The payload is not valid JSON text or is too large; nothing was written.
    #[error("invalid payload: {0}; the payload must be a JSON document of at most 1 MiB")]
    InvalidPayload(String),
    /// A dedup key cannot be stored (e.g. seq above `i64::MAX`); nothing was written.
    #[error("invalid dedup key: {0}")]
    InvalidDedup(String),
    /// A query or search parameter is malformed; nothing was read.
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// The requested event or record does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A Merkle proof, checkpoint or signature does not verify.
    #[error("verification failed: {0}")]
    ProofFailed(String),
    /// A checkpoint signing or verifier key is unusable.
    #[error("invalid key: {0}")]
    InvalidKey(String),
    /// The writer thread has stopped (after a panic or a failed open); reopen the ledger.
    #[error("the ledger writer has stopped; reopen the ledger to continue appending")]
    Closed,
    /// The transaction holding this event failed and was rolled back: nothing of it was written.
    #[error("ledger write failed and was rolled back, the event was not recorded: {0}")]
    WriteFailed(String),
    /// A stored row does not have the expected shape (wrong column type, non-UTF-8 text).
    #[error("ledger database is malformed: {0}")]
    Malformed(String),
    /// An SQLite error while opening or reading the database.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// A filesystem error (e.g. creating the ledger's parent directory).
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
}
