//! `/switch/*`: begin, status, commit, rollback, history, preview.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use osmoda_config::HealthCheck;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{page_limit, paged, parse_id, Action, ApiError, Json};
use crate::error::WatchError;
use crate::switch::{BeginRequest, SwitchSession};
use crate::AppState;

/// Body of `POST /switch/begin`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeginBody {
    generation: Option<String>,
    plan: Option<String>,
    ttl_secs: Option<u64>,
    #[serde(default)]
    health_checks: Vec<HealthCheck>,
    /// Approval ticket for a destructive switch to an older generation.
    approval: Option<String>,
}

pub(super) async fn begin(
    State(st): State<Arc<AppState>>,
    Action(action): Action,
    Json(b): Json<BeginBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let s = st
        .engine
        .begin(BeginRequest {
            generation: b.generation,
            plan: b.plan,
            ttl_secs: b.ttl_secs,
            health_checks: b.health_checks,
            origin: "api".into(),
            approval: b.approval,
            action,
        })
        .await?;
    let mut v = serde_json::to_value(&s).unwrap_or_default();
    v["previous_generation"] = json!(s.previous_generation);
    Ok(axum::Json(v))
}

pub(super) async fn status(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<axum::Json<SwitchSession>, ApiError> {
    Ok(axum::Json(st.engine.status(parse_id(&id)?)?))
}

pub(super) async fn commit(
    State(st): State<Arc<AppState>>,
    Action(action): Action,
    Path(id): Path<String>,
) -> Result<axum::Json<SwitchSession>, ApiError> {
    Ok(axum::Json(st.engine.commit(parse_id(&id)?, action).await?))
}

/// Optional body of `POST /switch/rollback/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RollbackBody {
    reason: Option<String>,
}

pub(super) async fn rollback(
    State(st): State<Arc<AppState>>,
    Action(action): Action,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<SwitchSession>, ApiError> {
    let b: RollbackBody = if body.iter().all(u8::is_ascii_whitespace) {
        RollbackBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| WatchError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    if let Some(r) = &b.reason {
        crate::switch::check_text("reason", r)?;
    }
    let reason = b
        .reason
        .unwrap_or_else(|| "requested through the API".into());
    let why = format!("manual rollback: {reason}");
    Ok(axum::Json(
        st.engine.rollback(parse_id(&id)?, why, action).await?,
    ))
}

/// Switches one `GET /switch/history` answers with when the caller names no `limit`.
pub const HISTORY_DEFAULT_LIMIT: usize = 100;

/// Query of `GET /switch/history`: a page of switches, newest first.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only switches with a smaller id (the `x-next-cursor` of the previous page).
    before_id: Option<u64>,
    /// Page size, 1..=1000 (default 100).
    limit: Option<usize>,
}

pub(super) async fn history(
    State(st): State<Arc<AppState>>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    let Query(q) = q?;
    let limit = page_limit(q.limit, HISTORY_DEFAULT_LIMIT, "before_id=<x-next-cursor>")?;
    let page = st.engine.history(q.before_id, limit)?;
    let next = (page.len() == limit)
        .then(|| page.last().map(|s| s.id.to_string()))
        .flatten();
    Ok(paged(page, next))
}

/// Query of `GET /switch/preview`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviewQuery {
    generation: Option<String>,
}

pub(super) async fn preview(
    State(st): State<Arc<AppState>>,
    q: Result<Query<PreviewQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let Query(q) = q?;
    let tree = st.engine.tree();
    let to = match &q.generation {
        Some(g) => tree.resolve(g)?,
        None => tree.head()?,
    };
    let from = tree.last_deployed()?;
    let (diff, files) = match &from {
        Some(f) => (tree.diff(f, &to)?, tree.changed_files(f, &to)?),
        None => (String::new(), Vec::new()),
    };
    let outside: Vec<&String> = files
        .iter()
        .filter(|f| *f != crate::tree::OSMODA_FILE)
        .collect();
    let backend = st.engine.backend();
    let cannot_apply: Vec<String> = if backend.name() == "local" {
        outside
            .iter()
            .map(|f| format!("{f}: the local backend applies only services.osmoda from osmoda.nix"))
            .collect()
    } else {
        Vec::new()
    };
    let closure_diff = backend.preview_extra(&to).await;
    Ok(axum::Json(json!({
        "from": from,
        "to": to,
        "first_deploy": from.is_none(),
        "files": files,
        "diff": diff,
        "cannot_apply": cannot_apply,
        "closure_diff": closure_diff,
    })))
}

impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(r: axum::extract::rejection::QueryRejection) -> Self {
        ApiError(WatchError::BadRequest(format!(
            "invalid query string: {}",
            osmoda_daemon::api::rejection_reason(&r.body_text())
        )))
    }
}
