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
//!
//! A peer's requests set the rate of what it sends, not the rate at which this ledger grows
//! (as `osmoda-mesh`'s `peer_events`): a request whose text is larger than a checkpoint needs
//! is refused as `bad_request` and recorded nowhere, and the refusals a peer causes are
//! recorded one by one up to [`REFUSALS_PER_WINDOW`] per [`REFUSAL_WINDOW`], the rest counted in
//! one `agentd.witness.refusing_over_budget`. A log's owner is the peer that first got it
//! cosigned here (pinned in the witness state); a rollback offered by another peer is marked
//! `relayed` (a replay of an old checkpoint it saw, not evidence against the log).
//!
//! A witness that cannot start (a bad key file, a log key that does not parse) records
//! `agentd.witness.off` and puts `/health` in `degraded`: tamper evidence never turns off with
//! only a log line.

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
/// Refusals a peer's requests get recorded one by one per [`REFUSAL_WINDOW`], at most.
pub const REFUSALS_PER_WINDOW: u32 = 10;
/// The window of [`REFUSALS_PER_WINDOW`].
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(600);
/// The largest checkpoint note taken (a C2SP checkpoint with its signature lines is ~300 bytes).
pub const MAX_NOTE_BYTES: usize = 4096;
/// The longest origin (key name) taken.
pub const MAX_ORIGIN_BYTES: usize = 255;
/// The most consistency-proof hashes taken (a proof has at most ~2·log2(size) of them).
pub const MAX_PROOF_HASHES: usize = 128;
/// How old this machine's newest cosignature from a peer may get before the same checkpoint is
/// sent to it again: a fresh cosignature shows the witness saw this log no larger than this
/// checkpoint lately, which an older copy of the files (a rollback) cannot
/// (`agentctl verify-ledger --witnesses N --max-age`).
pub const REFRESH: Duration = Duration::from_secs(3600);

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

/// The witness verifier key for the seed in `key_file`, with the witness name a new state dir
/// gets ([`witness_name`]).
///
/// # Errors
/// The key file is missing or malformed.
pub fn vkey_of(key_file: &Path) -> anyhow::Result<String> {
    let dir = tempfile::tempdir()?;
    let seed = seed(dir.path(), Some(key_file))?;
    let w = Witness::open(&witness_name(dir.path(), &seed), seed, dir.path().join("s"))?;
    Ok(w.vkey())
}

/// This witness's name. A witness that already has one keeps it: the name is part of its
/// verifier key, which every peer has in `ledger.witness.peers`, so renaming it would make all
/// their cosignatures stop verifying. So the name of `<state>/witness.vkey` is kept when that
/// file is this seed's key under that name; a state dir with a witness state but no such file
/// (a witness older than the vkey file) keeps the old `<hostname>/osmoda-witness`; only a new
/// witness gets `<hostname>/osmoda-witness/<16 hex of the key's hash>`, unique per key (machines
/// installed from one configuration share a hostname).
fn witness_name(state_dir: &Path, seed: &[u8; 32]) -> String {
    let base = format!("{}/osmoda-witness", hostname());
    if let Ok(text) = std::fs::read_to_string(state_dir.join(VKEY_FILE)) {
        let old = text.trim();
        let name = old.split('+').next().unwrap_or_default();
        let same = Witness::open(name, *seed, state_dir.join("witness-name-check.json"))
            .is_ok_and(|w| w.vkey() == old);
        if same {
            return name.to_owned();
        }
    }
    if state_dir.join(STATE_FILE).exists() {
        return base;
    }
    Witness::unique_name(&base, seed)
}

/// Opens this machine's witness and writes its verifier key and the peers' keys to the state dir.
///
/// # Errors
/// A bad key file, a log key that does not parse, or an unwritable state dir.
pub fn open(state_dir: &Path, s: &WitnessSettings) -> anyhow::Result<Witness> {
    let seed = seed(state_dir, s.key_file.as_deref())?;
    let mut w = Witness::open(
        &witness_name(state_dir, &seed),
        seed,
        state_dir.join(STATE_FILE),
    )?;
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
            let reason = format!("the witness key or a log key is unusable: {e:#}");
            tracing::error!(%reason, "witnesses are off");
            if let Ok(mut off) = st.witness_off.lock() {
                *off = Some(reason.clone());
            }
            if let Err(e) = st
                .record("agentd.witness.off", "agentd", &json!({ "reason": reason }))
                .await
            {
                tracing::error!(error = %e.error, "recording agentd.witness.off");
            }
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
    let mut budget = Budget::default();
    loop {
        for summary in budget.ended(std::time::Instant::now()) {
            record(&st, "agentd.witness.refusing_over_budget", &summary).await;
        }
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
        let peer = req["peer"].as_str().unwrap_or("");
        let (ok, body, refusing) = {
            let mut w = witness
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (ok, body) = answer(&mut w, peer, &req["body"]);
            let refusing = refusal_record(&w, peer, &req["body"], &body);
            (ok, body, refusing)
        };
        if let Some(payload) = refusing.filter(|p| recorded.first(p)) {
            if budget.admit(peer, std::time::Instant::now()) {
                tracing::warn!(refusal = %payload, "refused to cosign a peer's checkpoint");
                record(&st, "agentd.witness.refusing", &payload).await;
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

async fn record(st: &AppState, kind: &str, payload: &Value) {
    if let Err(e) = st.record(kind, "agentd", payload).await {
        tracing::error!(error = %e.error, "recording {kind}");
    }
}

/// The refusals each peer's requests get recorded per window: the first
/// [`REFUSALS_PER_WINDOW`] one by one, the rest counted and recorded as one summary when the
/// window ends ([`Budget::ended`]). One entry per peer that was refused (mesh peers are paired
/// by configuration, so their number is bounded).
#[derive(Default)]
struct Budget(std::collections::HashMap<String, Window>);

struct Window {
    start: std::time::Instant,
    recorded: u32,
    over: u64,
}

impl Budget {
    /// Whether one more refusal caused by `peer` is recorded (else it is counted).
    fn admit(&mut self, peer: &str, now: std::time::Instant) -> bool {
        let w = self.0.entry(peer.to_owned()).or_insert(Window {
            start: now,
            recorded: 0,
            over: 0,
        });
        if w.recorded < REFUSALS_PER_WINDOW {
            w.recorded += 1;
            true
        } else {
            w.over += 1;
            false
        }
    }

    /// Ends every window older than [`REFUSAL_WINDOW`]: the summaries
    /// (`{peer, refusals_not_recorded, window_secs}`) of those that went over budget.
    fn ended(&mut self, now: std::time::Instant) -> Vec<Value> {
        let mut out = Vec::new();
        self.0.retain(|peer, w| {
            if now.duration_since(w.start) < REFUSAL_WINDOW {
                return true;
            }
            if w.over > 0 {
                out.push(json!({
                    "peer": peer,
                    "refusals_not_recorded": w.over,
                    "window_secs": REFUSAL_WINDOW.as_secs(),
                }));
            }
            false
        });
        out
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
/// log, size, cosigned_size, refusal, reason, owner, relayed}`; `None` for a cosignature, a
/// `conflict` (the protocol's "send a proof from this size", retried at once) or a malformed
/// or oversized request (`bad_request`). `size` is the checkpoint's claimed size,
/// `cosigned_size` what this witness cosigned last of that origin's log(s) (`null`: nothing),
/// `owner` the peer pinned as that log's owner (`null`: none yet), `relayed` true when another
/// peer sent it: a replay of the log's old checkpoint by a third party, not evidence against
/// the log.
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
    let owner = w.owner_of(log);
    Some(json!({
        "peer": peer,
        "log": log,
        "size": size,
        "cosigned_size": cosigned,
        "refusal": refusal,
        "reason": answer["reason"],
        "owner": owner,
        "relayed": owner.is_some_and(|o| o != peer),
    }))
}

/// The request's `(old_size, proof, note)`, or why it is a `bad_request`: anything larger than
/// a checkpoint needs ([`MAX_NOTE_BYTES`], [`MAX_ORIGIN_BYTES`], [`MAX_PROOF_HASHES`], hashes of
/// 64 hex digits) or an origin that is not a key name, so no peer-chosen text beyond that
/// reaches this machine's ledger.
fn parse_request(body: &Value) -> Result<(u64, Vec<String>, &str), String> {
    let old = body["old_size"].as_u64();
    let note = body["note"].as_str();
    let proof = body["proof"].as_array();
    let (Some(old), Some(note), Some(proof)) = (old, note, proof) else {
        return Err("expected {old_size, proof, note}".into());
    };
    if note.len() > MAX_NOTE_BYTES {
        return Err(format!(
            "the note has {} bytes; a checkpoint has at most {MAX_NOTE_BYTES}",
            note.len()
        ));
    }
    let origin = note.split('\n').next().unwrap_or_default();
    if origin.len() > MAX_ORIGIN_BYTES || !osmoda_ledger::is_key_name_valid(origin) {
        return Err(format!(
            "the note's first line is not a log origin (a key name of at most {MAX_ORIGIN_BYTES} bytes)"
        ));
    }
    if proof.len() > MAX_PROOF_HASHES {
        return Err(format!(
            "the proof has {} hashes; at most {MAX_PROOF_HASHES} are taken",
            proof.len()
        ));
    }
    let proof = proof
        .iter()
        .map(|h| {
            h.as_str()
                .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(str::to_owned)
        })
        .collect::<Option<Vec<String>>>()
        .ok_or("every proof hash is 64 hex digits")?;
    Ok((old, proof, note))
}

/// Answers one cosign request `{old_size, proof, note}` from the mesh peer `peer`:
/// `(true, {cosignature})` or `(false, {refusal, reason, witness_size?})`.
fn answer(w: &mut Witness, peer: &str, body: &Value) -> (bool, Value) {
    let (old, proof, note) = match parse_request(body) {
        Ok(r) => r,
        Err(reason) => return (false, json!({ "refusal": "bad_request", "reason": reason })),
    };
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let peer = Some(peer).filter(|p| !p.is_empty());
    match w.add_checkpoint_from(peer, old, &proof, note, u64::try_from(now).unwrap_or(0)) {
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
            let now = time::OffsetDateTime::now_utc().unix_timestamp();
            let fresh_since = u64::try_from(now)
                .unwrap_or(0)
                .saturating_sub(REFRESH.as_secs());
            for (peer, vkey) in &s.peers {
                // Asked again once its cosignature of this checkpoint is older than REFRESH.
                if have.iter().any(|h| {
                    &h.peer == peer
                        && h.size == c.size
                        && h.root == c.root
                        && osmoda_ledger::witness::cosignature_time(&h.line)
                            .is_some_and(|t| t >= fresh_since)
                }) {
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

    /// [`setup`], then the log's checkpoints at 6 and at 10 events.
    fn checkpoints_at_6_and_10(
        dir: &Path,
    ) -> (
        Witness,
        osmoda_ledger::Ledger,
        osmoda_ledger::SignedCheckpoint,
        osmoda_ledger::SignedCheckpoint,
    ) {
        let (w, ledger, signer) = setup(dir);
        append(&ledger, 6);
        let old = signer.sign(&ledger.tree_head().unwrap()).unwrap();
        append(&ledger, 4);
        let new = signer.sign(&ledger.tree_head().unwrap()).unwrap();
        (w, ledger, old, new)
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
        let (mut w, ledger, old, new) = checkpoints_at_6_and_10(dir.path());
        let proof = |from: u64, to: u64| ledger.consistency_proof(from, to).unwrap().proof;
        let ask = |w: &mut Witness, old_size: u64, proof: Vec<String>, note: &str| {
            let req = json!({ "old_size": old_size, "proof": proof, "note": note });
            let (ok, body) = answer(w, "alpha", &req);
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

    /// Review 18-11 finding 1: a request carrying more text than a checkpoint needs (a 60 KiB
    /// origin, a huge proof, a note over the bound) is a `bad_request` and leaves no record, so
    /// no peer-chosen text beyond a checkpoint's reaches this ledger.
    #[test]
    fn oversized_or_malformed_requests_are_bad_requests_and_never_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, _ledger, _signer) = setup(dir.path());
        let long_origin = format!("{}\n1\nr\n\n", "x".repeat(60 * 1024));
        let big_note = format!("alpha/osmoda-ledger\n1\n{}\n\n", "r".repeat(MAX_NOTE_BYTES));
        let hash = "00".repeat(32);
        for req in [
            json!({ "old_size": 0, "proof": [], "note": long_origin }),
            json!({ "old_size": 0, "proof": [], "note": big_note }),
            json!({ "old_size": 0, "proof": vec![hash.clone(); MAX_PROOF_HASHES + 1], "note": "alpha/osmoda-ledger\n1\nr\n\n" }),
            json!({ "old_size": 0, "proof": ["zz"], "note": "alpha/osmoda-ledger\n1\nr\n\n" }),
            json!({ "old_size": 0, "proof": [], "note": "two words\n1\nr\n\n" }),
            json!({ "proof": [], "note": "alpha/osmoda-ledger\n1\nr\n\n" }),
        ] {
            let (ok, body) = answer(&mut w, "mallory", &req);
            assert!(!ok);
            assert_eq!(body["refusal"], json!("bad_request"), "{body}");
            assert!(
                body.to_string().len() < 300,
                "the answer echoes nothing large: {body}"
            );
            assert_eq!(refusal_record(&w, "mallory", &req, &body), None);
        }
        // A well-formed unknown log is a refusal, with a bounded origin.
        let req = json!({ "old_size": 0, "proof": [], "note": "gamma/osmoda-ledger\n1\nr\n\n" });
        let (ok, body) = answer(&mut w, "mallory", &req);
        assert!(!ok);
        assert_eq!(body["refusal"], json!("unknown_log"));
        assert!(refusal_record(&w, "mallory", &req, &body).is_some());
    }

    /// Review 18-11 finding 1: the refusals one peer's traffic causes are recorded one by one
    /// up to the window's budget, the rest counted in one summary when the window ends; each
    /// peer has its own budget.
    #[test]
    fn a_peers_refusals_are_recorded_on_a_per_peer_budget_with_one_summary() {
        let t0 = std::time::Instant::now();
        let mut b = Budget::default();
        let admitted = (0..REFUSALS_PER_WINDOW + 25)
            .filter(|_| b.admit("mallory", t0))
            .count();
        assert_eq!(admitted, REFUSALS_PER_WINDOW as usize);
        assert!(b.admit("alpha", t0), "another peer has its own budget");
        assert!(
            b.ended(t0 + REFUSAL_WINDOW / 2).is_empty(),
            "window still open"
        );
        let summaries = b.ended(t0 + REFUSAL_WINDOW);
        assert_eq!(
            summaries,
            vec![
                json!({ "peer": "mallory", "refusals_not_recorded": 25, "window_secs": REFUSAL_WINDOW.as_secs() })
            ]
        );
        assert!(b.admit("mallory", t0 + REFUSAL_WINDOW), "a new window");
    }

    /// Review 18-11 finding 1: a third peer replaying a log's old checkpoint is not evidence
    /// against that log: the refusal names the pinned owner and says `relayed`.
    #[test]
    fn a_rollback_offered_by_another_peer_than_the_owner_is_marked_relayed() {
        let dir = tempfile::tempdir().unwrap();
        let (mut w, ledger, old, new) = checkpoints_at_6_and_10(dir.path());
        let proof = ledger.consistency_proof(0, 10).unwrap().proof;
        let req = json!({ "old_size": 0, "proof": proof, "note": new.note });
        assert!(
            answer(&mut w, "alpha", &req).0,
            "alpha's log cosigned; alpha owns it"
        );
        let replay = json!({ "old_size": 10, "proof": [], "note": old.note });
        let (_, body) = answer(&mut w, "mallory", &replay);
        let rec = refusal_record(&w, "mallory", &replay, &body).unwrap();
        assert_eq!(rec["refusal"], json!("rollback"));
        assert_eq!(rec["owner"], json!("alpha"));
        assert_eq!(rec["relayed"], json!(true));
        let (_, body) = answer(&mut w, "alpha", &replay);
        let rec = refusal_record(&w, "alpha", &replay, &body).unwrap();
        assert_eq!(
            rec["relayed"],
            json!(false),
            "from the owner it is evidence"
        );
    }

    /// Review 18-11 finding 7: a witness keeps the name its peers know it by (the name of
    /// `witness.vkey` for this seed); one with only a witness state keeps the old hostname
    /// name; only a new witness gets the unique name.
    #[test]
    fn an_existing_witness_keeps_its_name() {
        let seed = [9u8; 32];
        let dir = tempfile::tempdir().unwrap();
        let fresh = witness_name(dir.path(), &seed);
        assert_eq!(
            fresh,
            Witness::unique_name(&format!("{}/osmoda-witness", hostname()), &seed)
        );
        let old = Witness::open("old-host/osmoda-witness", seed, dir.path().join("x")).unwrap();
        std::fs::write(dir.path().join(VKEY_FILE), format!("{}\n", old.vkey())).unwrap();
        assert_eq!(witness_name(dir.path(), &seed), "old-host/osmoda-witness");
        // Another seed's vkey file (the key was replaced) names nothing for this one.
        assert_eq!(
            witness_name(dir.path(), &[8u8; 32]),
            Witness::unique_name(&format!("{}/osmoda-witness", hostname()), &[8u8; 32])
        );
        let legacy = tempfile::tempdir().unwrap();
        std::fs::write(legacy.path().join(STATE_FILE), "{}").unwrap();
        assert_eq!(
            witness_name(legacy.path(), &seed),
            format!("{}/osmoda-witness", hostname())
        );
    }
}
