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
        .method_not_allowed_fallback(osmoda_daemon::api::method_not_allowed)
        .with_state(state)
}

/// Largest page of any list (`/switch/history`, `/watcher/list`).
pub const MAX_LIMIT: usize = 1000;

/// Response header holding the cursor of the next page (absent on the last page).
pub const NEXT_CURSOR: &str = "x-next-cursor";

/// The page size for `requested` (`default` when unset), at most [`MAX_LIMIT`].
///
/// # Errors
/// `BadRequest` for 0 or above [`MAX_LIMIT`], naming how to page instead (`cursor`).
fn page_limit(requested: Option<usize>, default: usize, cursor: &str) -> Result<usize, ApiError> {
    match requested {
        None => Ok(default),
        Some(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        Some(n) => Err(WatchError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}, not {n}; for more, follow the pages with {cursor}"
        ))
        .into()),
    }
}

/// A JSON array with the `x-next-cursor` header when a next page may exist. The cursor is
/// percent-encoded (any watcher name fits in a header) and goes back verbatim as the query value.
fn paged<T: serde::Serialize>(items: Vec<T>, next: Option<String>) -> Response {
    let mut resp = axum::Json(items).into_response();
    if let Some(v) = next.and_then(|n| axum::http::HeaderValue::from_str(&percent_encode(&n)).ok())
    {
        resp.headers_mut().insert(NEXT_CURSOR, v);
    }
    resp
}

/// Percent-encodes every byte but RFC 3986's unreserved characters.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The request's action label (`X-Osmoda-Action`: it is made for an action, e.g. a routine's
/// run), which everything the request causes carries into the ledger. An invalid label is a
/// 400 before anything happens.
#[derive(Debug, Clone, Default)]
pub struct Action(pub Option<String>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Action {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        let Some(v) = parts.headers.get(osmoda_client::ACTION_HEADER) else {
            return Ok(Action(None));
        };
        v.to_str()
            .ok()
            .filter(|l| osmoda_client::valid_action_label(l))
            .map(|l| Action(Some(l.to_string())))
            .ok_or_else(|| {
                ApiError(WatchError::BadRequest(format!(
                    "invalid {} header: an action label is 1 to 40 characters of [a-z0-9._-]",
                    osmoda_client::ACTION_HEADER
                )))
            })
    }
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
    /// `{"error": "<what was wrong>", "detail": {"kind": "<code>", "hint": "<what to do>"}}`,
    /// the shape every osModa daemon answers with (docs/api.md).
    fn into_response(self) -> Response {
        if let WatchError::Refused {
            status,
            detail,
            error,
            ..
        } = &self.0
        {
            return refused(*status, &self.0.message(), error, detail);
        }
        let (status, kind, hint) = match &self.0 {
            WatchError::BadRequest(_) | WatchError::Config(_) => (
                StatusCode::BAD_REQUEST,
                "bad_request",
                "fix the request as the error says (docs/api.md lists the fields); nothing was changed",
            ),
            WatchError::NotFound(_) => (
                StatusCode::NOT_FOUND,
                "not_found",
                "list switches with GET /switch/history and watchers with GET /watcher/list",
            ),
            WatchError::Conflict(_) => (
                StatusCode::CONFLICT,
                "conflict",
                "GET /switch/history lists every switch and its state",
            ),
            WatchError::Agentd(_) => (
                StatusCode::BAD_GATEWAY,
                "agentd_unavailable",
                "is agentd running? check `systemctl status osmoda-agentd` (or --agentd-socket)",
            ),
            WatchError::Tree(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "config_tree",
                "check the config tree with `agentctl config status`",
            ),
            WatchError::Backend(_) | WatchError::Io { .. } | WatchError::Refused { .. } => (
                StatusCode::INTERNAL_SERVER_ERROR,
                if matches!(self.0, WatchError::Backend(_)) { "backend" } else { "io" },
                "see osmoda-watch's log (`journalctl -u osmoda-watch`)",
            ),
        };
        osmoda_daemon::api::error_response(
            status,
            &self.0.message(),
            json!({ "kind": kind, "hint": hint }),
        )
    }
}

/// agentd's refusal of a request osmoda-watch made for its caller: a 4xx keeps agentd's status
/// (a 409, a 400, ...), anything else is a 502. `detail` is agentd's own detail with
/// `kind: "agentd_refused"` and a `hint` (agentd's, when it gave one). The approval gate's 403
/// (its detail names the `ticket`) is passed on exactly as agentd gave it, `error` and `detail`
/// alike, so a caller sees the same ticket shape whichever daemon it called.
fn refused(
    status: u16,
    message: &str,
    agentd_error: &str,
    agentd_detail: &serde_json::Value,
) -> Response {
    let status = match StatusCode::from_u16(status) {
        Ok(s) if s.is_client_error() => s,
        _ => StatusCode::BAD_GATEWAY,
    };
    if status == StatusCode::FORBIDDEN && agentd_detail.get("ticket").is_some_and(|t| t.is_string())
    {
        return osmoda_daemon::api::error_response(status, agentd_error, agentd_detail.clone());
    }
    if status.is_server_error() {
        tracing::error!("{message}");
    }
    let mut detail = match agentd_detail {
        serde_json::Value::Object(m) => m.clone(),
        _ => serde_json::Map::new(),
    };
    detail.insert("kind".into(), json!("agentd_refused"));
    if !detail.get("hint").is_some_and(serde_json::Value::is_string) {
        detail.insert(
            "hint".into(),
            json!("agentd refused the change osmoda-watch asked for on your behalf; nothing was applied"),
        );
    }
    (
        status,
        axum::Json(json!({ "error": message, "detail": detail })),
    )
        .into_response()
}

/// JSON body extractor whose rejections use the API's error shape.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct Json<T>(pub T);

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        ApiError(WatchError::BadRequest(osmoda_daemon::api::invalid_json(&r)))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_are_header_safe_and_decode_back() {
        for (name, enc) in [
            ("web-1", "web-1"),
            ("a b", "a%20b"),
            ("é&x=1", "%C3%A9%26x%3D1"),
            ("\n", "%0A"),
        ] {
            assert_eq!(percent_encode(name), enc);
            assert!(axum::http::HeaderValue::from_str(enc).is_ok());
        }
    }

    #[test]
    fn page_limits_name_the_bounds_and_the_way_to_page() {
        assert_eq!(page_limit(None, 100, "c").ok(), Some(100));
        assert_eq!(page_limit(Some(1000), 100, "c").ok(), Some(1000));
        for bad in [0, 1001, usize::MAX] {
            let e = page_limit(Some(bad), 100, "before_id=<x-next-cursor>").unwrap_err();
            let msg = e.0.message();
            assert!(msg.contains(&format!("not {bad}")), "{msg}");
            assert!(msg.contains("before_id=<x-next-cursor>"), "{msg}");
        }
    }
}
