//! osmoda-watch's `GET /metrics` (served by the shared listener): switches by final state,
//! watcher checks by result and requests by route, from the real daemon after a real switch.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Env;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn metrics(env: &Env) -> String {
    let mut s = tokio::net::UnixStream::connect(&env.socket).await.unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: w\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out
}

fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_switches_watcher_checks_and_requests() {
    let env = Env::new().await;
    let watched = common::BASE.replace(
        "    enable = true;\n",
        "    enable = true;\n    watch.watchers.web = {\n      check = { type = \"command\"; command = [ \"true\" ]; };\n      intervalSecs = 1;\n    };\n",
    );
    let rev = env.commit(&watched, "watch the web service");
    let w = env.spawn(None);
    let s = env.begin(json!({"generation": rev, "ttl_secs": 1})).await;
    let done = env.wait_terminal(s["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "committed", "{done}");
    let start = Instant::now();
    let text = loop {
        let text = metrics(&env).await;
        if value(&text, r#"osmoda_watcher_checks_total{result="ok"}"#) >= 1.0 {
            break text;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no watcher check counted: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        value(&text, r#"osmoda_switches_total{state="committed"}"#),
        1.0,
        "{text}"
    );
    assert_eq!(
        value(
            &text,
            r#"osmoda_http_requests_total{listener="watch",route="/switch/begin",status="200"}"#
        ),
        1.0,
        "{text}"
    );
    assert!(text.contains("application/openmetrics-text"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
    w.stop();
}
