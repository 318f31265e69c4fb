//! Keys at rest and in use. [`SignerBackend`] is the boundary a later MPC/HSM backend
//! implements; [`LocalVault`] is the one here: every private key is sealed with AES-256-GCM
//! under a key-encryption key derived with Argon2id from the secret systemd delivers
//! (`LoadCredential`, option `services.osmoda.keyd.keyFile`) or, in local mode, a 0600 file
//! created on first start. The AAD binds the format version, the KDF parameters and salt, the
//! wallet id and the chain, so a sealed key moved to another wallet or chain does not open.
//! Each seal uses a fresh random 96-bit nonce; decrypted key bytes live in `Zeroizing`
//! buffers and are wiped when the one operation they were loaded for returns.

pub mod import;

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use alloy_dyn_abi::TypedData;
use osmoda_config::Chain;
use zeroize::Zeroizing;

use crate::chains::eth::{EthKey, EthTx, SignedTx};
use crate::chains::sol::{SignedSolTx, SolKey};
use crate::error::KeydError;

/// Format version bound into every AAD.
pub const FORMAT: &str = "osmoda-keyd/v1";

/// Argon2id parameters (OWASP's: 19 MiB, 2 passes, 1 lane) and the salt, stored in the state
/// database once and bound into every AAD.
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
    pub fn fresh() -> Result<KdfParams, KeydError> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(KeydError::internal)?;
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
    pub fn decode(s: &str) -> Result<KdfParams, KeydError> {
        let bad = || KeydError::Vault(format!("the stored KDF parameters {s:?} are malformed"));
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

/// A private key sealed for one wallet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The AES-GCM nonce (96 bits, fresh for every seal).
    pub nonce: [u8; 12],
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// A wallet as stored (no key material in clear).
#[derive(Debug, Clone)]
pub struct Wallet {
    /// Random id (`w_` + 16 hex).
    pub id: String,
    /// Unique label (the policy's `wallets.<label>`).
    pub label: String,
    /// Chain.
    pub chain: Chain,
    /// Address: 0x EIP-55 (Ethereum) or base58 (Solana).
    pub address: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// The sealed key.
    pub sealed: Sealed,
}

/// What a backend signs. Every variant is a structure the policy has judged; there is no
/// raw-hash variant.
pub enum Op {
    /// EIP-191 `personal_sign`.
    EthPersonal(Vec<u8>),
    /// EIP-712 typed data.
    EthTyped(Box<TypedData>),
    /// An EIP-155 legacy or EIP-1559 transaction.
    EthTx(EthTx),
    /// A legacy Solana message holding one System transfer (built or checked by `chains::sol`).
    SolTransfer(Vec<u8>),
    /// A Solana off-chain message.
    SolOffchain(String),
}

/// A signature and what it covers.
pub enum Output {
    /// An Ethereum signature over `digest`.
    EthSig {
        /// The signed digest.
        digest: alloy_primitives::B256,
        /// 65 bytes r‖s‖v.
        sig: alloy_primitives::Signature,
    },
    /// A signed Ethereum transaction.
    EthTx(SignedTx),
    /// A signed Solana transaction.
    SolTx(SignedSolTx),
    /// A signed Solana off-chain message.
    SolOffchain {
        /// The bytes signed (preamble and message).
        signed: Vec<u8>,
        /// The ed25519 signature.
        sig: [u8; 64],
    },
}

/// Where keys are kept and used. A later MPC or HSM backend implements this; the API, policy
/// and counters do not change.
pub trait SignerBackend: Send + Sync {
    /// Seals a new key for wallet `id` on `chain`: `secret` when importing, else a fresh one.
    /// Returns the address and the sealed form to store.
    ///
    /// # Errors
    /// `BadRequest` for an invalid imported key; `Internal` without randomness.
    fn create(
        &self,
        id: &str,
        chain: Chain,
        secret: Option<Zeroizing<[u8; 32]>>,
    ) -> Result<(String, Sealed), KeydError>;

    /// Signs `op` with `wallet`'s key.
    ///
    /// # Errors
    /// `Vault` when the key does not open or does not match the wallet's address; `BadRequest`
    /// when `op` does not fit the wallet's chain.
    fn sign(&self, wallet: &Wallet, op: &Op) -> Result<Output, KeydError>;
}

/// Keys sealed with AES-256-GCM under an Argon2id-derived key-encryption key.
pub struct LocalVault {
    kek: Zeroizing<[u8; 32]>,
    kdf: KdfParams,
}

impl LocalVault {
    /// Derives the key-encryption key from `secret` with `kdf`.
    ///
    /// # Errors
    /// `Vault` when the secret is shorter than 16 bytes or Argon2 refuses the parameters.
    pub fn new(secret: &[u8], kdf: KdfParams) -> Result<LocalVault, KeydError> {
        if secret.len() < 16 {
            return Err(KeydError::Vault(
                "the key-encryption secret must have at least 16 bytes".into(),
            ));
        }
        let params = argon2::Params::new(kdf.m_kib, kdf.t, kdf.p, Some(32))
            .map_err(|e| KeydError::Vault(format!("Argon2 parameters: {e}")))?;
        let a2 = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut kek = Zeroizing::new([0u8; 32]);
        a2.hash_password_into(secret, &kdf.salt, &mut kek[..])
            .map_err(|e| KeydError::Vault(format!("Argon2: {e}")))?;
        Ok(LocalVault { kek, kdf })
    }

    fn aad(&self, id: &str, chain: Chain) -> String {
        format!(
            "{FORMAT}|{}|wallet={id}|chain={}",
            self.kdf.encode(),
            chain.as_str()
        )
    }

    /// Seals 32 key bytes for (`id`, `chain`) with a fresh nonce.
    ///
    /// # Errors
    /// `Internal` without randomness.
    pub fn seal(
        &self,
        id: &str,
        chain: Chain,
        key: &Zeroizing<[u8; 32]>,
    ) -> Result<Sealed, KeydError> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(KeydError::internal)?;
        let cipher = Aes256Gcm::new_from_slice(&self.kek[..]).map_err(KeydError::internal)?;
        let aad = self.aad(id, chain);
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: &key[..],
                    aad: aad.as_bytes(),
                },
            )
            .map_err(|_| KeydError::Internal("AES-GCM encryption failed".into()))?;
        Ok(Sealed { nonce, ciphertext })
    }

    /// Opens `wallet`'s key.
    ///
    /// # Errors
    /// `Vault` when authentication fails (tampered ciphertext, nonce or AAD — wallet id, chain,
    /// KDF parameters — or another secret).
    pub fn open(&self, wallet: &Wallet) -> Result<Zeroizing<[u8; 32]>, KeydError> {
        let cipher = Aes256Gcm::new_from_slice(&self.kek[..]).map_err(KeydError::internal)?;
        let aad = self.aad(&wallet.id, wallet.chain);
        let plain = Zeroizing::new(
            cipher
                .decrypt(
                    Nonce::from_slice(&wallet.sealed.nonce),
                    Payload { msg: &wallet.sealed.ciphertext, aad: aad.as_bytes() },
                )
                .map_err(|_| {
                    KeydError::Vault(format!(
                        "wallet {}'s key does not decrypt: its ciphertext, nonce, wallet id, chain or KDF parameters were changed, or the key-encryption secret is not the one it was sealed with; restore the state dir or the secret from backup",
                        wallet.id
                    ))
                })?,
        );
        let mut out = Zeroizing::new([0u8; 32]);
        if plain.len() != 32 {
            return Err(KeydError::Vault(format!(
                "wallet {}'s key has {} bytes, not 32",
                wallet.id,
                plain.len()
            )));
        }
        out.copy_from_slice(&plain);
        Ok(out)
    }
}

fn mismatch(w: &Wallet, found: &str) -> KeydError {
    KeydError::Vault(format!(
        "wallet {}'s key belongs to {found}, not to its recorded address {}; refusing to sign",
        w.id, w.address
    ))
}

/// The address of a 32-byte key on `chain`.
///
/// # Errors
/// `BadRequest` for an invalid secp256k1 scalar.
pub fn address_of(chain: Chain, key: &Zeroizing<[u8; 32]>) -> Result<String, KeydError> {
    Ok(match chain {
        Chain::Ethereum => EthKey::from_secret(key)?.address().to_checksum(None),
        Chain::Solana => SolKey::from_seed(key).address(),
    })
}

impl SignerBackend for LocalVault {
    fn create(
        &self,
        id: &str,
        chain: Chain,
        secret: Option<Zeroizing<[u8; 32]>>,
    ) -> Result<(String, Sealed), KeydError> {
        let key = match secret {
            Some(k) => k,
            None => loop {
                let mut k = Zeroizing::new([0u8; 32]);
                getrandom::fill(&mut k[..]).map_err(KeydError::internal)?;
                // A random 32-byte string is a valid secp256k1 scalar but for ~2^-128 cases.
                if chain == Chain::Solana || EthKey::from_secret(&k).is_ok() {
                    break k;
                }
            },
        };
        let address = address_of(chain, &key)?;
        Ok((address, self.seal(id, chain, &key)?))
    }

    fn sign(&self, w: &Wallet, op: &Op) -> Result<Output, KeydError> {
        let key = self.open(w)?;
        match (w.chain, op) {
            (Chain::Ethereum, _) => {
                let k = EthKey::from_secret(&key).map_err(|_| {
                    KeydError::Vault(format!("wallet {}'s key is not a secp256k1 key", w.id))
                })?;
                let found = k.address().to_checksum(None);
                if found != w.address {
                    return Err(mismatch(w, &found));
                }
                match op {
                    Op::EthPersonal(m) => Ok(Output::EthSig {
                        digest: crate::chains::eth::personal_digest(m),
                        sig: k.personal_sign(m)?,
                    }),
                    Op::EthTyped(d) => {
                        let (digest, sig) = k.sign_typed(d)?;
                        Ok(Output::EthSig { digest, sig })
                    }
                    Op::EthTx(tx) => Ok(Output::EthTx(k.sign_tx(tx)?)),
                    _ => Err(KeydError::BadRequest(
                        "this is a Solana operation; the wallet is on ethereum".into(),
                    )),
                }
            }
            (Chain::Solana, _) => {
                let k = SolKey::from_seed(&key);
                // Recomputed from the seed on every load: a key that does not match is refused.
                let found = k.address();
                if found != w.address {
                    return Err(mismatch(w, &found));
                }
                match op {
                    Op::SolTransfer(m) => Ok(Output::SolTx(k.sign_transfer(m))),
                    Op::SolOffchain(m) => {
                        let (signed, sig) = k.sign_offchain(m)?;
                        Ok(Output::SolOffchain { signed, sig })
                    }
                    _ => Err(KeydError::BadRequest(
                        "this is an Ethereum operation; the wallet is on solana".into(),
                    )),
                }
            }
        }
    }
}

/// Reads the key-encryption secret: systemd's credential `secret` when
/// `$CREDENTIALS_DIRECTORY/secret` exists (the module loads `keyFile` there), else `key_file`,
/// else `<state_dir>/secret`, created with 32 random bytes (hex) and mode 0600 on first start.
///
/// # Errors
/// `Vault` when the file cannot be read or created.
pub fn load_secret(
    key_file: Option<&Path>,
    state_dir: &Path,
) -> Result<Zeroizing<Vec<u8>>, KeydError> {
    let read = |p: &Path| {
        std::fs::read(p).map(Zeroizing::new).map_err(|e| {
            KeydError::Vault(format!(
                "cannot read the key-encryption secret {}: {e}",
                p.display()
            ))
        })
    };
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
    getrandom::fill(&mut raw[..]).map_err(KeydError::internal)?;
    let text = Zeroizing::new(hex::encode(&raw[..]).into_bytes());
    let tmp = state_dir.join("secret.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| KeydError::Vault(format!("cannot create {}: {e}", tmp.display())))?;
    f.write_all(&text)
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(&tmp, &p))
        .map_err(|e| KeydError::Vault(format!("cannot write {}: {e}", p.display())))?;
    tracing::info!("created a new key-encryption secret {}", p.display());
    Ok(text)
}
