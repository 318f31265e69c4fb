//! The archive directory and the archives in it: daemon state, never reached through a link.

use std::path::{Path, PathBuf};

use super::{backup_dir, io, mkdir_private, valid_id, BackupError, BackupSettings};

/// The archive directory, created 0700 when missing and checked like agentd's own state: a
/// real directory (not a symbolic link), owned by agentd's user, with no permission for group
/// or others (archives hold every daemon's secrets). Every create, list and restore goes
/// through here.
///
/// # Errors
/// [`BackupError::Refused`] naming what is wrong and the fix; I/O errors creating it.
pub fn open_dir(settings: &BackupSettings, state_dir: &Path) -> Result<PathBuf, BackupError> {
    use std::os::unix::fs::MetadataExt as _;
    let dir = backup_dir(settings, state_dir);
    if std::fs::symlink_metadata(&dir).is_err() {
        mkdir_private(&dir)?;
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(io(format!("reading {}", dir.display())))?;
    let fix = "backups are daemon state: give agentd a directory of its own (services.osmoda.agentd.backup.dir), owned by root, mode 0700";
    if !meta.file_type().is_dir() {
        return Err(BackupError::Refused(format!(
            "the backup directory {} is not a directory (a symbolic link or a file); {fix}",
            dir.display()
        )));
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(BackupError::Refused(format!(
            "the backup directory {} is owned by uid {}, not agentd's uid {me}; {fix}",
            dir.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(BackupError::Refused(format!(
            "the backup directory {} has mode {:04o}: group or others may use it; {fix} (chmod 0700 {})",
            dir.display(),
            meta.mode() & 0o7777,
            dir.display()
        )));
    }
    Ok(dir)
}

/// The archive of backup `id` under `dir`: a regular file (a symbolic link or anything else
/// with the name is refused, never followed).
///
/// # Errors
/// [`BackupError::InvalidId`], [`BackupError::NotFound`] or [`BackupError::Refused`].
pub fn archive_path(dir: &Path, id: &str) -> Result<PathBuf, BackupError> {
    if !valid_id(id) {
        return Err(BackupError::InvalidId(id.chars().take(80).collect()));
    }
    let p = dir.join(format!("{id}.tar"));
    match std::fs::symlink_metadata(&p) {
        Err(_) => Err(BackupError::NotFound(id.into())),
        Ok(m) if !m.file_type().is_file() => Err(BackupError::Refused(format!(
            "{} is not a regular file (a symbolic link or a directory); it is not read. Remove it",
            p.display()
        ))),
        Ok(_) => Ok(p),
    }
}

/// Opens archive `file` for reading without following a symbolic link, and only when it is a
/// regular file.
pub(crate) fn open_archive(file: &Path) -> Result<std::fs::File, BackupError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let ctx = format!("reading {}", file.display());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(file)
        .map_err(|e| match e.raw_os_error() {
            Some(nix::libc::ELOOP) => BackupError::Refused(format!(
                "{} is a symbolic link; it is not followed. Remove it",
                file.display()
            )),
            _ => io(ctx.clone())(e),
        })?;
    let meta = f.metadata().map_err(io(ctx))?;
    if !meta.file_type().is_file() {
        return Err(BackupError::Refused(format!(
            "{} is not a regular file; it is not read. Remove it",
            file.display()
        )));
    }
    Ok(f)
}
