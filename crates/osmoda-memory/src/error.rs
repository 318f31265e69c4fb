//! The one error type of the memory crate.

use std::path::PathBuf;

/// What went wrong in a memory operation.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The request was malformed; nothing was written. The message names the field and the rule.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing a markdown note (or the memory directory) failed.
    #[error("memory file {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A note's place (or the daily notes' directory) holds something else: a directory, a
    /// symbolic link, a FIFO, a file with other hard links. Nothing was written.
    #[error("{path}: {why}, and nothing was written to it (move it out of the memory directory)")]
    NotANote {
        /// The place, relative to the memory directory.
        path: String,
        /// What is there instead.
        why: String,
    },
    /// The note holds [`crate::notes::NOTE_CAP`] bytes or more and takes no more sections
    /// (only `MEMORY.md` is ever refused: a day's notes go on in its next part). Nothing was
    /// written.
    #[error("{path} holds {size} bytes, the most a note takes from osModa ({cap}); nothing was written (durable facts are meant to be few: store this as a daily note, or trim {path} by hand)", cap = crate::notes::NOTE_CAP)]
    NoteFull {
        /// The note, relative to the memory directory.
        path: String,
        /// Its size in bytes.
        size: u64,
    },
    /// The derived index failed; it can always be rebuilt from the notes (`reindex`).
    #[error("memory index: {0} (the index is derived; `agentctl memory reindex` rebuilds it)")]
    Index(#[from] rusqlite::Error),
    /// The embedding model could not be loaded or did not answer.
    #[error("embedding model: {0}")]
    Embed(String),
}

impl MemoryError {
    /// Whether SQLite found the index file damaged (not a database, or a corrupt page or
    /// full-text segment), as opposed to busy, full or unreadable.
    pub fn is_damaged_index(&self) -> bool {
        matches!(
            self,
            MemoryError::Index(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        )
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        MemoryError::Io {
            path: path.into(),
            source,
        }
    }
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, MemoryError>;
