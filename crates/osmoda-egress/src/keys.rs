//! The two files the proxy re-reads when they change: agentd's public key and the revocation
//! list. A change is noticed on the next request (one `stat` each), so a revocation holds from
//! the first CONNECT after the file was replaced, with no polling interval to wait out.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ed25519_dalek::VerifyingKey;

/// Identity of a file version: (device, inode, size, mtime ns). Replacing the file (rename)
/// changes the inode; rewriting it in place changes the size or mtime.
type Stamp = (u64, u64, u64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

type Cached<T> = (Option<Stamp>, Arc<Result<T, String>>);

/// A file parsed into `T` and re-parsed when its stamp changes.
#[derive(Debug)]
struct Watched<T> {
    path: PathBuf,
    cached: Mutex<Cached<T>>,
    parse: fn(Option<&str>) -> Result<T, String>,
}

impl<T> Watched<T> {
    fn new(path: PathBuf, parse: fn(Option<&str>) -> Result<T, String>) -> Watched<T> {
        let first = Arc::new(parse(None));
        let w = Watched {
            path,
            cached: Mutex::new((None, first)),
            parse,
        };
        w.force();
        w
    }

    fn force(&self) {
        let st = stamp(&self.path);
        let text = std::fs::read(&self.path).ok();
        let text = text.as_deref().map(String::from_utf8_lossy);
        let value = Arc::new((self.parse)(text.as_deref()));
        if let Ok(mut c) = self.cached.lock() {
            *c = (st, value);
        }
    }

    fn get(&self) -> Arc<Result<T, String>> {
        let st = stamp(&self.path);
        let stale = self.cached.lock().map(|c| c.0 != st).unwrap_or(true);
        if stale {
            self.force();
        }
        self.cached
            .lock()
            .map(|c| Arc::clone(&c.1))
            .unwrap_or_else(|_| Arc::new(Err("internal lock poisoned".into())))
    }
}

/// agentd's public key and the revocation list, each re-read on change.
#[derive(Debug)]
pub struct Keys {
    public: Watched<VerifyingKey>,
    revoked: Watched<HashSet<String>>,
}

fn parse_public(text: Option<&str>) -> Result<VerifyingKey, String> {
    let text = text.ok_or("the public key file is missing or unreadable")?;
    crate::token::decode_public_key(text).map_err(|e| format!("the public key file: {e}"))
}

fn parse_revoked(text: Option<&str>) -> Result<HashSet<String>, String> {
    // A missing list revokes nothing; every other line is a token id.
    Ok(text
        .unwrap_or_default()
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter(|l| !l.is_empty())
        .map(str::to_ascii_lowercase)
        .collect())
}

impl Keys {
    /// Watches `public_key_file` and `revocation_file`.
    pub fn new(public_key_file: impl Into<PathBuf>, revocation_file: impl Into<PathBuf>) -> Keys {
        Keys {
            public: Watched::new(public_key_file.into(), parse_public),
            revoked: Watched::new(revocation_file.into(), parse_revoked),
        }
    }

    /// The current public key.
    ///
    /// # Errors
    /// Why there is none (missing or malformed file); every token is refused meanwhile.
    pub fn public_key(&self) -> Result<VerifyingKey, String> {
        match &*self.public.get() {
            Ok(k) => Ok(*k),
            Err(e) => Err(format!("{e} ({})", self.public.path.display())),
        }
    }

    /// Is the token with this id revoked now?
    pub fn is_revoked(&self, id: &str) -> bool {
        match &*self.revoked.get() {
            Ok(set) => set.contains(&id.to_ascii_lowercase()),
            Err(_) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn reloads_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let pk = dir.path().join("public.key");
        let rv = dir.path().join("revoked");
        let keys = Keys::new(&pk, &rv);
        assert!(keys.public_key().unwrap_err().contains("missing"));
        assert!(!keys.is_revoked("ab"));
        let k1 = SigningKey::from_bytes(&[1; 32]).verifying_key();
        std::fs::write(&pk, crate::token::encode_public_key(&k1)).unwrap();
        assert_eq!(keys.public_key().unwrap(), k1);
        std::fs::write(&rv, "# revoked\nAB  # a comment\n\ncd\n").unwrap();
        assert!(keys.is_revoked("ab") && keys.is_revoked("CD") && !keys.is_revoked("ef"));
        // Replaced by rename, same size: the inode differs.
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, "ef\n").unwrap();
        std::fs::rename(&tmp, &rv).unwrap();
        assert!(keys.is_revoked("ef") && !keys.is_revoked("ab"));
        std::fs::write(&pk, "zz\n").unwrap();
        assert!(keys.public_key().unwrap_err().contains("not hex"));
    }
}
