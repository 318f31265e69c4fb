//! The facade: notes + index + embedder, as agentd serves them.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::cache::{QueryCache, DEFAULT_TTL};
use crate::chunk::{chunk_note_dated, split_lines, Chunk};
use crate::embed::Embedder;
use crate::error::{MemoryError, Result};
use crate::index::Index;
use crate::notes::{Notes, DAILY_DIR, DURABLE_FILE, NOTE_CAP};
use crate::recall::{self, Mode};
use crate::request::{
    event_time, rfc3339, IngestEvent, RecallHit, RecallRequest, RecallResponse, StoreReceipt,
    StoreRequest, Timeframe, MAX_DETAIL,
};

mod embedding;

/// Chunks embedded per step; the index lock is not held while the model runs.
const EMBED_STEP: usize = 64;
/// The similarity a chunk without a keyword vote must reach to be recalled (issue 17 review
/// finding 7), measured with all-MiniLM-L6-v2 on the labelled set (`tests/retrieval.rs`):
/// the best chunk of 20 queries about nothing in the notes reached at most 0.322 (0.2, the
/// earlier value, let 8 of them through), the relevant note of the labelled queries at least
/// 0.376 unless it holds the query's words ("198.51.100.20" at 0.258). It is this model's
/// figure only: another model's similarities spread differently (see
/// [`measured_min_similarity`]).
pub const MIN_SIMILARITY: f32 = 0.35;

/// The relevance threshold measured for the embedding model named `model` on the labelled
/// set, if one was: all-MiniLM-L6-v2 only ([`MIN_SIMILARITY`]). A model without one recalls
/// by keyword vote alone unless it is given one (`Options::min_similarity`,
/// `services.osmoda.memory.relevanceThresholds`).
pub fn measured_min_similarity(model: &str) -> Option<f32> {
    let name = model.rsplit('/').next().unwrap_or(model);
    name.eq_ignore_ascii_case(crate::embed::MINILM)
        .then_some(MIN_SIMILARITY)
}
/// Candidates per ranking before fusion.
const DEPTH: usize = 100;

/// Where the memory lives and how recall behaves.
#[derive(Debug, Clone)]
pub struct Options {
    /// The memory directory (`MEMORY.md`, `memory/`).
    pub dir: PathBuf,
    /// The index file (derived; deleted and rebuilt freely).
    pub index: PathBuf,
    /// Token budget of one recall (`services.osmoda.memory.maxInjectedTokens`).
    pub max_injected_tokens: usize,
    /// Least cosine similarity a recalled chunk must have when vectors are available, unless
    /// it holds at least half of the query's words (its keyword vote). `None`: the model's
    /// own ([`Embedder::min_similarity`], measured); a model with none recalls only chunks
    /// with a keyword vote (vectors still rank them), and says so in every recall's warning.
    pub min_similarity: Option<f32>,
}

impl Options {
    /// Defaults for a memory dir: index at `<dir>/.index.sqlite`, 1,500 tokens, the model's
    /// own relevance threshold.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        let dir = dir.into();
        Options {
            index: dir.join(".index.sqlite"),
            dir,
            max_injected_tokens: 1500,
            min_similarity: None,
        }
    }
}

/// What a sync changed.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SyncReport {
    /// Notes (re)indexed because they are new or changed.
    pub files_changed: usize,
    /// Notes removed from the index because they are gone.
    pub files_removed: usize,
    /// Chunks embedded.
    pub embedded: usize,
}

/// `GET /memory/health`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Health {
    /// `ready`, `keyword-only` (no model configured) or `error: ...`.
    pub model_status: String,
    /// The embedder's id, if any.
    pub model: Option<String>,
    /// Chunks in the index.
    pub collection_size: u64,
    /// Chunks still waiting for a vector.
    pub pending_vectors: u64,
    /// Note files.
    pub notes: usize,
    /// The relevance threshold in force: the configured one or the model's measured one;
    /// `None` with a model: only chunks sharing the query's words are recalled.
    pub min_similarity: Option<f32>,
    /// Why the index was rebuilt (corrupt when opened or while running, other schema), if it
    /// was.
    pub index_rebuilt: Option<String>,
    /// The last sync's error, if the last sync failed.
    pub last_error: Option<String>,
}

/// A section about to be appended to a note: what agentd journals before writing it, so that
/// a note written just before a crash still gets its ledger event at the next start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Prepared {
    /// The note, relative to the memory dir (`MEMORY.md`, `memory/YYYY-MM-DD.md`).
    pub path: String,
    /// The note's first line when it is created.
    pub title: String,
    /// The section's time (RFC 3339, UTC).
    pub at: String,
    /// The section, heading first.
    pub section: String,
}

impl Prepared {
    /// Whether the note at `path` in `notes` holds this section (it was written).
    ///
    /// # Errors
    /// I/O errors other than a missing note.
    pub fn written_in(&self, notes: &Notes) -> Result<bool> {
        match notes.read(&self.path) {
            Ok(text) => Ok(text.contains(&self.section)),
            Err(MemoryError::Io { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }
}

/// The memory: markdown ground truth and its derived index.
pub struct Memory {
    notes: Notes,
    opts: Options,
    index: Mutex<Index>,
    embedder: Option<Arc<dyn Embedder>>,
    model_error: Option<String>,
    /// The relevance threshold in force (see [`Options::min_similarity`]).
    min_similarity: Option<f32>,
    cache: QueryCache,
    /// Serialises writers (store, ingest, sync, reindex); readers only take `index`. Never
    /// held while a model runs: a note of thousands of sections (minutes of embedding) must
    /// not stop the next store.
    write: Mutex<()>,
    /// Held by the one thread embedding pending chunks; the others leave their chunks to it.
    embedding: Mutex<()>,
    /// Chunks may be waiting for a vector (set by every sync, cleared by the embedder).
    more: AtomicBool,
    syncs: (Mutex<(u64, Option<String>)>, Condvar),
}

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Memory").field("opts", &self.opts).finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Memory {
    /// Open the memory at `opts.dir` with `embedder` (`None`: keyword recall only;
    /// `model_error` says why, for health). Opens or rebuilds the index and syncs it with
    /// the notes.
    ///
    /// # Errors
    /// [`MemoryError::Io`] / [`MemoryError::Index`] when the directory or index cannot be
    /// created. A failing embedder is not an error here: chunks wait for their vectors.
    pub fn open(
        opts: Options,
        embedder: Option<Arc<dyn Embedder>>,
        model_error: Option<String>,
    ) -> Result<Self> {
        std::fs::create_dir_all(&opts.dir).map_err(|e| MemoryError::io(&opts.dir, e))?;
        let model = embedder.as_ref().map(|e| e.id());
        let index = Index::open(&opts.index, model.as_deref())?;
        let min_similarity = opts
            .min_similarity
            .or_else(|| embedder.as_ref().and_then(|e| e.min_similarity()));
        if let (Some(m), None) = (&model, min_similarity) {
            tracing::warn!(model = %m, "no relevance threshold for this embedding model: recall returns only chunks sharing the query's words");
        }
        let mem = Memory {
            min_similarity,
            notes: Notes::new(&opts.dir),
            index: Mutex::new(index),
            embedder,
            model_error,
            cache: QueryCache::new(256, DEFAULT_TTL),
            write: Mutex::new(()),
            embedding: Mutex::new(()),
            more: AtomicBool::new(false),
            syncs: (Mutex::new((0, None)), Condvar::new()),
            opts,
        };
        if let Err(e) = mem.check_model() {
            tracing::warn!(error = %e, "the embedding model could not be checked; chunks wait for their vectors");
        }
        mem.sync()?;
        Ok(mem)
    }

    /// The notes.
    pub fn notes(&self) -> &Notes {
        &self.notes
    }

    /// Bring the index in line with the notes: re-chunk changed files, drop deleted ones,
    /// embed chunks that lack a vector.
    ///
    /// # Errors
    /// I/O or index errors; embedding errors are recorded (health) and retried next sync.
    pub fn sync(&self) -> Result<SyncReport> {
        self.healing(|| self.sync_once())
    }

    fn sync_once(&self) -> Result<SyncReport> {
        let r = {
            let _w = lock(&self.write);
            self.sync_locked()
        };
        self.finish(self.then_embed(r))
    }

    /// Embed what the sync `r` left pending (outside the writer lock).
    fn then_embed(&self, r: Result<SyncReport>) -> Result<SyncReport> {
        let mut report = r?;
        report.embedded = self.embed_pending()?;
        Ok(report)
    }

    fn finish(&self, r: Result<SyncReport>) -> Result<SyncReport> {
        let mut s = lock(&self.syncs.0);
        s.0 += 1;
        s.1 = r.as_ref().err().map(ToString::to_string);
        self.syncs.1.notify_all();
        r
    }

    fn sync_locked(&self) -> Result<SyncReport> {
        let on_disk = self.notes.list()?;
        let known: std::collections::HashMap<String, String> =
            lock(&self.index).file_hashes()?.into_iter().collect();
        let mut report = SyncReport::default();
        for rel in &on_disk {
            self.sync_file(rel, known.get(rel).map(String::as_str), &mut report)?;
        }
        for gone in known.keys().filter(|k| !on_disk.contains(k)) {
            lock(&self.index).replace_file(gone, None, &[])?;
            report.files_removed += 1;
        }
        Ok(report)
    }

    /// Re-read the notes `rels` only (paths relative to the memory dir; a missing one is
    /// removed from the index), then embed what lacks a vector. What the writers and the
    /// watcher use when they know which files changed; cost independent of the other notes.
    ///
    /// # Errors
    /// As [`Memory::sync`].
    pub fn sync_paths(&self, rels: &[String]) -> Result<SyncReport> {
        self.healing(|| self.sync_paths_once(rels))
    }

    fn sync_paths_once(&self, rels: &[String]) -> Result<SyncReport> {
        let w = lock(&self.write);
        let r = (|| {
            let known: std::collections::HashMap<String, String> = lock(&self.index)
                .file_hashes_of(rels)?
                .into_iter()
                .collect();
            let mut report = SyncReport::default();
            for rel in rels {
                if self.notes.is_note(rel)
                    && std::fs::symlink_metadata(self.opts.dir.join(rel)).is_ok_and(|m| m.is_file())
                {
                    self.sync_file(rel, known.get(rel).map(String::as_str), &mut report)?;
                } else if known.contains_key(rel) {
                    lock(&self.index).replace_file(rel, None, &[])?;
                    report.files_removed += 1;
                }
            }
            Ok(report)
        })();
        drop(w);
        self.finish(self.then_embed(r))
    }

    /// Re-chunk `rel` when its content no longer hashes to `known`.
    fn sync_file(&self, rel: &str, known: Option<&str>, report: &mut SyncReport) -> Result<()> {
        let content = self.notes.read(rel)?;
        let sha = hex::encode(Sha256::digest(content.as_bytes()));
        if known == Some(sha.as_str()) {
            return Ok(());
        }
        let mtime = std::fs::symlink_metadata(self.opts.dir.join(rel))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_secs() as i64);
        // A section without a date keeps the one it was first seen with (the file's mtime
        // then): editing one fact of MEMORY.md must not make every other one "recent".
        let seen = lock(&self.index).dates_by_text(rel)?;
        let chunks: Vec<Chunk> = chunk_note_dated(rel, &content, &|text| {
            seen.get(text).copied().unwrap_or(mtime)
        });
        lock(&self.index).replace_file(rel, Some(&sha), &chunks)?;
        report.files_changed += 1;
        Ok(())
    }

    /// Number of syncs finished so far (for waiting on the watcher, see [`Memory::wait_sync`]).
    pub fn sync_count(&self) -> u64 {
        lock(&self.syncs.0).0
    }

    /// Wait until more than `after` syncs have finished, at most `timeout`. Returns the count.
    pub fn wait_sync(&self, after: u64, timeout: Duration) -> u64 {
        let g = lock(&self.syncs.0);
        let (g, _) = self
            .syncs
            .1
            .wait_timeout_while(g, timeout, |s| s.0 <= after)
            .unwrap_or_else(|p| p.into_inner());
        g.0
    }

    /// Run `op`; if SQLite finds the index damaged (a file changed in place while open: a
    /// disk error, a stray writer), rebuild the index from the notes and run `op` once more.
    /// The index is derived, so nothing is lost; health's `index_rebuilt` says why.
    fn healing<T>(&self, op: impl Fn() -> Result<T>) -> Result<T> {
        match op() {
            Err(e) if e.is_damaged_index() => {
                let why = format!("damaged while open: {e}");
                tracing::warn!(error = %e, "memory index damaged; rebuilding it from the notes");
                self.rebuild(Some(why))?;
                op()
            }
            r => r,
        }
    }

    /// Delete the index and rebuild it from the notes alone.
    ///
    /// # Errors
    /// As [`Memory::sync`].
    pub fn reindex(&self) -> Result<SyncReport> {
        self.rebuild(None)
    }

    /// [`Memory::reindex`], recording `why` (a damaged index) as health's `index_rebuilt`.
    fn rebuild(&self, why: Option<String>) -> Result<SyncReport> {
        let w = lock(&self.write);
        {
            let mut idx = lock(&self.index);
            let model = self.embedder.as_ref().map(|e| e.id());
            let path = idx.path().to_path_buf();
            // Close the old connection before its file goes.
            *idx = Index::open(std::path::Path::new(":memory:"), None)?;
            for suffix in ["", "-wal", "-shm"] {
                let mut p = path.as_os_str().to_owned();
                p.push(suffix);
                let _ = std::fs::remove_file(PathBuf::from(p));
            }
            *idx = Index::open(&path, model.as_deref())?;
            if why.is_some() {
                idx.rebuilt = why;
            }
        }
        // Under the same writer lock: no watcher sync can slip in between and take the report.
        let r = self.sync_locked();
        drop(w);
        self.finish(self.then_embed(r))
    }

    /// Append a note to the ground truth and index it.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] (nothing written), I/O or index errors.
    pub fn store(&self, req: &StoreRequest) -> Result<StoreReceipt> {
        self.write(&self.prepare_store(req)?)
    }

    /// The section [`Memory::store`] would append, and where, without writing it (for a
    /// caller that journals it first; see [`Prepared`]).
    ///
    /// # Errors
    /// [`MemoryError::Invalid`].
    pub fn prepare_store(&self, req: &StoreRequest) -> Result<Prepared> {
        req.validate()?;
        let now = OffsetDateTime::now_utc();
        let mut meta = format!("at: {}", rfc3339(now.unix_timestamp()));
        if let Some(c) = &req.category {
            meta.push_str(&format!(" · category: {c}"));
        }
        if !req.tags.is_empty() {
            meta.push_str(&format!(" · tags: {}", req.tags.join(", ")));
        }
        let section = format!(
            "## {}\n{meta}\n\n{}",
            req.summary.trim(),
            escape_body(&req.detail)
        );
        self.prepared(req.durable, now, section)
    }

    /// Record an event or conversation snippet in today's (or the event's day's) note, with
    /// its context (source, time, host, unit, actor) in the metadata line so both the
    /// keyword index and the embedding see it.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] (nothing written), I/O or index errors.
    pub fn ingest(&self, ev: &IngestEvent) -> Result<StoreReceipt> {
        self.write(&self.prepare_ingest(ev)?)
    }

    /// The section [`Memory::ingest`] would append, and where, without writing it.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`].
    pub fn prepare_ingest(&self, ev: &IngestEvent) -> Result<Prepared> {
        let one_line = |name: &str, v: &str, max: usize| -> Result<()> {
            if v.trim().is_empty() || v.chars().count() > max || v.contains(['\n', '\r', '·']) {
                return Err(MemoryError::Invalid(format!(
                    "event.{name} must be one line of 1-{max} characters"
                )));
            }
            Ok(())
        };
        one_line("type", &ev.kind, 100)?;
        // A type is matched by its prefix (agentd refuses `memory.*`): no padding around it.
        if ev.kind.trim() != ev.kind {
            return Err(MemoryError::Invalid(format!(
                "event.type {:?} must not start or end with spaces",
                ev.kind
            )));
        }
        for (name, v) in [
            ("source", &ev.source),
            ("actor", &ev.actor),
            ("host", &ev.host),
            ("unit", &ev.unit),
        ] {
            if let Some(v) = v {
                one_line(name, v, 200)?;
            }
        }
        let at = event_time(ev.ts.as_ref(), OffsetDateTime::now_utc())?;
        let mut body = ev.text.clone().unwrap_or_default();
        if let Some(p) = &ev.payload {
            if !body.is_empty() {
                body.push('\n');
            }
            body.push_str(&render_payload(p));
        }
        if body.trim().is_empty() {
            return Err(MemoryError::Invalid("event needs text or a payload".into()));
        }
        if body.len() > MAX_DETAIL {
            return Err(MemoryError::Invalid(format!(
                "event text and payload are {} bytes; at most {MAX_DETAIL}",
                body.len()
            )));
        }
        let host = ev.host.clone().unwrap_or_else(hostname);
        let mut meta = format!(
            "at: {} · source: {} · host: {host}",
            rfc3339(at.unix_timestamp()),
            ev.source.as_deref().unwrap_or("event")
        );
        if let Some(u) = &ev.unit {
            meta.push_str(&format!(" · unit: {u}"));
        }
        if let Some(a) = &ev.actor {
            meta.push_str(&format!(" · actor: {a}"));
        }
        let heading = match &ev.unit {
            Some(u) => format!("{} ({u})", ev.kind.trim()),
            None => ev.kind.trim().to_string(),
        };
        let section = format!("## {heading}\n{meta}\n\n{}", escape_body(&body));
        self.prepared(false, at, section)
    }

    /// Where `section` goes: `MEMORY.md`, or the day's note. A write rewrites its whole note
    /// (an atomic replace) and re-reads it to index it, so its work grows with the note: a
    /// note at [`NOTE_CAP`] takes no more sections. The day's next part is
    /// `memory/YYYY-MM-DD-2.md` (then `-3`, ...; OpenClaw names its dated notes
    /// `YYYY-MM-DD-<slug>.md` too); a full `MEMORY.md` refuses durable notes.
    fn prepared(&self, durable: bool, at: OffsetDateTime, section: String) -> Result<Prepared> {
        let size =
            |rel: &str| std::fs::symlink_metadata(self.opts.dir.join(rel)).map_or(0, |m| m.len());
        let (path, title) = if durable {
            let held = size(DURABLE_FILE);
            if held >= NOTE_CAP {
                return Err(MemoryError::NoteFull {
                    path: DURABLE_FILE.to_string(),
                    size: held,
                });
            }
            (DURABLE_FILE.to_string(), "Memory".to_string())
        } else {
            let p = self.notes.daily_path(at.date());
            let t = p
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let part = |n: u32| match n {
                1 => format!("{DAILY_DIR}/{t}.md"),
                n => format!("{DAILY_DIR}/{t}-{n}.md"),
            };
            // Bounded: a day of 10,000 full parts is 20 GiB of notes.
            let n = (1..=10_000)
                .find(|&n| size(&part(n)) < NOTE_CAP)
                .ok_or_else(|| MemoryError::NoteFull {
                    path: part(10_000),
                    size: size(&part(10_000)),
                })?;
            (part(n), t)
        };
        Ok(Prepared {
            path,
            title,
            at: rfc3339(at.unix_timestamp()),
            section,
        })
    }

    /// Append a prepared section to its note (atomically) and index that note.
    ///
    /// # Errors
    /// [`MemoryError::NotANote`] or I/O errors: the note is then unchanged.
    pub fn write(&self, p: &Prepared) -> Result<StoreReceipt> {
        {
            let _w = lock(&self.write);
            self.notes
                .append(&self.opts.dir.join(&p.path), &p.title, &p.section)?;
        }
        // Index that note right away so the next recall sees it; a failed embedding leaves
        // the note stored and its vector pending (health shows it).
        if let Err(e) = self.sync_paths(std::slice::from_ref(&p.path)) {
            tracing::warn!(error = %e, "memory note stored but not yet indexed");
        }
        Ok(StoreReceipt {
            path: p.path.clone(),
            at: p.at.clone(),
        })
    }

    fn query_vector(&self, query: &str) -> Result<Option<Arc<Vec<f32>>>> {
        let Some(emb) = &self.embedder else {
            return Ok(None);
        };
        let id = emb.id();
        let now = Instant::now();
        if let Some(v) = self.cache.get(&id, query, now) {
            return Ok(Some(v));
        }
        let (vecs, probe) = self.embed_probed(emb.as_ref(), &[query.to_string()])?;
        if let Some(p) = &probe {
            self.settle_probe(&mut lock(&self.index), emb.as_ref(), p)?;
        }
        let v = vecs
            .into_iter()
            .next()
            .ok_or_else(|| MemoryError::Embed("no vector for the query".into()))?;
        let v = Arc::new(v);
        self.cache.put(&id, query, v.clone(), now);
        Ok(Some(v))
    }

    /// Hybrid recall: relevant chunks, best first, within `max_results` and the token budget.
    ///
    /// # Errors
    /// [`MemoryError::Invalid`] for a bad request; index errors.
    pub fn recall(&self, req: &RecallRequest) -> Result<RecallResponse> {
        self.healing(|| self.recall_once(req))
    }

    fn recall_once(&self, req: &RecallRequest) -> Result<RecallResponse> {
        let max = req.validate()?;
        let tf = Timeframe::parse(req.timeframe.as_deref(), OffsetDateTime::now_utc())?;
        let (qvec, warning) = match self.query_vector(req.query.trim()) {
            Ok(v) => (
                v,
                self.model_error.clone().filter(|_| self.embedder.is_none()),
            ),
            Err(e) => (None, Some(format!("keyword recall only: {e}"))),
        };
        let mode = if qvec.is_some() { "hybrid" } else { "keyword" };
        let idx = lock(&self.index);
        // Chunks not embedded yet (new notes, a reindex running) rank by keyword alone: say so.
        let pending = if qvec.is_some() {
            idx.pending_count()?
        } else {
            0
        };
        let unmeasured = match (&qvec, self.min_similarity, &self.embedder) {
            (Some(_), None, Some(e)) => Some(format!(
                "no relevance threshold for the embedding model {}: only notes sharing the query's words are recalled (measure one and set services.osmoda.memory.relevanceThresholds for it)",
                e.id()
            )),
            _ => None,
        };
        let not_embedded = (pending > 0).then(|| format!(
            "{pending} chunks are not embedded yet (new notes or an index rebuild): they are found by keyword only until they are"
        ));
        let warning: Vec<String> = [warning, unmeasured, not_embedded]
            .into_iter()
            .flatten()
            .collect();
        let warning = (!warning.is_empty()).then(|| warning.join("; "));
        let ranked = recall::rank(
            &idx,
            Mode::Hybrid,
            req.query.trim(),
            qvec.as_deref().map(Vec::as_slice),
            tf.since,
            tf.until,
            DEPTH,
        )?;
        let relevant: Vec<_> = ranked
            .into_iter()
            // Similar enough, or holding at least half of the query's words (a name, an
            // address, an error message is evidence whatever its cosine); without a vector
            // (keyword mode, not embedded yet) only the keyword vote counts.
            .filter(|r| {
                r.bm25_rank.is_some()
                    || r.similarity
                        .zip(self.min_similarity)
                        .is_some_and(|(s, least)| s >= least)
            })
            .collect();
        let chunks = idx.get(&relevant.iter().map(|r| r.id).collect::<Vec<_>>())?;
        drop(idx);
        // Each hit costs its header line and its text as they are injected (`budget.rs`);
        // a single hit larger than the whole budget is cut to it.
        let budget = self.opts.max_injected_tokens;
        let (mut results, mut used, mut omitted) = (Vec::new(), 0, 0);
        for (r, c) in relevant.iter().zip(chunks) {
            let at = rfc3339(c.chunk.ts);
            let header = crate::budget::hit_header(&c.chunk.path, c.chunk.line_start, &at);
            let mut text = c.chunk.text;
            let mut cost = crate::budget::hit_cost(&header, &text);
            if results.len() >= max || used + cost > budget {
                match crate::budget::cut_to(&header, &text, budget) {
                    Some(cut) if results.is_empty() => {
                        cost = crate::budget::hit_cost(&header, &cut);
                        text = cut;
                    }
                    _ => {
                        omitted += 1;
                        continue;
                    }
                }
            }
            used += cost;
            results.push(RecallHit {
                path: c.chunk.path,
                line_start: c.chunk.line_start,
                line_end: c.chunk.line_end,
                heading: c.chunk.heading,
                text,
                at,
                score: r.score,
                similarity: r.similarity,
                keyword_match: r.bm25_rank.is_some(),
            });
        }
        Ok(RecallResponse {
            results,
            mode: mode.into(),
            tokens: used,
            omitted,
            warning,
        })
    }

    /// Ranking without threshold or budget (evaluation and benchmarks): the best `limit`
    /// chunks for `query` by `mode`.
    ///
    /// # Errors
    /// Index or embedding errors.
    pub fn search(&self, query: &str, mode: Mode, limit: usize) -> Result<Vec<Chunk>> {
        let qvec = if mode == Mode::Bm25 {
            None
        } else {
            self.query_vector(query)?
        };
        let idx = lock(&self.index);
        let ranked = recall::rank(
            &idx,
            mode,
            query,
            qvec.as_deref().map(Vec::as_slice),
            i64::MIN,
            i64::MAX,
            DEPTH.max(limit),
        )?;
        let ids: Vec<i64> = ranked.iter().take(limit).map(|r| r.id).collect();
        Ok(idx.get(&ids)?.into_iter().map(|c| c.chunk).collect())
    }

    /// State of the model and the index.
    ///
    /// # Errors
    /// Index errors.
    pub fn health(&self) -> Result<Health> {
        let idx = lock(&self.index);
        let model_status = match (&self.embedder, &self.model_error) {
            (Some(_), _) => "ready".to_string(),
            (None, Some(e)) => format!("error: {e}"),
            (None, None) => "keyword-only".to_string(),
        };
        Ok(Health {
            model_status,
            model: self.embedder.as_ref().map(|e| e.id()),
            collection_size: idx.chunk_count()?,
            pending_vectors: if self.embedder.is_some() {
                idx.pending_count()?
            } else {
                0
            },
            notes: self.notes.list()?.len(),
            min_similarity: self.embedder.as_ref().and(self.min_similarity),
            index_rebuilt: idx.rebuilt.clone(),
            last_error: lock(&self.syncs.0).1.clone(),
        })
    }
}

/// A note body as written into a section: it can never forge or hide a section, for this
/// crate's chunker or any CommonMark reader. Every line ending (`\r\n`, a bare `\r`)
/// becomes `\n`; a line that would start an ATX heading (`#`) or underline a setext one
/// (`===`, `---`) is escaped with `\`; a code fence left open is closed, so it cannot swallow
/// the sections written after it.
pub(crate) fn escape_body(s: &str) -> String {
    let mut fence: Option<&str> = None;
    let mut out: Vec<String> = split_lines(s)
        .into_iter()
        .map(|l| {
            let t = l.trim_start();
            let indent = l.len() - t.len();
            for mark in ["```", "~~~"] {
                if indent <= 3 && t.starts_with(mark) {
                    fence = match fence {
                        Some(open) if open == mark => None,
                        None => Some(mark),
                        other => other,
                    };
                }
            }
            let underline = !t.is_empty()
                && (t.trim_end().chars().all(|c| c == '=')
                    || t.trim_end().chars().all(|c| c == '-'));
            if t.starts_with('#') || (indent <= 3 && underline) {
                format!("\\{t}")
            } else {
                l.to_string()
            }
        })
        .collect();
    if let Some(mark) = fence {
        out.push(mark.to_string());
    }
    out.join("\n")
}

fn render_payload(p: &serde_json::Value) -> String {
    match p {
        serde_json::Value::Object(m) => m
            .iter()
            .map(|(k, v)| match v {
                serde_json::Value::String(s) => format!("- {k}: {s}"),
                other => format!("- {k}: {other}"),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_recall;
