//! The one error type of osmoda-mesh; `api` maps it to HTTP (the only place that does).

/// What went wrong. No message carries private key material or an invite secret.
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The request is malformed (400). Nothing was written.
    #[error("{0}")]
    BadRequest(String),
    /// The request body is over the size the API reads (413). Nothing was written.
    #[error("{0}")]
    TooLarge(String),
    /// The caller may not do this (403): a request topic reserved for another daemon.
    #[error("{0}")]
    Forbidden(String),
    /// No such peer, request or route (404).
    #[error("{0}")]
    NotFound(String),
    /// The state does not allow it now (409): the peer is not connected, a name is taken.
    #[error("{0}")]
    Conflict(String),
    /// The remote peer refused or broke the protocol (502), e.g. while accepting an invite.
    #[error("{0}")]
    Peer(String),
    /// No answer in time (504).
    #[error("{0}")]
    Timeout(String),
    /// The sealed identity does not open (500): the state dir or the secret is wrong.
    #[error("{0}")]
    Vault(String),
    /// agentd or osmoda-watch refused (502, with their answer).
    #[error("{0}")]
    Agentd(String),
    /// agentd or osmoda-watch did not answer, or failed inside (502): worth trying again; a
    /// durable intent (`intents`) is kept and retried.
    #[error("{0}")]
    Unavailable(String),
    /// agentd's gate judged the change destructive and opened an approval ticket (403): `detail`
    /// is agentd's (`{kind: "approval_required", ticket, effect, approve, operation, expires_at}`),
    /// passed on so the caller can have a person approve it and retry with the ticket.
    #[error("{message}")]
    ApprovalRequired {
        /// agentd's refusal.
        message: String,
        /// agentd's detail, ticket included.
        detail: serde_json::Value,
    },
    /// Anything else (500).
    #[error("{0}")]
    Internal(String),
}

impl From<osmoda_vault::VaultError> for MeshError {
    fn from(e: osmoda_vault::VaultError) -> Self {
        match e {
            osmoda_vault::VaultError::Vault(m) => MeshError::Vault(m),
            osmoda_vault::VaultError::Internal(m) => MeshError::Internal(m),
        }
    }
}
