//! Imports: an Ethereum keystore v3 file (scrypt or pbkdf2-hmac-sha256, AES-128-CTR, keccak
//! MAC, per the Web3 Secret Storage definition) and a Solana keypair JSON (the 64-number array
//! `solana-keygen` writes). KDF parameters are capped so that an import cannot exhaust memory
//! or hold a core for long: scrypt at most geth's standard work (`n·r·p ≤ 2^18·8·1`, 256 MiB,
//! about a second of one core in a release build), pbkdf2 at most 2^21 iterations (about the
//! same); `api::wallet::create` runs one import at a time and answers 429 meanwhile.

use aes::cipher::{KeyIvInit, StreamCipher};
use alloy_primitives::keccak256;
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::error::KeydError;

/// Largest scrypt `n` accepted (2^18, geth's "standard" setting).
pub const SCRYPT_MAX_N: u64 = 1 << 18;
/// Largest scrypt `r` (with [`SCRYPT_MAX_N`]: at most `128·n·r` = 256 MiB, what geth's
/// standard keystores need).
pub const SCRYPT_MAX_R: u32 = 8;
/// Largest scrypt `p`.
pub const SCRYPT_MAX_P: u32 = 16;
/// Largest scrypt work `n·r·p` (geth's standard keystore: 2^18·8·1). Without it n = 2^18,
/// r = 8, p = 16 cost 16 times that (23.6 s of a core measured in a release build).
pub const SCRYPT_MAX_WORK: u64 = SCRYPT_MAX_N * SCRYPT_MAX_R as u64;
/// Largest pbkdf2 iteration count.
pub const PBKDF2_MAX_C: u32 = 1 << 21;

#[derive(Deserialize)]
struct Keystore {
    version: u32,
    #[serde(alias = "Crypto")]
    crypto: Crypto,
}

#[derive(Deserialize)]
struct Crypto {
    cipher: String,
    cipherparams: CipherParams,
    ciphertext: String,
    kdf: String,
    kdfparams: serde_json::Value,
    mac: String,
}

#[derive(Deserialize)]
struct CipherParams {
    iv: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScryptParams {
    dklen: u32,
    n: u64,
    r: u32,
    p: u32,
    salt: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Pbkdf2Params {
    c: u32,
    dklen: u32,
    prf: String,
    salt: String,
}

fn bad(m: impl Into<String>) -> KeydError {
    KeydError::BadRequest(format!("keystore: {}", m.into()))
}

/// A serde error as text without the offending value (serde quotes it: `invalid type: string
/// "…", expected …`): the kind of value found, what was expected, and field names.
pub fn shape(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    let msg = msg.split(" at line ").next().unwrap_or_default();
    for prefix in ["invalid type: ", "invalid value: ", "invalid length "] {
        if let Some(rest) = msg.strip_prefix(prefix) {
            let found = rest.split([' ', '`', '"', ',']).next().unwrap_or_default();
            let expected = rest
                .rsplit_once(", expected ")
                .map_or("another value", |(_, x)| x);
            return format!(
                "{} ({found} found), expected {expected}",
                prefix.trim_end_matches([' ', ':'])
            );
        }
    }
    if msg.starts_with("unknown field") {
        // Its name is the caller's text: not echoed.
        return "an unknown field (its name is not shown)".into();
    }
    if msg.starts_with("missing field") || msg.starts_with("duplicate field") {
        return msg.chars().take(200).collect();
    }
    "malformed (the value is not shown)".into()
}

fn unhex(s: &str, what: &str) -> Result<Vec<u8>, KeydError> {
    hex::decode(s.strip_prefix("0x").unwrap_or(s)).map_err(|_| bad(format!("`{what}` is not hex")))
}

/// Decrypts an Ethereum keystore v3 JSON with `password`; returns the 32-byte private key.
///
/// # Errors
/// `BadRequest` for a malformed file, a KDF over the caps, or a wrong password (MAC mismatch).
pub fn keystore_v3(
    json: &serde_json::Value,
    password: &str,
) -> Result<Zeroizing<[u8; 32]>, KeydError> {
    let ks: Keystore = serde_json::from_value(json.clone()).map_err(|e| bad(shape(&e)))?;
    if ks.version != 3 {
        return Err(bad("`version` must be 3"));
    }
    let c = ks.crypto;
    if c.cipher != "aes-128-ctr" {
        return Err(bad("`crypto.cipher` must be \"aes-128-ctr\""));
    }
    let mut dk = Zeroizing::new([0u8; 32]);
    match c.kdf.as_str() {
        "scrypt" => {
            let p: ScryptParams = serde_json::from_value(c.kdfparams)
                .map_err(|e| bad(format!("kdfparams: {}", shape(&e))))?;
            if p.dklen != 32 {
                return Err(bad("kdfparams.dklen must be 32"));
            }
            if !p.n.is_power_of_two() || p.n < 2 || p.n > SCRYPT_MAX_N {
                return Err(bad(format!(
                    "scrypt `n` must be a power of two from 2 to {SCRYPT_MAX_N}"
                )));
            }
            if p.r == 0 || p.r > SCRYPT_MAX_R || p.p == 0 || p.p > SCRYPT_MAX_P {
                return Err(bad(format!(
                    "scrypt `r` and `p` must be 1..={SCRYPT_MAX_R} and 1..={SCRYPT_MAX_P}"
                )));
            }
            let work = p.n * u64::from(p.r) * u64::from(p.p);
            if work > SCRYPT_MAX_WORK {
                return Err(bad(format!(
                    "scrypt n·r·p exceeds {SCRYPT_MAX_WORK} (n = 2^18, r = 8, p = 1, geth's standard): re-encrypt the keystore with lighter parameters"
                )));
            }
            let log_n = p.n.trailing_zeros() as u8;
            let params = scrypt::Params::new(log_n, p.r, p.p)
                .map_err(|e| bad(format!("scrypt parameters: {e}")))?;
            scrypt::scrypt(
                password.as_bytes(),
                &unhex(&p.salt, "salt")?,
                &params,
                &mut dk[..],
            )
            .map_err(|e| bad(format!("scrypt: {e}")))?;
        }
        "pbkdf2" => {
            let p: Pbkdf2Params = serde_json::from_value(c.kdfparams)
                .map_err(|e| bad(format!("kdfparams: {}", shape(&e))))?;
            if p.dklen != 32 || p.prf != "hmac-sha256" {
                return Err(bad("pbkdf2 needs dklen 32 and prf hmac-sha256"));
            }
            if p.c == 0 || p.c > PBKDF2_MAX_C {
                return Err(bad(format!("pbkdf2 `c` must be 1..={PBKDF2_MAX_C}")));
            }
            pbkdf2::pbkdf2_hmac::<sha2::Sha256>(
                password.as_bytes(),
                &unhex(&p.salt, "salt")?,
                p.c,
                &mut dk[..],
            );
        }
        _ => return Err(bad("`crypto.kdf` must be \"scrypt\" or \"pbkdf2\"")),
    }
    let ct = unhex(&c.ciphertext, "ciphertext")?;
    if ct.len() != 32 {
        return Err(bad("ciphertext must be 32 bytes"));
    }
    let mut mac_input = Zeroizing::new(Vec::with_capacity(48));
    mac_input.extend_from_slice(&dk[16..32]);
    mac_input.extend_from_slice(&ct);
    if keccak256(&mac_input[..]).as_slice() != unhex(&c.mac, "mac")?.as_slice() {
        return Err(bad("MAC mismatch: wrong password or a corrupted file"));
    }
    let iv = unhex(&c.cipherparams.iv, "iv")?;
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(&ct);
    let mut cipher = ctr::Ctr128BE::<aes::Aes128>::new_from_slices(&dk[..16], &iv)
        .map_err(|_| bad("iv must be 16 bytes"))?;
    cipher.apply_keystream(&mut key[..]);
    Ok(key)
}

/// Reads a Solana keypair JSON (64 numbers: seed ‖ public key); the public key is recomputed
/// from the seed and must match.
///
/// # Errors
/// `BadRequest` for a malformed array or a mismatching public key.
pub fn solana_keypair(json: &serde_json::Value) -> Result<Zeroizing<[u8; 32]>, KeydError> {
    let arr = json.as_array().filter(|a| a.len() == 64).ok_or_else(|| {
        KeydError::BadRequest(
            "a Solana keypair is a JSON array of 64 numbers (seed then public key)".into(),
        )
    })?;
    let mut bytes = Zeroizing::new([0u8; 64]);
    for (i, v) in arr.iter().enumerate() {
        bytes[i] = v
            .as_u64()
            .and_then(|n| u8::try_from(n).ok())
            .ok_or_else(|| {
                KeydError::BadRequest(format!("keypair element {i} is not a byte (0..=255)"))
            })?;
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    seed.copy_from_slice(&bytes[..32]);
    let public = ed25519_dalek::SigningKey::from_bytes(&seed)
        .verifying_key()
        .to_bytes();
    if public[..] != bytes[32..] {
        return Err(KeydError::BadRequest(
            "the keypair's public key does not match its secret key".into(),
        ));
    }
    Ok(seed)
}
