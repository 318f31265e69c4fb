//! `/memory/*`: the agent's memory (crate `osmoda-memory`): markdown notes under the memory
//! dir are the ground truth, the index beside them is derived; hybrid recall with the
//! in-process embedding model (or an OpenAI-compatible endpoint when configured).
//!
//! The memory opens on first use (loading the model takes about a second), so daemons that
//! never recall do not pay for it. Store and ingest are
//! recorded in the ledger (`memory.stored`, `memory.ingested`) without the note's body.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::Router;
use osmoda_memory::{
    Embedder, Health, HttpEmbedder, IngestRequest, Memory, MemoryError, Options, RecallRequest,
    RecallResponse, StoreReceipt, StoreRequest, SyncReport,
};
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
}

impl MemorySettings {
    /// The settings agentd.json's `memory` section gives.
    pub fn from_config(c: &osmoda_config::MemoryConfig) -> Self {
        MemorySettings {
            endpoint: c.embedding_endpoint.clone(),
            endpoint_model: c.embedding_model.clone(),
            max_injected_tokens: c.max_injected_tokens as usize,
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

    /// The open memory; opens it (model, index, watcher) on first call.
    ///
    /// # Errors
    /// 503 when the memory directory or index cannot be opened (retried on the next call).
    pub async fn get(&self) -> Result<Arc<Memory>, ApiError> {
        let (mem, _) = self
            .cell
            .get_or_try_init(|| async {
                let s = self.settings.clone();
                let dir = s
                    .dir
                    .clone()
                    .unwrap_or_else(|| self.state_dir.join("memory"));
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
        .route("/memory/store", post(store))
        .route("/memory/ingest", post(ingest))
        .route("/memory/recall", post(recall))
        .route("/memory/reindex", post(reindex))
        .route("/memory/health", get(health))
}

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
    let r: StoreReceipt = blocking(&st, move |m| m.store(&req)).await?;
    let ev = st
        .record(
            "memory.stored",
            &caller.actor,
            &json!({ "path": r.path, "summary": summary, "category": category }),
        )
        .await?;
    Ok(axum::Json(
        json!({ "path": r.path, "at": r.at, "event_id": ev.id }),
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
    let r = blocking(&st, move |m| m.ingest(&req.event)).await?;
    let ev = st
        .record(
            "memory.ingested",
            &caller.actor,
            &json!({ "path": r.path, "type": kind }),
        )
        .await?;
    Ok(axum::Json(
        json!({ "path": r.path, "at": r.at, "event_id": ev.id }),
    ))
}

/// `POST /memory/recall {query, max_results?, timeframe?}`
pub async fn recall(
    State(st): State<Arc<AppState>>,
    Json(req): Json<RecallRequest>,
) -> Result<axum::Json<RecallResponse>, ApiError> {
    req.validate()?;
    Ok(axum::Json(blocking(&st, move |m| m.recall(&req)).await?))
}

/// `POST /memory/reindex`: delete the index and rebuild it from the notes.
pub async fn reindex(State(st): State<Arc<AppState>>) -> Result<axum::Json<SyncReport>, ApiError> {
    Ok(axum::Json(blocking(&st, |m| m.reindex()).await?))
}

/// `GET /memory/health` → `{model_status, model, collection_size, pending_vectors, notes, ...}`
pub async fn health(State(st): State<Arc<AppState>>) -> Result<axum::Json<Health>, ApiError> {
    Ok(axum::Json(blocking(&st, |m| m.health()).await?))
}
