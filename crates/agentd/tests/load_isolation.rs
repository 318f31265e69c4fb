//! Load on the agent socket never starves the approval socket, and the work one request may
//! cause is bounded (review of issue 11, findings 7 and 10), against the real daemon on a
//! multi-threaded runtime with two workers, as on the 2-core machines agentd runs on.

mod common;

use std::time::{Duration, Instant};

use common::Daemon;
use serde_json::json;

/// Longest a person's request may take on the approval socket while the agent loads agentd.
const BOUND: Duration = Duration::from_secs(3);

/// Fills the ledger with `n` events of 200 short words each (the review's search corpus).
async fn fill(d: &Daemon, n: usize) {
    let words: Vec<String> = (0..200)
        .map(|i| format!("a{}b{}", i % 37, i % 11))
        .collect();
    let text = words.join(" ");
    let mut batch = tokio::task::JoinSet::new();
    for i in 0..n {
        let ev = osmoda_ledger::NewEvent {
            kind: "note".into(),
            actor: "test".into(),
            payload: json!({ "i": i, "text": text }).to_string(),
            dedup: None,
        };
        let ledger = d.state.ledger.clone();
        batch.spawn(async move { ledger.append(ev).await });
    }
    while let Some(r) = batch.join_next().await {
        r.expect("join").expect("append");
    }
}

/// Times `GET path` on the approval socket `rounds` times and returns the slowest answer.
async fn slowest_human_get(d: &Daemon, path: &str, rounds: usize) -> Duration {
    let h = d.human();
    let mut worst = Duration::ZERO;
    for _ in 0..rounds {
        let t = Instant::now();
        let r = h.get(path).await.expect("human get");
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        worst = worst.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_are_bounded_and_never_starve_the_approval_socket() {
    let d = Daemon::start().await;
    fill(&d, 400).await;
    let c = d.agent();
    // The review's query shapes: hundreds of prefix terms are refused at once, nothing read.
    for n in [17usize, 100, 600, 1000] {
        let q = "a*+".repeat(n);
        let t = Instant::now();
        let r = c
            .get(&format!("/events/search?limit=1&q={q}"))
            .await
            .expect("search");
        assert_eq!(r.status, 400, "{n} terms: {}", r.body);
        assert!(
            r.body["error"]
                .as_str()
                .unwrap_or("")
                .contains("at most 16"),
            "{}",
            r.body
        );
        assert!(t.elapsed() < BOUND, "{n} terms took {:?}", t.elapsed());
    }
    // Sixteen terms are searched.
    let q = (0..16)
        .map(|i| format!("a{i}*"))
        .collect::<Vec<_>>()
        .join("+");
    let r = c
        .get(&format!("/events/search?limit=5&q={q}"))
        .await
        .expect("search");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body.as_array().map(Vec::len), Some(5));
    // Four agents searching (and reading the log) in a loop on both workers: the approval
    // socket's /health and /approvals answer within the bound throughout.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for k in 0..4 {
        let (c, stop, q) = (d.agent(), stop.clone(), q.clone());
        load.push(tokio::spawn(async move {
            let mut done = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let path = if k % 2 == 0 {
                    format!("/events/search?limit=1000&q={q}")
                } else {
                    "/events/log?limit=10000".to_string()
                };
                let r = c.get(&path).await.expect("agent get");
                assert_eq!(r.status, 200, "{path}: {}", r.body);
                done += 1;
            }
            done
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let health = slowest_human_get(&d, "/health", 20).await;
    let listing = slowest_human_get(&d, "/approvals?limit=1", 10).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut requests = 0;
    for l in load {
        requests += l.await.expect("load task");
    }
    assert!(requests >= 4, "the load did not run ({requests} requests)");
    assert!(
        health < BOUND,
        "approval /health took {health:?} under load"
    );
    assert!(
        listing < BOUND,
        "approval /approvals took {listing:?} under load"
    );
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tickets_are_bounded_in_size_and_number_and_listing_copies_one_page() {
    let d = Daemon::start().await;
    let c = d.agent();
    // The review's tickets: operations of 1,000,000 bytes are refused (413) and nothing is
    // recorded.
    let before = d.state.ledger.head().expect("head").events;
    for i in 0..5 {
        let r = c
            .post(
                "/approval/request",
                &json!({ "operation": { "n": i, "blob": "x".repeat(1_000_000) }, "detail": "d" }),
            )
            .await
            .expect("request");
        assert_eq!(r.status, 413, "{}", r.body);
    }
    assert_eq!(d.state.ledger.head().expect("head").events, before);
    // A caller may hold 64 open tickets; the 65th is refused until one closes.
    let max = agentd::api::approvals::MAX_OPEN_PER_UID;
    let mut ids = Vec::new();
    for i in 0..max {
        let r = c
            .post(
                "/approval/request",
                &json!({ "operation": { "n": i, "blob": "x".repeat(15_000) }, "detail": "d" }),
            )
            .await
            .expect("request");
        assert_eq!(r.status, 200, "{}", r.body);
        ids.push(r.body["id"].as_str().expect("id").to_string());
    }
    let op = |i: usize| json!({ "n": i, "blob": "x".repeat(15_000) });
    let r = c
        .post(
            "/approval/request",
            &json!({ "operation": op(max), "detail": "d" }),
        )
        .await
        .expect("request");
    assert_eq!(r.status, 429, "{}", r.body);
    // A person decides one, the agent uses it: it closes (status kept, operation dropped), and
    // the agent may open another.
    let h = d.human();
    let r = h
        .post(&format!("/approval/{}/approve", ids[0]), &json!({}))
        .await
        .expect("approve");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c
        .post(
            "/approval/check",
            &json!({ "id": ids[0], "operation": op(0) }),
        )
        .await
        .expect("check");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = c
        .post(
            "/approval/check",
            &json!({ "id": ids[0], "operation": op(0) }),
        )
        .await
        .expect("check again");
    assert_eq!(r.status, 409, "a used ticket: {}", r.body);
    let r = c
        .post(
            "/approval/request",
            &json!({ "operation": op(max), "detail": "d" }),
        )
        .await
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
    // Eight agents list everything in a loop; the person's one-ticket page answers within the
    // bound and is one ticket long.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (c, stop) = (d.agent(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = c.get("/approvals?limit=1000").await.expect("list");
                assert_eq!(r.status, 200);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = Instant::now();
    let r = h.get("/approvals?limit=1").await.expect("human list");
    let took = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for l in load {
        l.await.expect("load task");
    }
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_array().map(Vec::len), Some(1));
    assert!(took < BOUND, "the person's listing took {took:?}");
    // Paging walks from the cursor: all 66 tickets, each once, in id order.
    let mut seen = Vec::new();
    let mut after = String::new();
    loop {
        let path = if after.is_empty() {
            "/approvals?limit=10".to_string()
        } else {
            format!("/approvals?limit=10&after_id={after}")
        };
        let r = h.get(&path).await.expect("page");
        let page = r.body.as_array().cloned().unwrap_or_default();
        seen.extend(
            page.iter()
                .map(|t| t["id"].as_str().unwrap_or("").to_string()),
        );
        match seen.last() {
            Some(last) if page.len() == 10 => after = last.clone(),
            _ => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!((seen.len(), &seen), (max + 1, &sorted));
    let used = seen
        .iter()
        .position(|id| *id == ids[0])
        .expect("used ticket listed");
    let r = h
        .get(&format!(
            "/approvals?limit=1&after_id={}",
            if used == 0 { "" } else { &seen[used - 1] }
        ))
        .await
        .expect("used page");
    assert_eq!(r.body[0]["status"], "used", "{}", r.body);
    assert_eq!(r.body[0]["operation"], serde_json::Value::Null);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_tickets_close_and_free_their_requesters_share() {
    let d = Daemon::start_with(agentd::Settings {
        approval_ttl: Duration::from_secs(1),
        ..Default::default()
    })
    .await;
    let c = d.agent();
    let max = agentd::api::approvals::MAX_OPEN_PER_UID;
    for i in 0..max {
        let r = c
            .post(
                "/approval/request",
                &json!({ "operation": { "n": i }, "detail": "d" }),
            )
            .await
            .expect("request");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    // The TTL is wall-clock seconds (tickets store their expiry as a Unix time).
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = c
        .post(
            "/approval/request",
            &json!({ "operation": { "n": max }, "detail": "d" }),
        )
        .await
        .expect("request");
    assert_eq!(r.status, 200, "{}", r.body);
    let r = d.human().get("/approvals?limit=1000").await.expect("list");
    let list = r.body.as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), max + 1);
    assert_eq!(
        list.iter().filter(|t| t["status"] == "expired").count(),
        max,
        "{}",
        r.body
    );
    d.stop().await;
}
