//! `GET /switch/history` and `GET /watcher/list` are paged: newest first / name order, `limit`
//! bounded with a clear 400, and the `x-next-cursor` header naming where the next page starts.
#![allow(clippy::unwrap_used)]

mod common;

use common::Env;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// `GET path` on a fresh connection: status, the `x-next-cursor` header, body.
async fn get(env: &Env, path: &str) -> (u16, Option<String>, Value) {
    let mut s = tokio::net::UnixStream::connect(&env.socket).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head[9..12].parse().unwrap();
    let cursor = head
        .lines()
        .find_map(|l| l.strip_prefix("x-next-cursor: "))
        .map(str::to_string);
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "{head}"
    );
    (status, cursor, serde_json::from_str(body).unwrap())
}

fn ids(v: &Value) -> Vec<u64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_history_is_paged_newest_first() {
    let env = Env::new().await;
    let w = env.spawn(None);
    for _ in 0..5 {
        let s = env.begin(json!({"ttl_secs": 1})).await;
        env.wait_terminal(s["id"].as_u64().unwrap()).await;
    }
    let (status, cursor, all) = get(&env, "/switch/history").await;
    assert_eq!((status, cursor), (200, None));
    assert_eq!(ids(&all), [5, 4, 3, 2, 1]);

    let (status, cursor, page) = get(&env, "/switch/history?limit=2").await;
    assert_eq!(
        (status, ids(&page), cursor.as_deref()),
        (200, vec![5, 4], Some("4"))
    );
    let (_, cursor, page) = get(&env, "/switch/history?limit=2&before_id=4").await;
    assert_eq!((ids(&page), cursor.as_deref()), (vec![3, 2], Some("2")));
    let (_, cursor, page) = get(&env, "/switch/history?limit=2&before_id=2").await;
    assert_eq!((ids(&page), cursor), (vec![1], None));
    // A full last page still names a cursor; the page after it is empty.
    let (_, cursor, page) = get(&env, "/switch/history?limit=5").await;
    assert_eq!((ids(&page).len(), cursor.as_deref()), (5, Some("1")));
    let (_, cursor, page) = get(&env, "/switch/history?limit=5&before_id=1").await;
    assert_eq!((page, cursor), (json!([]), None));
    let (_, _, page) = get(&env, "/switch/history?before_id=999").await;
    assert_eq!(ids(&page), [5, 4, 3, 2, 1]);

    for (bad, says) in [
        ("limit=0", "limit must be between 1 and 1000, not 0"),
        ("limit=1001", "limit must be between 1 and 1000, not 1001"),
        ("limit=x", "limit"),
        ("limit=-1", "limit"),
        ("before_id=abc", "before_id"),
        ("before_id=-1", "before_id"),
        ("after=3", "after"),
    ] {
        let (status, cursor, v) = get(&env, &format!("/switch/history?{bad}")).await;
        assert_eq!((status, cursor), (400, None), "{bad}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(msg.contains(says), "{bad}: {msg}");
        assert_eq!(v["detail"]["kind"], "bad_request", "{v}");
    }
    w.stop();
}
