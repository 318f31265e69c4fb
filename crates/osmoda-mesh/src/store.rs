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
CREATE TABLE IF NOT EXISTS handovers (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    peer TEXT NOT NULL,
    old_identity INTEGER NOT NULL,
    message TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS intents (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL CHECK (kind IN ('record', 'switch')),
    name TEXT,
    endpoint TEXT,
    keys TEXT,
    reason TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
";

type Row = (i64, Vec<u8>, Vec<u8>, Vec<u8>);

/// Work mesh owes agentd or osmoda-watch, kept in `mesh.db` before it is done (see `intents`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Intent {
    /// Increasing; a switch begun after reading the largest one covers every switch up to it.
    pub seq: i64,
    /// What is owed.
    pub what: Owed,
    /// The commit message (a record) or the switch's plan.
    pub reason: String,
}

/// What an [`Intent`] owes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owed {
    /// Write peer `name` (`endpoint`, `keys`) into the tree, then a switch.
    Record {
        /// The peer.
        name: String,
        /// Where it is dialed.
        endpoint: String,
        /// Its public keys.
        keys: crate::identity::PublicKeys,
    },
    /// A switch of the tree's `HEAD`, which holds a committed change of peers (`name` when the
    /// change recorded one).
    Switch {
        /// The peer recorded, if the change was a record.
        name: Option<String>,
        /// Its keys.
        keys: Option<crate::identity::PublicKeys>,
    },
}

/// A rotation's hand-over still owed to a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// Increasing.
    pub seq: i64,
    /// The peer.
    pub peer: String,
    /// The identity row it hands over from (the peer knows this one).
    pub old_identity: i64,
    /// That identity's X25519 key.
    pub old_x25519: [u8; 32],
    /// The `MeshMessage::Rotate`, JSON.
    pub message: String,
}

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
        // Added later: the X25519 key of the identity an inbox row belongs to (hex; '' for
        // rows from before, judged by their fingerprint).
        let has_key: bool = conn
            .prepare("SELECT 1 FROM pragma_table_info('inbox') WHERE name = 'sender_x25519'")?
            .exists([])?;
        if !has_key {
            conn.execute_batch(
                "ALTER TABLE inbox ADD COLUMN sender_x25519 TEXT NOT NULL DEFAULT ''",
            )?;
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
        match self.identity_row(None)? {
            Some((id, x, n, c)) => self.open_row(id, x, n, c),
            None => self.rotate(),
        }
    }

    /// Identity row `id`, or the newest.
    fn identity_row(&self, id: Option<i64>) -> Result<Option<Row>, MeshError> {
        Ok(self
            .lock()
            .query_row(
                "SELECT id, x25519, nonce, ciphertext FROM identity WHERE ?1 IS NULL OR id = ?1 ORDER BY id DESC LIMIT 1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?)
    }

    /// Makes, seals and stores a new identity, which becomes the current one (the first
    /// start's; a rotation is [`Store::rotate_to`]).
    ///
    /// # Errors
    /// Database errors; `Internal` without randomness.
    pub fn rotate(&self) -> Result<Identity, MeshError> {
        let id = Identity::generate().map_err(MeshError::Internal)?;
        let conn = self.lock();
        let tx = conn.unchecked_transaction()?;
        self.insert_identity(&tx, &id)?;
        tx.commit()?;
        Ok(id)
    }

    fn insert_identity(
        &self,
        tx: &rusqlite::Transaction<'_>,
        id: &Identity,
    ) -> Result<i64, MeshError> {
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
        Ok(row)
    }

    /// A rotation, in one transaction: `new` sealed as the current identity, the hand-over
    /// `message` (signed by the old identity and `new`) owed to each of `peers` (the previous
    /// identity's row is kept: after a crash it dials them to deliver it), and every open
    /// invite revoked (they name the old keys). Returns how many invites were revoked.
    ///
    /// # Errors
    /// Database errors: then nothing changed.
    pub fn rotate_to(
        &self,
        new: &Identity,
        message: &str,
        peers: &[String],
    ) -> Result<usize, MeshError> {
        let conn = self.lock();
        let tx = conn.unchecked_transaction()?;
        let old: i64 = tx.query_row("SELECT max(id) FROM identity", [], |r| r.get(0))?;
        self.insert_identity(&tx, new)?;
        for p in peers {
            tx.execute(
                "INSERT INTO handovers (peer, old_identity, message, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![p, old, message, now()],
            )?;
        }
        let revoked = tx.execute("DELETE FROM invites", [])?;
        tx.commit()?;
        Ok(revoked)
    }

    /// Hand-overs still owed, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub fn handovers(&self) -> Result<Vec<Handover>, MeshError> {
        let conn = self.lock();
        let mut st = conn.prepare(
            "SELECT h.seq, h.peer, h.old_identity, i.x25519, h.message FROM handovers h JOIN identity i ON i.id = h.old_identity ORDER BY h.seq",
        )?;
        let rows = st.query_map([], |r| {
            let x: Vec<u8> = r.get(3)?;
            Ok(Handover {
                seq: r.get(0)?,
                peer: r.get(1)?,
                old_identity: r.get(2)?,
                old_x25519: x.try_into().unwrap_or([0; 32]),
                message: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Hand-over `seq` reached its peer (or is no longer owed).
    ///
    /// # Errors
    /// Database errors.
    pub fn handover_done(&self, seq: i64) -> Result<(), MeshError> {
        self.lock()
            .execute("DELETE FROM handovers WHERE seq = ?1", [seq])?;
        Ok(())
    }

    /// Identity `id` (a previous one, to deliver its hand-over).
    ///
    /// # Errors
    /// `Vault` when it does not decrypt; `NotFound` when there is none.
    pub fn identity_at(&self, id: i64) -> Result<Identity, MeshError> {
        let (id, x, n, c) = self
            .identity_row(Some(id))?
            .ok_or_else(|| MeshError::NotFound(format!("no identity {id} in mesh.db")))?;
        self.open_row(id, x, n, c)
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
        sender_x25519: &[u8; 32],
        kind: &str,
        body: &Value,
    ) -> Result<i64, MeshError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO inbox (peer, received_at, kind, body, sender, sender_x25519) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![peer, now(), kind, body.to_string(), sender, hex::encode(sender_x25519)],
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

    /// Names with messages in their inbox.
    ///
    /// # Errors
    /// Database errors.
    pub fn inbox_names(&self) -> Result<Vec<String>, MeshError> {
        let conn = self.lock();
        let mut st = conn.prepare("SELECT DISTINCT peer FROM inbox")?;
        let rows = st.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Keeps of `peer`'s inbox only the messages of the identities that hold the name now
    /// (`owners`: X25519 key and fingerprint of each; rows from before keys were kept are
    /// judged by fingerprint). Returns how many were dropped.
    ///
    /// # Errors
    /// Database errors.
    pub fn keep_inbox_of(
        &self,
        peer: &str,
        owners: &[([u8; 32], String)],
    ) -> Result<usize, MeshError> {
        // At most two identities hold a name (the declared one, a pending record's); an
        // absent one is a value no row has.
        let key = |i: usize| owners.get(i).map_or("-".to_string(), |o| hex::encode(o.0));
        let fp = |i: usize| owners.get(i).map_or("-".to_string(), |o| o.1.clone());
        Ok(self.lock().execute(
            "DELETE FROM inbox WHERE peer = ?1 AND sender_x25519 NOT IN (?2, ?3)              AND NOT (sender_x25519 = '' AND sender IN (?4, ?5))",
            params![peer, key(0), key(1), fp(0), fp(1)],
        )?)
    }

    /// Passes `peer`'s messages from the identity `old` to `new` (a hand-over `old` signed).
    ///
    /// # Errors
    /// Database errors.
    pub fn rekey_inbox(
        &self,
        peer: &str,
        old: &[u8; 32],
        new: &[u8; 32],
    ) -> Result<usize, MeshError> {
        Ok(self.lock().execute(
            "UPDATE inbox SET sender_x25519 = ?3 WHERE peer = ?1 AND sender_x25519 = ?2",
            params![peer, hex::encode(old), hex::encode(new)],
        )?)
    }

    /// Deletes every open invite (a rotation makes them name keys the host no longer has).
    /// Returns how many.
    ///
    /// # Errors
    /// Database errors.
    pub fn revoke_invites(&self) -> Result<usize, MeshError> {
        Ok(self.lock().execute("DELETE FROM invites", [])?)
    }

    /// Durably records that peer `name` is to be written into the tree (then switched).
    ///
    /// # Errors
    /// Database errors: then nothing is owed and nothing may be done.
    pub fn intend_record(
        &self,
        name: &str,
        endpoint: &str,
        keys: &crate::identity::PublicKeys,
        reason: &str,
    ) -> Result<i64, MeshError> {
        let conn = self.lock();
        conn.execute(
            "INSERT INTO intents (kind, name, endpoint, keys, reason, created_at) VALUES ('record', ?1, ?2, ?3, ?4, ?5)",
            params![name, endpoint, serde_json::to_string(keys).unwrap_or_default(), reason, now()],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Durably records that a switch of `HEAD` is owed (before a removal's commit, or when a
    /// record's commit landed: `after_record` is then replaced in the same transaction, and
    /// the switch gets a newer sequence number than any switch begun before the commit).
    ///
    /// # Errors
    /// Database errors.
    pub fn owe_switch(&self, reason: &str, after_record: Option<i64>) -> Result<i64, MeshError> {
        let conn = self.lock();
        let tx = conn.unchecked_transaction()?;
        let (name, keys): (Option<String>, Option<String>) = match after_record {
            Some(seq) => tx
                .query_row(
                    "DELETE FROM intents WHERE seq = ?1 AND kind = 'record' RETURNING name, keys",
                    [seq],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?
                .unwrap_or((None, None)),
            None => (None, None),
        };
        tx.execute(
            "INSERT INTO intents (kind, name, keys, reason, created_at) VALUES ('switch', ?1, ?2, ?3, ?4)",
            params![name, keys, reason, now()],
        )?;
        let seq = tx.last_insert_rowid();
        tx.commit()?;
        Ok(seq)
    }

    /// Forgets intent `seq` (done, or refused for good).
    ///
    /// # Errors
    /// Database errors.
    pub fn drop_intent(&self, seq: i64) -> Result<(), MeshError> {
        self.lock()
            .execute("DELETE FROM intents WHERE seq = ?1", [seq])?;
        Ok(())
    }

    /// A switch began after every owed switch up to `upto` was committed: they are done.
    ///
    /// # Errors
    /// Database errors.
    pub fn switches_begun(&self, upto: i64) -> Result<usize, MeshError> {
        Ok(self.lock().execute(
            "DELETE FROM intents WHERE kind = 'switch' AND seq <= ?1",
            [upto],
        )?)
    }

    /// Every intent, oldest first.
    ///
    /// # Errors
    /// Database errors.
    pub fn intents(&self) -> Result<Vec<Intent>, MeshError> {
        let conn = self.lock();
        let mut st = conn
            .prepare("SELECT seq, kind, name, endpoint, keys, reason FROM intents ORDER BY seq")?;
        let rows = st.query_map([], |r| {
            let keys: Option<String> = r.get(4)?;
            let keys = keys.and_then(|k| serde_json::from_str(&k).ok());
            let kind: String = r.get(1)?;
            let name: Option<String> = r.get(2)?;
            let what = match (kind.as_str(), name, keys) {
                ("record", Some(name), Some(keys)) => Owed::Record {
                    name,
                    endpoint: r.get::<_, Option<String>>(3)?.unwrap_or_default(),
                    keys,
                },
                (_, name, keys) => Owed::Switch { name, keys },
            };
            Ok(Intent {
                seq: r.get(0)?,
                what,
                reason: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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
            s.push_inbox("a", "fa", &[1; 32], "json", &json!(i))
                .unwrap();
        }
        s.push_inbox("b", "fb", &[2; 32], "text", &json!("hi"))
            .unwrap();
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

    /// Finding 9: an inbox row belongs to an identity: kept only for the identities holding
    /// its name now; a signed hand-over passes the rows to the new identity.
    #[test]
    fn inbox_rows_belong_to_identities() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), b"0123456789abcdef").unwrap();
        let (b, c, b2) = ([0xb; 32], [0xc; 32], [0xbb; 32]);
        s.push_inbox("n", "fb", &b, "text", &json!("from b"))
            .unwrap();
        s.push_inbox("n", "fc", &c, "text", &json!("from c"))
            .unwrap();
        s.push_inbox("m", "fb", &b, "text", &json!("b as m"))
            .unwrap();
        s.lock()
            .execute("INSERT INTO inbox (peer, received_at, kind, body, sender) VALUES ('n', 1, 'text', '\"legacy\"', 'fb')", [])
            .unwrap();
        let mut names = s.inbox_names().unwrap();
        names.sort();
        assert_eq!(names, ["m", "n"]);
        // `n` now names c: b's words (and b's legacy row) go, c's stay.
        assert_eq!(s.keep_inbox_of("n", &[(c, "fc".into())]).unwrap(), 2);
        let left = s.inbox("n", 0, 10).unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].body, json!("from c"));
        // b hands over to b2 under `m`: its rows follow the new keys.
        assert_eq!(s.rekey_inbox("m", &b, &b2).unwrap(), 1);
        assert_eq!(s.keep_inbox_of("m", &[(b2, "fb2".into())]).unwrap(), 0);
        // Nobody holds `m`: its inbox is empty.
        assert_eq!(s.keep_inbox_of("m", &[]).unwrap(), 1);
        assert_eq!(s.inbox_len("m").unwrap(), 0);
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

    #[test]
    fn intents_survive_a_reopen_and_a_switch_covers_only_what_came_before_it() {
        let d = tempfile::tempdir().unwrap();
        let keys = Identity::generate().unwrap().public();
        let s = Store::open(d.path(), b"0123456789abcdef").unwrap();
        let r1 = s.intend_record("a", "h:1", &keys, "pair with a").unwrap();
        let r2 = s.intend_record("b", "h:2", &keys, "pair with b").unwrap();
        // a's commit landed: its record becomes an owed switch, newer than anything before.
        let w1 = s.owe_switch("pair with a", Some(r1)).unwrap();
        assert!(w1 > r2);
        drop(s);
        let s = Store::open(d.path(), b"0123456789abcdef").unwrap();
        let all = s.intents().unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(
            all[0].what,
            Owed::Record {
                name: "b".into(),
                endpoint: "h:2".into(),
                keys: keys.clone()
            }
        );
        assert_eq!(
            all[1].what,
            Owed::Switch {
                name: Some("a".into()),
                keys: Some(keys.clone())
            }
        );
        // A switch begun now covers w1; b's switch, owed after it, is not covered.
        let w2 = s.owe_switch("pair with b", Some(r2)).unwrap();
        assert_eq!(s.switches_begun(w1).unwrap(), 1);
        let left = s.intents().unwrap();
        assert_eq!((left.len(), left[0].seq), (1, w2));
        s.drop_intent(w2).unwrap();
        assert!(s.intents().unwrap().is_empty());
    }

    #[test]
    fn a_rotation_seals_the_identity_and_its_hand_overs_at_once() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), b"0123456789abcdef").unwrap();
        let old = s.identity().unwrap();
        s.add_invite("h", "x", i64::MAX).unwrap();
        let new = Identity::generate().unwrap();
        let peers = vec!["p".to_string(), "q".to_string()];
        assert_eq!(s.rotate_to(&new, "{\"m\":1}", &peers).unwrap(), 1);
        drop(s);
        let s = Store::open(d.path(), b"0123456789abcdef").unwrap();
        assert_eq!(s.identity().unwrap().keys(), new.keys());
        let owed = s.handovers().unwrap();
        assert_eq!(owed.len(), 2);
        assert_eq!(owed[0].old_x25519, old.x25519_public);
        assert_eq!(
            s.identity_at(owed[0].old_identity).unwrap().keys(),
            old.keys()
        );
        assert_eq!(
            (owed[1].peer.as_str(), owed[1].message.as_str()),
            ("q", "{\"m\":1}")
        );
        assert!(s.consume_invite("h").is_err(), "invites name the old keys");
        s.handover_done(owed[0].seq).unwrap();
        assert_eq!(s.handovers().unwrap().len(), 1);
        assert!(matches!(s.identity_at(99), Err(MeshError::NotFound(_))));
    }
}
