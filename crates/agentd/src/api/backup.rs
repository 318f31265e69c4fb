//! `POST /backup/create`, `GET /backup/list`, `POST /backup/restore` (see `crate::backup`).
//! A restore needs a human approval ticket opened by agentd for exactly that archive.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::backup::{self, restore, BackupError, Inputs};
use crate::error::{ApiError, Json};
use crate::peer::Caller;
use crate::AppState;

/// One backup or restore at a time, so a backup never snapshots a half-restored machine.
static BUSY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What waits for [`BUSY`], per state dir, so no caller can queue unbounded work in front of
/// a person's restore: at most one create running or waiting (another gets 409, retryable),
/// none while a restore waits (restores go first), and at most one restore without an
/// approval (the ask that opens a ticket, which extracts the whole archive) running or waiting
/// (another gets 429). Restores with an approved ticket always wait their turn.
#[derive(Default)]
struct Queue {
    creating: bool,
    asking: bool,
    restores_waiting: usize,
}

static QUEUES: std::sync::Mutex<std::collections::BTreeMap<std::path::PathBuf, Queue>> =
    std::sync::Mutex::new(std::collections::BTreeMap::new());

/// One place in a [`Queue`], given back when dropped (the request finished or was dropped).
struct Place {
    state_dir: std::path::PathBuf,
    which: Which,
}

#[derive(Clone, Copy)]
enum Which {
    Create,
    Ask,
    Waiting,
}

impl Place {
    /// Takes a place of `which` in `state_dir`'s queue; `Err` with the reason when none is free.
    fn take(state_dir: &std::path::Path, which: Which) -> Result<Place, ApiError> {
        let mut all = QUEUES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let q = all.entry(state_dir.to_path_buf()).or_default();
        match which {
            Which::Create if q.restores_waiting > 0 => {
                return Err(busy(
                    StatusCode::CONFLICT,
                    "a restore is waiting to run, and restores go first: no backup was made",
                ))
            }
            Which::Create if q.creating => {
                return Err(busy(
                    StatusCode::CONFLICT,
                    "a backup is already being made (one at a time): no second one was started",
                ))
            }
            Which::Ask if q.asking => {
                return Err(busy(
                    StatusCode::TOO_MANY_REQUESTS,
                    "another restore request without an approval is being checked (one at a time): this one was not started",
                ))
            }
            Which::Create => q.creating = true,
            Which::Ask => q.asking = true,
            Which::Waiting => q.restores_waiting += 1,
        }
        Ok(Place {
            state_dir: state_dir.to_path_buf(),
            which,
        })
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut all = QUEUES
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(q) = all.get_mut(&self.state_dir) {
            match self.which {
                Which::Create => q.creating = false,
                Which::Ask => q.asking = false,
                Which::Waiting => q.restores_waiting = q.restores_waiting.saturating_sub(1),
            }
        }
    }
}

fn busy(status: StatusCode, msg: &str) -> ApiError {
    ApiError::new(status, msg.to_string()).with_detail(json!({
        "retryable": true,
        "hint": "nothing was started; ask again once it finished (GET /backup/list shows the archives)",
    }))
}

impl From<BackupError> for ApiError {
    fn from(e: BackupError) -> Self {
        let status = match &e {
            BackupError::NotFound(_) => StatusCode::NOT_FOUND,
            BackupError::InvalidId(_) => StatusCode::BAD_REQUEST,
            BackupError::Corrupt { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            BackupError::Refused(_) | BackupError::UnknownSource { .. } => StatusCode::CONFLICT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// Body of `POST /backup/create` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    /// Why, recorded with the `backup.created` event.
    #[serde(default)]
    pub reason: String,
}

/// `POST /backup/create` → the new backup's summary (`crate::backup::Summary`), with
/// `warnings` when there is something to know (the archived ledger's chain breaks).
///
/// # Errors
/// 500 when a source, the archive directory or a database cannot be read or written.
pub async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    body: Option<Json<CreateBody>>,
) -> Result<axum::Json<Value>, ApiError> {
    let reason = body.map(|Json(b)| b.reason).unwrap_or_default();
    if reason.len() > 4096 {
        return Err(ApiError::bad_request("`reason` is limited to 4096 bytes"));
    }
    let _creating = Place::take(&st.state_dir, Which::Create)?;
    let _one = BUSY.lock().await;
    let st2 = st.clone();
    let created = tokio::task::spawn_blocking(move || {
        let tree = st2.config_tree.as_ref().map(|t| t.dir().to_path_buf());
        backup::create(&Inputs {
            state_dir: &st2.state_dir,
            ledger: &st2.ledger,
            tree: tree.as_deref(),
            settings: &st2.settings.backup,
        })
    })
    .await
    .map_err(ApiError::internal)??;
    let summary = &created.summary;
    st.record(
        "backup.created",
        &caller.actor,
        &json!({
            "id": summary.id, "file": summary.file, "bytes": summary.bytes,
            "manifest_sha256": summary.manifest_sha256, "ledger_size": summary.ledger_size,
            "tree_commit": summary.tree_commit, "sources": summary.sources, "reason": reason,
            "deleted": created.deleted, "warnings": created.warnings,
        }),
    )
    .await?;
    // Retention's deletions are on the record too: an archive never disappears silently.
    for id in &created.deleted {
        st.record(
            "backup.deleted",
            "agentd",
            &json!({ "id": id, "why": "retention (backup.keep)", "after": summary.id }),
        )
        .await?;
    }
    let mut out = serde_json::to_value(summary).map_err(ApiError::internal)?;
    if !created.warnings.is_empty() {
        tracing::warn!(backup = %summary.id, warnings = ?created.warnings, "backup made with warnings");
        out["warnings"] = json!(created.warnings);
    }
    Ok(axum::Json(out))
}

/// `GET /backup/list` → `{backups: [Summary]}`, newest first.
///
/// # Errors
/// 500 when the archive directory cannot be listed.
pub async fn list(State(st): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let (settings, state_dir) = (st.settings.backup.clone(), st.state_dir.clone());
    let all = tokio::task::spawn_blocking(move || {
        backup::list(&backup::open_dir(&settings, &state_dir)?)
    })
    .await
    .map_err(ApiError::internal)??;
    Ok(axum::Json(json!({ "backups": all })))
}

/// Body of `POST /backup/restore`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    /// The backup to restore (`GET /backup/list`).
    pub backup_id: String,
    /// The approved ticket agentd opened for this restore.
    #[serde(default)]
    pub approval: Option<String>,
    /// Restore even though the checks refused it (the ticket is bound to this flag).
    #[serde(default)]
    pub force: bool,
}

/// `POST /backup/restore {backup_id, approval?, force?}`: verifies the archive, then without an
/// approved ticket answers 403 with one; with it, restores and answers with the
/// `backup.restored` event's payload.
///
/// # Errors
/// 400 bad id, 404 unknown backup, 422 damaged archive, 409 a restore the checks refuse
/// without `force` (or a source not configured here), 403 with `detail.ticket` when a person
/// has to approve; nothing is changed in all of these.
pub async fn restore(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<RestoreBody>,
) -> Result<axum::Json<Value>, ApiError> {
    if !backup::valid_id(&body.backup_id) {
        return Err(BackupError::InvalidId(body.backup_id.chars().take(80).collect()).into());
    }
    let _asking = match body.approval {
        Some(_) => None,
        None => Some(Place::take(&st.state_dir, Which::Ask)?),
    };
    let one = {
        let _waiting = Place::take(&st.state_dir, Which::Waiting)?;
        BUSY.lock().await
    };
    let _one = one;
    let st2 = st.clone();
    let id = body.backup_id.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let dir = backup::open_dir(&st2.settings.backup, &st2.state_dir)?;
        restore::prepare(&st2, &dir, &id, &st2.settings.backup)
    })
    .await
    .map_err(ApiError::internal)??;
    let staging = prepared.journal.staging.clone();
    let result = finish(&st, &caller, &body, prepared).await;
    if result.is_err() && !st.state_dir.join(restore::JOURNAL).exists() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

async fn finish(
    st: &AppState,
    caller: &Caller,
    body: &RestoreBody,
    prepared: restore::Prepared,
) -> Result<axum::Json<Value>, ApiError> {
    let mut j = prepared.journal;
    if !prepared.needs_force.is_empty() && !body.force {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "restoring backup {} is refused: {}; nothing was changed",
                j.backup_id,
                prepared.needs_force.join("; ")
            ),
        )
        .with_detail(json!({
            "reasons": prepared.needs_force,
            "hint": "a person who accepts this repeats the restore with \"force\": true (agentctl backup restore ID --force); it needs its own approval",
        })));
    }
    let op = json!({ "gate": {
        "operation": "backup.restore", "backup_id": j.backup_id,
        "manifest_sha256": j.manifest_sha256, "force": body.force,
    }});
    let Some(ticket) = &body.approval else {
        let mut effect = vec![format!(
            "restore backup {} made at {}",
            j.backup_id, j.manifest.created_at
        )];
        effect.extend(prepared.effect);
        if body.force {
            effect.extend(prepared.needs_force.iter().map(|r| format!("forced: {r}")));
        }
        let t = crate::api::approvals::open(st, &caller.actor, &op, &effect).await?;
        let approve = match &st.settings.approval_socket {
            Some(p) => format!(
                "agentctl --approval-socket {} approvals approve {}",
                p.display(),
                t.id
            ),
            None => format!("agentctl approvals approve {}", t.id),
        };
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "restoring a backup needs a human approval: {}. Ask a person to run `{approve}`, then retry with the approval {}",
                effect.join("; "),
                t.id
            ),
        )
        .with_detail(json!({
            "kind": crate::gate::APPROVAL_REQUIRED, "ticket": t.id, "status": t.status,
            "effect": effect, "approve": approve, "operation": op, "expires_at": t.expires_at,
            "hint": format!("retry with \"approval\": \"{}\" (agentctl backup restore {} --approval {}) once a person approved it", t.id, j.backup_id, t.id),
        })));
    };
    crate::api::approvals::verify(st, ticket, &op, crate::api::approvals::GATE).await?;
    crate::api::approvals::mark_used(st, ticket, &caller.actor).await?;
    j.actor = caller.actor.clone();
    j.ticket = Some(ticket.clone());
    j.forced = body.force;
    let state_dir = st.state_dir.clone();
    let j2 = j.clone();
    tokio::task::spawn_blocking(move || restore::commit(&state_dir, &j2))
        .await
        .map_err(ApiError::internal)??;
    let payload = restore::apply(st, &j, false).await.map_err(|e| {
        ApiError::internal(format!(
            "the restore of backup {} stopped: {e}; it is finished when agentd starts again",
            j.backup_id
        ))
    })?;
    Ok(axum::Json(payload))
}
