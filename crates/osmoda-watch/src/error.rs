//! The crate's one error type; `api::error_response` is the only place it becomes HTTP.

use std::path::PathBuf;

/// Everything that can go wrong in osmoda-watch.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The request was malformed or asked for something impossible; nothing was changed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// No such switch or watcher.
    #[error("not found: {0}")]
    NotFound(String),
    /// The operation conflicts with current state (e.g. another switch is running).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Reading or changing the git tree failed.
    #[error("config tree: {0}")]
    Tree(String),
    /// Building, activating or rolling back failed.
    #[error("backend: {0}")]
    Backend(String),
    /// Talking to agentd failed.
    #[error("agentd: {0}")]
    Agentd(String),
    /// agentd answered a request of ours with an error: its status, message and detail are
    /// passed on (a gate's 403 with its ticket, a 409, ...).
    #[error("{message}")]
    Refused {
        /// agentd's HTTP status.
        status: u16,
        /// What was refused, with agentd's `error`.
        message: String,
        /// agentd's `error` as it gave it.
        error: String,
        /// agentd's `detail` (its hint, the ticket to approve, ...).
        detail: serde_json::Value,
    },
    /// The daemon's configuration file is invalid.
    #[error("config: {0}")]
    Config(String),
    /// A file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl WatchError {
    /// The message without the category prefix (the category is the HTTP status and
    /// `detail.kind`): what was wrong, in the words of whoever found it.
    pub fn message(&self) -> String {
        match self {
            WatchError::BadRequest(m)
            | WatchError::NotFound(m)
            | WatchError::Conflict(m)
            | WatchError::Tree(m)
            | WatchError::Backend(m)
            | WatchError::Agentd(m)
            | WatchError::Config(m) => m.clone(),
            WatchError::Refused { message, .. } => message.clone(),
            io @ WatchError::Io { .. } => io.to_string(),
        }
    }

    /// Wraps an I/O error with what was done to which file.
    pub fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> WatchError {
        let path = path.into();
        move |source| WatchError::Io { op, path, source }
    }
}

/// Shorthand result.
pub type Result<T, E = WatchError> = std::result::Result<T, E>;
