//! Webhooks: a valid signature runs the routine; a bad signature, a stale timestamp and a
//! replayed request are refused (401/409) and run nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::{options, scratch, write_config, Agentd, Routines};
use osmoda_routines::api::webhook::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use serde_json::{json, Value};

async fn post(
    r: &Routines,
    path: &str,
    ts: &str,
    sig: Option<String>,
    body: &[u8],
) -> (u16, Value) {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{TIMESTAMP_HEADER}: {ts}\r\n",
        body.len()
    );
    if let Some(s) = sig {
        req.push_str(&format!("{SIGNATURE_HEADER}: sha256={s}\r\n"));
    }
    req.push_str("connection: close\r\n\r\n");
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(&r.socket).await.unwrap();
    s.write_all(&bytes).await.unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let status: u16 = text[9..12].parse().unwrap();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    (
        status,
        serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
    )
}

#[tokio::test]
async fn signed_requests_run_and_forged_stale_or_replayed_ones_do_not() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    let secret_file = dir.path().join("hook.secret");
    std::fs::write(&secret_file, "s3cret-for-the-hook\n").unwrap();
    write_config(
        dir.path(),
        json!({ "deploy": {
            "enable": true,
            "trigger": { "type": "webhook", "path": "deploy", "secret_file": secret_file, "replay_window_secs": 60 },
            "action": { "type": "command", "command": ["sh", "-c", "echo \"$OSMODA_PAYLOAD\""], "timeout_secs": 20 },
            "concurrency": "queue",
        }}),
    );
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    let secret = b"s3cret-for-the-hook";
    let now = chrono::Utc::now().timestamp().to_string();
    let body = br#"{"ref":"main"}"#;
    let good = hex::encode(sign(secret, &now, body).unwrap());

    let (s, v) = post(&r, "/webhook/deploy", &now, Some(good.clone()), body).await;
    assert_eq!(s, 202, "{v}");
    let run = r.wait_run(v["run_id"].as_i64().unwrap()).await;
    assert_eq!(run.status, "ok", "{run:?}");
    assert_eq!(run.trigger, "webhook");
    assert_eq!(run.output.as_deref(), Some("{\"ref\":\"main\"}\n"));

    let runs = || {
        r.state
            .engine
            .history()
            .list(None, None, 100)
            .unwrap()
            .len()
    };
    assert_eq!(runs(), 1);
    // The same signed request again: a replay.
    let (s, v) = post(&r, "/webhook/deploy", &now, Some(good.clone()), body).await;
    assert_eq!(s, 409, "{v}");
    // A signature by another secret, a changed body, a signature over another timestamp.
    let forged = hex::encode(sign(b"wrong", &now, body).unwrap());
    let (s, v) = post(&r, "/webhook/deploy", &now, Some(forged), body).await;
    assert_eq!(s, 401, "{v}");
    let (s, v) = post(
        &r,
        "/webhook/deploy",
        &now,
        Some(good.clone()),
        br#"{"ref":"evil"}"#,
    )
    .await;
    assert_eq!(s, 401, "{v}");
    let later = (chrono::Utc::now().timestamp() + 1).to_string();
    let (s, v) = post(&r, "/webhook/deploy", &later, Some(good), body).await;
    assert_eq!(s, 401, "{v}");
    // Correctly signed but outside the window (both directions).
    for off in [-120, 120] {
        let ts = (chrono::Utc::now().timestamp() + off).to_string();
        let sig = hex::encode(sign(secret, &ts, body).unwrap());
        let (s, v) = post(&r, "/webhook/deploy", &ts, Some(sig), body).await;
        assert_eq!(s, 401, "{off}: {v}");
        assert!(v["error"].as_str().unwrap().contains("window"), "{v}");
    }
    // No signature, a malformed one, an unknown hook.
    let (s, _) = post(&r, "/webhook/deploy", &now, None, body).await;
    assert_eq!(s, 401);
    let (s, _) = post(&r, "/webhook/deploy", &now, Some("zz".into()), body).await;
    assert_eq!(s, 401);
    let (s, _) = post(&r, "/webhook/other", &now, Some("00".into()), body).await;
    assert_eq!(s, 404);
    assert_eq!(runs(), 1, "nothing else ran");
    // Correctly signed extreme timestamps: refused as outside the window, no overflow (a
    // debug build panicked on i64::MIN), and nothing runs.
    for ts in [
        i64::MIN.to_string(),
        i64::MAX.to_string(),
        (i64::MIN + 1).to_string(),
        "0".to_string(),
        "-0".to_string(),
    ] {
        let sig = hex::encode(sign(secret, &ts, body).unwrap());
        let (s, v) = post(&r, "/webhook/deploy", &ts, Some(sig), body).await;
        assert_eq!(s, 401, "{ts}: {v}");
        assert!(v["error"].as_str().unwrap().contains("window"), "{ts}: {v}");
    }
    let ts = "99999999999999999999";
    let sig = hex::encode(sign(secret, ts, body).unwrap());
    let (s, v) = post(&r, "/webhook/deploy", ts, Some(sig), body).await;
    assert_eq!(s, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("Unix seconds"), "{v}");
    assert_eq!(runs(), 1, "nothing ran");
    // A new timestamp, signed again, runs again.
    let ts = (chrono::Utc::now().timestamp() - 5).to_string();
    let sig = hex::encode(sign(secret, &ts, body).unwrap());
    let (s, v) = post(&r, "/webhook/deploy", &ts, Some(sig), body).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(runs(), 2);
    r.stop().await;
}
