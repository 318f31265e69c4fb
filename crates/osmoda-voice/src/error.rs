//! The crate's one error type; `api::ApiError` is the only place it becomes HTTP.

use std::path::PathBuf;

/// Everything that can go wrong in osmoda-voice.
#[derive(Debug, thiserror::Error)]
pub enum VoiceError {
    /// The request was malformed; nothing was changed.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// A path outside the directories the daemon may read.
    #[error("forbidden: {0}")]
    Forbidden(String),
    /// The named file does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The file is not audio this daemon can read (not WAV, an unsupported encoding, truncated).
    #[error("unsupported audio: {0}")]
    Unsupported(String),
    /// The audio is longer (or the file larger) than the daemon accepts.
    #[error("too large: {0}")]
    TooLarge(String),
    /// Something the request needs is not there: no model configured, no audio device, no
    /// gateway, or the engine is busy.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// A speech engine failed on valid input (the model or the piper process).
    #[error("engine: {0}")]
    Engine(String),
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

impl VoiceError {
    /// The message without the category prefix (the category is the HTTP status and
    /// `detail.kind`).
    pub fn message(&self) -> String {
        match self {
            VoiceError::BadRequest(m)
            | VoiceError::Forbidden(m)
            | VoiceError::NotFound(m)
            | VoiceError::Unsupported(m)
            | VoiceError::TooLarge(m)
            | VoiceError::Unavailable(m)
            | VoiceError::Engine(m)
            | VoiceError::Config(m) => m.clone(),
            io @ VoiceError::Io { .. } => io.to_string(),
        }
    }

    /// Wraps an I/O error with what was done to which file.
    pub fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> VoiceError {
        let path = path.into();
        move |source| VoiceError::Io { op, path, source }
    }
}

/// Shorthand result.
pub type Result<T, E = VoiceError> = std::result::Result<T, E>;
