//! keyd end to end on its socket: signing and sending on both chains, the policy's denials,
//! approval tickets through a real agentd, delete, bad input, receipts, /metrics.
#![allow(clippy::unwrap_used)]

mod common;

use alloy_consensus::transaction::SignerRecoverable;
use alloy_consensus::Transaction as _;
use alloy_eips::eip2718::Decodable2718;
use base64::Engine as _;
use common::*;
use serde_json::{json, Value};

fn decode_eth(raw: &Value) -> alloy_consensus::TxEnvelope {
    let bytes = hex::decode(raw.as_str().unwrap().trim_start_matches("0x")).unwrap();
    alloy_consensus::TxEnvelope::decode_2718(&mut bytes.as_slice()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ethereum_send_and_sign_are_real_and_recorded() {
    let env = Env::new(eth_policy(
        "1000000000000000000",
        "10000000000000000000",
        None,
    ))
    .await;
    let w = env.create("ethereum", "ops").await;
    let id = w["id"].as_str().unwrap();
    let addr = w["address"].as_str().unwrap();
    assert!(addr.starts_with("0x") && addr.len() == 42, "{w}");

    let (s, r) = env.post("/wallet/send", eth_send(id, "1000", 7)).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["broadcast"], false);
    let env_tx = decode_eth(&r["raw_tx"]);
    assert_eq!(env_tx.recover_signer().unwrap().to_checksum(None), addr);
    assert_eq!(env_tx.chain_id(), Some(1));
    assert_eq!(env_tx.nonce(), 7);
    assert_eq!(env_tx.value(), alloy_primitives::U256::from(1000));
    assert_eq!(env_tx.to().unwrap().to_string().to_lowercase(), BOB);
    assert_eq!(r["tx_hash"].as_str().unwrap(), env_tx.tx_hash().to_string());
    assert_eq!(env.spent("chain:ethereum:native"), 1000);

    // Legacy sends are EIP-155 (v = 37/38 on chain 1).
    let mut legacy = eth_send(id, "5", 8);
    legacy["type"] = json!("legacy");
    legacy.as_object_mut().unwrap().remove("max_fee_per_gas");
    legacy
        .as_object_mut()
        .unwrap()
        .remove("max_priority_fee_per_gas");
    legacy["gas_price"] = json!("20000000000");
    let (s, r) = env.post("/wallet/send", legacy).await;
    assert_eq!(s, 200, "{r}");
    let tx = decode_eth(&r["raw_tx"]);
    assert!(matches!(tx, alloy_consensus::TxEnvelope::Legacy(_)));
    assert_eq!(tx.chain_id(), Some(1));

    // personal_sign recovers to the wallet.
    let (s, r) = env
        .post(
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": { "type": "personal_sign", "message": "hello" } }),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let sig: alloy_primitives::Signature = r["signature"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        sig.recover_address_from_msg("hello")
            .unwrap()
            .to_checksum(None),
        addr
    );

    // A transaction given whole.
    let (s, r) = env
        .post(
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": { "type": "transaction", "tx": {
            "nonce": "9", "to": BOB, "value": "3", "gas_limit": 21000,
            "max_fee_per_gas": "2", "max_priority_fee_per_gas": "1" } } }),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(decode_eth(&r["raw_tx"]).nonce(), 9);
    assert_eq!(r["max_fee"], "42000", "{r}");
    // Values 1000 + 5 + 3, plus the maximum fees: the first send's is 0, the legacy one's
    // 21,000 gas × 20 gwei, the whole transaction's 21,000 × 2 wei.
    assert_eq!(
        env.spent("chain:ethereum:native"),
        1008 + 21_000 * 20_000_000_000 + 21_000 * 2
    );

    let sends = env.receipts("wallet.send").await;
    assert_eq!(sends.len(), 2);
    assert_eq!(sends[0]["from"], addr);
    assert_eq!(sends[0]["amount"], "1000");
    assert!(sends[0].get("raw_tx").is_none());
    assert_eq!(env.receipts("wallet.sign").await.len(), 2);
    assert_eq!(env.receipts("wallet.create").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn solana_send_builds_a_legacy_transfer_and_offchain_messages_sign() {
    let policy = json!({ "chains": { "solana": { "chain_ids": [], "per_tx_max": "5000000000",
        "daily_limit": "9000000000", "approval_threshold": null, "recipient_allowlist": null } }, "wallets": {} });
    let env = Env::new(policy).await;
    let w = env.create("solana", "sol").await;
    let id = w["id"].as_str().unwrap();
    let from = bs58::decode(w["address"].as_str().unwrap())
        .into_vec()
        .unwrap();
    let to = "4fYNw3dojWmQ4dXtSGE9epjRGy9pFSx62YypT7avPYvA";
    let blockhash = bs58::encode([42u8; 32]).into_string();
    let (s, r) = env
        .post(
            "/wallet/send",
            json!({ "wallet_id": id, "to": to, "amount": "1500000000", "blockhash": blockhash }),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(r["raw_tx"].as_str().unwrap())
        .unwrap();
    let m = &raw[65..];
    assert_eq!(&m[4..36], from.as_slice());
    assert_eq!(&m[36..68], bs58::decode(to).into_vec().unwrap().as_slice());
    assert_eq!(&m[100..132], &[42u8; 32]);
    assert_eq!(&m[142..150], &1_500_000_000u64.to_le_bytes());
    let sig = ed25519_dalek::Signature::from_slice(&raw[1..65]).unwrap();
    let vk = ed25519_dalek::VerifyingKey::from_bytes(from.as_slice().try_into().unwrap()).unwrap();
    vk.verify_strict(m, &sig).unwrap();
    assert_eq!(
        r["signature"].as_str().unwrap(),
        bs58::encode(&raw[1..65]).into_string()
    );

    // The same message given back for signing passes; a v0 one is refused and recorded.
    let msg = base64::engine::general_purpose::STANDARD.encode(m);
    let (s, r) = env
        .post(
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": { "type": "solana_message", "message": msg } }),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let mut v0 = vec![0x80u8];
    v0.extend_from_slice(m);
    let v0 = base64::engine::general_purpose::STANDARD.encode(v0);
    let (s, r) = env
        .post(
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": { "type": "solana_message", "message": v0 } }),
        )
        .await;
    assert_eq!(
        (s, r["detail"]["reason"].as_str()),
        (403, Some("solana_message")),
        "{r}"
    );

    let (s, r) = env.post("/wallet/sign", json!({ "wallet_id": id, "payload": { "type": "offchain_message", "message": "login 1234" } })).await;
    assert_eq!(s, 200, "{r}");
    let signed = base64::engine::general_purpose::STANDARD
        .decode(r["signed_message"].as_str().unwrap())
        .unwrap();
    assert!(signed.starts_with(b"\xffsolana offchain"));
    let sig = bs58::decode(r["signature"].as_str().unwrap())
        .into_vec()
        .unwrap();
    vk.verify_strict(
        &signed,
        &ed25519_dalek::Signature::from_slice(&sig).unwrap(),
    )
    .unwrap();
    // The proposal's version-0 preamble: no application domain given = 32 zero bytes, the
    // wallet as the one signer (`vectors.rs` has the byte-for-byte vector).
    assert_eq!(r["application_domain"], "11111111111111111111111111111111");
    assert_eq!((signed[0x10], &signed[0x11..0x31]), (0, &[0u8; 32][..]));
    assert_eq!((signed[0x31], signed[0x32]), (0, 1), "ASCII, one signer");
    assert_eq!(&signed[0x33..0x53], &from[..]);
    assert_eq!(&signed[0x55..], b"login 1234");
    let app = "testdomain111111111111111111111111111111111";
    let (s, r) = env.post("/wallet/sign", json!({ "wallet_id": id, "payload": { "type": "offchain_message", "message": "l\u{e9}", "application_domain": app } })).await;
    assert_eq!(
        (s, r["application_domain"].as_str()),
        (200, Some(app)),
        "{r}"
    );
    let signed = base64::engine::general_purpose::STANDARD
        .decode(r["signed_message"].as_str().unwrap())
        .unwrap();
    assert_eq!(bs58::encode(&signed[0x11..0x31]).into_string(), app);
    assert_eq!(signed[0x31], 1, "UTF-8");
    let receipts = env.receipts("wallet.sign").await;
    assert_eq!(receipts[receipts.len() - 1]["application_domain"], app);
    for bad in ["0x00", "", "1111"] {
        let (s, r) = env.post("/wallet/sign", json!({ "wallet_id": id, "payload": { "type": "offchain_message", "message": "m", "application_domain": bad } })).await;
        assert_eq!(s, 400, "{r}");
        assert!(
            r["error"]
                .as_str()
                .unwrap()
                .contains("payload.application_domain"),
            "{r}"
        );
    }
    // Past the proposal's lengths, or empty: 400, nothing signed.
    for m in [String::new(), "x".repeat(65_451)] {
        let (s, r) = env
            .post(
                "/wallet/sign",
                json!({ "wallet_id": id, "payload": { "type": "offchain_message", "message": m } }),
            )
            .await;
        assert_eq!(s, 400, "{r}");
        assert!(
            r["error"].as_str().unwrap().contains("1 to 65450 bytes"),
            "{r}"
        );
    }
    assert_eq!(env.receipts("wallet.sign").await.len(), receipts.len());
    // The lamports of the two transfers (one sent, one signed as a message) plus the base fee
    // of each one's signature.
    assert_eq!(
        env.spent("chain:solana:native"),
        3_000_000_000 + 2 * SOL_FEE
    );
    assert_eq!(env.receipts("wallet.deny").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_denies_with_a_receipt_and_charges_nothing() {
    let mut policy = eth_policy("1000", "5000", None);
    policy["chains"]["ethereum"]["recipient_allowlist"] = json!([BOB]);
    policy["chains"]["ethereum"]["typed_data"] =
        json!([{ "chain_id": 1, "verifying_contract": BOB, "primary_types": ["Mail"] }]);
    let env = Env::new(policy).await;
    let id = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sol = env.create("solana", "s").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = "0x0000000000000000000000000000000000000001";
    let erc20 = format!("0xa9059cbb{:0>64}{:0>64}", &BOB[2..], "3e8");
    let cases: Vec<(&str, Value, &str)> = vec![
        ("/wallet/send", eth_send(&id, "1001", 0), "per_tx_max"),
        (
            "/wallet/send",
            {
                let mut b = eth_send(&id, "1", 0);
                b["to"] = json!(other);
                b
            },
            "recipient",
        ),
        (
            "/wallet/send",
            {
                let mut b = eth_send(&id, "1", 0);
                b["chain_id"] = json!(5);
                b
            },
            "chain_id",
        ),
        (
            "/wallet/send",
            json!({ "wallet_id": sol, "to": "4fYNw3dojWmQ4dXtSGE9epjRGy9pFSx62YypT7avPYvA", "amount": "1", "blockhash": "4fYNw3dojWmQ4dXtSGE9epjRGy9pFSx62YypT7avPYvA" }),
            "chain",
        ),
        (
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": { "type": "transaction", "tx": {
            "chain_id": 1, "nonce": 0, "to": BOB, "gas_limit": 60000, "max_fee_per_gas": "2", "max_priority_fee_per_gas": "1",
            "authorization_list": [] } } }),
            "eip7702",
        ),
        (
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": { "type": "transaction", "tx": {
            "chain_id": 1, "nonce": 0, "to": BOB, "gas_limit": 60000, "max_fee_per_gas": "2", "max_priority_fee_per_gas": "1",
            "data": "0x23b872dd" } } }),
            "calldata",
        ),
        (
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": { "type": "transaction", "tx": {
            "chain_id": 1, "nonce": 0, "to": BOB, "gas_limit": 60000, "max_fee_per_gas": "2", "max_priority_fee_per_gas": "1",
            "data": erc20 } } }),
            "token",
        ),
    ];
    for (i, (path, body, reason)) in cases.iter().enumerate() {
        let (s, r) = env.post(path, body.clone()).await;
        assert_eq!(s, 403, "case {i}: {r}");
        assert_eq!(r["detail"]["reason"], *reason, "case {i}: {r}");
        assert!(r["error"].as_str().unwrap().len() > 10, "{r}");
    }
    // EIP-712 for a domain the policy does not list, and on another chain id.
    let mut mail = ether_mail();
    let (s, r) = env
        .post(
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": { "type": "typed_data", "data": mail } }),
        )
        .await;
    assert_eq!(
        (s, r["detail"]["reason"].as_str()),
        (403, Some("typed_data")),
        "{r}"
    );
    mail["domain"]["verifyingContract"] = json!(BOB);
    mail["domain"]["chainId"] = json!(137);
    let (s, r) = env
        .post(
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": { "type": "typed_data", "data": mail.clone() } }),
        )
        .await;
    assert_eq!(
        (s, r["detail"]["reason"].as_str()),
        (403, Some("chain_id")),
        "{r}"
    );
    mail["domain"]["chainId"] = json!(1);
    let (s, r) = env
        .post(
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": { "type": "typed_data", "data": mail } }),
        )
        .await;
    assert_eq!(s, 200, "{r}");

    assert_eq!(env.spent("chain:ethereum:native"), 0);
    let denies = env.receipts("wallet.deny").await;
    assert_eq!(denies.len(), cases.len() + 2);
    assert!(env.receipts("wallet.send").await.is_empty());
    let (_, metrics) = {
        let r = env.client().get("/metrics").await.unwrap();
        (r.status, r.body)
    };
    let text = metrics
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| metrics.to_string());
    for line in [
        r#"osmoda_keyd_denials_total{reason="per_tx_max"} 1"#,
        r#"osmoda_keyd_signatures_total{chain="ethereum",kind="typed_data"} 1"#,
    ] {
        assert!(text.contains(line), "{line} missing in {text}");
    }
}

fn ether_mail() -> Value {
    json!({
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
                {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}],
            "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
            "Mail": [{"name": "from", "type": "Person"}, {"name": "to", "type": "Person"}, {"name": "contents", "type": "string"}]
        },
        "primaryType": "Mail",
        "domain": {"name": "Ether Mail", "version": "1", "chainId": 1, "verifyingContract": "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC"},
        "message": {"from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
            "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"}, "contents": "Hello, Bob!"}
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_4xx_and_changes_nothing() {
    let env = Env::new(eth_policy("1000", "5000", None)).await;
    let id = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let cases: Vec<(&str, Value, u16)> = vec![
        (
            "/wallet/send",
            {
                let mut b = eth_send(&id, "1", 0);
                b["to"] = json!("0xzz");
                b
            },
            400,
        ),
        (
            "/wallet/send",
            {
                let mut b = eth_send(&id, "1", 0);
                b["to"] = json!("0x3535353535353535353535353535353535353535aa");
                b
            },
            400,
        ),
        ("/wallet/send", eth_send("w_0000000000000000", "1", 0), 404),
        (
            "/wallet/send",
            eth_send(&id, "340282366920938463463374607431768211456", 0),
            400,
        ),
        ("/wallet/send", eth_send(&id, "-1", 0), 400),
        ("/wallet/send", eth_send(&id, "1.5", 0), 400),
        (
            "/wallet/send",
            {
                let mut b = eth_send(&id, "1", 0);
                b["nonce"] = json!("seven");
                b
            },
            400,
        ),
        (
            "/wallet/send",
            {
                let mut b = eth_send(&id, "1", 0);
                b["amount"] = json!(true);
                b
            },
            400,
        ),
        (
            "/wallet/send",
            {
                let mut b = eth_send(&id, "1", 0);
                b["surprise"] = json!(1);
                b
            },
            400,
        ),
        (
            "/wallet/send",
            {
                let mut b = eth_send(&id, "1", 0);
                b["blockhash"] = json!("x");
                b
            },
            400,
        ),
        (
            "/wallet/send",
            {
                let mut b = eth_send(&id, "1", 0);
                b.as_object_mut().unwrap().remove("nonce");
                b
            },
            400,
        ),
        (
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": { "type": "personal_sign", "message_hex": "0xabc" } }),
            400,
        ),
        (
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": { "type": "hash", "hash": "0x00" } }),
            400,
        ),
        (
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": { "type": "offchain_message", "message": "x" } }),
            400,
        ),
        (
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": "personal_sign" }),
            400,
        ),
        (
            "/wallet/create",
            json!({ "chain": "bitcoin", "label": "b" }),
            400,
        ),
        (
            "/wallet/create",
            json!({ "chain": "ethereum", "label": "has space" }),
            400,
        ),
        (
            "/wallet/create",
            json!({ "chain": "ethereum", "label": "ops" }),
            400,
        ),
        (
            "/wallet/create",
            json!({ "chain": "ethereum", "label": "k", "import": { "format": "solana_keypair", "keypair": [] } }),
            400,
        ),
        ("/wallet/delete", json!({ "wallet_id": 5 }), 400),
    ];
    for (i, (path, body, status)) in cases.iter().enumerate() {
        let (s, r) = env.post(path, body.clone()).await;
        assert_eq!(s, *status, "case {i}: {r}");
        assert!(
            r["error"].is_string() && r["detail"]["kind"].is_string(),
            "case {i}: {r}"
        );
    }
    let (s, r) = env.post("/wallet/send", json!("not an object")).await;
    assert_eq!(s, 400, "{r}");
    assert_eq!(env.spent("chain:ethereum:native"), 0);
    let (_, list) = env.get("/wallet/list").await;
    assert_eq!(list["wallets"].as_array().unwrap().len(), 1);
    for kind in ["wallet.deny", "wallet.send", "wallet.sign", "wallet.delete"] {
        assert!(env.receipts(kind).await.is_empty(), "{kind}");
    }
    let (s, r) = env.get("/wallet/nope").await;
    assert_eq!(s, 404, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn above_the_threshold_a_person_approves_the_exact_operation_once() {
    let env = Env::new(eth_policy("1000", "5000", Some("100"))).await;
    let id = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, r) = env.post("/wallet/send", eth_send(&id, "500", 0)).await;
    assert_eq!(
        (s, r["detail"]["kind"].as_str()),
        (403, Some("approval_required")),
        "{r}"
    );
    let ticket = r["detail"]["ticket"]["id"].as_str().unwrap().to_string();
    assert_eq!(r["detail"]["ticket"]["origin"], "keyd");
    assert_eq!(r["detail"]["ticket"]["operation"]["amount"], "500");
    // Asking again returns the same open ticket.
    let (_, again) = env.post("/wallet/send", eth_send(&id, "500", 0)).await;
    assert_eq!(again["detail"]["ticket"]["id"], ticket.as_str());
    // Not yet approved.
    let mut body = eth_send(&id, "500", 0);
    body["approval"] = json!(ticket);
    let (s, r) = env.post("/wallet/send", body.clone()).await;
    assert_eq!(s, 409, "{r}");
    let (s, r) = env.human(&format!("/approval/{ticket}/approve")).await;
    assert_eq!(s, 200, "{r}");
    // Another amount with this ticket is refused and does not use it up.
    let mut other = eth_send(&id, "501", 0);
    other["approval"] = json!(ticket);
    let (s, r) = env.post("/wallet/send", other).await;
    assert_eq!(s, 403, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("different operation"),
        "{r}"
    );
    // The person approved the exact transaction: another nonce is another signing hash, so
    // another operation, refused without using the ticket up; the same request then passes.
    let mut renonced = body.clone();
    renonced["nonce"] = json!(3);
    let (s, r) = env.post("/wallet/send", renonced).await;
    assert_eq!(s, 403, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("different operation"),
        "{r}"
    );
    let (s, r) = env.post("/wallet/send", body.clone()).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        env.receipts("wallet.send").await[0]["approval"],
        ticket.as_str()
    );
    let (s, r) = env.post("/wallet/send", body).await;
    assert_eq!(s, 409, "single use: {r}");
    assert_eq!(env.spent("chain:ethereum:native"), 500);

    // A ticket the agent opened itself with the same operation does not pass for keyd's.
    let (_, r) = env.post("/wallet/send", eth_send(&id, "400", 1)).await;
    let op = r["detail"]["ticket"]["operation"].clone();
    let agentd = osmoda_client::Client::new(env.dir.path().join("agentd.sock"));
    let t = agentd
        .post(
            "/approval/request",
            &json!({ "operation": op, "detail": "please" }),
        )
        .await
        .unwrap();
    let agent_ticket = t.body["id"].as_str().unwrap().to_string();
    env.human(&format!("/approval/{agent_ticket}/approve"))
        .await;
    let mut body = eth_send(&id, "400", 1);
    body["approval"] = json!(agent_ticket);
    let (s, r) = env.post("/wallet/send", body).await;
    assert_eq!(s, 403, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("not opened by osmoda-keyd"),
        "{r}"
    );
    // Nor may anyone but keyd open or consume keyd's tickets directly... (same uid here: the
    // uid check is exercised in `only_keyds_uid_may_use_keyd_tickets`).
    assert_eq!(env.spent("chain:ethereum:native"), 500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_keyds_uid_may_use_keyd_tickets() {
    let uid = nix::unistd::getuid().as_raw();
    let env = Env::with_keyd_uid(
        eth_policy("1000", "5000", Some("100")),
        Some(uid.wrapping_add(1)),
    )
    .await;
    let id = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, r) = env.post("/wallet/send", eth_send(&id, "500", 0)).await;
    assert_eq!(s, 403, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("only osmoda-keyd"),
        "{r}"
    );
    let (s, r) = env.post("/wallet/delete", json!({ "wallet_id": id })).await;
    assert_eq!(s, 403, "{r}");
    let (_, list) = env.get("/wallet/list").await;
    assert_eq!(list["wallets"].as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_needs_an_approved_ticket() {
    let env = Env::new(eth_policy("1000", "5000", None)).await;
    let id = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let keep = env.create("ethereum", "keep").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, r) = env.post("/wallet/delete", json!({ "wallet_id": id })).await;
    assert_eq!(
        (s, r["detail"]["kind"].as_str()),
        (403, Some("approval_required")),
        "{r}"
    );
    let ticket = r["detail"]["ticket"]["id"].as_str().unwrap().to_string();
    env.human(&format!("/approval/{ticket}/approve")).await;
    // The ticket is bound to this wallet.
    let (s, _) = env
        .post(
            "/wallet/delete",
            json!({ "wallet_id": keep, "approval": ticket }),
        )
        .await;
    assert_eq!(s, 403);
    let (s, r) = env
        .post(
            "/wallet/delete",
            json!({ "wallet_id": id, "approval": ticket }),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let (_, list) = env.get("/wallet/list").await;
    let ids: Vec<&str> = list["wallets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![keep.as_str()]);
    let d = env.receipts("wallet.delete").await;
    assert_eq!(
        (d.len(), d[0]["wallet_id"].as_str()),
        (1, Some(id.as_str()))
    );
    let (s, _) = env.post("/wallet/send", eth_send(&id, "1", 0)).await;
    assert_eq!(s, 404);
    let (s, r) = env.get("/health").await;
    assert_eq!((s, r["wallets"].as_u64()), (200, Some(1)), "{r}");
}
