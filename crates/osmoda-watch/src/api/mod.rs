//! HTTP/1.1 + JSON API on the Unix socket, and the one place errors become responses.

mod switch;
mod watcher;

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::FromRequest;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use serde_json::json;

use crate::error::WatchError;
use crate::AppState;

/// Every route of osmoda-watch.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/switch/begin", post(switch::begin))
        .route("/switch/status/{id}", get(switch::status))
        .route("/switch/commit/{id}", post(switch::commit))
        .route("/switch/rollback/{id}", post(switch::rollback))
        .route("/switch/history", get(switch::history))
        .route("/switch/preview", get(switch::preview))
        .route("/watcher/add", post(watcher::add))
        .route("/watcher/list", get(watcher::list))
        .route("/watcher/remove/{id}", delete(watcher::remove))
        .fallback(|| async {
            ApiError(WatchError::NotFound(
                "no such route; see docs/api.md".into(),
            ))
        })
        .with_state(state)
}

/// A [`WatchError`] on its way to the client.
#[derive(Debug)]
pub struct ApiError(pub WatchError);

impl From<WatchError> for ApiError {
    fn from(e: WatchError) -> Self {
        ApiError(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error) = match &self.0 {
            WatchError::BadRequest(_) | WatchError::Config(_) => {
                (StatusCode::BAD_REQUEST, "bad_request")
            }
            WatchError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            WatchError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            WatchError::Agentd(_) => (StatusCode::BAD_GATEWAY, "agentd_unavailable"),
            WatchError::Tree(_) => (StatusCode::INTERNAL_SERVER_ERROR, "config_tree"),
            WatchError::Backend(_) => (StatusCode::INTERNAL_SERVER_ERROR, "backend"),
            WatchError::Io { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "io"),
        };
        if status.is_server_error() {
            tracing::error!("{}", self.0);
        }
        (
            status,
            axum::Json(json!({ "error": error, "detail": self.0.to_string() })),
        )
            .into_response()
    }
}

/// JSON body extractor whose rejections use the API's error shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError(WatchError::BadRequest(format!(
            "invalid JSON body: {}",
            r.body_text()
        )))
    }
}

fn parse_id(id: &str) -> Result<u64, ApiError> {
    id.parse().map_err(|_| {
        ApiError(WatchError::BadRequest(format!(
            "switch id {id:?} is not a number"
        )))
    })
}

async fn health(
    axum::extract::State(st): axum::extract::State<Arc<AppState>>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let deployed = st.engine.tree().last_deployed()?;
    Ok(axum::Json(json!({
        "status": "ok",
        "active_switches": st.engine.active_count(),
        "watchers": st.watchers.count(),
        "backend": st.engine.backend().name(),
        "deployed_generation": deployed,
    })))
}
