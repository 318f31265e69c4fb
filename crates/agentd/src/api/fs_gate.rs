//! The approval gate of `/fs/write`: a write of a login file, a credential or a path outside the
//! writable roots is refused with the gate's 403 and a ticket bound to exactly that write (the
//! real path, the SHA-256 and mode of the file before and after); the same write with the
//! approved ticket lands. A credential's old content is never hashed into a ticket or the ledger.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use serde_json::{json, Value};

use crate::gate::rules::Finding;

/// Stands for the old content of a credential, which is not hashed.
pub(crate) const NOT_HASHED: &str = "<credential: not hashed>";

/// The SHA-256 (hex) and mode of the regular file at `path` now; `(None, None)` when there is
/// none (or it is not a regular file, which the write refuses later anyway).
pub(crate) fn current(path: &Path) -> (Option<String>, Option<u32>) {
    let Ok(fd) = open(
        path,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return (None, None);
    };
    let mut f = std::fs::File::from(fd);
    let Ok(meta) = f.metadata() else {
        return (None, None);
    };
    if !meta.is_file() {
        return (None, None);
    }
    let mode = Some(meta.mode() & 0o7777);
    if super::secrets::unreadable(path).is_some() {
        return (Some(NOT_HASHED.into()), mode);
    }
    let mut data = Vec::new();
    match f.read_to_end(&mut data) {
        Ok(_) => (Some(super::fs::sha256_hex(&data)), mode),
        Err(_) => (None, mode),
    }
}

/// The finding a gated write is judged (and its ticket bound) by.
pub(crate) fn finding(
    kind: &'static str,
    real: &Path,
    why: &str,
    before: (Option<&str>, Option<u32>),
    after: (&str, u32),
) -> Finding {
    let path = real.display().to_string();
    let state = |sha: Option<&str>, mode: Option<u32>| -> Value {
        match sha {
            None => json!("<absent>"),
            Some(s) => json!({ "sha256": s, "mode": mode }),
        }
    };
    Finding {
        kind,
        words: format!(
            "writes {path} (new content SHA-256 {}, mode {:o}): {why}",
            after.0, after.1
        ),
        path,
        was: state(before.0, before.1),
        now: state(Some(after.0), Some(after.1)),
    }
}
