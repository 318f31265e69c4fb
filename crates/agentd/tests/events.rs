//! Appending and listing events against the real daemon: reserved namespaces in every disguise,
//! dedup keys bound to the caller, and paging of every list endpoint.

mod common;

use common::{ClientExt, Daemon};
use serde_json::{json, Value};

async fn event_count(d: &Daemon) -> u64 {
    d.state.ledger.head().expect("head").events
}

#[tokio::test]
async fn reserved_types_are_refused_in_any_case_or_disguise_and_nothing_is_written() {
    let d = Daemon::start().await;
    let c = d.agent();
    let before = event_count(&d).await;
    for kind in [
        "approval.approved",
        "Approval.approved",
        "APPROVAL.approved",
        "aPPROVAL.denied",
        " approval.approved",
        "approval.approved ",
        "\tapproval.approved",
        "Incident.created",
        "CONFIG.edit",
        "аpproval.approved",  // Cyrillic а
        "ａpproval.approved", // full-width a
        "approval\u{200b}.approved",
        "approva\u{0142}.approved",
        "ＡＰＰＲＯＶＡＬ.approved",
        "",
    ] {
        let r = c
            .post(
                "/events/append",
                &json!({ "type": kind, "daemon": "evil", "payload": { "id": "x" } }),
            )
            .await
            .expect("post");
        assert_eq!(r.status, 400, "{kind:?}: {}", r.body);
        assert!(r.body["error"].is_string() && r.body.get("detail").is_some());
    }
    assert_eq!(event_count(&d).await, before, "a refused event was written");
    // Ordinary types, and reserved words that are not the namespace, still work.
    for (kind, daemon) in [
        ("switch.committed", "osmoda-watch"),
        ("approvals-digest.sent", "osmoda-watch"),
        ("receipt.wallet.sign", "osmoda-keyd"),
        ("note", "agent"),
    ] {
        c.post_ok(
            "/events/append",
            &json!({ "type": kind, "daemon": daemon, "payload": {} }),
        )
        .await;
    }
    d.stop().await;
}

fn payloads(log: &Value) -> Vec<Value> {
    log.as_array()
        .expect("array")
        .iter()
        .map(|e| serde_json::from_str(e["payload"].as_str().expect("payload")).expect("json"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_caller_replaying_watchs_dedup_keys_suppresses_none_of_its_events() {
    let d = Daemon::start().await;
    let spool = d.dir.path().join("watch-spool");
    let watch = osmoda_client::Reporter::open(&d.socket, &spool, "osmoda-watch").expect("reporter");
    let stream = watch.stream().to_string();
    let attacker = d.agent();
    // The attacker gets every key in first: under its own name, and claiming to be watch
    // (same uid here, as in any test) with forged content.
    for seq in 1..=6u64 {
        for (daemon, kind) in [
            ("agent", "agent.switch.begin"),
            ("osmoda-watch", "watch.switch.forged"),
        ] {
            attacker
                .post_ok(
                    "/events/append",
                    &json!({
                        "type": kind, "daemon": daemon, "payload": { "forged": seq },
                        "dedup": { "stream": stream, "seq": seq },
                    }),
                )
                .await;
        }
    }
    for i in 0..6 {
        watch
            .report("watch.switch.begin", json!({ "i": i }))
            .await
            .expect("report");
    }
    watch.flush().await.expect("flush");
    assert_eq!(watch.pending().expect("pending"), 0);
    let log = d
        .agent()
        .get_ok("/events/log?type=watch.switch.begin&limit=1000")
        .await;
    let from_watch: Vec<Value> = payloads(&log)
        .into_iter()
        .filter(|p| p.get("i").is_some())
        .collect();
    assert_eq!(
        from_watch,
        (0..6).map(|i| json!({ "i": i })).collect::<Vec<_>>(),
        "every event of watch's is in the ledger, in order"
    );
    // watch's own retry of an event is still deduplicated: nothing is written twice.
    let before = event_count(&d).await;
    let again = d
        .agent()
        .post_ok(
            "/events/append",
            &json!({
                "type": "watch.switch.begin", "daemon": "osmoda-watch", "payload": { "i": 5 },
                "dedup": { "stream": stream, "seq": 6 },
            }),
        )
        .await;
    assert_eq!(event_count(&d).await, before);
    assert_eq!(again["payload"], json!({ "i": 5 }).to_string());
    d.stop().await;
}

/// Pages through `path` (which has `limit=`) following `x-next-cursor` as `cursor`; returns the
/// ids seen, page by page.
async fn pages(d: &Daemon, path: &str, cursor: &str, id: fn(&Value) -> String) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut next: Option<String> = None;
    loop {
        let url = match &next {
            Some(n) => format!("{path}&{cursor}={n}"),
            None => path.to_string(),
        };
        let (status, headers, body) = get_with_headers(&d.socket, &url).await;
        assert_eq!(status, 200, "{url}: {body}");
        out.push(body.as_array().expect("array").iter().map(id).collect());
        next = headers
            .lines()
            .find_map(|l| l.strip_prefix("x-next-cursor: "))
            .map(|s| s.trim().to_string());
        if next.is_none() {
            return out;
        }
        assert!(out.len() < 100, "paging does not end");
    }
}

async fn get_with_headers(sock: &std::path::Path, path: &str) -> (u16, String, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(sock)
        .await
        .expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.expect("read");
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("head");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (
        status,
        head.to_string(),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

fn num_id(v: &Value) -> String {
    v["id"].as_i64().expect("id").to_string()
}

fn str_id(v: &Value) -> String {
    v["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn every_list_endpoint_pages_with_a_cursor() {
    let d = Daemon::start().await;
    let c = d.agent();
    for i in 0..5 {
        c.post_ok(
            "/events/append",
            &json!({ "type": "receipt.test", "daemon": "osmoda-keyd", "payload": { "word": "needle", "i": i } }),
        )
        .await;
        c.post_ok("/incident/create", &json!({ "name": format!("inc {i}") }))
            .await;
        c.post_ok(
            "/approval/request",
            &json!({ "operation": { "kind": "service.remove", "name": format!("s{i}") }, "detail": "t" }),
        )
        .await;
    }
    let flat = |p: Vec<Vec<String>>| -> (Vec<usize>, Vec<String>) {
        (
            p.iter().map(Vec::len).collect(),
            p.into_iter().flatten().collect(),
        )
    };
    // Events, both directions.
    let (sizes, asc) = flat(
        pages(
            &d,
            "/events/log?type=receipt.test&limit=2",
            "after_id",
            num_id,
        )
        .await,
    );
    assert_eq!(sizes, vec![2, 2, 1]);
    let (_, desc) = flat(
        pages(
            &d,
            "/events/log?type=receipt.test&limit=2&order=desc",
            "before_id",
            num_id,
        )
        .await,
    );
    assert_eq!(desc, asc.iter().rev().cloned().collect::<Vec<_>>());
    // Search, newest first.
    let (_, found) = flat(pages(&d, "/events/search?q=needle&limit=2", "before_id", num_id).await);
    assert_eq!(found, desc);
    // Receipts.
    let (_, receipts) = flat(pages(&d, "/receipts?type=test&limit=3", "after_id", num_id).await);
    assert_eq!(receipts, asc);
    // Incidents.
    let (sizes, incidents) = flat(pages(&d, "/incidents?limit=2", "after_id", num_id).await);
    assert_eq!((sizes, incidents.len()), (vec![2, 2, 1], 5));
    // Approvals, on both sockets.
    let (_, tickets) = flat(pages(&d, "/approvals?limit=2", "after_id", str_id).await);
    let mut sorted = tickets.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!((tickets.len(), &tickets), (5, &sorted));
    // Bounded defaults and limits.
    let all = c.get_ok("/incidents").await;
    assert_eq!(all.as_array().map(Vec::len), Some(5));
    for bad in [
        "/incidents?limit=0",
        "/incidents?limit=1001",
        "/approvals?limit=5000",
        "/events/log?limit=10001",
    ] {
        let r = c.get(bad).await.expect("get");
        assert_eq!(r.status, 400, "{bad}: {}", r.body);
    }
    d.stop().await;
}

/// `POST path` with `body` (and extra headers) from a `curl` child process: a caller that is not
/// agentd's own process, whatever it claims. Returns (status, body).
fn curl_post(d: &Daemon, path: &str, body: &Value, headers: &[&str]) -> (u16, Value) {
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-sS", "--max-time", "30", "-o", "-", "-w", "\n%{http_code}"])
        .arg("--unix-socket")
        .arg(&d.socket)
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(body.to_string());
    for h in headers {
        cmd.args(["-H", h]);
    }
    let out = cmd
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').expect("status line");
    (
        status.trim().parse().expect("status"),
        serde_json::from_str(body).unwrap_or(Value::Null),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_namespaces_are_written_only_by_the_daemon_recognised_by_its_process() {
    let d = Daemon::start().await;
    let before = event_count(&d).await;
    let cases: &[(&str, &str, u16, &str)] = &[
        // (type, claimed daemon, status, the error says)
        (
            "watch.switch.committed",
            "agent",
            403,
            "written only by osmoda-watch",
        ),
        (
            "WATCH.switch.committed",
            "agent",
            403,
            "written only by osmoda-watch",
        ),
        (
            "watch.switch.committed",
            "osmoda-watch",
            403,
            "executable is curl",
        ),
        (
            "receipt.wallet.sign",
            "agent",
            403,
            "written only by osmoda-keyd",
        ),
        ("receipt.wallet.sign", "osmoda-keyd", 403, "not osmoda-keyd"),
        ("routine.run", "osmoda-routines", 403, "not osmoda-routines"),
        (
            "note",
            "osmoda-watch",
            403,
            "this caller is not osmoda-watch",
        ),
        ("fs.write", "agent", 400, "agentd's own endpoints"),
        ("System.exec", "agent", 400, "agentd's own endpoints"),
        (
            "approval.approved",
            "osmoda-watch",
            400,
            "agentd's own endpoints",
        ),
    ];
    for (kind, daemon, status, says) in cases {
        let (got, v) = curl_post(
            &d,
            "/events/append",
            &json!({ "type": kind, "daemon": daemon, "payload": {} }),
            &[],
        );
        assert_eq!(got, *status, "{kind} as {daemon}: {v}");
        let msg = v["error"].as_str().unwrap_or_default();
        assert!(msg.contains(says), "{kind} as {daemon}: {msg}");
        assert!(v["detail"]["reserved"].is_object(), "{v}");
    }
    // Claiming a daemon's name in the header is refused the same way.
    let (got, v) = curl_post(
        &d,
        "/incident/create",
        &json!({ "name": "x" }),
        &["x-osmoda-daemon: osmoda-watch"],
    );
    assert_eq!(got, 403, "{v}");
    assert_eq!(event_count(&d).await, before, "a refused event was written");
    // The same process may still write under a name nobody reserved.
    let (got, v) = curl_post(
        &d,
        "/events/append",
        &json!({ "type": "agent.note", "daemon": "agent", "payload": {} }),
        &[],
    );
    assert_eq!(got, 200, "{v}");
    assert!(
        v["actor"].as_str().unwrap_or_default().contains("exe=curl"),
        "{v}"
    );
    d.stop().await;
}
