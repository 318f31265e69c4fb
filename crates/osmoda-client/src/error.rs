//! The single error type of the client crate.

use std::path::PathBuf;

/// Everything that can go wrong talking to a daemon or spooling events.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The Unix socket could not be connected (daemon not running, wrong path, permissions).
    #[error("cannot connect to {}: {source}; is the daemon running?", socket.display())]
    Connect {
        /// The socket path that was dialled.
        socket: PathBuf,
        /// Why the connect failed.
        source: std::io::Error,
    },
    /// The request could not be built (bad path, unserialisable body); nothing was sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The HTTP exchange failed after connecting (connection reset, protocol error).
    #[error("HTTP exchange with {} failed: {message}", socket.display())]
    Http {
        /// The socket path.
        socket: PathBuf,
        /// What failed.
        message: String,
    },
    /// No response within the client's timeout.
    #[error("no response from {} within {secs:.1} s", socket.display())]
    Timeout {
        /// The socket path.
        socket: PathBuf,
        /// The timeout that expired.
        secs: f64,
    },
    /// The daemon answered with a 4xx/5xx status (from [`crate::Response::ok_json`]).
    #[error("daemon answered {status}: {error}")]
    Api {
        /// HTTP status code.
        status: u16,
        /// The `error` field of the body (or the body text).
        error: String,
        /// The `detail` field of the body (`null` if absent).
        detail: serde_json::Value,
    },
    /// An event given to the reporter is invalid; it was not spooled.
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    /// Another reporter (in this or another process) holds the spool directory.
    #[error("spool directory {} is in use by another reporter; give each daemon its own spool dir", dir.display())]
    SpoolLocked {
        /// The spool directory.
        dir: PathBuf,
    },
    /// A spool file or directory could not be read or written.
    #[error("spool: {context}: {source}")]
    Spool {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A spool state file (`stream`, `next_seq`) has unexpected contents.
    #[error("spool state is corrupt: {0}; move the spool directory aside to start a new stream")]
    SpoolCorrupt(String),
    /// [`crate::Reporter::open`] was called outside a tokio runtime.
    #[error("the reporter needs a running tokio runtime for its delivery task")]
    NoRuntime,
}

impl ClientError {
    pub(crate) fn spool(context: impl Into<String>, source: std::io::Error) -> Self {
        ClientError::Spool {
            context: context.into(),
            source,
        }
    }
}
