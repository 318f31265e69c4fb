//! The group-commit writer: one thread owns the write connection and commits batches.
//!
//! Appends arrive on a channel. The writer takes everything queued (up to [`MAX_BATCH`]), writes
//! it in one `BEGIN IMMEDIATE` transaction with `synchronous=FULL`, commits, and only then answers
//! each caller, so no append is acknowledged before the transaction holding it is durable.
//! Between batches it keeps the full-text index caught up (see [`crate::index`]).

use crate::schema::{self, Tail};
use crate::{hash, index, tree, Event, LedgerError, NewEvent};
use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};

/// Most events written in one transaction.
pub(crate) const MAX_BATCH: usize = 4096;

/// Where the writer sends the outcome of one append.
pub(crate) enum Reply {
    /// An `async` caller awaiting a oneshot.
    Async(tokio::sync::oneshot::Sender<Result<Event, LedgerError>>),
    /// A blocking caller parked on a std channel.
    Blocking(mpsc::SyncSender<Result<Event, LedgerError>>),
}

impl Reply {
    fn send(self, result: Result<Event, LedgerError>) {
        // A caller that gave up waiting (dropped future) simply does not get the answer; the
        // event is committed either way.
        match self {
            Reply::Async(tx) => {
                let _ = tx.send(result);
            }
            Reply::Blocking(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

/// A function told the number of events of every committed transaction.
pub(crate) type CommitObserver = Box<dyn Fn(usize) + Send + Sync>;

/// Counters kept by the writer, readable through [`crate::Ledger::stats`].
#[derive(Default)]
pub(crate) struct Counters {
    /// Whether appends extend the Merkle tree (see [`crate::OpenOptions::merkle_tree`]).
    pub tree: bool,
    pub transactions: AtomicU64,
    pub events: AtomicU64,
    pub observer: std::sync::OnceLock<CommitObserver>,
}

impl Counters {
    fn committed(&self, events: usize) {
        self.transactions.fetch_add(1, Ordering::Relaxed);
        self.events.fetch_add(events as u64, Ordering::Relaxed);
        if let Some(f) = self.observer.get() {
            f(events);
        }
    }
}

/// One queued append.
pub(crate) struct Request {
    pub event: NewEvent,
    pub reply: Reply,
}

/// Work for the writer thread.
pub(crate) enum Job {
    /// Append one event.
    Append(Request),
    /// Bring the full-text index up to date, then answer (sent before each search).
    Index(mpsc::SyncSender<Result<(), LedgerError>>),
    /// Replace the whole database with a copy of another ledger file (a backup being restored).
    Restore(RestoreJob, mpsc::SyncSender<Result<(), LedgerError>>),
}

/// A restore as the writer runs it, in one step between two batches of appends.
pub(crate) struct RestoreJob {
    /// The ledger file to restore.
    pub src: std::path::PathBuf,
    /// Where to keep the replaced ledger first (skipped when the file exists: a rerun).
    pub keep: Option<std::path::PathBuf>,
    /// Created once the replacement is committed; when it exists, the job does nothing (a
    /// rerun after a crash must not replace again what was appended since).
    pub done: Option<std::path::PathBuf>,
}

/// Starts the writer thread on an already configured connection whose schema exists.
pub(crate) fn spawn(
    conn: Connection,
    counters: Arc<Counters>,
) -> Result<(mpsc::Sender<Job>, std::thread::JoinHandle<()>), LedgerError> {
    let tail = schema::load_tail(&conn)?;
    let (tx, rx) = mpsc::channel::<Job>();
    let handle = std::thread::Builder::new()
        .name("ledger-writer".into())
        .spawn(move || run(conn, tail, rx, &counters))
        .map_err(|source| LedgerError::Io {
            context: "starting the ledger writer thread".into(),
            source,
        })?;
    Ok((tx, handle))
}

fn run(mut conn: Connection, mut tail: Tail, rx: mpsc::Receiver<Job>, counters: &Counters) {
    let mut batch = Vec::with_capacity(64);
    let mut searchers = Vec::new();
    let mut restores = Vec::new();
    let mut indexed = index::indexed_upto(&conn).unwrap_or(0);
    loop {
        // Wait for work; with an index backlog, wait only briefly, then index while idle.
        let backlog = tail.next_id - 1 > indexed;
        let first = if backlog {
            match rx.recv_timeout(index::IDLE) {
                Ok(job) => Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            // recv() fails once every Ledger handle is dropped: the thread ends, closing the DB.
            match rx.recv() {
                Ok(job) => Some(job),
                Err(_) => break,
            }
        };
        let idle = first.is_none();
        let mut next = first;
        while let Some(job) = next.take() {
            match job {
                Job::Append(req) => batch.push(req),
                Job::Index(reply) => searchers.push(reply),
                Job::Restore(job, reply) => restores.push((job, reply)),
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            commit_batch(&mut conn, &mut tail, &mut batch, counters);
        }
        // Appends queued before a restore are committed first (and replaced by it).
        for (job, reply) in restores.drain(..) {
            if job.done.as_deref().is_some_and(std::path::Path::exists) {
                let _ = reply.send(Ok(()));
                continue;
            }
            // No append is committed between keeping the replaced ledger and replacing it:
            // this thread is the only writer, and appends wait in the channel meanwhile.
            let mut result = match &job.keep {
                Some(keep) if !keep.exists() => crate::restore::keep_copy(&conn, keep),
                _ => Ok(()),
            };
            if result.is_ok() {
                result = crate::restore::replace_with(&mut conn, &job.src);
            }
            if result.is_ok() && counters.tree {
                // A restored ledger whose tree lags its events (written with the tree off, or
                // upgraded from a damaged one) is covered before the next append extends it.
                result = tree::catch_up(&mut conn)
                    .map(|_| ())
                    .map_err(LedgerError::from);
            }
            match schema::load_tail(&conn) {
                Ok(fresh) => tail = fresh,
                Err(e) => tracing::error!(error = %e, "reloading the ledger tail after a restore"),
            }
            indexed = index::indexed_upto(&conn).unwrap_or(0);
            if let (Ok(()), Some(done)) = (&result, &job.done) {
                result = crate::restore::mark_done(done);
            }
            let _ = reply.send(result);
        }
        let last_id = tail.next_id - 1;
        if idle || !searchers.is_empty() || last_id - indexed >= index::MAX_LAG {
            let result = index::catch_up(&mut conn, indexed, last_id);
            match &result {
                Ok(upto) => indexed = *upto,
                Err(e) => tracing::error!(error = %e, "full-text indexing failed; will retry"),
            }
            for reply in searchers.drain(..) {
                let _ = reply.send(
                    result
                        .as_ref()
                        .map(|_| ())
                        .map_err(|e| LedgerError::WriteFailed(format!("indexing: {e}"))),
                );
            }
            if result.is_err() && idle {
                // Do not spin on a persistent failure.
                std::thread::sleep(index::IDLE);
            }
        }
    }
    // Leave a complete index behind on a clean shutdown.
    let _ = index::catch_up(&mut conn, indexed, tail.next_id - 1);
}

fn commit_batch(
    conn: &mut Connection,
    tail: &mut Tail,
    batch: &mut Vec<Request>,
    counters: &Counters,
) {
    {
        let events: Vec<&NewEvent> = batch.iter().map(|r| &r.event).collect();
        match write_batch(conn, tail, &events, counters.tree) {
            Ok(written) => {
                counters.committed(written.len());
                for (req, ev) in batch.drain(..).zip(written) {
                    req.reply.send(Ok(ev));
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, events = batch.len(), "ledger batch rolled back");
                // Retry one by one so that a single event SQLite refuses cannot fail the others.
                let single = batch.len() == 1;
                for req in batch.drain(..) {
                    let result = if single {
                        Err(LedgerError::WriteFailed(e.to_string()))
                    } else {
                        write_batch(conn, tail, &[&req.event], counters.tree)
                            .map_err(|e| LedgerError::WriteFailed(e.to_string()))
                            .and_then(|mut v| v.pop().ok_or(LedgerError::Closed))
                    };
                    if result.is_ok() {
                        counters.committed(1);
                    }
                    req.reply.send(result);
                }
            }
        }
    }
}

/// Writes `events` in one transaction and returns them as stored (or the earlier event for a
/// dedup hit). On error nothing is written and `tail` is reloaded from the database.
pub(crate) fn write_batch(
    conn: &mut Connection,
    tail: &mut Tail,
    events: &[&NewEvent],
    tree: bool,
) -> rusqlite::Result<Vec<Event>> {
    match try_write_batch(conn, tail, events, tree) {
        Ok((written, new_tail)) => {
            *tail = new_tail;
            Ok(written)
        }
        Err(e) => {
            if let Ok(fresh) = schema::load_tail(conn) {
                *tail = fresh;
            }
            Err(e)
        }
    }
}

fn try_write_batch(
    conn: &mut Connection,
    tail: &Tail,
    events: &[&NewEvent],
    tree: bool,
) -> rusqlite::Result<(Vec<Event>, Tail)> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have appended since our last commit; then continue from its tail.
    let mut next = if schema::allocated_id(&tx)? == tail.next_id - 1 {
        tail.clone()
    } else {
        let mut fresh = schema::load_tail(&tx)?;
        if tree {
            // The other process may have appended with the tree off: cover its events first.
            tree::extend(&tx, &mut fresh.tree, i64::MAX)?;
        }
        fresh
    };
    let mut out = Vec::with_capacity(events.len());
    {
        let mut find_dedup =
            tx.prepare_cached("SELECT event_id FROM dedup WHERE stream = ?1 AND seq = ?2")?;
        let mut insert_event = tx.prepare_cached(
            "INSERT INTO events (id, ts, type, actor, payload, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        let mut insert_dedup = tx.prepare_cached(
            "INSERT OR REPLACE INTO dedup (stream, seq, event_id) VALUES (?1, ?2, ?3)",
        )?;
        for ev in events {
            let dedup = match &ev.dedup {
                Some(d) => {
                    // validate_event guarantees seq fits; saturate rather than panic regardless.
                    let seq = i64::try_from(d.seq).unwrap_or(i64::MAX);
                    let existing: Option<i64> = find_dedup
                        .query_row((&d.stream, seq), |r| r.get(0))
                        .optional()?;
                    if let Some(id) = existing {
                        match schema::get_event(&tx, id)? {
                            // A retry sends the same bytes: only then is it the same event.
                            Some(e) if e.kind == ev.kind && e.payload == ev.payload => {
                                out.push(e);
                                continue;
                            }
                            // Same key, other content: a collision or a replay by someone
                            // else. Recording it anew loses nothing; the key moves to it.
                            Some(e) => tracing::warn!(
                                id,
                                stream = %d.stream,
                                seq,
                                stored_type = %e.kind,
                                "dedup key reused for a different event; recording it"
                            ),
                            // The dedup row points at a missing event (tampering): record anew.
                            None => tracing::warn!(id, "dedup entry points at a missing event"),
                        }
                    }
                    Some((&d.stream, seq))
                }
                None => None,
            };
            let id = next.next_id;
            let ts = hash::now_ts();
            let h = hash::event_hash(id, &ts, &ev.kind, &ev.actor, &ev.payload, &next.prev_hash);
            insert_event.execute((
                id,
                &ts,
                &ev.kind,
                &ev.actor,
                &ev.payload,
                &next.prev_hash,
                &h,
            ))?;
            if let Some((stream, seq)) = dedup {
                insert_dedup.execute((stream, seq, id))?;
            }
            if tree {
                next.tree.push(id, tree::leaf_hash(&h));
            }
            out.push(Event {
                id,
                ts,
                kind: ev.kind.clone(),
                actor: ev.actor.clone(),
                payload: ev.payload.clone(),
                prev_hash: std::mem::replace(&mut next.prev_hash, h.clone()),
                hash: h,
            });
            next.next_id = id + 1;
        }
    }
    if tree {
        // The batch's tree hashes: one row per run of up to 256, usually one per batch.
        tree::store(&tx, &mut next.tree)?;
    }
    tx.commit()?;
    Ok((out, next))
}
