//! Cacophony's published vector for the pattern the handshake speaks, byte for byte through the
//! resolver the daemon uses and through RustCrypto's.

use super::PATTERN;

/// One of cacophony's published vectors (snow's `tests/vectors/cacophony.txt`): fixed
/// statics, ephemerals, prologue and PSK; every message's ciphertext and the handshake hash
/// byte for byte through `resolver` (`None`: `snow::Builder::new`, exactly as the daemon builds
/// its handshakes).
struct Vector {
    handshake_hash: &'static str,
    /// Ciphertexts of the six messages (three handshake, three transport).
    ct: [&'static str; 6],
}

const PAYLOADS: [&str; 6] = [
    "4c756477696720766f6e204d69736573",
    "4d757272617920526f746862617264",
    "462e20412e20486179656b",
    "4361726c204d656e676572",
    "4a65616e2d426170746973746520536179",
    "457567656e2042f6686d20766f6e2042617765726b",
];

fn check(v: &Vector, resolver: Option<fn() -> snow::resolvers::BoxedCryptoResolver>) {
    let h = |s: &str| hex::decode(s).unwrap();
    let prologue = h("4a6f686e2047616c74");
    let psk = h("54686973206973206d7920417573747269616e20706572737065637469766521");
    let i_s = h("e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1");
    let i_e = h("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a");
    let r_s = h("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893");
    let r_e = h("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b");
    let name = PATTERN;
    let build = |s: &[u8], e: &[u8], initiator: bool| {
        let b = match resolver {
            None => snow::Builder::new(super::params()),
            Some(r) => snow::Builder::with_resolver(super::params(), r()),
        };
        let b = b
            .local_private_key(s)
            .fixed_ephemeral_key_for_testing_only(e)
            .prologue(&prologue)
            .psk(3, &psk);
        if initiator {
            b.build_initiator().unwrap()
        } else {
            b.build_responder().unwrap()
        }
    };
    let mut i = build(&i_s, &i_e, true);
    let mut r = build(&r_s, &r_e, false);
    let mut buf = vec![0u8; 65535];
    let mut out = vec![0u8; 65535];
    for (k, payload) in PAYLOADS.iter().enumerate().take(3) {
        let (w, rd) = if k % 2 == 0 {
            (&mut i, &mut r)
        } else {
            (&mut r, &mut i)
        };
        let n = w.write_message(&h(payload), &mut buf).unwrap();
        assert_eq!(
            hex::encode(&buf[..n]),
            v.ct[k],
            "{name}: handshake message {k}"
        );
        let m = rd.read_message(&buf[..n], &mut out).unwrap();
        assert_eq!(out[..m], h(payload)[..]);
    }
    assert_eq!(
        hex::encode(i.get_handshake_hash()),
        v.handshake_hash,
        "{name}"
    );
    let mut i = i.into_transport_mode().unwrap();
    let mut r = r.into_transport_mode().unwrap();
    for (k, payload) in PAYLOADS.iter().enumerate().skip(3) {
        let (w, rd) = if k % 2 == 1 {
            (&mut r, &mut i)
        } else {
            (&mut i, &mut r)
        };
        let n = w.write_message(&h(payload), &mut buf).unwrap();
        assert_eq!(
            hex::encode(&buf[..n]),
            v.ct[k],
            "{name}: transport message {k}"
        );
        let m = rd.read_message(&buf[..n], &mut out).unwrap();
        assert_eq!(out[..m], h(payload)[..]);
    }
}

/// The pattern's vector through the builder the daemon uses (`Builder::new` with
/// `ring-accelerated`: ring's ChaCha20-Poly1305, the default resolver's X25519 and BLAKE2s),
/// through that resolver named explicitly, and through the default resolver alone (RustCrypto's
/// cipher): each agrees with cacophony byte for byte.
#[test]
fn cacophony_vector_xxpsk3_25519_chachapoly_blake2s() {
    let v = Vector {
        handshake_hash: "fc0819f08aebc23de9a783653d8d7d6395b7d243d9deec12f5d6fe2f4c206673",
        ct: [
            "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944325ea71699951ece20f284b6ad9604a029eb335bf84564c308b6ade90ae45078",
            "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f1448088432645535233ffe1432564d66a85227b677ced6fc2730ae0998ff49aa1dc56b8186e31b16e416f5d9c03c71f6c34fd37ec013105020070a8b00c000ce7ed56629c119795f96463274bc05519d5c24dc1",
            "adf16c5375ec4172576783fd59f2bfa5c7a320d0a13b759592e1a2ddf5524cce59ccbb92ff5d321fced3bdb2840596df562c0e68aad41b090abd285f6d300130072e06964a6ba494e58d47",
            "dcdc045c8e9ec36c8ea4078552e5849f87cb9bdfbd2a4eee3baaf6",
            "4d11ed1f242e199dbcbc9773495834a95e8a6109e2b555aeb50780e69b152821e4",
            "4d1e6873ffcc88490be6914928590f63253c2db434f1f206f083f89ca559a3e60a8dcc4f12",
        ],
    };
    // The daemon's builder, and snow's ring resolver by name in front of the default one (what
    // `ring-accelerated` makes `Builder::new` use), and RustCrypto's cipher alone.
    use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
    check(&v, None);
    check(
        &v,
        Some(|| {
            Box::new(FallbackResolver::new(
                Box::new(RingResolver),
                Box::new(DefaultResolver),
            ))
        }),
    );
    check(&v, Some(|| Box::new(DefaultResolver)));
}
