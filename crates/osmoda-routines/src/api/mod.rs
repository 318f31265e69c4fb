//! HTTP/1.1 + JSON API on the Unix socket, and the one place errors become responses.

mod routines;
pub mod webhook;

pub use routines::QueuedSwitch;

use std::sync::Arc;

use axum::extract::rejection::{JsonRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde_json::json;

use crate::error::RoutinesError;
use crate::AppState;

/// Largest request body (webhook payloads included).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Every route of osmoda-routines.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(routines::health))
        .route("/routine/list", get(routines::list))
        .route("/routine/history", get(routines::history))
        .route("/routine/trigger/{id}", post(routines::trigger))
        .route("/routine/add", post(routines::add))
        .route("/routine/remove/{id}", delete(routines::remove))
        .route("/webhook/{path}", post(webhook::webhook))
        .fallback(
            |method: axum::http::Method, uri: axum::http::Uri| async move {
                ApiError(RoutinesError::NotFound(format!(
                    "no such route {method} {}; osmoda-routines serves GET /health, GET /metrics, \
                 GET /routine/list, GET /routine/history, POST /routine/add, \
                 POST /routine/trigger/<name>, DELETE /routine/remove/<name> and \
                 POST /webhook/<path> (docs/api.md)",
                    uri.path()
                )))
            },
        )
        .method_not_allowed_fallback(osmoda_daemon::api::method_not_allowed)
        .layer(axum::middleware::map_response(json_errors_only))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// A [`RoutinesError`] on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub RoutinesError);

impl From<RoutinesError> for ApiError {
    fn from(e: RoutinesError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    /// `{"error": "<what was wrong>", "detail": {"kind": "<code>", "hint": "<what to do>"}}`.
    fn into_response(self) -> Response {
        let (status, kind, hint) = match &self.0 {
            RoutinesError::BadRequest(_) | RoutinesError::Config(_) => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "fix the request as the error says (docs/api.md lists the fields); nothing was changed",
            ),
            RoutinesError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "sign `<timestamp>:<path>:<body>` with HMAC-SHA256 and the routine's secret: X-Osmoda-Timestamp (Unix seconds) and X-Osmoda-Signature: sha256=<hex>; nothing ran",
            ),
            RoutinesError::TooLarge(_) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                "a routine's payload is at most 65536 bytes and a request at most 1 MiB (a larger document: store it and send where it is); nothing ran or changed",
            ),
            RoutinesError::NotFound(_) => (
                StatusCode::NOT_FOUND,
                "not_found",
                "list routines with GET /routine/list",
            ),
            RoutinesError::Conflict(_) => (
                StatusCode::CONFLICT,
                "conflict",
                "nothing was run or changed; see the error",
            ),
            RoutinesError::Agentd(_) => (
                StatusCode::BAD_GATEWAY,
                "agentd_unavailable",
                "is agentd (or osmoda-watch) running? check `systemctl status osmoda-agentd osmoda-watch`",
            ),
            RoutinesError::Unavailable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "nothing ran; the operator finds the cause in osmoda-routines' log (`journalctl -u osmoda-routines`)",
            ),
            RoutinesError::History(_) | RoutinesError::Io { .. } => {
                // The cause (a database or file error, with its path) goes to the log only.
                tracing::error!("{}", self.0);
                return osmoda_daemon::api::error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "osmoda-routines could not read or write its own state; the request may not have been recorded",
                    json!({ "kind": "internal", "hint": "see osmoda-routines' log (`journalctl -u osmoda-routines`)" }),
                );
            }
        };
        osmoda_daemon::api::error_response(
            status,
            &self.0.message(),
            json!({ "kind": kind, "hint": hint }),
        )
    }
}

/// Every error answer is JSON: an error axum or a layer produced as plain text (an extractor's
/// rejection, a body over the limit) is wrapped in the API's shape, its text kept as `error`.
async fn json_errors_only(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let text = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .map(|b| osmoda_daemon::api::rejection_reason(&String::from_utf8_lossy(&b)))
        .unwrap_or_default();
    let error = if status == StatusCode::PAYLOAD_TOO_LARGE {
        // A body extractor's own words ("length limit exceeded") say neither which limit nor
        // what happened.
        format!("the request body is over {MAX_BODY_BYTES} bytes; nothing ran or changed")
    } else if text.is_empty() {
        status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string()
    } else {
        text
    };
    let kind = match status {
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    };
    osmoda_daemon::api::error_response(
        status,
        &error,
        json!({ "kind": kind, "hint": "docs/api.md lists each route and its parameters; nothing was changed" }),
    )
}

/// URL path parameters whose rejections use the API's error shape.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct UrlPath<T>(pub T);

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError(RoutinesError::BadRequest(format!(
            "invalid URL path: {} (a routine name or webhook path is ASCII letters, digits, '.', '-' and '_')",
            osmoda_daemon::api::rejection_reason(&r.body_text())
        )))
    }
}

/// JSON body extractor whose rejections use the API's error shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            return ApiError(RoutinesError::TooLarge(format!(
                "the request body is over {MAX_BODY_BYTES} bytes; nothing was changed"
            )));
        }
        ApiError(RoutinesError::BadRequest(osmoda_daemon::api::invalid_json(
            &r,
        )))
    }
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        ApiError(RoutinesError::BadRequest(format!(
            "invalid query: {} (docs/api.md lists each route's parameters)",
            osmoda_daemon::api::rejection_reason(&r.body_text())
        )))
    }
}
