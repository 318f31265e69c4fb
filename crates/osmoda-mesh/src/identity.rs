//! A host's mesh identity: an Ed25519 signing key (who it is), an X25519 static key (its Noise
//! key) and an ML-KEM-768 keypair (the post-quantum half of the handshake). The public halves
//! are what `GET /identity`, invites and peer records carry ([`PublicKeys`], base64); the
//! private halves exist in clear only in this process, sealed at rest by `store`.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use zeroize::Zeroizing;

use crate::pq;

/// Public keys as carried in `mesh.json`, invites and `GET /identity` (base64, padded).
pub type PublicKeys = osmoda_config::PeerKeys;

/// Domain tag of the handshake identity signature.
const ID_SIG: &[u8] = b"osmoda-mesh/v1 identity\0";
/// Domain tag of a rotation hand-over.
const ROTATE_SIG: &[u8] = b"osmoda-mesh/v1 rotate\0";

/// A full identity (private keys included).
pub struct Identity {
    /// Ed25519 signing key.
    pub signing: SigningKey,
    /// X25519 static private key (Noise `s`).
    pub x25519_private: Zeroizing<[u8; 32]>,
    /// X25519 static public key.
    pub x25519_public: [u8; 32],
    /// ML-KEM-768 decapsulation key (FIPS 203 encoding, 2400 bytes).
    pub ml_kem_dk: Zeroizing<Vec<u8>>,
}

/// Decoded, checked public keys of a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    /// Ed25519 identity key.
    pub ed25519: VerifyingKey,
    /// X25519 static key.
    pub x25519: [u8; 32],
    /// ML-KEM-768 encapsulation key.
    pub ml_kem: Vec<u8>,
}

impl Identity {
    /// New random keys.
    ///
    /// # Errors
    /// When snow cannot generate an X25519 keypair (no randomness).
    pub fn generate() -> Result<Identity, String> {
        let kp = snow::Builder::new(crate::handshake::params())
            .generate_keypair()
            .map_err(|e| format!("X25519 key generation: {e}"))?;
        let mut x25519_private = Zeroizing::new([0u8; 32]);
        x25519_private.copy_from_slice(&kp.private);
        let mut x25519_public = [0u8; 32];
        x25519_public.copy_from_slice(&kp.public);
        let (ml_kem_dk, _) = pq::generate();
        Ok(Identity {
            signing: SigningKey::generate(&mut rand_core::OsRng),
            x25519_private,
            x25519_public,
            ml_kem_dk,
        })
    }

    /// The private keys as one buffer (what is sealed): ed25519 seed ‖ x25519 private ‖ dk.
    pub fn secret_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut v = Zeroizing::new(Vec::with_capacity(64 + pq::DK_LEN));
        v.extend_from_slice(self.signing.as_bytes());
        v.extend_from_slice(&self.x25519_private[..]);
        v.extend_from_slice(&self.ml_kem_dk);
        v
    }

    /// Rebuilds an identity from [`Identity::secret_bytes`] and the stored X25519 public key.
    ///
    /// # Errors
    /// A message when the bytes have the wrong length or the keys do not belong together.
    pub fn from_secret_bytes(b: &[u8], x25519_public: [u8; 32]) -> Result<Identity, String> {
        if b.len() != 64 + pq::DK_LEN {
            return Err(format!("the sealed identity has {} bytes", b.len()));
        }
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&b[..32]);
        let signing = SigningKey::from_bytes(&seed);
        let mut x25519_private = Zeroizing::new([0u8; 32]);
        x25519_private.copy_from_slice(&b[32..64]);
        Ok(Identity {
            signing,
            x25519_private,
            x25519_public,
            ml_kem_dk: Zeroizing::new(b[64..].to_vec()),
        })
    }

    /// The ML-KEM-768 encapsulation key.
    pub fn ml_kem_ek(&self) -> Vec<u8> {
        pq::ek_of(&self.ml_kem_dk).unwrap_or_default()
    }

    /// The public halves, decoded.
    pub fn keys(&self) -> Keys {
        Keys {
            ed25519: self.signing.verifying_key(),
            x25519: self.x25519_public,
            ml_kem: self.ml_kem_ek(),
        }
    }

    /// The public halves, base64.
    pub fn public(&self) -> PublicKeys {
        self.keys().encode()
    }

    /// Signs (`x25519 static` ‖ `handshake hash`) for the handshake.
    pub fn sign_handshake(&self, hash: &[u8]) -> [u8; 64] {
        self.signing
            .sign(&handshake_bytes(&self.x25519_public, hash))
            .to_bytes()
    }
}

/// What a handshake identity signature covers.
pub fn handshake_bytes(x25519: &[u8], hash: &[u8]) -> Vec<u8> {
    [ID_SIG, x25519, hash].concat()
}

/// What a rotation hand-over signature covers: the old and the new keys and the time.
pub fn handover_bytes(old: &Keys, new: &Keys, issued_at: u64) -> Vec<u8> {
    [
        ROTATE_SIG,
        old.ed25519.as_bytes(),
        &old.x25519,
        new.ed25519.as_bytes(),
        &new.x25519,
        &new.ml_kem,
        &issued_at.to_be_bytes(),
    ]
    .concat()
}

/// Verifies an Ed25519 signature (strict: no malleable or small-order forms).
pub fn verify(key: &VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    let Ok(sig) = <[u8; 64]>::try_from(sig) else {
        return false;
    };
    key.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig))
        .is_ok()
}

impl Keys {
    /// Decodes and checks base64 public keys.
    ///
    /// # Errors
    /// A message naming the key that is not valid base64 of the right length or not a valid key.
    pub fn decode(p: &PublicKeys) -> Result<Keys, String> {
        let dec = |name: &str, s: &str| {
            B64.decode(s)
                .map_err(|e| format!("public key {name} is not base64: {e}"))
        };
        let ed: [u8; 32] = dec("ed25519", &p.ed25519)?
            .try_into()
            .map_err(|_| "public key ed25519 must have 32 bytes".to_string())?;
        let ed25519 = VerifyingKey::from_bytes(&ed)
            .map_err(|_| "public key ed25519 is not a valid Ed25519 point".to_string())?;
        let x25519: [u8; 32] = dec("x25519", &p.x25519)?
            .try_into()
            .map_err(|_| "public key x25519 must have 32 bytes".to_string())?;
        let ml_kem = dec("ml_kem_768", &p.ml_kem_768)?;
        if !pq::valid_ek(&ml_kem) {
            return Err(format!(
                "public key ml_kem_768 is not an ML-KEM-768 encapsulation key ({} bytes, {} expected, coefficients below 3329)",
                ml_kem.len(),
                pq::EK_LEN
            ));
        }
        Ok(Keys {
            ed25519,
            x25519,
            ml_kem,
        })
    }

    /// Base64 form.
    pub fn encode(&self) -> PublicKeys {
        PublicKeys {
            ed25519: B64.encode(self.ed25519.as_bytes()),
            x25519: B64.encode(self.x25519),
            ml_kem_768: B64.encode(&self.ml_kem),
        }
    }

    /// A short, stable fingerprint: the first 8 bytes of SHA-256 over the three keys, hex.
    pub fn fingerprint(&self) -> String {
        use sha2::Digest as _;
        let d = sha2::Sha256::new()
            .chain_update(self.ed25519.as_bytes())
            .chain_update(self.x25519)
            .chain_update(&self.ml_kem)
            .finalize();
        hex::encode(&d[..8])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_sign_and_refuse_bad_encodings() {
        let id = Identity::generate().unwrap();
        let back = Identity::from_secret_bytes(&id.secret_bytes(), id.x25519_public).unwrap();
        assert_eq!(back.keys(), id.keys());
        let p = id.public();
        assert_eq!(Keys::decode(&p).unwrap(), id.keys());
        let sig = id.sign_handshake(b"hash");
        assert!(verify(
            &id.keys().ed25519,
            &handshake_bytes(&id.x25519_public, b"hash"),
            &sig
        ));
        assert!(!verify(
            &id.keys().ed25519,
            &handshake_bytes(&id.x25519_public, b"hasX"),
            &sig
        ));
        assert!(!verify(&id.keys().ed25519, b"x", &sig[..10]));
        for (field, bad) in [
            (
                "ed25519",
                PublicKeys {
                    ed25519: "!!".into(),
                    ..p.clone()
                },
            ),
            (
                "x25519",
                PublicKeys {
                    x25519: B64.encode([1u8; 31]),
                    ..p.clone()
                },
            ),
            (
                "ml_kem_768",
                PublicKeys {
                    ml_kem_768: B64.encode([0xffu8; 1184]),
                    ..p.clone()
                },
            ),
        ] {
            let e = Keys::decode(&bad).unwrap_err();
            assert!(e.contains(field), "{e}");
        }
        assert!(Identity::from_secret_bytes(&[0u8; 10], [0; 32]).is_err());
    }
}
