//! Issue 11's error-text audit for osmoda-keyd: every refusal of its API (routing, bodies,
//! wallets, each payload kind, sends on both chains, the policy's denials, tickets) is driven
//! against a real keyd and agentd, and its body must keep `osmoda_daemon::audit`'s rule: `{error,
//! detail}`, `error` a sentence naming what was wrong (each row's needles) and what to do where
//! there is something to do; no Debug dump or Rust name, no internal error, none of keyd's own
//! paths (state dir, config, socket). Nothing a refusal asked for is signed or charged.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use osmoda_client::Method;
use osmoda_daemon::audit::audit_row;
use serde_json::{json, Value};

type Row = (Method, &'static str, Option<Value>, u16, Vec<&'static str>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_says_what_was_wrong_in_one_shape() {
    let mut policy = eth_policy("1000", "5000", Some("500"));
    policy["chains"]["solana"] = json!({"chain_ids": [], "per_tx_max": "1000000", "daily_limit": "2000000", "approval_threshold": null, "recipient_allowlist": null});
    let env = Env::new(policy).await;
    let eth = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sol = env.create("solana", "sol").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let private = vec![
        env.state_dir().display().to_string(),
        env.config().display().to_string(),
        env.socket().display().to_string(),
    ];
    let sign = |w: &str, payload: Value| Some(json!({"wallet_id": w, "payload": payload}));
    let send = |amount: &str, nonce: u64| Some(eth_send(&eth, amount, nonce));
    let mut no_nonce = eth_send(&eth, "1", 1);
    no_nonce.as_object_mut().unwrap().remove("nonce");
    let tx = |extra: Value| {
        let mut t = json!({"nonce": 1, "to": BOB, "gas_limit": 21000, "max_fee_per_gas": "0", "max_priority_fee_per_gas": "0"});
        for (k, v) in extra.as_object().unwrap() {
            t[k] = v.clone();
        }
        json!({"type": "transaction", "tx": t})
    };
    let rows: Vec<Row> = vec![
        // Routing and bodies.
        (
            Method::GET,
            "/no/such/route",
            None,
            404,
            vec!["no such route GET /no/such/route", "/wallet/list"],
        ),
        (
            Method::GET,
            "/wallet/create",
            None,
            405,
            vec!["GET", "/wallet/create"],
        ),
        // Pages of /wallet/list (others-11).
        (
            Method::GET,
            "/wallet/list?limit=0",
            None,
            400,
            vec!["`limit` 0 must be 1 to 1000"],
        ),
        (
            Method::GET,
            "/wallet/list?after=..%2Fx",
            None,
            400,
            vec!["`after` must be a wallet id"],
        ),
        (
            Method::GET,
            "/wallet/list?cursor=w_1",
            None,
            400,
            vec!["invalid query string", "cursor", "`after`", "`limit`"],
        ),
        (
            Method::POST,
            "/wallet/create",
            Some(json!("text")),
            400,
            vec!["invalid JSON body", "expected a JSON object"],
        ),
        (
            Method::POST,
            "/wallet/create",
            Some(json!({"chain": "solana", "label": "x", "bogus": 1})),
            400,
            vec!["unknown field `bogus`", "`label`"],
        ),
        (
            Method::POST,
            "/wallet/create",
            Some(json!({"label": "x"})),
            400,
            vec!["missing field `chain`"],
        ),
        (
            Method::POST,
            "/wallet/create",
            Some(json!({"chain": "bitcoin", "label": "x"})),
            400,
            vec!["bitcoin", "ethereum", "solana"],
        ),
        (
            Method::POST,
            "/wallet/create",
            Some(json!({"chain": "solana", "label": "bad label!"})),
            400,
            vec!["label", "A-Za-z0-9"],
        ),
        (
            Method::POST,
            "/wallet/create",
            Some(json!({"chain": "solana", "label": "sol"})),
            400,
            vec!["\"sol\" exists", "another label"],
        ),
        (
            Method::POST,
            "/wallet/create",
            Some(
                json!({"chain": "solana", "label": "imp", "import": {"format": "solana_keypair", "keypair": [1, 2, 3]}}),
            ),
            400,
            vec!["keypair", "64"],
        ),
        (
            Method::POST,
            "/wallet/create",
            Some(
                json!({"chain": "ethereum", "label": "imp", "import": {"format": "keystore_v3", "keystore": {"version": 3}, "password": "x"}}),
            ),
            400,
            vec!["keystore"],
        ),
        (
            Method::POST,
            "/wallet/create",
            Some(
                json!({"chain": "ethereum", "label": "imp", "import": {"format": "pem", "key": "x"}}),
            ),
            400,
            // An import's values are never quoted back (they may be key material): the text
            // names the field and what it accepts.
            vec!["`format`", "keystore_v3", "solana_keypair"],
        ),
        // Wallet ids.
        (
            Method::POST,
            "/wallet/sign",
            sign(
                "w_0000000000000000",
                json!({"type": "personal_sign", "message": "x"}),
            ),
            404,
            vec!["w_0000000000000000"],
        ),
        (
            Method::POST,
            "/wallet/sign",
            sign("nothere", json!({"type": "personal_sign", "message": "x"})),
            404,
            vec!["nothere"],
        ),
        (
            Method::POST,
            "/wallet/delete",
            Some(json!({"wallet_id": "w_0000000000000000"})),
            404,
            vec!["w_0000000000000000"],
        ),
        // Payloads.
        (
            Method::POST,
            "/wallet/sign",
            Some(json!({"wallet_id": "x"})),
            400,
            vec!["missing field `payload`"],
        ),
        (
            Method::POST,
            "/wallet/sign",
            sign(&eth, json!({"message": "x"})),
            400,
            vec!["type", "personal_sign"],
        ),
        (
            Method::POST,
            "/wallet/sign",
            sign(&eth, json!({"type": "raw_hash", "hash": "0x00"})),
            400,
            vec!["raw_hash"],
        ),
        (
            Method::POST,
            "/wallet/sign",
            sign(&eth, json!({"type": "personal_sign"})),
            400,
            vec!["message", "message_hex"],
        ),
        (
            Method::POST,
            "/wallet/sign",
            sign(&eth, json!({"type": "personal_sign", "message": 5})),
            400,
            vec!["`payload.message`", "expected a string"],
        ),
        (
            Method::POST,
            "/wallet/sign",
            sign(
                &eth,
                json!({"type": "personal_sign", "message_hex": "0xzz"}),
            ),
            400,
            vec!["message_hex"],
        ),
        (
            Method::POST,
            "/wallet/sign",
            sign(&eth, json!({"type": "typed_data", "data": {"x": 1}})),
            400,
            vec!["EIP-712", "`payload.data`"],
        ),
        (
            Method::POST,
            "/wallet/sign",
            sign(&eth, tx(json!({"nonce": "x"}))),
            400,
            vec!["nonce"],
        ),
        (
            Method::POST,
            "/wallet/sign",
            sign(&eth, tx(json!({"to": "0x12"}))),
            400,
            vec!["to"],
        ),
        (
            Method::POST,
            "/wallet/sign",
            sign(&eth, tx(json!({"data": "0xdeadbeef"}))),
            403,
            vec!["calldata"],
        ),
        (
            Method::POST,
            "/wallet/sign",
            sign(&sol, json!({"type": "solana_message", "message": "!!"})),
            400,
            vec!["message", "base64"],
        ),
        (
            Method::POST,
            "/wallet/sign",
            sign(&sol, json!({"type": "solana_message", "message": "AAAA"})),
            400,
            vec!["`payload.message`", "truncated", "System transfer"],
        ),
        (
            Method::POST,
            "/wallet/sign",
            sign(&eth, json!({"type": "offchain_message", "message": "x"})),
            400,
            vec!["offchain_message", "an Ethereum wallet", "personal_sign"],
        ),
        (
            Method::POST,
            "/wallet/sign",
            sign(&sol, json!({"type": "personal_sign", "message": "x"})),
            400,
            vec!["personal_sign", "a Solana wallet", "offchain_message"],
        ),
        // Sends.
        (
            Method::POST,
            "/wallet/send",
            Some(no_nonce),
            400,
            vec!["nonce", "required"],
        ),
        (
            Method::POST,
            "/wallet/send",
            send("ten", 1),
            400,
            vec!["amount"],
        ),
        (
            Method::POST,
            "/wallet/send",
            send("-1", 1),
            400,
            vec!["amount"],
        ),
        (
            Method::POST,
            "/wallet/send",
            Some(
                json!({"wallet_id": sol, "to": "notbase58!", "amount": "1", "blockhash": "11111111111111111111111111111111"}),
            ),
            400,
            vec!["to"],
        ),
        (
            Method::POST,
            "/wallet/send",
            Some(
                json!({"wallet_id": sol, "to": "11111111111111111111111111111111", "amount": "1"}),
            ),
            400,
            vec!["blockhash"],
        ),
        // The policy's denials and tickets.
        (
            Method::POST,
            "/wallet/send",
            send("2000", 1),
            403,
            vec!["per_tx_max"],
        ),
        (
            Method::POST,
            "/wallet/send",
            Some({
                let mut b = eth_send(&eth, "1", 1);
                b["chain_id"] = json!(5);
                b
            }),
            403,
            vec!["chain", "5"],
        ),
        (
            Method::POST,
            "/wallet/send",
            send("600", 1),
            403,
            vec!["approv"],
        ),
        (
            Method::POST,
            "/wallet/send",
            Some({
                let mut b = eth_send(&eth, "600", 1);
                b["approval"] = json!("nothere");
                b
            }),
            404,
            vec!["nothere"],
        ),
        (
            Method::POST,
            "/wallet/delete",
            Some(json!({"wallet_id": sol})),
            403,
            vec!["approv"],
        ),
    ];
    let audit = std::env::var("OSMODA_PRINT_ERRORS").is_ok();
    let mut failures = Vec::new();
    for (method, path, body, status, needles) in &rows {
        let what = format!(
            "{method} {path} {}",
            body.as_ref().map(Value::to_string).unwrap_or_default()
        );
        let r = env
            .client()
            .request(method.clone(), path, body.as_ref())
            .await
            .unwrap();
        if audit {
            println!("{} {what}\n    → {}", r.status, r.body);
        }
        failures.extend(audit_row(
            &what,
            (r.status, &r.body),
            *status,
            needles,
            &private,
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    // Nothing was signed or charged; the denials are receipts, nothing else is.
    assert_eq!(env.spent("chain:ethereum:native"), 0);
    assert!(env.receipts("wallet.sign").await.is_empty());
    assert!(env.receipts("wallet.send").await.is_empty());
    assert!(env.receipts("wallet.delete").await.is_empty());
}
