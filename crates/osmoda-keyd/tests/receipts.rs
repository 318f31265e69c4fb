//! Receipts carry only what keyd checked, and every signature reaches the ledger: an
//! `approval` is recorded only as the ticket keyd had consumed, a caller's long string is cut
//! before it reaches a receipt, and a receipt agentd refuses for good is replaced by a small
//! `receipt.wallet.rejected` naming the signature.

mod common;

use common::*;
use serde_json::{json, Value};

const TO: &str = "4fYNw3dojWmQ4dXtSGE9epjRGy9pFSx62YypT7avPYvA";

fn sol_policy(threshold: Option<&str>) -> Value {
    json!({ "chains": { "solana": { "chain_ids": [], "per_tx_max": "5000000000",
        "daily_limit": "9000000000", "approval_threshold": threshold, "recipient_allowlist": null } },
        "wallets": {} })
}

fn send(id: &str, amount: &str, approval: Option<&str>) -> Value {
    let mut b = json!({ "wallet_id": id, "to": TO, "amount": amount,
        "blockhash": bs58::encode([42u8; 32]).into_string() });
    if let Some(a) = approval {
        b["approval"] = json!(a);
    }
    b
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_is_recorded_only_as_the_ticket_keyd_consumed() {
    let env = Env::new(sol_policy(Some("1000000"))).await;
    let id = env.create("solana", "s").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // Below the threshold a made-up, well-formed ticket id is not needed and not recorded.
    let forged = "b5a228325a36d4c27109f4c609b5ceae";
    let (s, r) = env
        .post("/wallet/send", send(&id, "777", Some(forged)))
        .await;
    assert_eq!(s, 200, "{r}");
    // Anything that is not a ticket id is a 400 and changes nothing, however long.
    for bad in [
        "b5a228325a36d4c27109f4c609b5ceae approved by owner via=relay".to_string(),
        String::new(),
        "a".repeat(65),
        "B".repeat(1_500_000),
    ] {
        let (s, r) = env
            .post("/wallet/send", send(&id, "1", Some(bad.as_str())))
            .await;
        assert_eq!(s, 400, "{r}");
        assert!(
            r["error"].as_str().unwrap().len() < 300,
            "the value is not echoed"
        );
        let (s, _) = env
            .post(
                "/wallet/sign",
                json!({ "wallet_id": id, "approval": bad,
                "payload": { "type": "offchain_message", "message": "hi" } }),
            )
            .await;
        assert_eq!(s, 400);
    }
    // Above it, the consumed ticket is what the receipt names.
    let (_, r) = env.post("/wallet/send", send(&id, "2000000", None)).await;
    let ticket = r["detail"]["ticket"]["id"].as_str().unwrap().to_string();
    env.human(&format!("/approval/{ticket}/approve")).await;
    let (s, r) = env
        .post("/wallet/send", send(&id, "2000000", Some(&ticket)))
        .await;
    assert_eq!(s, 200, "{r}");
    let sends = env.receipts("wallet.send").await;
    let approvals: Vec<&Value> = sends.iter().map(|r| &r["approval"]).collect();
    assert_eq!(approvals, [&Value::Null, &json!(ticket)], "{sends:?}");
    assert_eq!(
        env.spent("chain:solana:native"),
        777 + 2_000_000 + 2 * SOL_FEE
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_caller_string_is_cut_before_it_reaches_a_receipt() {
    let env = Env::new(eth_policy("1000", "5000", None)).await;
    let id = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    // A 30 KB primaryType (typed data keyd cannot judge): denied, and the denial's receipt,
    // which names the type, is cut to size and reaches the ledger.
    let name = "X".repeat(30_000);
    let data = json!({
        "types": { "EIP712Domain": [{"name": "chainId", "type": "uint256"},
            {"name": "verifyingContract", "type": "address"}],
            name.clone(): [{"name": "a", "type": "uint256"}] },
        "primaryType": name,
        "domain": { "chainId": 1, "verifyingContract": BOB },
        "message": { "a": 1 },
    });
    let (s, r) = env
        .post(
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": { "type": "typed_data", "data": data } }),
        )
        .await;
    assert_eq!(
        (s, r["detail"]["reason"].as_str()),
        (403, Some("typed_data")),
        "{}",
        s
    );
    let denies = env.receipts("wallet.deny").await;
    assert_eq!(denies.len(), 1);
    let text = denies[0].to_string();
    assert!(text.len() < 8_000, "{} bytes", text.len());
    assert!(text.contains("truncated, 30000 bytes"), "{text:.300}");
    // Typed data over 64 KiB is not even parsed.
    let big = json!({ "types": { "EIP712Domain": [] }, "primaryType": "M", "domain": {},
        "message": { "pad": "p".repeat(70_000) } });
    let (s, r) = env
        .post(
            "/wallet/sign",
            json!({ "wallet_id": id, "payload": { "type": "typed_data", "data": big } }),
        )
        .await;
    assert_eq!(s, 400, "{r}");
    assert!(
        r["error"].as_str().unwrap().contains("limited to 65536"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receipt_agentd_refuses_is_replaced_by_a_stand_in_in_the_ledger() {
    let env = Env::new(sol_policy(None)).await;
    let id = env.create("solana", "s").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, r) = env.post("/wallet/send", send(&id, "5", None)).await;
    assert_eq!(s, 200, "{r}");
    let sig = r["signature"].as_str().unwrap().to_string();
    env.receipts("wallet.send").await;
    // A receipt agentd cannot take (over its 1 MiB body limit) in the outbox, as a fault
    // (a bug, a database edited by hand) could leave it: keyd itself bounds what it writes.
    let db = rusqlite::Connection::open(env.state_dir().join("keyd.db")).unwrap();
    db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
    let payload =
        json!({ "wallet_id": id, "signature": sig, "amount": "5", "junk": "J".repeat(1_200_000) });
    db.execute(
        "INSERT INTO outbox (kind, payload) VALUES ('wallet.send', ?1)",
        [payload.to_string()],
    )
    .unwrap();
    let rejected = env.receipts("wallet.rejected").await;
    assert_eq!(rejected.len(), 1, "{rejected:?}");
    let r = &rejected[0];
    assert_eq!(r["receipt"], "receipt.wallet.send");
    assert_eq!(
        (
            r["summary"]["signature"].as_str(),
            r["summary"]["amount"].as_str()
        ),
        (Some(sig.as_str()), Some("5"))
    );
    assert!(r["refused"].as_str().unwrap().contains("413"), "{r}");
    assert!(r.get("junk").is_none() && r["summary"].get("junk").is_none());
    // The refused receipt is kept whole in keyd's database; the outbox is empty.
    let kept: i64 = db
        .query_row("SELECT count(*) FROM outbox_rejected", [], |r| r.get(0))
        .unwrap();
    let left: i64 = db
        .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
        .unwrap();
    assert_eq!((kept, left), (1, 0));
    assert_eq!(env.receipts("wallet.send").await.len(), 1);
}

/// Receipts wait while agentd cannot be reached (its socket gone) and arrive once it can, each
/// once and in the order they were made, across a restart of keyd; signing goes on meanwhile,
/// and what needs agentd's tickets (a delete) is refused with nothing changed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_made_while_agentd_is_unreachable_arrive_once_in_order() {
    let mut env = Env::new(sol_policy(None)).await;
    let sock = env.dir.path().join("agentd.sock");
    let away = env.dir.path().join("agentd.sock.away");
    std::fs::rename(&sock, &away).unwrap();
    let id = env.create("solana", "s").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let sign =
        json!({ "wallet_id": id, "payload": { "type": "offchain_message", "message": "hi" } });
    assert_eq!(env.post("/wallet/sign", sign).await.0, 200);
    for amount in ["1", "2", "3"] {
        let (s, r) = env.post("/wallet/send", send(&id, amount, None)).await;
        assert_eq!(s, 200, "{r}");
    }
    let (s, r) = env
        .post("/wallet/send", send(&id, "5000000001", None))
        .await;
    assert_eq!(
        (s, r["detail"]["reason"].as_str()),
        (403, Some("per_tx_max")),
        "{r}"
    );
    let (s, r) = env.post("/wallet/delete", json!({ "wallet_id": id })).await;
    assert_eq!(s, 502, "a delete needs agentd's ticket: {r}");
    let (_, list) = env.get("/wallet/list").await;
    assert_eq!(
        list["wallets"].as_array().unwrap().len(),
        1,
        "nothing deleted"
    );
    assert!(env.keyd.as_ref().unwrap().state.flush().await.is_err());
    // keyd restarts while agentd is still away; then agentd is back.
    env.stop_keyd().await;
    env.start_keyd().await;
    std::fs::rename(&away, &sock).unwrap();
    let created = env.receipts("wallet.create").await;
    let sends: Vec<String> = env
        .receipts("wallet.send")
        .await
        .iter()
        .map(|r| r["amount"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(sends, ["1", "2", "3"], "each once, in order");
    assert_eq!(env.receipts("wallet.sign").await.len(), 1);
    let denied = env.receipts("wallet.deny").await;
    assert_eq!(denied.len(), 1, "{denied:?}");
    assert_eq!(denied[0]["reason"], "per_tx_max");
}
