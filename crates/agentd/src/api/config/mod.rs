//! The config API: the machine's durable configuration is a git-tracked Nix tree. Reads come
//! from the work tree; every edit is a lossless rnix edit committed as one generation, linked
//! to the ledger both ways (`Osmoda-Event` trailer → `config.requested`, `config.committed` → rev).

use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use osmoda_generations::{Actor, GenError, Generation, Tree};
use osmoda_nix::{AttrPath, EditError, Value as NixValue};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{ApiError, Json, Query};
use crate::peer::Caller;
use crate::AppState;

mod history;
pub use history::{commit, diff, generation, generations, revert, status, watch_drift};

/// File edited when a request names none: the data-only module agents write.
pub const DEFAULT_FILE: &str = "osmoda.nix";

impl From<EditError> for ApiError {
    fn from(e: EditError) -> Self {
        let status = match &e {
            EditError::InvalidPath { .. } | EditError::InvalidValue(_) => StatusCode::BAD_REQUEST,
            EditError::NotFound { .. } => StatusCode::NOT_FOUND,
            EditError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.to_string())
    }
}

impl From<GenError> for ApiError {
    fn from(e: GenError) -> Self {
        let status = match &e {
            GenError::Dirty { .. } | GenError::NoChange(_) | GenError::Conflict { .. } => {
                StatusCode::CONFLICT
            }
            GenError::Invalid { .. } | GenError::Edit(_) => StatusCode::UNPROCESSABLE_ENTITY,
            GenError::BadInput { .. } | GenError::BadPath { .. } => StatusCode::BAD_REQUEST,
            GenError::UnknownRevision { .. } => StatusCode::NOT_FOUND,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

fn tree(st: &AppState) -> Result<Arc<Tree>, ApiError> {
    st.config_tree.clone().ok_or_else(|| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "agentd has no configuration tree")
            .with_detail(json!({ "hint": "start agentd with --config-tree DIR (create one with `agentctl config init DIR`)" }))
    })
}

/// Check that `file` is a relative `.nix` path inside the tree.
fn tree_file(file: Option<&str>) -> Result<PathBuf, ApiError> {
    let f = Path::new(file.unwrap_or(DEFAULT_FILE));
    let inside = f.components().all(|c| matches!(c, Component::Normal(_)));
    if !inside || f.extension().is_none_or(|e| e != "nix") || f.starts_with(".git") {
        return Err(
            ApiError::bad_request(format!("invalid file {:?}", f.display())).with_detail(
                json!({ "hint": "a .nix path relative to the tree, e.g. osmoda.nix" }),
            ),
        );
    }
    Ok(f.to_path_buf())
}

fn attr_path(path: &str) -> Result<AttrPath, ApiError> {
    Ok(path.parse::<AttrPath>()?)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// The committed text of `file` at HEAD. Reads never look at the work tree: a concurrent edit may
/// be rewriting it, and uncommitted hand edits are not configuration until committed.
fn read(tree: &Tree, file: &Path) -> Result<String, ApiError> {
    tree.read_file_at("HEAD", file).map_err(|e| {
        ApiError::not_found(format!("cannot read {} in the tree: {e}", file.display()))
    })
}

/// Replace `path` atomically (temp file + rename), so no reader ever sees a half-written file.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.osmoda-tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Parameters of `GET /config/get`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    /// Attribute path, e.g. `services.osmoda.watch.watchers`.
    pub path: String,
    /// File relative to the tree (default `osmoda.nix`).
    pub file: Option<String>,
}

/// `GET /config/get?path=&file=`
pub async fn get(
    State(st): State<Arc<AppState>>,
    Query(p): Query<GetParams>,
) -> Result<axum::Json<Value>, ApiError> {
    let tree = tree(&st)?;
    let file = tree_file(p.file.as_deref())?;
    let path = attr_path(&p.path)?;
    let value = blocking(move || Ok(osmoda_nix::get(&read(&tree, &file)?, &path)?)).await?;
    Ok(axum::Json(
        json!({ "path": p.path, "file": p.file.as_deref().unwrap_or(DEFAULT_FILE), "value": value }),
    ))
}

/// Body of `POST /config/set`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetBody {
    /// Attribute path.
    pub path: String,
    /// A JSON value, written as idiomatic Nix.
    pub value: Option<Value>,
    /// Or one raw Nix expression (e.g. `pkgs.htop`).
    pub nix: Option<String>,
    /// File relative to the tree (default `osmoda.nix`).
    pub file: Option<String>,
    /// Why: becomes the commit message.
    pub reason: String,
    /// Approval ticket, for destructive edits.
    pub approval: Option<String>,
}

/// Body of `POST /config/unset`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnsetBody {
    /// Attribute path.
    pub path: String,
    /// File relative to the tree (default `osmoda.nix`).
    pub file: Option<String>,
    /// Why.
    pub reason: String,
    /// Approval ticket, for destructive edits.
    pub approval: Option<String>,
}

/// The result of an edit that landed.
#[derive(Debug, Serialize)]
pub struct Landed {
    /// The new generation.
    pub generation: Generation,
    /// Ledger id of `config.requested` (named by the commit's `Osmoda-Event` trailer).
    pub requested_event: i64,
    /// Ledger id of `config.committed` (carries the commit id).
    pub event_id: i64,
}

fn agent_actor(caller: &Caller) -> Actor {
    Actor::new(caller.actor.clone(), "agent@osmoda.local")
}

/// Run one tree mutation with its ledger events: `config.requested` first (its id goes into the
/// commit trailer), then `config.committed` or `config.failed`.
async fn land(
    st: &Arc<AppState>,
    actor: Actor,
    request: Value,
    reason: String,
    mutate: impl FnOnce(&Tree, &Actor, &str, i64) -> Result<Generation, GenError> + Send + 'static,
) -> Result<Landed, ApiError> {
    let tree = tree(st)?;
    let requested = st.record("config.requested", &actor.name, &request).await?;
    let rid = requested.id;
    let a = actor.clone();
    let result = tokio::task::spawn_blocking(move || mutate(&tree, &a, &reason, rid))
        .await
        .map_err(ApiError::internal)?;
    match result {
        Ok(generation) => {
            let ev = st
                .record(
                    "config.committed",
                    &actor.name,
                    &json!({ "requested_event": rid, "rev": generation.rev }),
                )
                .await?;
            Ok(Landed {
                generation,
                requested_event: rid,
                event_id: ev.id,
            })
        }
        Err(e) => {
            st.record(
                "config.failed",
                &actor.name,
                &json!({ "requested_event": rid, "error": e.to_string() }),
            )
            .await?;
            Err(e.into())
        }
    }
}

/// The edited text of `file`, or why the edit cannot be made.
fn precheck(tree: &Tree, file: &Path, op: &osmoda_nix::Op) -> Result<String, ApiError> {
    let dirty = tree.status()?;
    if !dirty.is_empty() {
        return Err(GenError::Dirty { changes: dirty }.into());
    }
    Ok(osmoda_nix::edit(&read(tree, file)?, op)?.text)
}

/// One requested edit of a tree file.
struct EditRequest {
    file: Option<String>,
    reason: String,
    ticket: Option<String>,
    op: osmoda_nix::Op,
    /// The operation, as recorded in the ledger.
    operation: Value,
}

async fn edit(
    st: Arc<AppState>,
    caller: Caller,
    req: EditRequest,
) -> Result<axum::Json<Landed>, ApiError> {
    let EditRequest {
        file,
        reason,
        ticket,
        op,
        operation,
    } = req;
    if reason.trim().is_empty() {
        return Err(ApiError::bad_request(
            "`reason` is required: it becomes the commit message",
        ));
    }
    let file = tree_file(file.as_deref())?;
    // Bad input is refused before anything is written, ledger included.
    let t = tree(&st)?;
    let (f, o) = (file.clone(), op.clone());
    let edited = blocking(move || precheck(&t, &f, &o)).await?;
    let _judged =
        crate::gate::check_edit(&st, &caller.actor, &file, edited, ticket.as_deref()).await?;
    let mut request = operation;
    request["reason"] = Value::String(reason.clone());
    let landed = land(
        &st,
        agent_actor(&caller),
        request,
        reason,
        move |tree, actor, reason, rid| {
            tree.mutate(actor, reason, Some(rid), |root| {
                let text = std::fs::read_to_string(root.join(&file)).map_err(GenError::edit)?;
                let out = osmoda_nix::edit(&text, &op).map_err(GenError::edit)?;
                write_atomic(&root.join(&file), &out.text).map_err(GenError::edit)?;
                Ok(vec![file.clone()])
            })
        },
    )
    .await?;
    Ok(axum::Json(landed))
}

/// `POST /config/set`
pub async fn set(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(b): Json<SetBody>,
) -> Result<axum::Json<Landed>, ApiError> {
    let path = attr_path(&b.path)?;
    let (value, shown) = match (b.value, b.nix) {
        (Some(v), None) => (NixValue::Json(v.clone()), json!({ "value": v })),
        (None, Some(n)) => (NixValue::Raw(n.clone()), json!({ "nix": n })),
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `value` (JSON) or `nix` (a Nix expression)",
            ))
        }
    };
    let file = b.file.clone().unwrap_or_else(|| DEFAULT_FILE.into());
    let mut operation = json!({ "op": "config.set", "file": file, "path": path.to_string() });
    operation
        .as_object_mut()
        .into_iter()
        .for_each(|o| o.extend(shown.as_object().cloned().unwrap_or_default()));
    let op = osmoda_nix::Op::Set(path, value);
    let req = EditRequest {
        file: b.file,
        reason: b.reason,
        ticket: b.approval,
        op,
        operation,
    };
    edit(st, caller, req).await
}

/// `POST /config/unset`
pub async fn unset(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(b): Json<UnsetBody>,
) -> Result<axum::Json<Landed>, ApiError> {
    let path = attr_path(&b.path)?;
    let file = b.file.clone().unwrap_or_else(|| DEFAULT_FILE.into());
    let operation = json!({ "op": "config.unset", "file": file, "path": path.to_string() });
    let op = osmoda_nix::Op::Unset(path);
    let req = EditRequest {
        file: b.file,
        reason: b.reason,
        ticket: b.approval,
        op,
        operation,
    };
    edit(st, caller, req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_must_stay_inside_the_tree() {
        assert!(tree_file(None).is_ok());
        assert!(tree_file(Some("hosts/web.nix")).is_ok());
        for bad in [
            "../etc/passwd.nix",
            "/etc/x.nix",
            "a.txt",
            ".git/config.nix",
            "./x.nix",
        ] {
            assert!(tree_file(Some(bad)).is_err(), "{bad}");
        }
    }
}
