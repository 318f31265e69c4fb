//! Restoring a backup: verify everything first, then roll forward from a journal.
//!
//! [`prepare`] extracts the archive into a staging directory, checking every file against the
//! manifest, the archived ledger's chain and its own checkpoints, and how it relates to the
//! current ledger (a prefix of it, or another history). Nothing live changes before the
//! journal `<state>/restore.json` is durable; from then on [`apply`] only moves verified
//! staged content into place, each step idempotent, and [`recover`] (at agentd's start) runs
//! the same steps again after a crash. So a `kill -9` at any moment ends, after the restart,
//! in the old state (journal not yet written) or the new one (journal written), never a mix.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::{
    archive, git, io, mkdir_private, place, sync_dir, write_atomic, BackupError, BackupSettings,
    LedgerState, Manifest, AGENTD_FILES,
};
use crate::AppState;

/// The journal of a restore in progress, in agentd's state dir.
pub const JOURNAL: &str = "restore.json";

/// Created in the staging directory once the restored ledger is in place (archive paths never
/// start with a dot, so no archived file has this name).
const LEDGER_DONE: &str = ".ledger-restored";

/// A verified restore, written as [`JOURNAL`] before anything live changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    /// The backup id.
    pub backup_id: String,
    /// SHA-256 of the archive's manifest.
    pub manifest_sha256: String,
    /// The verified, extracted archive.
    pub staging: PathBuf,
    /// The archive's manifest.
    pub manifest: Manifest,
    /// The ledger before the restore.
    pub previous: LedgerState,
    /// Where each archived source goes (its directory as configured now).
    pub targets: BTreeMap<String, PathBuf>,
    /// The config tree to reset, when the archive has one.
    pub tree: Option<PathBuf>,
    /// Who asked.
    pub actor: String,
    /// The approval ticket that let it through.
    pub ticket: Option<String>,
    /// Whether the person forced a restore that the checks refused.
    pub forced: bool,
    /// Names what this restore keeps aside (`<backup id>-r<time>`), so a second restore of the
    /// same backup keeps its own copies (journals of older versions: the backup id).
    #[serde(default)]
    pub kept: String,
}

impl Journal {
    /// The name of what this restore keeps aside.
    pub fn tag(&self) -> &str {
        if self.kept.is_empty() {
            &self.backup_id
        } else {
            &self.kept
        }
    }
}

/// What [`prepare`] found: the staged archive and what restoring it would change.
#[derive(Debug)]
pub struct Prepared {
    /// The journal to write (without actor and ticket yet).
    pub journal: Journal,
    /// Why the restore needs `force` (empty: it does not).
    pub needs_force: Vec<String>,
    /// The effect in words, for the approval ticket.
    pub effect: Vec<String>,
}

/// Verifies and stages backup `id` from `dir` against the live ledger of `st` (blocking).
///
/// # Errors
/// [`BackupError::Corrupt`] for any mismatch in the archive; [`BackupError::UnknownSource`] or
/// [`BackupError::Refused`] when it cannot be restored here. Nothing live is changed.
pub fn prepare(
    st: &AppState,
    dir: &Path,
    id: &str,
    settings: &BackupSettings,
) -> Result<Prepared, BackupError> {
    if let Some(left) = pending(&st.state_dir) {
        return Err(BackupError::Refused(format!("{left}; nothing was changed")));
    }
    let file = super::archive_path(dir, id)?;
    let staging = dir.join(format!(".restore-{id}"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(format!("clearing {}", staging.display())))?;
    }
    mkdir_private(&staging)?;
    let result = check(st, &file, &staging, id, settings);
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    result
}

fn check(
    st: &AppState,
    file: &Path,
    staging: &Path,
    id: &str,
    settings: &BackupSettings,
) -> Result<Prepared, BackupError> {
    let corrupt = |reason: String| BackupError::Corrupt {
        id: id.into(),
        reason,
    };
    let (manifest, digest) = archive::extract_verified(file, staging)?;
    let tag = format!("{id}-r{}", &super::stamped_id()?[..18]);
    let ledger_file = staging.join("agentd/ledger.db");
    let report = osmoda_ledger::verify(&ledger_file)?;
    if let Some(bad) = report.first_bad {
        return Err(corrupt(format!(
            "the archived ledger's chain breaks at event {} ({:?})",
            bad.id, bad.reason
        )));
    }
    // Only agentd's own schema comes back: no triggers, views or other objects.
    let foreign = osmoda_ledger::foreign_objects(&ledger_file)?;
    if !foreign.is_empty() {
        return Err(corrupt(format!(
            "the archived ledger holds schema objects a ledger does not have ({})",
            foreign.join(", ")
        )));
    }
    for f in manifest
        .files
        .iter()
        .filter(|f| f.kind == "sqlite" && f.path.starts_with("sources/"))
    {
        let active = osmoda_ledger::sqlite_active_objects(&staging.join(&f.path))?;
        if !active.is_empty() {
            return Err(corrupt(format!(
                "{} holds triggers or views ({}), which a restore does not install",
                f.path,
                active.join(", ")
            )));
        }
    }
    let archived = super::ledger_state(&ledger_file)?;
    if archived != manifest.ledger {
        return Err(corrupt(
            "the archived ledger is not the one the manifest describes".into(),
        ));
    }
    if let Some(cp) = &st.checkpoints {
        let cps = staging
            .join("agentd")
            .join(crate::checkpoints::CHECKPOINTS_FILE);
        if cps.is_file() {
            let list = osmoda_ledger::CheckpointFile::new(&cps).read()?;
            // With every key this ledger was signed with (a rotation keeps the old ones).
            let keys = cp.vkeys();
            // A key line of this machine's checkpoint.vkeys that does not parse is this state
            // dir's fault, not the archive's.
            if let Some((n, e)) = keys
                .iter()
                .enumerate()
                .find_map(|(n, k)| osmoda_ledger::KeyRange::parse(k).err().map(|e| (n + 1, e)))
            {
                return Err(super::BackupError::Refused(format!(
                    "this machine's {} key {n} does not parse ({e}); fix that line of the state dir, then restore again; nothing was changed",
                    crate::checkpoints::VKEYS_FILE
                )));
            }
            let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
            let anchor = osmoda_ledger::verify_checkpoints_by(&ledger_file, &list, &keys)
                .map_err(|e| corrupt(format!("the archived checkpoints do not verify: {e}")))?;
            if !anchor.is_ok() {
                return Err(corrupt(
                    "the archived ledger does not match its own signed checkpoints".into(),
                ));
            }
        }
    }
    let head = st.ledger.tree_head()?;
    let current = LedgerState {
        size: head.size,
        root: head.root.clone(),
    };
    let mut needs_force = Vec::new();
    let mut effect = Vec::new();
    let common = archived.size.min(current.size);
    let ours = if common == current.size {
        current.root.clone()
    } else {
        st.ledger.root_at(common)?
    };
    let theirs = if common == archived.size {
        archived.root.clone()
    } else {
        osmoda_ledger::rows_root(&ledger_file, common)?
    };
    if ours != theirs {
        needs_force.push(format!(
            "the archived ledger is not a prefix of this machine's ledger (their first {common} events differ): it is another history"
        ));
    }
    if current.size > archived.size || ours != theirs {
        effect.push(format!(
            "the ledger goes back to the archived {} events (now {}); the replaced ledger with every later event, this approval included, is kept as {} and named in the backup.restored event",
            archived.size,
            current.size,
            st.state_dir.join(format!("ledger.db.before-{tag}")).display()
        ));
    }
    effect.push("every approval ticket still open in the archived ledger is closed (used or decided since, it must not come back)".into());
    effect.push(match created_event(st, id, &digest)? {
        Some(ev) => format!(
            "the archive is the one this machine's backup.created event {ev} recorded (manifest sha256 {digest})"
        ),
        None => format!(
            "no backup.created event in this machine's ledger records this archive (manifest sha256 {digest}): it was made on another machine or before a restore, or changed after it was made (archives are not signed)"
        ),
    });
    needs_force.extend(witnessed_past(&st.state_dir, archived.size)?);
    let mut targets = BTreeMap::new();
    for name in manifest.sources.keys() {
        match settings.sources.get(name) {
            Some(dir) => {
                let prefix = format!("sources/{name}/");
                for f in &manifest.files {
                    if let Some(rel) = f.path.strip_prefix(&prefix) {
                        place::check_below(dir, Path::new(rel))?;
                    }
                }
                targets.insert(name.clone(), dir.clone());
            }
            None => {
                return Err(BackupError::UnknownSource {
                    id: id.into(),
                    name: name.clone(),
                })
            }
        }
    }
    if !targets.is_empty() {
        effect.push(format!(
            "the state of {} is replaced; files made since the backup are moved aside to {}",
            targets.keys().cloned().collect::<Vec<_>>().join(", "),
            place::kept_dir(&st.state_dir, &tag).display()
        ));
    }
    let tree = match (&manifest.tree, &st.config_tree) {
        (Some(t), Some(live)) => {
            let bundle = staging.join("tree.bundle").to_string_lossy().to_string();
            git(live.dir(), &["bundle", "verify", "-q", &bundle])
                .map_err(|e| corrupt(format!("the tree bundle does not verify: {e}")))?;
            // Everything reset_tree needs must be in the bundle, or the restore would stop
            // half-way: the commit, and the branch (a valid name) at it.
            let heads = git(live.dir(), &["bundle", "list-heads", &bundle])?;
            let at = |r: &str| heads.lines().any(|l| l.split_once(' ') == Some((t.commit.as_str(), r)));
            let ok = match &t.branch {
                Some(b) => {
                    git(live.dir(), &["check-ref-format", "--branch", b]).is_ok()
                        && at(&format!("refs/heads/{b}"))
                }
                None => heads.lines().any(|l| l.starts_with(&format!("{} ", t.commit))),
            };
            if !ok {
                return Err(corrupt(format!(
                    "the manifest's tree commit {} (branch {:?}) is not a head of the tree bundle",
                    t.commit, t.branch
                )));
            }
            effect.push(format!(
                "the config tree goes to commit {} (the current HEAD is kept as refs/osmoda/before-restore/{id})",
                t.commit
            ));
            let dirty = git(live.dir(), &["status", "--porcelain", "--untracked-files=all"])?;
            if !dirty.is_empty() {
                let files: Vec<&str> = dirty.lines().map(|l| l.get(3..).unwrap_or(l)).collect();
                effect.push(format!(
                    "uncommitted changes in the config tree ({}) are kept as refs/osmoda/uncommitted-before-restore/{tag}",
                    files.join(", ")
                ));
            }
            Some(live.dir().to_path_buf())
        }
        (Some(_), None) => {
            return Err(BackupError::Refused(format!(
                "backup {id} holds a config tree, but this agentd tracks none (--config-tree); nothing was changed"
            )))
        }
        (None, _) => None,
    };
    Ok(Prepared {
        journal: Journal {
            backup_id: id.into(),
            manifest_sha256: digest,
            staging: staging.to_path_buf(),
            manifest,
            previous: current,
            targets,
            tree,
            actor: String::new(),
            ticket: None,
            forced: false,
            kept: tag,
        },
        needs_force,
        effect,
    })
}

/// The id of the `backup.created` event that recorded archive `id` with manifest digest
/// `digest`, newest first through the whole ledger; `None` when no event does.
fn created_event(st: &AppState, id: &str, digest: &str) -> Result<Option<i64>, BackupError> {
    let mut before_id = None;
    loop {
        let page = st.ledger.query(&osmoda_ledger::Query {
            kind: Some("backup.created".into()),
            before_id,
            limit: Some(1000),
            descending: true,
            ..Default::default()
        })?;
        for ev in &page {
            let p: serde_json::Value = serde_json::from_str(&ev.payload).unwrap_or_default();
            if p["id"] == id && p["manifest_sha256"] == digest {
                return Ok(Some(ev.id));
            }
        }
        match page.last() {
            Some(last) if page.len() == 1000 => before_id = Some(last.id),
            _ => return Ok(None),
        }
    }
}

/// Why restoring a ledger of `size` events would undo checkpoints witnesses cosigned (their
/// peers will then refuse this machine's next checkpoints); empty when it would not.
fn witnessed_past(state_dir: &Path, size: u64) -> Result<Vec<String>, BackupError> {
    let all = osmoda_ledger::witness::read_cosignatures(
        &state_dir.join(crate::witness::COSIGNATURES_FILE),
    )?;
    let Some(top) = all.iter().filter(|c| c.size > size).max_by_key(|c| c.size) else {
        return Ok(Vec::new());
    };
    let peers: BTreeSet<&str> = all
        .iter()
        .filter(|c| c.size == top.size)
        .map(|c| c.peer.as_str())
        .collect();
    Ok(vec![format!(
        "it rolls the ledger back from the checkpoint of size {} that witness(es) {} cosigned to {size} events: they will refuse to cosign this machine's checkpoints from then on",
        top.size,
        peers.into_iter().collect::<Vec<_>>().join(", ")
    )])
}

/// Writes the journal (the commit point of the restore).
///
/// # Errors
/// The journal cannot be written; nothing live was changed.
pub fn commit(state_dir: &Path, journal: &Journal) -> Result<(), BackupError> {
    let bytes = serde_json::to_vec_pretty(journal).map_err(|e| BackupError::Io {
        context: "encoding the restore journal".into(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(&state_dir.join(JOURNAL), &bytes, 0o600)
}

/// Moves the staged content into place (every step can run again after a crash), records
/// `backup.restored` and removes the journal and the staging directory. Returns the event's
/// payload.
///
/// # Errors
/// A step failed; the journal stays, so the next start of agentd (or a retry) finishes it.
pub async fn apply(st: &AppState, j: &Journal, recovered: bool) -> anyhow::Result<Value> {
    // Who asked for and who approved this restore, before the ledger holding it is replaced.
    let approval = match &j.ticket {
        Some(t) => st.approvals().get(t).ok().map(|t| {
            json!({ "ticket": t.id, "requested_by": t.requested_by, "requested_at": t.requested_at,
                    "approved_by": t.decided_by, "effect": t.effect })
        }),
        None => None,
    };
    {
        // No checkpoint may be signed over a half-restored ledger.
        let _signing = match &st.checkpoints {
            Some(cp) => Some(cp.hold().await),
            None => None,
        };
        let ledger = st.ledger.clone();
        let src = j.staging.join("agentd/ledger.db");
        let kept = st.state_dir.join(format!("ledger.db.before-{}", j.tag()));
        let done = j.staging.join(LEDGER_DONE);
        tokio::task::spawn_blocking(move || -> Result<(), BackupError> {
            // The replaced ledger, every event since the backup in it, is kept and replaced in
            // one step of the ledger's writer: appends wait meanwhile, so every acknowledged
            // event is in the kept copy or in the restored ledger. A rerun after a crash finds
            // the copy kept (nothing was appended since: recovery runs before agentd serves)
            // or the replacement marked done (then what was appended since stays).
            ledger.restore_keeping(&src, &kept, &done)?;
            Ok(())
        })
        .await??;
        let (state_dir, j2) = (st.state_dir.clone(), j.clone());
        tokio::task::spawn_blocking(move || agentd_files(&state_dir, &j2)).await??;
    }
    if let Some(tree) = &j.tree {
        let _edits = crate::gate::lock(tree).await;
        let (tree, j2) = (tree.clone(), j.clone());
        tokio::task::spawn_blocking(move || reset_tree(&tree, &j2)).await??;
    }
    let (j2, state_dir) = (j.clone(), st.state_dir.clone());
    tokio::task::spawn_blocking(move || place::sources(&j2, &state_dir)).await??;
    let loaded = crate::api::approvals::Approvals::load(&st.ledger)?;
    *st.approvals() = loaded;
    // Tickets open in the archived ledger may have been used or decided since: none comes back.
    let reopened = st.approvals().open_ids();
    for t in &reopened {
        if Some(t) != j.ticket.as_ref() {
            crate::api::approvals::mark_used(st, t, "agentd")
                .await
                .map_err(|e| anyhow::anyhow!("closing ticket {t}: {}", e.error))?;
        }
    }
    let kept_aside = place::kept_files(&st.state_dir, j.tag());
    let uncommitted = format!("refs/osmoda/uncommitted-before-restore/{}", j.tag());
    *st.incidents.lock().await = crate::api::incidents::Incidents::load(&st.ledger)?;
    let restart = restart_daemons(j.targets.keys());
    let restored = st.ledger.tree_head().ok().map(|h| LedgerState {
        size: h.size,
        root: h.root,
    });
    let payload = json!({
        "backup_id": j.backup_id,
        "manifest_sha256": j.manifest_sha256,
        "created_at": j.manifest.created_at,
        "previous": j.previous,
        "restored": restored,
        "tree_commit": j.manifest.tree.as_ref().map(|t| &t.commit),
        "sources": j.targets.keys().collect::<Vec<_>>(),
        "ticket": j.ticket,
        "forced": j.forced,
        "recovered": recovered,
        "restart": restart,
        "approval": approval,
        "replaced_ledger": { "file": st.state_dir.join(format!("ledger.db.before-{}", j.tag())), "size": j.previous.size },
        "kept_aside": kept_aside,
        "tree_uncommitted": j.tree.as_ref().and_then(|t| git(t, &["rev-parse", "-q", "--verify", &uncommitted]).ok()).map(|c| json!({ "ref": uncommitted, "commit": c })),
        "tickets_closed": reopened.iter().filter(|t| Some(*t) != j.ticket.as_ref()).collect::<Vec<_>>(),
    });
    st.record("backup.restored", &j.actor, &payload)
        .await
        .map_err(|e| anyhow::anyhow!("recording the restore: {}", e.error))?;
    // The archived ledger may hold the ticket as approved: it was used by this restore.
    if let Some(t) = &j.ticket {
        if st.approvals().get(t).is_ok() {
            crate::api::approvals::mark_used(st, t, &j.actor)
                .await
                .map_err(|e| anyhow::anyhow!("marking the ticket used: {}", e.error))?;
        }
    }
    std::fs::remove_file(st.state_dir.join(JOURNAL))?;
    sync_dir(&st.state_dir)?;
    let _ = std::fs::remove_dir_all(&j.staging);
    Ok(payload)
}

/// Finishes a restore a crash interrupted (called at start, before serving).
///
/// # Errors
/// The journal is unreadable or a step fails again; agentd should not serve then.
pub async fn recover(st: &AppState) -> anyhow::Result<()> {
    let path = st.state_dir.join(JOURNAL);
    let dir = super::backup_dir(&st.settings.backup, &st.state_dir);
    let journal = std::fs::read(&path);
    let no_restore = matches!(&journal, Err(e) if e.kind() == std::io::ErrorKind::NotFound);
    // What a crash can leave in the backup dir goes (each holds a full copy of the state):
    // archives being written (`.<id>.tar.part`, never an archive: the rename makes one), and,
    // with no restore in progress, staging and work dirs.
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        let Ok(t) = e.file_type() else { continue };
        let part = name
            .strip_prefix('.')
            .and_then(|n| n.strip_suffix(".tar.part"))
            .is_some_and(super::valid_id);
        let work = name.starts_with(".restore-") || name.starts_with(".work-");
        if part && t.is_file() {
            tracing::info!(file = %e.path().display(), "removing an archive an interrupted backup left half-written");
            let _ = std::fs::remove_file(e.path());
        } else if work && t.is_dir() && no_restore {
            tracing::info!(dir = %e.path().display(), "removing what an interrupted backup or restore left");
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let bytes = match journal {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let j: Journal = serde_json::from_slice(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is unreadable: {e}", path.display()))?;
    tracing::warn!(backup = %j.backup_id, "finishing an interrupted restore");
    if let Err(e) = apply(st, &j, true).await {
        // agentd starts anyway (the other daemons need their ledger): /health reports it and
        // every restore is refused until a person decides.
        tracing::error!(backup = %j.backup_id, error = %e, "the interrupted restore could not be finished; {}", what_to_do(&st.state_dir));
        let payload = json!({ "backup_id": j.backup_id, "error": e.to_string(), "journal": path, "what_to_do": what_to_do(&st.state_dir) });
        if let Err(r) = st.record("agentd.restore.failed", "agentd", &payload).await {
            tracing::error!(error = %r.error, "recording agentd.restore.failed");
        }
    }
    Ok(())
}

fn what_to_do(state_dir: &Path) -> String {
    format!(
        "restart agentd to retry it, or (to give it up, leaving what was already restored) remove {} and restore a backup again",
        state_dir.join(JOURNAL).display()
    )
}

/// A restore that was started and not finished (its journal is still there), in words.
pub fn pending(state_dir: &Path) -> Option<String> {
    let bytes = std::fs::read(state_dir.join(JOURNAL)).ok()?;
    let id = serde_json::from_slice::<Journal>(&bytes)
        .map(|j| j.backup_id)
        .unwrap_or_else(|_| "?".into());
    Some(format!(
        "the restore of backup {id} is not finished; {}",
        what_to_do(state_dir)
    ))
}

fn agentd_files(state_dir: &Path, j: &Journal) -> Result<(), BackupError> {
    for name in AGENTD_FILES {
        let live = state_dir.join(name);
        let kept = state_dir.join(format!("{name}.before-{}", j.tag()));
        // The first run keeps the live file as it was; a rerun after a crash finds it kept.
        if live.is_file() && !kept.exists() {
            let bytes = std::fs::read(&live).map_err(io(format!("reading {}", live.display())))?;
            write_atomic(&kept, &bytes, 0o644)?;
        }
        let staged = j.staging.join("agentd").join(name);
        if staged.is_file() {
            let bytes =
                std::fs::read(&staged).map_err(io(format!("reading {}", staged.display())))?;
            write_atomic(&live, &bytes, 0o644)?;
        } else if live.exists() {
            std::fs::remove_file(&live).map_err(io(format!("removing {}", live.display())))?;
            sync_dir(state_dir)?;
        }
    }
    Ok(())
}

fn reset_tree(tree: &Path, j: &Journal) -> Result<(), BackupError> {
    let Some(t) = &j.manifest.tree else {
        return Ok(());
    };
    // A crash in the middle of a previous run may have left git's own locks behind.
    for lock in ["index.lock", "HEAD.lock"] {
        let _ = std::fs::remove_file(tree.join(".git").join(lock));
    }
    let keep = format!("refs/osmoda/before-restore/{}", j.backup_id);
    if git(tree, &["rev-parse", "-q", "--verify", &keep]).is_err()
        && git(tree, &["rev-parse", "-q", "--verify", "HEAD"]).is_ok()
    {
        git(tree, &["update-ref", &keep, "HEAD"])?;
    }
    // A person's uncommitted edits are kept as a stash commit under a named ref, not reset away.
    let dirty = git(tree, &["status", "--porcelain", "--untracked-files=all"])?;
    if !dirty.is_empty() {
        let msg = format!(
            "uncommitted changes before restoring backup {}",
            j.backup_id
        );
        git(
            tree,
            &[
                "-c",
                "user.name=agentd",
                "-c",
                "user.email=agentd@localhost",
                "stash",
                "push",
                "-q",
                "--include-untracked",
                "-m",
                &msg,
            ],
        )?;
        git(
            tree,
            &[
                "update-ref",
                &format!("refs/osmoda/uncommitted-before-restore/{}", j.tag()),
                "refs/stash",
            ],
        )?;
    }
    let bundle = j.staging.join("tree.bundle").to_string_lossy().to_string();
    git(
        tree,
        &[
            "fetch",
            "-q",
            "--force",
            "--update-head-ok",
            &bundle,
            "+refs/heads/*:refs/heads/*",
            "+refs/tags/*:refs/tags/*",
        ],
    )?;
    match &t.branch {
        Some(b) => {
            git(tree, &["symbolic-ref", "HEAD", &format!("refs/heads/{b}")])?;
            git(tree, &["reset", "-q", "--hard", &t.commit])?;
        }
        None => {
            git(tree, &["checkout", "-q", "--force", "--detach", &t.commit])?;
        }
    }
    Ok(())
}

/// Restarts the daemons whose state was restored, under systemd (so they drop what they cached);
/// returns the names that need a restart by whoever runs them otherwise.
fn restart_daemons<'a>(names: impl Iterator<Item = &'a String>) -> Vec<String> {
    let systemd = Path::new("/run/systemd/system").is_dir();
    let mut left = Vec::new();
    for name in names {
        let unit = format!("osmoda-{name}.service");
        let ok = systemd
            && std::process::Command::new("systemctl")
                .args(["try-restart", &unit])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
        if !ok {
            left.push(name.clone());
        }
    }
    left
}
