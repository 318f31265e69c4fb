//! The crate's one error type; `api::ApiError` is the only place it becomes HTTP.

use std::path::PathBuf;

/// Everything that can go wrong in osmoda-routines.
#[derive(Debug, thiserror::Error)]
pub enum RoutinesError {
    /// The request was malformed or asked for something impossible; nothing was changed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A webhook request that is not signed correctly or is too old; nothing ran.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// A payload larger than a routine can be handed whole ([`crate::actions::MAX_PAYLOAD_BYTES`]);
    /// nothing ran.
    #[error("too large: {0}")]
    TooLarge(String),
    /// No such routine or webhook.
    #[error("not found: {0}")]
    NotFound(String),
    /// The request conflicts with state (a replayed webhook, a switch already running).
    #[error("conflict: {0}")]
    Conflict(String),
    /// Talking to agentd (or osmoda-watch) failed.
    #[error("agentd: {0}")]
    Agentd(String),
    /// Something this routine needs on the machine is missing (a webhook's secret file); the
    /// message names the routine and the option, never a path.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The daemon's configuration file is invalid.
    #[error("config: {0}")]
    Config(String),
    /// The history database failed.
    #[error("history: {0}")]
    History(String),
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

impl RoutinesError {
    /// The message without the category prefix (the category is the HTTP status and
    /// `detail.kind`).
    pub fn message(&self) -> String {
        match self {
            RoutinesError::BadRequest(m)
            | RoutinesError::Unauthorized(m)
            | RoutinesError::TooLarge(m)
            | RoutinesError::NotFound(m)
            | RoutinesError::Conflict(m)
            | RoutinesError::Agentd(m)
            | RoutinesError::Unavailable(m)
            | RoutinesError::Config(m)
            | RoutinesError::History(m) => m.clone(),
            io @ RoutinesError::Io { .. } => io.to_string(),
        }
    }

    /// Wraps an I/O error with what was done to which file.
    pub fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> RoutinesError {
        let path = path.into();
        move |source| RoutinesError::Io { op, path, source }
    }
}

/// Shorthand result.
pub type Result<T, E = RoutinesError> = std::result::Result<T, E>;
