//! `/routine/*` and `/health`. Routines live in the config tree: add and remove edit
//! `services.osmoda.routines.<name>` through agentd's config API and apply the new generation
//! with osmoda-watch's SafeSwitch, as `/watcher/add` does; the routine runs once the rendered
//! `routines.json` arrives.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use osmoda_config::{Concurrency, Missed, Routine, RoutineAction, RoutinesConfig, Trigger};
use osmoda_daemon::server::PeerCred;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{ApiError, Json, UrlPath};
use crate::actions::Fired;
use crate::error::RoutinesError;
use crate::history::MAX_PAGE;
use crate::schedule::Schedule;
use crate::AppState;

pub(super) async fn health(State(st): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let cfg = st.engine.config();
    let error = st
        .config_error
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // What the config in force needs on the machine may have gone since it was loaded (a
    // webhook's secret file deleted): said here by routine and option, never by path.
    let machine = crate::machine::check(&cfg, &crate::places(&cfg, &st.opts))
        .err()
        .or_else(|| st.engine.subscription_problem());
    let status = match (&error, &machine) {
        (Some(_), _) => "config_refused",
        (None, Some(_)) => "degraded",
        (None, None) => "ok",
    };
    Ok(axum::Json(json!({
        "status": status,
        "problem": machine,
        "routines": cfg.routines.len(),
        "enabled": cfg.routines.values().filter(|r| r.enable).count(),
        "active_runs": st.engine.active(),
        "event_cursor": st.engine.history().cursor()?,
        "config_error": error,
    })))
}

/// One routine as listed.
#[derive(Debug, Serialize)]
pub struct RoutineView {
    name: String,
    #[serde(flatten)]
    routine: Routine,
    /// Next scheduled run (cron and interval), RFC 3339.
    next_run: Option<String>,
    /// The newest run: `{id, status, started_at, ended_at, exit}`.
    last_run: Option<Value>,
}

/// Query of `GET /routine/list`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Start after this name.
    after: Option<String>,
    /// Page size, 1..=1000 (default 1000).
    limit: Option<usize>,
}

fn page_limit(limit: Option<usize>, default: usize) -> Result<usize, ApiError> {
    let limit = limit.unwrap_or(default);
    if limit == 0 || limit > MAX_PAGE {
        return Err(RoutinesError::BadRequest(format!(
            "limit {limit} must be between 1 and {MAX_PAGE}"
        ))
        .into());
    }
    Ok(limit)
}

pub(super) async fn list(
    State(st): State<Arc<AppState>>,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    let Query(q) = q?;
    let limit = page_limit(q.limit, MAX_PAGE)?;
    let cfg = st.engine.config();
    let now = st.opts.clock.now();
    let h = st.engine.history();
    let mut out = Vec::new();
    let range = match &q.after {
        Some(a) => cfg.routines.range::<str, _>((
            std::ops::Bound::Excluded(a.as_str()),
            std::ops::Bound::Unbounded,
        )),
        None => cfg.routines.range::<str, _>(..),
    };
    for (name, r) in range.take(limit) {
        let next_run = match (r.enable, Schedule::of(&r.trigger)) {
            (true, Ok(Some(s))) => {
                let anchor = h
                    .mark(name)?
                    .and_then(chrono::DateTime::from_timestamp_millis)
                    .unwrap_or(now);
                s.next_after(now, anchor)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
            }
            _ => None,
        };
        let last_run = h
            .list_page(Some(name), None, 1, 0)?
            .into_iter()
            .next()
            .map(|r| {
                json!({ "id": r.id, "status": r.status, "started_at": r.started_at,
                    "ended_at": r.ended_at, "exit": r.exit })
            });
        out.push(RoutineView {
            name: name.clone(),
            routine: r.clone(),
            next_run,
            last_run,
        });
    }
    // As every list: a full page names where the next starts (`after`; names need no
    // escaping: letters, digits, '-' and '_').
    let mut headers = HeaderMap::new();
    if out.len() == limit {
        if let Some(v) = out.last().and_then(|l| l.name.parse().ok()) {
            headers.insert("x-next-cursor", v);
        }
    }
    Ok((headers, axum::Json(out)).into_response())
}

/// Query of `GET /routine/history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    /// Only runs of this routine.
    routine: Option<String>,
    /// Only runs with a smaller id (the `x-next-cursor` of the previous page).
    before_id: Option<i64>,
    /// Page size, 1..=1000 (default 100).
    limit: Option<usize>,
    /// One run, with its whole output (a page shows the first [`PAGE_OUTPUT_BYTES`] of each).
    id: Option<i64>,
}

/// Bytes of each run's output a history page shows (a page is at most 1,000 × 4 KiB of
/// output, whatever the runs kept); `?id=` gives one run whole.
pub const PAGE_OUTPUT_BYTES: usize = 4096;

pub(super) async fn history(
    State(st): State<Arc<AppState>>,
    q: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::response::Response, ApiError> {
    let Query(q) = q?;
    if let Some(id) = q.id {
        if q.routine.is_some() || q.before_id.is_some() || q.limit.is_some() {
            return Err(RoutinesError::BadRequest(
                "id names one run: give it alone (routine, before_id and limit page the history)"
                    .into(),
            )
            .into());
        }
        let run = st.engine.history().run(id)?.ok_or_else(|| {
            RoutinesError::NotFound(format!(
                "no run {id} in the history (runs are kept history_days days)"
            ))
        })?;
        return Ok(axum::Json(vec![run]).into_response());
    }
    let limit = page_limit(q.limit, 100)?;
    let runs = st.engine.history().list_page(
        q.routine.as_deref(),
        q.before_id,
        limit,
        PAGE_OUTPUT_BYTES,
    )?;
    let mut headers = HeaderMap::new();
    if runs.len() == limit {
        if let Some(last) = runs.last() {
            if let Ok(v) = last.id.to_string().parse() {
                headers.insert("x-next-cursor", v);
            }
        }
    }
    Ok((headers, axum::Json(runs)).into_response())
}

/// Body of `POST /routine/trigger/{id}` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TriggerBody {
    /// Handed to the action (`OSMODA_PAYLOAD`, or appended to a prompt).
    payload: Option<Value>,
}

pub(super) async fn trigger(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    UrlPath(id): UrlPath<String>,
    body: axum::body::Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let b: TriggerBody = if body.is_empty() {
        TriggerBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            RoutinesError::BadRequest(format!(
                "invalid JSON body: {} (send {{\"payload\": <any JSON>}} or nothing)",
                osmoda_daemon::api::rejection_reason(&e.to_string())
            ))
        })?
    };
    if let Some(p) = &b.payload {
        crate::actions::check_payload_size(&p.to_string())?;
    }
    let who = format!(
        "uid={},pid={}",
        peer.uid.map_or("?".into(), |u| u.to_string()),
        peer.pid.map_or("?".into(), |p| p.to_string())
    );
    let fired = Fired {
        kind: "manual".into(),
        reference: who,
        payload: b.payload,
        chain: Vec::new(),
        origin: None,
    };
    let f = st.engine.fire(&id, fired).await?;
    Ok(axum::Json(
        json!({ "routine": id, "run_id": f.run_id, "status": f.status }),
    ))
}

/// Body of `POST /routine/add`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    name: String,
    trigger: Trigger,
    action: RoutineAction,
    enable: Option<bool>,
    missed: Option<Missed>,
    jitter_secs: Option<u64>,
    concurrency: Option<Concurrency>,
    /// The commit message.
    reason: Option<String>,
    /// TTL of the SafeSwitch that applies it.
    ttl_secs: Option<u64>,
}

/// Longest SafeSwitch TTL osmoda-watch accepts (its `switch::engine::MAX_TTL_SECS`): checked
/// here before the commit, so a TTL watch would refuse cannot leave a commit unapplied.
const MAX_TTL_SECS: u64 = 86_400;

fn option_path(name: &str) -> String {
    format!("services.osmoda.routines.{name}")
}

fn check_name(name: &str) -> Result<(), RoutinesError> {
    if osmoda_config::routines::valid_name(name) {
        Ok(())
    } else {
        Err(RoutinesError::BadRequest(format!(
            "routine name {name:?} must start with a letter or '_' and contain only letters, digits, '-' and '_' (at most 64)"
        )))
    }
}

/// POST to agentd or osmoda-watch (`who` names it); 2xx → body, 409 → Conflict, other 4xx →
/// BadRequest, anything else → Agentd. Messages name the daemon and quote its `error` text,
/// never its socket path (that goes to the log).
async fn call(
    c: &osmoda_client::Client,
    who: &str,
    path: &str,
    body: &Value,
) -> Result<Value, RoutinesError> {
    let r = c.post(path, body).await.map_err(|e| {
        tracing::warn!("POST {path} on {}: {e}", c.socket().display());
        RoutinesError::Agentd(format!(
            "{who} could not be asked (POST {path}); nothing was changed by this request"
        ))
    })?;
    // The other daemon's own sentence, not its whole body.
    let why = r.body["error"]
        .as_str()
        .map_or_else(|| r.body.to_string(), str::to_string);
    match r.status {
        200..=299 => Ok(r.body),
        409 => Err(RoutinesError::Conflict(format!(
            "{who} refused POST {path} (409): {why}"
        ))),
        s @ 400..=499 => Err(RoutinesError::BadRequest(format!(
            "{who} refused POST {path} ({s}): {why}"
        ))),
        s => Err(RoutinesError::Agentd(format!(
            "{who} failed POST {path} ({s}): {why}"
        ))),
    }
}

/// Fails unless osmoda-watch answers `GET /health`: checked before a routine edit is
/// committed, so an unreachable SafeSwitch leaves the tree untouched.
async fn watch_reachable(st: &AppState) -> Result<(), RoutinesError> {
    let probe = st
        .watch
        .clone()
        .with_timeout(std::time::Duration::from_secs(10));
    let fail = |how: String| {
        tracing::warn!("osmoda-watch at {}: {how}", st.watch.socket().display());
        RoutinesError::Agentd(format!(
            "osmoda-watch (SafeSwitch) {how}; nothing was committed: start it \
             (`systemctl start osmoda-watch`) and try again"
        ))
    };
    match probe.get("/health").await {
        Ok(r) if r.is_success() => Ok(()),
        Ok(r) => Err(fail(format!("answered GET /health with {}", r.status))),
        Err(_) => Err(fail("is not reachable".to_string())),
    }
}

/// The answer of an edit that landed: applied by SafeSwitch, or committed but not applied
/// (osmoda-watch refused or failed after the commit: 202 with `applied: false`, the rev and
/// how to apply or undo it).
fn landed(
    mut body: Value,
    edit: &Value,
    switch: Result<Value, RoutinesError>,
    undo: &str,
) -> (axum::http::StatusCode, axum::Json<Value>) {
    body["config"] = edit.clone();
    match switch {
        Ok(s) if s["state"] == "queued" => {
            body["applied"] = json!(false);
            // The sentence a caller shows (the bridge prints `error` of `applied: false`).
            body["error"] = s["detail"].clone();
            body["switch"] = s;
            body["hint"] = json!(
                "GET /routine/list shows the change once that switch applied it; \
                 GET /switch/history on osmoda-watch shows the switch"
            );
            (axum::http::StatusCode::ACCEPTED, axum::Json(body))
        }
        Ok(s) => {
            body["applied"] = json!(true);
            body["switch"] = s;
            (axum::http::StatusCode::OK, axum::Json(body))
        }
        Err(e) => {
            let rev = osmoda_config::tree_edit::landed_rev(edit).unwrap_or_default();
            body["applied"] = json!(false);
            body["switch"] = Value::Null;
            body["error"] = json!(format!(
                "committed to the config tree as {rev} but not applied: {}",
                e.message()
            ));
            body["hint"] = json!(format!(
                "apply it with `agentctl switch begin --generation {rev}` (or POST /switch/begin \
                 on osmoda-watch), or undo it with {undo}"
            ));
            (axum::http::StatusCode::ACCEPTED, axum::Json(body))
        }
    }
}

/// Applies the generation of a config edit with SafeSwitch.
async fn apply(
    st: &Arc<AppState>,
    edit: &Value,
    plan: String,
    ttl_secs: Option<u64>,
) -> Result<Value, RoutinesError> {
    let rev = osmoda_config::tree_edit::landed_rev(edit).ok_or_else(|| {
        RoutinesError::Agentd(format!(
            "agentd's config API answered without a rev: {edit}"
        ))
    })?;
    let mut body = json!({ "generation": rev, "plan": plan, "health_checks": [] });
    if let Some(t) = ttl_secs {
        body["ttl_secs"] = json!(t);
    }
    match call(&st.watch, "osmoda-watch", "/switch/begin", &body).await {
        // Another switch runs (two adds in a row): the commit has landed; its switch is begun
        // as soon as osmoda-watch takes one, rather than left for a person to apply.
        Err(RoutinesError::Conflict(m)) if m.contains(WATCH_BUSY) => {
            queue_switch(st, ttl_secs);
            Ok(json!({ "state": "queued", "id": null, "detail": format!(
                "waiting for osmoda-watch, which is running another switch: osmoda-routines \
                 begins a switch of HEAD (which holds this commit) as soon as it takes one, for \
                 at most {} minutes",
                QUEUE_FOR.as_secs() / 60
            ) }))
        }
        other => other,
    }
}

/// What osmoda-watch's 409 says when another switch runs or is being started.
const WATCH_BUSY: &str = "only one switch runs at a time";
/// How long a queued switch keeps asking (osmoda-mesh queues its switches as long).
const QUEUE_FOR: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Switches osmoda-watch could not take yet: how many edits are waiting, and whether a task
/// is asking for them. One switch of HEAD applies every commit made before it began.
#[derive(Debug, Default)]
pub struct QueuedSwitch {
    waiting: u64,
    asking: bool,
}

/// Queues a switch of HEAD: one task asks osmoda-watch every second until it takes one (or
/// [`QUEUE_FOR`] passed, or it refuses for another reason), and asks again when an edit was
/// queued after the switch it began started.
fn queue_switch(st: &Arc<AppState>, ttl_secs: Option<u64>) {
    {
        let mut q = st.queued_switch.lock().unwrap_or_else(|e| e.into_inner());
        q.waiting += 1;
        if q.asking {
            return;
        }
        q.asking = true;
    }
    let st = Arc::clone(st);
    tokio::spawn(async move {
        let until = tokio::time::Instant::now() + QUEUE_FOR;
        let mut body = json!({ "plan": "apply routines edits queued while another switch ran",
                               "health_checks": [] });
        if let Some(t) = ttl_secs {
            body["ttl_secs"] = json!(t);
        }
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let seen = st
                .queued_switch
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .waiting;
            let done = match call(&st.watch, "osmoda-watch", "/switch/begin", &body).await {
                Ok(s) => {
                    tracing::info!("the queued switch of HEAD began as switch {}", s["id"]);
                    true
                }
                Err(RoutinesError::Conflict(m))
                    if m.contains(WATCH_BUSY) && tokio::time::Instant::now() < until =>
                {
                    false
                }
                Err(e) => {
                    tracing::error!(
                        "the queued switch of HEAD did not begin; apply it with `agentctl switch \
                         begin`: {}",
                        e.message()
                    );
                    let mut q = st.queued_switch.lock().unwrap_or_else(|e| e.into_inner());
                    *q = QueuedSwitch::default();
                    return;
                }
            };
            if done {
                let mut q = st.queued_switch.lock().unwrap_or_else(|e| e.into_inner());
                if q.waiting == seen {
                    *q = QueuedSwitch::default();
                    return;
                }
                // An edit was queued after that switch began: ask again for HEAD.
            }
        }
    });
}

pub(super) async fn add(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    Json(b): Json<AddBody>,
) -> Result<(axum::http::StatusCode, axum::Json<Value>), ApiError> {
    check_name(&b.name)?;
    if let Some(t) = b.ttl_secs.filter(|t| !(1..=MAX_TTL_SECS).contains(t)) {
        return Err(RoutinesError::BadRequest(format!(
            "ttl_secs {t} must be 1..={MAX_TTL_SECS} (the SafeSwitch that applies the routine)"
        ))
        .into());
    }
    let routine = Routine {
        enable: b.enable.unwrap_or(true),
        trigger: b.trigger,
        action: b.action,
        missed: b.missed.unwrap_or_default(),
        jitter_secs: b.jitter_secs.unwrap_or(0),
        concurrency: b.concurrency.unwrap_or_default(),
    };
    // Judge it as the daemon will: next to the routines in force (webhook paths are unique),
    // with this machine's gateway and boundary.
    let current = st.engine.config();
    let mut probe: RoutinesConfig = (*current).clone();
    probe.routines.insert(b.name.clone(), routine.clone());
    probe.validate().map_err(RoutinesError::BadRequest)?;
    // Against this machine too (its secret file in place, its user not root, its socket
    // reachable), as the daemon will check it at load; only this routine: the others passed.
    let mut one = (*current).clone();
    one.routines = std::collections::BTreeMap::from([(b.name.clone(), routine.clone())]);
    let places = crate::places(&probe, &st.opts);
    crate::machine::check(&one, &places).map_err(RoutinesError::BadRequest)?;
    // A new webhook's secret must not lie where a ring1 routine in force binds either.
    crate::machine::check_binds(&probe, &places).map_err(RoutinesError::BadRequest)?;
    watch_reachable(&st).await?;
    let value = osmoda_config::tree_edit::option_keys(
        &serde_json::to_value(&routine).unwrap_or_default(),
        &["env", "body"],
    );
    let reason = asked_by(
        b.reason
            .unwrap_or_else(|| format!("add routine {}", b.name)),
        &peer,
    );
    let edit = call(
        &st.agentd,
        "agentd",
        "/config/set",
        &json!({ "path": option_path(&b.name), "value": value, "reason": reason }),
    )
    .await?;
    let switch = apply(&st, &edit, format!("add routine {}", b.name), b.ttl_secs).await;
    Ok(landed(
        json!({ "name": b.name, "routine": routine }),
        &edit,
        switch,
        &format!("DELETE /routine/remove/{}", b.name),
    ))
}

/// The commit message of an edit made for `peer`: agentd records osmoda-routines as the
/// author, so the message names who asked (`SO_PEERCRED`, never a field the caller sends).
fn asked_by(reason: String, peer: &PeerCred) -> String {
    format!(
        "{reason} (asked by uid={},pid={})",
        peer.uid.map_or("?".into(), |u| u.to_string()),
        peer.pid.map_or("?".into(), |p| p.to_string())
    )
}

/// Query of `DELETE /routine/remove/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveQuery {
    /// The commit message.
    reason: Option<String>,
}

pub(super) async fn remove(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<PeerCred>,
    UrlPath(id): UrlPath<String>,
    q: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<(axum::http::StatusCode, axum::Json<Value>), ApiError> {
    let Query(q) = q?;
    check_name(&id)?;
    // A module default cannot be removed, overridden in the tree or not: unsetting the
    // override would bring the default back while the answer said "removed".
    let cfg = st.engine.config();
    if cfg.default_routines.iter().any(|d| *d == id) {
        return Err(RoutinesError::Conflict(format!(
            "routine {id:?} is one of the module's default routines: removing it from the config \
             tree would bring the default back, not remove it; nothing was committed. Stop it \
             with `services.osmoda.routines.{id}.enable = false` (`agentctl config set \
             services.osmoda.routines.{id}.enable false -m <why>`), or go back to the default \
             with `agentctl config unset services.osmoda.routines.{id} -m <why>`"
        ))
        .into());
    }
    // The tree decides what exists: a routine committed but not yet applied can be removed.
    let in_force = cfg.routines.contains_key(&id);
    watch_reachable(&st).await?;
    let reason = asked_by(
        q.reason.unwrap_or_else(|| format!("remove routine {id}")),
        &peer,
    );
    let edit = call(
        &st.agentd,
        "agentd",
        "/config/unset",
        &json!({ "path": option_path(&id), "reason": reason }),
    )
    .await
    .map_err(|e| match e {
        // A routine the module defines by default (the HEARTBEAT ones) is not in the tree.
        RoutinesError::BadRequest(m) if m.contains("(404)") && in_force => {
            RoutinesError::Conflict(format!(
                "routine {id:?} is not defined in the config tree (a default routine?): \
                 disable it with `services.osmoda.routines.{id}.enable = false` ({m})"
            ))
        }
        RoutinesError::BadRequest(m) if m.contains("(404)") => RoutinesError::NotFound(format!(
            "no routine named {id:?} is in force or defined in the config tree"
        )),
        other => other,
    })?;
    let switch = apply(&st, &edit, format!("remove routine {id}"), None).await;
    Ok(landed(
        json!({ "removed": id }),
        &edit,
        switch,
        "`agentctl config revert` of that commit",
    ))
}
