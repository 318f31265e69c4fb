//! Published test vectors, asserted byte for byte: EIP-155, EIP-191, EIP-712, Web3 Secret
//! Storage (keystore v3), RFC 8032 and Solana's documented message layout.

use alloy_primitives::{keccak256, B256};
use zeroize::Zeroizing;

use crate::chains::eth::{self, EthKey, TxRequest};
use crate::chains::sol::{self, SolKey};
use crate::keys::import;

fn key(hex_str: &str) -> Zeroizing<[u8; 32]> {
    let mut k = Zeroizing::new([0u8; 32]);
    k.copy_from_slice(&hex::decode(hex_str).unwrap());
    k
}

#[test]
fn eip155_example() {
    let k = EthKey::from_secret(&key(&"46".repeat(32))).unwrap();
    assert_eq!(
        k.address().to_checksum(None),
        "0x9d8A62f656a8d1615C1294fd71e9CFb3E4855A4F"
    );
    let req: TxRequest = serde_json::from_value(serde_json::json!({
        "type": "legacy", "chain_id": 1, "nonce": 9, "gas_price": "20000000000", "gas_limit": 21000,
        "to": format!("0x{}", "35".repeat(20)), "value": "1000000000000000000",
    }))
    .unwrap();
    let tx = req.build(None).unwrap();
    assert_eq!(
        hex::encode(tx.signature_hash()),
        "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53"
    );
    let signed = k.sign_tx(&tx).unwrap();
    assert_eq!(
        hex::encode(&signed.raw),
        "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83"
    );
    // v = 37 = 1·2 + 35 + 0: the byte before the 0xa0-prefixed r.
    let v_at = signed.raw.len() - 2 * 33 - 1;
    assert_eq!(signed.raw[v_at], 37);
    assert_eq!(signed.hash, keccak256(&signed.raw));
}

#[test]
fn a_chainless_legacy_transaction_cannot_be_built() {
    let req: TxRequest = serde_json::from_value(serde_json::json!({
        "type": "legacy", "nonce": 0, "gas_price": "1", "gas_limit": 21000,
        "to": format!("0x{}", "35".repeat(20)),
    }))
    .unwrap();
    assert!(req
        .build(None)
        .unwrap_err()
        .to_string()
        .contains("chain_id"));
    let req: TxRequest = serde_json::from_value(serde_json::json!({
        "type": "legacy", "chain_id": 0, "nonce": 0, "gas_price": "1", "gas_limit": 21000,
        "to": format!("0x{}", "35".repeat(20)),
    }))
    .unwrap();
    assert!(req.build(None).is_err());
}

#[test]
fn eip1559_signs_as_type_2() {
    let k = EthKey::from_secret(&key(&"46".repeat(32))).unwrap();
    let req: TxRequest = serde_json::from_value(serde_json::json!({
        "chain_id": 1, "nonce": 0, "max_fee_per_gas": "30000000000", "max_priority_fee_per_gas": "1000000000",
        "gas_limit": 21000, "to": format!("0x{}", "35".repeat(20)), "value": "1",
    }))
    .unwrap();
    let tx = req.build(None).unwrap();
    let signed = k.sign_tx(&tx).unwrap();
    assert_eq!(signed.raw[0], 2, "EIP-2718 type byte");
    // The signature recovers to the key's address.
    use alloy_consensus::transaction::SignerRecoverable;
    use alloy_eips::eip2718::Decodable2718;
    let env = alloy_consensus::TxEnvelope::decode_2718(&mut signed.raw.as_slice()).unwrap();
    assert_eq!(env.recover_signer().unwrap(), k.address());
}

#[test]
fn key_one_address() {
    let mut one = [0u8; 32];
    one[31] = 1;
    let k = EthKey::from_secret(&Zeroizing::new(one)).unwrap();
    assert_eq!(
        k.address().to_checksum(None),
        "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
    );
}

#[test]
fn eip191_some_data() {
    let k = EthKey::from_secret(&key(
        "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318",
    ))
    .unwrap();
    assert_eq!(
        hex::encode(eth::personal_digest(b"Some data")),
        "1da44b586eb0729ff70a73c326926f6ed5a25f5b056e7f47fbc6e58d86871655"
    );
    let sig = k.personal_sign(b"Some data").unwrap();
    assert_eq!(
        eth::sig_hex(&sig),
        "0xb91467e570a6466aa9e9876cbcd013baba02900b8979d43fe208a4a4f339f5fd6007e74cd82e037b800186422fc2da167c747ef045e5d18a5f5d4300f8e1a0291c"
    );
}

/// The "Ether Mail" example of EIP-712.
pub fn ether_mail() -> serde_json::Value {
    serde_json::json!({
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}
            ],
            "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
            "Mail": [{"name": "from", "type": "Person"}, {"name": "to", "type": "Person"}, {"name": "contents", "type": "string"}]
        },
        "primaryType": "Mail",
        "domain": {"name": "Ether Mail", "version": "1", "chainId": 1, "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"},
        "message": {
            "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
            "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"},
            "contents": "Hello, Bob!"
        }
    })
}

#[test]
fn eip712_ether_mail() {
    let cow = keccak256("cow");
    let k = EthKey::from_secret(&Zeroizing::new(cow.0)).unwrap();
    assert_eq!(
        k.address().to_checksum(None),
        "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"
    );
    let data: alloy_dyn_abi::TypedData = serde_json::from_value(ether_mail()).unwrap();
    let (digest, sig) = k.sign_typed(&data).unwrap();
    assert_eq!(
        hex::encode(digest),
        "be609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    );
    assert_eq!(sig.v_byte(), 28, "v");
    assert_eq!(
        B256::from(sig.r()).to_string(),
        "0x4355c47d63924e8a72e509b65029052eb6c299d53a04e167c5775fd466751c9d"
    );
    assert_eq!(
        B256::from(sig.s()).to_string(),
        "0x07299936d304c153f6443dfa05f40ff007d72911b6f72307f996231605b91562"
    );
}

/// The two test vectors of the Web3 Secret Storage definition (password "testpassword").
pub fn keystores() -> [serde_json::Value; 2] {
    [
        serde_json::json!({"crypto":{"cipher":"aes-128-ctr","cipherparams":{"iv":"6087dab2f9fdbbfaddc31a909735c1e6"},"ciphertext":"5318b4d5bcd28de64ee5559e671353e16f075ecae9f99c7a79a38af5f869aa46","kdf":"pbkdf2","kdfparams":{"c":262144,"dklen":32,"prf":"hmac-sha256","salt":"ae3cd4e7013836a3df6bd7241b12db061dbe2c6785853cce422d148a624ce0bd"},"mac":"517ead924a9d0dc3124507e3393d175ce3ff7c1e96529c6c555ce9e51205e9b2"},"id":"3198bc9c-6672-5ab3-d995-4942343ae5b6","version":3}),
        serde_json::json!({"crypto":{"cipher":"aes-128-ctr","cipherparams":{"iv":"83dbcc02d8ccb40e466191a123791e0e"},"ciphertext":"d172bf743a674da9cdad04534d56926ef8358534d458fffccd4e6ad2fbde479c","kdf":"scrypt","kdfparams":{"dklen":32,"n":262144,"r":1,"p":8,"salt":"ab0c7876052600dd703518d6fc3fe8984592145b591fc8fb5c6d43190334ba19"},"mac":"2103ac29920d71da29f15d75b4a16dbe95cfd7ff8faea1056c33131d846e3097"},"id":"3198bc9c-6672-5ab3-d995-4942343ae5b6","version":3}),
    ]
}

#[test]
fn keystore_v3_vectors() {
    for ks in keystores() {
        let k = import::keystore_v3(&ks, "testpassword").unwrap();
        assert_eq!(
            hex::encode(&k[..]),
            "7a28b5ba57c53603b0b07b56bba752f7784bf506fa95edc395f5cf6c7514fe9d"
        );
        let addr = EthKey::from_secret(&k).unwrap().address().to_checksum(None);
        assert_eq!(addr, "0x008AeEda4D805471dF9b2A5B0f38A0C3bCBA786b");
        let e = import::keystore_v3(&ks, "wrong").unwrap_err().to_string();
        assert!(e.contains("MAC mismatch"), "{e}");
    }
}

#[test]
fn keystore_caps_refuse_before_any_work() {
    let [_, scrypt] = keystores();
    for (field, value, says) in [
        ("n", serde_json::json!(1u64 << 20), "power of two from 2 to"),
        ("n", serde_json::json!(1000), "power of two"),
        (
            "r",
            serde_json::json!(64),
            "`r` and `p` must be 1..=8 and 1..=16",
        ),
        ("p", serde_json::json!(1000), "`r` and `p` must be"),
    ] {
        let mut ks = scrypt.clone();
        ks["crypto"]["kdfparams"][field] = value;
        let e = import::keystore_v3(&ks, "testpassword")
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{field}: {e}");
    }
    let [pbkdf2, _] = keystores();
    let mut ks = pbkdf2;
    ks["crypto"]["kdfparams"]["c"] = serde_json::json!(u32::MAX);
    assert!(import::keystore_v3(&ks, "x")
        .unwrap_err()
        .to_string()
        .contains("pbkdf2 `c` must be"));
}

#[test]
fn rfc8032_test_1_and_solana_address() {
    let k = SolKey::from_seed(&key(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    ));
    assert_eq!(
        hex::encode(k.public()),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
    assert_eq!(k.address(), "FVen3X669xLzsi6N2V91DoiyzHzg1uAgqiT8jZ9nS96Z");
    assert_eq!(
        hex::encode(k.sign_raw_for_test(b"")),
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
    );
}

#[test]
fn solana_keypair_json_import() {
    let k = SolKey::from_seed(&key(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    ));
    let mut bytes =
        hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60").unwrap();
    bytes.extend_from_slice(&k.public());
    let seed = import::solana_keypair(&serde_json::json!(bytes)).unwrap();
    assert_eq!(
        SolKey::from_seed(&seed).address(),
        "FVen3X669xLzsi6N2V91DoiyzHzg1uAgqiT8jZ9nS96Z"
    );
    bytes[40] ^= 1;
    assert!(import::solana_keypair(&serde_json::json!(bytes))
        .unwrap_err()
        .to_string()
        .contains("does not match"));
}

/// Decodes a signed transfer independently of `chains::sol`, offset by offset as the Solana
/// documentation lays out a legacy transaction.
#[test]
fn solana_transfer_decodes_to_the_request() {
    let k = SolKey::from_seed(&key(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    ));
    let to = sol::parse_pubkey("4fYNw3dojWmQ4dXtSGE9epjRGy9pFSx62YypT7avPYvA", "to").unwrap();
    let blockhash = [7u8; 32];
    let msg = sol::transfer_message(&k.public(), &to, 1_500_000_000, &blockhash).unwrap();
    let tx = k.sign_transfer(&msg);
    let raw = &tx.raw;
    assert_eq!(raw[0], 1, "one signature");
    let (sig, m) = (&raw[1..65], &raw[65..]);
    assert_eq!(
        &m[..3],
        &[1, 0, 1],
        "header: 1 signer, 0 readonly signed, 1 readonly unsigned"
    );
    assert_eq!(m[3], 3, "three account keys");
    assert_eq!(&m[4..36], &k.public(), "from = fee payer");
    assert_eq!(&m[36..68], &to, "to");
    assert_eq!(&m[68..100], &[0u8; 32], "System Program");
    assert_eq!(&m[100..132], &blockhash, "recent blockhash");
    assert_eq!(
        &m[132..136],
        &[1, 2, 2, 0],
        "1 instruction, program index 2, 2 accounts, from"
    );
    assert_eq!(m[136], 1, "to");
    assert_eq!(m[137], 12, "data length");
    assert_eq!(&m[138..142], &2u32.to_le_bytes(), "Transfer");
    assert_eq!(&m[142..150], &1_500_000_000u64.to_le_bytes(), "lamports");
    assert_eq!(m.len(), 150);
    use ed25519_dalek::Verifier;
    let vk = ed25519_dalek::VerifyingKey::from_bytes(&k.public()).unwrap();
    vk.verify(m, &ed25519_dalek::Signature::from_slice(sig).unwrap())
        .unwrap();
    // And it reads back through the checker used for caller-supplied messages.
    let t = sol::read_transfer(m, &k.public()).unwrap();
    assert_eq!(
        (t.to, t.lamports, t.blockhash),
        (to, 1_500_000_000, blockhash)
    );
}

#[test]
fn solana_refuses_v0_durable_nonce_and_other_programs() {
    let k = SolKey::from_seed(&key(&"11".repeat(32)));
    let to = [9u8; 32];
    let msg = sol::transfer_message(&k.public(), &to, 5, &[1; 32]).unwrap();
    let mut v0 = vec![0x80];
    v0.extend_from_slice(&msg);
    let e = sol::read_transfer(&v0, &k.public())
        .unwrap_err()
        .to_string();
    assert!(e.contains("v0"), "{e}");
    // AdvanceNonceAccount first.
    let mut nonce = msg.clone();
    nonce[138..142].copy_from_slice(&4u32.to_le_bytes());
    let e = sol::read_transfer(&nonce, &k.public())
        .unwrap_err()
        .to_string();
    assert!(e.contains("durable-nonce"), "{e}");
    // Another wallet's transfer.
    assert!(sol::read_transfer(&msg, &[3; 32]).is_err());
    // Truncated.
    assert!(sol::read_transfer(&msg[..100], &k.public()).is_err());
}

/// The off-chain message proposal's version-0 preamble, written out field by field at the
/// offsets of its table (signing domain 0x00, version 0x10, application domain 0x11, format
/// 0x31, signer count 0x32, signers 0x33, then the u16 length), with the application domain
/// of `@solana/kit`'s published codec test (`testdomain1…` and its 32 bytes) and the RFC 8032
/// test 1 key as the one signer. The expected signature was computed independently with
/// OpenSSL 3.0 (`openssl pkeyutl -sign -rawin` over these 96 bytes).
#[test]
fn solana_offchain_message_follows_the_proposal_byte_for_byte() {
    let k = SolKey::from_seed(&key(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    ));
    let mut domain = [0u8; 32];
    bs58::decode("testdomain111111111111111111111111111111111")
        .onto(&mut domain)
        .unwrap();
    assert_eq!(
        hex::encode(domain),
        "0d3b730b9e889b4b661ed2a3ce191f68d37da7443206a182b946891e00000000",
        "kit's published application-domain bytes"
    );
    let (signed, sig) = k.sign_offchain("Hello world", &domain).unwrap();
    let expected = [
        "ff736f6c616e61206f6666636861696e", // 0x00 "\xffsolana offchain"
        "00",                               // 0x10 header version 0
        "0d3b730b9e889b4b661ed2a3ce191f68d37da7443206a182b946891e00000000", // 0x11 domain
        "00",                               // 0x31 format 0
        "01",                               // 0x32 one signer
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", // 0x33 signer
        "0b00",                             // 0x53 length 11, little-endian
        "48656c6c6f20776f726c64",           // 0x55 "Hello world"
    ]
    .concat();
    assert_eq!(hex::encode(&signed), expected);
    assert_eq!(signed.len(), sol::OFFCHAIN_PREAMBLE + 11);
    assert_eq!(
        hex::encode(sig),
        "e0cf4fcf6c0ea01dc0304a04e5e4b017962dcab5a1af825286ba871e2e8106ad\
         081ca5bd0479dfba999d4ea49dbb987a1583012bac34db6d9610d1ec47a9830b"
    );
}

/// The format is the most restrictive the message fits, by the proposal's rules: 0 only for
/// `0x20..=0x7e` (a newline is not allowed in version 0), 1 for other UTF-8, both while
/// preamble + message ≤ 1,232 bytes; 2 beyond, up to 65,535 together; empty is refused.
#[test]
fn solana_offchain_formats_and_lengths() {
    let (signer, domain) = ([7u8; 32], [0u8; 32]);
    let format = |m: &str| sol::offchain_bytes(m, &signer, &domain).map(|b| (b[0x31], b.len()));
    let short = 1232 - sol::OFFCHAIN_PREAMBLE;
    assert_eq!(short, 1147);
    for (m, f) in [
        ("hello".to_string(), 0),
        ("a~ z".to_string(), 0),
        ("a\nb".to_string(), 1),
        ("a\tb".to_string(), 1),
        ("h\u{e9}".to_string(), 1),
        ("x".repeat(short), 0),
        ("x".repeat(short + 1), 2),
        ("\u{e9}".repeat(short / 2), 1),
        ("\u{e9}".repeat(short / 2 + 1), 2),
        ("x".repeat(sol::OFFCHAIN_MAX), 2),
    ] {
        let (got, len) = format(&m).unwrap();
        assert_eq!(got, f, "{} bytes", m.len());
        assert_eq!(len, sol::OFFCHAIN_PREAMBLE + m.len());
    }
    assert_eq!(sol::OFFCHAIN_PREAMBLE + sol::OFFCHAIN_MAX, 65535);
    assert!(format("").is_err());
    assert!(format(&"x".repeat(sol::OFFCHAIN_MAX + 1)).is_err());
}

#[test]
fn erc20_calldata_decodes_strictly() {
    let to = format!("{:0>64}", "35".repeat(20));
    let amount = format!("{:0>64}", "3e8");
    let data = hex::decode(format!("a9059cbb{to}{amount}")).unwrap();
    assert_eq!(
        eth::decode_call(&data).unwrap(),
        eth::Call::Erc20Transfer {
            to: [0x35u8; 20].into(),
            amount: alloy_primitives::U256::from(1000)
        }
    );
    let data = hex::decode(format!("095ea7b3{to}{amount}")).unwrap();
    assert!(matches!(
        eth::decode_call(&data).unwrap(),
        eth::Call::Erc20Approve { .. }
    ));
    // transferFrom, a dirty address word, trailing bytes: refused.
    for bad in [
        format!("23b872dd{to}{to}{amount}"),
        format!("a9059cbb{}{amount}", "ff".repeat(32)),
        format!("a9059cbb{to}{amount}00"),
        "a905".to_string(),
    ] {
        assert!(
            eth::decode_call(&hex::decode(&bad).unwrap()).is_err(),
            "{bad}"
        );
    }
}
