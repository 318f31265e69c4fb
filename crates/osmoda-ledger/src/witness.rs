//! Witnesses: another machine cosigns a log's checkpoint only after checking that it is
//! consistent with the last checkpoint of that log it cosigned (the logic of C2SP
//! `tlog-witness`'s add-checkpoint), so a ledger rolled back or forked on one machine can no
//! longer gather cosignatures from its peers.
//!
//! Cosignatures follow C2SP `tlog-cosignature` v1: the witness signs
//! `"cosignature/v1\ntime <unix seconds>\n" ‖ checkpoint body` with Ed25519; the signature line is
//! `— <witness name> base64(key id ‖ timestamp (8 bytes, big endian) ‖ signature)`, the key id
//! being the first 4 bytes of `SHA-256(name ‖ "\n" ‖ 0x04 ‖ public key)`. A witness verifier key
//! is `<name>+<key id hex>+base64(0x04 ‖ public key)`.
//!
//! The transport between machines (the mesh link) is agentd's `witness.rs`; cosignatures it
//! gathers are kept as [`Cosignature`] lines in `cosignatures.jsonl` next to the checkpoints.

use crate::checkpoint::open_note;
use crate::proof::hash_hex;
use crate::LedgerError;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::PathBuf;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;
const COSIGNATURE_ALG: u8 = 0x04;

fn key_id(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update([COSIGNATURE_ALG]);
    h.update(public);
    let d = h.finalize();
    [d[0], d[1], d[2], d[3]]
}

fn cosigned_message(body: &str, time: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {time}\n{body}").into_bytes()
}

/// Why a witness refuses to cosign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The checkpoint is not signed by the log key the witness knows for its origin.
    #[error("checkpoint not signed by the known key of this log: {0}")]
    BadSignature(String),
    /// The witness has no key for this origin.
    #[error("unknown log {0:?}: the witness has no verifier key for it")]
    UnknownLog(String),
    /// The caller proved consistency from another size than the witness last cosigned; retry
    /// from `witness_size`.
    #[error("the witness last cosigned size {witness_size}, not {claimed}; send a proof from {witness_size}")]
    Conflict {
        /// Size the witness has.
        witness_size: u64,
        /// Size the request claimed.
        claimed: u64,
    },
    /// The new checkpoint is smaller than the one cosigned before: a rollback.
    #[error("rollback: size {new} is smaller than the cosigned size {cosigned}")]
    Rollback {
        /// Cosigned size.
        cosigned: u64,
        /// Offered size.
        new: u64,
    },
    /// The proof does not show the old tree to be a prefix of the new one: a fork or a rewrite.
    #[error("not consistent with the checkpoint of size {cosigned} cosigned before: {reason}")]
    Inconsistent {
        /// Cosigned size.
        cosigned: u64,
        /// What failed.
        reason: String,
    },
}

/// One log's state at a witness: the newest cosigned size and root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosigned {
    /// Tree size.
    pub size: u64,
    /// Root, hex.
    pub root: String,
}

/// A witness: its key, the logs it watches, and what it cosigned (persisted as JSON).
///
/// Logs are told apart by their verifier key, not their origin alone: two machines installed
/// from one configuration may sign under one origin, and each is its own log here (its state
/// keyed by `<origin>+<id>+<key>`).
pub struct Witness {
    name: String,
    key: SigningKey,
    /// Origin → the verifier keys of the logs signing under it.
    logs: BTreeMap<String, Vec<String>>,
    state_file: PathBuf,
    /// Log verifier key → what was cosigned last (a state file written before logs were keyed
    /// by key has origins here, moved to the key by [`Witness::add_log`]).
    state: BTreeMap<String, Cosigned>,
}

impl std::fmt::Debug for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Witness")
            .field("name", &self.name)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Witness {
    /// A witness named `name` signing with the 32-byte Ed25519 seed `seed`, remembering what
    /// it cosigned in `state_file` (read now if it exists).
    ///
    /// # Errors
    /// [`LedgerError::InvalidKey`] for a name with spaces or `+`; [`LedgerError::Io`] /
    /// [`LedgerError::Malformed`] when the state file cannot be read.
    pub fn open(name: &str, seed: [u8; 32], state_file: PathBuf) -> Result<Witness, LedgerError> {
        if !signed_note::is_key_name_valid(name) {
            return Err(LedgerError::InvalidKey(format!(
                "{name:?} cannot name a witness"
            )));
        }
        let state = match std::fs::read(&state_file) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| LedgerError::Malformed(format!("{}: {e}", state_file.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(source) => {
                return Err(LedgerError::Io {
                    context: format!("reading {}", state_file.display()),
                    source,
                })
            }
        };
        Ok(Witness {
            name: name.to_owned(),
            key: SigningKey::from_bytes(&seed),
            logs: BTreeMap::new(),
            state_file,
            state,
        })
    }

    /// `prefix/<16 hex digits>` from the public key of `seed` ([`crate::unique_name`]): a
    /// witness name no other machine's witness has, whatever its hostname.
    pub fn unique_name(prefix: &str, seed: &[u8; 32]) -> String {
        crate::unique_name(
            prefix,
            SigningKey::from_bytes(seed).verifying_key().as_bytes(),
        )
    }

    /// Watch the log whose checkpoints `vkey` signs (its name is the origin; another log with
    /// the same origin and another key is another log).
    ///
    /// # Errors
    /// [`LedgerError::InvalidKey`] for a malformed key.
    pub fn add_log(&mut self, vkey: &str) -> Result<(), LedgerError> {
        let name = vkey
            .split('+')
            .next()
            .filter(|n| signed_note::is_key_name_valid(n))
            .ok_or_else(|| LedgerError::InvalidKey(format!("log key {vkey:?}")))?;
        signed_note::StandardVerifier::new(vkey)
            .map_err(|e| LedgerError::InvalidKey(format!("log key {vkey:?}: {e}")))?;
        let keys = self.logs.entry(name.to_owned()).or_default();
        if keys.iter().any(|k| k == vkey) {
            return Ok(());
        }
        keys.push(vkey.to_owned());
        // What an older witness kept under the origin belongs to the one log it knew then.
        if keys.len() == 1 {
            if let Some(c) = self.state.remove(name) {
                self.state.insert(vkey.to_owned(), c);
            }
        }
        Ok(())
    }

    /// The witness's verifier key (`<name>+<id>+base64(0x04 ‖ key)`).
    pub fn vkey(&self) -> String {
        let public = self.key.verifying_key().to_bytes();
        let mut k = vec![COSIGNATURE_ALG];
        k.extend_from_slice(&public);
        format!(
            "{}+{}+{}",
            self.name,
            hex::encode(key_id(&self.name, &public)),
            B64.encode(k)
        )
    }

    /// What the witness last cosigned of the log whose verifier key is `log_vkey`.
    pub fn cosigned(&self, log_vkey: &str) -> Option<&Cosigned> {
        self.state.get(log_vkey)
    }

    /// Every log (verifier key) this witness cosigned and the newest size and root it cosigned.
    pub fn all_cosigned(&self) -> impl Iterator<Item = (&str, &Cosigned)> {
        self.state.iter().map(|(k, c)| (k.as_str(), c))
    }

    /// Cosigns `note` (a log checkpoint) if it is consistent with what this witness cosigned
    /// before: `old_size` must be that size, and `proof` (hex hashes) a consistency proof from it
    /// to the note's size. Returns the cosignature line (ending in a newline) to append to the
    /// note. The new state is written to disk before the line is returned.
    ///
    /// # Errors
    /// `Err(Ok(refusal))` when the witness refuses (nothing changes); `Err(Err(e))` when its state
    /// cannot be saved.
    pub fn add_checkpoint(
        &mut self,
        old_size: u64,
        proof: &[String],
        note: &str,
        time: u64,
    ) -> Result<String, Result<Refusal, LedgerError>> {
        let origin = note.split('\n').next().unwrap_or_default().to_owned();
        let keys = self
            .logs
            .get(&origin)
            .ok_or_else(|| Ok(Refusal::UnknownLog(origin.clone())))?;
        // The log is the key that signed it (one origin may have several).
        let mut bad = String::new();
        let mut signed = None;
        for k in keys {
            match open_note(note, k) {
                Ok(cp) => {
                    signed = Some((k.clone(), cp));
                    break;
                }
                Err(e) => bad = e.to_string(),
            }
        }
        let (log, cp) = signed.ok_or(Ok(Refusal::BadSignature(bad)))?;
        let (have_size, have_root) = match self.state.get(&log) {
            Some(c) => (c.size, c.root.clone()),
            None => (0, hash_hex(&tlog_tiles::EMPTY_HASH)),
        };
        if old_size != have_size {
            return Err(Ok(Refusal::Conflict {
                witness_size: have_size,
                claimed: old_size,
            }));
        }
        if cp.size < have_size {
            return Err(Ok(Refusal::Rollback {
                cosigned: have_size,
                new: cp.size,
            }));
        }
        let consistency = crate::ConsistencyProof {
            from: have_size,
            to: cp.size,
            from_root: have_root,
            to_root: hash_hex(&cp.root),
            proof: proof.to_vec(),
        };
        crate::verify_consistency(&consistency).map_err(|e| {
            Ok(Refusal::Inconsistent {
                cosigned: have_size,
                reason: e.to_string(),
            })
        })?;
        let mut next = self.state.clone();
        next.insert(
            log,
            Cosigned {
                size: cp.size,
                root: hash_hex(&cp.root),
            },
        );
        self.save(&next).map_err(Err)?;
        self.state = next;
        let body = note_body(note);
        let sig = self.key.sign(&cosigned_message(&body, time));
        let mut blob = key_id(&self.name, &self.key.verifying_key().to_bytes()).to_vec();
        blob.extend_from_slice(&time.to_be_bytes());
        blob.extend_from_slice(&sig.to_bytes());
        Ok(format!("\u{2014} {} {}\n", self.name, B64.encode(blob)))
    }

    fn save(&self, state: &BTreeMap<String, Cosigned>) -> Result<(), LedgerError> {
        let io = |source| LedgerError::Io {
            context: format!("saving {}", self.state_file.display()),
            source,
        };
        let tmp = self.state_file.with_extension("tmp");
        let bytes = serde_json::to_vec(state)
            .map_err(|e| LedgerError::Malformed(format!("witness state: {e}")))?;
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io)?;
        std::fs::rename(&tmp, &self.state_file).map_err(io)
    }
}

/// The checkpoint body of a signed note (everything before the blank line, with its newline).
fn note_body(note: &str) -> String {
    match note.split_once("\n\n") {
        Some((body, _)) => format!("{body}\n"),
        None => note.to_owned(),
    }
}

/// Counts the distinct witnesses among `witness_vkeys` with a valid cosignature on `note`
/// (a checkpoint with cosignature lines appended).
///
/// # Errors
/// [`LedgerError::InvalidKey`] for a malformed witness key.
pub fn count_cosignatures(note: &str, witness_vkeys: &[String]) -> Result<usize, LedgerError> {
    let body = note_body(note);
    let mut count = 0;
    let unique: std::collections::BTreeSet<&String> = witness_vkeys.iter().collect();
    for vkey in unique {
        let mut parts = vkey.splitn(3, '+');
        let (name, id_hex, key_b64) = match (parts.next(), parts.next(), parts.next()) {
            (Some(n), Some(i), Some(k)) => (n, i, k),
            _ => return Err(LedgerError::InvalidKey(format!("witness key {vkey:?}"))),
        };
        let key = B64
            .decode(key_b64)
            .ok()
            .filter(|k| k.len() == 33 && k[0] == COSIGNATURE_ALG)
            .ok_or_else(|| LedgerError::InvalidKey(format!("witness key {vkey:?}")))?;
        let mut public = [0u8; 32];
        public.copy_from_slice(&key[1..]);
        if hex::encode(key_id(name, &public)) != id_hex {
            return Err(LedgerError::InvalidKey(format!(
                "witness key {vkey:?}: its id does not match its name and key"
            )));
        }
        let vk = VerifyingKey::from_bytes(&public)
            .map_err(|e| LedgerError::InvalidKey(format!("witness key {vkey:?}: {e}")))?;
        let valid = note.lines().any(|line| {
            let Some((n, b64)) = line
                .strip_prefix("\u{2014} ")
                .and_then(|rest| rest.split_once(' '))
            else {
                return false;
            };
            let Ok(blob) = B64.decode(b64) else {
                return false;
            };
            if n != name || blob.len() != 76 || blob[..4] != key_id(name, &public) {
                return false;
            }
            let mut t = [0u8; 8];
            t.copy_from_slice(&blob[4..12]);
            let Ok(sig) = ed25519_dalek::Signature::from_slice(&blob[12..]) else {
                return false;
            };
            vk.verify(&cosigned_message(&body, u64::from_be_bytes(t)), &sig)
                .is_ok()
        });
        if valid {
            count += 1;
        }
    }
    Ok(count)
}

/// One cosignature gathered for a checkpoint (a line of `cosignatures.jsonl`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosignature {
    /// Checkpoint size.
    pub size: u64,
    /// Checkpoint root (hex).
    pub root: String,
    /// The peer (mesh name) that cosigned.
    pub peer: String,
    /// The cosignature line (`— <name> <base64>` and a newline) to append to the note.
    pub line: String,
}

impl crate::JsonLine for Cosignature {
    const WHAT: &'static str = "a cosignature";
}

/// The append-only cosignature file (`cosignatures.jsonl`), with the checkpoint file's
/// handling of a torn last line.
pub type CosignatureFile = crate::JsonlFile<Cosignature>;

/// Reads a cosignature file (absent: none); a torn last line is left out.
///
/// # Errors
/// [`LedgerError::Io`] when it cannot be read, [`LedgerError::Malformed`] for a bad line.
pub fn read_cosignatures(path: &std::path::Path) -> Result<Vec<Cosignature>, LedgerError> {
    CosignatureFile::new(path).read()
}

/// The newest of `checkpoints` (size) and how many distinct keys of `witness_vkeys` validly
/// cosigned exactly it, among `cosignatures`; `None` without checkpoints.
///
/// # Errors
/// [`LedgerError::InvalidKey`] for a malformed witness key.
pub fn newest_cosigned(
    checkpoints: &[crate::SignedCheckpoint],
    cosignatures: &[Cosignature],
    witness_vkeys: &[String],
) -> Result<Option<(u64, usize)>, LedgerError> {
    let Some(newest) = checkpoints.iter().max_by_key(|c| c.size) else {
        return Ok(None);
    };
    let mut note = newest.note.clone();
    for c in cosignatures
        .iter()
        .filter(|c| c.size == newest.size && c.root == newest.root)
    {
        note.push_str(&c.line);
    }
    Ok(Some((
        newest.size,
        count_cosignatures(&note, witness_vkeys)?,
    )))
}
