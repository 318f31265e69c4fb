//! Daily limits hold under 200 concurrent sends, survive a restart, and reset at UTC midnight.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_parallel_sends_never_overspend_and_counters_persist() {
    // Limit 1000, amount 7: exactly floor(1000 / 7) = 142 may be signed.
    let mut policy = eth_policy("1000", "1000", None);
    policy["wallets"] = json!({ "ops": { "daily_limit": "2000", "recipient_allowlist": null } });
    let mut env = Env::new(policy).await;
    let id = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..200u64 {
        let client = osmoda_client::Client::new(env.socket());
        let body = eth_send(&id, "7", n);
        tasks.spawn(async move {
            let r = client.post("/wallet/send", &body).await.unwrap();
            (r.status, r.body)
        });
    }
    let (mut ok, mut denied) = (0, 0);
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            (200, _) => ok += 1,
            (403, b) if b["detail"]["reason"] == "daily_limit" => denied += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!((ok, denied), (142, 58));
    assert_eq!(env.spent("chain:ethereum:native"), 994);
    assert_eq!(env.spent("wallet:ops:native"), 994);
    assert_eq!(env.receipts("wallet.send").await.len(), 142);
    assert_eq!(env.receipts("wallet.deny").await.len(), 58);

    // Restart mid-day: the counters are where they were.
    env.stop_keyd().await;
    env.start_keyd().await;
    assert_eq!(env.spent("chain:ethereum:native"), 994);
    let (s, r) = env.post("/wallet/send", eth_send(&id, "7", 500)).await;
    assert_eq!(
        (s, r["detail"]["reason"].as_str()),
        (403, Some("daily_limit")),
        "{r}"
    );
    let (s, r) = env.post("/wallet/send", eth_send(&id, "6", 501)).await;
    assert_eq!(s, 200, "exactly up to the limit: {r}");
    let (s, _) = env.post("/wallet/send", eth_send(&id, "1", 502)).await;
    assert_eq!(s, 403);

    // A new UTC day starts from zero.
    env.shift.store(86_400, Ordering::SeqCst);
    assert_eq!(env.spent("chain:ethereum:native"), 0);
    let (s, r) = env.post("/wallet/send", eth_send(&id, "1000", 503)).await;
    assert_eq!(s, 200, "{r}");
    let (s, _) = env.post("/wallet/send", eth_send(&id, "1", 504)).await;
    assert_eq!(s, 403);
    // Every signature has exactly one receipt, across the restart (the outbox is delivered by
    // the background task and by this flush alike; agentd deduplicates).
    assert_eq!(env.receipts("wallet.send").await.len(), 144);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wallet_limit_applies_on_top_of_the_chain_limit_and_policy_reloads() {
    let mut policy = eth_policy("1000", "1000", None);
    policy["wallets"] = json!({ "ops": { "daily_limit": "10", "recipient_allowlist": null } });
    let env = Env::new(policy.clone()).await;
    let ops = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let other = env.create("ethereum", "other").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        env.post("/wallet/send", eth_send(&ops, "10", 0)).await.0,
        200
    );
    let (s, r) = env.post("/wallet/send", eth_send(&ops, "1", 1)).await;
    assert_eq!(
        (s, r["detail"]["reason"].as_str()),
        (403, Some("daily_limit")),
        "{r}"
    );
    assert!(
        r["error"].as_str().unwrap().contains("wallet:ops:native"),
        "{r}"
    );
    assert_eq!(
        env.post("/wallet/send", eth_send(&other, "500", 0)).await.0,
        200
    );
    assert_eq!(env.spent("chain:ethereum:native"), 510);

    // A new policy file (as NixOS activation writes it) applies to the next request; a broken
    // one denies everything.
    policy["chains"]["ethereum"]["per_tx_max"] = json!("5");
    policy["chains"]["ethereum"]["daily_limit"] = json!("5000");
    env.write_policy(&policy);
    let (s, r) = env.post("/wallet/send", eth_send(&other, "6", 1)).await;
    assert_eq!(
        (s, r["detail"]["reason"].as_str()),
        (403, Some("per_tx_max")),
        "{r}"
    );
    std::fs::write(env.config(), "{ not json").unwrap();
    let (s, r) = env.post("/wallet/send", eth_send(&other, "1", 1)).await;
    assert_eq!(
        (s, r["detail"]["reason"].as_str()),
        (403, Some("config")),
        "{r}"
    );
    let (_, h) = env.get("/health").await;
    assert_eq!(h["policy"]["loaded"], false, "{h}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erc20_sends_are_judged_and_charged_by_their_tokens_limits() {
    const USDC: &str = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";
    let mut policy = eth_policy("10", "100", None);
    policy["chains"]["ethereum"]["tokens"] = json!({
        USDC: { "per_tx_max": "5000", "daily_limit": "12000", "approval_threshold": null },
    });
    let env = Env::new(policy).await;
    let id = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let send = |amount: &str, nonce: u64, token: &str| {
        let mut b = eth_send(&id, amount, nonce);
        b["token"] = json!(token);
        b["gas_limit"] = json!(65000);
        b
    };
    // 5,000 token units: far above the native per_tx_max of 10, within the token's limits.
    for nonce in 0..2 {
        let (s, r) = env.post("/wallet/send", send("5000", nonce, USDC)).await;
        assert_eq!(s, 200, "{r}");
    }
    let scope = format!("chain:ethereum:token:{}", USDC.to_ascii_lowercase());
    assert_eq!(env.spent(&scope), 10_000);
    assert_eq!(
        env.spent("chain:ethereum:native"),
        0,
        "token units are not wei"
    );
    for (amount, token, reason) in [
        ("5000", USDC, "daily_limit"),
        ("5001", USDC, "per_tx_max"),
        ("1", "0xdAC17F958D2ee523a2206206994597C13D831ec7", "token"),
    ] {
        let (s, r) = env.post("/wallet/send", send(amount, 2, token)).await;
        assert_eq!(
            (s, r["detail"]["reason"].as_str()),
            (403, Some(reason)),
            "{amount} on {token}: {r}"
        );
    }
    assert_eq!(env.spent(&scope), 10_000, "denials charge nothing");
    // The rest of the day's allowance still signs.
    let (s, r) = env.post("/wallet/send", send("2000", 2, USDC)).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(env.spent(&scope), 12_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn maximum_fees_count_against_the_native_limits() {
    // Each paid send costs 10^14 wei + its maximum fee (630,000 gwei) = 730,000 gwei; a daily
    // limit of 2,000,000 gwei admits exactly two of 50 concurrent ones, though the values alone
    // (5 × 10^14) would fit the day twenty times over.
    let cost = 100_000_000_000_000 + ETH_SEND_FEE;
    let daily: u128 = 2_000_000_000_000_000;
    let policy = eth_policy("1000000000000000", &daily.to_string(), None);
    let env = Env::new(policy).await;
    let id = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..50u64 {
        let client = osmoda_client::Client::new(env.socket());
        let body = paid_eth_send(&id, "100000000000000", n);
        tasks.spawn(async move {
            let r = client.post("/wallet/send", &body).await.unwrap();
            (r.status, r.body)
        });
    }
    let mut ok = 0;
    while let Some(r) = tasks.join_next().await {
        match r.unwrap() {
            (200, b) => {
                assert_eq!(b["max_fee"], ETH_SEND_FEE.to_string(), "{b}");
                ok += 1;
            }
            (403, b) if b["detail"]["reason"] == "daily_limit" => {}
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert_eq!(ok, daily / cost);
    assert_eq!(env.spent("chain:ethereum:native"), (daily / cost) * cost);

    // A fee alone can pass per_tx_max: 1 wei of value with a 30 gwei × 40,000,000 gas ceiling.
    let mut huge = paid_eth_send(&id, "1", 99);
    huge["gas_limit"] = json!(40_000_000);
    let (s, r) = env.post("/wallet/send", huge).await;
    assert_eq!(
        (s, r["detail"]["reason"].as_str()),
        (403, Some("per_tx_max")),
        "{r}"
    );
    assert!(r["error"].as_str().unwrap().contains("maximum fee"), "{r}");
    assert_eq!(env.spent("chain:ethereum:native"), (daily / cost) * cost);
}
