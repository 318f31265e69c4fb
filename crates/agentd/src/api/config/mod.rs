//! The config API: the machine's durable configuration is a git-tracked Nix tree. Reads come
//! from `HEAD`; every edit is a lossless rnix edit of the place that defines the option (found
//! across the tree's modules, see `locate.rs`), committed as one generation and linked to the
//! ledger both ways (`Osmoda-Event` trailer → `config.requested`, `config.committed` → rev).

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

mod daemons;
mod history;
mod locate;
mod plan;
pub use history::{commit, diff, generation, generations, recover, revert, status, watch_drift};
pub use locate::Place;
pub use plan::{plan, Planned};
mod restore;
pub use restore::restore;
mod schema;

/// File edited when a request names none: the data-only module agents write.
pub const DEFAULT_FILE: &str = "osmoda.nix";

impl From<EditError> for ApiError {
    fn from(e: EditError) -> Self {
        let status = match &e {
            EditError::InvalidPath { .. } | EditError::InvalidValue(_) => StatusCode::BAD_REQUEST,
            EditError::TooComplex { .. } => StatusCode::UNPROCESSABLE_ENTITY,
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
            GenError::Locked { .. } | GenError::DetachedHead { .. } | GenError::NotOwned { .. } => {
                StatusCode::CONFLICT
            }
            // A git lock file that appeared after the stale ones were cleared: someone is
            // using git on the tree right now.
            GenError::Git { source, .. } if source.code() == git2::ErrorCode::Locked => {
                return ApiError::new(
                    StatusCode::CONFLICT,
                    format!("{e}; another git process is changing the tree right now: retry when it has finished"),
                )
            }
            GenError::UnknownRevision { .. } => StatusCode::NOT_FOUND,
            GenError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
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
    let path = path.parse::<AttrPath>()?;
    osmoda_nix::not_into_imports(&path)?;
    Ok(path)
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
}

/// Parameters of `GET /config/get`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    /// Attribute path, e.g. `services.osmoda.watch.watchers`.
    pub path: String,
    /// Only this file (relative to the tree); default: wherever the tree defines the path.
    pub file: Option<String>,
}

/// `GET /config/get?path=&file=`: the value where the path is defined, and every definition in
/// the tree with `file:line` and priority.
pub async fn get(
    State(st): State<Arc<AppState>>,
    Query(p): Query<GetParams>,
) -> Result<axum::Json<Value>, ApiError> {
    let tree = tree(&st)?;
    let named = p.file.as_deref().map(|f| tree_file(Some(f))).transpose()?;
    let path = attr_path(&p.path)?;
    let shown = p.path.clone();
    blocking(move || {
        let files = tree.nix_files_at("HEAD")?;
        let mods = locate::modules(&files);
        let places = locate::definitions(&files, &mods, &path)?;
        let mut mine: Vec<&Place> = places
            .iter()
            .filter(|d| named.as_ref().is_none_or(|f| Path::new(&d.file) == f))
            .collect();
        mine.dedup_by(|a, b| a.file == b.file && a.module == b.module);
        let (file, module) = match (mine.as_slice(), &named) {
            ([one], _) => (PathBuf::from(&one.file), one.module),
            ([], Some(f)) => (f.clone(), 0),
            ([], None) => {
                return Err(ApiError::not_found(format!(
                    "`{path}` is not defined in the tree's modules"
                ))
                .with_detail(json!({ "modules": mods.files, "not_followed": mods.skipped })))
            }
            _ => {
                return Ok(json!({ "path": shown, "definitions": places,
                    "error": "defined in several places; name one with `file`" }))
            }
        };
        let text = match files.get(&file) {
            Some(Ok(t)) => t,
            Some(Err(why)) => {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    format!("cannot read {}: it is {why}", file.display()),
                ))
            }
            None => {
                return Err(ApiError::not_found(format!(
                    "cannot read {} in the tree: no such file",
                    file.display()
                )))
            }
        };
        let read = osmoda_nix::read(text, module, &path).map_err(|e| locate::in_file(&file, e))?;
        Ok(json!({
            "path": shown,
            "file": file,
            "value": read.value,
            "nix": read.nix,
            "elements": read.elements,
            "priority": read.priority,
            "definitions": places,
        }))
    })
    .await
    .map(axum::Json)
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
    /// File relative to the tree; default: where the tree defines the path, else `osmoda.nix`.
    pub file: Option<String>,
    /// Why: becomes the commit message.
    pub reason: String,
    /// Approval ticket, for destructive edits.
    pub approval: Option<String>,
}

/// Body of `POST /config/append` and `POST /config/remove`: one list element.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListBody {
    /// Attribute path of the list.
    pub path: String,
    /// The element as JSON…
    pub value: Option<Value>,
    /// …or as Nix source (`htop`, `pkgs.htop`, `./module.nix`).
    pub nix: Option<String>,
    /// File relative to the tree; default: where the tree defines the list.
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
    /// File relative to the tree; default: where the tree defines the path.
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
    /// The file the edit went to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// What else the caller should know (a priority wrapper kept, a value not evaluated).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// The git author of an agent or daemon: a stable name (the caller's role: `agent`,
/// `osmoda-watch`, …); the kernel identity goes to the `Osmoda-Peer` trailer.
fn agent_actor(caller: &Caller) -> Actor {
    let (role, peer) = match caller.actor.split_once('[') {
        Some((role, rest)) => (role, rest.trim_end_matches(']')),
        None => (caller.actor.as_str(), ""),
    };
    let actor = Actor::new(role, format!("{role}@osmoda.local"));
    if peer.is_empty() {
        actor
    } else {
        actor.with_peer(peer)
    }
}

/// Run one tree mutation with its ledger events: `config.requested` first (its id goes into the
/// commit trailer), then `config.committed` or `config.failed`. The ledger names `who` (the
/// caller's full identity); git names the stable `actor`.
async fn land(
    st: &Arc<AppState>,
    who: &str,
    actor: Actor,
    request: Value,
    reason: String,
    mutate: impl FnOnce(&Tree, &Actor, &str, i64) -> Result<Generation, GenError> + Send + 'static,
) -> Result<Landed, ApiError> {
    let tree = tree(st)?;
    let requested = st.record("config.requested", who, &request).await?;
    let rid = requested.id;
    let t = tree.clone();
    let result = tokio::task::spawn_blocking(move || mutate(&t, &actor, &reason, rid))
        .await
        .map_err(ApiError::internal)?;
    for lock in tree.take_cleared_locks() {
        st.record(
            "config.lock_cleared",
            "agentd",
            &json!({ "lock": lock, "reason": "left by a crash; no process held it" }),
        )
        .await?;
    }
    match result {
        Ok(generation) => {
            let ev = st
                .record(
                    "config.committed",
                    who,
                    &json!({ "requested_event": rid, "rev": generation.rev }),
                )
                .await?;
            Ok(Landed {
                generation,
                requested_event: rid,
                event_id: ev.id,
                file: None,
                notes: Vec::new(),
            })
        }
        Err(e) => {
            st.record(
                "config.failed",
                who,
                &json!({ "requested_event": rid, "error": e.to_string() }),
            )
            .await?;
            Err(e.into())
        }
    }
}

/// One requested edit of the tree.
struct EditRequest {
    file: Option<String>,
    reason: String,
    ticket: Option<String>,
    op: osmoda_nix::Op,
    /// The operation's name in the ledger (`config.set`, …).
    name: &'static str,
}

/// An edit planned from `HEAD` and checked (schema, raw value, daemons' own checks, syntax):
/// the plan, whether a raw value was evaluated, and notes for the answer. Bad input is refused
/// here, before anything is written, ledger included, and before the gate judges the edit:
/// nobody is asked to approve an edit that could not land.
fn prepare(
    t: &Tree,
    named: Option<&Path>,
    o: &osmoda_nix::Op,
) -> Result<(plan::Planned, bool, Vec<String>), ApiError> {
    let ours = schema::concerns(o);
    let raw = match o {
        osmoda_nix::Op::Set(_, NixValue::Raw(raw))
        | osmoda_nix::Op::Append(_, NixValue::Raw(raw))
        | osmoda_nix::Op::Remove(_, NixValue::Raw(raw)) => Some(raw),
        _ => None,
    };
    let planned = plan(t, named, o)?;
    if let (Some(raw), false) = (raw, matches!(o, osmoda_nix::Op::Remove(..))) {
        plan::refuse_outside_reads(t, raw, &planned.target.file)?;
    }
    if raw.is_none() {
        schema::check(o, None)?;
    }
    let evaluated = match raw {
        Some(raw) if ours || !matches!(o, osmoda_nix::Op::Remove(..)) => {
            // `mkForce`/`mkIf`/… do not change what the value must be: check what they wrap.
            let value = osmoda_nix::without_wrappers(raw)?.unwrap_or_else(|| raw.clone());
            match plan::evaluate_raw(t, &value, ours)? {
                plan::RawEval::Skipped => {
                    schema::check(o, None)?;
                    false
                }
                plan::RawEval::Evaluated(json) => {
                    schema::check(o, json.as_ref())?;
                    true
                }
            }
        }
        _ => true,
    };
    let mut notes = Vec::new();
    if ours {
        notes.extend(daemons::run(t, &planned)?);
    }
    t.check_text(&planned.target.file, &planned.after)?;
    Ok((planned, evaluated, notes))
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
        name,
    } = req;
    if reason.trim().is_empty() {
        return Err(ApiError::bad_request(
            "`reason` is required: it becomes the commit message",
        ));
    }
    let named = file.as_deref().map(|f| tree_file(Some(f))).transpose()?;
    let t = tree(&st)?;
    let (o, n) = (op.clone(), named.clone());
    let first = blocking(move || prepare(&t, n.as_deref(), &o)).await?;
    // The gate's guard is held until the edit has landed. The bytes judged are the bytes that
    // land: when another edit of the file landed between this plan and the gate's lock, the
    // gate plans again under its lock (what lands is the edit re-applied to the file at the
    // locked `HEAD`: a kept `mkForce`, a list element replayed, must be what is judged).
    let replanned = Arc::new(std::sync::Mutex::new(None));
    let (t, o, slot) = (tree(&st)?, op.clone(), replanned.clone());
    let replan = move || {
        let p = prepare(&t, named.as_deref(), &o)?;
        let texts = (p.0.before.clone(), p.0.after.clone());
        *slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(p);
        Ok(texts)
    };
    let judged = crate::gate::check_edit(
        &st,
        &caller.actor,
        &first.0.target.file,
        (first.0.before.clone(), first.0.after.clone()),
        replan,
        ticket.as_deref(),
    )
    .await?;
    let again = replanned
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    let (planned, evaluated, mut notes) = again.unwrap_or(first);
    let target = planned.target.clone();
    let path = plan::path_of(&op).to_string();
    let mut request = json!({ "op": name, "file": target.file, "path": path, "reason": reason });
    if let (
        Some(o),
        osmoda_nix::Op::Set(_, v) | osmoda_nix::Op::Append(_, v) | osmoda_nix::Op::Remove(_, v),
    ) = (request.as_object_mut(), &op)
    {
        o.extend(plan::shown(v).as_object().cloned().unwrap_or_default());
    }
    let tgt = target.clone();
    let mut landed = land(
        &st,
        &caller.actor,
        agent_actor(&caller),
        request,
        reason,
        move |tree, actor, reason, rid| {
            tree.mutate(actor, reason, Some(rid), |root| {
                plan::apply(root, &tgt, &op)
            })
        },
    )
    .await?;
    judged.landed(&st).await;
    landed.file = Some(target.file);
    if let Some(w) = planned.kept {
        landed.notes.push(format!(
            "kept `{w}` around the new value (set it explicitly to change the priority)"
        ));
    }
    landed.notes.append(&mut notes);
    if !evaluated {
        landed.notes.push(if tree(&st)?.uses_nix() {
            "the raw value uses names from its module (pkgs, lib, …): it was evaluated up to the first use of one of them, not beyond (they exist only when the tree is built)".into()
        } else {
            "validate = parse: the raw value was checked by parsing only, not evaluated".into()
        });
    }
    Ok(axum::Json(landed))
}

/// A value given as `value` (JSON) or `nix` (source): exactly one.
fn value_of(value: Option<Value>, nix: Option<String>) -> Result<NixValue, ApiError> {
    match (value, nix) {
        (Some(v), None) => Ok(NixValue::Json(v)),
        (None, Some(n)) => Ok(NixValue::Raw(n)),
        _ => Err(ApiError::bad_request(
            "give exactly one of `value` (JSON) or `nix` (a Nix expression)",
        )),
    }
}

/// `POST /config/set`
pub async fn set(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(b): Json<SetBody>,
) -> Result<axum::Json<Landed>, ApiError> {
    let op = osmoda_nix::Op::Set(attr_path(&b.path)?, value_of(b.value, b.nix)?);
    let req = EditRequest {
        file: b.file,
        reason: b.reason,
        ticket: b.approval,
        op,
        name: "config.set",
    };
    edit(st, caller, req).await
}

/// `POST /config/unset`
pub async fn unset(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(b): Json<UnsetBody>,
) -> Result<axum::Json<Landed>, ApiError> {
    let op = osmoda_nix::Op::Unset(attr_path(&b.path)?);
    let req = EditRequest {
        file: b.file,
        reason: b.reason,
        ticket: b.approval,
        op,
        name: "config.unset",
    };
    edit(st, caller, req).await
}

/// `POST /config/append`: add one element to a list (created if missing).
pub async fn append(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(b): Json<ListBody>,
) -> Result<axum::Json<Landed>, ApiError> {
    let op = osmoda_nix::Op::Append(attr_path(&b.path)?, value_of(b.value, b.nix)?);
    let req = EditRequest {
        file: b.file,
        reason: b.reason,
        ticket: b.approval,
        op,
        name: "config.append",
    };
    edit(st, caller, req).await
}

/// `POST /config/remove`: remove every element equal to the given one from a list.
pub async fn remove(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(b): Json<ListBody>,
) -> Result<axum::Json<Landed>, ApiError> {
    let op = osmoda_nix::Op::Remove(attr_path(&b.path)?, value_of(b.value, b.nix)?);
    let req = EditRequest {
        file: b.file,
        reason: b.reason,
        ticket: b.approval,
        op,
        name: "config.remove",
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
