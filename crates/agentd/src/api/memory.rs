//! `/memory/*`: the agent's memory (crate `osmoda-memory`): markdown notes under the memory
//! dir are the ground truth, the index beside them is derived; hybrid recall with the
//! in-process embedding model (or an OpenAI-compatible endpoint when configured).
//!
//! The memory opens on first use (loading the model takes about a second), so daemons that
//! never recall do not pay for it. Store and ingest are
//! recorded in the ledger (`memory.stored`, `memory.ingested`) without the note's body.
//!
//! A note and its event are two writes; a crash between them must not leave a note the ledger
//! never heard of. So each write is journaled first (`<state>/memory-journal/<n>.json`: the
//! section, its note, the event), and the event carries the journal entry's dedup key: at the
//! next start [`recover`] looks the key up in the ledger (recorded: done; a replay could not be
//! a dedup hit, since the ledger takes only identical bytes as a retry and a recovered event is
//! marked), records the event of every other journaled section its note holds, drops the
//! entries of sections never written and removes the temporary files of cut-off writes.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{Method, StatusCode, Uri};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use osmoda_memory::{
    Embedder, Health, HttpEmbedder, IngestRequest, Memory, MemoryError, Options, Prepared,
    RecallRequest, RecallResponse, StoreRequest, SyncReport,
};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{ApiError, Json};
use crate::peer::Caller;
use crate::AppState;

/// Memory settings: `memory` in agentd.json plus the `--memory-dir` / `--memory-model` flags.
#[derive(Clone, Debug, Default)]
pub struct MemorySettings {
    /// Memory directory; `None`: `<state-dir>/memory`.
    pub dir: Option<PathBuf>,
    /// Directory of the in-process model (all-MiniLM-L6-v2 files); `None` and no endpoint:
    /// keyword recall only.
    pub model_dir: Option<PathBuf>,
    /// OpenAI-compatible embeddings URL (`memory.embedding_endpoint`); replaces the
    /// in-process model.
    pub endpoint: Option<String>,
    /// Model name sent to the endpoint (`memory.embedding_model`).
    pub endpoint_model: String,
    /// Token budget of one recall (`memory.max_injected_tokens`); 0: the default 1,500.
    pub max_injected_tokens: usize,
    /// Relevance thresholds by model name (`memory.relevance_thresholds`); a model not named
    /// here has its measured one, if any (`osmoda_memory::measured_min_similarity`).
    pub relevance_thresholds: std::collections::BTreeMap<String, f32>,
}

impl MemorySettings {
    /// The settings agentd.json's `memory` section gives.
    pub fn from_config(c: &osmoda_config::MemoryConfig) -> Self {
        MemorySettings {
            endpoint: c.embedding_endpoint.clone(),
            endpoint_model: c.embedding_model.clone(),
            max_injected_tokens: c.max_injected_tokens as usize,
            relevance_thresholds: c
                .relevance_thresholds
                .iter()
                .map(|(m, t)| (m.clone(), t.0))
                .collect(),
            ..Default::default()
        }
    }
}

/// The memory, opened once.
pub struct MemoryService {
    settings: MemorySettings,
    state_dir: PathBuf,
    cell: tokio::sync::OnceCell<(Arc<Memory>, Option<osmoda_memory::Watcher>)>,
}

impl MemoryService {
    /// Not opened yet.
    pub fn new(settings: MemorySettings, state_dir: PathBuf) -> Self {
        MemoryService {
            settings,
            state_dir,
            cell: tokio::sync::OnceCell::new(),
        }
    }

    /// The memory directory.
    pub fn dir(&self) -> PathBuf {
        self.settings
            .dir
            .clone()
            .unwrap_or_else(|| self.state_dir.join("memory"))
    }

    /// The open memory; opens it (model, index, watcher) on first call.
    ///
    /// # Errors
    /// 503 when the memory directory or index cannot be opened (retried on the next call).
    pub async fn get(&self) -> Result<Arc<Memory>, ApiError> {
        let (mem, _) = self
            .cell
            .get_or_try_init(|| async {
                let s = self.settings.clone();
                let dir = self.dir();
                tokio::task::spawn_blocking(move || open(&s, dir))
                    .await
                    .map_err(ApiError::internal)?
            })
            .await?;
        Ok(mem.clone())
    }
}

fn open(
    s: &MemorySettings,
    dir: PathBuf,
) -> Result<(Arc<Memory>, Option<osmoda_memory::Watcher>), ApiError> {
    let (embedder, model_error): (Option<Arc<dyn Embedder>>, Option<String>) = match (&s.endpoint, &s.model_dir) {
        (Some(url), _) => match HttpEmbedder::new(url, &s.endpoint_model) {
            Ok(e) => (Some(Arc::new(e)), None),
            Err(e) => (None, Some(e.to_string())),
        },
        (None, Some(model)) => match osmoda_memory::LocalModel::load(model) {
            Ok(m) => (Some(Arc::new(m)), None),
            Err(e) => (None, Some(e.to_string())),
        },
        (None, None) => (None, Some("no embedding model: start agentd with --memory-model DIR (or OSMODA_MEMORY_MODEL_DIR), or set services.osmoda.memory.embeddingEndpoint".into())),
    };
    if let Some(e) = &model_error {
        tracing::warn!(error = %e, "memory recall is keyword-only");
    }
    let mut opts = Options::new(dir);
    if s.max_injected_tokens > 0 {
        opts.max_injected_tokens = s.max_injected_tokens;
    }
    // The threshold configured for the model in use (the endpoint's by the name it is asked
    // for; the in-process one is all-MiniLM-L6-v2), else the model's measured one.
    let model_name = match &s.endpoint {
        Some(_) => s.endpoint_model.as_str(),
        None => osmoda_memory::MINILM,
    };
    opts.min_similarity = s.relevance_thresholds.get(model_name).copied();
    let mem = Arc::new(Memory::open(opts, embedder, model_error).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("memory unavailable: {e}"),
        )
    })?);
    let watcher = match mem.watch() {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(error = %e, "hand edits of memory notes are picked up only on reindex");
            None
        }
    };
    Ok((mem, watcher))
}

/// The memory routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/memory/store", only("POST", post(store)))
        .route("/memory/ingest", only("POST", post(ingest)))
        .route("/memory/recall", only("POST", post(recall)))
        .route("/memory/reindex", only("POST", post(reindex)))
        .route("/memory/health", only("GET", get(health)))
}

/// A route answering every other method with a 405 that names the one it takes (HEAD, PUT
/// or DELETE included, which the shared fallback can only guess at).
fn only(takes: &'static str, route: MethodRouter<Arc<AppState>>) -> MethodRouter<Arc<AppState>> {
    route.fallback(move |method: Method, uri: Uri| async move {
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{method} is not allowed on {}; this route takes {takes} only",
                uri.path()
            ),
        )
    })
}

/// One journaled write: the section, and the event that records it.
#[derive(Debug, Serialize, Deserialize)]
struct Entry {
    note: Prepared,
    kind: String,
    actor: String,
    payload: serde_json::Value,
    seq: u64,
}

/// The dedup stream of memory events (one key per journal entry).
const STREAM: &str = "agentd.memory";

fn journal_dir(st: &AppState) -> PathBuf {
    st.state_dir.join("memory-journal")
}

/// Write `note` to its note and record `kind` for it, journaled (see the module docs).
async fn write_recorded(
    st: &Arc<AppState>,
    note: Prepared,
    kind: &str,
    actor: &str,
    mut payload: serde_json::Value,
) -> Result<(osmoda_memory::StoreReceipt, i64), ApiError> {
    payload["path"] = json!(note.path);
    payload["at"] = json!(note.at);
    let entry = Entry {
        note,
        kind: kind.to_string(),
        actor: actor.to_string(),
        payload,
        seq: {
            let mut b = [0u8; 8];
            getrandom::fill(&mut b).map_err(ApiError::internal)?;
            u64::from_le_bytes(b) >> 1
        },
    };
    let file = journal_dir(st).join(format!("{}.json", entry.seq));
    let bytes = serde_json::to_vec(&entry).map_err(ApiError::internal)?;
    let (dir, f) = (journal_dir(st), file.clone());
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&dir)?;
        osmoda_memory::notes::write_atomic(&f, &bytes).map_err(std::io::Error::other)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let note = entry.note.clone();
    let written = blocking(st, move |m| m.write(&note)).await;
    let receipt = match written {
        Ok(r) => r,
        Err(e) => {
            // Nothing was written (notes are replaced atomically): nothing to record.
            let _ = std::fs::remove_file(&file);
            return Err(e);
        }
    };
    let ev = st
        .record_dedup(kind, actor, &entry.payload, STREAM, entry.seq)
        .await?;
    let _ = std::fs::remove_file(&file);
    Ok((receipt, ev.id))
}

/// At start, before anything is served: settle every journal entry a crash left. An entry
/// whose dedup key the ledger holds was recorded (the crash came before the entry's removal):
/// it is dropped, never recorded a second time. One whose section reached its note gets its
/// event now (marked `recovered`); one whose section never did is dropped. Temporary files of
/// writes the crash cut off (the journal's and the notes') are removed: those writes never
/// happened. Errors are logged; an entry that cannot be settled stays for the next start.
pub async fn recover(st: &Arc<AppState>) {
    let notes = osmoda_memory::notes::Notes::new(st.memory.dir());
    for removed in [
        osmoda_memory::notes::remove_unfinished_writes(&journal_dir(st)),
        notes.remove_unfinished_writes(),
    ] {
        match removed {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                files = n,
                "temporary files of memory writes cut off by a crash removed"
            ),
            Err(e) => tracing::warn!(error = %e, "temporary files of memory writes not removed"),
        }
    }
    let Ok(entries) = std::fs::read_dir(journal_dir(st)) else {
        return;
    };
    for file in entries.flatten().map(|e| e.path()) {
        if file.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let entry: Entry = match std::fs::read(&file)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "unreadable memory journal entry; removed");
                let _ = std::fs::remove_file(&file);
                continue;
            }
        };
        match settle(st, &notes, &entry).await {
            Ok(()) => {
                let _ = std::fs::remove_file(&file);
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "memory journal entry kept for the next start")
            }
        }
    }
}

/// Settle one journal entry (see [`recover`]).
async fn settle(
    st: &Arc<AppState>,
    notes: &osmoda_memory::notes::Notes,
    entry: &Entry,
) -> Result<(), String> {
    let recorded = st
        .ledger
        .dedup_event(STREAM, entry.seq)
        .map_err(|e| e.to_string())?;
    // The key is ours only when it holds this entry's event (a key is random: another event
    // under it would be a collision, and recording ours then loses nothing).
    if recorded.is_some_and(|ev| ev.kind == entry.kind && ev.payload == entry.payload.to_string()) {
        return Ok(());
    }
    if !entry.note.written_in(notes).map_err(|e| e.to_string())? {
        return Ok(());
    }
    let mut payload = entry.payload.clone();
    payload["recovered"] = json!(true);
    let ev = st
        .record_dedup(&entry.kind, &entry.actor, &payload, STREAM, entry.seq)
        .await
        .map_err(|e| e.error)?;
    tracing::info!(event = ev.id, path = %entry.note.path, "memory event of a note written before a crash recorded");
    Ok(())
}

/// `/memory/reindex`'s body: nothing, or `{}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReindexRequest {}

async fn blocking<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&Memory) -> Result<T, MemoryError> + Send + 'static,
) -> Result<T, ApiError> {
    let mem = st.memory.get().await?;
    tokio::task::spawn_blocking(move || f(&mem))
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::from)
}

/// `POST /memory/store {summary, detail?, category?, tags?, durable?}` → `{path, at, event_id}`
pub async fn store(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<StoreRequest>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    req.validate()?;
    let (summary, category) = (req.summary.clone(), req.category.clone());
    let note = blocking(&st, move |m| m.prepare_store(&req)).await?;
    let (r, id) = write_recorded(
        &st,
        note,
        "memory.stored",
        &caller.actor,
        json!({ "summary": summary, "category": category }),
    )
    .await?;
    Ok(axum::Json(
        json!({ "path": r.path, "at": r.at, "event_id": id }),
    ))
}

/// `POST /memory/ingest {event: {type, text?, payload?, source?, ts?, host?, unit?, actor?}}`
pub async fn ingest(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<IngestRequest>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    // Ingesting memory's own events would feed a routine that ingests every event forever.
    if req.event.kind.starts_with("memory.") {
        return Err(ApiError::bad_request(format!(
            "event type {:?}: memory.* events are not ingested",
            req.event.kind
        )));
    }
    let kind = req.event.kind.clone();
    let note = blocking(&st, move |m| m.prepare_ingest(&req.event)).await?;
    let (r, id) = write_recorded(
        &st,
        note,
        "memory.ingested",
        &caller.actor,
        json!({ "type": kind }),
    )
    .await?;
    Ok(axum::Json(
        json!({ "path": r.path, "at": r.at, "event_id": id }),
    ))
}

/// `POST /memory/recall {query, max_results?, timeframe?}`
pub async fn recall(
    State(st): State<Arc<AppState>>,
    Json(req): Json<RecallRequest>,
) -> Result<axum::Json<RecallResponse>, ApiError> {
    req.validate()?;
    let r = blocking(&st, move |m| m.recall(&req)).await?;
    // The recall found the model changed behind its endpoint (every vector dropped): embed
    // again in the background; recall is keyword-only until then and says so.
    let mem = st.memory.get().await?;
    if mem.wants_embedding() {
        std::thread::spawn(move || {
            if let Err(e) = mem.embed_pending() {
                tracing::warn!(error = %e, "memory embedding after a model change failed");
            }
        });
    }
    Ok(axum::Json(r))
}

/// `POST /memory/reindex` (no body, or `{}`): delete the index and rebuild it from the notes.
pub async fn reindex(
    State(st): State<Arc<AppState>>,
    _body: Option<Json<ReindexRequest>>,
) -> Result<axum::Json<SyncReport>, ApiError> {
    Ok(axum::Json(blocking(&st, |m| m.reindex()).await?))
}

/// `GET /memory/health` → `{model_status, model, collection_size, pending_vectors, notes, ...}`
pub async fn health(State(st): State<Arc<AppState>>) -> Result<axum::Json<Health>, ApiError> {
    Ok(axum::Json(blocking(&st, |m| m.health()).await?))
}
