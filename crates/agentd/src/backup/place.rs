//! Putting restored files into a source directory as root without following symbolic links:
//! the daemon that owns the directory may have planted links in it (at the file, at a temporary
//! name, or at a parent directory) to make root write, chmod or chown elsewhere. Every step
//! works on directory file descriptors opened with `O_NOFOLLOW` from the configured root down;
//! temporary files are created exclusively under random names; modes are masked to `0o777`;
//! owners are taken from regular files only. Files the archive does not hold are moved aside
//! (copied to agentd's state, then unlinked), never just deleted.

use std::ffi::OsStr;
use std::io::Write as _;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, Mode};

use serde_json::{json, Value};
use std::collections::BTreeSet;

use super::restore::Journal;
use super::{io, mkdir_private, source_files, BackupError};

fn refused(path: &Path, what: &str) -> BackupError {
    BackupError::Refused(format!(
        "{} {what}; it is not followed and nothing there was changed (the restore stopped; remove it and restore again)",
        path.display()
    ))
}

fn errno(path: &Path, e: Errno) -> BackupError {
    match e {
        Errno::ELOOP | Errno::ENOTDIR => refused(path, "is a symbolic link or not a directory"),
        e => io(format!("opening {}", path.display()))(std::io::Error::from(e)),
    }
}

fn dir_flags() -> OFlag {
    OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC
}

/// Opens directory `root` itself (not through a link).
pub(crate) fn open_root(root: &Path) -> Result<OwnedFd, BackupError> {
    nix::fcntl::open(root, dir_flags(), Mode::empty()).map_err(|e| errno(root, e))
}

/// Opens the directory `rel` below the open `root` (creating missing ones 0700, owned by
/// `who`), refusing a symbolic link or a non-directory on the way.
pub(crate) fn dir_below(
    root: &OwnedFd,
    root_path: &Path,
    rel: &Path,
    who: Option<(u32, u32)>,
) -> Result<OwnedFd, BackupError> {
    let mut fd = root.try_clone().map_err(io("duplicating a descriptor"))?;
    let mut at = root_path.to_path_buf();
    for c in rel.components() {
        let Component::Normal(name) = c else {
            return Err(refused(&at.join(c), "is not a plain path component"));
        };
        at.push(name);
        let next = match openat(fd.as_fd(), name, dir_flags(), Mode::empty()) {
            Ok(f) => f,
            Err(Errno::ENOENT) => {
                mkdirat(fd.as_fd(), name, Mode::from_bits_truncate(0o700))
                    .map_err(|e| errno(&at, e))?;
                let f = openat(fd.as_fd(), name, dir_flags(), Mode::empty())
                    .map_err(|e| errno(&at, e))?;
                if let Some((uid, gid)) = who {
                    let _ = nix::unistd::fchown(&f, Some(uid.into()), Some(gid.into()));
                }
                f
            }
            Err(e) => return Err(errno(&at, e)),
        };
        fd = next;
    }
    Ok(fd)
}

/// What is at `name` in `dir`, not following a link: `Some(owner)` for a regular file,
/// `None` when nothing or a symbolic link is there (a link is replaced, never followed, and its
/// owner means nothing); an error for anything else.
pub(crate) fn regular_owner(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
) -> Result<Option<(u32, u32)>, BackupError> {
    match fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if (st.st_mode & nix::libc::S_IFMT) == nix::libc::S_IFREG => {
            Ok(Some((st.st_uid, st.st_gid)))
        }
        Ok(st) if (st.st_mode & nix::libc::S_IFMT) == nix::libc::S_IFLNK => Ok(None),
        Ok(_) => Err(refused(path, "is not a regular file")),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(errno(path, e)),
    }
}

fn random_suffix() -> Result<String, BackupError> {
    let mut raw = [0u8; 8];
    getrandom::fill(&mut raw).map_err(|e| BackupError::Io {
        context: "generating a temporary name".into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    Ok(hex::encode(raw))
}

/// Writes the content of `staged` as `name` in `dir` atomically: a new temporary file (created
/// exclusively, never through a link), mode `mode & 0o777`, owner `who`, synced, renamed over
/// `name` (a link there is replaced, not followed).
pub(crate) fn install_at(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
    staged: &Path,
    mode: u32,
    who: Option<(u32, u32)>,
) -> Result<(), BackupError> {
    let ctx = format!("restoring {}", path.display());
    let mut tmp = b".".to_vec();
    tmp.extend_from_slice(name.as_bytes());
    tmp.extend_from_slice(format!(".restore-{}", random_suffix()?).as_bytes());
    let tmp = OsStr::from_bytes(&tmp);
    let fd = openat(
        dir.as_fd(),
        tmp,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o600),
    )
    .map_err(|e| io(ctx.clone())(std::io::Error::from(e)))?;
    let mut out = std::fs::File::from(fd);
    let written = (|| -> Result<(), BackupError> {
        let mut src = std::fs::File::open(staged).map_err(io(ctx.clone()))?;
        std::io::copy(&mut src, &mut out).map_err(io(ctx.clone()))?;
        out.flush().map_err(io(ctx.clone()))?;
        fchmod(&out, Mode::from_bits_truncate(mode & 0o777))
            .map_err(|e| io(ctx.clone())(std::io::Error::from(e)))?;
        if let Some((uid, gid)) = who {
            nix::unistd::fchown(&out, Some(uid.into()), Some(gid.into()))
                .map_err(|e| io(ctx.clone())(std::io::Error::from(e)))?;
        }
        out.sync_all().map_err(io(ctx.clone()))?;
        nix::fcntl::renameat(dir.as_fd(), tmp, dir.as_fd(), name)
            .map_err(|e| io(ctx.clone())(std::io::Error::from(e)))
    })();
    if written.is_err() {
        let _ = nix::unistd::unlinkat(dir.as_fd(), tmp, nix::unistd::UnlinkatFlags::NoRemoveDir);
        return written;
    }
    nix::unistd::fsync(dir.as_fd()).map_err(|e| io(ctx)(std::io::Error::from(e)))
}

/// Moves the regular file `name` in `dir` aside to `keep` (a new file under agentd's state,
/// same content, mode 0600), then unlinks it; a symbolic link is unlinked (it holds no data).
pub(crate) fn move_aside(
    dir: &OwnedFd,
    name: &OsStr,
    path: &Path,
    keep: &Path,
) -> Result<(), BackupError> {
    let ctx = format!("keeping {} aside", path.display());
    match fstatat(dir.as_fd(), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if (st.st_mode & nix::libc::S_IFMT) == nix::libc::S_IFREG => {
            let fd = openat(
                dir.as_fd(),
                name,
                OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NONBLOCK,
                Mode::empty(),
            )
            .map_err(|e| io(ctx.clone())(std::io::Error::from(e)))?;
            if let Some(p) = keep.parent() {
                mkdir_private(p)?;
            }
            let mut src = std::fs::File::from(fd);
            let mut dst = {
                use std::os::unix::fs::OpenOptionsExt as _;
                std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(keep)
                    .map_err(io(ctx.clone()))?
            };
            std::io::copy(&mut src, &mut dst).map_err(io(ctx.clone()))?;
            dst.sync_all().map_err(io(ctx.clone()))?;
        }
        Ok(_) => {}
        Err(Errno::ENOENT) => return Ok(()),
        Err(e) => return Err(errno(path, e)),
    }
    nix::unistd::unlinkat(dir.as_fd(), name, nix::unistd::UnlinkatFlags::NoRemoveDir)
        .map_err(|e| io(ctx)(std::io::Error::from(e)))
}

/// Splits `rel` into its parent directory and file name.
pub(crate) fn split(rel: &Path) -> Result<(PathBuf, &OsStr), BackupError> {
    let name = rel
        .file_name()
        .ok_or_else(|| refused(rel, "has no file name"))?;
    Ok((
        rel.parent().map(Path::to_path_buf).unwrap_or_default(),
        name,
    ))
}

/// Refuses (before anything changes) a source `root` or a directory on the way to `rel` below
/// it that is a symbolic link or not a directory; missing ones are fine (they are created).
pub(crate) fn check_below(root: &Path, rel: &Path) -> Result<(), BackupError> {
    let mut at = root.to_path_buf();
    let check = |p: &Path| match std::fs::symlink_metadata(p) {
        Ok(m) if !m.is_dir() => Err(refused(p, "is a symbolic link or not a directory")),
        _ => Ok(()),
    };
    check(&at)?;
    if let Some(parent) = rel.parent() {
        for c in parent.components() {
            at.push(c);
            check(&at)?;
        }
    }
    // The file itself may be missing, a file or a link (replaced), not a directory or a device.
    let file = root.join(rel);
    match std::fs::symlink_metadata(&file) {
        Ok(m) if !(m.is_file() || m.file_type().is_symlink()) => {
            Err(refused(&file, "is not a regular file"))
        }
        _ => Ok(()),
    }
}

fn owner(dir: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::symlink_metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.uid(), m.gid()))
}

/// Puts each source's archived files in place below its configured directory without following
/// a symbolic link anywhere; files the archive does not hold are moved aside
/// to `<state>/restore-kept/<id>/<source>/`.
pub(crate) fn sources(j: &Journal, state_dir: &Path) -> Result<(), BackupError> {
    for (name, root) in &j.targets {
        if std::fs::symlink_metadata(root).is_err() {
            mkdir_private(root)?;
        }
        let who = owner(root);
        let root_fd = open_root(root)?;
        let prefix = format!("sources/{name}/");
        let mut wanted = BTreeSet::new();
        for f in j.manifest.files.iter() {
            let Some(rel) = f.path.strip_prefix(&prefix) else {
                continue;
            };
            let rel = PathBuf::from(rel);
            wanted.insert(rel.clone());
            let staged = j.staging.join(&f.path);
            let live = root.join(&rel);
            let (parent, file) = split(&rel)?;
            let dir = dir_below(&root_fd, root, &parent, who)?;
            let existing = regular_owner(&dir, file, &live)?;
            if f.kind == "sqlite" && existing.is_some() && super::is_sqlite(&live) {
                // In place, in one transaction: a daemon holding it open is not cut off. The
                // path was just checked to be a regular file below real directories.
                osmoda_ledger::sqlite_replace(&live, &staged)?;
            } else {
                install_at(&dir, file, &live, &staged, f.mode, existing.or(who))?;
            }
        }
        let keep = kept_dir(state_dir, j.tag()).join(name);
        for rel in source_files(root)? {
            if wanted.contains(&rel) {
                continue;
            }
            let (parent, file) = split(&rel)?;
            let dir = dir_below(&root_fd, root, &parent, None)?;
            move_aside(&dir, file, &root.join(&rel), &keep.join(&rel))?;
            for side in ["-wal", "-shm", "-journal"] {
                let mut n = file.to_os_string();
                n.push(side);
                let _ = nix::unistd::unlinkat(
                    std::os::fd::AsFd::as_fd(&dir),
                    n.as_os_str(),
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                );
            }
        }
    }
    Ok(())
}

/// Where files a restore replaced without an archived copy are kept.
pub(crate) fn kept_dir(state_dir: &Path, id: &str) -> PathBuf {
    state_dir.join("restore-kept").join(id)
}

/// The files kept aside by the restore of `id`, as `{source, path, kept}`.
pub(crate) fn kept_files(state_dir: &Path, id: &str) -> Vec<Value> {
    let root = kept_dir(state_dir, id);
    let mut out = Vec::new();
    let Ok(names) = std::fs::read_dir(&root) else {
        return out;
    };
    for n in names.flatten() {
        let name = n.file_name().to_string_lossy().to_string();
        for rel in source_files(&n.path()).unwrap_or_default() {
            out.push(json!({ "source": name, "path": rel, "kept": n.path().join(&rel) }));
        }
    }
    out
}
