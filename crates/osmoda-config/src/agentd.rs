//! `/etc/osmoda/agentd.json`: approvals, memory and where the other daemons listen.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole `agentd.json` file.
///
/// The socket, state dir, approval socket and config tree come from command-line flags, not
/// from this file, so tests and the local backend can run agentd unprivileged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentdConfig {
    /// Human-approval rules (`services.osmoda.approvalRequired`, `agentd.approvalTtlSecs`).
    pub approval: ApprovalConfig,
    /// Memory system settings (`services.osmoda.memory`).
    pub memory: MemoryConfig,
    /// Sockets of the enabled sibling daemons; `None` when a daemon is disabled.
    pub daemons: DaemonEndpoints,
    /// The ledger's signed checkpoints (`services.osmoda.agentd.ledger`); absent: defaults.
    #[serde(default)]
    pub ledger: LedgerConfig,
    /// Backups (`services.osmoda.agentd.backup`); absent: archives in agentd's state dir, all
    /// kept, no other sources.
    #[serde(default)]
    pub backup: BackupConfig,
    /// Files the agent writes (`services.osmoda.agentd.writableRoots`); absent: defaults.
    #[serde(default)]
    pub files: FilesConfig,
}

/// Where the agent writes files freely: scratch space, service data and home directories (their
/// login files still need a person). `/etc`, `/boot`, `/usr`, `/nix`, `/root`, `/run`,
/// `/var/lib/nixos` and everything else need a ticket. Also lib/default.nix's
/// `agentd.writableRoots` default.
pub const DEFAULT_WRITABLE_ROOTS: &[&str] = &[
    "/tmp",
    "/var/tmp",
    "/srv",
    "/opt",
    "/home",
    "/var/lib",
    "/var/cache",
    "/var/www",
];

/// The agent's file writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesConfig {
    /// Absolute directories `/fs/write` (and `/system/exec`'s `writable` paths) write without a
    /// person's approval; a write anywhere else takes the gate's ticket (`fs.outside_roots`).
    /// Login files and credentials below them still do (`fs.login`). Empty: every write needs
    /// a ticket.
    pub writable_roots: Vec<PathBuf>,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            writable_roots: DEFAULT_WRITABLE_ROOTS.iter().map(PathBuf::from).collect(),
        }
    }
}

/// Where backups go, how many are kept and which directories they cover.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackupConfig {
    /// Archive directory; `None`: `<agentd state dir>/backups`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Keep at most this many archives (at least 1); `None`: keep all.
    #[serde(default)]
    pub keep: Option<u64>,
    /// Directories archived besides agentd's own state, by name (`[a-z0-9_-]`, at most 64
    /// bytes): the other daemons' state dirs and the memory dir.
    #[serde(default)]
    pub sources: std::collections::BTreeMap<String, PathBuf>,
}

/// Ledger settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// Signed checkpoints of the ledger's Merkle tree.
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
    /// Witnesses over the mesh: peers cosigning this ledger's checkpoints, and the logs this
    /// machine cosigns for its peers.
    #[serde(default)]
    pub witness: WitnessConfig,
}

/// `ledger.witness` (`services.osmoda.agentd.ledger.witness`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WitnessConfig {
    /// Mesh peer name → its witness verifier key (`<name>+<id>+<key>`, the peer's
    /// `witness.vkey`): asked to cosign every checkpoint.
    #[serde(default)]
    pub peers: std::collections::BTreeMap<String, String>,
    /// Checkpoint verifier keys of the peers' ledgers this machine cosigns (their
    /// `checkpoint.vkey`).
    #[serde(default)]
    pub logs: Vec<String>,
    /// The witness key (64 hex digits); `None`: generated in agentd's state dir.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
}

/// When agentd signs a checkpoint, and with which key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Sign checkpoints at all.
    pub enable: bool,
    /// Sign after this many new events (at least 1).
    pub every_events: u64,
    /// Sign at least this often while events arrive, in seconds (at least 1).
    pub interval_secs: u64,
    /// Signed-note Ed25519 private key (`agentctl ledger keygen`); `None`: agentd generates one
    /// in its state dir (mode 0600) on first start, named `<hostname>/osmoda-ledger/<16 hex of its key's hash>`.
    pub key_file: Option<PathBuf>,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            enable: true,
            every_events: 1000,
            interval_secs: 60,
            key_file: None,
        }
    }
}

/// Which operations need a human approval ticket, and how long a ticket lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalConfig {
    /// Operation kinds needing approval, e.g. `"service.remove"`, `"wallet.delete"`;
    /// a trailing `*` matches a prefix (`"user.*"`).
    pub required: Vec<String>,
    /// Lifetime of an approval ticket in seconds (at least 1).
    pub ttl_secs: u64,
    /// Packages whose removal by a switch needs approval.
    pub critical_packages: Vec<String>,
}

/// Memory system settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryConfig {
    /// OpenAI-compatible embeddings endpoint (loopback URL); `None` = keyword search only.
    pub embedding_endpoint: Option<String>,
    /// Embedding model name sent to the endpoint.
    pub embedding_model: String,
    /// Upper bound of tokens injected into one prompt by recall.
    pub max_injected_tokens: u32,
    /// Relevance thresholds by embedding model name (`services.osmoda.memory.relevanceThresholds`):
    /// the cosine similarity a chunk sharing too few of the query's words must reach to be
    /// recalled. A threshold is measured for one model (another model's similarities spread
    /// differently); a model with none here or in osmoda-memory's measured table recalls only
    /// chunks that share the query's words.
    #[serde(default)]
    pub relevance_thresholds: std::collections::BTreeMap<String, Similarity>,
}

/// A cosine similarity in [-1, 1].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Similarity(pub f32);

// JSON has no NaN, so every value a config can hold compares equal to itself.
impl Eq for Similarity {}

/// Where agentd reaches the other daemons.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonEndpoints {
    /// osmoda-watch socket.
    pub watch: Option<PathBuf>,
    /// osmoda-routines socket.
    pub routines: Option<PathBuf>,
    /// osmoda-keyd socket.
    pub keyd: Option<PathBuf>,
    /// osmoda-mesh socket.
    pub mesh: Option<PathBuf>,
    /// osmoda-voice socket.
    pub voice: Option<PathBuf>,
    /// osmoda-egress listen address (`host:port`).
    pub egress: Option<String>,
}

impl AgentdConfig {
    /// Semantic checks.
    ///
    /// # Errors
    /// Returns a message with the JSON path of the first bad value.
    pub fn validate(&self) -> Result<(), String> {
        if self.approval.ttl_secs == 0 {
            return Err("approval.ttl_secs must be at least 1".into());
        }
        if let Some(r) = self.approval.required.iter().find(|r| r.trim().is_empty()) {
            return Err(format!("approval.required contains an empty rule {r:?}"));
        }
        let cp = &self.ledger.checkpoint;
        if cp.every_events == 0 {
            return Err("ledger.checkpoint.every_events must be at least 1".into());
        }
        if cp.interval_secs == 0 {
            return Err("ledger.checkpoint.interval_secs must be at least 1".into());
        }
        for root in &self.files.writable_roots {
            let ok = root.is_absolute()
                && root
                    .components()
                    .all(|c| !matches!(c, std::path::Component::ParentDir));
            if !ok {
                return Err(format!(
                    "files.writable_roots: {} must be an absolute path without `..`",
                    root.display()
                ));
            }
        }
        let w = &self.ledger.witness;
        for (peer, k) in &w.peers {
            verifier_key(k, WITNESS_KEY_ALG).map_err(|why| {
                format!("ledger.witness.peers.{peer}: {k:?} is not a witness verifier key (a peer's witness.vkey): {why}")
            })?;
        }
        for k in &w.logs {
            verifier_key(k, LOG_KEY_ALG).map_err(|why| {
                format!("ledger.witness.logs: {k:?} is not a checkpoint verifier key (a peer's checkpoint.vkey): {why}")
            })?;
        }
        if (!w.peers.is_empty() || !w.logs.is_empty()) && self.daemons.mesh.is_none() {
            return Err(
                "ledger.witness needs osmoda-mesh (services.osmoda.mesh.enable): witnesses talk over mesh links"
                    .into(),
            );
        }
        if self.backup.keep == Some(0) {
            return Err("backup.keep must be at least 1 (or null to keep every backup)".into());
        }
        if let Some(bad) = self.backup.sources.keys().find(|n| {
            n.is_empty()
                || n.len() > 64
                || !n
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
        }) {
            return Err(format!(
                "backup.sources: invalid name {bad:?} (use 1-64 of [a-z0-9_-])"
            ));
        }
        if let Some((model, t)) = self
            .memory
            .relevance_thresholds
            .iter()
            .find(|(m, t)| m.trim().is_empty() || !(-1.0..=1.0).contains(&t.0))
        {
            return Err(format!(
                "memory.relevance_thresholds.{model:?} = {}: a threshold is a cosine similarity in [-1, 1] for a named model",
                t.0
            ));
        }
        if let Some(url) = &self.memory.embedding_endpoint {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!(
                    "memory.embedding_endpoint {url:?} must be an http(s) URL"
                ));
            }
        }
        Ok(())
    }
}

/// The algorithm byte of a signed-note Ed25519 key (a log's checkpoint key).
pub const LOG_KEY_ALG: u8 = 0x01;
/// The algorithm byte of a C2SP `tlog-cosignature` key (a witness's key).
pub const WITNESS_KEY_ALG: u8 = 0x04;

/// Checks a verifier key completely, as agentd's witness will use it:
/// `<name>+<8 hex digits>+<base64 of alg ‖ 32-byte Ed25519 key>` (split at the first two `+`
/// only, since standard base64 may itself contain `+`), the algorithm byte `alg`, the key a
/// valid Ed25519 point, and the id the first 4 bytes of SHA-256(name ‖ "\n" ‖ alg ‖ key), so a
/// one-character typo is refused here rather than turning witnessing off at start.
///
/// # Errors
/// What is wrong with it.
pub fn verifier_key(k: &str, alg: u8) -> Result<(), String> {
    use base64::Engine as _;
    use sha2::Digest as _;
    let mut parts = k.splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err("expected <name>+<8 hex digits>+<base64 key>".into());
    };
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '+') {
        return Err("the name is empty or holds a space".into());
    }
    if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("the id is not 8 hex digits".into());
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|e| format!("the key is not base64: {e}"))?;
    if bytes.len() != 33 || bytes[0] != alg {
        return Err(format!(
            "the key is not 33 bytes starting with algorithm {alg:#04x} ({} bytes{})",
            bytes.len(),
            bytes
                .first()
                .map(|a| format!(", algorithm {a:#04x}"))
                .unwrap_or_default()
        ));
    }
    let mut public = [0u8; 32];
    public.copy_from_slice(&bytes[1..]);
    ed25519_dalek::VerifyingKey::from_bytes(&public)
        .map_err(|_| "the key is not an Ed25519 public key".to_string())?;
    let mut h = sha2::Sha256::new();
    h.update(name.as_bytes());
    h.update(b"\n");
    h.update(&bytes);
    let want = hex_lower(&h.finalize()[..4]);
    if !id.eq_ignore_ascii_case(&want) {
        return Err(format!(
            "its id {id} does not match its name and key ({want}): a character of the key or name was changed"
        ));
    }
    Ok(())
}

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod verifier_key_tests {
    use super::{verifier_key, LOG_KEY_ALG, WITNESS_KEY_ALG};

    /// A log key (signed-note Ed25519, alg 1) whose base64 holds `+`, and a witness key (alg
    /// 4), both made by another implementation (Python `cryptography`, seeds 8 and 2).
    const LOG: &str =
        "o.example/osmoda-ledger+6698417f+AROY9ixtGkV8UbpqS189vS9p/KkyFiGNyJl+QWvRfZPK";
    const WITNESS: &str =
        "o.example/osmoda-witness+e8cef19c+BIE5dw6ofRdfVqNUZsNMfszLjYqRtO43ol32D1uPybOU";

    /// Review 18-11 finding 2: every shape that passed the old check but is no key the witness
    /// can use is refused: undecodable base64, wrong length, wrong algorithm, an id that does
    /// not match, a one-character typo, the wrong kind of key for the list.
    #[test]
    fn verifier_keys_are_checked_completely() {
        let cases: Vec<(String, u8, bool)> = vec![
            (LOG.into(), LOG_KEY_ALG, true),
            (WITNESS.into(), WITNESS_KEY_ALG, true),
            (
                "o.example/osmoda-ledger+fe65e6b4".into(),
                LOG_KEY_ALG,
                false,
            ),
            ("+fe65e6b4+AfJz".into(), LOG_KEY_ALG, false),
            ("o+fe65e6b+AfJz".into(), LOG_KEY_ALG, false),
            ("o+fe65e6b4+".into(), LOG_KEY_ALG, false),
            ("o+fe65e6b4+Af Jz".into(), LOG_KEY_ALG, false),
            ("x+00000000+AAAA".into(), LOG_KEY_ALG, false),
            (LOG.replace("6698417f", "6698417e"), LOG_KEY_ALG, false),
            (LOG.replace("QWvR", "QWvS"), LOG_KEY_ALG, false),
            (LOG.replace("o.example", "p.example"), LOG_KEY_ALG, false),
            (LOG.into(), WITNESS_KEY_ALG, false),
            (WITNESS.into(), LOG_KEY_ALG, false),
            (format!("{LOG}AA"), LOG_KEY_ALG, false),
        ];
        for (k, alg, ok) in cases {
            assert_eq!(
                verifier_key(&k, alg).is_ok(),
                ok,
                "{k}: {:?}",
                verifier_key(&k, alg)
            );
        }
    }
}
