//! Backups of the whole machine state osModa keeps: one tar archive per backup holding a
//! consistent snapshot of every SQLite database (SQLite's online backup API), agentd's ledger
//! and checkpoints, the config tree as a git bundle, and the files of the other daemons' state
//! directories and the memory directory (keyd's and mesh's sealed keys live in their databases);
//! a manifest lists each file with its SHA-256. Restores are in [`restore`].
//!
//! Archive layout: `manifest.json` first, then `agentd/checkpoints.jsonl`,
//! `agentd/cosignatures.jsonl` (when witnesses cosigned), `agentd/ledger.db`, `tree.bundle`, and
//! `sources/<name>/<path>` for every configured source directory.

pub mod archive;
mod dir;
mod place;
pub mod restore;
mod source;

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub(crate) use dir::open_archive;
pub use dir::{archive_path, open_dir};

/// Files of agentd's state dir archived as they are (besides the ledger's snapshot).
pub const AGENTD_FILES: &[&str] = &[
    crate::checkpoints::CHECKPOINTS_FILE,
    crate::witness::COSIGNATURES_FILE,
];

/// The archive format this build writes and reads.
pub const FORMAT: &str = "osmoda-backup/1";

/// Backup settings (`backup` in agentd.json, `services.osmoda.agentd.backup.*`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BackupSettings {
    /// Where archives go; `None`: `<state dir>/backups`.
    pub dir: Option<PathBuf>,
    /// Retention after a new archive: the this many newest, plus the newest of each of this
    /// many most recent days (see [`expired`]); `None`: keep all.
    pub keep: Option<usize>,
    /// Directories archived besides agentd's own state, by name (`watch`, `keyd`, `mesh`,
    /// `memory`, ...): every regular file, SQLite databases by the online backup API.
    pub sources: BTreeMap<String, PathBuf>,
}

/// Errors of creating, reading and restoring backups.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// No archive with this id.
    #[error("no backup {0}; list them with GET /backup/list (agentctl backup list)")]
    NotFound(String),
    /// A backup id that cannot name an archive.
    #[error(
        "invalid backup id {0:?}: ids look like 20261130T031500123Z-1a2b3c4d (GET /backup/list)"
    )]
    InvalidId(String),
    /// The archive does not match its manifest (or is not an archive); nothing was changed.
    #[error("backup {id} is damaged, nothing was changed: {reason}")]
    Corrupt {
        /// The backup id.
        id: String,
        /// What did not match.
        reason: String,
    },
    /// The restore would lose something that must not be lost silently; nothing was changed.
    #[error("{0}")]
    Refused(String),
    /// The archive names a source this machine does not configure.
    #[error("backup {id} holds source {name:?}, which is not configured here (services.osmoda.agentd.backup); nothing was changed")]
    UnknownSource {
        /// The backup id.
        id: String,
        /// The source's name.
        name: String,
    },
    /// Reading or writing files failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A git command failed.
    #[error("git: {0}")]
    Git(String),
    /// The ledger could not be read, copied or replaced.
    #[error("ledger: {0}")]
    Ledger(#[from] osmoda_ledger::LedgerError),
}

pub(crate) fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let context = context.into();
    move |source| BackupError::Io { context, source }
}

/// One file in an archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path inside the archive (`agentd/ledger.db`, `sources/keyd/keyd.db`, `tree.bundle`).
    pub path: String,
    /// `sqlite` (a snapshot by the online backup API), `bundle` (git bundle) or `file`.
    pub kind: String,
    /// Lowercase hex SHA-256 of the content.
    pub sha256: String,
    /// Size in bytes.
    pub bytes: u64,
    /// Permission bits of the original file.
    pub mode: u32,
}

/// The ledger as archived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerState {
    /// Number of events.
    pub size: u64,
    /// RFC 6962 root over the events' hashes (hex).
    pub root: String,
}

/// The config tree as archived.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TreeState {
    /// The checked-out branch (`None`: detached).
    pub branch: Option<String>,
    /// The `HEAD` commit.
    pub commit: String,
}

/// `manifest.json`, the first entry of every archive.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: String,
    /// The backup id (`<UTC time to the millisecond>-<8 hex>`), also the archive's file name without `.tar`.
    pub id: String,
    /// When it was made (RFC 3339, UTC).
    pub created_at: String,
    /// The ledger in the archive.
    pub ledger: LedgerState,
    /// The config tree's `HEAD`, when agentd tracks one.
    pub tree: Option<TreeState>,
    /// Source directories archived, by name, where they were.
    pub sources: BTreeMap<String, PathBuf>,
    /// Every file after the manifest, in archive order.
    pub files: Vec<FileEntry>,
}

/// A backup as `GET /backup/list` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The backup id.
    pub id: String,
    /// When it was made.
    pub created_at: String,
    /// The archive's path.
    pub file: PathBuf,
    /// The archive's size in bytes.
    pub bytes: u64,
    /// Hex SHA-256 of the manifest's bytes (a restore's approval ticket is bound to it).
    pub manifest_sha256: String,
    /// Events in the archived ledger.
    pub ledger_size: u64,
    /// The archived tree's `HEAD` commit.
    pub tree_commit: Option<String>,
    /// Source directories archived.
    pub sources: Vec<String>,
    /// Files in the archive.
    pub files: usize,
}

/// Whether `id` has the shape of a backup id (so it can never name another file).
pub fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    b.len() == 28
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..18].iter().all(u8::is_ascii_digit)
        && b[18] == b'Z'
        && b[19] == b'-'
        && b[20..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// Whether `name` may name a source (a directory name under `sources/`).
pub fn valid_source_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'_')
}

/// A new id, later than every id in `dir` (ids sort by time: retention keeps the newest).
fn new_id(dir: &Path) -> Result<String, BackupError> {
    let newest = list(dir)?.into_iter().next().map(|b| b.id);
    loop {
        let id = stamped_id()?;
        if newest
            .as_deref()
            .is_none_or(|n| id.as_str()[..18] > n[..18])
        {
            return Ok(id);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

pub(crate) fn stamped_id() -> Result<String, BackupError> {
    let now = time::OffsetDateTime::now_utc();
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second][subsecond digits:3]Z"
        ))
        .map_err(|e| BackupError::Io {
            context: "formatting the backup time".into(),
            source: std::io::Error::other(e),
        })?;
    let mut raw = [0u8; 4];
    getrandom::fill(&mut raw).map_err(|e| BackupError::Io {
        context: "generating a backup id".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(format!("{stamp}-{}", hex::encode(raw)))
}

/// The archive directory for `state_dir`.
pub fn backup_dir(settings: &BackupSettings, state_dir: &Path) -> PathBuf {
    settings
        .dir
        .clone()
        .unwrap_or_else(|| state_dir.join("backups"))
}

pub(crate) fn sha256_file(path: &Path) -> Result<(String, u64), BackupError> {
    let mut f = std::fs::File::open(path).map_err(io(format!("reading {}", path.display())))?;
    let mut h = Sha256::new();
    let n = std::io::copy(&mut f, &mut h).map_err(io(format!("reading {}", path.display())))?;
    Ok((hex::encode(h.finalize()), n))
}

pub(crate) fn mkdir_private(dir: &Path) -> Result<(), BackupError> {
    use std::os::unix::fs::DirBuilderExt as _;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(format!("creating {}", dir.display())))
}

pub(crate) fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(format!("syncing {}", dir.display())))
}

/// Writes `bytes` to `path` atomically (temporary file, fsync, rename, fsync of the directory).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), BackupError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file")
    ));
    let ctx = format!("writing {}", path.display());
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io(ctx.clone()))?;
    f.write_all(bytes).map_err(io(ctx.clone()))?;
    f.sync_all().map_err(io(ctx.clone()))?;
    std::fs::rename(&tmp, path).map_err(io(ctx))?;
    sync_dir(dir)
}

/// Runs git in `dir`, returning its standard output.
pub(crate) fn git(dir: &Path, args: &[&str]) -> Result<String, BackupError> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .output()
        .map_err(|e| BackupError::Git(format!("running git {}: {e}", args.join(" "))))?;
    if !out.status.success() {
        return Err(BackupError::Git(format!(
            "git {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Whether `path` starts with the SQLite header.
pub(crate) fn is_sqlite(path: &Path) -> bool {
    use std::io::Read as _;
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .map(|()| &head == b"SQLite format 3\0")
        .unwrap_or(false)
}

/// Whether a file under a source directory is left out of backups and restores: SQLite's
/// journals (the snapshot of the database covers them) and delivery spools (events in flight to
/// agentd; restoring them would replay old events).
pub(crate) fn skipped(rel: &Path) -> bool {
    let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    rel.components()
        .any(|c| c.as_os_str() == "spool" || c.as_os_str() == "backups")
        || name.ends_with("-wal")
        || name.ends_with("-shm")
        || name.ends_with("-journal")
}

/// Every regular file under `root` that backups cover, as paths relative to `root`, sorted.
/// Symbolic links, sockets and other special files are not followed or archived.
pub(crate) fn source_files(root: &Path) -> Result<Vec<PathBuf>, BackupError> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = root.join(&rel);
        let entries = std::fs::read_dir(&dir).map_err(io(format!("listing {}", dir.display())))?;
        for e in entries {
            let e = e.map_err(io(format!("listing {}", dir.display())))?;
            let t = e
                .file_type()
                .map_err(io(format!("reading {}", e.path().display())))?;
            let r = rel.join(e.file_name());
            if skipped(&r) || r.to_str().is_none() {
                continue;
            }
            if t.is_dir() {
                stack.push(r);
            } else if t.is_file() {
                out.push(r);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads the summaries of every archive in `dir`, newest first. Archives whose manifest cannot
/// be read are listed with what is known (id and size) and a zero manifest digest.
///
/// # Errors
/// The directory cannot be listed.
pub fn list(dir: &Path) -> Result<Vec<Summary>, BackupError> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io(format!("listing {}", dir.display()))(e)),
    };
    for e in entries {
        let e = e.map_err(io(format!("listing {}", dir.display())))?;
        let name = e.file_name().to_string_lossy().to_string();
        let Some(id) = name.strip_suffix(".tar").filter(|id| valid_id(id)) else {
            continue;
        };
        let file = e.path();
        // Only regular files are archives (entry types are not followed through links).
        if !e.file_type().is_ok_and(|t| t.is_file()) {
            tracing::warn!(path = %file.display(), "not a regular file in the backup directory; ignored");
            continue;
        }
        let bytes = e.metadata().map(|m| m.len()).unwrap_or(0);
        let summary = match archive::read_manifest(&file) {
            Ok((m, digest)) => Summary {
                id: id.to_string(),
                created_at: m.created_at,
                file,
                bytes,
                manifest_sha256: digest,
                ledger_size: m.ledger.size,
                tree_commit: m.tree.map(|t| t.commit),
                sources: m.sources.into_keys().collect(),
                files: m.files.len(),
            },
            Err(err) => {
                tracing::warn!(archive = %file.display(), error = %err, "unreadable backup archive");
                Summary {
                    id: id.to_string(),
                    created_at: String::new(),
                    file,
                    bytes,
                    manifest_sha256: String::new(),
                    ledger_size: 0,
                    tree_commit: None,
                    sources: Vec::new(),
                    files: 0,
                }
            }
        };
        out.push(summary);
    }
    out.sort_by(|a, b| b.id.cmp(&a.id));
    Ok(out)
}

/// What [`create`] needs to know about the running agentd.
pub struct Inputs<'a> {
    /// agentd's state dir (ledger, checkpoints).
    pub state_dir: &'a Path,
    /// The open ledger.
    pub ledger: &'a osmoda_ledger::Ledger,
    /// The config tree, when agentd tracks one.
    pub tree: Option<&'a Path>,
    /// The settings.
    pub settings: &'a BackupSettings,
}

/// What [`create`] made and did.
#[derive(Debug)]
pub struct Created {
    /// The new archive.
    pub summary: Summary,
    /// Ids of the archives retention deleted after it (oldest beyond `keep`).
    pub deleted: Vec<String>,
    /// What the caller should know: the archived ledger's chain breaks (such an archive is
    /// refused by restore as damaged).
    pub warnings: Vec<String>,
}

/// Makes one archive and applies retention. Blocks.
///
/// # Errors
/// A source or the archive directory cannot be read or written, git fails, or a database
/// cannot be snapshotted; nothing is left behind but the previous archives.
pub fn create(inp: &Inputs<'_>) -> Result<Created, BackupError> {
    let dir = open_dir(inp.settings, inp.state_dir)?;
    enough_space(inp, &dir)?;
    let id = new_id(&dir)?;
    let work = dir.join(format!(".work-{id}"));
    mkdir_private(&work)?;
    let result = create_in(inp, &dir, &work, &id);
    let _ = std::fs::remove_dir_all(&work);
    let (summary, warnings) = result?;
    let mut deleted = Vec::new();
    if let Some(keep) = inp.settings.keep {
        let all = list(&dir)?;
        let ids: Vec<&str> = all.iter().map(|b| b.id.as_str()).collect();
        let gone = expired(&ids, keep);
        for old in all
            .into_iter()
            .enumerate()
            .filter(|(i, _)| gone.contains(i))
            .map(|(_, b)| b)
        {
            match std::fs::remove_file(&old.file) {
                Ok(()) => deleted.push(old.id),
                Err(e) => {
                    tracing::warn!(archive = %old.file.display(), error = %e, "could not remove an old backup")
                }
            }
        }
    }
    Ok(Created {
        summary,
        deleted,
        warnings,
    })
}

/// Room kept free on the backup dir's file system beyond what a backup needs.
const SPACE_MARGIN: u64 = 64 * 1024 * 1024;

/// Refuses a backup the backup dir's file system has no room for: the copies in the work dir
/// and the archive are both written there, so twice the size of what is archived (the ledger,
/// agentd's files, the config tree's git dir and every source file), plus a margin.
fn enough_space(inp: &Inputs<'_>, dir: &Path) -> Result<(), BackupError> {
    let size = |p: &Path| std::fs::symlink_metadata(p).map_or(0, |m| m.len());
    let mut need = size(inp.ledger.path());
    let mut wal = inp.ledger.path().as_os_str().to_owned();
    wal.push("-wal");
    need += size(Path::new(&wal));
    for name in AGENTD_FILES {
        need += size(&inp.state_dir.join(name));
    }
    let mut roots: Vec<PathBuf> = inp.settings.sources.values().cloned().collect();
    roots.extend(inp.tree.map(|t| t.join(".git")));
    for root in roots.iter().filter(|r| r.is_dir()) {
        for rel in source_files(root).unwrap_or_default() {
            need += size(&root.join(rel));
        }
    }
    let need = need.saturating_mul(2).saturating_add(SPACE_MARGIN);
    let fs = nix::sys::statvfs::statvfs(dir).map_err(|e| {
        io(format!("reading the free space of {}", dir.display()))(std::io::Error::from(e))
    })?;
    let free = u64::from(fs.blocks_available()).saturating_mul(u64::from(fs.fragment_size()));
    if free < need {
        return Err(BackupError::Refused(format!(
            "not enough free space for a backup in {}: {free} bytes free, about {need} needed (twice what is archived, plus {SPACE_MARGIN}); no backup was made. Free space there or move services.osmoda.agentd.backup.dir",
            dir.display()
        )));
    }
    Ok(())
}

/// Which archives retention deletes: indexes into `ids`, the archive ids newest first (an id
/// starts with the UTC day it was made, `YYYYMMDD`). Kept: the `keep` newest archives and, for
/// each of the `keep` most recent days that have archives, that day's newest. So a burst of new
/// archives (`keep` backups in a minute, by an agent or a loop) removes only that day's older
/// ones, never the last archive of an earlier day; at most `2 × keep` archives remain.
pub fn expired(ids: &[&str], keep: usize) -> Vec<usize> {
    let keep = keep.max(1);
    let mut days: Vec<&str> = Vec::new();
    let mut out = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let day = id.get(..8).unwrap_or(id);
        let first_of_day = !days.contains(&day);
        if first_of_day {
            days.push(day);
        }
        if i >= keep && !(first_of_day && days.len() <= keep) {
            out.push(i);
        }
    }
    out
}

fn create_in(
    inp: &Inputs<'_>,
    dir: &Path,
    work: &Path,
    id: &str,
) -> Result<(Summary, Vec<String>), BackupError> {
    let mut files: Vec<(FileEntry, PathBuf)> = Vec::new();
    let mut add = |path: String, kind: &str, src: PathBuf, mode: u32| -> Result<(), BackupError> {
        let (sha256, bytes) = sha256_file(&src)?;
        files.push((
            FileEntry {
                path,
                kind: kind.into(),
                sha256,
                bytes,
                mode: mode & 0o7777,
            },
            src,
        ));
        Ok(())
    };
    std::fs::create_dir_all(work.join("agentd")).map_err(io("creating the work dir"))?;
    // Checkpoints first, the ledger second: the ledger only grows, so every checkpoint copied
    // covers a prefix of the ledger copied after it.
    for name in AGENTD_FILES {
        let live = inp.state_dir.join(name);
        if live.is_file() {
            let copy = work.join("agentd").join(name);
            std::fs::copy(&live, &copy).map_err(io(format!("copying {}", live.display())))?;
            add(format!("agentd/{name}"), "file", copy, 0o644)?;
        }
    }
    let ledger_copy = work.join("agentd/ledger.db");
    inp.ledger.snapshot_to(&ledger_copy)?;
    let ledger = ledger_state(&ledger_copy)?;
    let mut warnings = Vec::new();
    if let Some(bad) = osmoda_ledger::verify(&ledger_copy)?.first_bad {
        warnings.push(format!(
            "the ledger's chain breaks at event {} ({:?}): restore refuses this archive as damaged; agentctl verify-ledger shows the ledger's state",
            bad.id, bad.reason
        ));
    }
    add("agentd/ledger.db".into(), "sqlite", ledger_copy, 0o600)?;

    let tree = match inp.tree {
        Some(t) if git(t, &["rev-parse", "--verify", "-q", "HEAD"]).is_ok() => {
            let commit = git(t, &["rev-parse", "HEAD"])?;
            let branch = git(t, &["symbolic-ref", "-q", "--short", "HEAD"])
                .ok()
                .filter(|b| !b.is_empty());
            let bundle = work.join("tree.bundle");
            let b = bundle.to_string_lossy().to_string();
            git(t, &["bundle", "create", &b, "--all"])?;
            add("tree.bundle".into(), "bundle", bundle, 0o600)?;
            Some(TreeState { branch, commit })
        }
        _ => None,
    };

    let mut sources = BTreeMap::new();
    for (name, root) in &inp.settings.sources {
        if !root.is_dir() {
            continue;
        }
        sources.insert(name.clone(), root.clone());
        // Every file opened once, never through a link (see `source`).
        source::copy_source(root, &work.join("sources").join(name), &mut |c| {
            add(
                format!("sources/{name}/{}", c.rel.to_string_lossy()),
                c.kind,
                c.copy,
                c.mode,
            )
        })?;
    }

    let manifest = Manifest {
        format: FORMAT.into(),
        id: id.into(),
        created_at: osmoda_ledger::now_ts(),
        ledger,
        tree,
        sources,
        files: files.iter().map(|(e, _)| e.clone()).collect(),
    };
    let file = dir.join(format!("{id}.tar"));
    let digest = archive::write(&file, &manifest, &files)?;
    let bytes = std::fs::metadata(&file).map(|m| m.len()).unwrap_or(0);
    let summary = Summary {
        id: id.into(),
        created_at: manifest.created_at.clone(),
        file,
        bytes,
        manifest_sha256: digest,
        ledger_size: manifest.ledger.size,
        tree_commit: manifest.tree.as_ref().map(|t| t.commit.clone()),
        sources: manifest.sources.keys().cloned().collect(),
        files: manifest.files.len(),
    };
    Ok((summary, warnings))
}

/// Size and root of the ledger file `path`.
pub(crate) fn ledger_state(path: &Path) -> Result<LedgerState, BackupError> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(osmoda_ledger::LedgerError::from)?;
    let size: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .map_err(osmoda_ledger::LedgerError::from)?;
    drop(conn);
    let size = u64::try_from(size).unwrap_or(0);
    Ok(LedgerState {
        size,
        root: osmoda_ledger::rows_root(path, size)?,
    })
}

#[cfg(test)]
mod tests {
    use super::expired;

    fn run(ids: &[&str], keep: usize) -> Vec<&'static str> {
        let gone = expired(ids, keep);
        ids.iter()
            .enumerate()
            .filter(|(i, _)| gone.contains(i))
            .map(|(_, id)| &*Box::leak(id.to_string().into_boxed_str()))
            .collect()
    }

    #[test]
    fn a_burst_of_new_archives_never_removes_an_earlier_days_last_one() {
        // Newest first: a burst of five on the 30th, one each on the 29th, 28th, 27th.
        let ids = [
            "20261130T120005000Z-5",
            "20261130T120004000Z-4",
            "20261130T120003000Z-3",
            "20261130T120002000Z-2",
            "20261130T120001000Z-1",
            "20261129T020000000Z-a",
            "20261128T020000000Z-b",
            "20261127T020000000Z-c",
        ];
        // keep 2: the two newest, and the last of the two most recent days (the 30th's is
        // among the newest, the 29th's is kept); the older days go.
        assert_eq!(
            run(&ids, 2),
            vec![
                "20261130T120003000Z-3",
                "20261130T120002000Z-2",
                "20261130T120001000Z-1",
                "20261128T020000000Z-b",
                "20261127T020000000Z-c",
            ]
        );
        // keep 3: the 28th's last is kept too.
        assert_eq!(
            run(&ids, 3),
            vec![
                "20261130T120002000Z-2",
                "20261130T120001000Z-1",
                "20261127T020000000Z-c",
            ]
        );
        // One a day: plain "the newest keep".
        let daily = ["20261130T0-x", "20261129T0-y", "20261128T0-z"];
        assert_eq!(run(&daily, 2), vec!["20261128T0-z"]);
        // Fewer than keep: nothing; keep 0 behaves as 1.
        assert!(run(&daily, 5).is_empty());
        assert_eq!(run(&daily[..1], 0), Vec::<&str>::new());
    }
}
