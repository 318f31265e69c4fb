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
        if (!w.peers.is_empty() || !w.logs.is_empty()) && self.daemons.mesh.is_none() {
            return Err(
                "ledger.witness needs osmoda-mesh (services.osmoda.mesh.enable): witnesses talk over mesh links"
                    .into(),
            );
        }
        if let Some(k) = w
            .peers
            .values()
            .chain(w.logs.iter())
            .find(|k| !is_verifier_key(k))
        {
            return Err(format!(
                "ledger.witness: {k:?} is not a verifier key (<name>+<id>+<base64 key>)"
            ));
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

/// `<name>+<8 hex digits>+<base64 key>`: split at the first two `+` only, since standard
/// base64 (the key) may itself contain `+`.
fn is_verifier_key(k: &str) -> bool {
    let mut parts = k.splitn(3, '+');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), Some(id), Some(key)) => {
            !name.is_empty()
                && !name.contains(char::is_whitespace)
                && id.len() == 8
                && id.bytes().all(|b| b.is_ascii_hexdigit())
                && !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        }
        _ => false,
    }
}

#[cfg(test)]
mod verifier_key_tests {
    /// A key whose base64 holds `+` (about one in three random keys) is a key; shapes that are
    /// not are refused.
    #[test]
    fn verifier_keys_are_split_at_the_first_two_plus_signs() {
        for (k, ok) in [
            (
                "o.example/osmoda-ledger+fe65e6b4+AfJzfFyEBkDJamb2OejlJ+eI8GH4GPehix8nOpoDHV4W",
                true,
            ),
            (
                "o.example/osmoda-ledger+fe65e6b4+AfJzfFyEBkDJamb2OejlJeI8GH4GPehix8nOpoDHV4W",
                true,
            ),
            ("o.example/osmoda-ledger+fe65e6b4", false),
            ("+fe65e6b4+AfJz", false),
            ("o+fe65e6b+AfJz", false),
            ("o+fe65e6b4+", false),
            ("o+fe65e6b4+Af Jz", false),
        ] {
            assert_eq!(super::is_verifier_key(k), ok, "{k}");
        }
    }
}
