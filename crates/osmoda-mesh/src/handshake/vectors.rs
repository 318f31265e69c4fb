//! Cacophony's published vectors for both patterns the handshake speaks, byte for byte through
//! the resolver the daemon uses and through RustCrypto's.

use super::Cipher;

/// One of cacophony's published vectors (snow's `tests/vectors/cacophony.txt`): fixed
/// statics, ephemerals, prologue and PSK; every message's ciphertext and the handshake hash
/// byte for byte through `resolver`.
struct Vector {
    cipher: Cipher,
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

fn check(v: &Vector, resolver: fn() -> snow::resolvers::BoxedCryptoResolver) {
    let h = |s: &str| hex::decode(s).unwrap();
    let prologue = h("4a6f686e2047616c74");
    let psk = h("54686973206973206d7920417573747269616e20706572737065637469766521");
    let i_s = h("e61ef9919cde45dd5f82166404bd08e38bceb5dfdfded0a34c8df7ed542214d1");
    let i_e = h("893e28b9dc6ca8d611ab664754b8ceb7bac5117349a4439a6b0569da977c464a");
    let r_s = h("4a3acbfdb163dec651dfa3194dece676d437029c62a408b4c5ea9114246e4893");
    let r_e = h("bbdb4cdbd309f1a1f2e1456967fe288cadd6f712d65dc7b7793d5e63da6b375b");
    let name = v.cipher.pattern();
    let build = |s: &[u8], e: &[u8], initiator: bool| {
        let b = snow::Builder::with_resolver(v.cipher.params(), resolver())
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
    for k in 0..3 {
        let (w, rd) = if k % 2 == 0 {
            (&mut i, &mut r)
        } else {
            (&mut r, &mut i)
        };
        let n = w.write_message(&h(PAYLOADS[k]), &mut buf).unwrap();
        assert_eq!(
            hex::encode(&buf[..n]),
            v.ct[k],
            "{name}: handshake message {k}"
        );
        let m = rd.read_message(&buf[..n], &mut out).unwrap();
        assert_eq!(out[..m], h(PAYLOADS[k])[..]);
    }
    assert_eq!(
        hex::encode(i.get_handshake_hash()),
        v.handshake_hash,
        "{name}"
    );
    let mut i = i.into_transport_mode().unwrap();
    let mut r = r.into_transport_mode().unwrap();
    for k in 3..6 {
        let (w, rd) = if k % 2 == 1 {
            (&mut r, &mut i)
        } else {
            (&mut i, &mut r)
        };
        let n = w.write_message(&h(PAYLOADS[k]), &mut buf).unwrap();
        assert_eq!(
            hex::encode(&buf[..n]),
            v.ct[k],
            "{name}: transport message {k}"
        );
        let m = rd.read_message(&buf[..n], &mut out).unwrap();
        assert_eq!(out[..m], h(PAYLOADS[k])[..]);
    }
}

/// Both patterns' vectors, through the resolver the daemon uses (`Builder::new`: ring's
/// ciphers, the default resolver's X25519 and BLAKE2s) and through the default resolver
/// alone (RustCrypto's ciphers): the two implementations agree byte for byte.
#[test]
fn cacophony_vectors_xxpsk3_25519_chachapoly_and_aesgcm_blake2s() {
    let vectors = [
        Vector {
            cipher: Cipher::ChaChaPoly,
            handshake_hash: "fc0819f08aebc23de9a783653d8d7d6395b7d243d9deec12f5d6fe2f4c206673",
            ct: [
                "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c7944325ea71699951ece20f284b6ad9604a029eb335bf84564c308b6ade90ae45078",
                "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f1448088432645535233ffe1432564d66a85227b677ced6fc2730ae0998ff49aa1dc56b8186e31b16e416f5d9c03c71f6c34fd37ec013105020070a8b00c000ce7ed56629c119795f96463274bc05519d5c24dc1",
                "adf16c5375ec4172576783fd59f2bfa5c7a320d0a13b759592e1a2ddf5524cce59ccbb92ff5d321fced3bdb2840596df562c0e68aad41b090abd285f6d300130072e06964a6ba494e58d47",
                "dcdc045c8e9ec36c8ea4078552e5849f87cb9bdfbd2a4eee3baaf6",
                "4d11ed1f242e199dbcbc9773495834a95e8a6109e2b555aeb50780e69b152821e4",
                "4d1e6873ffcc88490be6914928590f63253c2db434f1f206f083f89ca559a3e60a8dcc4f12",
            ],
        },
        Vector {
            cipher: Cipher::AesGcm,
            handshake_hash: "e17435df867d26bb4550957c105817025ca55775e7129a8f233bd88f99296eba",
            ct: [
                "ca35def5ae56cec33dc2036731ab14896bc4c75dbb07a61f879f8e3afa4c794458878ace3a0a34c2c4a3f4f8197e322fd9d0114f9032aa88076dd56d4ff21a33",
                "95ebc60d2b1fa672c1f46a8aa265ef51bfe38e7ccb39ec5be34069f144808843657317cca5f7349522c91e60f9984df957abe41b78640a48bf88c22dc6ae06a7ae0aeb41dbc3e50a8c8f41b9919e62217d0265a899c26c64cdb4f86e48588f03348fafdde0f8f4d895c8c740b675e1",
                "2d017f634b13c1ef5bac3ff648de8c4312d7140fdfe10ecf32cc80118e24dceb2727badc0b0d673203cf88173ded954ee433bfd8075d578b4688ba2725562d8427eb51441bc45a3c94ffd3",
                "415eda2ea9d3491059438c7a47f161dfb6e42f6d318f67b46b2d38",
                "eaa43742868fb0194edcba13e4cccdb113e81f17da0616880d0e148acd8c3afcf8",
                "0d30a7083487bc2f7f75447689544a83b652ad3bad2491d070c82e6ab6795eaf13be65c6b9",
            ],
        },
    ];
    use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
    let daemons: fn() -> snow::resolvers::BoxedCryptoResolver = || {
        Box::new(FallbackResolver::new(
            Box::new(RingResolver),
            Box::new(DefaultResolver),
        ))
    };
    let rust_crypto: fn() -> snow::resolvers::BoxedCryptoResolver = || Box::new(DefaultResolver);
    for v in &vectors {
        check(v, daemons);
        check(v, rust_crypto);
    }
}
