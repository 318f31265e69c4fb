//! The state database (`<state_dir>/keyd.db`, SQLite): wallets with their sealed keys, the KDF
//! parameters, the per-UTC-day spending counters and the receipt outbox.
//!
//! Charges are group-committed: [`Store::charge`] hands its charges and its receipt to one
//! committer thread, which takes every charge waiting, judges them in arrival order against the
//! counters (each against the counters as the charges before it left them), and writes the
//! accepted ones and their receipts in one `BEGIN IMMEDIATE` transaction — one fsync for the
//! whole batch. `charge` returns only after that commit, and the caller releases its signature
//! only then, so a signature never leaves keyd before its charge is durable, and concurrent
//! requests (threads, or processes sharing the file) can never overspend. Receipts wait in the
//! `outbox` table, written in the same transaction as their charge, until [`crate::outbox`]
//! has delivered them to agentd.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use osmoda_config::Chain;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use crate::error::KeydError;
use crate::keys::{KdfParams, Sealed, Wallet};

/// One amount to add to a counter, with the limit it may not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    /// Counter name, e.g. `chain:ethereum:native` or `wallet:treasury:native`.
    pub scope: String,
    /// Base units to add.
    pub amount: u128,
    /// The counter may reach but not pass this.
    pub limit: u128,
}

/// A ledger receipt written with its charge (`receipt.<kind>` once delivered).
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    /// `wallet.sign`, `wallet.send`, ...
    pub kind: String,
    /// The receipt (never key material).
    pub payload: serde_json::Value,
}

/// Most charges committed in one transaction.
pub const MAX_BATCH: usize = 512;

struct Job {
    day: String,
    charges: Vec<Charge>,
    receipt: Option<Receipt>,
    reply: mpsc::SyncSender<Result<(), KeydError>>,
}

/// The state database.
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    jobs: mpsc::Sender<Job>,
    committed: Arc<tokio::sync::Notify>,
    stats: Arc<[AtomicU64; 2]>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS wallets (
    id TEXT PRIMARY KEY,
    label TEXT NOT NULL UNIQUE,
    chain TEXT NOT NULL,
    address TEXT NOT NULL,
    created_at TEXT NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS spent (
    day TEXT NOT NULL,
    scope TEXT NOT NULL,
    amount TEXT NOT NULL,
    PRIMARY KEY (day, scope)
);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox_rejected (
    id INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    why TEXT NOT NULL
);
";

/// Adds `r` to the outbox inside `tx`, its strings [`crate::agentd::bounded`].
fn queue_receipt(tx: &rusqlite::Transaction<'_>, r: &Receipt) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO outbox (kind, payload) VALUES (?1, ?2)",
        params![
            r.kind,
            crate::agentd::bounded(r.payload.clone()).to_string()
        ],
    )
    .map(drop)
}

fn chain_of(s: &str) -> Result<Chain, KeydError> {
    match s {
        "ethereum" => Ok(Chain::Ethereum),
        "solana" => Ok(Chain::Solana),
        other => Err(KeydError::Internal(format!(
            "unknown chain {other:?} in the state database"
        ))),
    }
}

fn wallet_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<(Wallet, String)> {
    let nonce: Vec<u8> = r.get(5)?;
    let chain: String = r.get(2)?;
    Ok((
        Wallet {
            id: r.get(0)?,
            label: r.get(1)?,
            chain: Chain::Ethereum,
            address: r.get(3)?,
            created_at: r.get(4)?,
            sealed: Sealed {
                nonce: nonce.try_into().unwrap_or([0; 12]),
                ciphertext: r.get(6)?,
            },
        },
        chain,
    ))
}

impl Store {
    /// Opens (creating) `<dir>/keyd.db` in WAL mode with `synchronous=FULL` and
    /// `secure_delete` (a deleted wallet's sealed key is overwritten, not left in a free page;
    /// [`Store::delete`] then checkpoints and truncates the WAL, as does opening).
    ///
    /// # Errors
    /// When the file cannot be opened or the schema applied.
    pub fn open(dir: &Path) -> Result<Store, KeydError> {
        let conn = Connection::open(dir.join("keyd.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.execute_batch(SCHEMA)?;
        // Left by a crash between a delete and its checkpoint: drop older key copies now.
        let _: i64 = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        let conn = Arc::new(Mutex::new(conn));
        let committed = Arc::new(tokio::sync::Notify::new());
        let (jobs, rx) = mpsc::channel();
        let stats = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let (c, w, n) = (
            Arc::clone(&conn),
            Arc::clone(&committed),
            Arc::clone(&stats),
        );
        // Ends when the store (the only sender) is dropped.
        std::thread::Builder::new()
            .name("keyd-committer".into())
            .spawn(move || committer(&c, &rx, &w, &n))
            .map_err(|e| KeydError::Internal(format!("cannot start the committer thread: {e}")))?;
        Ok(Store {
            conn,
            jobs,
            committed,
            stats,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        lock(&self.conn)
    }

    /// `(transactions, charges)` the committer has made since open: their ratio is the mean
    /// batch size.
    pub fn commit_stats(&self) -> (u64, u64) {
        (
            self.stats[0].load(Ordering::Relaxed),
            self.stats[1].load(Ordering::Relaxed),
        )
    }

    /// Woken after every committed batch (the outbox has new receipts).
    pub fn committed(&self) -> Arc<tokio::sync::Notify> {
        Arc::clone(&self.committed)
    }

    /// The stored KDF parameters, or `fresh` stored now (first start).
    ///
    /// # Errors
    /// Database errors; `Vault` for malformed stored parameters.
    pub fn kdf_params(&self, fresh: KdfParams) -> Result<KdfParams, KeydError> {
        let conn = self.lock();
        let found: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'kdf'", [], |r| r.get(0))
            .optional()?;
        match found {
            Some(s) => Ok(KdfParams::decode(&s)?),
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('kdf', ?1)",
                    [fresh.encode()],
                )?;
                Ok(fresh)
            }
        }
    }

    /// The `meta` value under `key`.
    ///
    /// # Errors
    /// Database errors.
    pub fn meta(&self, key: &str) -> Result<Option<String>, KeydError> {
        Ok(self
            .lock()
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets the `meta` value under `key`.
    ///
    /// # Errors
    /// Database errors.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<(), KeydError> {
        self.lock().execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES (?1, ?2)",
            [key, value],
        )?;
        Ok(())
    }

    /// Moves the write-ahead log into the database file and truncates it to zero bytes, so
    /// that pages `secure_delete` zeroed leave no older copy in `keyd.db-wal`. Returns whether
    /// the checkpoint completed (another process reading the file can hold it back).
    ///
    /// # Errors
    /// Database errors.
    pub fn checkpoint(&self) -> Result<bool, KeydError> {
        let busy: i64 = self
            .lock()
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
        if busy != 0 {
            tracing::warn!("the WAL checkpoint could not complete (another reader); a deleted key may stay in keyd.db-wal until the next one");
        }
        Ok(busy == 0)
    }

    /// Records a new wallet and its `wallet.create` receipt (in the outbox) in one
    /// transaction: a wallet never exists without its receipt.
    ///
    /// # Errors
    /// `BadRequest` when the label is taken.
    pub fn insert(&self, w: &Wallet, receipt: &Receipt) -> Result<(), KeydError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let res = tx.execute(
            "INSERT INTO wallets (id, label, chain, address, created_at, nonce, ciphertext) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![w.id, w.label, w.chain.as_str(), w.address, w.created_at, &w.sealed.nonce[..], w.sealed.ciphertext],
        );
        match res {
            Ok(_) => {}
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                return Err(KeydError::BadRequest(format!(
                    "a wallet labelled {:?} exists; pick another label",
                    w.label
                )))
            }
            Err(e) => return Err(e.into()),
        }
        queue_receipt(&tx, receipt)?;
        tx.commit()?;
        self.committed.notify_one();
        Ok(())
    }

    /// Every wallet, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub fn list(&self) -> Result<Vec<Wallet>, KeydError> {
        let conn = self.lock();
        let mut st = conn.prepare("SELECT id, label, chain, address, created_at, nonce, ciphertext FROM wallets ORDER BY created_at, id")?;
        let rows = st.query_map([], wallet_row)?;
        rows.map(|r| {
            let (mut w, chain) = r?;
            w.chain = chain_of(&chain)?;
            Ok(w)
        })
        .collect()
    }

    /// The wallet `id`.
    ///
    /// # Errors
    /// `NotFound` when there is none.
    pub fn get(&self, id: &str) -> Result<Wallet, KeydError> {
        let conn = self.lock();
        let found = conn
            .query_row(
                "SELECT id, label, chain, address, created_at, nonce, ciphertext FROM wallets WHERE id = ?1",
                [id],
                wallet_row,
            )
            .optional()?;
        let (mut w, chain) = found.ok_or_else(|| {
            KeydError::NotFound(format!(
                "no wallet {id:?}; GET /wallet/list shows the wallets"
            ))
        })?;
        w.chain = chain_of(&chain)?;
        Ok(w)
    }

    /// Deletes wallet `id` (its sealed key is overwritten by `secure_delete`).
    ///
    /// # Errors
    /// `NotFound` when there is none.
    pub fn delete(&self, id: &str, receipt: &Receipt) -> Result<(), KeydError> {
        {
            let mut conn = self.lock();
            let tx = conn.transaction()?;
            let n = tx.execute("DELETE FROM wallets WHERE id = ?1", [id])?;
            if n == 0 {
                return Err(KeydError::NotFound(format!("no wallet {id:?}")));
            }
            queue_receipt(&tx, receipt)?;
            tx.commit()?;
        }
        self.committed.notify_one();
        // The sealed key's page is zeroed in the database; this drops the WAL's older copies.
        self.checkpoint()?;
        Ok(())
    }

    /// Spent so far on `day` under `scope`.
    ///
    /// # Errors
    /// Database errors.
    pub fn spent(&self, day: &str, scope: &str) -> Result<u128, KeydError> {
        spent_in(&self.lock(), day, scope)
    }

    /// Adds every charge to its counter for `day` and records `receipt` in the outbox, durably,
    /// in the next group commit; blocks until that commit. Either every charge of the call and
    /// its receipt are committed, or none.
    ///
    /// # Errors
    /// `Denied` (`daily_limit`) naming the counter that would pass its limit (counted after
    /// every charge committed before this one, in the same batch or earlier); `Internal` when
    /// the batch could not be committed. In every error case nothing is charged.
    pub fn charge(
        &self,
        day: &str,
        charges: &[Charge],
        receipt: Option<Receipt>,
    ) -> Result<(), KeydError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job {
            day: day.to_string(),
            charges: charges.to_vec(),
            receipt,
            reply,
        };
        self.jobs
            .send(job)
            .map_err(|_| KeydError::Internal("the committer thread has stopped".into()))?;
        answer
            .recv()
            .map_err(|_| KeydError::Internal("the committer thread has stopped".into()))?
    }

    /// Up to `limit` receipts waiting in the outbox, oldest first: `(id, kind, payload)`.
    ///
    /// # Errors
    /// Database errors.
    pub fn outbox(&self, limit: usize) -> Result<Vec<(i64, String, String)>, KeydError> {
        let conn = self.lock();
        let mut st =
            conn.prepare_cached("SELECT id, kind, payload FROM outbox ORDER BY id LIMIT ?1")?;
        let rows = st.query_map([i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets delivered receipts (no fsync needed: one that comes back after a crash is
    /// delivered again and agentd deduplicates it).
    ///
    /// # Errors
    /// Database errors.
    pub fn outbox_delivered(&self, ids: &[i64]) -> Result<(), KeydError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        for id in ids {
            tx.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Moves a receipt agentd will never accept to `outbox_rejected`, with why, and queues
    /// `stand_in` (kind `wallet.rejected`, see [`crate::agentd::stand_in`]) in its place in
    /// the same transaction, so the ledger still gets an event for it.
    ///
    /// # Errors
    /// Database errors.
    pub fn outbox_reject(
        &self,
        id: i64,
        why: &str,
        stand_in: Option<&serde_json::Value>,
    ) -> Result<(), KeydError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO outbox_rejected (id, kind, payload, why) \
             SELECT id, kind, payload, ?2 FROM outbox WHERE id = ?1",
            params![id, why],
        )?;
        // Only the first of two concurrent deliveries that saw the refusal queues a stand-in.
        let moved = tx.execute("DELETE FROM outbox WHERE id = ?1", [id])?;
        if let (1, Some(p)) = (moved, stand_in) {
            tx.execute(
                "INSERT INTO outbox (kind, payload) VALUES ('wallet.rejected', ?1)",
                [p.to_string()],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// The outbox's dedup stream id (32 hex digits, made once per database): with a receipt's
    /// id it is the key agentd deduplicates deliveries by.
    ///
    /// # Errors
    /// Database errors.
    pub fn outbox_stream(&self) -> Result<String, KeydError> {
        let conn = self.lock();
        let found: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'outbox_stream'",
                [],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(s) = found {
            return Ok(s);
        }
        let mut b = [0u8; 16];
        getrandom::fill(&mut b).map_err(KeydError::internal)?;
        let s = hex::encode(b);
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('outbox_stream', ?1)",
            [&s],
        )?;
        Ok(s)
    }
}

fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
    // A panic while holding the lock leaves SQLite consistent (the transaction rolls back).
    conn.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The committer thread: takes every waiting charge (up to [`MAX_BATCH`]), commits them in one
/// transaction, answers each, wakes the outbox. While one batch is being committed the next
/// one gathers, so the batch grows with the load.
fn committer(
    conn: &Mutex<Connection>,
    rx: &mpsc::Receiver<Job>,
    committed: &tokio::sync::Notify,
    stats: &[AtomicU64; 2],
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(j) => batch.push(j),
                Err(_) => break,
            }
        }
        let results = match commit_batch(&mut lock(conn), &batch) {
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
}

/// One transaction for `batch`: each job's charges are judged against the counters as the jobs
/// before it left them; a job that would pass a limit is denied and changes nothing.
fn commit_batch(
    conn: &mut Connection,
    batch: &[Job],
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
            match cur.checked_add(c.amount).filter(|n| *n <= c.limit) {
                Some(n) => next.push((key, n)),
                None => {
                    verdict = Err(KeydError::Denied {
                        reason: "daily_limit",
                        message: format!(
                            "{} would pass its daily limit: {} spent today (UTC {}) + {} > {}",
                            c.scope, cur, job.day, c.amount, c.limit
                        ),
                    });
                    break;
                }
            }
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

fn spent_in(conn: &Connection, day: &str, scope: &str) -> Result<u128, KeydError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(scope: &str, amount: u128, limit: u128) -> Charge {
        Charge {
            scope: scope.into(),
            amount,
            limit,
        }
    }

    /// 16 threads × 50 charges race through the group commit: exactly the charges that fit
    /// are accepted, in whatever batches they met; a charge denied on one counter changes no
    /// other; every accepted charge has its receipt, and both survive a reopen.
    #[test]
    fn concurrent_charges_never_pass_a_limit_and_keep_their_receipts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let stream = store.outbox_stream().unwrap();
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let mut ok = 0;
                    for i in 0..50 {
                        // `a` allows 1000 / 7 = 142, `b` only 500 / 7 = 71: b binds.
                        let r = store.charge(
                            "2026-11-30",
                            &[charge("a", 7, 1000), charge("b", 7, 500)],
                            Some(Receipt {
                                kind: "wallet.send".into(),
                                payload: serde_json::json!({ "t": t, "i": i }),
                            }),
                        );
                        match r {
                            Ok(()) => ok += 1,
                            Err(KeydError::Denied { reason, .. }) => {
                                assert_eq!(reason, "daily_limit")
                            }
                            Err(e) => panic!("{e}"),
                        }
                    }
                    ok
                })
            })
            .collect();
        let ok: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(ok, 71);
        assert_eq!(store.spent("2026-11-30", "b").unwrap(), 497);
        assert_eq!(
            store.spent("2026-11-30", "a").unwrap(),
            497,
            "denied charges left a alone"
        );
        assert_eq!(store.outbox(1000).unwrap().len(), 71);
        // Another day has its own counters; a charge that cannot fit is denied with the counter.
        store
            .charge("2026-12-01", &[charge("b", 500, 500)], None)
            .unwrap();
        let e = store
            .charge("2026-12-01", &[charge("b", 1, 500)], None)
            .unwrap_err();
        assert!(
            e.to_string().starts_with("b would pass its daily limit"),
            "{e}"
        );
        // The same counter twice in one call counts both.
        let e = store
            .charge(
                "2026-12-02",
                &[charge("c", 6, 10), charge("c", 6, 10)],
                None,
            )
            .unwrap_err();
        assert!(matches!(e, KeydError::Denied { .. }), "{e}");
        assert_eq!(store.spent("2026-12-02", "c").unwrap(), 0);
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.spent("2026-11-30", "b").unwrap(), 497);
        let rows = store.outbox(1000).unwrap();
        assert_eq!(rows.len(), 71);
        assert_eq!(
            store.outbox_stream().unwrap(),
            stream,
            "the dedup stream is kept"
        );
        let ids: Vec<i64> = rows.iter().map(|r| r.0).take(70).collect();
        store.outbox_delivered(&ids).unwrap();
        store.outbox_reject(rows[70].0, "HTTP 400", None).unwrap();
        assert!(store.outbox(10).unwrap().is_empty());
    }
}
