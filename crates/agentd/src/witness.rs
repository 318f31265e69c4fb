//! Witnesses over the mesh (`ledger.witness` in agentd.json). Two tasks:
//!
//! - the log side sends every new checkpoint to each configured witness peer
//!   (`POST <mesh>/peer/{peer}/request`, topic [`TOPIC`]) with a consistency proof from the size
//!   that witness cosigned last, checks the returned cosignature against the peer's witness key
//!   and appends it to `<state>/cosignatures.jsonl`, next to `checkpoints.jsonl`; a refusal is
//!   recorded once as `agentd.witness.refused`;
//! - the witness side takes requests of that topic (`GET <mesh>/requests/next`) and answers them
//!   with [`osmoda_ledger::witness::Witness`]: it cosigns only a checkpoint of a log it knows
//!   that is consistent with the last one it cosigned, so a ledger rolled back or forked on a
//!   machine gets no more cosignatures from its peers; each refusal is recorded in the
//!   witness's own ledger as `agentd.witness.refusing` (once per peer, log, kind and size), so
//!   the rollback shows on the peer, whose root is not the one who rolled it back.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use osmoda_ledger::witness::{Cosignature, CosignatureFile, Refusal, Witness};
use serde_json::{json, Value};

use crate::{AppState, Shutdown};

/// The mesh request topic.
pub const TOPIC: &str = "ledger.cosign";
/// Cosignatures gathered for this machine's checkpoints (one JSON object per line).
pub const COSIGNATURES_FILE: &str = "cosignatures.jsonl";
/// The witness key generated when no key file is configured (hex seed, mode 0600).
pub const GENERATED_KEY_FILE: &str = "witness.key";
/// This machine's witness verifier key (public), written at start.
pub const VKEY_FILE: &str = "witness.vkey";
/// The verifier keys of the configured witness peers, one per line (for `agentctl
/// verify-ledger --witnesses N`), written at start.
pub const PEER_KEYS_FILE: &str = "witness-peers.keys";
const STATE_FILE: &str = "witness-state.json";

/// `ledger.witness`: which peers cosign this machine's checkpoints, and whose this one cosigns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WitnessSettings {
    /// osmoda-mesh's socket (`daemons.mesh`).
    pub mesh_socket: PathBuf,
    /// Mesh peer name → that peer's witness verifier key: asked to cosign every checkpoint.
    pub peers: BTreeMap<String, String>,
    /// Checkpoint verifier keys of the logs this machine witnesses (empty: it serves none).
    pub logs: Vec<String>,
    /// The witness key (64 hex digits, an Ed25519 seed); `None`: generated as
    /// `<state>/witness.key` on first start.
    pub key_file: Option<PathBuf>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && !h.contains(|c: char| c.is_whitespace() || c == '+'))
        .unwrap_or_else(|| "localhost".into())
}

/// Reads (or, without a key file, creates) the witness seed.
fn seed(state_dir: &Path, key_file: Option<&Path>) -> anyhow::Result<[u8; 32]> {
    let path = match key_file {
        Some(p) => p.to_path_buf(),
        None => {
            let p = state_dir.join(GENERATED_KEY_FILE);
            if !p.exists() {
                use std::os::unix::fs::OpenOptionsExt as _;
                let mut raw = [0u8; 32];
                getrandom::fill(&mut raw).map_err(|e| anyhow::anyhow!("randomness: {e}"))?;
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&p)?;
                f.write_all(format!("{}\n", hex::encode(raw)).as_bytes())?;
                f.sync_all()?;
            }
            p
        }
    };
    check_key_file(&path)?;
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("reading the witness key {}: {e}", path.display()))?;
    let bytes = hex::decode(text.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .ok_or_else(|| {
            anyhow::anyhow!(
                "{} is not a witness key (64 hex digits of an Ed25519 seed)",
                path.display()
            )
        })?;
    let mut out = [0u8; 32];
    out.copy_from_slice(&bytes);
    Ok(out)
}

/// Checks the witness key file like the checkpoint key
/// ([`crate::checkpoints::check_secret_key`]): whoever reads it cosigns any log's checkpoints
/// (a rolled-back or forked one too) as this machine's witness.
///
/// # Errors
/// Missing, not a regular file, another owner, or readable by group/others; naming the fix.
pub fn check_key_file(path: &Path) -> anyhow::Result<()> {
    crate::checkpoints::check_secret_key(
        path,
        "the witness key",
        "cosign any log's checkpoints (a rolled-back or forked one too) as this machine's witness",
        "64 hex digits of an Ed25519 seed, mode 0600",
    )
}

/// The witness verifier key for the seed in `key_file`, with this machine's witness name
/// ([`witness_name`]).
///
/// # Errors
/// The key file is missing or malformed.
pub fn vkey_of(key_file: &Path) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let seed = seed(dir.path(), Some(key_file))?;
    let w = Witness::open(&witness_name(&seed), seed, dir.path().join("s"))?;
    Ok(w.vkey())
}

/// `<hostname>/osmoda-witness/<16 hex of the key's hash>`: unique per witness key, so machines
/// installed from one configuration (one hostname) do not share a witness name.
fn witness_name(seed: &[u8; 32]) -> String {
    Witness::unique_name(&format!("{}/osmoda-witness", hostname()), seed)
}

/// Opens this machine's witness and writes its verifier key and the peers' keys to the state dir.
///
/// # Errors
/// A bad key file, a log key that does not parse, or an unwritable state dir.
pub fn open(state_dir: &Path, s: &WitnessSettings) -> anyhow::Result<Witness> {
    let seed = seed(state_dir, s.key_file.as_deref())?;
    let mut w = Witness::open(&witness_name(&seed), seed, state_dir.join(STATE_FILE))?;
    for log in &s.logs {
        w.add_log(log)?;
    }
    std::fs::write(state_dir.join(VKEY_FILE), format!("{}\n", w.vkey()))?;
    let keys: String = s.peers.values().map(|k| format!("{k}\n")).collect();
    std::fs::write(state_dir.join(PEER_KEYS_FILE), keys)?;
    Ok(w)
}

/// Runs both sides until `shutdown` (nothing without `ledger.witness` settings).
pub async fn run(st: Arc<AppState>, shutdown: Shutdown) {
    let Some(s) = st.settings.witness.clone() else {
        return;
    };
    let witness = match open(&st.state_dir, &s) {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %e, "witnesses are off: the witness key or log keys are unusable");
            return;
        }
    };
    let serve = tokio::spawn(serve(Arc::clone(&st), s.clone(), witness, shutdown.clone()));
    if !s.peers.is_empty() {
        gather(st, s, shutdown).await;
    }
    let _ = serve.await;
}

async fn pause(shutdown: &mut Shutdown, d: Duration) -> bool {
    tokio::select! {
        () = tokio::time::sleep(d) => false,
        () = shutdown.wait() => true,
    }
}

/// The witness side: answers `ledger.cosign` requests from peers, and records in this
/// machine's own ledger each checkpoint it refuses (`agentd.witness.refusing`), so a log rolled
/// back or forked on a peer is visible here, not only in that peer's ledger (whose root may be
/// the one who rolled it back).
async fn serve(st: Arc<AppState>, s: WitnessSettings, witness: Witness, mut shutdown: Shutdown) {
    if s.logs.is_empty() {
        return;
    }
    let mesh = osmoda_client::Client::new(&s.mesh_socket);
    let witness = std::sync::Mutex::new(witness);
    let path = format!("/requests/next?topic={TOPIC}&wait_secs=20");
    let mut recorded = Refusals::default();
    loop {
        let next = tokio::select! {
            r = mesh.get(&path) => r,
            () = shutdown.wait() => return,
        };
        let req = match next {
            Ok(r) if r.status == 200 => r.body["request"].clone(),
            Ok(r) => {
                // A refusal (403: mesh does not take this process for agentd's uid, whose
                // `ledger.*` topics it serves to nobody else) is not retried at once in a loop.
                tracing::error!(status = r.status, body = %r.body, "mesh refused /requests/next; cosign requests of peers are not answered meanwhile");
                if pause(&mut shutdown, Duration::from_secs(5)).await {
                    return;
                }
                continue;
            }
            Err(e) => {
                tracing::debug!(error = %e, "mesh unreachable; retrying");
                if pause(&mut shutdown, Duration::from_secs(1)).await {
                    return;
                }
                continue;
            }
        };
        if req.is_null() {
            continue;
        }
        let (ok, body, refusing) = {
            let mut w = witness
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (ok, body) = answer(&mut w, &req["body"]);
            let refusing =
                refusal_record(&w, req["peer"].as_str().unwrap_or(""), &req["body"], &body);
            (ok, body, refusing)
        };
        if let Some(payload) = refusing.filter(|p| recorded.first(p)) {
            tracing::warn!(refusal = %payload, "refused to cosign a peer's checkpoint");
            if let Err(e) = st
                .record("agentd.witness.refusing", "agentd", &payload)
                .await
            {
                tracing::error!(error = %e.error, "recording agentd.witness.refusing");
            }
        }
        let id = req["id"].as_u64().unwrap_or(0);
        if let Err(e) = mesh
            .post(
                &format!("/requests/{id}/respond"),
                &json!({ "ok": ok, "body": body }),
            )
            .await
        {
            tracing::warn!(error = %e, "answering a cosign request");
        }
    }
}

/// What the witness side recorded already, so each refusal is one event: by (peer, log origin,
/// refusal, checkpoint size); bounded (forgotten wholesale when full: a repeat is then recorded
/// again, never lost).
#[derive(Default)]
struct Refusals(std::collections::HashSet<(String, String, String, u64)>);

impl Refusals {
    const MAX: usize = 4096;

    /// Whether `payload` (a [`refusal_record`]) is seen for the first time.
    fn first(&mut self, payload: &Value) -> bool {
        let text = |k: &str| payload[k].as_str().unwrap_or_default().to_owned();
        let key = (
            text("peer"),
            text("log"),
            text("refusal"),
            payload["size"].as_u64().unwrap_or(0),
        );
        if self.0.len() >= Self::MAX {
            self.0.clear();
        }
        self.0.insert(key)
    }
}

/// The `agentd.witness.refusing` payload for an answer that refused a checkpoint for what it
/// says about the log (`rollback`, `inconsistent`, `bad_signature`, `unknown_log`): `{peer,
/// log, size, cosigned_size, refusal, reason}`; `None` for a cosignature, a `conflict` (the
/// protocol's "send a proof from this size", retried at once) or a malformed request. `size`
/// is the checkpoint's claimed size, `cosigned_size` what this witness cosigned last of that
/// origin's log(s) (`null`: nothing).
fn refusal_record(w: &Witness, peer: &str, request: &Value, answer: &Value) -> Option<Value> {
    let refusal = answer["refusal"].as_str()?;
    if !matches!(
        refusal,
        "rollback" | "inconsistent" | "bad_signature" | "unknown_log"
    ) {
        return None;
    }
    let note = request["note"].as_str().unwrap_or_default();
    let mut lines = note.lines();
    let log = lines.next().unwrap_or_default();
    let size = lines.next().and_then(|l| l.parse::<u64>().ok());
    let cosigned = w
        .all_cosigned()
        .filter(|(k, _)| k.split('+').next() == Some(log))
        .map(|(_, c)| c.size)
        .max();
    Some(json!({
        "peer": peer,
        "log": log,
        "size": size,
        "cosigned_size": cosigned,
        "refusal": refusal,
        "reason": answer["reason"],
    }))
}

/// Answers one cosign request `{old_size, proof, note}`: `(true, {cosignature})` or
/// `(false, {refusal, reason, witness_size?})`.
fn answer(w: &mut Witness, body: &Value) -> (bool, Value) {
    let old = body["old_size"].as_u64();
    let note = body["note"].as_str();
    let proof: Option<Vec<String>> = body["proof"].as_array().map(|a| {
        a.iter()
            .filter_map(|h| h.as_str().map(str::to_string))
            .collect()
    });
    let (Some(old), Some(note), Some(proof)) = (old, note, proof) else {
        return (
            false,
            json!({ "refusal": "bad_request", "reason": "expected {old_size, proof, note}" }),
        );
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match w.add_checkpoint(old, &proof, note, u64::try_from(now).unwrap_or(0)) {
        Ok(line) => (true, json!({ "cosignature": line })),
        Err(Ok(r)) => {
            let kind = match &r {
                Refusal::BadSignature(_) => "bad_signature",
                Refusal::UnknownLog(_) => "unknown_log",
                Refusal::Conflict { .. } => "conflict",
                Refusal::Rollback { .. } => "rollback",
                Refusal::Inconsistent { .. } => "inconsistent",
            };
            let size = match &r {
                Refusal::Conflict { witness_size, .. } => Some(*witness_size),
                _ => None,
            };
            (
                false,
                json!({ "refusal": kind, "reason": r.to_string(), "witness_size": size }),
            )
        }
        Err(Err(e)) => (
            false,
            json!({ "refusal": "internal", "reason": e.to_string() }),
        ),
    }
}

/// The log side: asks every witness peer to cosign each new checkpoint.
async fn gather(st: Arc<AppState>, s: WitnessSettings, mut shutdown: Shutdown) {
    let Some(cp) = st.checkpoints.clone() else {
        tracing::warn!("witness peers are configured but checkpoints are off: nothing to cosign");
        return;
    };
    let mesh = osmoda_client::Client::new(&s.mesh_socket);
    let file = CosignatureFile::new(st.state_dir.join(COSIGNATURES_FILE));
    // A torn last line (a crash while appending) is cut before anything is appended behind it.
    match file.repair() {
        Ok(Some(what)) => tracing::warn!(file = %file.path().display(), "{what}"),
        Ok(None) => {}
        Err(e) => tracing::error!(error = %e, "repairing the cosignature file"),
    }
    let mut signed = cp.signed.subscribe();
    // Refusals already recorded, by (peer, checkpoint size), so each is recorded once.
    let mut refused: std::collections::BTreeSet<(String, u64)> = Default::default();
    loop {
        let newest = match cp.file.newest() {
            Ok(n) => n,
            Err(e) => {
                tracing::error!(error = %e, "reading the checkpoint file");
                None
            }
        };
        let mut pending = false;
        // A checkpoint the ledger no longer has (a restore replaced both) is not asked about.
        let newest = newest.filter(|c| st.ledger.root_at(c.size).is_ok_and(|r| r == c.root));
        if let Some(c) = newest {
            let have = file.read().unwrap_or_else(|e| {
                tracing::error!(error = %e, "reading the cosignature file");
                Vec::new()
            });
            for (peer, vkey) in &s.peers {
                if have
                    .iter()
                    .any(|h| &h.peer == peer && h.size == c.size && h.root == c.root)
                {
                    continue;
                }
                // What this peer cosigned last (of the ledger as it is now).
                let last = have
                    .iter()
                    .filter(|h| &h.peer == peer && h.size <= c.size)
                    .max_by_key(|h| h.size)
                    .map_or(0, |h| h.size);
                match ask(&st, &mesh, peer, vkey, last, &c).await {
                    Ok(line) => {
                        let entry = Cosignature {
                            size: c.size,
                            root: c.root.clone(),
                            peer: peer.clone(),
                            line,
                        };
                        if let Err(e) = file.append(&entry) {
                            tracing::error!(error = %e, "storing a cosignature");
                        }
                    }
                    Err(Asked::Refused(reason)) => {
                        if refused.insert((peer.clone(), c.size)) {
                            tracing::warn!(peer = %peer, size = c.size, %reason, "witness refused to cosign");
                            let _ = st
                                .record(
                                    "agentd.witness.refused",
                                    "agentd",
                                    &json!({ "peer": peer, "size": c.size, "root": c.root, "reason": reason }),
                                )
                                .await;
                        }
                    }
                    Err(Asked::Unreachable(e)) => {
                        tracing::debug!(peer = %peer, error = %e, "witness unreachable; will retry");
                        pending = true;
                    }
                }
            }
        }
        let wait = if pending {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(60)
        };
        tokio::select! {
            r = signed.changed() => if r.is_err() { return },
            () = tokio::time::sleep(wait) => {},
            () = shutdown.wait() => return,
        }
    }
}

enum Asked {
    Refused(String),
    Unreachable(String),
}

/// One cosign request (retried once from the size a witness says it has).
async fn ask(
    st: &AppState,
    mesh: &osmoda_client::Client,
    peer: &str,
    vkey: &str,
    last: u64,
    c: &osmoda_ledger::SignedCheckpoint,
) -> Result<String, Asked> {
    let mut from = last;
    for _ in 0..2 {
        let proof = match st.ledger.consistency_proof(from, c.size) {
            Ok(p) => p.proof,
            // The ledger changed under us (a restore): try again with the newest checkpoint.
            Err(e) => {
                return Err(Asked::Unreachable(format!(
                    "no consistency proof from {from}: {e}"
                )))
            }
        };
        let body = json!({ "old_size": from, "proof": proof, "note": c.note });
        let r = mesh
            .post(
                &format!("/peer/{peer}/request"),
                &json!({ "topic": TOPIC, "body": body, "timeout_secs": 20 }),
            )
            .await
            .map_err(|e| Asked::Unreachable(e.to_string()))?;
        if r.status != 200 {
            return Err(Asked::Unreachable(format!(
                "mesh answered {}: {}",
                r.status, r.body
            )));
        }
        let answer = &r.body["body"];
        if r.body["ok"] == json!(true) {
            let line = answer["cosignature"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let cosigned = format!("{}{line}", c.note);
            return match osmoda_ledger::witness::count_cosignatures(&cosigned, &[vkey.to_string()]) {
                Ok(1) => Ok(line),
                _ => Err(Asked::Refused(format!(
                    "peer {peer} answered with a cosignature that does not verify under its witness key"
                ))),
            };
        }
        match (answer["refusal"].as_str(), answer["witness_size"].as_u64()) {
            (Some("conflict"), Some(size)) if size != from && size <= c.size => from = size,
            _ => {
                return Err(Asked::Refused(
                    answer["reason"]
                        .as_str()
                        .map_or_else(|| answer.to_string(), str::to_string),
                ))
            }
        }
    }
    Err(Asked::Refused(
        "the witness keeps claiming another size".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A witness with one log (a real key, a real ledger) and that log's checkpoint of its
    /// current tree.
    fn setup(
        dir: &Path,
    ) -> (
        Witness,
        osmoda_ledger::Ledger,
        osmoda_ledger::CheckpointSigner,
    ) {
        let (skey, vkey) = osmoda_ledger::generate_key("alpha/osmoda-ledger").unwrap();
        std::fs::write(dir.join("k"), skey).unwrap();
        let signer = osmoda_ledger::CheckpointSigner::from_file(&dir.join("k")).unwrap();
        let ledger = osmoda_ledger::Ledger::open(&dir.join("ledger.db")).unwrap();
        let mut w = Witness::open("beta/osmoda-witness", [5; 32], dir.join("w.json")).unwrap();
        w.add_log(&vkey).unwrap();
        (w, ledger, signer)
    }

    fn append(ledger: &osmoda_ledger::Ledger, n: usize) {
        for i in 0..n {
            ledger
                .append_blocking(osmoda_ledger::NewEvent::new(
                    "t.e",
                    "a",
                    format!("{{\"i\":{i}}}"),
                ))
                .unwrap();
        }
    }

    /// What the witness side records when it refuses: the log, the offered and the cosigned
    /// size, the kind; nothing for a cosignature or a `conflict` (the protocol's retry), and
    /// each (peer, log, kind, size) once.
    #[test]
    fn a_refusal_becomes_one_record_naming_the_log_and_both_sizes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, ledger, signer) = setup(dir.path());
        append(&ledger, 6);
        let old = signer.sign(&ledger.tree_head().unwrap()).unwrap();
        append(&ledger, 4);
        let new = signer.sign(&ledger.tree_head().unwrap()).unwrap();
        let proof = |from: u64, to: u64| ledger.consistency_proof(from, to).unwrap().proof;
        let ask = |w: &mut Witness, old_size: u64, proof: Vec<String>, note: &str| {
            let req = json!({ "old_size": old_size, "proof": proof, "note": note });
            let (ok, body) = answer(w, &req);
            (ok, refusal_record(w, "alpha", &req, &body))
        };
        // Cosigned at 10: nothing to record.
        assert_eq!(ask(&mut w, 0, proof(0, 10), &new.note), (true, None));
        // A proof from the wrong size: the retry protocol, not a refusal of the log.
        assert_eq!(ask(&mut w, 3, proof(3, 10), &new.note), (false, None));
        // The log offers its older checkpoint (a rollback): recorded, naming both sizes.
        let (ok, rec) = ask(&mut w, 10, Vec::new(), &old.note);
        assert!(!ok);
        let rec = rec.expect("a rollback is recorded");
        assert_eq!(rec["peer"], json!("alpha"));
        assert_eq!(rec["log"], json!("alpha/osmoda-ledger"));
        assert_eq!(rec["refusal"], json!("rollback"));
        assert_eq!(rec["size"], json!(6));
        assert_eq!(rec["cosigned_size"], json!(10));
        let mut seen = Refusals::default();
        assert!(seen.first(&rec));
        assert!(!seen.first(&rec), "the same refusal is recorded once");
        let mut other = rec.clone();
        other["size"] = json!(7);
        assert!(seen.first(&other), "another checkpoint is recorded again");
    }
}
