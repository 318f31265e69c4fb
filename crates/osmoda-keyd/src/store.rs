//! The state database (`<state_dir>/keyd.db`, SQLite): wallets with their sealed keys, the KDF
//! parameters, the per-UTC-day spending counters and the receipt outbox.
//!
//! Charges are group-committed: [`Store::charge`] hands its charges and its receipt to one
//! committer thread, which takes every charge waiting, judges them in arrival order against the
//! counters (each against the counters as the charges before it left them), and writes the
//! accepted ones and their receipts in one `BEGIN IMMEDIATE` transaction — one fsync for the
//! whole batch. `charge` returns only after that commit, and the caller releases its signature
//! only then, so a signature never leaves keyd before its charge is durable, and concurrent
//! requests can never overspend. [`Store::hold`] reserves room under the limits for an
//! operation waiting on a person's approval ticket ([`crate::commit`]). Receipts wait in the
//! `outbox` table, written in the same transaction as their charge, until [`crate::outbox`]
//! has delivered them to agentd.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use osmoda_config::Chain;
use rusqlite::{params, Connection, OptionalExtension};

pub use crate::commit::MAX_BATCH;
use crate::commit::{committer, lock, spent_in, Job, Msg};
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

/// Room reserved under the limits by [`Store::hold`] for one operation; given up when dropped
/// unless [`Store::charge_held`] took its place.
pub struct Hold {
    id: u64,
    day: String,
    charges: Vec<Charge>,
    jobs: mpsc::Sender<Msg>,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold")
            .field("id", &self.id)
            .field("day", &self.day)
            .field("charges", &self.charges)
            .finish_non_exhaustive()
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        // A no-op when the charge already took the hold's place; fails only after shutdown.
        let _ = self.jobs.send(Msg::Release(self.id));
    }
}

/// The state database.
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    jobs: mpsc::Sender<Msg>,
    holds: AtomicU64,
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
pub(crate) fn queue_receipt(tx: &rusqlite::Transaction<'_>, r: &Receipt) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO outbox (kind, payload) VALUES (?1, ?2)",
        params![
            r.kind,
            crate::agentd::bounded(r.payload.clone()).to_string()
        ],
    )
    .map(drop)
}

/// The refusal of a create at the wallet cap.
pub fn full(held: u64, cap: u32) -> KeydError {
    KeydError::Full(format!(
        "keyd holds {held} wallets and services.osmoda.keyd.maxWallets is {cap}: no wallet was created; delete one (a person approves each deletion) or raise maxWallets"
    ))
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
            holds: AtomicU64::new(0),
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
    /// transaction: a wallet never exists without its receipt, and never beyond `cap` wallets
    /// (counted in the same transaction, under the connection's lock, so concurrent creates
    /// cannot pass it).
    ///
    /// # Errors
    /// `BadRequest` when the label is taken; `Full` when keyd already holds `cap` wallets.
    pub fn insert(&self, w: &Wallet, receipt: &Receipt, cap: u32) -> Result<(), KeydError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let held: i64 = tx.query_row("SELECT COUNT(*) FROM wallets", [], |r| r.get(0))?;
        let held = u64::try_from(held).unwrap_or_default();
        if held >= u64::from(cap) {
            return Err(full(held, cap));
        }
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

    /// How many wallets keyd holds.
    ///
    /// # Errors
    /// Database errors.
    pub fn count(&self) -> Result<u64, KeydError> {
        let conn = self.lock();
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM wallets", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or_default())
    }

    /// At most `limit` wallets with ids after `after`, in id order (a page of `/wallet/list`).
    ///
    /// # Errors
    /// Database errors.
    pub fn page(&self, after: Option<&str>, limit: u32) -> Result<Vec<Wallet>, KeydError> {
        let conn = self.lock();
        let mut st = conn.prepare_cached("SELECT id, label, chain, address, created_at, nonce, ciphertext FROM wallets WHERE id > ?1 ORDER BY id LIMIT ?2")?;
        let rows = st.query_map(params![after.unwrap_or(""), limit], wallet_row)?;
        rows.map(|r| {
            let (mut w, chain) = r?;
            w.chain = chain_of(&chain)?;
            Ok(w)
        })
        .collect()
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
        self.submit(day.to_string(), charges.to_vec(), receipt, None)
    }

    /// Reserves room for `charges` on `day`: until the returned [`Hold`] is dropped or charged,
    /// every other charge and hold counts these amounts as spent. Blocks until the committer
    /// has judged it (after the charges waiting before it).
    ///
    /// # Errors
    /// `Denied` (`daily_limit`) naming the counter, what is spent and held, when the charges
    /// do not fit; `Internal` when the committer has stopped. Nothing is reserved then.
    pub fn hold(&self, day: &str, charges: &[Charge]) -> Result<Hold, KeydError> {
        let id = self.holds.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = mpsc::sync_channel(1);
        let msg = Msg::Hold {
            id,
            day: day.to_string(),
            charges: charges.to_vec(),
            reply,
        };
        self.jobs.send(msg).map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())??;
        Ok(Hold {
            id,
            day: day.to_string(),
            charges: charges.to_vec(),
            jobs: self.jobs.clone(),
        })
    }

    /// Charges what `hold` reserved, with `receipt`, as [`Store::charge`] does; the hold's own
    /// amounts do not count against it, so it fits unless the counters were changed from
    /// outside this process.
    ///
    /// # Errors
    /// As [`Store::charge`].
    pub fn charge_held(&self, hold: Hold, receipt: Option<Receipt>) -> Result<(), KeydError> {
        let (day, charges) = (hold.day.clone(), hold.charges.clone());
        self.submit(day, charges, receipt, Some(hold.id))
    }

    fn submit(
        &self,
        day: String,
        charges: Vec<Charge>,
        receipt: Option<Receipt>,
        hold: Option<u64>,
    ) -> Result<(), KeydError> {
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Job {
            day,
            charges,
            receipt,
            hold,
            reply,
        };
        self.jobs.send(Msg::Charge(job)).map_err(|_| stopped())?;
        answer.recv().map_err(|_| stopped())?
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

fn stopped() -> KeydError {
    KeydError::Internal("the committer thread has stopped".into())
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

    /// A hold keeps its room from every other charge and hold until it is charged (where its
    /// own amounts do not count against it) or dropped; one that does not fit reserves
    /// nothing.
    #[test]
    fn holds_keep_room_until_charged_or_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let day = "2026-11-30";
        store.charge(day, &[charge("a", 300, 1000)], None).unwrap();
        let held = store.hold(day, &[charge("a", 600, 1000)]).unwrap();
        let e = store
            .charge(day, &[charge("a", 101, 1000)], None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("300 spent today (UTC 2026-11-30) + 600 held for approved operations being signed + 101 > 1000"),
            "{e}"
        );
        let e = store.hold(day, &[charge("a", 101, 1000)]).unwrap_err();
        assert!(
            matches!(
                e,
                KeydError::Denied {
                    reason: "daily_limit",
                    ..
                }
            ),
            "{e}"
        );
        store.charge(day, &[charge("a", 100, 1000)], None).unwrap();
        // Another day and another counter are not held.
        store
            .charge("2026-12-01", &[charge("a", 1000, 1000)], None)
            .unwrap();
        store.charge(day, &[charge("b", 1000, 1000)], None).unwrap();
        store
            .charge_held(
                held,
                Some(Receipt {
                    kind: "wallet.send".into(),
                    payload: serde_json::json!({ "held": true }),
                }),
            )
            .unwrap();
        assert_eq!(store.spent(day, "a").unwrap(), 1000);
        assert_eq!(store.outbox(10).unwrap().len(), 1);
        // A dropped hold gives its room back.
        let day = "2026-12-02";
        let held = store.hold(day, &[charge("a", 700, 1000)]).unwrap();
        assert!(store.charge(day, &[charge("a", 400, 1000)], None).is_err());
        drop(held);
        store.charge(day, &[charge("a", 1000, 1000)], None).unwrap();
        // The same counter twice in one hold counts both.
        let e = store
            .hold("2026-12-03", &[charge("c", 6, 10), charge("c", 6, 10)])
            .unwrap_err();
        assert!(matches!(e, KeydError::Denied { .. }), "{e}");
    }

    /// 16 threads race holds, their charges and plain charges on one counter: the limit holds,
    /// and every hold that was granted is charged.
    #[test]
    fn concurrent_holds_and_charges_never_pass_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(dir.path()).unwrap());
        let threads: Vec<_> = (0..16)
            .map(|t| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || {
                    let mut spent = 0u128;
                    for i in 0..40 {
                        let amount = 1 + (t * 40 + i) % 9;
                        let c = [charge("a", amount, 2000)];
                        if i % 2 == 0 {
                            if let Ok(h) = store.hold("d", &c) {
                                store.charge_held(h, None).unwrap();
                                spent += amount;
                            }
                        } else if store.charge("d", &c, None).is_ok() {
                            spent += amount;
                        }
                    }
                    spent
                })
            })
            .collect();
        let total: u128 = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(store.spent("d", "a").unwrap(), total);
        assert!(total <= 2000, "{total}");
        assert!(total > 1990, "the limit is reached, not held back: {total}");
    }
}
