//! Reading a source directory for a backup as root without following a symbolic link: the
//! daemon that owns the directory may swap a file or a sub-directory for a link between the
//! listing and the copy, to make root archive (and a restore hand back) a file it cannot read.
//! Every directory is opened with `O_NOFOLLOW` from the configured root down and listed
//! through its descriptor; every file is opened once with `O_NOFOLLOW` relative to its
//! directory's descriptor, checked to be a regular file on that descriptor, and its mode and
//! content come from that descriptor. SQLite databases, which must be read by SQLite for a
//! consistent snapshot, are opened by SQLite with `SQLITE_OPEN_NOFOLLOW` (no link anywhere on
//! the path) and the name must be the very file and directory opened before, both before and
//! after the snapshot.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};

use super::{io, place, skipped, BackupError};

/// One regular file of a source, copied into the work dir.
pub(crate) struct Copied {
    /// The path relative to the source root.
    pub rel: PathBuf,
    /// `sqlite` or `file`.
    pub kind: &'static str,
    /// The copy.
    pub copy: PathBuf,
    /// Permission bits of the file opened.
    pub mode: u32,
}

fn same(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

fn is_kind(st: &FileStat, kind: nix::libc::mode_t) -> bool {
    (st.st_mode & nix::libc::S_IFMT) == kind
}

fn errno_io(ctx: &str, e: Errno) -> BackupError {
    io(ctx.to_string())(std::io::Error::from(e))
}

/// Copies every regular file below `root` that backups cover into `dest` (same relative
/// paths), in path order, calling `each` for every file copied. Entries that are symbolic
/// links, special files, or that change into one while they are read are left out.
///
/// # Errors
/// The root is a symbolic link or not a directory; a directory or file cannot be read; a
/// database was swapped for another file while it was snapshotted.
pub(crate) fn copy_source(
    root: &Path,
    dest: &Path,
    each: &mut dyn FnMut(Copied) -> Result<(), BackupError>,
) -> Result<(), BackupError> {
    let fd = place::open_root(root)?;
    walk(root, &fd, Path::new(""), dest, each)
}

fn walk(
    root: &Path,
    dir: &OwnedFd,
    rel_dir: &Path,
    dest: &Path,
    each: &mut dyn FnMut(Copied) -> Result<(), BackupError>,
) -> Result<(), BackupError> {
    let here = root.join(rel_dir);
    // Listed through the descriptor (the kernel resolves /proc/self/fd/N to the open directory
    // itself, not to its name).
    let listing = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    let mut names: Vec<OsString> = std::fs::read_dir(&listing)
        .map_err(io(format!("listing {}", here.display())))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io(format!("listing {}", here.display())))?;
    names.sort();
    for name in names {
        let rel = rel_dir.join(&name);
        if skipped(&rel) || rel.to_str().is_none() {
            continue;
        }
        let path = root.join(&rel);
        let ctx = format!("reading {}", path.display());
        let st = match fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => st,
            Err(Errno::ENOENT) => continue,
            Err(e) => return Err(errno_io(&ctx, e)),
        };
        if is_kind(&st, nix::libc::S_IFDIR) {
            let sub = match openat(
                dir.as_fd(),
                name.as_os_str(),
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(f) => f,
                // Swapped for a link or a file, or gone, since the listing: not followed.
                Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => {
                    tracing::warn!(dir = %path.display(), "changed while it was archived (now a symbolic link or gone); left out");
                    continue;
                }
                Err(e) => return Err(errno_io(&ctx, e)),
            };
            walk(root, &sub, &rel, dest, each)?;
        } else if is_kind(&st, nix::libc::S_IFREG) {
            if let Some(c) = copy_file(dir, &name, &path, &rel, dest)? {
                each(c)?;
            }
        }
    }
    Ok(())
}

fn copy_file(
    dir: &OwnedFd,
    name: &OsString,
    path: &Path,
    rel: &Path,
    dest: &Path,
) -> Result<Option<Copied>, BackupError> {
    let ctx = format!("reading {}", path.display());
    let fd = match openat(
        dir.as_fd(),
        name.as_os_str(),
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(f) => f,
        // A link swapped in since the listing is not followed; a file gone (a temp file) is
        // not part of the state.
        Err(Errno::ELOOP | Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(errno_io(&ctx, e)),
    };
    let st = fstat(&fd).map_err(|e| errno_io(&ctx, e))?;
    if !is_kind(&st, nix::libc::S_IFREG) {
        return Ok(None);
    }
    let mode = u32::from(st.st_mode) & 0o7777;
    let mut file = std::fs::File::from(fd);
    let copy = dest.join(rel);
    if let Some(p) = copy.parent() {
        std::fs::create_dir_all(p).map_err(io("creating the work dir"))?;
    }
    let mut head = [0u8; 16];
    let sqlite = file.read_exact_at(&mut head, 0).is_ok() && &head == b"SQLite format 3\0";
    if sqlite {
        match snapshot(dir, name, path, &st, &copy) {
            Ok(()) => {
                return Ok(Some(Copied {
                    rel: rel.to_path_buf(),
                    kind: "sqlite",
                    copy,
                    mode,
                }))
            }
            // The SQLite header on a file SQLite cannot open (a note that starts like one):
            // archived as the file it is.
            Err(None) => {
                tracing::warn!(file = %path.display(), "starts like an SQLite database but is none; archived as a file");
                let _ = std::fs::remove_file(&copy);
            }
            Err(Some(e)) => return Err(e),
        }
    }
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&copy)
        .map_err(io(format!("copying {}", path.display())))?;
    std::io::copy(&mut file, &mut out).map_err(io(format!("copying {}", path.display())))?;
    Ok(Some(Copied {
        rel: rel.to_path_buf(),
        kind: "file",
        copy,
        mode,
    }))
}

/// Snapshots the database `name` in `dir` (opened before as `opened`) to `copy` by SQLite's
/// online backup; `Err(None)`: not a database after all.
fn snapshot(
    dir: &OwnedFd,
    name: &OsString,
    path: &Path,
    opened: &FileStat,
    copy: &Path,
) -> Result<(), Option<BackupError>> {
    let swapped = || {
        Some(BackupError::Refused(format!(
            "{} was replaced while it was archived (another file or a symbolic link swapped in); nothing was archived, try again",
            path.display()
        )))
    };
    // The name, relative to the directory opened, and the directory, by its path, are what was
    // opened: checked before and after the snapshot (SQLite opens by path).
    let check = || -> Result<(), Option<BackupError>> {
        let at = fstatat(dir.as_fd(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|_| swapped())?;
        let d = fstat(dir).map_err(|_| swapped())?;
        let by_path = path
            .parent()
            .and_then(|p| nix::sys::stat::lstat(p).ok())
            .ok_or_else(swapped)?;
        if same(&at, opened) && same(&d, &by_path) && is_kind(&at, nix::libc::S_IFREG) {
            Ok(())
        } else {
            Err(swapped())
        }
    };
    check()?;
    let result = osmoda_ledger::sqlite_snapshot_nofollow(path, copy);
    if let Err(e) = check() {
        let _ = std::fs::remove_file(copy);
        return Err(e);
    }
    match result {
        Ok(()) => Ok(()),
        Err(osmoda_ledger::LedgerError::Sqlite(rusqlite::Error::SqliteFailure(f, _)))
            if f.code == rusqlite::ErrorCode::NotADatabase =>
        {
            Err(None)
        }
        Err(osmoda_ledger::LedgerError::Sqlite(rusqlite::Error::SqliteFailure(f, _)))
            if f.extended_code == rusqlite::ffi::SQLITE_CANTOPEN_SYMLINK =>
        {
            Err(swapped())
        }
        Err(e) => Err(Some(BackupError::Io {
            context: format!("snapshotting the database {}", path.display()),
            source: std::io::Error::other(e.to_string()),
        })),
    }
}
