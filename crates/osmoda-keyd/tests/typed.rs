//! Typed data and token approvals against the real daemon: a signature that grants value (an
//! EIP-2612/DAI permit, Permit2, an unlimited `approve`) is judged like the approval it
//! authorises, typed data keyd cannot judge is signed only for a listed domain, and the words
//! a person approves name the kind, the token, the raw amount and the spender or recipient.

mod common;

use common::*;
use serde_json::{json, Value};

const USDC: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";
const DAI: &str = "0x6B175474E89094C44Da98b954EedeAC495271d0F";
const PERMIT2: &str = "0x000000000022D473030F116dDEE9F6B43aC78BA3";
const SPENDER: &str = "0x000000000000000000000000000000000000dEaD";
const MAX: &str = "115792089237316195423570985008687907853269984665640564039457584007913129639935";

fn policy() -> Value {
    let mut p = eth_policy("1000000000000000000", "5000000000000000000", None);
    p["chains"]["ethereum"]["tokens"] = json!({ USDC: {
        "per_tx_max": "1000", "daily_limit": "5000", "approval_threshold": "500" } });
    p
}

fn domain_types() -> Value {
    json!([{"name": "name", "type": "string"}, {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"}, {"name": "verifyingContract", "type": "address"}])
}

/// An EIP-2612 permit on `token` from `owner` of `value` to SPENDER, valid for ever.
fn permit(token: &str, owner: &str, value: &str) -> Value {
    permit_until(token, owner, value, MAX)
}

/// An EIP-2612 permit usable until the unix time `deadline` (a decimal string).
fn permit_until(token: &str, owner: &str, value: &str, deadline: &str) -> Value {
    json!({
        "types": { "EIP712Domain": domain_types(),
            "Permit": [{"name": "owner", "type": "address"}, {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"}, {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"}] },
        "primaryType": "Permit",
        "domain": { "name": "USD Coin", "version": "2", "chainId": 1, "verifyingContract": token },
        "message": { "owner": owner, "spender": SPENDER, "value": value, "nonce": 0, "deadline": deadline },
    })
}

/// DAI's permit: `allowed = true` is an unlimited allowance.
fn dai_permit(token: &str, holder: &str, allowed: bool) -> Value {
    json!({
        "types": { "EIP712Domain": domain_types(),
            "Permit": [{"name": "holder", "type": "address"}, {"name": "spender", "type": "address"},
                {"name": "nonce", "type": "uint256"}, {"name": "expiry", "type": "uint256"},
                {"name": "allowed", "type": "bool"}] },
        "primaryType": "Permit",
        "domain": { "name": "Dai Stablecoin", "version": "1", "chainId": 1, "verifyingContract": token },
        "message": { "holder": holder, "spender": SPENDER, "nonce": 0, "expiry": 0, "allowed": allowed },
    })
}

/// Permit2 `PermitSingle` (or `PermitBatch` when `tokens` has several entries).
fn permit2(tokens: &[(&str, &str)]) -> Value {
    let details: Vec<Value> = tokens
        .iter()
        .map(|(t, a)| json!({ "token": t, "amount": a, "expiration": 0, "nonce": 0 }))
        .collect();
    let (primary, ty, details) = if details.len() == 1 {
        ("PermitSingle", "PermitDetails", details[0].clone())
    } else {
        ("PermitBatch", "PermitDetails[]", json!(details))
    };
    json!({
        "types": {
            "EIP712Domain": [{"name": "name", "type": "string"}, {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"}],
            "PermitDetails": [{"name": "token", "type": "address"}, {"name": "amount", "type": "uint160"},
                {"name": "expiration", "type": "uint48"}, {"name": "nonce", "type": "uint48"}],
            primary: [{"name": "details", "type": ty}, {"name": "spender", "type": "address"},
                {"name": "sigDeadline", "type": "uint256"}],
        },
        "primaryType": primary,
        "domain": { "name": "Permit2", "chainId": 1, "verifyingContract": PERMIT2 },
        "message": { "details": details, "spender": SPENDER, "sigDeadline": 1 },
    })
}

fn mail(contract: &str, primary: &str) -> Value {
    json!({
        "types": { "EIP712Domain": domain_types(),
            "Person": [{"name": "name", "type": "string"}, {"name": "wallet", "type": "address"}],
            primary: [{"name": "from", "type": "Person"}, {"name": "to", "type": "Person"}, {"name": "contents", "type": "string"}] },
        "primaryType": primary,
        "domain": { "name": "Ether Mail", "version": "1", "chainId": 1, "verifyingContract": contract },
        "message": { "from": {"name": "Cow", "wallet": "0xCD2a3d9F938E13CD947Ec05AbC7FE734Df8DD826"},
            "to": {"name": "Bob", "wallet": "0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB"}, "contents": "Hello, Bob!" },
    })
}

fn typed(wallet: &str, data: Value) -> Value {
    json!({ "wallet_id": wallet, "payload": { "type": "typed_data", "data": data } })
}

fn token_scope(t: &str) -> String {
    format!("chain:ethereum:token:{}", t.to_ascii_lowercase())
}

fn approve_tx(token: &str, amount_hex: &str) -> Value {
    json!({ "type": "transaction", "tx": { "chain_id": 1, "nonce": 0, "to": token, "gas_limit": 60000,
        "max_fee_per_gas": "0", "max_priority_fee_per_gas": "0",
        "data": format!("0x095ea7b3{:0>64}{:0>64}", &SPENDER[2..].to_ascii_lowercase(), amount_hex) } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_granting_typed_data_is_judged_like_the_approval_it_authorises() {
    let env = Env::new(policy()).await;
    let w = env.create("ethereum", "ops").await;
    let (id, me) = (w["id"].as_str().unwrap(), w["address"].as_str().unwrap());
    let max_hex = "f".repeat(64);
    let denied: Vec<(&str, Value, &str)> = vec![
        (
            "EIP-2612, unlisted token",
            typed(id, permit(DAI, me, "1")),
            "token",
        ),
        (
            "EIP-2612, unlimited",
            typed(id, permit(USDC, me, MAX)),
            "per_tx_max",
        ),
        (
            "EIP-2612, over per_tx_max",
            typed(id, permit(USDC, me, "1001")),
            "per_tx_max",
        ),
        (
            "DAI, allowed=true",
            typed(id, dai_permit(USDC, me, true)),
            "per_tx_max",
        ),
        (
            "DAI, unlisted token",
            typed(id, dai_permit(DAI, me, false)),
            "token",
        ),
        (
            "Permit2, unlisted token",
            typed(id, permit2(&[(DAI, "1")])),
            "token",
        ),
        (
            "Permit2, 2^160-1",
            typed(
                id,
                permit2(&[(USDC, "1461501637330902918203684832716283019655932542975")]),
            ),
            "per_tx_max",
        ),
        (
            "Permit2, two tokens",
            typed(id, permit2(&[(USDC, "1"), (USDC, "2")])),
            "typed_data",
        ),
        (
            "unknown permit shape",
            typed(id, mail(USDC, "PermitForAll")),
            "typed_data",
        ),
        (
            "opaque, unlisted domain",
            typed(id, mail(USDC, "Mail")),
            "typed_data",
        ),
        (
            "approve 2^256-1",
            json!({ "wallet_id": id, "payload": approve_tx(USDC, &max_hex) }),
            "per_tx_max",
        ),
        (
            "approve 2^128",
            json!({ "wallet_id": id, "payload": approve_tx(USDC, &format!("1{}", "0".repeat(32))) }),
            "per_tx_max",
        ),
    ];
    for (what, body, reason) in &denied {
        let (s, r) = env.post("/wallet/sign", body.clone()).await;
        assert_eq!(
            (s, r["detail"]["reason"].as_str()),
            (403, Some(*reason)),
            "{what}: {r}"
        );
    }
    let denies = env.receipts("wallet.deny").await;
    assert_eq!(
        denies.len(),
        denied.len(),
        "one deny receipt each: {denies:?}"
    );
    // The unlimited allowances are recorded with their exact amount.
    let amounts: Vec<&str> = denies
        .iter()
        .filter_map(|d| d["effect"]["amount"].as_str())
        .collect();
    assert_eq!(
        amounts.iter().filter(|a| **a == MAX).count(),
        3,
        "{amounts:?}"
    );
    assert_eq!(env.spent(&token_scope(USDC)), 0);

    // Within the token's limits a permit signs and is charged on the token's counter.
    let (s, r) = env
        .post("/wallet/sign", typed(id, permit(USDC, me, "100")))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (r["kind"].as_str(), r["amount"].as_str()),
        (Some("erc20_permit"), Some("100"))
    );
    assert_eq!(r["token"], USDC.to_ascii_lowercase());
    assert_eq!(r["to"], SPENDER.to_ascii_lowercase());
    let (s, r) = env
        .post("/wallet/sign", typed(id, permit2(&[(USDC, "50")])))
        .await;
    assert_eq!((s, r["kind"].as_str()), (200, Some("permit2")), "{r}");
    let (s, r) = env
        .post("/wallet/sign", typed(id, dai_permit(USDC, me, false)))
        .await;
    assert_eq!(
        (s, r["amount"].as_str()),
        (200, Some("0")),
        "a revocation: {r}"
    );
    assert_eq!(env.spent(&token_scope(USDC)), 150);
    assert_eq!(env.spent("chain:ethereum:native"), 0);

    // Above the token's threshold a person approves, and is told it is a permit of USDC.
    let (s, r) = env
        .post("/wallet/sign", typed(id, permit(USDC, me, "600")))
        .await;
    assert_eq!(
        (s, r["detail"]["kind"].as_str()),
        (403, Some("approval_required")),
        "{r}"
    );
    let words = r["detail"]["ticket"]["effect"].to_string();
    for part in [
        "PERMIT (EIP-2612",
        &USDC.to_ascii_lowercase(),
        "up to 600 base units",
        &SPENDER.to_ascii_lowercase(),
    ] {
        assert!(words.contains(part), "{part:?} missing in {words}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opaque_typed_data_signs_only_for_a_listed_domain_and_type() {
    let cc = "0xCcCCccccCCCCcCCCCCCcCcCccCcCCCcCcccccccC";
    let mut p = policy();
    // A recipient allowlist that does not name the contract does not matter for typed data.
    p["chains"]["ethereum"]["recipient_allowlist"] = json!([BOB, SPENDER]);
    p["chains"]["ethereum"]["typed_data"] = json!([{ "chain_id": 1, "verifying_contract": cc.to_ascii_lowercase(), "primary_types": ["Mail"] }]);
    let env = Env::new(p.clone()).await;
    let id = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, r) = env.post("/wallet/sign", typed(&id, mail(cc, "Mail"))).await;
    assert_eq!(s, 200, "{r}");
    // The published Ether Mail digest: the domain rule changes nothing in what is signed.
    assert_eq!(
        r["digest"],
        "0xbe609aee343fb3c4b28e1df9e632fca64fcfaede20f02e86244efddf30957bd2"
    );
    let mut no_contract = mail(cc, "Mail");
    no_contract["domain"]
        .as_object_mut()
        .unwrap()
        .remove("verifyingContract");
    no_contract["types"]["EIP712Domain"]
        .as_array_mut()
        .unwrap()
        .pop();
    let mut other_chain = mail(cc, "Mail");
    other_chain["domain"]["chainId"] = json!(5);
    for (what, data, reason) in [
        (
            "another type of the domain",
            mail(cc, "Letter"),
            "typed_data",
        ),
        ("another contract", mail(BOB, "Mail"), "typed_data"),
        ("no verifying contract", no_contract, "typed_data"),
        ("another chain id", other_chain, "chain_id"),
    ] {
        let (s, r) = env.post("/wallet/sign", typed(&id, data)).await;
        assert_eq!(
            (s, r["detail"]["reason"].as_str()),
            (403, Some(reason)),
            "{what}: {r}"
        );
    }
    // With `primary_types` null, any type of the domain; a listed domain never allows a permit.
    p["chains"]["ethereum"]["typed_data"][0]["primary_types"] = Value::Null;
    p["chains"]["ethereum"]["typed_data"]
        .as_array_mut()
        .unwrap()
        .push(json!({ "chain_id": 1, "verifying_contract": DAI, "primary_types": null }));
    env.write_policy(&p);
    let (s, r) = env
        .post("/wallet/sign", typed(&id, mail(cc, "Letter")))
        .await;
    assert_eq!(s, 200, "{r}");
    let (s, r) = env
        .post("/wallet/sign", typed(&id, permit(DAI, BOB, "1")))
        .await;
    assert_eq!(
        (s, r["detail"]["reason"].as_str()),
        (403, Some("token")),
        "{r}"
    );
    assert_eq!(env.receipts("wallet.sign").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approval_words_name_kind_token_amount_and_counterparty() {
    let mut p = policy();
    p["chains"]["ethereum"]["approval_threshold"] = json!("100000000000000000");
    let env = Env::new(p).await;
    let id = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let words = |r: &Value| {
        assert_eq!(r["detail"]["kind"], "approval_required", "{r}");
        r["detail"]["ticket"]["effect"][0]
            .as_str()
            .unwrap()
            .to_string()
    };
    let mut send = paid_eth_send(&id, "900", 0);
    send["token"] = json!(USDC);
    send["to"] = json!(BOB);
    send["gas_limit"] = json!(60000);
    let (_, r) = env.post("/wallet/send", send).await;
    let t = words(&r);
    for part in [
        "ERC-20 TRANSFER of 900 base units",
        &USDC.to_ascii_lowercase(),
        &format!("to {BOB}"),
        "on chain id 1, max fee 0.0018 ETH",
        "token amounts are raw integers",
    ] {
        assert!(t.contains(part), "{part:?} missing in {t}");
    }
    assert!(!t.contains("900 wei"), "{t}");
    let (_, r) = env
        .post(
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": approve_tx(USDC, "3e8") }),
        )
        .await;
    let t = words(&r);
    assert!(
        t.contains("ERC-20 APPROVE")
            && t.contains("spender 0x000000000000000000000000000000000000dead")
            && t.contains("up to 1000 base units"),
        "{t}"
    );
    let (_, r) = env
        .post("/wallet/send", paid_eth_send(&id, "200000000000000000", 1))
        .await;
    let t = words(&r);
    assert!(
        t.contains("TRANSFER 200000000000000000 wei (0.2 ETH)")
            && t.contains(&format!("to {BOB}"))
            && t.contains("on chain id 1, max fee 0.00063 ETH; from wallet 0x")
            && t.ends_with("; label \"ops\""),
        "{t}"
    );
    // The error the agent reads carries the same words.
    assert!(r["error"].as_str().unwrap().contains("0.2 ETH"), "{r}");
}

/// A ticket a person approved for the typed data `data` (above the token's threshold), with
/// the words they read.
async fn approved(env: &Env, id: &str, data: Value) -> (String, String, Value) {
    let (s, r) = env.post("/wallet/sign", typed(id, data)).await;
    assert_eq!(
        (s, r["detail"]["kind"].as_str()),
        (403, Some("approval_required")),
        "{r}"
    );
    let t = &r["detail"]["ticket"];
    let ticket = t["id"].as_str().unwrap().to_string();
    let words = t["effect"][0].as_str().unwrap().to_string();
    let (s, a) = env.human(&format!("/approval/{ticket}/approve")).await;
    assert_eq!(s, 200, "{a}");
    (ticket, words, t["operation"].clone())
}

fn with_approval(id: &str, data: Value, ticket: &str) -> Value {
    let mut b = typed(id, data);
    b["approval"] = json!(ticket);
    b
}

/// others-8: a permit is a bearer instrument until its deadline, so the deadline (and a
/// Permit2 allowance's expiration) is in the words the person approves and in the operation
/// the ticket is bound to: the same ticket does not sign the permit with a later deadline or
/// a longer allowance, nor a transaction with another nonce, and still signs the approved one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_permits_deadline_is_in_its_words_and_bound_to_its_ticket() {
    let mut p = policy();
    p["chains"]["ethereum"]["approval_threshold"] = json!("0");
    let env = Env::new(p).await;
    let w = env.create("ethereum", "ops").await;
    let (id, me) = (w["id"].as_str().unwrap(), w["address"].as_str().unwrap());
    let dec1 = "1764547200"; // 2025-12-01T00:00:00Z
    let (ticket, words, op) = approved(&env, id, permit_until(USDC, me, "600", dec1)).await;
    assert!(
        words.contains("usable until 2025-12-01T00:00:00Z; from wallet"),
        "{words}"
    );
    assert_eq!(op["signature_until"], dec1, "{op}");
    assert!(op["signed"].as_str().is_some_and(|d| d.len() == 66), "{op}");
    for later in [MAX, "1764547201"] {
        let (s, r) = env
            .post(
                "/wallet/sign",
                with_approval(id, permit_until(USDC, me, "600", later), &ticket),
            )
            .await;
        assert_eq!(s, 403, "deadline {later}: {r}");
        assert!(
            r["error"].as_str().unwrap().contains("different operation"),
            "{r}"
        );
    }
    assert_eq!(
        env.spent(&token_scope(USDC)),
        0,
        "nothing signed or charged"
    );
    let (s, r) = env
        .post(
            "/wallet/sign",
            with_approval(id, permit_until(USDC, me, "600", dec1), &ticket),
        )
        .await;
    assert_eq!(s, 200, "the approved permit signs: {r}");
    assert_eq!(env.spent(&token_scope(USDC)), 600);

    // DAI's expiry 0 never expires, and the words say so.
    let mut dai = dai_permit(USDC, me, false);
    dai["message"]["expiry"] = json!(0);
    let (s, r) = env.post("/wallet/sign", typed(id, dai)).await;
    assert_eq!(s, 200, "a revocation needs no ticket: {r}");
    let mut p2 = permit2(&[(USDC, "700")]);
    p2["message"]["details"]["expiration"] = json!(1_800_000_000u64);
    p2["message"]["sigDeadline"] = json!(1_764_547_200u64);
    let (ticket, words, op) = approved(&env, id, p2.clone()).await;
    assert!(
        words.contains(
            ", allowance until 2027-01-15T08:00:00Z, usable until 2025-12-01T00:00:00Z; from wallet"
        ),
        "{words}"
    );
    assert_eq!(
        (
            op["allowance_until"].as_str(),
            op["signature_until"].as_str()
        ),
        (Some("1800000000"), Some("1764547200")),
        "{op}"
    );
    // A longer allowance, or one that ends at the block of use, is another operation.
    for expiration in [json!(281_474_976_710_655u64), json!(0)] {
        let mut other = p2.clone();
        other["message"]["details"]["expiration"] = expiration.clone();
        let (s, r) = env
            .post("/wallet/sign", with_approval(id, other, &ticket))
            .await;
        assert_eq!(s, 403, "expiration {expiration}: {r}");
    }
    // The nonce too: the words need not show it (it orders the permit among the wallet's), but
    // the ticket covers the exact message.
    let mut other = p2.clone();
    other["message"]["details"]["nonce"] = json!(1);
    let (s, r) = env
        .post("/wallet/sign", with_approval(id, other, &ticket))
        .await;
    assert_eq!(s, 403, "another nonce: {r}");
    let (s, r) = env
        .post("/wallet/sign", with_approval(id, p2, &ticket))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(env.spent(&token_scope(USDC)), 1300);

    // A permit without its deadline or expiration is refused: keyd cannot say how long it lasts.
    let mut no_deadline = permit(USDC, me, "1");
    no_deadline["types"]["Permit"].as_array_mut().unwrap().pop();
    no_deadline["message"]
        .as_object_mut()
        .unwrap()
        .remove("deadline");
    let mut no_expiration = permit2(&[(USDC, "1")]);
    no_expiration["types"]["PermitDetails"][2] = json!({"name": "validUntil", "type": "uint48"});
    no_expiration["message"]["details"]
        .as_object_mut()
        .unwrap()
        .remove("expiration");
    no_expiration["message"]["details"]["validUntil"] = json!(0);
    for (what, data, missing) in [
        ("EIP-2612", no_deadline, "deadline"),
        ("Permit2", no_expiration, "expiration"),
    ] {
        let (s, r) = env.post("/wallet/sign", typed(id, data)).await;
        assert_eq!(
            (s, r["detail"]["reason"].as_str()),
            (403, Some("typed_data")),
            "{what}: {r}"
        );
        assert!(r["error"].as_str().unwrap().contains(missing), "{r}");
    }

    // A transaction's ticket is bound to its nonce.
    let mut send = paid_eth_send(id, "2", 5);
    send["to"] = json!(BOB);
    let (s, r) = env.post("/wallet/send", send.clone()).await;
    assert_eq!(s, 403, "{r}");
    assert_eq!(r["detail"]["ticket"]["operation"]["nonce"], 5, "{r}");
    let ticket = r["detail"]["ticket"]["id"].as_str().unwrap().to_string();
    let (s, _) = env.human(&format!("/approval/{ticket}/approve")).await;
    assert_eq!(s, 200);
    send["approval"] = json!(ticket);
    let mut later = send.clone();
    later["nonce"] = json!(6);
    let (s, r) = env.post("/wallet/send", later).await;
    assert_eq!(s, 403, "another nonce: {r}");
    let (s, r) = env.post("/wallet/send", send).await;
    assert_eq!(s, 200, "{r}");
}
