//! Signed ledger checkpoints: every N events or T seconds (and at shutdown) agentd signs the
//! Merkle tree's size and root (`osmoda_ledger::CheckpointSigner`), appends the signed note to
//! `<state>/checkpoints.jsonl` (outside the database) and records it as an `agentd.checkpoint`
//! event. `agentctl verify-ledger` checks the database against that file.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use osmoda_ledger::{CheckpointFile, CheckpointSigner, SignedCheckpoint};
use serde_json::json;

use crate::{AppState, Shutdown};

/// File names under the state directory.
pub const CHECKPOINTS_FILE: &str = "checkpoints.jsonl";
/// The generated private key when no key file is configured (mode 0600).
pub const GENERATED_KEY_FILE: &str = "checkpoint.key";
/// The verifier key, written at every start (public).
pub const VKEY_FILE: &str = "checkpoint.vkey";

/// When to sign (`ledger.checkpoint` in agentd.json).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// Sign once this many events were appended since the last checkpoint (at least 1).
    pub every_events: u64,
    /// Sign at least this often while events keep arriving.
    pub interval: Duration,
    /// Signed-note private key (`PRIVATE+KEY+<origin>+…`); `None`: generated on first start as
    /// `<state>/checkpoint.key`, named `<hostname>/osmoda-ledger`.
    pub key_file: Option<PathBuf>,
}

impl Default for CheckpointSettings {
    fn default() -> Self {
        CheckpointSettings {
            every_events: 1000,
            interval: Duration::from_secs(60),
            key_file: None,
        }
    }
}

/// The signer and where its checkpoints go.
#[derive(Debug)]
pub struct Checkpointer {
    signer: CheckpointSigner,
    /// The append-only checkpoint file.
    pub file: CheckpointFile,
    settings: CheckpointSettings,
    /// Held while signing, so two checkpoints never interleave.
    lock: tokio::sync::Mutex<()>,
    /// Bumped after every checkpoint written (the witness task waits on it).
    pub signed: tokio::sync::watch::Sender<u64>,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty() && signed_name_ok(h))
        .unwrap_or_else(|| "localhost".into())
}

fn signed_name_ok(s: &str) -> bool {
    !s.chars().any(|c| c.is_whitespace() || c == '+')
}

/// Writes a new private key to `path` (mode 0600, created exclusively, synced).
fn write_new_key(path: &Path) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let (skey, _) = osmoda_ledger::generate_key(&format!("{}/osmoda-ledger", hostname()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{skey}\n").as_bytes())?;
    f.sync_all()?;
    Ok(())
}

impl Checkpointer {
    /// Loads (or, without a key file, creates) the key and writes the verifier key next to the
    /// checkpoints.
    ///
    /// # Errors
    /// A configured key file that is missing or not a signed-note Ed25519 key, or a state
    /// directory that cannot be written.
    pub fn open(state_dir: &Path, settings: CheckpointSettings) -> anyhow::Result<Checkpointer> {
        let key = match &settings.key_file {
            Some(k) => k.clone(),
            None => {
                let k = state_dir.join(GENERATED_KEY_FILE);
                if !k.exists() {
                    write_new_key(&k)?;
                    tracing::info!(key = %k.display(), "generated a ledger checkpoint key");
                }
                k
            }
        };
        let signer = CheckpointSigner::from_file(&key)?;
        std::fs::write(state_dir.join(VKEY_FILE), format!("{}\n", signer.vkey()))?;
        Ok(Checkpointer {
            signer,
            file: CheckpointFile::new(state_dir.join(CHECKPOINTS_FILE)),
            settings,
            lock: tokio::sync::Mutex::new(()),
            signed: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Holds off signing until the guard is dropped (a restore replacing the ledger and the
    /// checkpoint file under it).
    pub async fn hold(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.lock.lock().await
    }

    /// The verifier key.
    pub fn vkey(&self) -> &str {
        self.signer.vkey()
    }

    /// Signs the current tree, appends it to the file and records it in the ledger; returns the
    /// checkpoint and the id of the event recording it.
    ///
    /// # Errors
    /// The tree cannot be read, the file cannot be written or the event cannot be recorded.
    pub async fn checkpoint(&self, st: &AppState) -> anyhow::Result<(SignedCheckpoint, i64)> {
        let _held = self.lock.lock().await;
        let head = st.ledger.tree_head()?;
        let cp = self.signer.sign(&head)?;
        let file = self.file.clone();
        let line = cp.clone();
        tokio::task::spawn_blocking(move || file.append(&line)).await??;
        let ev = st
            .record(
                "agentd.checkpoint",
                "agentd",
                &json!({ "origin": cp.origin, "size": cp.size, "root": cp.root, "note": cp.note }),
            )
            .await
            .map_err(|e| anyhow::anyhow!("recording the checkpoint: {}", e.error))?;
        self.signed.send_modify(|n| *n = n.wrapping_add(1));
        Ok((cp, ev.id))
    }
}

/// Signs checkpoints as events arrive until `shutdown`, then once more if anything is new.
pub async fn run(st: Arc<AppState>, mut shutdown: Shutdown) {
    let Some(cp) = st.checkpoints.clone() else {
        return;
    };
    let mut commits = st.commits.subscribe();
    // Events up to `base` are covered by the newest checkpoint or are the event recording it,
    // which alone is no reason for another.
    let mut base = match cp.file.newest() {
        Ok(last) => last.map_or(0, |c| c.size + 1),
        Err(e) => {
            tracing::error!(error = %e, "reading the checkpoint file; starting from none");
            0
        }
    };
    let mut tick = tokio::time::interval(cp.settings.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        let (timer, stop) = tokio::select! {
            r = commits.changed() => (false, r.is_err()),
            _ = tick.tick() => (true, false),
            () = shutdown.wait() => (false, true),
        };
        let size = match st.ledger.tree_head() {
            Ok(h) => h.size,
            Err(e) => {
                tracing::error!(error = %e, "reading the ledger tree");
                if stop {
                    return;
                }
                continue;
            }
        };
        if size + 1 < base {
            // The ledger was restored to an earlier state: count from its newest checkpoint.
            base = cp.file.newest().ok().flatten().map_or(0, |c| c.size + 1);
        }
        let new = size.saturating_sub(base);
        let due = new >= cp.settings.every_events.max(1) || ((timer || stop) && new > 0);
        if due {
            match cp.checkpoint(&st).await {
                Ok((c, recorded)) => {
                    base = u64::try_from(recorded).unwrap_or(c.size + 1).max(c.size);
                    tracing::debug!(size = c.size, root = %c.root, "ledger checkpoint");
                }
                Err(e) => tracing::error!(error = %e, "ledger checkpoint failed; will retry"),
            }
            tick.reset();
        }
        if stop {
            return;
        }
    }
}
