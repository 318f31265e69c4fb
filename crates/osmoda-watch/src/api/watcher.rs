//! `/watcher/*`: watchers live in the config tree; add and remove edit
//! `services.osmoda.watch.watchers.<name>` through agentd's config API and apply it with SafeSwitch.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use osmoda_config::{HealthCheck, SafeSwitchDefaults, WatchAction, WatchConfig, Watcher};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{page_limit, paged, Action, ApiError, Json};
use crate::error::WatchError;
use crate::switch::BeginRequest;
use crate::watcher::WatcherView;
use crate::AppState;

/// Body of `POST /watcher/add`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    name: String,
    check: HealthCheck,
    interval_secs: u64,
    actions: Vec<WatchAction>,
    reason: Option<String>,
    ttl_secs: Option<u64>,
}

/// A watcher name must be a plain Nix attribute name (it becomes an option path segment).
fn check_name(name: &str) -> Result<(), WatchError> {
    if osmoda_config::tree_edit::valid_attr_name(name) {
        Ok(())
    } else {
        Err(WatchError::BadRequest(format!(
            "watcher name {name:?} must start with a letter or '_' and contain only letters, digits, '-' and '_' (at most 64)"
        )))
    }
}

fn option_path(name: &str) -> String {
    format!("services.osmoda.watch.watchers.{name}")
}

pub(super) async fn add(
    State(st): State<Arc<AppState>>,
    Action(action): Action,
    Json(b): Json<AddBody>,
) -> Result<axum::Json<Value>, ApiError> {
    check_name(&b.name)?;
    let def = Watcher {
        check: b.check,
        interval_secs: b.interval_secs,
        actions: b.actions,
    };
    let probe = WatchConfig {
        watchers: BTreeMap::from([(b.name.clone(), def.clone())]),
        safe_switch: SafeSwitchDefaults {
            ttl_secs: 1,
            health_checks: Vec::new(),
        },
        boundary: Default::default(),
    };
    probe.validate().map_err(WatchError::BadRequest)?;
    crate::checks::validate(&def.check)
        .map_err(|e| WatchError::BadRequest(format!("check: {e}")))?;
    let check = serde_json::to_value(&def.check).unwrap_or_default();
    let check = osmoda_config::tree_edit::option_keys(&check, &[]);
    let value =
        json!({ "check": check, "intervalSecs": def.interval_secs, "actions": def.actions });
    let reason = b
        .reason
        .unwrap_or_else(|| format!("add watcher {}", b.name));
    let edit = json!({ "path": option_path(&b.name), "value": value, "reason": reason });
    let (edit, switch) = apply(
        &st,
        "/config/set",
        edit,
        format!("add watcher {}", b.name),
        b.ttl_secs,
        action,
    )
    .await?;
    Ok(axum::Json(
        json!({ "name": b.name, "watcher": def, "config": edit, "switch": switch }),
    ))
}

/// Edits the tree through agentd (`path` with `body`) and applies the new generation with a
/// SafeSwitch. The switch request is checked first (TTL, no switch running), so a refused
/// request leaves the tree as it was; returns agentd's answer and the switch. The edit and the
/// switch carry the request's action label (`action`).
async fn apply(
    st: &AppState,
    path: &str,
    body: Value,
    plan: String,
    ttl_secs: Option<u64>,
    action: Option<String>,
) -> Result<(Value, Value), WatchError> {
    let req = BeginRequest {
        generation: None,
        plan: Some(plan),
        ttl_secs,
        health_checks: Vec::new(),
        origin: "api".into(),
        approval: None,
        action: action.clone(),
    };
    let agentd = &st.agentd;
    let (edit, s) = st
        .engine
        .begin_with(req, || async move {
            let edit = agentd.call_for(action.as_deref(), path, &body).await?;
            let rev = osmoda_config::tree_edit::landed_rev(&edit)
                .map(str::to_string)
                .ok_or_else(|| {
                    WatchError::Agentd(format!(
                        "agentd's config API answered without a rev: {edit}"
                    ))
                })?;
            Ok((edit, Some(rev)))
        })
        .await?;
    Ok((edit, serde_json::to_value(s).unwrap_or_default()))
}

/// Most watchers one `GET /watcher/list` answers with (the default page size too).
pub const MAX_PAGE: usize = 1000;

/// Query of `GET /watcher/list`: a page of watchers in name order.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Start after this name (the last name of the previous page).
    after: Option<String>,
    /// Page size, 1..=1000 (default 1000).
    limit: Option<usize>,
}

pub(super) async fn list(
    State(st): State<Arc<AppState>>,
    q: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    let axum::extract::Query(q) = q?;
    let limit = page_limit(q.limit, MAX_PAGE, "after=<x-next-cursor>")?;
    let page: Vec<WatcherView> = st.watchers.list(q.after.as_deref(), limit);
    let next = (page.len() == limit)
        .then(|| page.last().map(|w| w.name.clone()))
        .flatten();
    Ok(paged(page, next))
}

/// Query of `DELETE /watcher/remove/{id}`: why (the commit message).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    reason: Option<String>,
}

pub(super) async fn remove(
    State(st): State<Arc<AppState>>,
    Action(action): Action,
    Path(id): Path<String>,
    q: Result<axum::extract::Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let axum::extract::Query(q) = q?;
    check_name(&id)?;
    if !st.watchers.contains(&id) {
        return Err(WatchError::NotFound(format!("no watcher named {id:?} is configured")).into());
    }
    let body = json!({ "path": option_path(&id), "reason": q.reason.unwrap_or_else(|| format!("remove watcher {id}")) });
    let (edit, switch) = apply(
        &st,
        "/config/unset",
        body,
        format!("remove watcher {id}"),
        None,
        action,
    )
    .await?;
    Ok(axum::Json(
        json!({ "removed": id, "config": edit, "switch": switch }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name("web-1").is_ok());
        for bad in ["", "1a", "a.b", "a b", "a\"b", &"x".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
    }
}
