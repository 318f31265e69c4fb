//! osModa memory: markdown notes are the ground truth, a SQLite index is derived from them.
//!
//! - [`notes`]: `MEMORY.md` and `memory/YYYY-MM-DD.md` (OpenClaw's layout), atomic appends.
//! - [`chunk`]: sections of a note become chunks, dated by their `at:` line or the file name.
//! - [`index`]: one SQLite file with the chunks, FTS5 (BM25) and vectors tagged by model.
//! - [`embed`]: the [`Embedder`] interface, in-process all-MiniLM-L6-v2 or an OpenAI-compatible
//!   endpoint.
//! - [`budget`]: what a recalled hit costs of the token budget.
//! - [`recall`]: BM25 and exact vector search fused by RRF (k = 60).
//! - [`Memory`]: the facade agentd serves: store, ingest, recall, reindex, health, and a
//!   `notify` watcher so hand edits are followed.

pub mod budget;
pub mod cache;
pub mod chunk;
pub mod embed;
mod error;
pub mod index;
mod memory;
pub mod notes;
pub mod recall;
mod request;
mod watch;

#[cfg(feature = "candle")]
pub use embed::LocalModel;
pub use embed::MINILM;
pub use embed::{Embedder, HttpEmbedder};
pub use error::{MemoryError, Result};
pub use memory::{
    measured_min_similarity, Health, Memory, Options, Prepared, SyncReport, MIN_SIMILARITY,
};
pub use recall::Mode;
pub use request::{
    IngestEvent, IngestRequest, RecallHit, RecallRequest, RecallResponse, StoreReceipt,
    StoreRequest, Timeframe,
};
pub use watch::Watcher;
