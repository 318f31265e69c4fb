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

/// One log's state at a witness: the newest cosigned size and root, and which peer owns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cosigned {
    /// Tree size.
    pub size: u64,
    /// Root, hex.
    pub root: String,
    /// The mesh peer that asked for this log's first cosignature here (its owner, pinned
    /// then; [`Witness::add_checkpoint_from`]). A refusal asked for by another peer is a
    /// replay of that log's old checkpoint by a third party, not evidence against the log.
    /// `None`: a state file older than pinning, or a caller that names no peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
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
    /// Log verifier key → what was cosigned last. A state file written before logs were keyed
    /// by key has origins here: such an entry is taken over by a key of that origin only when
    /// that is unambiguous ([`Witness::legacy_for`]).
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
        Ok(())
    }

    /// What an older witness kept under `origin` (state keyed by origin, before logs were
    /// keyed by key), for the log `vkey` of that origin: it belonged to whichever log that
    /// witness knew under the origin, the *last* configured key then. So it is this log's only
    /// when the origin has exactly one key now; with several it is this log's only if this
    /// log's checkpoint proves consistent with it (`consistent`), and otherwise stays where it
    /// is for the log it belongs to.
    fn legacy_for(
        &self,
        origin: &str,
        vkey: &str,
        consistent: impl FnOnce(&Cosigned) -> bool,
    ) -> Option<Cosigned> {
        if self.state.contains_key(vkey) {
            return None;
        }
        let legacy = self.state.get(origin)?;
        let keys = self.logs.get(origin)?;
        (keys.len() == 1 || consistent(legacy)).then(|| legacy.clone())
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

    /// What the witness last cosigned of the log whose verifier key is `log_vkey` (an older
    /// state keyed by its origin counts when the origin has only this key).
    pub fn cosigned(&self, log_vkey: &str) -> Option<&Cosigned> {
        self.state.get(log_vkey).or_else(|| {
            let origin = log_vkey.split('+').next()?;
            (self.logs.get(origin)?.len() == 1)
                .then(|| self.state.get(origin))
                .flatten()
        })
    }

    /// The peer pinned as the owner of the log(s) signing under `origin`, if exactly one is.
    pub fn owner_of(&self, origin: &str) -> Option<&str> {
        let keys = self.logs.get(origin)?;
        let mut owners = keys
            .iter()
            .filter_map(|k| self.state.get(k)?.owner.as_deref());
        let first = owners.next()?;
        owners.all(|o| o == first).then_some(first)
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
        self.add_checkpoint_from(None, old_size, proof, note, time)
    }

    /// [`Witness::add_checkpoint`] asked by the mesh peer `peer`: the first peer that gets a
    /// log cosigned here is pinned as its owner ([`Cosigned::owner`], kept from then on).
    ///
    /// # Errors
    /// As [`Witness::add_checkpoint`].
    pub fn add_checkpoint_from(
        &mut self,
        peer: Option<&str>,
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
        let consistent_with = |c: &Cosigned| {
            old_size == c.size
                && cp.size >= c.size
                && crate::verify_consistency(&crate::ConsistencyProof {
                    from: c.size,
                    to: cp.size,
                    from_root: c.root.clone(),
                    to_root: hash_hex(&cp.root),
                    proof: proof.to_vec(),
                })
                .is_ok()
        };
        let legacy = self.legacy_for(&origin, &log, consistent_with);
        let (have_size, have_root, owner) = match self.state.get(&log).or(legacy.as_ref()) {
            Some(c) => (c.size, c.root.clone(), c.owner.clone()),
            None => (0, hash_hex(&tlog_tiles::EMPTY_HASH), None),
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
        if legacy.is_some() {
            // Taken over by the log it belonged to (and no longer offered to another).
            next.remove(&origin);
        }
        next.insert(
            log,
            Cosigned {
                size: cp.size,
                root: hash_hex(&cp.root),
                owner: owner.or_else(|| peer.map(str::to_owned)),
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
    count_cosignatures_since(note, witness_vkeys, 0)
}

/// [`count_cosignatures`], counting only cosignatures whose signed time is at least
/// `not_before` (unix seconds): a witness cosigns the same checkpoint again when asked later,
/// so a fresh cosignature shows the witness saw this log no larger than this checkpoint
/// recently, which an old copy of the files (a rollback) cannot show.
///
/// # Errors
/// [`LedgerError::InvalidKey`] for a malformed witness key.
pub fn count_cosignatures_since(
    note: &str,
    witness_vkeys: &[String],
    not_before: u64,
) -> Result<usize, LedgerError> {
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
            if u64::from_be_bytes(t) < not_before {
                return false;
            }
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

/// The time (unix seconds) a cosignature line (`— <name> <base64>`) says it was signed at;
/// `None` for a line that is not a cosignature. The signature is not checked here.
pub fn cosignature_time(line: &str) -> Option<u64> {
    let (_, b64) = line.trim_end().strip_prefix("\u{2014} ")?.split_once(' ')?;
    let blob = B64.decode(b64).ok().filter(|b| b.len() == 76)?;
    let mut t = [0u8; 8];
    t.copy_from_slice(&blob[4..12]);
    Some(u64::from_be_bytes(t))
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
    newest_cosigned_since(checkpoints, cosignatures, witness_vkeys, 0)
}

/// [`newest_cosigned`], counting only cosignatures signed at or after `not_before`
/// ([`count_cosignatures_since`]).
///
/// # Errors
/// [`LedgerError::InvalidKey`] for a malformed witness key.
pub fn newest_cosigned_since(
    checkpoints: &[crate::SignedCheckpoint],
    cosignatures: &[Cosignature],
    witness_vkeys: &[String],
    not_before: u64,
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
        count_cosignatures_since(&note, witness_vkeys, not_before)?,
    )))
}
