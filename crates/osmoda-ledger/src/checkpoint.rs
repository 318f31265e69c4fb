//! Signed checkpoints: the tree's size and root in a C2SP `tlog-checkpoint` body, signed as a
//! C2SP signed note with Ed25519 ([`signed_note`]), kept outside the database in an append-only
//! file so that a rewritten or shortened ledger no longer matches them.
//!
//! The key is a signed-note private key (`PRIVATE+KEY+<name>+<id>+<base64>`, the format of
//! `golang.org/x/mod/sumdb/note`); its name is the checkpoint's origin line. The file
//! (`checkpoints.jsonl`) holds one JSON object per line, [`SignedCheckpoint`]; only the `note`
//! field is trusted, after its signature verifies: the other fields are a convenience and must
//! agree with it.

use crate::proof::{hash_hex, TreeHead};
use crate::LedgerError;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use signed_note::{Note, Signer as _, StandardSigner, StandardVerifier, VerifierList};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use tlog_tiles::{Checkpoint, Hash};

/// One line of the checkpoint file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedCheckpoint {
    /// The origin line (the signing key's name).
    pub origin: String,
    /// Tree size (events 1..=size).
    pub size: u64,
    /// Root, hex.
    pub root: String,
    /// When it was signed (ledger timestamp format).
    pub ts: String,
    /// The signed note: checkpoint body, blank line, signature lines.
    pub note: String,
}

/// Signs checkpoints with a signed-note Ed25519 key.
pub struct CheckpointSigner {
    signer: StandardSigner,
    vkey: String,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("vkey", &self.vkey)
            .finish_non_exhaustive()
    }
}

fn bad_key(path: &Path, why: impl std::fmt::Display) -> LedgerError {
    LedgerError::InvalidKey(format!(
        "{}: {why}; it must hold one signed-note Ed25519 private key (PRIVATE+KEY+<origin>+<id>+<base64>), as `agentctl ledger keygen` writes",
        path.display()
    ))
}

impl CheckpointSigner {
    /// Reads the private key from `path` (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`LedgerError::Io`] if the file cannot be read, [`LedgerError::InvalidKey`] if it does not
    /// hold a valid Ed25519 signed-note private key.
    pub fn from_file(path: &Path) -> Result<CheckpointSigner, LedgerError> {
        let text = std::fs::read_to_string(path).map_err(|source| LedgerError::Io {
            context: format!("reading the checkpoint key {}", path.display()),
            source,
        })?;
        let skey = text.trim();
        let signer = StandardSigner::new(skey).map_err(|e| bad_key(path, e))?;
        // PRIVATE+KEY+<name>+<id>+<base64>: the base64 itself may contain '+'.
        let seed = skey
            .splitn(5, '+')
            .nth(4)
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
            .filter(|k| k.len() == 33)
            .ok_or_else(|| bad_key(path, "the key is not 1 + 32 bytes"))?;
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(&seed[1..]);
        let public = ed25519_dalek::SigningKey::from_bytes(&bytes).verifying_key();
        let vkey = signed_note::new_ed25519_verifier_key(signer.name(), &public);
        Ok(CheckpointSigner { signer, vkey })
    }

    /// The origin line of every checkpoint (the key's name).
    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    /// The verifier key (`<name>+<id>+<base64>`), public.
    pub fn vkey(&self) -> &str {
        &self.vkey
    }

    /// Signs a checkpoint of `head`.
    ///
    /// # Errors
    /// [`LedgerError::Malformed`] for a root that is not 64 hex digits; [`LedgerError::InvalidKey`]
    /// if signing fails.
    pub fn sign(&self, head: &TreeHead) -> Result<SignedCheckpoint, LedgerError> {
        let root = crate::parse_hash("root", &head.root)
            .map_err(|e| LedgerError::Malformed(e.to_string()))?;
        let body = Checkpoint::new(self.origin(), head.size, root, "")
            .map_err(|e| LedgerError::Malformed(format!("checkpoint body: {e}")))?
            .to_bytes();
        let mut note = Note::new(&body, &[])
            .map_err(|e| LedgerError::Malformed(format!("checkpoint note: {e}")))?;
        note.add_sigs(&[&self.signer])
            .map_err(|e| LedgerError::InvalidKey(format!("signing the checkpoint: {e}")))?;
        Ok(SignedCheckpoint {
            origin: self.origin().to_owned(),
            size: head.size,
            root: head.root.clone(),
            ts: crate::now_ts(),
            note: String::from_utf8_lossy(&note.to_bytes()).into_owned(),
        })
    }
}

/// A new random signed-note key named `origin`: `(private key, verifier key)`.
///
/// # Errors
/// [`LedgerError::InvalidKey`] if `origin` is not a valid key name (empty, whitespace or `+`);
/// [`LedgerError::Io`] if the system has no randomness.
pub fn generate_key(origin: &str) -> Result<(String, String), LedgerError> {
    key_pair(origin, &random_seed()?)
}

fn random_seed() -> Result<[u8; 32], LedgerError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| LedgerError::Io {
        context: "reading randomness for a checkpoint key".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(seed)
}

fn key_pair(origin: &str, seed: &[u8; 32]) -> Result<(String, String), LedgerError> {
    if !signed_note::is_key_name_valid(origin) {
        return Err(LedgerError::InvalidKey(format!(
            "{origin:?} cannot name a key: use a non-empty name without spaces or '+', e.g. host.example/osmoda-ledger"
        )));
    }
    let public = ed25519_dalek::SigningKey::from_bytes(seed).verifying_key();
    let mut pubkey = vec![1u8];
    pubkey.extend_from_slice(public.as_bytes());
    let mut private = vec![1u8];
    private.extend_from_slice(seed);
    let b64 = base64::engine::general_purpose::STANDARD;
    let skey = format!(
        "PRIVATE+KEY+{origin}+{:08x}+{}",
        signed_note::key_id(origin, &pubkey),
        b64.encode(&private)
    );
    Ok((skey, signed_note::new_ed25519_verifier_key(origin, &public)))
}

/// A new random signed-note key whose name is `prefix` followed by `/` and the first 8 bytes
/// of the SHA-256 of its public key in hex: `(private key, verifier key)`. Machines installed
/// from one configuration (one hostname) still get distinct origins, so a witness or a verifier
/// never mistakes one machine's log for another's.
///
/// # Errors
/// As [`generate_key`].
pub fn generate_unique_key(prefix: &str) -> Result<(String, String), LedgerError> {
    let seed = random_seed()?;
    let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
    key_pair(&unique_name(prefix, public.as_bytes()), &seed)
}

/// `prefix/<16 hex digits of SHA-256(public)>`: a key name unique to the key.
pub fn unique_name(prefix: &str, public: &[u8; 32]) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(public);
    format!("{prefix}/{}", hex::encode(&digest[..8]))
}

/// What a verified checkpoint says.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedCheckpoint {
    /// Origin line.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root.
    pub root: Hash,
}

/// Verifies a signed note against `vkey` and parses its checkpoint body.
///
/// # Errors
/// [`LedgerError::InvalidKey`] for a malformed `vkey`; [`LedgerError::ProofFailed`] when the note
/// is malformed, has no valid signature by `vkey`, or its body is not a checkpoint whose origin
/// is the key's name.
pub fn open_note(note: &str, vkey: &str) -> Result<VerifiedCheckpoint, LedgerError> {
    let verifier = StandardVerifier::new(vkey.trim())
        .map_err(|e| LedgerError::InvalidKey(format!("verifier key {vkey:?}: {e}")))?;
    let name = signed_note::Verifier::name(&verifier).to_owned();
    let parsed = Note::from_bytes(note.as_bytes())
        .map_err(|e| LedgerError::ProofFailed(format!("checkpoint note: {e}")))?;
    parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| LedgerError::ProofFailed(format!("checkpoint signature: {e}")))?;
    let cp = Checkpoint::from_bytes(parsed.text())
        .map_err(|e| LedgerError::ProofFailed(format!("checkpoint body: {e}")))?;
    if cp.origin() != name {
        return Err(LedgerError::ProofFailed(format!(
            "checkpoint origin {:?} is not the key's name {name:?}",
            cp.origin()
        )));
    }
    Ok(VerifiedCheckpoint {
        origin: cp.origin().to_owned(),
        size: cp.size(),
        root: *cp.hash(),
    })
}

/// Verifies one line of the checkpoint file: the note's signature, and that the convenience
/// fields say what the note says.
///
/// # Errors
/// As [`open_note`]; [`LedgerError::ProofFailed`] when the fields disagree with the note.
pub fn verify_signed(cp: &SignedCheckpoint, vkey: &str) -> Result<VerifiedCheckpoint, LedgerError> {
    let v = open_note(&cp.note, vkey)?;
    if v.size != cp.size || hash_hex(&v.root) != cp.root || v.origin != cp.origin {
        return Err(LedgerError::ProofFailed(format!(
            "checkpoint line says size {} root {} but its signed note says size {} root {}",
            cp.size,
            cp.root,
            v.size,
            hash_hex(&v.root)
        )));
    }
    Ok(v)
}

/// A checkpoint verifier key with the range of sizes it may sign, as one line of
/// `checkpoint.vkeys` or one `agentctl verify-ledger --vkey`: `<vkey>` (the current key, no
/// bound) or `<vkey> <last size>` (a key retired when the ledger had `last size` events: it
/// verifies only checkpoints up to that size, so whoever still holds a rotated-out key cannot
/// sign later ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRange<'a> {
    /// The verifier key (`<name>+<id>+<base64>`).
    pub vkey: &'a str,
    /// The largest checkpoint size it may sign; `None`: any (the current key).
    pub last_size: Option<u64>,
}

impl<'a> KeyRange<'a> {
    /// Parses `<vkey>` or `<vkey> <last size>` (surrounding whitespace ignored).
    ///
    /// # Errors
    /// [`LedgerError::InvalidKey`] for an empty line, a size that is not a number or more words.
    pub fn parse(line: &'a str) -> Result<KeyRange<'a>, LedgerError> {
        let mut words = line.split_whitespace();
        let bad = || {
            LedgerError::InvalidKey(format!(
                "verifier key line {line:?}: expected <name>+<id>+<base64>, or that and the last size a retired key may sign"
            ))
        };
        let vkey = words.next().ok_or_else(bad)?;
        let last_size = match words.next() {
            None => None,
            Some(n) => Some(n.parse::<u64>().map_err(|_| bad())?),
        };
        if words.next().is_some() {
            return Err(bad());
        }
        Ok(KeyRange { vkey, last_size })
    }

    /// The refusal of a checkpoint of `size` this retired key signed past its range.
    pub fn past_range(&self, size: u64) -> LedgerError {
        LedgerError::ProofFailed(format!(
            "the checkpoint of size {size} is signed by the retired key {} past its range: that key was retired when the ledger had {} events (whoever still holds a rotated-out key can sign such checkpoints)",
            self.vkey,
            self.last_size.unwrap_or(0)
        ))
    }
}

/// As [`verify_signed`] with a key line ([`KeyRange`]): a checkpoint a retired key signed past
/// the size where it was retired does not verify.
///
/// # Errors
/// As [`verify_signed`]; [`LedgerError::InvalidKey`] for a line that does not parse;
/// [`LedgerError::ProofFailed`] for a checkpoint past the key's range.
pub fn verify_signed_in_range(
    cp: &SignedCheckpoint,
    key_line: &str,
) -> Result<VerifiedCheckpoint, LedgerError> {
    let k = KeyRange::parse(key_line)?;
    let v = verify_signed(cp, k.vkey)?;
    match k.last_size {
        Some(last) if v.size > last => Err(k.past_range(v.size)),
        _ => Ok(v),
    }
}

/// A line type of an append-only JSONL file ([`JsonlFile`]).
pub trait JsonLine: Serialize + serde::de::DeserializeOwned {
    /// What one line is, in messages ("a checkpoint").
    const WHAT: &'static str;
}

impl JsonLine for SignedCheckpoint {
    const WHAT: &'static str = "a checkpoint";
}

/// An append-only file of one JSON object per line, written by one process and read by any:
/// each line written whole and synced; a crash in the middle of an append can leave a torn
/// last line, which readers leave out and [`JsonlFile::repair`] cuts (agentd at its start and
/// before each append), so no append ever continues a torn line.
pub struct JsonlFile<T> {
    path: PathBuf,
    line: std::marker::PhantomData<fn() -> T>,
}

impl<T> Clone for JsonlFile<T> {
    fn clone(&self) -> Self {
        JsonlFile {
            path: self.path.clone(),
            line: std::marker::PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for JsonlFile<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JsonlFile")
            .field("path", &self.path)
            .finish()
    }
}

/// The append-only checkpoint file.
pub type CheckpointFile = JsonlFile<SignedCheckpoint>;

impl<T: JsonLine> JsonlFile<T> {
    /// The file at `path` (created on first append).
    pub fn new(path: impl Into<PathBuf>) -> JsonlFile<T> {
        JsonlFile {
            path: path.into(),
            line: std::marker::PhantomData,
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one line and syncs it to disk before returning.
    ///
    /// # Errors
    /// [`LedgerError::Io`] when the file cannot be opened, written or synced.
    pub fn append(&self, item: &T) -> Result<(), LedgerError> {
        let io = |source| LedgerError::Io {
            context: format!("appending to {}", self.path.display()),
            source,
        };
        let mut line = serde_json::to_vec(item)
            .map_err(|e| LedgerError::Malformed(format!("encoding {}: {e}", T::WHAT)))?;
        line.push(b'\n');
        // Never append behind a torn line: it would join the two into one broken line.
        self.repair()?;
        let existed = self.path.exists();
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        // One write of the whole line: with O_APPEND a reader never sees two lines interleaved.
        f.write_all(&line).map_err(io)?;
        f.sync_all().map_err(io)?;
        if !existed {
            if let Some(dir) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::File::open(dir)
                    .and_then(|d| d.sync_all())
                    .map_err(io)?;
            }
        }
        Ok(())
    }

    /// Every line in the file, oldest first (none if the file does not exist). A complete
    /// last line counts even without its newline; a torn last line (a crash in the middle of an
    /// append: no newline and does not parse) is left out ([`JsonlFile::torn_tail`] says
    /// whether there is one, [`JsonlFile::repair`] removes it).
    ///
    /// # Errors
    /// [`LedgerError::Io`] when the file cannot be read; [`LedgerError::Malformed`] naming the
    /// line that does not parse.
    pub fn read(&self) -> Result<Vec<T>, LedgerError> {
        Ok(self.read_parts()?.0)
    }

    /// The bytes of a torn last line (no newline, does not parse), if the file ends in one.
    ///
    /// # Errors
    /// As [`JsonlFile::read`].
    pub fn torn_tail(&self) -> Result<Option<usize>, LedgerError> {
        Ok(self.read_parts()?.1.map(|t| t.len()))
    }

    fn read_parts(&self) -> Result<(Vec<T>, Option<String>), LedgerError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
            Err(source) => {
                return Err(LedgerError::Io {
                    context: format!("reading {}", self.path.display()),
                    source,
                })
            }
        };
        let (complete, last) = match text.rfind('\n') {
            Some(end) => (&text[..end], &text[end + 1..]),
            None => ("", text.as_str()),
        };
        let mut out = complete
            .split('\n')
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, line)| {
                serde_json::from_str(line).map_err(|e| {
                    LedgerError::Malformed(format!(
                        "{} line {}: not {} ({e})",
                        self.path.display(),
                        i + 1,
                        T::WHAT
                    ))
                })
            })
            .collect::<Result<Vec<T>, _>>()?;
        let mut torn = None;
        if !last.trim().is_empty() {
            match serde_json::from_str::<T>(last) {
                Ok(item) => out.push(item),
                Err(_) => torn = Some(last.to_owned()),
            }
        }
        Ok((out, torn))
    }

    /// Makes the file end in a newline again after a crash in the middle of an append: a
    /// complete last line gets its newline; a torn one is moved to `<file>.torn` (appended, for
    /// whoever looks) and cut off. Returns what was done, `None` when the file was whole.
    ///
    /// # Errors
    /// [`LedgerError::Io`] when the file cannot be read or written.
    pub fn repair(&self) -> Result<Option<String>, LedgerError> {
        let io = |source| LedgerError::Io {
            context: format!("repairing {}", self.path.display()),
            source,
        };
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(e)),
        };
        if bytes.is_empty() || bytes.ends_with(b"\n") {
            return Ok(None);
        }
        let cut = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let last = &bytes[cut..];
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        let what = if serde_json::from_slice::<T>(last).is_ok() {
            f.write_all(b"\n").map_err(io)?;
            "its last line was complete but had no newline; added it".to_owned()
        } else {
            let mut torn = self.path.clone().into_os_string();
            torn.push(".torn");
            let torn = PathBuf::from(torn);
            let mut side = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&torn)
                .map_err(io)?;
            side.write_all(last).map_err(io)?;
            side.write_all(b"\n").map_err(io)?;
            side.sync_all().map_err(io)?;
            f.set_len(cut as u64).map_err(io)?;
            format!(
                "cut a torn last line of {} bytes (a crash while appending); kept in {}",
                last.len(),
                torn.display()
            )
        };
        f.sync_all().map_err(io)?;
        Ok(Some(what))
    }
}

impl CheckpointFile {
    /// The newest checkpoint, if any.
    ///
    /// # Errors
    /// As [`CheckpointFile::read`].
    pub fn newest(&self) -> Result<Option<SignedCheckpoint>, LedgerError> {
        Ok(self.read()?.pop())
    }
}
