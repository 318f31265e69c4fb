//! A person's approval is spent only on an operation keyd signs and charges: room under the
//! limits is held before agentd consumes the ticket, so a send that loses a race for the
//! day's limit is refused *before* the ticket is touched, the ticket stays approved, and the
//! same approval signs once — never twice — when the room is there.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use serde_json::{json, Value};

/// keyd with a 1000-wei day and approvals above 100, a wallet, and a ticket for a 600-wei
/// send approved by the person: `(env, wallet id, approved send body)`.
async fn approved_send() -> (Env, String, Value) {
    let env = Env::new(eth_policy("1000", "1000", Some("100"))).await;
    let id = env.create("ethereum", "ops").await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (s, r) = env.post("/wallet/send", eth_send(&id, "600", 0)).await;
    assert_eq!(s, 403, "{r}");
    let ticket = r["detail"]["ticket"]["id"].as_str().unwrap().to_string();
    let (s, r) = env.human(&format!("/approval/{ticket}/approve")).await;
    assert_eq!(s, 200, "{r}");
    let mut body = eth_send(&id, "600", 0);
    body["approval"] = json!(ticket);
    (env, id, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_refused_for_the_limit_leaves_its_approval_unused() {
    let (env, id, body) = approved_send().await;
    for n in 1..=10 {
        let (s, r) = env.post("/wallet/send", eth_send(&id, "50", n)).await;
        assert_eq!(s, 200, "{r}");
    }
    // 500 spent + 600 > 1000: refused before agentd is asked to consume the ticket.
    let (s, r) = env.post("/wallet/send", body.clone()).await;
    assert_eq!(
        (s, r["detail"]["reason"].as_str()),
        (403, Some("daily_limit")),
        "{r}"
    );
    assert!(
        r["error"]
            .as_str()
            .unwrap()
            .contains("was not used by this attempt"),
        "{r}"
    );
    assert_eq!(env.spent("chain:ethereum:native"), 500);
    // The next UTC day the same approval signs, once.
    env.shift.store(86_400, Ordering::SeqCst);
    let (s, r) = env.post("/wallet/send", body.clone()).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(env.spent("chain:ethereum:native"), 600);
    // Used now: on a day with room again it is refused by agentd.
    env.shift.store(2 * 86_400, Ordering::SeqCst);
    let (s, r) = env.post("/wallet/send", body).await;
    assert_eq!(s, 409, "single use: {r}");
    let sends = env.receipts("wallet.send").await;
    assert_eq!(sends.len(), 11);
    assert_eq!(sends.iter().filter(|r| !r["approval"].is_null()).count(), 1);
}

/// Eight copies of the approved send, started last, race forty 25-wei sends that alone fill
/// the day. Which
/// wins is up to the scheduler; what must hold either way: at most one copy signs, the day
/// never passes its limit, and the approval is used exactly when a copy signed — else it
/// still signs the next day.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_the_limit_an_approval_signs_at_most_once_and_is_never_lost() {
    let (env, id, body) = approved_send().await;
    let env = Arc::new(env);
    let mut tasks = Vec::new();
    for i in 0..48u64 {
        let (env, req) = (
            Arc::clone(&env),
            if i >= 40 {
                body.clone()
            } else {
                eth_send(&id, "25", 100 + i)
            },
        );
        tasks.push(tokio::spawn(async move {
            let (s, r) = env.post("/wallet/send", req).await;
            (i >= 40, s, r)
        }));
    }
    let (mut approved_ok, mut small_ok) = (0, 0u128);
    for t in tasks {
        let (approved, s, r) = tokio::time::timeout(std::time::Duration::from_secs(120), t)
            .await
            .expect("a send answered within 120 s")
            .unwrap();
        match (approved, s) {
            (true, 200) => approved_ok += 1,
            (false, 200) => small_ok += 25,
            // Refused for the limit (before the ticket was touched), or the ticket was
            // already consumed by the copy that signed.
            (true, 403 | 409) | (false, 403) => {
                assert!(
                    s == 409 || r["detail"]["reason"] == "daily_limit",
                    "{s} {r}"
                );
            }
            _ => panic!("{s} {r}"),
        }
    }
    eprintln!("the approved send signed {approved_ok} time(s), small sends {small_ok} wei");
    assert!(approved_ok <= 1, "the approval signed {approved_ok} times");
    let spent = env.spent("chain:ethereum:native");
    assert_eq!(spent, small_ok + 600 * approved_ok);
    assert!(spent <= 1000, "{spent}");
    let sends = env.receipts("wallet.send").await;
    assert_eq!(
        sends.iter().filter(|r| !r["approval"].is_null()).count(),
        approved_ok as usize
    );
    // The approval was used exactly when it signed.
    env.shift.store(86_400, Ordering::SeqCst);
    let (s, r) = env.post("/wallet/send", body).await;
    if approved_ok == 1 {
        assert_eq!(s, 409, "{r}");
    } else {
        assert_eq!(s, 200, "the unused approval signs the next day: {r}");
    }
}
