//! ML-KEM-768 (FIPS 203) through RustCrypto's `ml-kem`, as the handshake uses it: a static
//! keypair per identity, the encapsulation key checked as FIPS 203 §7.2 asks before use, one
//! encapsulation per handshake.

use kem::{Decapsulate, Encapsulate};
use ml_kem::{EncodedSizeUser, KemCore, MlKem768};
use zeroize::Zeroizing;

/// Bytes of an encoded encapsulation key.
pub const EK_LEN: usize = 1184;
/// Bytes of an encoded decapsulation key.
pub const DK_LEN: usize = 2400;
/// Bytes of a ciphertext.
pub const CT_LEN: usize = 1088;

type Ek = <MlKem768 as KemCore>::EncapsulationKey;
type Dk = <MlKem768 as KemCore>::DecapsulationKey;

/// A fresh keypair: (decapsulation key, encapsulation key), encoded.
pub fn generate() -> (Zeroizing<Vec<u8>>, Vec<u8>) {
    let (dk, ek) = MlKem768::generate(&mut rand_core::OsRng);
    (
        Zeroizing::new(dk.as_bytes().to_vec()),
        ek.as_bytes().to_vec(),
    )
}

/// FIPS 203 §7.2 encapsulation key check: the right length, and every 12-bit coefficient of the
/// 3 × 256 in the first 1152 bytes below q = 3329 (re-encoding would change it otherwise).
pub fn valid_ek(ek: &[u8]) -> bool {
    ek.len() == EK_LEN
        && ek[..1152].chunks_exact(3).all(|b| {
            let a = u16::from(b[0]) | (u16::from(b[1] & 0x0f) << 8);
            let c = u16::from(b[1] >> 4) | (u16::from(b[2]) << 4);
            a < 3329 && c < 3329
        })
}

/// Encapsulates to `ek`: (ciphertext, 32-byte shared secret); `None` for an invalid key.
pub fn encapsulate(ek: &[u8]) -> Option<(Vec<u8>, Zeroizing<[u8; 32]>)> {
    if !valid_ek(ek) {
        return None;
    }
    let key = Ek::from_bytes(ek.try_into().ok()?);
    let (ct, ss) = key.encapsulate(&mut rand_core::OsRng).ok()?;
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&ss);
    Some((ct.to_vec(), out))
}

/// Decapsulates `ct` with the encoded `dk`; `None` when either has the wrong length. A modified
/// ciphertext yields ML-KEM's implicit-rejection secret, which then fails the handshake.
pub fn decapsulate(dk: &[u8], ct: &[u8]) -> Option<Zeroizing<[u8; 32]>> {
    if dk.len() != DK_LEN || ct.len() != CT_LEN {
        return None;
    }
    let key = Dk::from_bytes(dk.try_into().ok()?);
    let ss = key.decapsulate(ct.try_into().ok()?).ok()?;
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(&ss);
    Some(out)
}

/// The encapsulation key that belongs to the encoded `dk` (FIPS 203 stores it inside dk).
pub fn ek_of(dk: &[u8]) -> Option<Vec<u8>> {
    if dk.len() != DK_LEN {
        return None;
    }
    Some(dk[1152..1152 + EK_LEN].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ml_kem::{EncapsulateDeterministic as _, B32};
    use serde_json::Value;

    fn h(v: &Value) -> Vec<u8> {
        hex::decode(v.as_str().unwrap()).unwrap()
    }

    fn vectors() -> Value {
        serde_json::from_str(include_str!("../tests/data/ml-kem-768-acvp.json")).unwrap()
    }

    /// NIST ACVP keyGen: (d, z) → ek, dk byte for byte, and our `ek_of` agrees.
    #[test]
    fn acvp_keygen() {
        let v = vectors();
        for t in v["keyGen"].as_array().unwrap() {
            let d = B32::try_from(&h(&t["d"])[..]).unwrap();
            let z = B32::try_from(&h(&t["z"])[..]).unwrap();
            let (dk, ek) = MlKem768::generate_deterministic(&d, &z);
            assert_eq!(ek.as_bytes().to_vec(), h(&t["ek"]), "tc {}", t["tcId"]);
            assert_eq!(dk.as_bytes().to_vec(), h(&t["dk"]), "tc {}", t["tcId"]);
            assert_eq!(ek_of(&h(&t["dk"])).unwrap(), h(&t["ek"]));
            assert!(valid_ek(&h(&t["ek"])));
        }
    }

    /// NIST ACVP encapsulation (with its m) and decapsulation (valid and modified ciphertexts,
    /// the latter giving the implicit-rejection key) through [`decapsulate`].
    #[test]
    fn acvp_encaps_decaps() {
        let v = vectors();
        for t in v["encapsulation"].as_array().unwrap() {
            let ek = Ek::from_bytes(h(&t["ek"])[..].try_into().unwrap());
            let m = B32::try_from(&h(&t["m"])[..]).unwrap();
            let (c, k) = ek.encapsulate_deterministic(&m).unwrap();
            assert_eq!(c.to_vec(), h(&t["c"]), "tc {}", t["tcId"]);
            assert_eq!(k.to_vec(), h(&t["k"]), "tc {}", t["tcId"]);
        }
        let d = &v["decapsulation"];
        let dk = h(&d["dk"]);
        for t in d["tests"].as_array().unwrap() {
            let k = decapsulate(&dk, &h(&t["c"])).unwrap();
            assert_eq!(k.to_vec(), h(&t["k"]), "tc {} ({})", t["tcId"], t["reason"]);
        }
    }

    #[test]
    fn round_trip_and_hostile_inputs() {
        let (dk, ek) = generate();
        assert_eq!((dk.len(), ek.len()), (DK_LEN, EK_LEN));
        assert_eq!(ek_of(&dk).unwrap(), ek);
        let (ct, ss) = encapsulate(&ek).unwrap();
        assert_eq!(*decapsulate(&dk, &ct).unwrap(), *ss);
        // A coefficient ≥ q (0xfff) fails the FIPS 203 input check.
        let mut bad = ek.clone();
        bad[0] = 0xff;
        bad[1] |= 0x0f;
        assert!(!valid_ek(&bad) && encapsulate(&bad).is_none());
        assert!(encapsulate(&ek[..100]).is_none());
        assert!(decapsulate(&dk, &ct[..10]).is_none());
        assert!(decapsulate(&dk[..10], &ct).is_none());
        let mut ct2 = ct.clone();
        ct2[5] ^= 1;
        assert_ne!(*decapsulate(&dk, &ct2).unwrap(), *ss);
    }
}
