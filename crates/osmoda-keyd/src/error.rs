//! The one error type of keyd; `api` maps it to HTTP (the only place that does).

/// What went wrong. Messages say what happened and what to do; none carries key material.
#[derive(Debug, thiserror::Error)]
pub enum KeydError {
    /// The request is malformed (400). Nothing was charged or written.
    #[error("{0}")]
    BadRequest(String),
    /// No such wallet (404).
    #[error("{0}")]
    NotFound(String),
    /// The policy refused (403); `reason` is the metrics label.
    #[error("{message}")]
    Denied {
        /// Short label: `chain`, `chain_id`, `per_tx_max`, `daily_limit`, `recipient`, ...
        reason: &'static str,
        /// What was refused and why.
        message: String,
    },
    /// A human approval is needed (403 with the ticket to have approved).
    #[error("{message}")]
    ApprovalRequired {
        /// What needs approving.
        message: String,
        /// The ticket agentd opened.
        ticket: serde_json::Value,
    },
    /// The approval ticket was refused by agentd (status and agentd's answer).
    #[error("{message}")]
    Ticket {
        /// agentd's status.
        status: u16,
        /// agentd's answer.
        message: String,
    },
    /// keyd holds as many wallets as `max_wallets` allows (409); nothing was created.
    #[error("{0}")]
    Full(String),
    /// Busy (429): a key import is already running; nothing was done, retry shortly.
    #[error("{0}")]
    Busy(String),
    /// A stored key failed to decrypt or verify (500): the state dir or the secret is wrong.
    #[error("{0}")]
    Vault(String),
    /// agentd could not be reached (502).
    #[error("{0}")]
    Agentd(String),
    /// Anything else (500).
    #[error("{0}")]
    Internal(String),
}

impl KeydError {
    /// An internal error from any displayable cause.
    pub fn internal(e: impl std::fmt::Display) -> KeydError {
        KeydError::Internal(e.to_string())
    }
}

impl From<rusqlite::Error> for KeydError {
    fn from(e: rusqlite::Error) -> Self {
        KeydError::Internal(format!("state database: {e}"))
    }
}

impl From<osmoda_vault::VaultError> for KeydError {
    fn from(e: osmoda_vault::VaultError) -> Self {
        match e {
            osmoda_vault::VaultError::Vault(m) => KeydError::Vault(m),
            osmoda_vault::VaultError::Internal(m) => KeydError::Internal(m),
        }
    }
}
