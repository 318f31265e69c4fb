//! The state database (`<state_dir>/mesh.db`, SQLite): the identity (private keys sealed with
//! `osmoda-vault`, the same scheme as keyd's wallets, under this daemon's own secret), the
//! previous identity kept after a rotation, invites (only the SHA-256 of their secret, consumed
//! atomically) and the bounded per-peer inbox.

use std::path::Path;
use std::sync::Mutex;

use osmoda_vault::{KdfParams, Kek, Sealed};
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use serde_json::Value;

use crate::error::MeshError;
use crate::identity::Identity;

/// Format version bound into the AAD of the sealed identity.
pub const FORMAT: &str = "osmoda-mesh/v1";
/// Messages kept per peer; older ones are dropped as new ones arrive.
pub const INBOX_MAX: i64 = 1000;

/// The state database.
pub struct Store {
    conn: Mutex<Connection>,
    kek: Kek,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS identity (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at INTEGER NOT NULL,
    x25519 BLOB NOT NULL,
    nonce BLOB NOT NULL,
    ciphertext BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS invites (
    hash TEXT PRIMARY KEY,
    peer_name TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS inbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    received_at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS inbox_peer ON inbox (peer, id);
";

type Row = (i64, Vec<u8>, Vec<u8>, Vec<u8>);

/// One received message.
#[derive(Debug, Clone, Serialize)]
pub struct InboxEntry {
    /// Increasing id (page with `after`).
    pub id: i64,
    /// The peer's name.
    pub peer: String,
    /// Seconds since the epoch.
    pub received_at: i64,
    /// `text` or `json`.
    pub kind: String,
    /// The fingerprint of the identity that sent it (empty for messages kept from before
    /// senders were recorded).
    pub sender: String,
    /// The text (a string) or the payload.
    pub body: Value,
}

impl From<rusqlite::Error> for MeshError {
    fn from(e: rusqlite::Error) -> Self {
        MeshError::Internal(format!("state database: {e}"))
    }
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Store {
    /// Opens (creating) `<dir>/mesh.db` and derives the key-encryption key from `secret` with
    /// the stored (or, on first start, fresh) KDF parameters.
    ///
    /// # Errors
    /// Database errors; `Vault` for a short secret or malformed stored parameters.
    pub fn open(dir: &Path, secret: &[u8]) -> Result<Store, MeshError> {
        let conn = Connection::open(dir.join("mesh.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.execute_batch(SCHEMA)?;
        // Added later: who sent a message (a name can pass to another identity).
        let has_sender: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('inbox') WHERE name = 'sender'")?
            .exists([])?;
        if !has_sender {
            conn.execute_batch("ALTER TABLE inbox ADD COLUMN sender TEXT NOT NULL DEFAULT ''")?;
        }
        let found: Option<String> = conn
            .query_row("SELECT value FROM meta WHERE key = 'kdf'", [], |r| r.get(0))
            .optional()?;
        let kdf = match found {
            Some(s) => KdfParams::decode(&s)?,
            None => {
                let k = KdfParams::fresh()?;
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('kdf', ?1)",
                    [k.encode()],
                )?;
                k
            }
        };
        Ok(Store {
            conn: Mutex::new(conn),
            kek: Kek::derive(secret, kdf)?,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn aad(&self, id: i64) -> String {
        format!("{FORMAT}|{}|identity={id}", self.kek.kdf().encode())
    }

    fn open_row(
        &self,
        id: i64,
        x: Vec<u8>,
        nonce: Vec<u8>,
        ct: Vec<u8>,
    ) -> Result<Identity, MeshError> {
        let sealed = Sealed {
            nonce: nonce.try_into().unwrap_or([0; 12]),
            ciphertext: ct,
        };
        let plain = self.kek.open(self.aad(id).as_bytes(), &sealed).ok_or_else(|| {
            MeshError::Vault(format!(
                "identity {id} does not decrypt: mesh.db was changed or the key-encryption secret is not the one it was sealed with; restore the state dir or the secret from backup"
            ))
        })?;
        let x: [u8; 32] = x
            .try_into()
            .map_err(|_| MeshError::Vault(format!("identity {id}'s X25519 key is malformed")))?;
        Identity::from_secret_bytes(&plain, x).map_err(MeshError::Vault)
    }

    /// The current identity, created and sealed on first start.
    ///
    /// # Errors
    /// `Vault` when it does not decrypt; database errors.
    pub fn identity(&self) -> Result<Identity, MeshError> {
        let row: Option<Row> = self
            .lock()
            .query_row(
                "SELECT id, x25519, nonce, ciphertext FROM identity ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        match row {
            Some((id, x, n, c)) => self.open_row(id, x, n, c),
            None => self.rotate(),
        }
    }

    /// Makes, seals and stores a new identity, which becomes the current one (the previous rows
    /// stay, so a hand-over can still be explained after a restart).
    ///
    /// # Errors
    /// Database errors; `Internal` without randomness.
    pub fn rotate(&self) -> Result<Identity, MeshError> {
        let id = Identity::generate().map_err(MeshError::Internal)?;
        let conn = self.lock();
        let tx = conn.unchecked_transaction()?;
        tx.execute(
            "INSERT INTO identity (created_at, x25519, nonce, ciphertext) VALUES (?1, ?2, x'', x'')",
            params![now(), &id.x25519_public[..]],
        )?;
        let row = tx.last_insert_rowid();
        let sealed = self
            .kek
            .seal(self.aad(row).as_bytes(), &id.secret_bytes())?;
        tx.execute(
            "UPDATE identity SET nonce = ?1, ciphertext = ?2 WHERE id = ?3",
            params![&sealed.nonce[..], sealed.ciphertext, row],
        )?;
        tx.commit()?;
        Ok(id)
    }

    /// Records an invite: the SHA-256 of its secret, for `peer_name`, until `expires_at`.
    ///
    /// # Errors
    /// Database errors.
    pub fn add_invite(
        &self,
        hash: &str,
        peer_name: &str,
        expires_at: i64,
    ) -> Result<(), MeshError> {
        let conn = self.lock();
        conn.execute("DELETE FROM invites WHERE expires_at <= ?1", [now()])?;
        conn.execute(
            "INSERT INTO invites (hash, peer_name, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
            params![hash, peer_name, now(), expires_at],
        )?;
        Ok(())
    }

    /// Consumes the invite whose secret hashes to `hash`: one statement deletes it only while
    /// unexpired, so two connections presenting the same secret cannot both succeed. Returns
    /// the peer name it was made for.
    ///
    /// # Errors
    /// `Refused` (as a message) when there is no such live invite.
    pub fn consume_invite(&self, hash: &str) -> Result<String, String> {
        let conn = self.lock();
        let name: Option<String> = conn
            .query_row(
                "DELETE FROM invites WHERE hash = ?1 AND expires_at > ?2 RETURNING peer_name",
                params![hash, now()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| format!("state database: {e}"))?;
        name.ok_or_else(|| "the invite is unknown, already used or expired".to_string())
    }

    /// Live invites (metadata only).
    ///
    /// # Errors
    /// Database errors.
    pub fn invites(&self) -> Result<Vec<(String, i64)>, MeshError> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT peer_name, expires_at FROM invites WHERE expires_at > ?1 ORDER BY created_at",
        )?;
        let rows = st.query_map([now()], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Adds a received message to `peer`'s inbox, dropping the oldest beyond [`INBOX_MAX`].
    ///
    /// # Errors
    /// Database errors.
    pub fn push_inbox(
        &self,
        peer: &str,
        sender: &str,
        kind: &str,
        body: &Value,
    ) -> Result<i64, MeshError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO inbox (peer, received_at, kind, body, sender) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![peer, now(), kind, body.to_string(), sender],
        )?;
        let id = conn.last_insert_rowid();
        conn.execute(
            "DELETE FROM inbox WHERE peer = ?1 AND id <= (SELECT id FROM inbox WHERE peer = ?1 ORDER BY id DESC LIMIT 1 OFFSET ?2)",
            params![peer, INBOX_MAX],
        )?;
        Ok(id)
    }

    /// `peer`'s messages after id `after`, oldest first, at most `limit`.
    ///
    /// # Errors
    /// Database errors.
    pub fn inbox(&self, peer: &str, after: i64, limit: i64) -> Result<Vec<InboxEntry>, MeshError> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT id, peer, received_at, kind, body, sender FROM inbox WHERE peer = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
        )?;
        let rows = st.query_map(params![peer, after, limit], |r| {
            let body: String = r.get(4)?;
            Ok(InboxEntry {
                id: r.get(0)?,
                peer: r.get(1)?,
                received_at: r.get(2)?,
                kind: r.get(3)?,
                body: serde_json::from_str(&body).unwrap_or(Value::Null),
                sender: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Forgets `peer`'s messages (the name is removed, or passes to another identity): never
    /// show one identity's words under another's name. Returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub fn clear_inbox(&self, peer: &str) -> Result<usize, MeshError> {
        Ok(self
            .lock()
            .execute("DELETE FROM inbox WHERE peer = ?1", [peer])?)
    }

    /// Deletes every open invite (a rotation makes them name keys the host no longer has).
    /// Returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub fn revoke_invites(&self) -> Result<usize, MeshError> {
        Ok(self.lock().execute("DELETE FROM invites", [])?)
    }

    /// Messages kept for `peer`.
    ///
    /// # Errors
    /// Database errors.
    pub fn inbox_len(&self, peer: &str) -> Result<i64, MeshError> {
        Ok(self
            .lock()
            .query_row("SELECT count(*) FROM inbox WHERE peer = ?1", [peer], |r| {
                r.get(0)
            })?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn identity_is_sealed_stable_and_bound_to_its_row() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), b"0123456789abcdef").unwrap();
        let a = s.identity().unwrap();
        assert_eq!(s.identity().unwrap().keys(), a.keys());
        drop(s);
        let s = Store::open(d.path(), b"0123456789abcdef").unwrap();
        assert_eq!(s.identity().unwrap().keys(), a.keys());
        let b = s.rotate().unwrap();
        assert_ne!(b.keys(), a.keys());
        assert_eq!(s.identity().unwrap().keys(), b.keys());
        // The private keys are not in the file in clear.
        drop(s);
        let raw = std::fs::read(d.path().join("mesh.db")).unwrap();
        let seed = b.signing.as_bytes();
        assert!(!raw.windows(32).any(|w| w == seed));
        // Another secret does not open it; a row's ciphertext moved to another row neither.
        let wrong = Store::open(d.path(), b"another-secret-of-16").unwrap();
        assert!(matches!(wrong.identity(), Err(MeshError::Vault(_))));
        let s = Store::open(d.path(), b"0123456789abcdef").unwrap();
        s.lock()
            .execute_batch("UPDATE identity SET nonce = (SELECT nonce FROM identity WHERE id = 1), ciphertext = (SELECT ciphertext FROM identity WHERE id = 1) WHERE id = 2")
            .unwrap();
        assert!(matches!(s.identity(), Err(MeshError::Vault(_))));
    }

    #[test]
    fn invites_are_single_use_and_expire() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), b"0123456789abcdef").unwrap();
        s.add_invite("h1", "laptop", now() + 60).unwrap();
        s.add_invite("h2", "old", now() - 1).unwrap();
        assert_eq!(s.consume_invite("h1").unwrap(), "laptop");
        assert!(s.consume_invite("h1").is_err());
        assert!(s.consume_invite("h2").is_err());
        assert!(s.consume_invite("nope").is_err());
    }

    #[test]
    fn inbox_is_bounded_per_peer() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), b"0123456789abcdef").unwrap();
        for i in 0..(INBOX_MAX + 5) {
            s.push_inbox("a", "fa", "json", &json!(i)).unwrap();
        }
        s.push_inbox("b", "fb", "text", &json!("hi")).unwrap();
        assert_eq!(s.inbox_len("a").unwrap(), INBOX_MAX);
        let first = s.inbox("a", 0, 1).unwrap();
        assert_eq!(first[0].body, json!(5));
        let b = s.inbox("b", 0, 10).unwrap();
        assert_eq!((&b[0].body, b[0].sender.as_str()), (&json!("hi"), "fb"));
        // A name that passes to another identity (or is removed) keeps none of its words.
        assert_eq!(s.clear_inbox("a").unwrap() as i64, INBOX_MAX);
        assert_eq!(s.inbox_len("a").unwrap(), 0);
        assert_eq!(s.inbox_len("b").unwrap(), 1);
    }

    #[test]
    fn an_inbox_from_before_senders_were_kept_opens() {
        let d = tempfile::tempdir().unwrap();
        {
            let c = Connection::open(d.path().join("mesh.db")).unwrap();
            c.execute_batch("CREATE TABLE inbox (id INTEGER PRIMARY KEY AUTOINCREMENT, peer TEXT NOT NULL, received_at INTEGER NOT NULL, kind TEXT NOT NULL, body TEXT NOT NULL); INSERT INTO inbox (peer, received_at, kind, body) VALUES ('a', 1, 'text', '\"old\"');").unwrap();
        }
        let s = Store::open(d.path(), b"0123456789abcdef").unwrap();
        let old = s.inbox("a", 0, 10).unwrap();
        assert_eq!((&old[0].body, old[0].sender.as_str()), (&json!("old"), ""));
        s.add_invite("h", "x", i64::MAX).unwrap();
        assert_eq!(s.revoke_invites().unwrap(), 1);
        assert!(s.consume_invite("h").is_err());
    }
}
