use super::*;

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

fn claims() -> Claims {
    let mut caps = BTreeMap::new();
    caps.insert(
        "github".to_string(),
        Grant {
            domains: vec!["api.github.com".into(), "*.githubusercontent.com".into()],
            ports: vec![443],
        },
    );
    Claims {
        v: 1,
        id: "00112233445566778899aabbccddeeff".into(),
        sub: "agent".into(),
        iat: 1_000,
        exp: 2_000,
        caps,
    }
}

#[test]
fn round_trip_and_encoding() {
    let t = mint(&key(), &claims()).unwrap();
    let parts: Vec<_> = t.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[0], "osm1");
    // The claims field is plain base64url JSON, readable by anyone.
    let json = URL_SAFE_NO_PAD.decode(parts[1]).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(v["caps"]["github"]["ports"][0], 443);
    // URL-safe: usable as the password of a proxy URL.
    assert!(t
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
    let pk = key().verifying_key();
    assert_eq!(verify(&pk, &t, 1_500).unwrap(), claims());
    // The signature covers exactly the bytes sent.
    let sig = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let signed = format!("{}.{}", parts[0], parts[1]);
    assert!(pk
        .verify_strict(
            signed.as_bytes(),
            &Signature::from_bytes(&sig.try_into().unwrap())
        )
        .is_ok());
}

#[test]
fn refusals() {
    let pk = key().verifying_key();
    let t = mint(&key(), &claims()).unwrap();
    assert!(matches!(
        verify(&pk, &t, 2_000),
        Err(TokenError::Expired { .. })
    ));
    assert!(matches!(
        verify(&pk, &t, 100),
        Err(TokenError::NotYetValid { .. })
    ));
    let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
    assert_eq!(verify(&other, &t, 1_500), Err(TokenError::BadSignature));
    // Claims swapped for wider ones under the old signature.
    let (_, sig) = t.rsplit_once('.').unwrap();
    let mut wide = claims();
    wide.caps.get_mut("github").unwrap().domains = vec!["*.com".into()];
    let forged = format!(
        "osm1.{}.{sig}",
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(&wide).unwrap())
    );
    assert_eq!(verify(&pk, &forged, 1_500), Err(TokenError::BadSignature));
    for bad in [
        "",
        "osm1",
        "osm1..",
        "osm2.e30.AAAA",
        "osm1.e30.!!",
        "osm1.a.b.c",
        &"x".repeat(MAX_TOKEN_BYTES + 1),
    ] {
        assert!(
            matches!(verify(&pk, bad, 1_500), Err(TokenError::Malformed(_))),
            "{bad:.20}"
        );
    }
    // A validly signed token with claims a minter may not produce.
    let mut c = claims();
    c.caps.clear();
    assert!(mint(&key(), &c).is_err());
    let mut c = claims();
    c.id = "short".into();
    assert!(mint(&key(), &c).is_err());
    let mut c = claims();
    c.caps.get_mut("github").unwrap().domains = vec!["a.*.b".into()];
    assert!(mint(&key(), &c).is_err());
}

#[test]
fn keys_decode() {
    let pk = key().verifying_key();
    assert_eq!(decode_public_key(&encode_public_key(&pk)).unwrap(), pk);
    assert!(decode_public_key("abcd").is_err());
    assert_eq!(
        decode_signing_key(&[7; 32]).unwrap().to_bytes(),
        key().to_bytes()
    );
    let hexed = format!("{}\n", hex::encode([7u8; 32]));
    assert_eq!(
        decode_signing_key(hexed.as_bytes()).unwrap().to_bytes(),
        key().to_bytes()
    );
    assert!(decode_signing_key(b"short").is_err());
}

/// RFC 8032 §7.1 test 1: the key pair the tokens' signatures are made with is plain Ed25519.
#[test]
fn rfc8032_test_1() {
    let seed: [u8; 32] =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap()
            .try_into()
            .unwrap();
    let sk = SigningKey::from_bytes(&seed);
    assert_eq!(
        hex::encode(sk.verifying_key().as_bytes()),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
    assert_eq!(
        hex::encode(sk.sign(b"").to_bytes()),
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    );
}
