//! Secrets at rest, shared by osmoda-keyd (wallet keys) and osmoda-mesh (identity keys): a
//! key-encryption key derived with Argon2id from a secret systemd delivers (`LoadCredential`
//! `secret`, or a `*File` option) or, in local mode, a 0600 file created on first start; every
//! value sealed with AES-256-GCM under it with a fresh random 96-bit nonce and an AAD the caller
//! chooses (binding format version, KDF parameters and what the value belongs to, so a sealed
//! value moved elsewhere does not open). Decrypted bytes live in `Zeroizing` buffers.

#![cfg_attr(test, allow(clippy::unwrap_used))]

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use zeroize::Zeroizing;

/// What went wrong. No message carries secret material.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The secret, the stored parameters or a sealed value is unusable (wrong secret, tampered
    /// data, unreadable file).
    #[error("{0}")]
    Vault(String),
    /// The OS had no randomness or the cipher failed.
    #[error("{0}")]
    Internal(String),
}

fn internal(e: impl std::fmt::Display) -> VaultError {
    VaultError::Internal(e.to_string())
}

/// Argon2id parameters (OWASP's: 19 MiB, 2 passes, 1 lane) and the salt; a daemon stores them
/// once and binds [`KdfParams::encode`] into every AAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KdfParams {
    /// Memory in KiB.
    pub m_kib: u32,
    /// Passes.
    pub t: u32,
    /// Lanes.
    pub p: u32,
    /// 16 random bytes.
    pub salt: [u8; 16],
}

impl KdfParams {
    /// Fresh parameters with a random salt.
    ///
    /// # Errors
    /// `Internal` when the OS has no randomness.
    pub fn fresh() -> Result<KdfParams, VaultError> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(internal)?;
        Ok(KdfParams {
            m_kib: 19 * 1024,
            t: 2,
            p: 1,
            salt,
        })
    }

    /// `argon2id;m=..,t=..,p=..;salt=<hex>`, stored and bound into the AAD.
    pub fn encode(&self) -> String {
        format!(
            "argon2id;m={},t={},p={};salt={}",
            self.m_kib,
            self.t,
            self.p,
            hex::encode(self.salt)
        )
    }

    /// Parses [`KdfParams::encode`]'s form.
    ///
    /// # Errors
    /// `Vault` when malformed.
    pub fn decode(s: &str) -> Result<KdfParams, VaultError> {
        let bad = || VaultError::Vault(format!("the stored KDF parameters {s:?} are malformed"));
        let rest = s.strip_prefix("argon2id;m=").ok_or_else(bad)?;
        let (m, rest) = rest.split_once(",t=").ok_or_else(bad)?;
        let (t, rest) = rest.split_once(",p=").ok_or_else(bad)?;
        let (p, salt) = rest.split_once(";salt=").ok_or_else(bad)?;
        let salt: [u8; 16] = hex::decode(salt)
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(bad)?;
        Ok(KdfParams {
            m_kib: m.parse().map_err(|_| bad())?,
            t: t.parse().map_err(|_| bad())?,
            p: p.parse().map_err(|_| bad())?,
            salt,
        })
    }
}

/// A sealed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The AES-GCM nonce (96 bits, fresh for every seal).
    pub nonce: [u8; 12],
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// The key-encryption key: AES-256-GCM under a key derived with Argon2id.
pub struct Kek {
    key: Zeroizing<[u8; 32]>,
    kdf: KdfParams,
}

impl Kek {
    /// Derives the key-encryption key from `secret` with `kdf`.
    ///
    /// # Errors
    /// `Vault` when the secret is shorter than 16 bytes or Argon2 refuses the parameters.
    pub fn derive(secret: &[u8], kdf: KdfParams) -> Result<Kek, VaultError> {
        if secret.len() < 16 {
            return Err(VaultError::Vault(
                "the key-encryption secret must have at least 16 bytes".into(),
            ));
        }
        let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
            .map_err(|e| VaultError::Vault(format!("Argon2 parameters: {e}")))?;
        let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut key = Zeroizing::new([0u8; 32]);
        a2.hash_password_into(secret, &kdf.salt, &mut key[..])
            .map_err(|e| VaultError::Vault(format!("Argon2: {e}")))?;
        Ok(Kek { key, kdf })
    }

    /// The parameters this key was derived with (bind [`KdfParams::encode`] into AADs).
    pub fn kdf(&self) -> &KdfParams {
        &self.kdf
    }

    /// Seals `plain` under `aad` with a fresh nonce.
    ///
    /// # Errors
    /// `Internal` without randomness.
    pub fn seal(&self, aad: &[u8], plain: &[u8]) -> Result<Sealed, VaultError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(internal)?;
        let cipher = Aes256Gcm::new_from_slice(&self.key[..]).map_err(internal)?;
        let ciphertext = cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| VaultError::Internal("AES-GCM encryption failed".into()))?;
        Ok(Sealed { nonce, ciphertext })
    }

    /// Opens `sealed` under `aad`; `None` when authentication fails (tampered ciphertext, nonce
    /// or AAD, or another secret). The caller words the error: it knows what the value is.
    pub fn open(&self, aad: &[u8], sealed: &Sealed) -> Option<Zeroizing<Vec<u8>>> {
        let cipher = Aes256Gcm::new_from_slice(&self.key[..]).ok()?;
        cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad,
                },
            )
            .ok()
            .map(Zeroizing::new)
    }
}

/// Reads a secret file after checking, on the opened file, that nobody but its owner (this
/// process's user or root) can read or change it.
fn read_private(p: &Path) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    let cannot = |e: std::io::Error| {
        VaultError::Vault(format!(
            "cannot read the key-encryption secret {}: {e}",
            p.display()
        ))
    };
    let mut f = std::fs::File::open(p).map_err(cannot)?;
    let m = f.metadata().map_err(cannot)?;
    let me = nix::unistd::geteuid().as_raw();
    let refuse = |why: String| {
        VaultError::Vault(format!(
            "the key-encryption secret {} {why}; a secret is read only from a file no one else \
             can read or change: make it a regular file owned by this daemon's user or root with \
             mode 0600 or 0400 (the NixOS module hands secretFile over as the systemd credential \
             `secret`, which is)",
            p.display()
        ))
    };
    if !m.is_file() {
        return Err(refuse("is not a regular file".into()));
    }
    if m.mode() & 0o077 != 0 {
        return Err(refuse(format!(
            "is open to other users (mode {:04o})",
            m.mode() & 0o7777
        )));
    }
    if m.uid() != me && m.uid() != 0 {
        return Err(refuse(format!(
            "is owned by another user (uid {})",
            m.uid()
        )));
    }
    let mut bytes = Zeroizing::new(Vec::new());
    f.read_to_end(&mut bytes).map_err(cannot)?;
    Ok(bytes)
}

/// Reads the key-encryption secret: systemd's credential `secret` when
/// `$CREDENTIALS_DIRECTORY/secret` exists (the module loads the daemon's secret file there: keyd's `secretFile`), else
/// `key_file`, else `<state_dir>/secret`, created with 32 random bytes (hex) and mode 0600 on
/// first start.
///
/// Whichever it is, the file must be a regular file that only its owner can read or write
/// (no group or other permission bits) and owned by this process's user or root: a secret
/// others can read (a file in the Nix store, a `0644` file under `/etc`) is refused, not used.
///
/// # Errors
/// `Vault` when the file cannot be read or created, or others could read or change it.
pub fn load_secret(
    key_file: Option<&Path>,
    state_dir: &Path,
) -> Result<Zeroizing<Vec<u8>>, VaultError> {
    let read = |p: &Path| read_private(p);
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let p = Path::new(&dir).join("secret");
        if p.exists() {
            return read(&p);
        }
    }
    if let Some(p) = key_file {
        return read(p);
    }
    let p = state_dir.join("secret");
    if p.exists() {
        return read(&p);
    }
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut raw = Zeroizing::new([0u8; 32]);
    getrandom::fill(&mut raw[..]).map_err(internal)?;
    let text = Zeroizing::new(hex::encode(&raw[..]).into_bytes());
    let tmp = state_dir.join("secret.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| VaultError::Vault(format!("cannot create {}: {e}", tmp.display())))?;
    f.write_all(&text)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &p))
        .map_err(|e| VaultError::Vault(format!("cannot write {}: {e}", p.display())))?;
    tracing::info!("created a new key-encryption secret {}", p.display());
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> KdfParams {
        KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
            salt: [7; 16],
        }
    }

    #[test]
    fn seal_opens_only_with_the_same_aad_secret_and_bytes() {
        let k = Kek::derive(b"0123456789abcdef", cheap()).unwrap();
        let s = k.seal(b"aad-1", b"hello").unwrap();
        assert_eq!(&k.open(b"aad-1", &s).unwrap()[..], b"hello");
        assert!(k.open(b"aad-2", &s).is_none());
        let mut t = s.clone();
        t.ciphertext[0] ^= 1;
        assert!(k.open(b"aad-1", &t).is_none());
        let mut t = s.clone();
        t.nonce[0] ^= 1;
        assert!(k.open(b"aad-1", &t).is_none());
        let other = Kek::derive(b"0123456789abcdeX", cheap()).unwrap();
        assert!(other.open(b"aad-1", &s).is_none());
        assert_ne!(k.seal(b"aad-1", b"hello").unwrap().nonce, s.nonce);
        assert!(Kek::derive(b"short", cheap()).is_err());
    }

    #[test]
    fn kdf_params_round_trip_and_refuse_garbage() {
        let p = KdfParams::fresh().unwrap();
        assert_eq!(KdfParams::decode(&p.encode()).unwrap(), p);
        for bad in [
            "",
            "argon2id;m=1",
            "argon2id;m=x,t=1,p=1;salt=00",
            "scrypt;m=1,t=1,p=1;salt=",
        ] {
            assert!(KdfParams::decode(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_is_created_once_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let a = load_secret(None, d.path()).unwrap();
        let b = load_secret(None, d.path()).unwrap();
        assert_eq!(*a, *b);
        let m = std::fs::metadata(d.path().join("secret")).unwrap();
        assert_eq!(m.permissions().mode() & 0o777, 0o600);
        let f = d.path().join("given");
        std::fs::write(&f, b"given-secret-bytes").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o400)).unwrap();
        assert_eq!(
            &load_secret(Some(&f), d.path()).unwrap()[..],
            b"given-secret-bytes"
        );
        assert!(load_secret(Some(&d.path().join("missing")), d.path()).is_err());
    }

    #[test]
    fn a_secret_others_can_read_or_change_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("given");
        std::fs::write(&f, b"given-secret-bytes").unwrap();
        for mode in [0o644, 0o640, 0o604, 0o620, 0o602, 0o660, 0o444] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = load_secret(Some(&f), d.path()).unwrap_err().to_string();
            assert!(
                e.contains(&format!("is open to other users (mode {mode:04o})")),
                "{e}"
            );
            assert!(!e.contains("given-secret-bytes"), "{e}");
        }
        for mode in [0o600, 0o400] {
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(mode)).unwrap();
            assert!(load_secret(Some(&f), d.path()).is_ok(), "{mode:o}");
        }
        // The generated secret of the state dir is held to the same rule.
        let s = d.path().join("secret");
        load_secret(None, d.path()).unwrap();
        std::fs::set_permissions(&s, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load_secret(None, d.path()).is_err());
        // Not a regular file.
        let e = load_secret(Some(d.path()), d.path())
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a regular file"), "{e}");
    }
}
