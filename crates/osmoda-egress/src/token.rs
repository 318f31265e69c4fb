//! Capability tokens: what agentd mints and osmoda-egress verifies offline.
//!
//! # Encoding
//!
//! A token is three `.`-separated fields, all URL-safe (so it fits in the password of a proxy
//! URL, `http://osmoda:<token>@127.0.0.1:19999`):
//!
//! ```text
//! osm1.<claims>.<signature>
//! ```
//!
//! - `osm1` names the format (version 1).
//! - `<claims>` is base64url without padding (RFC 4648 §5) of the claims' JSON ([`Claims`]):
//!   `{"v":1,"id":"<32 hex>","sub":"<subject>","iat":<unix s>,"exp":<unix s>,
//!   "caps":{"<capability>":{"domains":["api.github.com","*.example.org"],"ports":[443]}}}`.
//! - `<signature>` is base64url without padding of the 64-byte Ed25519 signature (RFC 8032,
//!   `ed25519-dalek` strict verification) over the ASCII bytes `osm1.<claims>`: the signed
//!   bytes are exactly the bytes sent, so no JSON canonical form is needed.
//!
//! The public key is 32 bytes, stored as 64 hex characters and a newline
//! ([`encode_public_key`]). Verification ([`verify`]) checks the prefix, the signature, the
//! version, the time window and the shape of every grant; it never trusts anything before the
//! signature is checked.

use std::collections::BTreeMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The token prefix (format version 1).
pub const PREFIX: &str = "osm1";

/// Largest token accepted, in bytes: bounds the work a hostile header can cause.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Default destination port of a grant that names none.
pub const DEFAULT_PORT: u16 = 443;

/// What a token allows for one capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Host names (`api.github.com`) or label-boundary wildcards (`*.github.com`: any name
    /// ending in `.github.com`, not `github.com` itself), lower case, IDNA A-labels.
    pub domains: Vec<String>,
    /// Destination ports.
    pub ports: Vec<u16>,
}

/// The signed content of a token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Claims {
    /// Format version, 1.
    pub v: u32,
    /// Token id: 16 random bytes in hex; the revocation list names tokens by it.
    pub id: String,
    /// Who the token was minted for (free text chosen by the minter, at most 128 bytes).
    pub sub: String,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Expires at, Unix seconds (the token is refused from this second on).
    pub exp: u64,
    /// Capability name → what it allows.
    pub caps: BTreeMap<String, Grant>,
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not `osm1.<claims>.<signature>`, bad base64 or JSON, or too long.
    #[error("malformed capability token: {0}")]
    Malformed(&'static str),
    /// The signature does not verify with the configured public key.
    #[error("capability token signature does not verify (forged, or minted with another key)")]
    BadSignature,
    /// `v` is not 1.
    #[error("capability token version {0} is not supported (expected 1)")]
    Version(u32),
    /// The token's `exp` has passed.
    #[error("capability token expired at {exp} (now {now})")]
    Expired {
        /// The token's expiry.
        exp: u64,
        /// The time of the check.
        now: u64,
    },
    /// The token was issued in the future (clock skew over a minute, or a forged `iat`).
    #[error("capability token issued in the future ({iat} > {now})")]
    NotYetValid {
        /// The token's issue time.
        iat: u64,
        /// The time of the check.
        now: u64,
    },
    /// A claim is outside what a minter may produce.
    #[error("capability token claim invalid: {0}")]
    BadClaim(String),
}

/// Seconds of clock skew tolerated on `iat`.
const SKEW_SECS: u64 = 60;

/// Signs `claims` with `key` and returns the token text.
///
/// # Errors
/// [`TokenError::BadClaim`] when the claims are not what [`verify`] would accept.
pub fn mint(key: &SigningKey, claims: &Claims) -> Result<String, TokenError> {
    check_claims(claims)?;
    let json = serde_json::to_vec(claims).map_err(|e| TokenError::BadClaim(e.to_string()))?;
    let signed = format!("{PREFIX}.{}", URL_SAFE_NO_PAD.encode(json));
    let sig = key.sign(signed.as_bytes());
    let token = format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig.to_bytes()));
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::BadClaim(format!(
            "the token would be {} bytes, over the {MAX_TOKEN_BYTES}-byte limit: grant fewer domains",
            token.len()
        )));
    }
    Ok(token)
}

/// Verifies `token` with `key` at Unix time `now` and returns its claims.
///
/// # Errors
/// Every [`TokenError`] case; the signature is checked before anything in the claims is read.
pub fn verify(key: &VerifyingKey, token: &str, now: u64) -> Result<Claims, TokenError> {
    let claims = verify_signed(key, token)?;
    check_time(&claims, now)?;
    Ok(claims)
}

/// The part of [`verify`] that does not depend on the time: the signature, the version and the
/// shape of every grant. Its result may be cached by the token's bytes (as the proxy does) as
/// long as `key` is the same; [`check_time`] must still be applied at every use.
///
/// # Errors
/// Every [`TokenError`] case except [`TokenError::Expired`] and [`TokenError::NotYetValid`].
pub fn verify_signed(key: &VerifyingKey, token: &str) -> Result<Claims, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed("longer than 8 KiB"));
    }
    let (signed, sig_b64) = token
        .rsplit_once('.')
        .ok_or(TokenError::Malformed("expected osm1.<claims>.<signature>"))?;
    let claims_b64 = signed
        .strip_prefix(PREFIX)
        .and_then(|r| r.strip_prefix('.'))
        .ok_or(TokenError::Malformed("does not start with `osm1.`"))?;
    if claims_b64.contains('.') {
        return Err(TokenError::Malformed("expected osm1.<claims>.<signature>"));
    }
    let sig = URL_SAFE_NO_PAD
        .decode(sig_b64)
        .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
    let sig: [u8; 64] = sig
        .try_into()
        .map_err(|_| TokenError::Malformed("signature is not 64 bytes"))?;
    key.verify_strict(signed.as_bytes(), &Signature::from_bytes(&sig))
        .map_err(|_| TokenError::BadSignature)?;
    let json = URL_SAFE_NO_PAD
        .decode(claims_b64)
        .map_err(|_| TokenError::Malformed("claims are not base64url"))?;
    let claims: Claims =
        serde_json::from_slice(&json).map_err(|_| TokenError::Malformed("claims are not JSON"))?;
    if claims.v != 1 {
        return Err(TokenError::Version(claims.v));
    }
    check_claims(&claims)?;
    Ok(claims)
}

/// Is `claims`' time window open at Unix time `now` (not expired, not issued more than a
/// minute in the future)?
///
/// # Errors
/// [`TokenError::Expired`] or [`TokenError::NotYetValid`].
pub fn check_time(claims: &Claims, now: u64) -> Result<(), TokenError> {
    if now >= claims.exp {
        return Err(TokenError::Expired {
            exp: claims.exp,
            now,
        });
    }
    if claims.iat > now + SKEW_SECS {
        return Err(TokenError::NotYetValid {
            iat: claims.iat,
            now,
        });
    }
    Ok(())
}

fn check_claims(c: &Claims) -> Result<(), TokenError> {
    let bad = |m: String| Err(TokenError::BadClaim(m));
    if c.v != 1 {
        return Err(TokenError::Version(c.v));
    }
    if c.id.len() != 32 || !c.id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return bad("id must be 32 hex characters".into());
    }
    if c.sub.is_empty() || c.sub.len() > 128 || c.sub.chars().any(char::is_control) {
        return bad("sub must be 1-128 bytes without control characters".into());
    }
    if c.exp <= c.iat {
        return bad("exp must be after iat".into());
    }
    if c.caps.is_empty() {
        return bad("caps must name at least one capability".into());
    }
    for (name, g) in &c.caps {
        if g.domains.is_empty() || g.ports.is_empty() {
            return bad(format!("capability {name:?} grants no domain or no port"));
        }
        if g.ports.contains(&0) {
            return bad(format!("capability {name:?}: 0 is not a port"));
        }
        for d in &g.domains {
            if crate::host::Pattern::parse(d).is_err() {
                return bad(format!(
                    "capability {name:?}: {d:?} is not a domain pattern"
                ));
            }
        }
    }
    Ok(())
}

/// A fresh random token id (16 bytes, hex).
///
/// # Errors
/// When the OS has no randomness to give.
pub fn new_id() -> Result<String, getrandom::Error> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)?;
    Ok(hex::encode(b))
}

/// The text form of a public key: 64 lower-case hex characters and a newline.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    format!("{}\n", hex::encode(key.as_bytes()))
}

/// Parses [`encode_public_key`]'s form (surrounding white space ignored).
///
/// # Errors
/// A message when the text is not 32 bytes of hex or not a valid Ed25519 point.
pub fn decode_public_key(text: &str) -> Result<VerifyingKey, String> {
    let bytes = hex::decode(text.trim()).map_err(|_| "not hex".to_string())?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| "not 32 bytes (64 hex characters)".to_string())?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| "not an Ed25519 public key".to_string())
}

/// Reads a signing key: exactly 32 bytes (the RFC 8032 seed), or 64 hex characters (white
/// space around them ignored).
///
/// # Errors
/// A message saying which form was expected.
pub fn decode_signing_key(bytes: &[u8]) -> Result<SigningKey, String> {
    if let Ok(seed) = <[u8; 32]>::try_from(bytes) {
        return Ok(SigningKey::from_bytes(&seed));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| KEY_FORM.to_string())?;
    let raw = hex::decode(text.trim()).map_err(|_| KEY_FORM.to_string())?;
    let seed: [u8; 32] = raw.try_into().map_err(|_| KEY_FORM.to_string())?;
    Ok(SigningKey::from_bytes(&seed))
}

const KEY_FORM: &str =
    "a capability signing key is 32 raw bytes or 64 hex characters (an Ed25519 seed)";

#[cfg(test)]
#[path = "token_tests.rs"]
mod tests;
