//! Issue 11's error-text audit for osmoda-watch: every refusal of its API is driven against the
//! real daemon (its binary, with a real agentd and tree), and its body must have the one shape:
//! `{error, detail}`, `error` a sentence naming what was wrong (each row's needles) and what to
//! do where there is something to do, `detail` null or an object; no empty body, no Debug dump,
//! no internal error, none of watch's own paths (state dir, etc dir).
#![allow(clippy::unwrap_used)]

mod common;

use common::Env;
use osmoda_client::Method;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_says_what_was_wrong_in_one_shape() {
    let env = Env::new().await;
    let w = env.spawn(None);
    let private = [
        env.state_dir.display().to_string(),
        env.etc_dir.display().to_string(),
    ];
    let check = json!({"type": "disk", "path": "/", "min_free_percent": 0});
    let rows: Vec<(Method, &str, Option<Value>, u16, Vec<&str>)> = vec![
        (
            Method::GET,
            "/no/such/route",
            None,
            404,
            vec!["no such route"],
        ),
        (
            Method::GET,
            "/switch/begin",
            None,
            405,
            vec!["GET", "/switch/begin"],
        ),
        (
            Method::POST,
            "/switch/begin",
            Some(json!("text")),
            400,
            vec!["invalid JSON body", "expected a JSON object"],
        ),
        (
            Method::POST,
            "/switch/begin",
            Some(json!({"bogus": 1})),
            400,
            vec!["unknown field `bogus`", "`ttl_secs`"],
        ),
        (
            Method::POST,
            "/switch/begin",
            Some(json!({"ttl_secs": 0})),
            400,
            vec!["ttl_secs"],
        ),
        (
            Method::POST,
            "/switch/begin",
            Some(json!({"ttl_secs": "ten"})),
            400,
            vec!["ttl_secs", "expected a non-negative integer"],
        ),
        (
            Method::POST,
            "/switch/begin",
            Some(json!({"generation": "nothere"})),
            400,
            vec!["unknown generation \"nothere\"", "agentctl config log"],
        ),
        (
            Method::POST,
            "/switch/begin",
            Some(json!({"health_checks": [{"type": "htp"}]})),
            400,
            vec!["unknown variant `htp`", "`http`"],
        ),
        (
            Method::POST,
            "/switch/begin",
            Some(json!({"plan": "p".repeat(5000)})),
            400,
            vec!["plan", "4096"],
        ),
        (Method::GET, "/switch/status/abc", None, 400, vec!["abc"]),
        (Method::GET, "/switch/status/999", None, 404, vec!["999"]),
        (Method::POST, "/switch/commit/999", None, 404, vec!["999"]),
        (Method::POST, "/switch/rollback/999", None, 404, vec!["999"]),
        (
            Method::POST,
            "/switch/rollback/1",
            Some(json!({"why": "x"})),
            400,
            vec!["why"],
        ),
        (
            Method::GET,
            "/switch/history?limit=0",
            None,
            400,
            vec!["limit"],
        ),
        (
            Method::GET,
            "/switch/history?after=3",
            None,
            400,
            vec!["invalid query string", "unknown field `after`"],
        ),
        (
            Method::GET,
            "/switch/preview?generation=nothere",
            None,
            400,
            vec!["unknown generation \"nothere\""],
        ),
        (
            Method::GET,
            "/switch/preview?gen=1",
            None,
            400,
            vec!["unknown field `gen`", "`generation`"],
        ),
        (
            Method::POST,
            "/watcher/add",
            Some(json!({"name": "x"})),
            400,
            vec!["missing field `check`"],
        ),
        (
            Method::POST,
            "/watcher/add",
            Some(
                json!({"name": "bad name!", "check": check, "interval_secs": 5, "actions": ["notify"]}),
            ),
            400,
            vec!["name"],
        ),
        (
            Method::POST,
            "/watcher/add",
            Some(json!({"name": "x", "check": check, "interval_secs": 5, "actions": ["explode"]})),
            400,
            vec!["explode"],
        ),
        (
            Method::GET,
            "/watcher/list?limit=x",
            None,
            400,
            vec!["limit", "invalid digit"],
        ),
        (
            Method::DELETE,
            "/watcher/remove/nothere",
            None,
            404,
            vec!["nothere"],
        ),
    ];
    let audit = std::env::var("OSMODA_PRINT_ERRORS").is_ok();
    let mut failures = Vec::new();
    let head = env.tree.head().unwrap();
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
        if r.status != *status {
            failures.push(format!(
                "{what}: status {} (wanted {status}): {}",
                r.status, r.body
            ));
            continue;
        }
        let Some(obj) = r.body.as_object() else {
            failures.push(format!("{what}: not a JSON object: {}", r.body));
            continue;
        };
        let mut keys: Vec<&String> = obj.keys().collect();
        keys.sort();
        let error = obj.get("error").and_then(Value::as_str).unwrap_or_default();
        let text = r.body.to_string();
        if keys != ["detail", "error"] || error.len() < 12 {
            failures.push(format!(
                "{what}: not {{error, detail}} with a sentence: {}",
                r.body
            ));
        }
        if !(obj["detail"].is_null() || obj["detail"].is_object()) {
            failures.push(format!(
                "{what}: detail is neither null nor an object: {}",
                r.body
            ));
        }
        for debug in [
            "Some(",
            "None)",
            "Os {",
            "kind: ",
            "Error {",
            "struct ",
            "Failed to deserialize",
            "internal error",
            "panicked",
        ] {
            if text.contains(debug) {
                failures.push(format!(
                    "{what}: a Debug dump or internal error ({debug}): {}",
                    r.body
                ));
            }
        }
        for p in &private {
            if text.contains(p.as_str()) {
                failures.push(format!("{what}: names watch's own path {p}: {}", r.body));
            }
        }
        for n in needles {
            if !error.contains(n) {
                failures.push(format!("{what}: {error:?} does not name {n:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    assert_eq!(
        env.tree.head().unwrap(),
        head,
        "a refusal recorded a generation"
    );
    w.stop();
}
