//! Keys at rest and in use. [`SignerBackend`] is the boundary a later MPC/HSM backend
//! implements; [`LocalVault`] is the one here: every private key is sealed (`osmoda-vault`) with
//! AES-256-GCM under a key-encryption key derived with Argon2id from the secret systemd delivers
//! (`LoadCredential`, option `services.osmoda.keyd.secretFile`) or, in local mode, a 0600 file
//! created on first start. The AAD binds the format version, the KDF parameters and salt, the
//! wallet id and the chain, so a sealed key moved to another wallet or chain does not open.
//! Each seal uses a fresh random 96-bit nonce; decrypted key bytes live in `Zeroizing`
//! buffers and are wiped when the one operation they were loaded for returns.

pub mod import;

use std::path::Path;

use alloy_dyn_abi::TypedData;
use osmoda_config::Chain;
use zeroize::Zeroizing;

use crate::chains::eth::{EthKey, EthTx, SignedTx};
use crate::chains::sol::{SignedSolTx, SolKey};
use crate::error::KeydError;

/// Format version bound into every AAD.
pub const FORMAT: &str = "osmoda-keyd/v1";

pub use osmoda_vault::{KdfParams, Sealed};

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
    /// A Solana off-chain message (header version 0, the wallet its one signer).
    SolOffchain {
        /// The message text.
        message: String,
        /// The requesting application's 32-byte domain.
        application_domain: [u8; 32],
    },
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
    kek: osmoda_vault::Kek,
}

impl LocalVault {
    /// Derives the key-encryption key from `secret` with `kdf`.
    ///
    /// # Errors
    /// `Vault` when the secret is shorter than 16 bytes or Argon2 refuses the parameters.
    pub fn new(secret: &[u8], kdf: KdfParams) -> Result<LocalVault, KeydError> {
        Ok(LocalVault {
            kek: osmoda_vault::Kek::derive(secret, kdf)?,
        })
    }

    fn aad(&self, id: &str, chain: Chain) -> String {
        format!(
            "{FORMAT}|{}|wallet={id}|chain={}",
            self.kek.kdf().encode(),
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
        Ok(self.kek.seal(self.aad(id, chain).as_bytes(), &key[..])?)
    }

    /// Opens `wallet`'s key.
    ///
    /// # Errors
    /// `Vault` when authentication fails (tampered ciphertext, nonce or AAD — wallet id, chain,
    /// KDF parameters — or another secret).
    pub fn open(&self, wallet: &Wallet) -> Result<Zeroizing<[u8; 32]>, KeydError> {
        let aad = self.aad(&wallet.id, wallet.chain);
        let plain = self.kek.open(aad.as_bytes(), &wallet.sealed).ok_or_else(|| {
                    KeydError::Vault(format!(
                        "wallet {}'s key does not decrypt: its ciphertext, nonce, wallet id, chain or KDF parameters were changed, or the key-encryption secret is not the one it was sealed with; restore the state dir or the secret from backup",
                        wallet.id
                    ))
                })?;
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

/// What [`LocalVault::seal_check`] seals: opening it proves the secret is the one the
/// state dir's keys were sealed with.
const CHECK_PLAIN: &[u8] = b"osmoda-keyd key-encryption secret check";

impl LocalVault {
    fn check_aad(&self) -> String {
        format!("{FORMAT}|{}|secret-check", self.kek.kdf().encode())
    }

    /// A check value sealed under this key-encryption key, as text (`nonce:ciphertext`, hex)
    /// for the state database.
    ///
    /// # Errors
    /// `Internal` without randomness.
    pub fn seal_check(&self) -> Result<String, KeydError> {
        let s = self.kek.seal(self.check_aad().as_bytes(), CHECK_PLAIN)?;
        Ok(format!(
            "{}:{}",
            hex::encode(s.nonce),
            hex::encode(&s.ciphertext)
        ))
    }

    /// Whether `check` (from [`LocalVault::seal_check`]) opens under this key.
    pub fn opens_check(&self, check: &str) -> bool {
        let Some((n, c)) = check.split_once(':') else {
            return false;
        };
        let (Ok(nonce), Ok(ciphertext)) = (hex::decode(n), hex::decode(c)) else {
            return false;
        };
        let Ok(nonce) = <[u8; 12]>::try_from(nonce) else {
            return false;
        };
        self.kek
            .open(self.check_aad().as_bytes(), &Sealed { nonce, ciphertext })
            .is_some_and(|p| p[..] == *CHECK_PLAIN)
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
                    Op::SolOffchain {
                        message,
                        application_domain,
                    } => {
                        let (signed, sig) = k.sign_offchain(message, application_domain)?;
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

/// Where [`load_secret`] reads the secret from, and whether it would create it (local mode,
/// no file yet).
pub fn secret_source(secret_file: Option<&Path>, state_dir: &Path) -> (std::path::PathBuf, bool) {
    if let Some(dir) = std::env::var_os("CREDENTIALS_DIRECTORY") {
        let p = Path::new(&dir).join("secret");
        if p.exists() {
            return (p, false);
        }
    }
    if let Some(p) = secret_file {
        return (p.to_path_buf(), false);
    }
    let p = state_dir.join("secret");
    let create = !p.exists();
    (p, create)
}

/// Reads the key-encryption secret ([`osmoda_vault::load_secret`]): systemd's credential
/// `secret`, else `secret_file`, else `<state_dir>/secret` (created with mode 0600 on first start).
///
/// # Errors
/// `Vault` when the file cannot be read or created.
pub fn load_secret(
    secret_file: Option<&Path>,
    state_dir: &Path,
) -> Result<Zeroizing<Vec<u8>>, KeydError> {
    Ok(osmoda_vault::load_secret(secret_file, state_dir)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Under one key-encryption key, a sealed key opens only with the AAD it was sealed
    /// under: each of its parts (format version, KDF parameters, wallet id, chain) changed
    /// alone refuses it.
    #[test]
    fn the_aad_binds_format_kdf_wallet_and_chain() {
        let kdf = KdfParams {
            m_kib: 64,
            t: 1,
            p: 1,
            salt: [7; 16],
        };
        let v = LocalVault::new(b"0123456789abcdef", kdf.clone()).unwrap();
        let aad = v.aad("w_1", Chain::Ethereum);
        let sealed = v.kek.seal(aad.as_bytes(), &[9; 32]).unwrap();
        assert!(v.kek.open(aad.as_bytes(), &sealed).is_some());
        let other_kdf = KdfParams {
            t: 2,
            ..kdf.clone()
        };
        for changed in [
            aad.replace(FORMAT, "osmoda-keyd/v2"),
            aad.replace(&kdf.encode(), &other_kdf.encode()),
            v.aad("w_2", Chain::Ethereum),
            v.aad("w_1", Chain::Solana),
        ] {
            assert_ne!(changed, aad);
            assert!(
                v.kek.open(changed.as_bytes(), &sealed).is_none(),
                "{changed}"
            );
        }
    }
}
