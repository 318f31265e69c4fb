//! The ground truth: markdown notes in the layout OpenClaw's memory uses.
//!
//! `MEMORY.md` holds durable facts, `memory/YYYY-MM-DD.md` one file per day. People may edit
//! both; osModa only ever appends whole sections, each written by an atomic replace (temp file
//! in the same directory, fsync, rename, fsync of the directory), so a crash leaves either the
//! old or the new file, never a torn one.
//!
//! A note is a regular file with one link, reached without following a symbolic link, inside
//! the memory directory: the directory lies under a writable root, so anything that can write
//! there could otherwise plant `memory/k.md -> /var/lib/osmoda/agentd/checkpoint.key` (or a hard
//! link to it) and have recall hand its bytes out. Such entries are not listed, not read and
//! not appended to.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use nix::fcntl::{RenameFlags, AT_FDCWD};
use std::path::{Path, PathBuf};

use crate::error::{MemoryError, Result};

/// File name of the durable notes.
pub const DURABLE_FILE: &str = "MEMORY.md";
/// Directory (under the memory root) of the daily notes.
pub const DAILY_DIR: &str = "memory";
/// Size at which a note takes no more sections from osModa (a person may write more by
/// hand): every append rewrites its note and indexing re-reads it, so this bounds a write's
/// work. The day's sections then go to its next part (`memory/YYYY-MM-DD-2.md`, ...).
pub const NOTE_CAP: u64 = 2 * 1024 * 1024;

/// The memory directory.
#[derive(Debug, Clone)]
pub struct Notes {
    root: PathBuf,
}

impl Notes {
    /// Notes under `root` (created on first write).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Notes { root: root.into() }
    }

    /// The memory directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Path of the durable notes file.
    pub fn durable_path(&self) -> PathBuf {
        self.root.join(DURABLE_FILE)
    }

    /// Path of the daily note for `date` (`YYYY-MM-DD`).
    pub fn daily_path(&self, date: time::Date) -> PathBuf {
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        let name = date.format(&fmt).unwrap_or_else(|_| date.to_string());
        self.root.join(DAILY_DIR).join(format!("{name}.md"))
    }

    /// Every note file, as paths relative to the root, sorted: `MEMORY.md` first, then
    /// `memory/*.md` (not recursive; other files are ignored).
    ///
    /// # Errors
    /// [`MemoryError::Io`] when a directory exists but cannot be read.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        if plain_file(&self.durable_path()) {
            out.push(DURABLE_FILE.to_string());
        }
        let daily = self.root.join(DAILY_DIR);
        // The daily dir itself must be a directory, not a link to one elsewhere.
        if std::fs::symlink_metadata(&daily).is_ok_and(|m| !m.is_dir()) {
            tracing::warn!(path = %daily.display(), "not a directory (a link?): its notes are ignored");
            return Ok(out);
        }
        match std::fs::read_dir(&daily) {
            Ok(entries) => {
                let mut names = Vec::new();
                for e in entries {
                    let e = e.map_err(|e| MemoryError::io(&daily, e))?;
                    let name = e.file_name().to_string_lossy().into_owned();
                    if is_note_name(&name) && plain_file(&e.path()) {
                        names.push(format!("{DAILY_DIR}/{name}"));
                    }
                }
                names.sort();
                out.extend(names);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(MemoryError::io(daily, e)),
        }
        Ok(out)
    }

    /// Read a note by its relative path.
    ///
    /// # Errors
    /// [`MemoryError::Io`]; invalid UTF-8 is replaced, not refused (a person's editor decides).
    pub fn read(&self, rel: &str) -> Result<String> {
        let path = self.root.join(rel);
        let bytes = self
            .read_note(&path)
            .map_err(|e| MemoryError::io(&path, e))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The bytes of the note at `path`: opened without following a link (`O_NOFOLLOW`, and
    /// `O_NONBLOCK` so a FIFO cannot hang the reader), a regular file with one link whose real
    /// path is inside the memory directory.
    fn read_note(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.read_note_stamped(path).map(|(b, _)| b)
    }

    /// [`Notes::read_note`] with the metadata of the file read (from the same handle, taken
    /// before reading: a save in place during the read changes its times, so it is never
    /// mistaken for the version read).
    fn read_note_stamped(&self, path: &Path) -> std::io::Result<(Vec<u8>, std::fs::Metadata)> {
        use std::io::{Error, ErrorKind};
        let refuse = |why: &str| {
            Error::new(
                ErrorKind::InvalidData,
                format!("{why}; it is not read as a note"),
            )
        };
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| match e.raw_os_error() {
                Some(libc::ELOOP) => refuse("a symbolic link"),
                _ => e,
            })?;
        let m = f.metadata()?;
        if !m.is_file() {
            return Err(refuse("not a regular file"));
        }
        if m.nlink() != 1 {
            return Err(refuse("a file with other hard links"));
        }
        let real = std::fs::read_link(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&f)
        ))?;
        let root = std::fs::canonicalize(&self.root)?;
        if !real.starts_with(&root) {
            return Err(refuse(
                "outside the memory directory (a linked directory on the way)",
            ));
        }
        let mut bytes = Vec::new();
        f.read_to_end(&mut bytes)?;
        Ok((bytes, m))
    }

    /// Append `section` to the file at `path` (created with `title` as its first line when new),
    /// atomically.
    ///
    /// # Errors
    /// [`MemoryError::Io`] when the directory cannot be created or the file replaced; the old
    /// file is then unchanged.
    pub fn append(&self, path: &Path, title: &str, section: &str) -> Result<()> {
        let rel = |p: &Path| self.rel(p);
        std::fs::create_dir_all(&self.root).map_err(|e| MemoryError::io(&self.root, e))?;
        let dir = path.parent().unwrap_or(&self.root);
        // The daily notes' directory must be one, not a link to another place: a new note
        // would be created through it.
        match std::fs::symlink_metadata(dir) {
            _ if dir == self.root => {}
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(MemoryError::NotANote {
                    path: rel(dir),
                    why: "not a directory (a symbolic link or a file)".into(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(dir).map_err(|e| MemoryError::io(dir, e))?;
            }
            Err(e) => return Err(MemoryError::io(dir, e)),
        }
        self.append_with(path, title, section, &mut |_| {})
    }

    /// [`Notes::append`], calling `between(attempt)` after each read of the note and before
    /// its replacement (where a person's save can land; tests save there).
    fn append_with(
        &self,
        path: &Path,
        title: &str,
        section: &str,
        between: &mut dyn FnMut(u32),
    ) -> Result<()> {
        let rel = self.rel(path);
        let refused = |e: std::io::Error| MemoryError::NotANote {
            path: rel.clone(),
            why: e.to_string(),
        };
        // Bytes, not text: whatever a person's editor wrote (invalid UTF-8 included) is kept
        // as it was; only the new section is added.
        let with_section = |old: Option<&[u8]>| {
            let mut content =
                old.map_or_else(|| format!("# {title}\n").into_bytes(), <[u8]>::to_vec);
            if content.last().is_some_and(|b| *b != b'\n') {
                content.push(b'\n');
            }
            content.push(b'\n');
            content.extend_from_slice(section.as_bytes());
            if !section.ends_with('\n') {
                content.push(b'\n');
            }
            content
        };
        let read = |path: &Path| match self.read_note_stamped(path) {
            Ok(c) => Ok(Some(c)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Err(refused(e)),
            Err(e) => Err(MemoryError::io(path, e)),
        };
        let mut current = read(path)?;
        for attempt in 0..SAVE_RACE_TRIES {
            between(attempt);
            let content = with_section(current.as_ref().map(|(b, _)| b.as_slice()));
            let like = current.as_ref().map(|(b, m)| (b.as_slice(), m));
            match replace_unless_saved(path, &content, like)
                .map_err(|e| MemoryError::io(path, e))?
            {
                Replaced::Done => return Ok(()),
                // A person's save (or a file created or removed meanwhile) came between the
                // read and the replacement: theirs is the note now; add the section to it.
                Replaced::SavedMeanwhile => {
                    tracing::info!(note = %rel, "the note was saved while a section was being added; adding it to the saved version");
                    current = read(path)?;
                }
            }
        }
        Err(MemoryError::io(
            path,
            std::io::Error::other(format!(
                "the note changed on disk {SAVE_RACE_TRIES} times while a section was being added to it; nothing was added"
            )),
        ))
    }

    fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.root)
            .unwrap_or(p)
            .display()
            .to_string()
    }
}

/// How often [`Notes::append`] starts again when the note keeps changing under it.
const SAVE_RACE_TRIES: u32 = 8;

/// What [`replace_unless_saved`] did.
enum Replaced {
    /// The note now holds the new bytes; what it held was the version they were made from.
    Done,
    /// The note was not the version read (or was removed): the new bytes were not kept, and
    /// the note holds what the person saved.
    SavedMeanwhile,
}

/// The version of a note an append was made from: its metadata and bytes as read.
type Version<'a> = (&'a [u8], &'a std::fs::Metadata);

/// Whether the file at `at` (metadata `m`) is still the version `read`: the same inode (an
/// editor saving by rename makes a new one) holding the same bytes (one writing in place may
/// keep size and, with coarse timestamps, the modification time). The change time is not
/// compared: a rename changes it.
fn same_version(at: &Path, m: &std::fs::Metadata, read: Version<'_>) -> std::io::Result<bool> {
    let (bytes, r) = read;
    if (m.dev(), m.ino(), m.size()) != (r.dev(), r.ino(), bytes.len() as u64) || !m.is_file() {
        return Ok(false);
    }
    Ok(std::fs::read(at)? == bytes)
}

/// Replace the note at `path` by `bytes` if it is still the version `read` describes (`None`:
/// no note yet), atomically, with `read`'s mode and owner.
///
/// The replacement is a `renameat2` exchange, so a person's save that lands after the read is
/// never overwritten: whatever the exchange took out of the note's place is compared with
/// what was read and, if it is another version, put back and returned. A new note is created
/// with `RENAME_NOREPLACE` for the same reason. File systems without these flags fall back to
/// a check just before a plain rename (a window of microseconds instead of the whole write).
fn replace_unless_saved(
    path: &Path,
    bytes: &[u8],
    read: Option<Version<'_>>,
) -> std::io::Result<Replaced> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_with(dir, bytes, read.map(|(_, m)| m))?;
    let mut flags = if read.is_some() {
        RenameFlags::RENAME_EXCHANGE
    } else {
        RenameFlags::RENAME_NOREPLACE
    };
    let ours = tmp.as_file().metadata().map(|m| (m.dev(), m.ino()))?;
    let tmp_path = tmp.into_temp_path();
    let r = match rename2(&tmp_path, path, flags) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            flags = RenameFlags::empty();
            // No exchange on this file system: check as late as possible.
            let now = std::fs::symlink_metadata(path);
            let still = match (read, &now) {
                (Some(r), Ok(m)) => same_version(path, m, r)?,
                (None, Err(e)) => e.kind() == std::io::ErrorKind::NotFound,
                _ => false,
            };
            if !still {
                return Ok(Replaced::SavedMeanwhile);
            }
            std::fs::rename(&tmp_path, path)
        }
        r => r,
    };
    match r {
        Ok(()) => {}
        // Created meanwhile (no-replace), or removed meanwhile (nothing to exchange with).
        Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOENT)) => {
            return Ok(Replaced::SavedMeanwhile)
        }
        Err(e) => return Err(e),
    }
    if flags != RenameFlags::RENAME_EXCHANGE {
        // Renamed away: nothing is left at the temporary name to remove.
        tmp_path.keep().map_err(|e| e.error)?;
        sync_dir(dir);
        return Ok(Replaced::Done);
    }
    // The temporary name now holds what the note's place held.
    let out = std::fs::symlink_metadata(&tmp_path)?;
    match read {
        Some(r) if same_version(&tmp_path, &out, r)? => {
            drop(tmp_path); // the version the new bytes were made from
            sync_dir(dir);
            Ok(Replaced::Done)
        }
        _ => put_back(tmp_path, path, ours, dir),
    }
}

/// After an exchange that took a person's save out of the note's place (now at `tmp_path`):
/// put it back; ours (`(dev, ino)`) is dropped.
fn put_back(
    tmp_path: tempfile::TempPath,
    path: &Path,
    ours: (u64, u64),
    dir: &Path,
) -> std::io::Result<Replaced> {
    rename2(&tmp_path, path, RenameFlags::RENAME_EXCHANGE)?;
    let back = std::fs::symlink_metadata(&tmp_path)?;
    if (back.dev(), back.ino()) != ours {
        // Another save landed between the two exchanges: that newest one goes in place (the
        // one it replaced is older, as a save by rename would have left it).
        rename2(&tmp_path, path, RenameFlags::RENAME_EXCHANGE)?;
    }
    drop(tmp_path);
    sync_dir(dir);
    Ok(Replaced::SavedMeanwhile)
}

/// `renameat2(from, to, flags)`.
fn rename2(from: &Path, to: &Path, flags: RenameFlags) -> std::io::Result<()> {
    nix::fcntl::renameat2(AT_FDCWD, from, AT_FDCWD, to, flags).map_err(std::io::Error::from)
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A temporary file in `dir` holding `bytes` (synced), with the mode and owner of `like` (the
/// note it replaces: a note a person made 0644, or owns, stays so); 0600 and ours otherwise.
fn temp_with(
    dir: &Path,
    bytes: &[u8],
    like: Option<&std::fs::Metadata>,
) -> std::io::Result<tempfile::NamedTempFile> {
    use std::os::unix::fs::PermissionsExt;
    let mut tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)?;
    if let Some(m) = like {
        let f = tmp.as_file();
        // Owner first: changing it clears set-id bits, which the mode then restores.
        if let Err(e) = std::os::unix::fs::fchown(f, Some(m.uid()), Some(m.gid())) {
            // Not root: the note becomes ours (the mode is still kept).
            tracing::debug!(error = %e, "cannot keep a note's owner");
        }
        f.set_permissions(std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
    }
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    Ok(tmp)
}

impl Notes {
    /// Whether `rel` (relative to the root) names a note [`Notes::list`] would list:
    /// `MEMORY.md` or `memory/<name>.md`.
    pub fn is_note(&self, rel: &str) -> bool {
        rel == DURABLE_FILE
            || rel
                .strip_prefix(DAILY_DIR)
                .and_then(|r| r.strip_prefix('/'))
                .is_some_and(|n| !n.contains('/') && is_note_name(n))
    }
}

/// A regular file with one link, not a symbolic link (not followed).
fn plain_file(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file() && m.nlink() == 1)
}

fn is_note_name(name: &str) -> bool {
    name.ends_with(".md") && !name.starts_with('.')
}

impl Notes {
    /// Remove the temporary files of note writes a crash cut off (see
    /// [`remove_unfinished_writes`]) from the memory dir and the daily notes' dir. Call it only
    /// while no write is in flight (agentd: at start, before it serves).
    ///
    /// # Errors
    /// [`MemoryError::Io`] when a directory exists but cannot be read or a file not removed.
    pub fn remove_unfinished_writes(&self) -> Result<usize> {
        let daily = self.root.join(DAILY_DIR);
        let mut n = remove_unfinished_writes(&self.root)?;
        // Not through a link: the daily dir's notes are ignored then, and so are its files.
        if std::fs::symlink_metadata(&daily).is_ok_and(|m| m.is_dir()) {
            n += remove_unfinished_writes(&daily)?;
        }
        Ok(n)
    }
}

/// Remove the temporary files [`write_atomic`] leaves in `dir` when the process dies before
/// its rename (`.osmoda-*.tmp`, regular files; links and other names untouched): such a
/// write never happened, and the file may hold a whole note. Returns how many were removed;
/// a missing `dir` has none.
///
/// # Errors
/// [`MemoryError::Io`] when `dir` cannot be read or a file not removed.
pub fn remove_unfinished_writes(dir: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(MemoryError::io(dir, e)),
    };
    let mut n = 0;
    for e in entries {
        let e = e.map_err(|e| MemoryError::io(dir, e))?;
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with(TEMP_PREFIX) && name.ends_with(TEMP_SUFFIX)) {
            continue;
        }
        let path = e.path();
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_file()) {
            std::fs::remove_file(&path).map_err(|e| MemoryError::io(&path, e))?;
            n += 1;
        }
    }
    Ok(n)
}

/// [`write_atomic`]'s temporary files are named `.osmoda-<random>.tmp`.
const TEMP_PREFIX: &str = ".osmoda-";
const TEMP_SUFFIX: &str = ".tmp";

/// Replace `path` with `bytes` atomically (same-directory temp file, fsync, rename, dir fsync).
///
/// # Errors
/// [`MemoryError::Io`]; `path` is unchanged then.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let like = std::fs::symlink_metadata(path).ok().filter(|m| m.is_file());
    let tmp = temp_with(dir, bytes, like.as_ref()).map_err(|e| MemoryError::io(path, e))?;
    tmp.persist(path)
        .map_err(|e| MemoryError::io(path, e.error))?;
    sync_dir(dir);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_creates_with_title_and_keeps_hand_edits() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let notes = Notes::new(tmp.path());
        let p = notes.daily_path(time::macros::date!(2026 - 11 - 30));
        notes
            .append(&p, "2026-11-30", "## one\nfirst")
            .expect("append");
        let mut s = std::fs::read_to_string(&p).expect("read");
        assert_eq!(s, "# 2026-11-30\n\n## one\nfirst\n");
        s.push_str("hand edit without newline");
        std::fs::write(&p, &s).expect("edit");
        notes.append(&p, "x", "## two\nsecond").expect("append");
        let s = std::fs::read_to_string(&p).expect("read");
        assert!(
            s.contains("hand edit without newline\n\n## two\nsecond\n"),
            "{s}"
        );
        assert_eq!(notes.list().expect("list"), vec!["memory/2026-11-30.md"]);
        // No temp files left behind.
        assert_eq!(
            std::fs::read_dir(p.parent().expect("dir"))
                .expect("ls")
                .count(),
            1
        );
    }

    /// Issue 17 review finding 6: a person's save between a store's read of the note and its
    /// replacement was lost (the rename won). Each way a save lands there: by rename (most
    /// editors), in place (same inode, same size too), the note created or removed meanwhile.
    #[test]
    fn a_save_between_read_and_replace_is_kept() {
        type Save = fn(&Path);
        let by_rename: Save = |p| {
            let t = p.with_file_name("editor.swp");
            std::fs::write(&t, "# day\n\nthe person's text\n").expect("write");
            std::fs::rename(&t, p).expect("rename");
        };
        let in_place: Save = |p| {
            // Same length as the old text, so only the times tell the versions apart.
            std::fs::write(p, "# day\n\nthe person's text\n").expect("write");
        };
        let created: Save = |p| std::fs::write(p, "the person's text\n").expect("write");
        let removed: Save = |p| std::fs::remove_file(p).expect("rm");
        for (what, existed, save, want) in [
            (
                "by rename",
                true,
                by_rename,
                "# day\n\nthe person's text\n\n## ours\n",
            ),
            (
                "in place",
                true,
                in_place,
                "# day\n\nthe person's text\n\n## ours\n",
            ),
            (
                "created meanwhile",
                false,
                created,
                "the person's text\n\n## ours\n",
            ),
            ("removed meanwhile", true, removed, "# t\n\n## ours\n"),
        ] {
            let tmp = tempfile::tempdir().expect("tempdir");
            let notes = Notes::new(tmp.path());
            let p = notes.durable_path();
            if existed {
                std::fs::write(&p, "# day\n\nthe old text read\n").expect("write");
            }
            let mut saves = 0;
            notes
                .append_with(&p, "t", "## ours", &mut |attempt| {
                    if attempt == 0 {
                        save(&p);
                        saves += 1;
                    }
                })
                .expect(what);
            assert_eq!(saves, 1, "{what}");
            assert_eq!(std::fs::read_to_string(&p).expect("read"), want, "{what}");
            // Nothing left at a temporary name.
            assert_eq!(
                std::fs::read_dir(tmp.path()).expect("ls").count(),
                1,
                "{what}"
            );
        }
        // A note that keeps changing is given up on, with nothing added.
        let tmp = tempfile::tempdir().expect("tempdir");
        let notes = Notes::new(tmp.path());
        let p = notes.durable_path();
        std::fs::write(&p, "# day\n").expect("write");
        let mut n = 0;
        let e = notes
            .append_with(&p, "t", "## ours", &mut |_| {
                n += 1;
                std::fs::write(&p, format!("# day\nsave {n}\n")).expect("write");
            })
            .expect_err("changing on every try");
        assert!(e.to_string().contains("nothing was added"), "{e}");
        assert!(!std::fs::read_to_string(&p).expect("read").contains("ours"));
    }

    /// Issue 17 review finding 7: a note replaced by an append (or [`write_atomic`]) keeps the
    /// mode and owner it had; a note osModa creates is 0600.
    #[test]
    fn a_replaced_note_keeps_its_mode_and_owner() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().expect("tempdir");
        let notes = Notes::new(tmp.path());
        let p = notes.durable_path();
        std::fs::write(&p, "# Memory\n").expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        // As root (CI, agentd) the owner is a person's; otherwise our own.
        let root = nix::unistd::geteuid().is_root();
        let (uid, gid) = if root {
            (4242, 4343)
        } else {
            let m = std::fs::metadata(&p).expect("stat");
            (m.uid(), m.gid())
        };
        if root {
            std::os::unix::fs::chown(&p, Some(uid), Some(gid)).expect("chown");
        }
        notes.append(&p, "Memory", "## a").expect("append");
        let m = std::fs::metadata(&p).expect("stat");
        assert_eq!(m.mode() & 0o7777, 0o644);
        assert_eq!((m.uid(), m.gid()), (uid, gid));
        write_atomic(&p, b"# Memory\n").expect("write_atomic");
        let m = std::fs::metadata(&p).expect("stat");
        assert_eq!(((m.mode() & 0o7777), m.uid(), m.gid()), (0o644, uid, gid));
        // A new note: private.
        let day = notes.daily_path(time::macros::date!(2026 - 11 - 30));
        notes.append(&day, "2026-11-30", "## b").expect("append");
        assert_eq!(std::fs::metadata(&day).expect("stat").mode() & 0o777, 0o600);
    }

    #[test]
    fn append_keeps_bytes_that_are_not_utf8() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let notes = Notes::new(tmp.path());
        let p = notes.durable_path();
        std::fs::write(&p, b"# Memory\n\nlatin-1 caf\xe9").expect("write");
        notes.append(&p, "Memory", "## new").expect("append");
        assert_eq!(
            std::fs::read(&p).expect("read"),
            b"# Memory\n\nlatin-1 caf\xe9\n\n## new\n"
        );
        // An empty file gains no blank line of its own before the section.
        std::fs::write(&p, b"").expect("write");
        notes.append(&p, "Memory", "## a\n").expect("append");
        assert_eq!(std::fs::read(&p).expect("read"), b"\n## a\n");
    }

    #[test]
    fn is_note_matches_list() {
        let notes = Notes::new("/m");
        for (rel, yes) in [
            ("MEMORY.md", true),
            ("memory/2026-01-01.md", true),
            ("memory/x.md", true),
            ("memory/.hidden.md", false),
            ("memory/sub/x.md", false),
            ("memory/x.txt", false),
            ("other.md", false),
            ("memoryx/a.md", false),
        ] {
            assert_eq!(notes.is_note(rel), yes, "{rel}");
        }
    }

    #[test]
    fn list_orders_durable_first_and_ignores_other_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(tmp.path().join("memory/sub")).expect("mkdir");
        for f in [
            "MEMORY.md",
            "memory/2026-01-02.md",
            "memory/2026-01-01.md",
            "memory/x.txt",
            "memory/.hidden.md",
        ] {
            std::fs::write(tmp.path().join(f), "# t\n").expect("write");
        }
        let got = Notes::new(tmp.path()).list().expect("list");
        assert_eq!(
            got,
            vec!["MEMORY.md", "memory/2026-01-01.md", "memory/2026-01-02.md"]
        );
    }

    #[test]
    fn unfinished_writes_are_removed_and_nothing_else() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path();
        std::fs::create_dir_all(root.join("memory/.osmoda-dir.tmp")).expect("mkdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("kept"), "x").expect("write");
        for f in [
            ".osmoda-a1B2c3.tmp",
            "memory/.osmoda-x.tmp",
            "MEMORY.md",
            "memory/2026-01-01.md",
            "memory/osmoda-x.tmp",
            "memory/.osmoda-x.tmp.md",
            "memory/.other.tmp",
        ] {
            std::fs::write(root.join(f), "## a section\n").expect("write");
        }
        std::os::unix::fs::symlink(
            outside.path().join("kept"),
            root.join("memory/.osmoda-link.tmp"),
        )
        .expect("symlink");
        let notes = Notes::new(root);
        assert_eq!(notes.remove_unfinished_writes().expect("remove"), 2);
        let mut left: Vec<String> = walk(root);
        left.sort();
        assert_eq!(
            left,
            [
                "MEMORY.md",
                "memory",
                "memory/.osmoda-dir.tmp",
                "memory/.osmoda-link.tmp",
                "memory/.osmoda-x.tmp.md",
                "memory/.other.tmp",
                "memory/2026-01-01.md",
                "memory/osmoda-x.tmp",
            ]
        );
        assert!(outside.path().join("kept").exists());
        // Nothing left to do, and a memory dir not made yet has nothing either.
        assert_eq!(notes.remove_unfinished_writes().expect("again"), 0);
        let absent = Notes::new(root.join("absent"));
        assert_eq!(absent.remove_unfinished_writes().expect("absent"), 0);
    }

    /// Every entry under `root`, relative, not following links.
    fn walk(root: &Path) -> Vec<String> {
        let mut out = Vec::new();
        let mut dirs = vec![root.to_path_buf()];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir").flatten() {
                let p = e.path();
                out.push(p.strip_prefix(root).expect("under").display().to_string());
                if e.file_type().expect("type").is_dir() {
                    dirs.push(p);
                }
            }
        }
        out
    }
}
