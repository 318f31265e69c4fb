//! Paths opened once, so that what is bound into a sandbox is what was checked.
//!
//! A path checked by name and then bound by name can change in between: a command that may
//! write a directory on the path swaps a component for a symlink (`renameat2(RENAME_EXCHANGE)`)
//! and bwrap binds wherever the symlink points (review of issue 11, finding 4). A [`Pinned`]
//! path is opened one component at a time with `O_PATH | O_NOFOLLOW`, refused when any
//! component is a symlink, and its descriptor's real path (`/proc/self/fd/N`) must be the name
//! it was asked for; the sandbox is then given the descriptor (`bwrap --bind-fd`), never the
//! name, so a swap after the check changes nothing that is bound.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use nix::fcntl::{openat, OFlag, AT_FDCWD};
use nix::sys::stat::{fstat, Mode, SFlag};

use crate::SandboxError;

/// A path held open by an `O_PATH` descriptor: the object at its name when it was pinned.
#[derive(Debug, Clone)]
pub struct Pinned {
    path: PathBuf,
    fd: Arc<OwnedFd>,
    dev: u64,
    ino: u64,
    /// `(st_dev, st_ino)` of `/` and of every directory on the way down, as they were opened.
    above: Vec<(u64, u64)>,
}

impl PartialEq for Pinned {
    fn eq(&self, other: &Pinned) -> bool {
        (&self.path, self.dev, self.ino) == (&other.path, other.dev, other.ino)
    }
}

impl Eq for Pinned {}

/// The `(st_dev, st_ino)` of `path` (following symlinks), if it exists.
fn inode(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

impl Pinned {
    /// Opens `path` — absolute, resolved (no symlink, `.` or `..` in it) — one component at a
    /// time without following symlinks.
    ///
    /// # Errors
    /// [`SandboxError::BadPath`] when the path is relative, not resolved, missing, has a
    /// symlink in it, or resolved to another place while it was opened (it changed under us).
    pub fn open(path: &Path) -> Result<Pinned, SandboxError> {
        let bad = |why| SandboxError::BadPath {
            path: path.to_path_buf(),
            why,
        };
        if !path.is_absolute() {
            return Err(bad("must be absolute"));
        }
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut fd = openat(AT_FDCWD, "/", flags | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(|_| bad("cannot open /"))?;
        let mut above = Vec::new();
        for c in path.components() {
            let name = match c {
                Component::RootDir => continue,
                Component::Normal(n) => n,
                _ => return Err(bad("must not contain `.` or `..`")),
            };
            let here = fstat(fd.as_fd()).map_err(|_| bad("cannot be examined"))?;
            above.push((here.st_dev, here.st_ino));
            let next = openat(fd.as_fd(), name, flags, Mode::empty())
                .map_err(|_| bad("does not exist (a path must exist to be bound)"))?;
            let st = fstat(next.as_fd()).map_err(|_| bad("cannot be examined"))?;
            if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
                return Err(bad(
                    "has a symlink in it (it changed since it was resolved, or resolves elsewhere): bind the place it resolves to",
                ));
            }
            fd = next;
        }
        // The descriptor's own idea of where it is: a directory renamed while we walked shows
        // here under its new name.
        let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(|_| bad("cannot be examined"))?;
        if real != path {
            return Err(bad("moved while it was opened"));
        }
        let st = fstat(fd.as_fd()).map_err(|_| bad("cannot be examined"))?;
        Ok(Pinned {
            path: path.to_path_buf(),
            fd: Arc::new(fd),
            dev: st.st_dev,
            ino: st.st_ino,
            above,
        })
    }

    /// The path as it was checked (the bind's place inside the sandbox).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor passed to bwrap.
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Whether `hidden` is this very object or lies inside it, by inode, not by name: a hard
    /// link or a second name of a hidden directory is caught too. `hidden` is followed as the
    /// daemon names it; a missing one is not inside anything.
    pub fn holds(&self, hidden: &Path) -> bool {
        let Ok(real) = std::fs::canonicalize(hidden) else {
            return false;
        };
        real.ancestors()
            .filter_map(inode)
            .any(|i| i == (self.dev, self.ino))
    }

    /// Whether this object lies inside `hidden` (or is it), by its real path and by the
    /// inodes of the directories it was opened through (never by its name again, which may
    /// lead elsewhere by now).
    pub fn inside(&self, hidden: &Path) -> bool {
        if self.path.starts_with(hidden) {
            return true;
        }
        let Some(h) = inode(hidden) else {
            return false;
        };
        h == (self.dev, self.ino) || self.above.contains(&h)
    }

    /// `--bind-fd N DEST` (or `--ro-bind-fd`) for bwrap.
    pub(crate) fn bwrap_args(&self, writable: bool) -> [OsString; 3] {
        let flag = if writable {
            "--bind-fd"
        } else {
            "--ro-bind-fd"
        };
        [
            flag.into(),
            self.raw_fd().to_string().into(),
            self.path.clone().into(),
        ]
    }
}

/// Makes `cmd`'s child keep `fds` open across `exec` (they are close-on-exec here, so no other
/// child started meanwhile gets them): bwrap binds them by number.
pub(crate) fn inherit(cmd: &mut tokio::process::Command, fds: Vec<RawFd>) {
    if fds.is_empty() {
        return;
    }
    #[allow(unsafe_code)]
    // SAFETY: only `fcntl`, async-signal-safe, on descriptors the spec keeps open until the
    // spawn returns.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &fds {
                if libc::fcntl(*fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_symlink_anywhere_on_the_path_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir(real.join("dir")).unwrap();
        std::fs::create_dir(real.join("dir/sub")).unwrap();
        std::os::unix::fs::symlink("dir", real.join("link")).unwrap();
        let p = Pinned::open(&real.join("dir/sub")).expect("a plain path pins");
        assert_eq!(p.path(), real.join("dir/sub"));
        for bad in ["link", "link/sub", "missing", "dir/../dir"] {
            assert!(Pinned::open(&real.join(bad)).is_err(), "{bad}");
        }
        assert!(Pinned::open(Path::new("relative")).is_err());
    }

    #[test]
    fn holds_and_inside_go_by_inode() {
        let d = tempfile::tempdir().unwrap();
        let real = std::fs::canonicalize(d.path()).unwrap();
        std::fs::create_dir_all(real.join("a/secret")).unwrap();
        std::os::unix::fs::symlink("a/secret", real.join("alias")).unwrap();
        let a = Pinned::open(&real.join("a")).unwrap();
        assert!(a.holds(&real.join("a/secret")));
        assert!(
            a.holds(&real.join("alias")),
            "a second name of a hidden path"
        );
        assert!(!a.holds(&real.join("elsewhere")));
        let s = Pinned::open(&real.join("a/secret")).unwrap();
        assert!(
            s.inside(&real.join("alias")),
            "inside a hidden path named otherwise"
        );
        assert!(s.inside(&real.join("a")));
        assert!(!a.inside(&real.join("a/secret")));
    }
}
