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
/// Every verifier key this ledger was signed with, oldest first, one per line: a key rotation
/// (a new `keyFile`, or the generated key replaced by one) appends the new key at start and
/// keeps the old ones, each retired with the ledger's size at the rotation (`<vkey> <last
/// size>`, [`osmoda_ledger::KeyRange`]): older checkpoints still verify, and a rotated-out key
/// verifies nothing it could sign after it was retired.
pub const VKEYS_FILE: &str = "checkpoint.vkeys";

/// When to sign (`ledger.checkpoint` in agentd.json).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointSettings {
    /// Sign once this many events were appended since the last checkpoint (at least 1).
    pub every_events: u64,
    /// Sign at least this often while events keep arriving.
    pub interval: Duration,
    /// Signed-note private key (`PRIVATE+KEY+<origin>+…`); `None`: generated on first start as
    /// `<state>/checkpoint.key`, named `<hostname>/osmoda-ledger/<16 hex of the key's hash>`.
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
    /// Why agentd refuses to sign: its rows or stored tree no longer agree with the newest
    /// checkpoint it signed (set by [`Checkpointer::check`], kept until agentd restarts).
    tampered: std::sync::Mutex<Option<String>>,
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
    // The name (the checkpoints' origin) ends in the key's own hash: machines installed from
    // one configuration share a hostname, and witnesses tell logs apart by origin and key.
    let (skey, _) = osmoda_ledger::generate_unique_key(&format!("{}/osmoda-ledger", hostname()))?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(format!("{skey}\n").as_bytes())?;
    f.sync_all()?;
    Ok(())
}

/// The verifier keys in `path`, one per line (none when it does not exist); blank lines and
/// `#` comments (an operator's notes) are skipped, as `agentctl verify-ledger` skips them.
///
/// # Errors
/// The file exists but cannot be read.
pub fn read_vkeys(path: &Path) -> std::io::Result<Vec<String>> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_owned)
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Checks that the checkpoint key at `path` is agentd's secret: a regular file owned by
/// agentd's user that group and others cannot read (whoever reads it signs checkpoints that
/// verify as this machine's).
///
/// # Errors
/// Missing, not a regular file, another owner, or readable by group/others; naming the fix.
pub fn check_key_file(path: &Path) -> anyhow::Result<()> {
    check_secret_key(
        path,
        "the checkpoint key",
        "sign checkpoints as this machine",
        "make one with `agentctl ledger keygen`",
    )
}

/// The one rule for every signing key agentd loads (the checkpoint key, the witness key): a
/// regular file (a link to one is followed: secret managers place keys as links), owned by agentd's user, no permission for group
/// or others. `what` names the key, `power` what a reader of it could do, `make` how to get one.
///
/// # Errors
/// Missing, not a regular file, another owner, or readable by group/others; naming the fix.
pub fn check_secret_key(path: &Path, what: &str, power: &str, make: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::MetadataExt as _;
    let m = std::fs::metadata(path)
        .map_err(|e| anyhow::anyhow!("reading {what} {}: {e} ({make})", path.display()))?;
    anyhow::ensure!(
        m.is_file(),
        "{what} {} is not a regular file",
        path.display()
    );
    let me = nix::unistd::geteuid().as_raw();
    anyhow::ensure!(
        m.uid() == me,
        "{what} {} is owned by uid {}, not agentd's uid {me}: chown it",
        path.display(),
        m.uid()
    );
    anyhow::ensure!(
        m.mode() & 0o077 == 0,
        "{what} {} has mode {:04o}: group or others can read it and {power}; chmod 0600 it",
        path.display(),
        m.mode() & 0o7777
    );
    Ok(())
}

/// Records `current` as the key that signs from now on in the key history `path`: a new key
/// retires every earlier one at `ledger_size` (the file is replaced atomically). A key that was
/// retired never signs again: keys are rotated out because they may have leaked.
///
/// # Errors
/// The history cannot be read or written, holds a line that does not parse, or retired
/// `current` before.
fn rotate(path: &Path, current: &str, ledger_size: u64) -> anyhow::Result<()> {
    let known = read_vkeys(path)?;
    let mut lines = Vec::with_capacity(known.len() + 1);
    for (n, line) in known.iter().enumerate() {
        let k = osmoda_ledger::KeyRange::parse(line).map_err(|e| {
            anyhow::anyhow!(
                "{} key {} does not parse ({e}): fix or remove that line of this machine's state dir (`<verifier key>` or `<verifier key> <last size>`)",
                path.display(),
                n + 1
            )
        })?;
        if k.vkey == current {
            match k.last_size {
                None => return Ok(()),
                Some(last) => anyhow::bail!(
                    "the checkpoint key {current} was retired when the ledger had {last} events ({}): a rotated-out key never signs again; make a new one with `agentctl ledger keygen`",
                    path.display()
                ),
            }
        }
        lines.push(match k.last_size {
            Some(_) => line.clone(),
            None => format!("{} {ledger_size}", k.vkey),
        });
    }
    if !known.is_empty() {
        tracing::warn!(old = %known.join(", "), new = %current, retired_at = ledger_size, "the ledger checkpoint key changed; the old verifier keys stay in {} with the size where they were retired", path.display());
    }
    lines.push(current.to_owned());
    let tmp = path.with_extension("vkeys.tmp");
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(format!("{}\n", lines.join("\n")).as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Checkpointer {
    /// Loads (or, without a key file, creates) the key and writes the verifier key next to the
    /// checkpoints.
    ///
    /// # Errors
    /// A configured key file that is missing or not a signed-note Ed25519 key, or a state
    /// directory that cannot be written.
    /// `ledger_size` is the ledger's size now: a key rotated out here is retired at it.
    pub fn open(
        state_dir: &Path,
        settings: CheckpointSettings,
        ledger_size: u64,
    ) -> anyhow::Result<Checkpointer> {
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
        check_key_file(&key)?;
        let signer = CheckpointSigner::from_file(&key)?;
        std::fs::write(state_dir.join(VKEY_FILE), format!("{}\n", signer.vkey()))?;
        rotate(&state_dir.join(VKEYS_FILE), signer.vkey(), ledger_size)?;
        let file = CheckpointFile::new(state_dir.join(CHECKPOINTS_FILE));
        if let Some(what) = file.repair()? {
            tracing::warn!(file = %file.path().display(), "{what}");
        }
        Ok(Checkpointer {
            signer,
            file,
            settings,
            lock: tokio::sync::Mutex::new(()),
            signed: tokio::sync::watch::Sender::new(0),
            tampered: std::sync::Mutex::new(None),
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

    /// Every verifier key this ledger was signed with ([`VKEYS_FILE`]), the current one last,
    /// retired ones with their range ([`osmoda_ledger::KeyRange`] lines).
    pub fn vkeys(&self) -> Vec<String> {
        let dir = self.file.path().parent().unwrap_or(Path::new("."));
        let mut keys = read_vkeys(&dir.join(VKEYS_FILE)).unwrap_or_default();
        if !keys.iter().any(|k| k.as_str() == self.vkey()) {
            keys.push(self.vkey().to_owned());
        }
        keys
    }

    /// Why agentd refuses to sign, when it does (`/health` shows it under `degraded`).
    pub fn tampered(&self) -> Option<String> {
        self.tampered.lock().ok().and_then(|t| t.clone())
    }

    /// The newest checkpoint this ledger was signed with (by one of [`Checkpointer::vkeys`]),
    /// from the checkpoint file and from the ledger's own `agentd.checkpoint` events, whichever
    /// is newer: removing or emptying the file does not make agentd forget it. `Ok(Err(why))`
    /// when a checkpoint in either verifies under no key in its range (a changed signature,
    /// size or root, or a retired key's past its range): the same verdict as `agentctl
    /// verify-ledger`, which fails on it, so agentd does not sign on top of an older one.
    fn newest_signed(
        &self,
        st: &AppState,
    ) -> Result<Result<Option<SignedCheckpoint>, String>, osmoda_ledger::LedgerError> {
        let keys = self.vkeys();
        let mut all = self.file.read()?;
        all.extend(
            osmoda_ledger::recorded_checkpoints(st.ledger.path())?
                .into_iter()
                .map(|(_, c)| c),
        );
        for c in &all {
            let mut why = String::from("no verifier key");
            let ok = keys.iter().any(|k| {
                osmoda_ledger::verify_signed_in_range(c, k)
                    .map_err(|e| why = e.to_string())
                    .is_ok()
            });
            if !ok {
                return Ok(Err(format!(
                    "the signed checkpoint of size {} (in {} or an agentd.checkpoint event) verifies under none of this ledger's keys ({why}): a checkpoint record was changed",
                    c.size,
                    self.file.path().display()
                )));
            }
        }
        Ok(Ok(all.into_iter().max_by_key(|c| c.size)))
    }

    /// Checks the ledger against the newest checkpoint agentd signed: as many rows as tree
    /// leaves, at least as many as the checkpoint covers, and the stored tree's root at its size
    /// is the signed root (the consistency of the current tree with it). `full` (at start) also
    /// recomputes the root from every row and compares it with the stored tree's, so a row
    /// edited with its chain and tree rebuilt shows. On a disagreement agentd stops signing
    /// (until it restarts on a ledger that agrees), logs an error, records
    /// `agentd.ledger.tampered` once and `/health` reports it. Returns the disagreement.
    ///
    /// # Errors
    /// The ledger or the checkpoint file cannot be read.
    pub async fn check(&self, st: &AppState, full: bool) -> anyhow::Result<Option<String>> {
        if let Some(t) = self.tampered() {
            return Ok(Some(t));
        }
        let newest = match self.newest_signed(st) {
            Ok(Ok(Some(n))) => n,
            Ok(Ok(None)) => return Ok(None),
            Ok(Err(problem)) => return Ok(Some(self.tamper(st, problem, json!({})).await)),
            // The ledger and the file were readable, but a checkpoint record in them is not a
            // checkpoint: evidence that does not parse is tamper evidence like evidence that
            // does not verify (an edited record would otherwise switch the check off).
            Err(osmoda_ledger::LedgerError::Malformed(what)) => {
                let problem = format!(
                    "a record of a signed checkpoint is not a checkpoint ({what}): the ledger's agentd.checkpoint events or {} were changed",
                    self.file.path().display()
                );
                return Ok(Some(self.tamper(st, problem, json!({})).await));
            }
            Err(e) => return Err(e.into()),
        };
        let (head, rows, signed_root) = st.ledger.tree_snapshot(newest.size)?;
        let path = st.ledger.path().to_path_buf();
        let problem = if rows != head.size {
            Some(format!(
                "the ledger has {rows} rows but its stored tree {} leaves (rows were removed or added outside agentd)",
                head.size
            ))
        } else if head.size < newest.size {
            Some(format!(
                "the ledger has {rows} events but the newest signed checkpoint covers {} (events were removed from the end)",
                newest.size
            ))
        } else if signed_root.as_deref() != Some(newest.root.as_str()) {
            Some(format!(
                "the tree at size {} is not the one signed in the newest checkpoint (root {}): events up to {} were changed",
                newest.size, newest.root, newest.size
            ))
        } else if full && {
            let size = head.size;
            tokio::task::spawn_blocking(move || osmoda_ledger::rows_root(&path, size)).await??
        } != head.root
        {
            Some(
                "the rows no longer give the stored tree's root: an event was changed after it was written (agentctl verify-ledger names it)"
                    .to_owned(),
            )
        } else {
            None
        };
        let Some(problem) = problem else {
            return Ok(None);
        };
        let payload = json!({
            "checkpoint": { "size": newest.size, "root": newest.root },
            "tree": { "size": head.size, "root": head.root },
            "rows": rows,
        });
        Ok(Some(self.tamper(st, problem, payload).await))
    }

    /// Stops signing for `problem` (until a restart on a ledger that agrees), logs it and
    /// records `agentd.ledger.tampered` with `problem` and `payload`'s fields; returns it.
    async fn tamper(
        &self,
        st: &AppState,
        problem: String,
        mut payload: serde_json::Value,
    ) -> String {
        if let Ok(mut t) = self.tampered.lock() {
            *t = Some(problem.clone());
        }
        tracing::error!(problem = %problem, "the ledger does not agree with its newest signed checkpoint; agentd will not sign checkpoints over it (agentctl verify-ledger shows what changed; restore a backup or move the state aside, then restart agentd)");
        payload["problem"] = json!(problem);
        if let Err(e) = st
            .record("agentd.ledger.tampered", "agentd", &payload)
            .await
        {
            tracing::error!(error = %e.error, "recording agentd.ledger.tampered");
        }
        problem
    }

    /// Records the file's newest checkpoint in the ledger when agentd stopped between writing
    /// it and recording it (the two copies must agree; `recovered: true` marks it).
    ///
    /// # Errors
    /// The file or the ledger cannot be read, or the event cannot be recorded.
    pub async fn record_unrecorded(&self, st: &AppState) -> anyhow::Result<()> {
        let Some(newest) = self.file.newest()? else {
            return Ok(());
        };
        let recorded = osmoda_ledger::recorded_checkpoints(st.ledger.path())?;
        if recorded.iter().any(|(_, r)| r.note == newest.note) {
            return Ok(());
        }
        tracing::warn!(size = newest.size, "the newest checkpoint was not recorded in the ledger (agentd stopped while checkpointing); recording it now");
        st.record(
            "agentd.checkpoint",
            "agentd",
            &json!({ "origin": newest.origin, "size": newest.size, "root": newest.root, "note": newest.note, "recovered": true }),
        )
        .await
        .map_err(|e| anyhow::anyhow!("recording the checkpoint: {}", e.error))?;
        Ok(())
    }

    /// Signs the current tree, appends it to the file and records it in the ledger; returns the
    /// checkpoint and the id of the event recording it. Refuses while the ledger disagrees with
    /// the newest checkpoint ([`Checkpointer::check`]).
    ///
    /// # Errors
    /// The ledger disagrees with the newest checkpoint, the tree cannot be read, the file
    /// cannot be written or the event cannot be recorded.
    pub async fn checkpoint(&self, st: &AppState) -> anyhow::Result<(SignedCheckpoint, i64)> {
        let _held = self.lock.lock().await;
        if let Some(problem) = self.check(st, false).await? {
            anyhow::bail!("refusing to sign a checkpoint: {problem}");
        }
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
    // Subscribed first: events appended while the start check runs still wake the loop.
    let mut commits = st.commits.subscribe();
    // Before anything is signed: the ledger must agree with the newest checkpoint signed.
    match cp.check(&st, true).await {
        Ok(None) => {
            if let Err(e) = cp.record_unrecorded(&st).await {
                tracing::error!(error = %e, "recording the newest checkpoint");
            }
        }
        Ok(Some(_)) => {} // logged, recorded and on /health by check
        Err(e) => tracing::error!(error = %e, "checking the ledger against its checkpoints"),
    }
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
    // The first round does not wait: events appended before this task subscribed (agentd's
    // first requests can beat it) or while agentd was down are counted now, not at the next
    // commit or tick.
    let mut first = true;
    loop {
        let (timer, stop) = if std::mem::take(&mut first) {
            (false, false)
        } else {
            tokio::select! {
                r = commits.changed() => (false, r.is_err()),
                _ = tick.tick() => (true, false),
                () = shutdown.wait() => (false, true),
            }
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
                Ok((c, _recorded)) => {
                    // Covered: the checkpoint's size and the one event recording it. Events
                    // appended between the signature and that record are not, and count.
                    base = c.size + 1;
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
