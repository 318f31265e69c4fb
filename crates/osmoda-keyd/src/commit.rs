//! The committer thread behind [`Store::charge`](crate::store::Store::charge) and
//! [`Store::hold`](crate::store::Store::hold): the one place that judges charges against the
//! day's counters and writes them.
//!
//! It takes every message waiting, commits the charges among them in one `BEGIN IMMEDIATE`
//! transaction (each judged against the counters as the charges before it left them, plus the
//! amounts *held*), then answers the holds. A hold reserves room under the limits for an
//! operation that waits on something outside keyd (a person's approval ticket being consumed
//! by agentd): every other charge and hold counts it, so when the held operation's charge
//! arrives it fits, and a ticket is never used up by an operation that is then refused. Holds
//! live in this thread's memory only: a restart drops them with the requests they served.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::error::KeydError;
use crate::store::{queue_receipt, Charge, Receipt};

/// Most messages handled in one round (one transaction).
pub const MAX_BATCH: usize = 512;

/// What the committer is asked.
pub(crate) enum Msg {
    /// Charge and record a receipt.
    Charge(Job),
    /// Reserve room for `charges` under hold `id`.
    Hold {
        id: u64,
        day: String,
        charges: Vec<Charge>,
        reply: mpsc::SyncSender<Result<(), KeydError>>,
    },
    /// Give up hold `id` (no-op when its charge already took it).
    Release(u64),
}

/// One charge request.
pub(crate) struct Job {
    pub day: String,
    pub charges: Vec<Charge>,
    pub receipt: Option<Receipt>,
    /// The hold this charge takes the place of: its own held amounts do not count against it.
    pub hold: Option<u64>,
    pub reply: mpsc::SyncSender<Result<(), KeydError>>,
}

/// The holds in force: id → (day, charges).
#[derive(Default)]
struct Held(HashMap<u64, (String, Vec<Charge>)>);

impl Held {
    /// Held on counter `(day, scope)` by every hold but `except`.
    fn on(&self, day: &str, scope: &str, except: Option<u64>) -> u128 {
        self.0
            .iter()
            .filter(|(id, (d, _))| Some(**id) != except && d == day)
            .flat_map(|(_, (_, cs))| cs.iter().filter(|c| c.scope == scope))
            .fold(0u128, |a, c| a.saturating_add(c.amount))
    }
}

pub(crate) fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves SQLite consistent (the transaction rolls back).
    conn.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn over(c: &Charge, day: &str, spent: u128, held: u128) -> KeydError {
    let held = if held == 0 {
        String::new()
    } else {
        format!(" + {held} held for approved operations being signed")
    };
    KeydError::Denied {
        reason: "daily_limit",
        message: format!(
            "{} would pass its daily limit: {spent} spent today (UTC {day}){held} + {} > {}",
            c.scope, c.amount, c.limit
        ),
    }
}

/// The committer thread: runs until the store (the only sender) is dropped. While one round
/// is being committed the next one gathers, so the batch grows with the load.
pub(crate) fn committer(
    conn: &Mutex<Connection>,
    rx: &mpsc::Receiver<Msg>,
    committed: &tokio::sync::Notify,
    stats: &[AtomicU64; 2],
) {
    let mut held = Held::default();
    while let Ok(first) = rx.recv() {
        let mut msgs = vec![first];
        while msgs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => msgs.push(m),
                Err(_) => break,
            }
        }
        let mut batch = Vec::new();
        let mut holds = Vec::new();
        for m in msgs {
            match m {
                Msg::Charge(j) => batch.push(j),
                Msg::Release(id) => {
                    held.0.remove(&id);
                }
                Msg::Hold {
                    id,
                    day,
                    charges,
                    reply,
                } => holds.push((id, day, charges, reply)),
            }
        }
        if !batch.is_empty() {
            let results = match commit_batch(&mut lock(conn), &batch, &mut held) {
                Ok(r) => r,
                Err(e) => batch
                    .iter()
                    .map(|_| {
                        Err(KeydError::Internal(format!(
                            "the day's counters could not be committed, nothing was charged or \
                             signed: {e}"
                        )))
                    })
                    .collect(),
            };
            stats[0].fetch_add(1, Ordering::Relaxed);
            stats[1].fetch_add(batch.len() as u64, Ordering::Relaxed);
            for (job, r) in batch.into_iter().zip(results) {
                let _ = job.reply.send(r);
            }
            committed.notify_one();
        }
        // After the round's charges: a hold sees them committed.
        for (id, day, charges, reply) in holds {
            let verdict = judge_hold(&lock(conn), &held, &day, &charges);
            let ok = verdict.is_ok();
            if ok {
                held.0.insert(id, (day, charges));
            }
            if reply.send(verdict).is_err() && ok {
                held.0.remove(&id);
            }
        }
    }
}

/// Whether `charges` fit on `day` next to what is spent and held.
fn judge_hold(
    conn: &Connection,
    held: &Held,
    day: &str,
    charges: &[Charge],
) -> Result<(), KeydError> {
    let mut mine: HashMap<&str, u128> = HashMap::new();
    for c in charges {
        let spent = spent_in(conn, day, &c.scope)?;
        let h = held.on(day, &c.scope, None);
        let before = mine.get(c.scope.as_str()).copied().unwrap_or(0);
        let total = spent
            .checked_add(h)
            .and_then(|n| n.checked_add(before))
            .and_then(|n| n.checked_add(c.amount));
        match total {
            Some(n) if n <= c.limit => {
                mine.insert(&c.scope, before + c.amount);
            }
            _ => return Err(over(c, day, spent, h.saturating_add(before))),
        }
    }
    Ok(())
}

/// One transaction for `batch`: each job's charges are judged against the counters as the jobs
/// before it left them and what other holds keep; a job that would pass a limit is denied and
/// changes nothing. A job's own hold ends with it.
fn commit_batch(
    conn: &mut Connection,
    batch: &[Job],
    held: &mut Held,
) -> Result<Vec<Result<(), KeydError>>, KeydError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let mut counters: HashMap<(String, String), u128> = HashMap::new();
    let mut dirty: HashSet<(String, String)> = HashSet::new();
    let mut results = Vec::with_capacity(batch.len());
    for job in batch {
        let mut next: Vec<((String, String), u128)> = Vec::new();
        let mut verdict = Ok(());
        for c in &job.charges {
            let key = (job.day.clone(), c.scope.clone());
            let cur = match next.iter().rev().find(|(k, _)| *k == key) {
                Some((_, v)) => *v,
                None => match counters.get(&key) {
                    Some(v) => *v,
                    None => {
                        let v = spent_in(&tx, &job.day, &c.scope)?;
                        counters.insert(key.clone(), v);
                        v
                    }
                },
            };
            let others = held.on(&job.day, &c.scope, job.hold);
            let fits = cur
                .checked_add(c.amount)
                .filter(|n| n.checked_add(others).is_some_and(|t| t <= c.limit));
            match fits {
                Some(n) => next.push((key, n)),
                None => {
                    verdict = Err(over(c, &job.day, cur, others));
                    break;
                }
            }
        }
        if let Some(id) = job.hold {
            held.0.remove(&id);
        }
        if verdict.is_ok() {
            if let Some(r) = &job.receipt {
                queue_receipt(&tx, r)?;
            }
            for (k, v) in next {
                dirty.insert(k.clone());
                counters.insert(k, v);
            }
        }
        results.push(verdict);
    }
    for key in &dirty {
        let v = counters.get(key).copied().unwrap_or_default();
        tx.execute(
            "INSERT INTO spent (day, scope, amount) VALUES (?1, ?2, ?3) ON CONFLICT (day, scope) DO UPDATE SET amount = excluded.amount",
            params![key.0, key.1, v.to_string()],
        )?;
    }
    tx.commit()?;
    Ok(results)
}

/// Spent so far on `day` under `scope`.
pub(crate) fn spent_in(conn: &Connection, day: &str, scope: &str) -> Result<u128, KeydError> {
    let s: Option<String> = conn
        .query_row(
            "SELECT amount FROM spent WHERE day = ?1 AND scope = ?2",
            [day, scope],
            |r| r.get(0),
        )
        .optional()?;
    match s {
        None => Ok(0),
        Some(s) => s
            .parse()
            .map_err(|_| KeydError::Internal(format!("counter {scope} holds {s:?}, not a number"))),
    }
}
