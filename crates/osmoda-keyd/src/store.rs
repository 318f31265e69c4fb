//! The state database (`<state_dir>/keyd.db`, SQLite): wallets with their sealed keys, the KDF
//! parameters, and the per-UTC-day spending counters. A charge and the signature it pays for
//! happen inside one `BEGIN IMMEDIATE` transaction, so concurrent requests (threads or
//! processes) can never overspend: the signature is released only after the charge commits.

use std::path::Path;
use std::sync::Mutex;

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

/// The state database.
pub struct Store {
    conn: Mutex<Connection>,
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
";

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
    /// `secure_delete` (a deleted wallet's sealed key is overwritten, not left in a free page).
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
        Ok(Store {
            conn: Mutex::new(conn),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (the transaction rolls back).
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
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

    /// Records a new wallet.
    ///
    /// # Errors
    /// `BadRequest` when the label is taken.
    pub fn insert(&self, w: &Wallet) -> Result<(), KeydError> {
        let conn = self.lock();
        let res = conn.execute(
            "INSERT INTO wallets (id, label, chain, address, created_at, nonce, ciphertext) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![w.id, w.label, w.chain.as_str(), w.address, w.created_at, &w.sealed.nonce[..], w.sealed.ciphertext],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::ConstraintViolation =>
            {
                Err(KeydError::BadRequest(format!(
                    "a wallet labelled {:?} exists; pick another label",
                    w.label
                )))
            }
            Err(e) => Err(e.into()),
        }
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
    pub fn delete(&self, id: &str) -> Result<(), KeydError> {
        let n = self
            .lock()
            .execute("DELETE FROM wallets WHERE id = ?1", [id])?;
        if n == 0 {
            return Err(KeydError::NotFound(format!("no wallet {id:?}")));
        }
        Ok(())
    }

    /// Spent so far on `day` under `scope`.
    ///
    /// # Errors
    /// Database errors.
    pub fn spent(&self, day: &str, scope: &str) -> Result<u128, KeydError> {
        spent_in(&self.lock(), day, scope)
    }

    /// Adds every charge to its counter for `day` and runs `sign`, all in one
    /// `BEGIN IMMEDIATE` transaction that commits only when every counter stays within its
    /// limit and `sign` succeeded. The signature leaves this function only after the commit.
    ///
    /// # Errors
    /// `Denied` (`daily_limit`) naming the counter that would pass its limit; `sign`'s error;
    /// database errors. In every error case nothing is charged.
    pub fn charge_and_sign<T>(
        &self,
        day: &str,
        charges: &[Charge],
        sign: impl FnOnce() -> Result<T, KeydError>,
    ) -> Result<T, KeydError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for c in charges {
            let cur = spent_in(&tx, day, &c.scope)?;
            let new = cur
                .checked_add(c.amount)
                .filter(|n| *n <= c.limit)
                .ok_or_else(|| KeydError::Denied {
                    reason: "daily_limit",
                    message: format!(
                        "{} would pass its daily limit: {} spent today (UTC {day}) + {} > {}",
                        c.scope, cur, c.amount, c.limit
                    ),
                })?;
            tx.execute(
                "INSERT INTO spent (day, scope, amount) VALUES (?1, ?2, ?3) ON CONFLICT (day, scope) DO UPDATE SET amount = excluded.amount",
                params![day, c.scope, new.to_string()],
            )?;
        }
        let out = sign()?;
        tx.commit()?;
        Ok(out)
    }
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
