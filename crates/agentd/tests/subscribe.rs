//! `GET /events/subscribe`: a long poll from a cursor against a real agentd.

mod common;

use common::Daemon;
use serde_json::{json, Value};

async fn append(d: &Daemon, kind: &str) -> i64 {
    let r = d
        .agent()
        .post(
            "/events/append",
            &json!({ "type": kind, "daemon": "test", "payload": {} }),
        )
        .await
        .expect("append");
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["id"].as_i64().expect("id")
}

async fn subscribe(d: &Daemon, query: &str) -> (u16, Value) {
    let r = d
        .agent()
        .get(&format!("/events/subscribe?{query}"))
        .await
        .expect("subscribe");
    (r.status, r.body)
}

fn ids(batch: &Value) -> Vec<i64> {
    batch["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["id"].as_i64().expect("id"))
        .collect()
}

#[tokio::test]
async fn answers_at_once_with_matches_and_moves_the_cursor_past_the_rest() {
    let d = Daemon::start().await;
    let a = append(&d, "deploy.step.committed").await;
    let _other = append(&d, "noise.read").await;
    let b = append(&d, "deploy.step.rolled-back").await;
    let exact = append(&d, "alert.x.test").await;
    let last = append(&d, "noise.write").await;

    let (s, batch) = subscribe(&d, "after=0&types=deploy.step.*,alert.x.test&wait_secs=0").await;
    assert_eq!(s, 200, "{batch}");
    assert_eq!(ids(&batch), [a, b, exact]);
    assert_eq!(
        batch["cursor"], last,
        "every event up to the tip was considered"
    );

    // A limit cuts the batch; the cursor is its last event, so nothing is lost.
    let (_, first) = subscribe(&d, "after=0&types=deploy.*&limit=1&wait_secs=0").await;
    assert_eq!(ids(&first), [a]);
    assert_eq!(first["cursor"], a);
    let (_, second) = subscribe(&d, &format!("after={a}&types=deploy.*&limit=1&wait_secs=0")).await;
    assert_eq!(ids(&second), [b]);

    // Nothing after the tip: an empty answer after the wait, cursor unchanged.
    let (_, none) = subscribe(&d, &format!("after={last}&wait_secs=0")).await;
    assert_eq!(ids(&none), Vec::<i64>::new());
    assert_eq!(none["cursor"], last);
    d.stop().await;
}

#[tokio::test]
async fn a_waiting_subscriber_wakes_on_the_first_matching_append() {
    let d = Daemon::start().await;
    let before = append(&d, "boot").await;
    let client = d.agent();
    let waiter = tokio::spawn(async move {
        client
            .get(&format!(
                "/events/subscribe?after={before}&types=deploy.*&wait_secs=60"
            ))
            .await
            .expect("subscribe")
    });
    // Non-matching appends do not answer it; the matching one does, long before 60 s.
    let mut appended = Vec::new();
    for _ in 0..3 {
        appended.push(append(&d, "noise").await);
    }
    let hit = append(&d, "deploy.done").await;
    let r = tokio::time::timeout(std::time::Duration::from_secs(20), waiter)
        .await
        .expect("answered well before its wait ended")
        .expect("join");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(ids(&r.body), [hit]);
    assert_eq!(r.body["cursor"], hit);

    // Without `after`: only events from now on.
    let client = d.agent();
    let waiter = tokio::spawn(async move {
        client
            .get("/events/subscribe?wait_secs=60")
            .await
            .expect("subscribe")
    });
    // The subscription starts at the tip it read, which the test cannot observe: keep
    // appending until it answers (polling, bounded by 30 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut last = hit;
    while !waiter.is_finished() && std::time::Instant::now() < deadline {
        last = append(&d, "later").await;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = waiter.await.expect("join");
    assert!(
        ids(&r.body).iter().all(|i| *i > hit && *i <= last),
        "{}",
        r.body
    );
    assert!(!ids(&r.body).is_empty(), "{}", r.body);
    d.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_refused() {
    let d = Daemon::start().await;
    for q in [
        "wait_secs=61",
        "limit=0",
        "limit=1001",
        "after=-1",
        "types=a*b",
        "types=",
        "types=a%7Cb",
        "types=a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q",
        "after=x",
        "unknown=1",
    ] {
        let (s, body) = subscribe(&d, q).await;
        assert_eq!(s, 400, "{q}: {body}");
        assert!(body["error"].is_string(), "{q}: {body}");
    }
    d.stop().await;
}
