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
    common::write_secret(&secret_file, "s3cret-for-the-hook\n");
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
    let good = hex::encode(sign(secret, &now, "deploy", body).unwrap());

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
    let forged = hex::encode(sign(b"wrong", &now, "deploy", body).unwrap());
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
        let sig = hex::encode(sign(secret, &ts, "deploy", body).unwrap());
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
        let sig = hex::encode(sign(secret, &ts, "deploy", body).unwrap());
        let (s, v) = post(&r, "/webhook/deploy", &ts, Some(sig), body).await;
        assert_eq!(s, 401, "{ts}: {v}");
        assert!(v["error"].as_str().unwrap().contains("window"), "{ts}: {v}");
    }
    let ts = "99999999999999999999";
    let sig = hex::encode(sign(secret, ts, "deploy", body).unwrap());
    let (s, v) = post(&r, "/webhook/deploy", ts, Some(sig), body).await;
    assert_eq!(s, 401, "{v}");
    assert!(v["error"].as_str().unwrap().contains("Unix seconds"), "{v}");
    assert_eq!(runs(), 1, "nothing ran");
    // A new timestamp, signed again, runs again.
    let ts = (chrono::Utc::now().timestamp() - 5).to_string();
    let sig = hex::encode(sign(secret, &ts, "deploy", body).unwrap());
    let (s, v) = post(&r, "/webhook/deploy", &ts, Some(sig), body).await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(runs(), 2);
    r.stop().await;
}

/// The signature binds the path: two webhooks sharing one secret refuse each other's signed
/// requests (401), a signature in the old `<timestamp>.<body>` form is refused, and each
/// webhook keeps its own replay store. Nothing but the properly signed requests runs.
#[tokio::test]
async fn a_signature_is_bound_to_its_webhook() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    let secret_file = dir.path().join("shared.secret");
    common::write_secret(&secret_file, "one-secret-for-two-hooks\n");
    let hook = |path: &str| {
        json!({ "enable": true,
                "trigger": { "type": "webhook", "path": path, "secret_file": secret_file },
                "action": { "type": "command", "command": ["true"], "timeout_secs": 20 },
                "concurrency": "queue" })
    };
    write_config(
        dir.path(),
        json!({ "deploy": hook("deploy"), "wipe": hook("wipe"), "dotted": hook("a.b"),
                "plain": hook("a") }),
    );
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    let secret = b"one-secret-for-two-hooks";
    let now = chrono::Utc::now().timestamp().to_string();
    let body = br#"{"ref":"main"}"#;
    let for_deploy = hex::encode(sign(secret, &now, "deploy", body).unwrap());
    let (s, v) = post(&r, "/webhook/wipe", &now, Some(for_deploy.clone()), body).await;
    assert_eq!(s, 401, "a request signed for deploy must not run wipe: {v}");
    // The old content (no path) is refused everywhere.
    let mut old = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(secret).unwrap();
    hmac::Mac::update(&mut old, format!("{now}.").as_bytes());
    hmac::Mac::update(&mut old, body);
    let old = hex::encode(hmac::Mac::finalize(old).into_bytes());
    let (s, v) = post(&r, "/webhook/deploy", &now, Some(old), body).await;
    assert_eq!(s, 401, "{v}");
    // No shifting of bytes between the path and the body: `a.b` with body X must not verify
    // as `a` with body `b.X` (it would if the parts were joined by `.`); the signed content
    // has `:` around the path, which neither a path nor a timestamp holds.
    let dotted = hex::encode(sign(secret, &now, "a.b", body).unwrap());
    let shifted = [b"b.".as_slice(), body].concat();
    let (s, v) = post(&r, "/webhook/a", &now, Some(dotted), &shifted).await;
    assert_eq!(s, 401, "{v}");
    assert_eq!(
        r.state.engine.history().list(None, None, 10).unwrap().len(),
        0
    );
    // Each webhook's own signature runs once; the replay store is per webhook.
    let (s, v) = post(&r, "/webhook/deploy", &now, Some(for_deploy.clone()), body).await;
    assert_eq!(s, 202, "{v}");
    let for_wipe = hex::encode(sign(secret, &now, "wipe", body).unwrap());
    let (s, v) = post(&r, "/webhook/wipe", &now, Some(for_wipe.clone()), body).await;
    assert_eq!(s, 202, "{v}");
    for (path, sig) in [("deploy", for_deploy), ("wipe", for_wipe)] {
        let (s, v) = post(&r, &format!("/webhook/{path}"), &now, Some(sig), body).await;
        assert_eq!(s, 409, "{path}: {v}");
    }
    assert_eq!(
        r.state.engine.history().list(None, None, 10).unwrap().len(),
        2
    );
    r.stop().await;
}

/// A payload a routine could not be handed whole is refused (413, JSON, nothing ran, the
/// signature not spent); one of exactly 64 KiB runs and arrives whole. The same for a manual
/// trigger's `payload`.
#[tokio::test]
async fn payloads_over_the_limit_are_refused_not_dropped() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    let secret_file = dir.path().join("hook.secret");
    common::write_secret(&secret_file, "s3cret-for-the-hook\n");
    write_config(
        dir.path(),
        json!({ "deploy": {
            "enable": true,
            "trigger": { "type": "webhook", "path": "deploy", "secret_file": secret_file },
            "action": { "type": "command",
                        "command": ["sh", "-c", "printf %s \"$OSMODA_PAYLOAD\" | wc -c"],
                        "timeout_secs": 20 },
            "concurrency": "queue",
        }}),
    );
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    let secret = b"s3cret-for-the-hook";
    let max = osmoda_routines::actions::MAX_PAYLOAD_BYTES;
    // A JSON string of exactly `max` bytes (quotes included) is handed as it came.
    let fits = format!("\"{}\"", "a".repeat(max - 2));
    let over = format!("\"{}\"", "a".repeat(max - 1));
    let now = chrono::Utc::now().timestamp().to_string();
    let sig = |b: &str| hex::encode(sign(secret, &now, "deploy", b.as_bytes()).unwrap());
    let (s, v) = post(
        &r,
        "/webhook/deploy",
        &now,
        Some(sig(&over)),
        over.as_bytes(),
    )
    .await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(v["detail"]["kind"], "too_large", "{v}");
    assert!(v["error"].as_str().unwrap().contains("65536"), "{v}");
    // Not JSON: handed as a JSON string, so its quoting counts.
    let text = "b".repeat(max - 1);
    let (s, v) = post(
        &r,
        "/webhook/deploy",
        &now,
        Some(sig(&text)),
        text.as_bytes(),
    )
    .await;
    assert_eq!(s, 413, "{v}");
    assert!(r
        .state
        .engine
        .history()
        .list(None, None, 10)
        .unwrap()
        .is_empty());
    let (s, v) = post(
        &r,
        "/webhook/deploy",
        &now,
        Some(sig(&fits)),
        fits.as_bytes(),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let run = r.wait_run(v["run_id"].as_i64().unwrap()).await;
    assert_eq!(
        run.output.as_deref().map(str::trim),
        Some(max.to_string().as_str())
    );
    // A manual trigger: the same limit, the same answer.
    let (s, v) = r
        .post(
            "/routine/trigger/deploy",
            json!({ "payload": "c".repeat(max) }),
        )
        .await;
    assert_eq!(s, 413, "{v}");
    assert_eq!(
        r.state.engine.history().list(None, None, 10).unwrap().len(),
        1
    );
    r.stop().await;
}

async fn raw(r: &Routines, method: &str, path: &str, body: &[u8]) -> (u16, String, Value) {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(&r.socket).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    // The server may answer (and close) before reading a body it refuses.
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    let status: u16 = text[9..12].parse().unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or_default();
    let ctype = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-type: ")
                .map(str::to_string)
        })
        .unwrap_or_default();
    (
        status,
        ctype,
        serde_json::from_str(body).unwrap_or(Value::String(body.to_string())),
    )
}

/// Every error answer is JSON with `error` and `detail.kind`: a path segment that is not
/// UTF-8 in each route that takes one, and a body over the 1 MiB limit.
#[tokio::test]
async fn every_error_answer_is_json() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    write_config(dir.path(), json!({}));
    let r = Routines::start(options(dir.path(), &agentd.socket)).await;
    let big = vec![b' '; 2 * 1024 * 1024];
    for (method, path, body, status) in [
        ("POST", "/routine/trigger/%FF", &b""[..], 400),
        ("DELETE", "/routine/remove/%FF", &b""[..], 400),
        ("POST", "/webhook/%FF", &b"{}"[..], 400),
        ("POST", "/webhook/%C0%80", &b"{}"[..], 400),
        ("POST", "/routine/add", &big[..], 413),
    ] {
        let (s, ctype, v) = raw(&r, method, path, body).await;
        assert_eq!(s, status, "{method} {path}: {v}");
        assert!(
            ctype.starts_with("application/json"),
            "{method} {path}: {ctype} {v}"
        );
        assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{v}");
        assert!(v["detail"]["kind"].is_string(), "{v}");
    }
    r.stop().await;
}

/// Each webhook keeps what it accepted for as long as any window could let it pass again: a
/// webhook with a short window, called later, does not make a request another webhook (with a
/// long window) accepted acceptable again — across a restart too.
#[tokio::test]
async fn a_short_window_never_shortens_another_webhooks_memory() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    let (long_secret, short_secret) = (b"long-window-secret", b"short-window-secret");
    common::write_secret(&dir.path().join("long.secret"), long_secret);
    common::write_secret(&dir.path().join("short.secret"), short_secret);
    let hook = |path: &str, window: u64| {
        json!({ "enable": true,
                "trigger": { "type": "webhook", "path": path,
                             "secret_file": dir.path().join(format!("{path}.secret")),
                             "replay_window_secs": window },
                "action": { "type": "command", "command": ["true"], "timeout_secs": 5 } })
    };
    write_config(
        dir.path(),
        json!({ "long": hook("long", 300), "short": hook("short", 10) }),
    );
    let t0 = chrono::Utc::now();
    let mut opts = options(dir.path(), &agentd.socket);
    opts.clock = osmoda_routines::scheduler::Clock::starting_at(t0);
    let r = Routines::start(opts.clone()).await;
    let ts0 = t0.timestamp().to_string();
    let body = br#"{"n":1}"#;
    let sig = hex::encode(sign(long_secret, &ts0, "long", body).unwrap());
    let (s, v) = post(&r, "/webhook/long", &ts0, Some(sig.clone()), body).await;
    assert_eq!(s, 202, "{v}");
    r.wait_run(v["run_id"].as_i64().unwrap()).await;
    r.stop().await;

    // 100 s later by the daemon's clock: the short webhook (10 s window) accepts a fresh
    // request; the long one's request, still inside its 300 s window, stays a replay.
    let t1 = t0 + chrono::Duration::seconds(100);
    opts.clock = osmoda_routines::scheduler::Clock::starting_at(t1);
    let r = Routines::start(opts).await;
    let ts1 = t1.timestamp().to_string();
    let short = hex::encode(sign(short_secret, &ts1, "short", body).unwrap());
    let (s, v) = post(&r, "/webhook/short", &ts1, Some(short), body).await;
    assert_eq!(s, 202, "{v}");
    r.wait_run(v["run_id"].as_i64().unwrap()).await;
    let (s, v) = post(&r, "/webhook/long", &ts0, Some(sig), body).await;
    assert_eq!(s, 409, "{v}");
    let long_runs = r
        .state
        .engine
        .history()
        .list(Some("long"), None, 10)
        .unwrap();
    assert_eq!(long_runs.len(), 1, "{long_runs:?}");
    r.stop().await;
}

/// The replay record lands with the run or not at all: a signed request that could not be
/// recorded (here the history refuses the insert, as on a full disk) ran nothing and burns
/// nothing — the sender's retry of the very same request runs once, and only then is it a
/// replay. A queued webhook run keeps its body across a restart (`tests/runs.rs`).
#[tokio::test]
async fn a_request_that_recorded_no_run_recorded_no_replay() {
    let dir = scratch();
    let agentd = Agentd::start(dir.path(), None);
    let secret_file = dir.path().join("hook.secret");
    common::write_secret(&secret_file, "s3cret-for-the-hook\n");
    write_config(
        dir.path(),
        json!({ "deploy": {
            "enable": true,
            "trigger": { "type": "webhook", "path": "deploy", "secret_file": secret_file },
            "action": { "type": "command", "command": ["sh", "-c", "printf %s \"$OSMODA_PAYLOAD\""], "timeout_secs": 20 },
        }}),
    );
    let opts = options(dir.path(), &agentd.socket);
    let db = opts.state_dir.join("routines.db");
    let r = Routines::start(opts).await;
    let now = chrono::Utc::now().timestamp().to_string();
    let body = br#"{"ref":"v2"}"#;
    let sig = hex::encode(sign(b"s3cret-for-the-hook", &now, "deploy", body).unwrap());

    // Another connection to the same database makes every insert of a webhook run fail.
    let other = rusqlite::Connection::open(&db).unwrap();
    other
        .execute_batch(
            "CREATE TRIGGER full_disk BEFORE INSERT ON runs WHEN NEW.trigger = 'webhook' \
             BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END;",
        )
        .unwrap();
    let (s, v) = post(&r, "/webhook/deploy", &now, Some(sig.clone()), body).await;
    assert_eq!(s, 500, "{v}");
    assert!(r
        .state
        .engine
        .history()
        .list(None, None, 10)
        .unwrap()
        .is_empty());

    // The cause goes away; the sender retries the same request: it runs, once.
    other.execute_batch("DROP TRIGGER full_disk;").unwrap();
    let (s, v) = post(&r, "/webhook/deploy", &now, Some(sig.clone()), body).await;
    assert_eq!(
        s, 202,
        "the failed attempt must not have burnt the signature: {v}"
    );
    let run = r.wait_run(v["run_id"].as_i64().unwrap()).await;
    assert_eq!(
        (run.status.as_str(), run.output.as_deref()),
        ("ok", Some(r#"{"ref":"v2"}"#)),
        "{run:?}"
    );
    let (s, v) = post(&r, "/webhook/deploy", &now, Some(sig), body).await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(
        r.state.engine.history().list(None, None, 10).unwrap().len(),
        1
    );
    r.stop().await;
}
