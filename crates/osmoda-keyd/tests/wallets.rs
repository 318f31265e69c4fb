//! others-11: keyd holds at most `max_wallets` wallets (`services.osmoda.keyd.maxWallets`), and
//! `/wallet/list` answers in pages like the other list endpoints.
#![allow(clippy::unwrap_used)]

mod common;
#[path = "../../../tests/rust/next_cursor.rs"]
mod cursor;

use std::collections::BTreeSet;
use std::sync::Arc;

use common::*;
use serde_json::{json, Value};

fn config(max_wallets: Value) -> Value {
    json!({ "secret_file": null, "max_wallets": max_wallets,
        "policy": eth_policy("1000", "1000", None) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallets_are_capped_and_listed_in_pages() {
    let env = Env::new(eth_policy("1000", "1000", None)).await;
    env.write_config(config(json!(5)));
    // Eight concurrent creates against a cap of 5: exactly five wallets, five receipts.
    let env = Arc::new(env);
    let mut tasks = Vec::new();
    for i in 0..8 {
        let env = Arc::clone(&env);
        tasks.push(tokio::spawn(async move {
            let chain = if i % 2 == 0 { "ethereum" } else { "solana" };
            env.post(
                "/wallet/create",
                json!({ "chain": chain, "label": format!("w{i}") }),
            )
            .await
        }));
    }
    let mut created = BTreeSet::new();
    let mut refused = 0;
    for t in tasks {
        let (s, r) = t.await.unwrap();
        match s {
            200 => {
                created.insert(r["id"].as_str().unwrap().to_string());
            }
            409 => {
                refused += 1;
                let failures = osmoda_daemon::audit::audit_row(
                    "a create at the cap",
                    (s, &r),
                    409,
                    &["maxWallets is 5", "delete one", "raise maxWallets"],
                    &[env.state_dir().display().to_string()],
                );
                assert!(failures.is_empty(), "{failures:?}");
                assert_eq!(r["detail"]["kind"], "wallet_cap", "{r}");
                let e = r["error"].as_str().unwrap();
                assert!(
                    e.contains("services.osmoda.keyd.maxWallets is 5")
                        && e.contains("no wallet was created"),
                    "{r}"
                );
            }
            _ => panic!("{s} {r}"),
        }
    }
    assert_eq!((created.len(), refused), (5, 3));
    assert_eq!(env.receipts("wallet.create").await.len(), 5);
    // An import at the cap is refused before its KDF runs, like a new key.
    let (s, r) = env
        .post(
            "/wallet/create",
            json!({ "chain": "ethereum", "label": "imported",
                "import": { "format": "keystore_v3", "keystore": pbkdf2_keystore(), "password": "testpassword" } }),
        )
        .await;
    assert_eq!(
        (s, r["detail"]["kind"].as_str()),
        (409, Some("wallet_cap")),
        "{r}"
    );

    // Pages of two: 2 + 2 + 1, in id order, each full page naming its last id as the cursor
    // (body `next` and the `x-next-cursor` header alike); the last page has none.
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    for want in [2, 2, 1] {
        let path = match &after {
            Some(a) => format!("/wallet/list?limit=2&after={a}"),
            None => "/wallet/list?limit=2".to_string(),
        };
        let (s, body) = env.get(&path).await;
        assert_eq!(s, 200, "{body}");
        let page: Vec<String> = body["wallets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(page.len(), want, "{body}");
        let header = cursor::next_cursor(&env.socket(), &path).await;
        if want == 2 {
            assert_eq!(body["next"].as_str(), page.last().map(String::as_str));
            assert_eq!(header.as_deref(), page.last().map(String::as_str));
        } else {
            assert!(body["next"].is_null() && header.is_none(), "{body}");
        }
        seen.extend(page);
        after = body["next"].as_str().map(str::to_string);
    }
    assert_eq!(seen.iter().cloned().collect::<BTreeSet<_>>(), created);
    assert!(seen.windows(2).all(|w| w[0] < w[1]), "id order: {seen:?}");
    // Without a limit one page holds them all (up to 1,000).
    let (s, r) = env.get("/wallet/list").await;
    assert_eq!((s, r["wallets"].as_array().unwrap().len()), (200, 5), "{r}");
    assert!(r["next"].is_null(), "{r}");
    let (_, h) = env.get("/health").await;
    assert_eq!(h["wallets"], 5, "{h}");

    // Bad queries: a JSON 400, nothing listed.
    for q in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "after=..%2Fx",
        "after=w_1&after=w_2",
        "cursor=w_1",
    ] {
        let (s, r) = env.get(&format!("/wallet/list?{q}")).await;
        assert_eq!(
            (s, r["detail"]["kind"].as_str()),
            (400, Some("bad_request")),
            "{q}: {r}"
        );
    }

    // The cap is re-read with the policy: raised, a create passes; lowered below the count,
    // creates are refused and nothing is deleted.
    env.write_config(config(json!(6)));
    env.create("ethereum", "sixth").await;
    env.write_config(config(json!(2)));
    let (s, r) = env
        .post("/wallet/create", json!({ "chain": "solana", "label": "x" }))
        .await;
    assert_eq!(s, 409, "{r}");
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("keyd holds 6 wallets"),
        "{r}"
    );
    let (_, r) = env.get("/wallet/list").await;
    assert_eq!(r["wallets"].as_array().unwrap().len(), 6);
    // A cap out of range makes keyd.json invalid: nothing is created (the cap is unknown).
    for bad in [json!(0), json!(1_000_001), json!(-1)] {
        env.write_config(config(bad.clone()));
        let (s, r) = env
            .post("/wallet/create", json!({ "chain": "solana", "label": "y" }))
            .await;
        assert_eq!(
            (s, r["detail"]["reason"].as_str()),
            (403, Some("config")),
            "{bad}: {r}"
        );
    }
    assert_eq!(env.receipts("wallet.create").await.len(), 6);
}
