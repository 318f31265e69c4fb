//! HTTP/1.1 + JSON API on keyd's Unix socket (docs/api.md), and the one place errors become
//! responses: `{"error": "...", "detail": {"kind": ..., ...}}`.

mod sign;
mod wallet;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::FromRequest;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use crate::error::KeydError;
use crate::AppState;

/// Every route of keyd (`/metrics` is added by the shared listener).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(wallet::health))
        .route("/wallet/create", post(wallet::create))
        .route("/wallet/list", get(wallet::list))
        .route("/wallet/delete", post(wallet::delete))
        .route("/wallet/sign", post(sign::sign))
        .route("/wallet/send", post(sign::send))
        .fallback(|method: axum::http::Method, uri: axum::http::Uri| async move {
            ApiError(KeydError::NotFound(format!(
                "no such route {method} {}; keyd serves GET /health, GET /wallet/list and POST /wallet/create|sign|send|delete (docs/api.md)",
                uri.path()
            )))
        })
        .method_not_allowed_fallback(osmoda_daemon::api::method_not_allowed)
        .with_state(state)
}

/// A [`KeydError`] on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub KeydError);

impl From<KeydError> for ApiError {
    fn from(e: KeydError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, detail) = match &self.0 {
            KeydError::BadRequest(_) => (
                StatusCode::BAD_REQUEST,
                json!({ "kind": "bad_request", "hint": "fix the request as the error says (docs/api.md lists the fields); nothing was signed, charged or written" }),
            ),
            KeydError::NotFound(_) => (
                StatusCode::NOT_FOUND,
                json!({ "kind": "not_found", "hint": "GET /wallet/list shows the wallets" }),
            ),
            KeydError::Denied { reason, .. } => (
                StatusCode::FORBIDDEN,
                json!({ "kind": "denied", "reason": reason, "hint": "the policy is services.osmoda.keyd.policy (/etc/osmoda/keyd.json); keyd only reads it" }),
            ),
            KeydError::ApprovalRequired { ticket, .. } => (
                StatusCode::FORBIDDEN,
                json!({
                    "kind": "approval_required",
                    "ticket": ticket,
                    "hint": format!(
                        "a person approves it with `agentctl approvals approve {}`; then send the same request again with \"approval\": \"<ticket id>\"",
                        ticket.get("id").and_then(serde_json::Value::as_str).unwrap_or("<ticket id>")
                    ),
                }),
            ),
            KeydError::Ticket { status, .. } => (
                StatusCode::from_u16(*status).unwrap_or(StatusCode::FORBIDDEN),
                json!({ "kind": "approval", "hint": "agentctl approvals list shows the ticket; a ticket is single-use and bound to the exact operation" }),
            ),
            KeydError::Full(_) => (
                StatusCode::CONFLICT,
                json!({ "kind": "wallet_cap", "hint": "services.osmoda.keyd.maxWallets bounds the wallets keyd holds; GET /wallet/list shows them" }),
            ),
            KeydError::Busy(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                json!({ "kind": "busy", "hint": "one key import runs at a time (its KDF takes about a second); send it again in a few seconds" }),
            ),
            KeydError::Vault(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "kind": "vault", "hint": "see keyd's log (`journalctl -u osmoda-keyd`)" }),
            ),
            KeydError::Agentd(_) => (
                StatusCode::BAD_GATEWAY,
                json!({ "kind": "agentd_unavailable", "hint": "approvals need agentd: is it running? (`systemctl status osmoda-agentd`)" }),
            ),
            KeydError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({ "kind": "internal", "hint": "see keyd's log (`journalctl -u osmoda-keyd`)" }),
            ),
        };
        osmoda_daemon::api::error_response(status, &self.0.to_string(), detail)
    }
}

/// JSON body extractor whose rejections use the API's error shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError(KeydError::BadRequest(osmoda_daemon::api::invalid_json(&r)))
    }
}

/// Longest ticket id accepted in `approval` (agentd's are 32 hex digits).
const MAX_TICKET_ID: usize = 64;

/// `approval` must look like a ticket id: 1–64 ASCII letters, digits, `-` or `_`.
///
/// # Errors
/// `BadRequest` otherwise (the value is not echoed).
pub fn check_ticket_id(approval: Option<&str>) -> Result<(), KeydError> {
    match approval {
        Some(t)
            if t.is_empty()
                || t.len() > MAX_TICKET_ID
                || !t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            Err(KeydError::BadRequest(format!(
                "`approval` must be the id of an approved ticket (up to {MAX_TICKET_ID} letters, digits, - or _; got {} bytes)",
                t.len()
            )))
        }
        _ => Ok(()),
    }
}

/// The caller as recorded in receipts: the kernel's uid and pid of the connection.
pub fn caller(peer: &osmoda_daemon::server::PeerCred) -> String {
    let uid = peer.uid.map_or_else(|| "?".into(), |u| u.to_string());
    let pid = peer.pid.map_or_else(|| "?".into(), |p| p.to_string());
    format!("uid={uid},pid={pid}")
}
