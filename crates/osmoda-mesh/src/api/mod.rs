//! HTTP/1.1 + JSON API on mesh's Unix socket (docs/api.md), and the one place errors become
//! responses: `{"error": "...", "detail": {"kind": ..., "hint": ...}}`.

mod identity;
mod peers;

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::FromRequest;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::json;

use crate::error::MeshError;
use crate::AppState;

/// Every route of mesh (`/metrics` is added by the shared listener).
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(identity::health))
        .route("/identity", get(identity::identity))
        .route("/identity/rotate", post(identity::rotate))
        .route("/invite/create", post(identity::invite_create))
        .route("/invite/accept", post(identity::invite_accept))
        .route("/peers", get(peers::list))
        .route("/peer/{id}", get(peers::get_one).delete(peers::remove))
        .route("/peer/{id}/send", post(peers::send))
        .route("/peer/{id}/inbox", get(peers::inbox))
        .route("/peer/{id}/request", post(peers::request))
        .route("/requests/next", get(peers::next_request))
        .route("/requests/{id}/respond", post(peers::respond))
        .fallback(|| async {
            ApiError(MeshError::NotFound(
                "no such route; see docs/api.md (osmoda-mesh)".into(),
            ))
        })
        .method_not_allowed_fallback(osmoda_daemon::api::method_not_allowed)
        .with_state(state)
}

/// A [`MeshError`] on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub MeshError);

impl From<MeshError> for ApiError {
    fn from(e: MeshError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let MeshError::ApprovalRequired { message, detail } = &self.0 {
            let mut detail = detail.clone();
            if let Some(t) = detail["ticket"].as_str() {
                detail["hint"] = json!(format!(
                    "once a person approved it, repeat the request with the query parameter approval={t}"
                ));
            }
            return osmoda_daemon::api::error_response(StatusCode::FORBIDDEN, message, detail);
        }
        let (status, kind, hint) = match &self.0 {
            MeshError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request", "fix the request as the error says (docs/api.md lists the fields); nothing was sent or written"),
            MeshError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", "GET /peers lists the peers"),
            MeshError::Conflict(_) => (StatusCode::CONFLICT, "conflict", "GET /peers shows each peer's state; peers are services.osmoda.mesh.peers"),
            MeshError::Peer(_) => (StatusCode::BAD_GATEWAY, "peer", "the other host refused or could not be reached; its ledger (mesh.handshake.refused) says why"),
            MeshError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "timeout", "the peer did not answer in time; try again or raise timeout_secs"),
            MeshError::Vault(_) => (StatusCode::INTERNAL_SERVER_ERROR, "vault", "see mesh's log (`journalctl -u osmoda-mesh`)"),
            MeshError::Agentd(_) => (StatusCode::BAD_GATEWAY, "agentd", "recording a peer needs agentd and osmoda-watch; their answer is in the error"),
            MeshError::Internal(_) | MeshError::ApprovalRequired { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "internal", "see mesh's log (`journalctl -u osmoda-mesh`)"),
        };
        osmoda_daemon::api::error_response(
            status,
            &self.0.to_string(),
            json!({ "kind": kind, "hint": hint }),
        )
    }
}

/// JSON body extractor whose rejections use the API's error shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError(MeshError::BadRequest(format!(
            "invalid JSON body: {}",
            r.body_text()
        )))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError(MeshError::BadRequest(format!(
            "invalid query: {}",
            r.body_text()
        )))
    }
}

pub(crate) fn check_peer_name(name: &str) -> Result<(), MeshError> {
    if osmoda_config::tree_edit::valid_attr_name(name) {
        Ok(())
    } else {
        Err(MeshError::BadRequest(format!(
            "peer name {name:?} must start with a letter or '_' and contain only letters, digits, '-' and '_' (at most 64)"
        )))
    }
}
