//! The derived index: one SQLite file with the chunks, an FTS5 table (BM25) and the vectors.
//!
//! Everything here can be rebuilt from the notes. Each vector is stored with the id of the
//! model that made it, and the file records the current model; opening with another model
//! clears every vector before any is used, so two models' vectors never mix. Vectors are
//! little-endian f32 blobs; the search over them is exact (a dot product per chunk over an
//! in-memory copy, see docs/STATUS.md for the benchmark behind that choice).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension};

use crate::chunk::Chunk;
use crate::error::Result;

/// 2: the `at:` field of a metadata line is no longer part of the indexed and embedded text.
const SCHEMA_VERSION: &str = "2";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files(path TEXT PRIMARY KEY, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks(
  id INTEGER PRIMARY KEY,
  path TEXT NOT NULL,
  ord INTEGER NOT NULL,
  line_start INTEGER NOT NULL,
  line_end INTEGER NOT NULL,
  heading TEXT NOT NULL,
  text TEXT NOT NULL,
  ts INTEGER NOT NULL,
  model TEXT,
  vec BLOB,
  UNIQUE(path, ord));
CREATE INDEX IF NOT EXISTS chunks_ts ON chunks(ts);
-- The chunks waiting for a vector: finding them costs what is pending, not the collection.
CREATE INDEX IF NOT EXISTS chunks_pending ON chunks(id) WHERE vec IS NULL;
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, tokenize = 'porter unicode61');
";

/// A chunk as stored, with its row id.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredChunk {
    /// Row id (changes on rebuild; results are compared by path and ord).
    pub id: i64,
    /// The chunk.
    pub chunk: Chunk,
}

/// The in-memory copy of the vectors: row ids, dates and a flat matrix, in no particular
/// order, with a map from row id to position. A write touches only the rows it adds or
/// removes (a removal moves the last row into the gap), never the rest of the collection.
#[derive(Debug, Default)]
pub(crate) struct Vectors {
    pub ids: Vec<i64>,
    pub ts: Vec<i64>,
    pub dims: usize,
    pub data: Vec<f32>,
    pos: HashMap<i64, usize>,
    /// Rows written or moved so far: the vector side of a write's work (see [`Index::work`]).
    touched: u64,
}

impl Vectors {
    pub fn len(&self) -> usize {
        self.ids.len()
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dims..(i + 1) * self.dims]
    }
    /// Position of row `id`.
    pub fn position(&self, id: i64) -> Option<usize> {
        self.pos.get(&id).copied()
    }
    /// Add (or replace) the vector of row `id`; a vector of another length than the others
    /// is refused (`false`).
    fn insert(&mut self, id: i64, ts: i64, v: &[f32]) -> bool {
        if self.dims == 0 {
            self.dims = v.len();
        }
        if v.len() != self.dims || v.is_empty() {
            return false;
        }
        self.touched += 1;
        let d = self.dims;
        match self.pos.get(&id) {
            Some(&i) => {
                self.ts[i] = ts;
                self.data[i * d..(i + 1) * d].copy_from_slice(v);
            }
            None => {
                self.pos.insert(id, self.ids.len());
                self.ids.push(id);
                self.ts.push(ts);
                self.data.extend_from_slice(v);
            }
        }
        true
    }
    /// Drop row `id`: the last row moves into its place.
    fn remove(&mut self, id: i64) {
        let Some(i) = self.pos.remove(&id) else {
            return;
        };
        self.touched += 1;
        let (d, last) = (self.dims, self.ids.len() - 1);
        if i != last {
            self.ids[i] = self.ids[last];
            self.ts[i] = self.ts[last];
            self.data.copy_within(last * d..(last + 1) * d, i * d);
            self.pos.insert(self.ids[i], i);
            self.touched += 1;
        }
        self.ids.truncate(last);
        self.ts.truncate(last);
        self.data.truncate(last * d);
    }
}

/// Work done by an index since it was opened: what a write must keep proportional to the
/// note it changes, not to the collection (a test counts it; time would be too noisy).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Work {
    /// SQLite virtual-machine instructions (counted only after [`Index::count_work`]).
    pub sql_steps: u64,
    /// Rows of the in-memory vector copy written or moved.
    pub vector_rows: u64,
}

/// The open index.
pub struct Index {
    conn: Connection,
    path: PathBuf,
    pub(crate) vectors: Vectors,
    /// Why the index was rebuilt when it was opened (`None`: it was sound).
    pub rebuilt: Option<String>,
    /// SQLite instructions counted since [`Index::count_work`] (`None`: not counted).
    steps: Option<std::sync::Arc<std::sync::atomic::AtomicU64>>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index").field("path", &self.path).finish()
    }
}

fn remove_db(path: &Path) {
    for suffix in ["", "-wal", "-shm", "-journal"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

/// The index holds every note's text, so it is the owner's only, like the notes: the database
/// and its `-wal`/`-shm` files are made (or set) mode 0600 before SQLite opens them (SQLite
/// gives new `-wal`/`-shm` files the database's mode), and an index path that is a symbolic
/// link or not a regular file is removed (the index is derived; it is rebuilt from the notes).
fn private_files(path: &Path) {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    // SQLite's in-memory database and URI names are no files.
    let name = path.to_string_lossy();
    if name == ":memory:" || name.starts_with("file:") {
        return;
    }
    let beside = |suffix: &str| {
        let mut s = path.as_os_str().to_owned();
        s.push(suffix);
        std::path::PathBuf::from(s)
    };
    for p in [path.to_path_buf(), beside("-wal"), beside("-shm")] {
        if std::fs::symlink_metadata(&p).is_ok_and(|m| !m.is_file()) {
            tracing::warn!(index = %p.display(), "not a regular file (a link?); removed, the index is rebuilt");
            let _ = std::fs::remove_file(&p);
        }
        if p == path {
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&p);
        }
        if std::fs::symlink_metadata(&p).is_ok_and(|m| m.is_file()) {
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600));
        }
    }
}

impl Index {
    /// Open (or create) the index at `path` for vectors of `model` (`None`: keyword only,
    /// vectors are kept as they are). A file that is not a sound index of this schema is
    /// deleted and created anew; [`Index::rebuilt`] says why.
    ///
    /// # Errors
    /// [`crate::MemoryError::Index`] when even a fresh file cannot be created.
    pub fn open(path: &Path, model: Option<&str>) -> Result<Self> {
        private_files(path);
        let (conn, rebuilt) = match Self::open_checked(path) {
            Ok(c) => (c, None),
            Err(why) => {
                tracing::warn!(index = %path.display(), %why, "memory index unusable; rebuilding it from the notes");
                remove_db(path);
                (Self::fresh(path)?, Some(why))
            }
        };
        let mut index = Index {
            conn,
            path: path.to_path_buf(),
            vectors: Vectors::default(),
            rebuilt,
            steps: None,
        };
        if let Some(model) = model {
            index.set_model(model)?;
        }
        match index.load_vectors() {
            Ok(()) => {}
            Err(why) => {
                // Vectors of the wrong length: a corrupt file, never a model mix.
                remove_db(path);
                index.conn = Self::fresh(path)?;
                index.rebuilt = Some(why);
                if let Some(model) = model {
                    index.set_model(model)?;
                }
                index.vectors = Vectors::default();
            }
        }
        Ok(index)
    }

    fn open_raw(path: &Path) -> rusqlite::Result<Connection> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")?;
        conn.execute_batch(SCHEMA)?;
        Ok(conn)
    }

    fn fresh(path: &Path) -> rusqlite::Result<Connection> {
        let conn = Self::open_raw(path)?;
        conn.execute(
            "INSERT OR IGNORE INTO meta VALUES ('schema', ?1)",
            [SCHEMA_VERSION],
        )?;
        Ok(conn)
    }

    /// Open and check: integrity, schema version, the FTS table agrees with the chunks.
    fn open_checked(path: &Path) -> std::result::Result<Connection, String> {
        let conn = Self::open_raw(path).map_err(|e| format!("cannot open: {e}"))?;
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| format!("integrity check failed: {e}"))?;
        if check != "ok" {
            return Err(format!("integrity check: {check}"));
        }
        let version: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| format!("cannot read meta: {e}"))?;
        match version.as_deref() {
            Some(SCHEMA_VERSION) => {}
            None => {
                conn.execute("INSERT INTO meta VALUES ('schema', ?1)", [SCHEMA_VERSION])
                    .map_err(|e| format!("cannot write meta: {e}"))?;
            }
            Some(v) => return Err(format!("schema version {v}, expected {SCHEMA_VERSION}")),
        }
        conn.execute(
            "INSERT INTO chunks_fts(chunks_fts, rank) VALUES('integrity-check', 1)",
            [],
        )
        .map_err(|e| format!("full-text index damaged: {e}"))?;
        let (chunks, fts): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM chunks), (SELECT count(*) FROM chunks_fts)",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| format!("cannot count chunks: {e}"))?;
        if chunks != fts {
            return Err(format!("{chunks} chunks but {fts} full-text rows"));
        }
        Ok(conn)
    }

    /// The model whose vectors the index holds.
    pub fn model(&self) -> Result<Option<String>> {
        Ok(self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'model'", [], |r| {
                r.get(0)
            })
            .optional()?)
    }

    /// The probe vector recorded for the index's model (see `Memory`), if any.
    pub fn probe(&self) -> Result<Option<Vec<f32>>> {
        let hex_text: Option<String> = self
            .conn
            .query_row("SELECT value FROM meta WHERE key = 'probe'", [], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(hex_text
            .and_then(|h| hex::decode(h).ok())
            .map(|b| f32s(&b).collect()))
    }

    /// Record `v` as the probe vector of the index's model.
    pub fn set_probe(&self, v: &[f32]) -> Result<()> {
        let blob: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        self.conn.execute(
            "INSERT OR REPLACE INTO meta VALUES ('probe', ?1)",
            [hex::encode(blob)],
        )?;
        Ok(())
    }

    /// Drop every vector (the model changed behind its id); `why` becomes
    /// [`Index::rebuilt`]. The chunks wait for new vectors.
    pub fn reset_vectors(&mut self, why: String) -> Result<()> {
        self.conn
            .execute("UPDATE chunks SET vec = NULL, model = NULL", [])?;
        self.vectors = Vectors::default();
        self.rebuilt = Some(why);
        Ok(())
    }

    /// Make `model` the index's model; a change clears every vector (re-embedded by the next
    /// sync), so vectors of two models never mix.
    fn set_model(&mut self, model: &str) -> Result<()> {
        if self.model()?.as_deref() == Some(model) {
            // Stray vectors of another model (a crash between the two statements below in an
            // older run cannot leave any, but a hand-edited file could).
            self.conn.execute(
                "UPDATE chunks SET vec = NULL, model = NULL WHERE model IS NOT ?1",
                [model],
            )?;
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        tx.execute("UPDATE chunks SET vec = NULL, model = NULL", [])?;
        tx.execute("DELETE FROM meta WHERE key = 'probe'", [])?;
        tx.execute("INSERT OR REPLACE INTO meta VALUES ('model', ?1)", [model])?;
        tx.commit()?;
        Ok(())
    }

    fn load_vectors(&mut self) -> std::result::Result<(), String> {
        let mut v = Vectors::default();
        let mut stmt = self
            .conn
            .prepare("SELECT id, ts, vec FROM chunks WHERE vec IS NOT NULL ORDER BY id")
            .map_err(|e| e.to_string())?;
        let mut rows = stmt.query([]).map_err(|e| e.to_string())?;
        while let Some(r) = rows.next().map_err(|e| e.to_string())? {
            let blob: Vec<u8> = r.get(2).map_err(|e| e.to_string())?;
            if blob.is_empty() || blob.len() % 4 != 0 {
                return Err(format!("a vector blob of {} bytes", blob.len()));
            }
            let dims = blob.len() / 4;
            if v.dims == 0 {
                v.dims = dims;
            } else if v.dims != dims {
                return Err(format!("vectors of {} and {dims} dimensions", v.dims));
            }
            let (id, ts): (i64, i64) = (
                r.get(0).map_err(|e| e.to_string())?,
                r.get(1).map_err(|e| e.to_string())?,
            );
            v.pos.insert(id, v.ids.len());
            v.ids.push(id);
            v.ts.push(ts);
            v.data.extend(f32s(&blob));
        }
        drop(rows);
        drop(stmt);
        self.vectors = v;
        Ok(())
    }

    /// The sha256 the index last saw for each note.
    pub fn file_hashes(&self) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare("SELECT path, sha256 FROM files ORDER BY path")?;
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// The sha256 the index last saw for each of `paths` it knows.
    pub fn file_hashes_of(&self, paths: &[String]) -> Result<Vec<(String, String)>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT path, sha256 FROM files WHERE path = ?1")?;
        let mut out = Vec::new();
        for p in paths {
            if let Some(row) = stmt
                .query_row([p], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()?
            {
                out.push(row);
            }
        }
        Ok(out)
    }

    /// Replace the chunks of `path` (a note whose content hashes to `sha`); `chunks` empty
    /// and `sha` `None` removes the note. One transaction.
    ///
    /// Rows whose chunk is unchanged (same position, lines, heading, text and date) are kept
    /// as they are, with their vectors: appending a section to a daily note of hundreds
    /// inserts one row and touches no other. A changed chunk whose text another row of the
    /// note had keeps that row's vector, so moving sections re-embeds nothing.
    pub fn replace_file(&mut self, path: &str, sha: Option<&str>, chunks: &[Chunk]) -> Result<()> {
        let tx = self.conn.transaction()?;
        let old: Vec<(StoredChunk, Option<(Vec<u8>, String)>)> = {
            let mut stmt = tx.prepare(
                "SELECT id, ord, line_start, line_end, heading, text, ts, vec, model FROM chunks WHERE path = ?1 ORDER BY ord",
            )?;
            let rows = stmt.query_map([path], |r| {
                let vec: Option<Vec<u8>> = r.get(7)?;
                let model: Option<String> = r.get(8)?;
                Ok((
                    StoredChunk {
                        id: r.get(0)?,
                        chunk: Chunk {
                            path: path.to_string(),
                            ord: r.get(1)?,
                            line_start: r.get(2)?,
                            line_end: r.get(3)?,
                            heading: r.get(4)?,
                            text: r.get(5)?,
                            ts: r.get(6)?,
                        },
                    },
                    vec.zip(model),
                ))
            })?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let by_ord: std::collections::HashMap<u32, usize> = old
            .iter()
            .enumerate()
            .map(|(i, (c, _))| (c.chunk.ord, i))
            .collect();
        let unchanged = |c: &Chunk| by_ord.get(&c.ord).is_some_and(|&i| old[i].0.chunk == *c);
        let keep: std::collections::HashSet<u32> = chunks
            .iter()
            .filter(|c| unchanged(c))
            .map(|c| c.ord)
            .collect();
        let mut gone = Vec::new();
        let mut by_text: std::collections::HashMap<&str, &(Vec<u8>, String)> =
            std::collections::HashMap::new();
        for (c, v) in &old {
            if keep.contains(&c.chunk.ord) {
                continue;
            }
            tx.execute("DELETE FROM chunks_fts WHERE rowid = ?1", [c.id])?;
            tx.execute("DELETE FROM chunks WHERE id = ?1", [c.id])?;
            if let Some(v) = v {
                gone.push(c.id);
                by_text.insert(&c.chunk.text, v);
            }
        }
        let mut reused = Vec::new();
        for c in chunks.iter().filter(|c| !keep.contains(&c.ord)) {
            let (vec, model) = match by_text.get(c.text.as_str()) {
                Some((v, m)) => (Some(v.clone()), Some(m.clone())),
                None => (None, None),
            };
            tx.execute(
                "INSERT INTO chunks(path, ord, line_start, line_end, heading, text, ts, vec, model) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                params![c.path, c.ord, c.line_start, c.line_end, c.heading, c.text, c.ts, vec, model],
            )?;
            let id = tx.last_insert_rowid();
            tx.execute(
                "INSERT INTO chunks_fts(rowid, text) VALUES (?1, ?2)",
                params![id, c.enriched()],
            )?;
            if let Some(v) = vec {
                reused.push((id, c.ts, v));
            }
        }
        match sha {
            Some(sha) => tx.execute("INSERT OR REPLACE INTO files VALUES (?1, ?2)", [path, sha])?,
            None => tx.execute("DELETE FROM files WHERE path = ?1", [path])?,
        };
        tx.commit()?;
        for id in gone {
            self.vectors.remove(id);
        }
        for (id, ts, blob) in reused {
            self.vectors
                .insert(id, ts, &f32s(&blob).collect::<Vec<_>>());
        }
        Ok(())
    }

    /// The date of each chunk text of `path` (for sections whose date is when they were
    /// first seen).
    pub fn dates_by_text(&self, path: &str) -> Result<HashMap<String, i64>> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT text, ts FROM chunks WHERE path = ?1")?;
        let rows = stmt.query_map([path], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// Chunks that have no vector of the current model yet (at most `limit`), for embedding.
    pub fn pending(&self, limit: usize) -> Result<Vec<StoredChunk>> {
        self.select(
            "WHERE vec IS NULL ORDER BY id LIMIT ?1",
            params![limit as i64],
        )
    }

    /// Number of chunks without a vector.
    pub fn pending_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM chunks WHERE vec IS NULL", [], |r| {
                r.get(0)
            })?)
    }

    /// Number of chunks.
    pub fn chunk_count(&self) -> Result<u64> {
        Ok(self
            .conn
            .query_row("SELECT count(*) FROM chunks", [], |r| r.get(0))?)
    }

    /// Store vectors made by `model` for the chunks `ids` (same order). Ids deleted in the
    /// meantime are skipped.
    pub fn set_vectors(&mut self, model: &str, ids: &[i64], vecs: &[Vec<f32>]) -> Result<()> {
        let tx = self.conn.transaction()?;
        let mut added = Vec::new();
        for (id, v) in ids.iter().zip(vecs) {
            let blob: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
            let ts: Option<i64> = tx
                .query_row(
                    "UPDATE chunks SET vec = ?1, model = ?2 WHERE id = ?3 RETURNING ts",
                    params![blob, model, id],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(ts) = ts {
                added.push((*id, ts, v));
            }
        }
        tx.commit()?;
        for (id, ts, v) in added {
            self.vectors.insert(id, ts, v);
        }
        Ok(())
    }

    /// Chunks by row id (missing ids are left out).
    pub fn get(&self, ids: &[i64]) -> Result<Vec<StoredChunk>> {
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            out.extend(self.select("WHERE id = ?1", params![id])?);
        }
        Ok(out)
    }

    fn select(&self, tail: &str, p: impl rusqlite::Params) -> Result<Vec<StoredChunk>> {
        let sql = format!(
            "SELECT id, path, ord, line_start, line_end, heading, text, ts FROM chunks {tail}"
        );
        let mut stmt = self.conn.prepare_cached(&sql)?;
        let rows = stmt.query_map(p, |r| {
            Ok(StoredChunk {
                id: r.get(0)?,
                chunk: Chunk {
                    path: r.get(1)?,
                    ord: r.get(2)?,
                    line_start: r.get(3)?,
                    line_end: r.get(4)?,
                    heading: r.get(5)?,
                    text: r.get(6)?,
                    ts: r.get(7)?,
                },
            })
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// BM25 ranking: the chunks matching any of `terms` within `[since, until]`, best first,
    /// at most `limit`, each as (row id, how many of the distinct `terms` it contains, after
    /// the tokenizer's stemming).
    ///
    /// # Errors
    /// SQLite errors.
    pub fn bm25(
        &self,
        terms: &[String],
        since: i64,
        until: i64,
        limit: usize,
    ) -> Result<Vec<(i64, usize)>> {
        if terms.is_empty() {
            return Ok(Vec::new());
        }
        let quoted: Vec<String> = terms
            .iter()
            .map(|t| format!("\"{}\"", t.replace('"', "")))
            .collect();
        let mut stmt = self.conn.prepare_cached(
            "SELECT f.rowid FROM chunks_fts f JOIN chunks c ON c.id = f.rowid
             WHERE chunks_fts MATCH ?1 AND c.ts BETWEEN ?2 AND ?3
             ORDER BY bm25(chunks_fts), c.path, c.ord LIMIT ?4",
        )?;
        let ids: Vec<i64> = stmt
            .query_map(
                params![quoted.join(" OR "), since, until, limit as i64],
                |r| r.get(0),
            )?
            .collect::<rusqlite::Result<_>>()?;
        // Which candidates hold each term: one lookup per term, limited to the candidates.
        let mut matched: HashMap<i64, usize> = ids.iter().map(|&id| (id, 0)).collect();
        if terms.len() > 1 {
            let list = serde_json::to_string(&ids).unwrap_or_default();
            let mut per_term = self.conn.prepare_cached(
                "SELECT rowid FROM chunks_fts WHERE chunks_fts MATCH ?1
                 AND rowid IN (SELECT value FROM json_each(?2))",
            )?;
            for q in &quoted {
                for id in per_term.query_map(params![q, list], |r| r.get::<_, i64>(0))? {
                    *matched.entry(id?).or_default() += 1;
                }
            }
        } else {
            matched.values_mut().for_each(|n| *n = 1);
        }
        Ok(ids.into_iter().map(|id| (id, matched[&id])).collect())
    }

    /// Remove every row (notes are untouched); the next sync fills the index again.
    pub fn clear(&mut self) -> Result<()> {
        self.conn.execute_batch(
            "BEGIN; DELETE FROM chunks_fts; DELETE FROM chunks; DELETE FROM files; COMMIT;",
        )?;
        self.vectors = Vectors::default();
        Ok(())
    }

    /// The index file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Count SQLite's virtual-machine instructions from now on (every statement of this
    /// connection, FTS5's own included), for [`Index::work`].
    pub fn count_work(&mut self) {
        let steps = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let s = steps.clone();
        self.conn.progress_handler(
            1,
            Some(move || {
                s.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                false
            }),
        );
        self.steps = Some(steps);
    }

    /// The work done so far (SQLite instructions once [`Index::count_work`] was called).
    pub fn work(&self) -> Work {
        Work {
            sql_steps: self
                .steps
                .as_ref()
                .map_or(0, |s| s.load(std::sync::atomic::Ordering::Relaxed)),
            vector_rows: self.vectors.touched,
        }
    }
}

/// The f32s of a little-endian vector blob.
fn f32s(blob: &[u8]) -> impl Iterator<Item = f32> + '_ {
    blob.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(ord: u32, text: &str) -> Chunk {
        Chunk {
            path: "MEMORY.md".into(),
            ord,
            line_start: ord + 1,
            line_end: ord + 1,
            heading: String::new(),
            text: text.into(),
            ts: 0,
        }
    }

    /// The in-memory vector of each row is the one stored for that row's text, after edits
    /// that delete rows and insert new ones (SQLite reuses the highest row ids).
    #[test]
    fn vectors_follow_their_rows_when_ids_are_reused() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut idx = Index::open(&tmp.path().join("i.sqlite"), Some("m")).expect("open");
        let vec_of = |t: &str| -> Vec<f32> {
            match t {
                "a" => vec![1.0, 0.0],
                "b" => vec![0.0, 1.0],
                _ => vec![0.6, 0.8],
            }
        };
        idx.replace_file("MEMORY.md", Some("1"), &[chunk(0, "a"), chunk(1, "b")])
            .expect("replace");
        let p = idx.pending(10).expect("pending");
        let vecs: Vec<Vec<f32>> = p.iter().map(|c| vec_of(&c.chunk.text)).collect();
        idx.set_vectors("m", &p.iter().map(|c| c.id).collect::<Vec<_>>(), &vecs)
            .expect("set");
        // A section inserted in front: both old sections move, the last row ids are reused.
        idx.replace_file(
            "MEMORY.md",
            Some("2"),
            &[chunk(0, "x"), chunk(1, "a"), chunk(2, "b")],
        )
        .expect("replace");
        let p = idx.pending(10).expect("pending");
        assert_eq!(
            p.iter().map(|c| c.chunk.text.as_str()).collect::<Vec<_>>(),
            ["x"]
        );
        let v = &idx.vectors;
        assert_eq!(v.len(), 2);
        for (i, id) in v.ids.iter().enumerate() {
            let text = idx.get(&[*id]).expect("get")[0].chunk.text.clone();
            assert_eq!(v.row(i), vec_of(&text).as_slice(), "row {id} ({text})");
        }
    }
}
