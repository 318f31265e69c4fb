//! Reading the tree's history and recording changes that are not attribute edits: generations,
//! diffs, drift status, revert, and committing a person's hand edits.

use std::sync::Arc;

use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::StatusCode;
use osmoda_generations::{Actor, GenError, Generation};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{agent_actor, blocking, land, tree, Landed};
use crate::error::{ApiError, Json, Query};
use crate::peer::{Caller, Peer};
use crate::AppState;

/// Parameters of `GET /config/generations`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationsParams {
    /// At most this many, newest first (default 50, max 1000).
    pub limit: Option<usize>,
}

/// `GET /config/generations`
pub async fn generations(
    State(st): State<Arc<AppState>>,
    Query(p): Query<GenerationsParams>,
) -> Result<axum::Json<Vec<Generation>>, ApiError> {
    let limit = p.limit.unwrap_or(50);
    if limit == 0 || limit > 1000 {
        return Err(ApiError::bad_request("limit must be between 1 and 1000"));
    }
    let tree = tree(&st)?;
    Ok(axum::Json(
        blocking(move || Ok(tree.generations(limit)?)).await?,
    ))
}

/// `GET /config/generation/{rev}`
pub async fn generation(
    State(st): State<Arc<AppState>>,
    UrlPath(rev): UrlPath<String>,
) -> Result<axum::Json<osmoda_generations::GenerationDetail>, ApiError> {
    let tree = tree(&st)?;
    Ok(axum::Json(blocking(move || Ok(tree.show(&rev)?)).await?))
}

/// Parameters of `GET /config/diff`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DiffParams {
    /// Older revision.
    pub from: String,
    /// Newer revision (default `HEAD`).
    pub to: Option<String>,
}

/// `GET /config/diff?from=&to=`
pub async fn diff(
    State(st): State<Arc<AppState>>,
    Query(p): Query<DiffParams>,
) -> Result<axum::Json<Value>, ApiError> {
    let tree = tree(&st)?;
    let to = p.to.unwrap_or_else(|| "HEAD".into());
    let (from, to2) = (p.from.clone(), to.clone());
    let patch = blocking(move || Ok(tree.diff(&from, &to2)?)).await?;
    Ok(axum::Json(
        json!({ "from": p.from, "to": to, "patch": patch }),
    ))
}

/// `GET /config/status`: uncommitted hand edits (drift).
pub async fn status(State(st): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let tree = tree(&st)?;
    let changes = blocking(move || Ok(tree.status()?)).await?;
    Ok(axum::Json(
        json!({ "clean": changes.is_empty(), "changes": changes }),
    ))
}

/// Body of `POST /config/revert`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevertBody {
    /// The generation to undo.
    pub rev: String,
    /// Why.
    pub reason: String,
    /// Approval ticket, when undoing it is destructive.
    pub approval: Option<String>,
}

/// `POST /config/revert`: a new generation undoing `rev` (history kept).
pub async fn revert(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(b): Json<RevertBody>,
) -> Result<axum::Json<Landed>, ApiError> {
    if b.reason.trim().is_empty() {
        return Err(ApiError::bad_request(
            "`reason` is required: it becomes the commit message",
        ));
    }
    let t = tree(&st)?;
    let rev = b.rev.clone();
    blocking(move || {
        t.show(&rev)?;
        Ok(())
    })
    .await?;
    let judged =
        crate::gate::check_revert(&st, &caller.actor, &b.rev, b.approval.as_deref()).await?;
    let request = json!({ "op": "config.revert", "rev": b.rev, "reason": b.reason });
    let rev = b.rev;
    let landed = land(
        &st,
        &caller.actor,
        agent_actor(&caller),
        request,
        b.reason,
        move |tree, actor, reason, rid| tree.revert(&rev, actor, reason, Some(rid)),
    )
    .await?;
    judged.landed(&st).await;
    Ok(axum::Json(landed))
}

/// Body of `POST /config/commit`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    /// Why the person changed the files: the commit message.
    pub reason: String,
    /// Approval ticket, when the hand edits are destructive.
    pub approval: Option<String>,
}

/// The person behind a uid, for commits of hand edits.
fn person(peer: &Peer) -> Actor {
    let uid = peer.uid.unwrap_or(u32::MAX);
    let name = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map_or_else(|| format!("uid-{uid}"), |u| u.name);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "localhost".into());
    Actor::new(name.clone(), format!("{name}@{host}"))
}

/// `POST /config/commit`: record a person's uncommitted hand edits as a generation by them.
pub async fn commit(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Json(b): Json<CommitBody>,
) -> Result<axum::Json<Landed>, ApiError> {
    if b.reason.trim().is_empty() {
        return Err(ApiError::bad_request(
            "`reason` is required: it becomes the commit message",
        ));
    }
    let t = tree(&st)?;
    let changes = blocking(move || Ok(t.status()?)).await?;
    if changes.is_empty() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "nothing to commit: the tree has no uncommitted changes",
        ));
    }
    let who = person(&peer);
    let judged = crate::gate::check_commit(&st, &who.name, b.approval.as_deref()).await?;
    let request = json!({ "op": "config.commit", "changes": changes, "reason": b.reason });
    let name = who.name.clone();
    let landed = land(
        &st,
        &name,
        who,
        request,
        b.reason,
        move |tree, actor, reason, rid| tree.commit_worktree(actor, reason, Some(rid)),
    )
    .await?;
    judged.landed(&st).await;
    Ok(axum::Json(landed))
}

/// Start reporting hand edits of the tree as `config.drift` ledger events.
///
/// # Errors
/// Fails when the tree cannot be watched.
pub fn watch_drift(
    st: &Arc<AppState>,
) -> Result<Option<osmoda_generations::DriftWatcher>, GenError> {
    let Some(tree) = &st.config_tree else {
        return Ok(None);
    };
    let ledger = st.ledger.clone();
    let actor = "agentd[drift-watch]".to_string();
    osmoda_generations::watch_drift(tree.dir(), move |res| {
        let payload = match res {
            Ok(changes) => json!({ "clean": changes.is_empty(), "changes": changes }),
            Err(e) => json!({ "error": e.to_string() }),
        };
        let ev = osmoda_ledger::NewEvent::new("config.drift", actor.clone(), payload.to_string());
        if let Err(e) = ledger.append_blocking(ev) {
            tracing::error!(error = %e, "cannot record config drift");
        }
    })
    .map(Some)
}

/// Finishes a tree mutation that a crash interrupted (see `osmoda_generations::Tree::recover`)
/// and records the outcome: `config.committed` or `config.failed` naming the request, and
/// `config.lock_cleared` for each stale git lock removed. Call once at start, before serving.
///
/// # Errors
/// Fails when the tree cannot be repaired (a live process holds a git lock: it is named) or the
/// ledger cannot be written.
pub fn recover(st: &Arc<AppState>) -> anyhow::Result<()> {
    let Some(tree) = &st.config_tree else {
        return Ok(());
    };
    let outcome = tree.recover()?;
    let record = |kind: &str, payload: Value| {
        st.ledger.append_blocking(osmoda_ledger::NewEvent::new(
            kind,
            "agentd[recovery]".to_string(),
            payload.to_string(),
        ))
    };
    for lock in tree.take_cleared_locks() {
        record(
            "config.lock_cleared",
            json!({ "lock": lock, "reason": "left by a crash; no process held it" }),
        )?;
    }
    match outcome {
        None => {}
        Some(osmoda_generations::Recovery::Committed { event_id, rev }) => {
            tracing::warn!(%rev, "an interrupted edit had committed; recorded it");
            record(
                "config.committed",
                json!({ "requested_event": event_id, "rev": rev, "recovered": true }),
            )?;
        }
        Some(osmoda_generations::Recovery::RolledBack { event_id, files }) => {
            tracing::warn!(?files, "an interrupted edit was rolled back to HEAD");
            record(
                "config.failed",
                json!({ "requested_event": event_id, "error": "agentd stopped during the edit; the work tree was put back to the last generation", "files": files, "recovered": true }),
            )?;
        }
    }
    // A request recorded just before a crash that came before its intent was saved has left
    // nothing in the tree to recover: give it its outcome from git's history.
    for (id, rev) in unfinished_requests(st, tree)? {
        match rev {
            Some(rev) => {
                tracing::warn!(id, %rev, "a request without an outcome had committed; recorded it");
                record(
                    "config.committed",
                    json!({ "requested_event": id, "rev": rev, "recovered": true }),
                )?;
            }
            None => {
                tracing::warn!(
                    id,
                    "a request without an outcome never reached the tree; recorded it as failed"
                );
                record(
                    "config.failed",
                    json!({ "requested_event": id, "error": "agentd stopped before this request reached the tree; nothing was changed", "recovered": true }),
                )?;
            }
        }
    }
    Ok(())
}

/// How many of the newest `config.*` events recovery looks at. An outcome is always recorded
/// after its request, so every request in this window has its outcome in it too; requests
/// older than the window were looked at by an earlier start.
const RECOVERY_WINDOW: usize = 10_000;

/// `config.requested` events among the newest [`RECOVERY_WINDOW`] config events with no
/// `config.committed`/`config.failed`, each with the commit that carries its id in the
/// `Osmoda-Event` trailer, if one does.
fn unfinished_requests(
    st: &Arc<AppState>,
    tree: &osmoda_generations::Tree,
) -> anyhow::Result<Vec<(i64, Option<String>)>> {
    let events = st.ledger.query(&osmoda_ledger::Query {
        kind: Some("config.*".into()),
        limit: Some(RECOVERY_WINDOW),
        descending: true,
        ..Default::default()
    })?;
    let mut finished = std::collections::HashSet::new();
    let mut requested = Vec::new();
    for e in &events {
        match e.kind.as_str() {
            "config.requested" => requested.push(e.id),
            "config.committed" | "config.failed" => {
                let payload: Value = serde_json::from_str(&e.payload).unwrap_or(Value::Null);
                if let Some(id) = payload["requested_event"].as_i64() {
                    finished.insert(id);
                }
            }
            _ => {}
        }
    }
    let mut open: Vec<i64> = requested
        .into_iter()
        .filter(|id| !finished.contains(id))
        .collect();
    if open.is_empty() {
        return Ok(Vec::new());
    }
    open.sort_unstable();
    let generations = tree.generations(1000)?;
    Ok(open
        .into_iter()
        .map(|id| {
            let rev = generations
                .iter()
                .find(|g| g.event_id == Some(id))
                .map(|g| g.rev.clone());
            (id, rev)
        })
        .collect())
}
