//! Invite codes: what the inviting host hands out (out of band) so another host can pair with
//! it. A code is base64url (no padding) of JSON carrying the inviter's endpoint, its public
//! keys, its name and a 256-bit random secret; the inviter keeps only the secret's SHA-256
//! (`store`), consumes it atomically on first use and lets it expire (default 1 h).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::Digest as _;

use crate::identity::PublicKeys;

/// Default lifetime of an invite.
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// Longest lifetime an invite may be given (7 days).
pub const MAX_TTL_SECS: u64 = 7 * 24 * 3600;
/// Longest code accepted (a code is about 2.5 KiB).
pub const MAX_CODE_LEN: usize = 8192;

/// The content of an invite code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Invite {
    /// Format version (1).
    pub v: u32,
    /// Where to dial the inviter, `host:port`.
    pub endpoint: String,
    /// The inviter's public keys (the handshake must present exactly these).
    pub keys: PublicKeys,
    /// The inviter's name (what the accepting host calls it unless told otherwise).
    pub name: String,
    /// Seconds since the epoch after which the inviter refuses it.
    pub expires_at: i64,
    /// 32 random bytes, base64url.
    pub secret: String,
}

impl Invite {
    /// The code (base64url of the JSON).
    pub fn encode(&self) -> String {
        B64URL.encode(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Parses a code.
    ///
    /// # Errors
    /// A message saying what is wrong with it and what to do. It never quotes the code or any
    /// value inside it (the code carries the secret): a field is named by its path.
    pub fn decode(code: &str) -> Result<Invite, String> {
        const ASK: &str =
            "paste the whole code /invite/create printed, or ask the inviter for a new one";
        let code = code.trim();
        if code.len() > MAX_CODE_LEN {
            return Err(format!(
                "the invite code is over {MAX_CODE_LEN} characters (a code is about 2,500); {ASK}"
            ));
        }
        let raw = B64URL.decode(code).map_err(|_| {
            format!(
                "the invite code is not base64url (A-Z, a-z, 0-9, '-' and '_', no padding); {ASK}"
            )
        })?;
        let inv: Invite =
            serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&raw))
                .map_err(|e| {
                    let path = e.path().to_string();
                    let inner = e.into_inner();
                    // serde's own words only where they carry no value (a missing or unknown field).
                    let what = inner.to_string();
                    let why =
                        if what.starts_with("missing field") || what.starts_with("unknown field") {
                            what.split(" at line")
                                .next()
                                .unwrap_or_default()
                                .to_string()
                        } else if inner.is_data() && path != "." {
                            format!("`{path}` has the wrong type or value")
                        } else if inner.is_data() {
                            "it holds JSON that is not an invite object".to_string()
                        } else {
                            "it is not JSON inside (cut short or mistyped?)".to_string()
                        };
                    format!("the invite code does not hold an invite: {why}; {ASK}")
                })?;
        if inv.v != 1 {
            return Err(format!(
                "invite version {} is not supported (this host reads version 1); ask the inviter for a code from the same osModa release",
                inv.v
            ));
        }
        osmoda_config::tree_edit::valid_attr_name(&inv.name)
            .then_some(())
            .ok_or_else(|| format!("the invite's name is not a valid peer name; {ASK}"))?;
        osmoda_config::mesh::check_endpoint(&inv.endpoint)
            .map_err(|_| format!("the invite's endpoint is not host:port; {ASK}"))?;
        let secret = B64URL
            .decode(&inv.secret)
            .map_err(|_| format!("the invite's secret is not base64url; {ASK}"))?;
        if secret.len() < 16 {
            return Err(format!(
                "the invite's secret is shorter than 128 bits; {ASK}"
            ));
        }
        Ok(inv)
    }
}

/// A fresh 256-bit secret, base64url.
///
/// # Errors
/// When the OS has no randomness.
pub fn fresh_secret() -> Result<String, String> {
    let mut s = [0u8; 32];
    getrandom::fill(&mut s).map_err(|e| e.to_string())?;
    Ok(B64URL.encode(s))
}

/// What the inviter stores: SHA-256 of the secret's bytes, hex. A malformed secret hashes to
/// a value no invite has.
pub fn secret_hash(secret: &str) -> String {
    let bytes = B64URL.decode(secret.trim()).unwrap_or_default();
    hex::encode(sha2::Sha256::digest(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Invite {
        Invite {
            v: 1,
            endpoint: "127.0.0.1:18800".into(),
            keys: crate::identity::Identity::generate().unwrap().public(),
            name: "alpha".into(),
            expires_at: 1,
            secret: fresh_secret().unwrap(),
        }
    }

    #[test]
    fn round_trip_and_refusals() {
        let i = sample();
        let code = i.encode();
        assert!(code
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(Invite::decode(&code).unwrap(), i);
        assert_ne!(fresh_secret().unwrap(), fresh_secret().unwrap());
        assert_eq!(secret_hash(&i.secret), secret_hash(&i.secret));
        assert_ne!(
            secret_hash(&i.secret),
            secret_hash(&fresh_secret().unwrap())
        );
        for (bad, why) in [
            ("%%%".to_string(), "base64url"),
            (B64URL.encode(b"{}"), "does not hold"),
            (Invite { v: 2, ..sample() }.encode(), "version"),
            (
                Invite {
                    name: "a.b".into(),
                    ..sample()
                }
                .encode(),
                "name",
            ),
            (
                Invite {
                    secret: B64URL.encode([1u8; 8]),
                    ..sample()
                }
                .encode(),
                "128 bits",
            ),
            ("A".repeat(MAX_CODE_LEN + 1), "over"),
        ] {
            let e = Invite::decode(&bad).unwrap_err();
            assert!(e.contains(why), "{e}");
        }
    }
}
