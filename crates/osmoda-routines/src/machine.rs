//! Checks of a routines config against this machine, which `RoutinesConfig::validate` cannot
//! make (it is pure and also runs at build time, inside the Nix sandbox, where no secret file
//! exists): every enabled webhook's secret file lies in a place of its own (not in /proc or
//! /sys, not in the approval path or another daemon's state) and is a regular file this daemon
//! can read and is not empty; no mask is in /proc (the sandbox could not place it); no command
//! runs as a user that is uid 0 or does not exist; no http action calls
//! a socket that commands may not reach (the approval path, a daemon's state, this daemon's
//! own socket). The daemon runs them at start (it refuses to start), on reload (it keeps the
//! routines in force), on `/routine/add` (400, nothing committed) and in `check-config` outside
//! a Nix build. Messages name the routine and the option, never a path: they reach the ledger
//! and API answers.
//!
//! It also lists what commands must never see: [`secret_files`] are masked by the boundary
//! together with the state dir and the daemon's socket.

use std::io::Read;
use std::path::{Path, PathBuf};

use osmoda_config::binds::Secret;
use osmoda_config::{RoutineAction, RoutinesConfig, Trigger};

/// Largest webhook secret read (a longer file is refused: a secret is a few dozen bytes, and
/// this bounds what a mistaken path such as a log file costs).
pub const MAX_SECRET_BYTES: u64 = 64 * 1024;

/// Reads a webhook secret: the bytes of a regular file without one trailing newline.
///
/// # Errors
/// Why it cannot be used, as the end of a sentence about the file ("does not exist", "is
/// empty", ...); never the path or the contents.
pub fn read_secret(path: &Path) -> Result<Vec<u8>, String> {
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::NotFound => "does not exist".to_string(),
        std::io::ErrorKind::PermissionDenied => {
            "cannot be read by this daemon (permission denied)".to_string()
        }
        _ => format!("cannot be read ({})", e.kind()),
    };
    // Opened without following a FIFO's writer: refuse anything but a regular file before
    // reading, so `/dev/zero` or a pipe cannot block or flood the daemon.
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err("is not a regular file".into());
    }
    if meta.len() > MAX_SECRET_BYTES {
        return Err(format!("is larger than {MAX_SECRET_BYTES} bytes"));
    }
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .map_err(io)?
        .take(MAX_SECRET_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.strip_suffix(b"\n").unwrap_or(&bytes).is_empty() {
        return Err("is empty".into());
    }
    // Every user (and every routine's command, which runs as one) could read it: no secret.
    let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777;
    if mode & 0o004 != 0 {
        return Err(format!(
            "is readable by every user on this machine (mode {mode:04o}), so it is no secret \
             any more; make a new one readable only by its owner or group (chmod 0600 or 0640)"
        ));
    }
    if bytes.ends_with(b"\n") {
        bytes.pop();
    }
    Ok(bytes)
}

/// Every webhook secret file `cfg` names (enabled routines or not): paths command actions
/// must never see.
pub fn secret_files(cfg: &RoutinesConfig) -> Vec<PathBuf> {
    cfg.routines
        .values()
        .filter_map(|r| match &r.trigger {
            Trigger::Webhook { secret_file, .. } => Some(secret_file.clone()),
            _ => None,
        })
        .collect()
}

/// `path` with symlinks resolved as far as it exists: its longest existing ancestor made
/// canonical, the rest appended. Whether the rest exists does not change the answer for any
/// question about where the path lies, so a refusal based on it says nothing about existence.
pub fn resolve(path: &Path) -> PathBuf {
    for a in path.ancestors() {
        if let Ok(real) = std::fs::canonicalize(a) {
            return match path.strip_prefix(a) {
                Ok(rest) if !rest.as_os_str().is_empty() => real.join(rest),
                _ => real,
            };
        }
    }
    path.to_path_buf()
}

/// Whether `path` is `hidden` or inside it, lexically and after resolving symlinks.
pub fn inside(path: &Path, hidden: &Path) -> bool {
    path.starts_with(hidden) || resolve(path).starts_with(resolve(hidden))
}

/// Whether `p` is absolute with no `.` or `..` component (what the sandbox can mask).
pub fn absolute_and_normal(p: &Path) -> bool {
    use std::path::Component;
    p.is_absolute()
        && p.components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
}

/// Where the command sandbox mounts a fresh file system of its own (a new PID namespace's
/// `/proc`): a mask of a path there cannot be placed, and every command run would fail.
const UNMASKABLE: &[&str] = &["/proc"];
/// Kernel pseudo file systems: what they hold (another process's environment, a kernel
/// setting) is not a secret file.
const PSEUDO: &[&str] = &["/proc", "/sys"];

/// Where paths lie on this machine, for [`check`]: what commands may not see, and what
/// osmoda-routines itself may not use as a webhook secret.
#[derive(Debug, Clone, Default)]
pub struct Places {
    /// Every path the boundary hides from commands (see `crate::hidden_paths`).
    pub hidden: Vec<PathBuf>,
    /// Paths that hold other components' secrets: the boundary's `masked_paths` (the approval
    /// path, agentd's and keyd's state), the daemon's `--mask` paths, and the state root
    /// next to this daemon's state dir (other osModa daemons' state: mesh, voice, watch keys).
    pub foreign: Vec<PathBuf>,
    /// This daemon's own state dir (inside the state root, but its own).
    pub state_dir: PathBuf,
}

/// Refuses a webhook secret file in a place routines may not use, before the file is touched:
/// the answer depends on the path and the symlinks leading to it, never on whether the file
/// exists or can be read, so it is no oracle for what hidden directories hold.
fn check_secret_place(secret: &Path, places: &Places) -> Result<(), String> {
    if !absolute_and_normal(secret) {
        return Err("must be an absolute path without `.` or `..`".into());
    }
    let real = resolve(secret);
    if PSEUDO.iter().any(|p| real.starts_with(p)) {
        return Err(
            "is on a kernel file system (/proc or /sys), which holds no secret file \
                    (and the command sandbox cannot hide a path in /proc)"
                .into(),
        );
    }
    let own = inside(secret, &places.state_dir);
    if !own && places.foreign.iter().any(|f| inside(secret, f)) {
        return Err(
            "lies where osmoda-routines may not read secrets (the approval path, \
                    agentd's or another osModa daemon's state)"
                .into(),
        );
    }
    Ok(())
}

/// The uid `user` resolves to on this machine (a name or a number), as the sandbox resolves
/// it: a number must be a user in the password database too.
fn uid_of(user: &str) -> Result<u32, String> {
    let found = match user.parse::<u32>() {
        Ok(n) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(n)),
        Err(_) => nix::unistd::User::from_name(user),
    };
    match found {
        Ok(Some(u)) => Ok(u.uid.as_raw()),
        Ok(None) => Err(format!(
            "{user:?} is not a user on this machine: name an existing unprivileged user, or \
             leave it unset for nobody"
        )),
        Err(e) => Err(format!("{user:?} cannot be looked up ({e})")),
    }
}

fn check_action(at: &str, a: &RoutineAction, hidden: &[PathBuf]) -> Result<(), String> {
    match a {
        RoutineAction::Command {
            user: Some(user), ..
        } => {
            let uid = uid_of(user).map_err(|e| format!("{at}.user: {e}"))?;
            if uid == 0 {
                return Err(format!(
                    "{at}.user {user:?} is uid 0 (root): a routine's command never runs as \
                     root; leave it unset for nobody, or name an unprivileged user"
                ));
            }
            let me = nix::unistd::geteuid().as_raw();
            if me != 0 && uid != me {
                return Err(format!(
                    "{at}.user {user:?}: osmoda-routines is not root, so its commands run as \
                     its own user; leave user unset"
                ));
            }
        }
        RoutineAction::Http {
            socket: Some(s), ..
        } if reaches_hidden(s, hidden) => {
            return Err(format!(
                "{at}.socket is a path routines may not reach (the approval path, a daemon's \
                 state or osmoda-routines' own socket); call agentd's socket or another \
                 daemon's API socket"
            ));
        }
        RoutineAction::Chain { steps } => {
            for (i, s) in steps.iter().enumerate() {
                check_action(&format!("{at}.steps[{i}]"), s, hidden)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Entries of one hidden directory compared with an http action's socket (bounds the work).
const MAX_SCANNED: usize = 1024;

/// Whether the socket `s` is one routines may not reach: inside a hidden path (lexically or
/// after symlinks), or the same file (device and inode) as a hidden path or a socket right
/// inside a hidden directory — a hard link to it elsewhere is the same socket.
fn reaches_hidden(s: &Path, hidden: &[PathBuf]) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    if hidden.iter().any(|h| inside(s, h)) {
        return true;
    }
    let Ok(target) = std::fs::metadata(s) else {
        return false;
    };
    let same = |m: &std::fs::Metadata| (m.dev(), m.ino()) == (target.dev(), target.ino());
    hidden.iter().any(|h| match std::fs::metadata(h) {
        Ok(m) if m.is_dir() => std::fs::read_dir(h)
            .into_iter()
            .flatten()
            .flatten()
            .take(MAX_SCANNED)
            .any(|e| {
                e.metadata()
                    .is_ok_and(|m| m.file_type().is_socket() && same(&m))
            }),
        Ok(m) => same(&m),
        Err(_) => false,
    })
}

/// Checks the enabled routines of `cfg` against this machine (see the module docs) and
/// `places`: every hidden path can be masked; every webhook secret is in a place of its own
/// and usable; no command user is root or unknown; no http action calls a hidden socket.
///
/// # Errors
/// The first problem, starting with `routines.<name>.…` (or `boundary.masked_paths`) and
/// saying what to do.
pub fn check(cfg: &RoutinesConfig, places: &Places) -> Result<(), String> {
    for m in &cfg.boundary.masked_paths {
        if UNMASKABLE
            .iter()
            .any(|u| resolve(Path::new(m)).starts_with(u))
        {
            return Err(format!(
                "boundary.masked_paths: {m} is in /proc, where the command sandbox mounts a \
                 fresh /proc and cannot place a mask (every command would fail); remove it"
            ));
        }
    }
    for (name, r) in cfg.routines.iter().filter(|(_, r)| r.enable) {
        let at = format!("routines.{name}");
        if let Trigger::Webhook { secret_file, .. } = &r.trigger {
            check_secret_place(secret_file, places)
                .map_err(|why| format!("{at}.trigger.secret_file {why}: give the routine a secret file of its own, readable by osmoda-routines"))?;
            read_secret(secret_file).map_err(|why| {
                format!(
                    "{at}.trigger.secret_file {why}: put a random secret in it (e.g. \
                     `head -c 32 /dev/urandom | base64`), readable by the user osmoda-routines \
                     runs as, then reload; or disable the routine"
                )
            })?;
        }
        check_action(&format!("{at}.action"), &r.action, &places.hidden)?;
    }
    check_binds(cfg, places)
}

/// The ring-bind rule (`osmoda_config::binds`) on this machine: no enabled ring1 routine's
/// capability binds a path that is, holds or lies inside a secret `cfg` names, a path the
/// boundary hides (this daemon's state dir and socket, `--mask`) or another daemon's state,
/// with symlinks resolved.
///
/// # Errors
/// `routines.<name>.action….capabilities: …` naming the capability, the bind and whose secret
/// it would show.
pub fn check_binds(cfg: &RoutinesConfig, places: &Places) -> Result<(), String> {
    let hidden = places.hidden.iter().map(|p| Secret {
        option: "a path hidden from routines' commands: a daemon's state or socket, or a --mask"
            .into(),
        path: p.clone(),
    });
    let foreign = places.foreign.iter().map(|p| Secret {
        option: "the osModa daemons' state or a masked path".into(),
        path: p.clone(),
    });
    let extra: Vec<Secret> = hidden.chain(foreign).collect();
    cfg.check_ring_binds(&extra, &|a: &Path, b: &Path| inside(a, b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_missing_empty_special_or_huge_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s");
        assert_eq!(read_secret(&p).unwrap_err(), "does not exist");
        for empty in ["", "\n"] {
            std::fs::write(&p, empty).unwrap();
            assert_eq!(read_secret(&p).unwrap_err(), "is empty");
        }
        std::fs::write(&p, "k\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = |m| std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m)).unwrap();
        for readable_by_all in [0o644, 0o604, 0o777] {
            mode(readable_by_all);
            let e = read_secret(&p).unwrap_err();
            assert!(e.starts_with("is readable by every user"), "{e}");
            assert!(e.contains(&format!("(mode {readable_by_all:04o})")), "{e}");
        }
        for own in [0o600, 0o640, 0o400, 0o660] {
            mode(own);
            assert_eq!(read_secret(&p).unwrap(), b"k", "{own:o}");
        }
        std::fs::write(&p, "k\n\n").unwrap();
        assert_eq!(read_secret(&p).unwrap(), b"k\n");
        assert_eq!(
            read_secret(dir.path()).unwrap_err(),
            "is not a regular file"
        );
        assert_eq!(
            read_secret(Path::new("/dev/zero")).unwrap_err(),
            "is not a regular file"
        );
        std::fs::write(&p, vec![b'a'; 64 * 1024 + 1]).unwrap();
        assert!(read_secret(&p).unwrap_err().contains("larger"));
    }

    #[test]
    fn inside_is_lexical_and_resolved() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        std::os::unix::fs::symlink(&real, dir.path().join("link")).unwrap();
        assert!(inside(&real.join("x.sock"), &real));
        assert!(inside(&dir.path().join("link/x.sock"), &real));
        assert!(inside(&real.join("x.sock"), &dir.path().join("link")));
        assert!(!inside(&dir.path().join("other.sock"), &real));
        assert!(!inside(&dir.path().join("realx"), &real));
    }
}
