//! The [`Ledger`] handle: opening, appending through the writer thread, and reading.

use crate::validate::validate_event;
use crate::writer::{self, Job, Reply, Request};
use crate::{query, schema, Event, LedgerError, NewEvent, Query, GENESIS_HASH};
use rusqlite::OptionalExtension;
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};

/// Idle read connections kept for reuse.
const MAX_IDLE_READERS: usize = 4;

/// Size and tip of the chain, from [`Ledger::head`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Head {
    /// Number of stored events.
    pub events: u64,
    /// Id of the last event (0 when empty).
    pub last_id: i64,
    /// Hash of the last event (genesis zeros when empty).
    pub last_hash: String,
}

/// Group-commit counters from [`Ledger::stats`]: `events / transactions` is the mean batch size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WriterStats {
    /// Committed transactions (batches, plus single-event retries after a rolled-back batch).
    pub transactions: u64,
    /// Events returned by those transactions (dedup hits included).
    pub events: u64,
}

/// How [`Ledger::open_with`] opens a ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenOptions {
    /// Extend the Merkle tree with every append (default `true`). Off only for benchmarks that
    /// measure its cost: the tree then lags, proofs and checkpoints cover only what it holds,
    /// and the next open with the tree on catches it up.
    pub merkle_tree: bool,
    /// How long one full-text search may run before SQLite interrupts it (default
    /// [`crate::SEARCH_BUDGET`]); lowered only by tests that show the interrupt.
    pub search_budget: std::time::Duration,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            merkle_tree: true,
            search_budget: query::SEARCH_BUDGET,
        }
    }
}

/// A handle to an open ledger. Cheap to clone; all clones share one writer thread.
///
/// The writer thread stops and the database is closed when the last clone is dropped.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    tx: Option<mpsc::Sender<Job>>,
    writer: Option<std::thread::JoinHandle<()>>,
    readers: Mutex<Vec<Connection>>,
    counters: Arc<writer::Counters>,
    search_budget: std::time::Duration,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop after the batch in hand; joining makes sure
        // the write connection is closed before a caller reopens the same file.
        self.tx.take();
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                tracing::error!("ledger writer thread panicked");
            }
        }
    }
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("path", &self.inner.path)
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Opens (creating if needed) the ledger at `path`, creates the schema and starts the writer.
    ///
    /// # Errors
    /// [`LedgerError::Io`] if the parent directory cannot be created, [`LedgerError::Sqlite`] if
    /// the file cannot be opened or is not a database, [`LedgerError::Malformed`] for a schema
    /// from a newer version or a filesystem without WAL support.
    pub fn open(path: &Path) -> Result<Ledger, LedgerError> {
        Ledger::open_with(path, OpenOptions::default())
    }

    /// [`Ledger::open`] with options. With the tree on (the default), events the stored tree
    /// does not cover yet (a ledger from before the tree) are added to it before this returns.
    ///
    /// # Errors
    /// As [`Ledger::open`].
    pub fn open_with(path: &Path, options: OpenOptions) -> Result<Ledger, LedgerError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|source| LedgerError::Io {
                context: format!("creating ledger directory {}", parent.display()),
                source,
            })?;
        }
        let mut conn = Connection::open(path)?;
        schema::configure(&conn)?;
        schema::create(&conn)?;
        if options.merkle_tree {
            crate::tree::catch_up(&mut conn)?;
        }
        let counters = Arc::new(writer::Counters {
            tree: options.merkle_tree,
            ..writer::Counters::default()
        });
        let (tx, handle) = writer::spawn(conn, Arc::clone(&counters))?;
        Ok(Ledger {
            inner: Arc::new(Inner {
                path: path.to_owned(),
                tx: Some(tx),
                writer: Some(handle),
                readers: Mutex::new(Vec::new()),
                counters,
                search_budget: options.search_budget,
            }),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Appends an event and returns it as stored, once the transaction holding it is durable.
    ///
    /// With a dedup key already seen, returns the earlier event and writes nothing. Dropping the
    /// future after the event was queued does not withdraw it: it is still committed.
    ///
    /// # Errors
    /// [`LedgerError::InvalidLabel`], [`LedgerError::InvalidPayload`] or
    /// [`LedgerError::InvalidDedup`] for bad input (nothing written); [`LedgerError::WriteFailed`]
    /// if the transaction was rolled back; [`LedgerError::Closed`] if the writer has stopped.
    pub async fn append(&self, ev: NewEvent) -> Result<Event, LedgerError> {
        validate_event(&ev)?;
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Request {
            event: ev,
            reply: Reply::Async(tx),
        })?;
        rx.await.map_err(|_| LedgerError::Closed)?
    }

    /// Like [`Ledger::append`], blocking the calling thread. Do not call it from async code.
    ///
    /// # Errors
    /// As [`Ledger::append`].
    pub fn append_blocking(&self, ev: NewEvent) -> Result<Event, LedgerError> {
        validate_event(&ev)?;
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(Request {
            event: ev,
            reply: Reply::Blocking(tx),
        })?;
        rx.recv().map_err(|_| LedgerError::Closed)?
    }

    fn submit(&self, req: Request) -> Result<(), LedgerError> {
        let tx = self.inner.tx.as_ref().ok_or(LedgerError::Closed)?;
        tx.send(Job::Append(req)).map_err(|_| LedgerError::Closed)
    }

    /// Wait until the full-text index covers every committed event.
    fn flush_index(&self) -> Result<(), LedgerError> {
        let tx = self.inner.tx.as_ref().ok_or(LedgerError::Closed)?;
        let (reply, done) = mpsc::sync_channel(1);
        tx.send(Job::Index(reply))
            .map_err(|_| LedgerError::Closed)?;
        done.recv().map_err(|_| LedgerError::Closed)?
    }

    /// Events matching `q`, ordered by id (ascending unless `q.descending`).
    ///
    /// # Errors
    /// [`LedgerError::InvalidQuery`] for a bad limit or `since`; [`LedgerError::Sqlite`] on read
    /// failure.
    pub fn query(&self, q: &Query) -> Result<Vec<Event>, LedgerError> {
        let (sql, params) = query::build(q)?;
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let rows = stmt.query_map(rusqlite::params_from_iter(params), schema::row_to_event)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
    }

    /// Full-text search over payloads: every word of `text` must occur (a word ending in `*` is a
    /// prefix). Newest first, at most `limit` (1..=10 000) events.
    ///
    /// # Errors
    /// [`LedgerError::InvalidQuery`] for empty text or a bad limit; [`LedgerError::Sqlite`] on
    /// read failure.
    pub fn search(&self, text: &str, limit: usize) -> Result<Vec<Event>, LedgerError> {
        self.search_before(text, limit, None)
    }

    /// [`Ledger::search`] restricted to events with `id < before_id` (the next page of a
    /// newest-first search is `before_id` = the last id of the previous one).
    ///
    /// # Errors
    /// As [`Ledger::search`].
    pub fn search_before(
        &self,
        text: &str,
        limit: usize,
        before_id: Option<i64>,
    ) -> Result<Vec<Event>, LedgerError> {
        let fts = query::fts_expression(text)?;
        let limit = query::check_limit(limit)?;
        self.flush_index()?;
        let sql = "SELECT e.id, e.ts, e.type, e.actor, e.payload, e.prev_hash, e.hash \
                   FROM events_fts JOIN events e ON e.id = events_fts.rowid \
                   WHERE events_fts MATCH ?1 AND events_fts.rowid < ?3 ORDER BY e.id DESC LIMIT ?2";
        let before = before_id.unwrap_or(i64::MAX);
        let budget = self.inner.search_budget;
        self.with_reader(|conn| {
            // A watchdog interrupts the statement once the budget is spent; the search ending
            // first tells it to stop waiting.
            let interrupt = conn.get_interrupt_handle();
            let (done, finished) = mpsc::channel::<()>();
            let watchdog = std::thread::spawn(move || {
                if let Err(mpsc::RecvTimeoutError::Timeout) =
                    finished.recv_timeout(budget)
                {
                    interrupt.interrupt();
                }
            });
            let found = (|| {
                let mut stmt = conn.prepare_cached(sql)?;
                let rows = stmt.query_map((fts, limit, before), schema::row_to_event)?;
                rows.collect::<Result<Vec<_>, _>>()
            })();
            drop(done);
            let _ = watchdog.join();
            match found {
                Ok(events) => Ok(events),
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::OperationInterrupted =>
                {
                    let took = if budget.as_secs() > 0 {
                        format!("{} s", budget.as_secs())
                    } else {
                        format!("{} ms", budget.as_millis())
                    };
                    Err(LedgerError::InvalidQuery(format!(
                        "the search ran longer than {took} and was stopped; search for fewer or longer words"
                    )))
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    /// The event with this id, if any.
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`] on read failure.
    pub fn get(&self, id: i64) -> Result<Option<Event>, LedgerError> {
        self.with_reader(|conn| Ok(schema::get_event(conn, id)?))
    }

    /// The event the dedup key `(stream, seq)` belongs to, if any: a writer that journals its
    /// key before appending learns after a crash whether the append happened, without
    /// appending again (a retry with other bytes would be recorded as a new event).
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`] on read failure.
    pub fn dedup_event(&self, stream: &str, seq: u64) -> Result<Option<Event>, LedgerError> {
        // A seq above i64::MAX is refused at append, so no event holds it.
        let Ok(seq) = i64::try_from(seq) else {
            return Ok(None);
        };
        self.with_reader(|conn| {
            let id: Option<i64> = conn
                .prepare_cached("SELECT event_id FROM dedup WHERE stream = ?1 AND seq = ?2")?
                .query_row((stream, seq), |r| r.get(0))
                .optional()?;
            Ok(match id {
                Some(id) => schema::get_event(conn, id)?,
                None => None,
            })
        })
    }

    /// Writes a consistent copy of the whole ledger to `dest` (a new file) with SQLite's online
    /// backup API, while appends continue; see [`sqlite_snapshot`].
    ///
    /// # Errors
    /// As [`sqlite_snapshot`].
    pub fn snapshot_to(&self, dest: &Path) -> Result<(), LedgerError> {
        crate::restore::sqlite_snapshot(&self.inner.path, dest)
    }

    /// Replaces the whole ledger with the ledger file `src` (a backup being restored) in one
    /// transaction of the writer, so readers and a crash see either the old or the new ledger.
    /// Appends queued before are committed first and replaced too; the next append continues
    /// `src`'s chain. Blocks the calling thread.
    ///
    /// # Errors
    /// [`LedgerError::Malformed`] when `src` is not a ledger of this schema version or an
    /// older one with the Merkle tree (version 3, upgraded after the copy) (nothing changed); [`LedgerError::Sqlite`] when the copy fails (rolled back);
    /// [`LedgerError::Closed`] when the writer has stopped.
    pub fn restore_from(&self, src: &Path) -> Result<(), LedgerError> {
        self.restore_job(crate::writer::RestoreJob {
            src: src.to_owned(),
            keep: None,
            done: None,
        })
    }

    /// [`Ledger::restore_from`], keeping the replaced ledger first as the new file `keep` (a
    /// self-contained snapshot) in the same step of the writer: no append is committed between
    /// the copy and the replacement (appends wait meanwhile), so every acknowledged event is in
    /// `keep` or in the restored ledger. `keep` is written once (a rerun after a crash finds
    /// it); `done` is created once the replacement is committed, and when it exists the call
    /// does nothing (so a rerun never replaces again what was appended since).
    ///
    /// # Errors
    /// As [`Ledger::restore_from`]; [`LedgerError::Io`] when `keep` or `done` cannot be written
    /// (with `keep`: nothing was replaced).
    pub fn restore_keeping(&self, src: &Path, keep: &Path, done: &Path) -> Result<(), LedgerError> {
        self.restore_job(crate::writer::RestoreJob {
            src: src.to_owned(),
            keep: Some(keep.to_owned()),
            done: Some(done.to_owned()),
        })
    }

    fn restore_job(&self, job: crate::writer::RestoreJob) -> Result<(), LedgerError> {
        let tx = self.inner.tx.as_ref().ok_or(LedgerError::Closed)?;
        let (reply, done) = mpsc::sync_channel(1);
        tx.send(Job::Restore(job, reply))
            .map_err(|_| LedgerError::Closed)?;
        done.recv().map_err(|_| LedgerError::Closed)?
    }

    /// Calls `f` with the number of events of every transaction the writer commits from now on
    /// (for metrics). Only the first observer set is kept; returns whether this one was.
    pub fn on_commit(&self, f: impl Fn(usize) + Send + Sync + 'static) -> bool {
        self.inner.counters.observer.set(Box::new(f)).is_ok()
    }

    /// What the writer has committed since this ledger was opened.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            transactions: self.inner.counters.transactions.load(Ordering::Relaxed),
            events: self.inner.counters.events.load(Ordering::Relaxed),
        }
    }

    /// Size and tip of the chain.
    ///
    /// # Errors
    /// [`LedgerError::Sqlite`] on read failure.
    pub fn head(&self) -> Result<Head, LedgerError> {
        self.with_reader(|conn| {
            let events: i64 = conn.query_row("SELECT count(*) FROM events", [], |r| r.get(0))?;
            let last: Option<(i64, String)> = conn
                .query_row(
                    "SELECT id, hash FROM events ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            let (last_id, last_hash) = last.unwrap_or((0, GENESIS_HASH.to_owned()));
            Ok(Head {
                events: u64::try_from(events).unwrap_or(0),
                last_id,
                last_hash,
            })
        })
    }

    /// Runs `f` on a pooled read-only connection (opened on demand).
    pub(crate) fn with_reader<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, LedgerError>,
    ) -> Result<T, LedgerError> {
        let pooled = self.lock_readers().pop();
        let conn = match pooled {
            Some(c) => c,
            None => {
                let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let c = Connection::open_with_flags(&self.inner.path, flags)?;
                c.busy_timeout(std::time::Duration::from_secs(10))?;
                c.pragma_update(None, "query_only", true)?;
                c
            }
        };
        let result = f(&conn);
        let mut idle = self.lock_readers();
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    fn lock_readers(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        // A panic while holding the lock cannot leave the Vec inconsistent, so poisoning is moot.
        self.inner
            .readers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
