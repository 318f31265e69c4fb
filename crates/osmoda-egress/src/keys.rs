//! The two files the proxy re-reads when they change — agentd's public key and the revocation
//! list — and the tokens verified with them.
//!
//! A change is noticed on the next request (one `stat` each), so a revocation holds from the
//! first CONNECT after the file was replaced, with no polling interval to wait out. A verified
//! token is kept by its bytes in a bounded LRU ([`VERIFIED_CACHE`] entries) together with the
//! versions of both files it was verified under: a new key or a new revocation list makes every
//! kept verification stale, so the next CONNECT verifies again. The time window
//! ([`token::check_time`]) and the revocation list are checked at every CONNECT, cached or not.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ed25519_dalek::VerifyingKey;
use lru::LruCache;

use crate::token::{self, Claims, TokenError};

/// Verified tokens kept (each at most [`token::MAX_TOKEN_BYTES`]: at most 8 MiB in all).
pub const VERIFIED_CACHE: usize = 1024;

/// Identity of a file version: (device, inode, size, mtime ns). Replacing the file (rename)
/// changes the inode; rewriting it in place changes the size or mtime.
type Stamp = (u64, u64, u64, i64, i64);

fn stamp(path: &Path) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// The stamp it was read at, its version (counts reads that saw a change) and the value.
type Cached<T> = (Option<Stamp>, u64, Arc<Result<T, String>>);

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
            cached: Mutex::new((None, 0, first)),
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
        let mut c = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        *c = (st, c.1 + 1, value);
    }

    /// The value now, and its version.
    fn get(&self) -> (u64, Arc<Result<T, String>>) {
        let st = stamp(&self.path);
        let stale = self.cached.lock().map(|c| c.0 != st).unwrap_or(true);
        if stale {
            self.force();
        }
        let c = self.cached.lock().unwrap_or_else(PoisonError::into_inner);
        (c.1, Arc::clone(&c.2))
    }
}

/// Why a token is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// There is no usable public key (missing or malformed file): every token is refused.
    NoKey(String),
    /// The token does not verify, or is outside its time window.
    Token(TokenError),
    /// The token verifies but its id is on the revocation list (or the list is unusable).
    Revoked(Arc<Claims>),
}

/// A verification kept: under which versions of the key and the revocation list.
#[derive(Debug)]
struct Verified {
    versions: (u64, u64),
    claims: Arc<Claims>,
}

/// agentd's public key and the revocation list, each re-read on change.
#[derive(Debug)]
pub struct Keys {
    public: Watched<VerifyingKey>,
    revoked: Watched<HashSet<String>>,
    verified: Mutex<LruCache<String, Verified>>,
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
            verified: Mutex::new(LruCache::new(
                NonZeroUsize::new(VERIFIED_CACHE).unwrap_or(NonZeroUsize::MIN),
            )),
        }
    }

    /// The current public key.
    ///
    /// # Errors
    /// Why there is none (missing or malformed file); every token is refused meanwhile.
    pub fn public_key(&self) -> Result<VerifyingKey, String> {
        match &*self.public.get().1 {
            Ok(k) => Ok(*k),
            Err(e) => Err(format!("{e} ({})", self.public.path.display())),
        }
    }

    /// Is the token with this id revoked now?
    pub fn is_revoked(&self, id: &str) -> bool {
        revoked_in(&self.revoked.get().1, id)
    }

    /// Checks `token` at Unix time `now` against the key and the revocation list in force:
    /// signature and claims (from the cache when these bytes were verified under the same
    /// versions of both files), time window, revocation.
    ///
    /// # Errors
    /// [`Refusal`]: no key, a token that does not verify or is outside its window, a revoked one.
    pub fn check(&self, token: &str, now: u64) -> Result<Arc<Claims>, Refusal> {
        let (kv, key) = self.public.get();
        let key = match &*key {
            Ok(k) => *k,
            Err(e) => {
                return Err(Refusal::NoKey(format!(
                    "{e} ({})",
                    self.public.path.display()
                )))
            }
        };
        let (rv, revoked) = self.revoked.get();
        let versions = (kv, rv);
        let kept = {
            let mut c = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
            match c.get(token) {
                Some(v) if v.versions == versions => Some(Arc::clone(&v.claims)),
                Some(_) => {
                    c.pop(token);
                    None
                }
                None => None,
            }
        };
        let claims = match kept {
            Some(c) => c,
            None => {
                // Verified outside the lock: an Ed25519 check takes tens of microseconds.
                let c = Arc::new(token::verify_signed(&key, token).map_err(Refusal::Token)?);
                let mut cache = self.verified.lock().unwrap_or_else(PoisonError::into_inner);
                cache.put(
                    token.to_string(),
                    Verified {
                        versions,
                        claims: Arc::clone(&c),
                    },
                );
                c
            }
        };
        token::check_time(&claims, now).map_err(Refusal::Token)?;
        if revoked_in(&revoked, &claims.id) {
            return Err(Refusal::Revoked(claims));
        }
        Ok(claims)
    }

    /// Number of verifications kept (for tests).
    pub fn cached(&self) -> usize {
        self.verified
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

/// An unusable revocation list revokes everything: better no egress than a revoked token
/// honoured.
fn revoked_in(list: &Result<HashSet<String>, String>, id: &str) -> bool {
    match list {
        Ok(set) => set.contains(&id.to_ascii_lowercase()),
        Err(_) => true,
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

    fn token(sk: &SigningKey, now: u64) -> (String, Claims) {
        let claims = Claims {
            v: 1,
            id: token::new_id().unwrap(),
            sub: "agent".into(),
            iat: now - 10,
            exp: now + 3600,
            caps: [(
                "web".to_string(),
                token::Grant {
                    domains: vec!["api.example.org".into()],
                    ports: vec![443],
                },
            )]
            .into_iter()
            .collect(),
        };
        (token::mint(sk, &claims).unwrap(), claims)
    }

    #[test]
    fn verified_tokens_are_kept_until_the_key_or_the_revocation_list_changes() {
        let dir = tempfile::tempdir().unwrap();
        let pk = dir.path().join("public.key");
        let rv = dir.path().join("revoked");
        let sk = SigningKey::from_bytes(&[1; 32]);
        std::fs::write(&pk, token::encode_public_key(&sk.verifying_key())).unwrap();
        let keys = Keys::new(&pk, &rv);
        let now = 1_800_000_000;
        let (t, claims) = token(&sk, now);
        assert_eq!(*keys.check(&t, now).unwrap(), claims);
        assert_eq!(keys.check(&t, now).unwrap().id, claims.id);
        assert_eq!(keys.cached(), 1);
        // The time window is checked at every use, kept or not.
        assert!(matches!(
            keys.check(&t, claims.exp),
            Err(Refusal::Token(TokenError::Expired { .. }))
        ));
        // A refused token is never kept: a forged one is verified (and refused) every time.
        let mut forged = t.clone().into_bytes();
        let i = forged.len() - 10;
        forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(forged).unwrap();
        for _ in 0..2 {
            assert_eq!(
                keys.check(&forged, now).unwrap_err(),
                Refusal::Token(TokenError::BadSignature)
            );
        }
        assert_eq!(keys.cached(), 1);
        // The revocation list replaced (as agentd does, by rename): refused at the next check.
        let tmp = dir.path().join("tmp");
        std::fs::write(&tmp, format!("{}\n", claims.id)).unwrap();
        std::fs::rename(&tmp, &rv).unwrap();
        assert!(matches!(keys.check(&t, now), Err(Refusal::Revoked(c)) if c.id == claims.id));
        // Taken off the list: accepted again.
        std::fs::write(&tmp, "# none\n").unwrap();
        std::fs::rename(&tmp, &rv).unwrap();
        assert!(keys.check(&t, now).is_ok());
        // A new key: the kept verification is stale, the old key's token does not verify.
        let sk2 = SigningKey::from_bytes(&[2; 32]);
        std::fs::write(&tmp, token::encode_public_key(&sk2.verifying_key())).unwrap();
        std::fs::rename(&tmp, &pk).unwrap();
        assert_eq!(
            keys.check(&t, now).unwrap_err(),
            Refusal::Token(TokenError::BadSignature)
        );
        let (t2, _) = token(&sk2, now);
        assert!(keys.check(&t2, now).is_ok());
        // The key file gone: every token refused, kept or not.
        std::fs::remove_file(&pk).unwrap();
        assert!(matches!(keys.check(&t2, now), Err(Refusal::NoKey(_))));
    }

    #[test]
    fn the_cache_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let pk = dir.path().join("public.key");
        let sk = SigningKey::from_bytes(&[3; 32]);
        std::fs::write(&pk, token::encode_public_key(&sk.verifying_key())).unwrap();
        let keys = Keys::new(&pk, dir.path().join("revoked"));
        let now = 1_800_000_000;
        let (first, _) = token(&sk, now);
        keys.check(&first, now).unwrap();
        for _ in 0..VERIFIED_CACHE + 10 {
            keys.check(&token(&sk, now).0, now).unwrap();
        }
        assert_eq!(keys.cached(), VERIFIED_CACHE);
        // The least recently used went first; it still verifies (again).
        assert!(keys.check(&first, now).is_ok());
    }
}
