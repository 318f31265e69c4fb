//! agentd's HTTP API against the real daemon on temp Unix sockets.

mod common;

use common::{post_bytes, raw, ClientExt, Daemon};
use serde_json::{json, Value};

#[tokio::test]
async fn health_reports_real_figures() {
    let d = Daemon::start().await;
    let h = d.agent().get_ok("/health").await;
    assert!(h["ram"]["total_bytes"].as_u64().expect("ram") > 0);
    assert!(h["disk"]["total_bytes"].as_u64().expect("disk") > 0);
    assert!(h["uptime"].as_f64().expect("uptime") > 0.0);
    assert!(h["cpu"]["cores"].as_u64().expect("cores") >= 1);
    assert_eq!(h["load"].as_array().map(Vec::len), Some(3));
    d.stop().await;
}

#[tokio::test]
async fn system_queries_return_real_data() {
    let d = Daemon::start().await;
    let c = d.agent();
    let procs = c
        .post_ok(
            "/system/query",
            &json!({"query": "processes", "args": {"sort": "memory", "limit": 5}}),
        )
        .await;
    let procs = procs.as_array().expect("array");
    assert!(!procs.is_empty() && procs.len() <= 5);
    let me = std::process::id() as i64;
    let all = c
        .post_ok(
            "/system/query",
            &json!({"query": "processes", "args": {"limit": 500}}),
        )
        .await;
    assert!(
        all.as_array()
            .expect("array")
            .iter()
            .any(|p| p["pid"] == json!(me)),
        "test process listed"
    );

    let net = c
        .post_ok("/system/query", &json!({"query": "network"}))
        .await;
    assert!(net["interfaces"]
        .as_array()
        .expect("ifaces")
        .iter()
        .any(|i| i["name"] == "lo"));
    // agentd itself listens on a Unix socket; a loopback TCP listener must show up.
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = tcp.local_addr().expect("addr").port();
    let net = c
        .post_ok("/system/query", &json!({"query": "network"}))
        .await;
    assert!(net["listening"]
        .as_array()
        .expect("listening")
        .iter()
        .any(|l| l["port"] == json!(port)));

    let disk = c.post_ok("/system/query", &json!({"query": "disk"})).await;
    assert!(disk
        .as_array()
        .expect("mounts")
        .iter()
        .any(|m| m["mount"] == "/"));
    let users = c.post_ok("/system/query", &json!({"query": "users"})).await;
    assert!(users
        .as_array()
        .expect("users")
        .iter()
        .any(|u| u["name"] == "root" && u["uid"] == 0));
    let k = c
        .post_ok(
            "/system/query",
            &json!({"query": "kernel", "args": {"keys": ["kernel.ostype"]}}),
        )
        .await;
    assert_eq!(k["sysctl"]["kernel.ostype"], "Linux");

    let bad = c
        .post("/system/query", &json!({"query": "bogus"}))
        .await
        .expect("post");
    assert_eq!(bad.status, 400);
    assert!(bad.body["detail"]["valid"]
        .as_array()
        .expect("valid")
        .contains(&json!("processes")));
    let bad = c
        .post(
            "/system/query",
            &json!({"query": "kernel", "args": {"keys": ["../../etc/shadow"]}}),
        )
        .await
        .expect("post");
    assert_eq!(bad.status, 400);
    let bad = c
        .post(
            "/system/query",
            &json!({"query": "processes", "args": {"sort": "cpu", "lmit": 3}}),
        )
        .await
        .expect("post");
    assert_eq!(bad.status, 400, "unknown arg rejected: {:?}", bad.body);
    d.stop().await;
}

#[tokio::test]
async fn bad_input_gets_a_json_4xx_and_the_daemon_keeps_serving() {
    let d = Daemon::start().await;
    let s = &d.socket;
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (
            post_bytes("/incident/create", "application/json", b"{not json"),
            400,
        ),
        (
            post_bytes(
                "/incident/create",
                "application/json",
                br#"{"name": "x", "extra": 1}"#,
            ),
            422,
        ),
        (
            post_bytes("/incident/create", "application/json", br#"{"name": 42}"#),
            422,
        ),
        (
            post_bytes("/incident/create", "text/plain", br#"{"name": "x"}"#),
            415,
        ),
        (
            post_bytes(
                "/incident/create",
                "application/json",
                &vec![b' '; 2 * 1024 * 1024],
            ),
            413,
        ),
        (
            b"GET /no/such/route HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            404,
        ),
        (
            b"DELETE /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            405,
        ),
        (
            b"GET /events/log?limit=abc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"GET /events/log?limit=0 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_vec(),
            400,
        ),
        (
            post_bytes(
                "/events/append",
                "application/json",
                br#"{"type":"a|b","daemon":"x","payload":{}}"#,
            ),
            400,
        ),
        (
            post_bytes(
                "/events/append",
                "application/json",
                br#"{"type":"ok","daemon":"Bad Name","payload":{}}"#,
            ),
            400,
        ),
        (
            post_bytes(
                "/incident/999/step",
                "application/json",
                br#"{"action":"a","result":"b"}"#,
            ),
            404,
        ),
    ];
    for (req, want) in cases {
        let (status, body) = raw(s, &req).await;
        assert_eq!(
            status,
            want,
            "request {:?} → {body}",
            String::from_utf8_lossy(&req[..req.len().min(80)])
        );
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "error body for {want}: {body}"
        );
    }
    // Nothing was half-written: the ledger holds no events at all.
    let log = d.agent().get_ok("/events/log").await;
    assert_eq!(log, json!([]));
    // Still serving.
    assert_eq!(d.agent().get("/health").await.expect("get").status, 200);
    d.stop().await;
}

#[tokio::test]
async fn append_records_the_kernel_identity_not_the_claim() {
    let d = Daemon::start().await;
    let ev = d
        .agent()
        .post_ok(
            "/events/append",
            &json!({"type": "switch.began", "daemon": "osmoda-watch", "payload": {"id": 1}}),
        )
        .await;
    let actor = ev["actor"].as_str().expect("actor");
    let uid = nix::unistd::geteuid().as_raw();
    assert!(
        actor.starts_with(&format!(
            "osmoda-watch[uid={uid},pid={},exe=",
            std::process::id()
        )),
        "actor {actor}"
    );
    let log = d.agent().get_ok("/events/log?type=switch.*").await;
    assert_eq!(log.as_array().map(Vec::len), Some(1));
    assert_eq!(log[0]["payload"], json!("{\"id\":1}"));
    // A daemon names itself in a header; the kernel identity is still attached.
    let inc = d
        .agent()
        .as_daemon("osmoda-watch")
        .post_ok("/incident/create", &json!({"name": "from watch"}))
        .await;
    assert!(inc["created_by"]
        .as_str()
        .expect("by")
        .starts_with(&format!("osmoda-watch[uid={uid},pid=")));
    let bad = d
        .agent()
        .as_daemon("Not Valid")
        .post("/incident/create", &json!({"name": "x"}))
        .await
        .expect("post");
    assert_eq!(bad.status, 400);
    let found = d.agent().get_ok("/events/search?q=began").await;
    assert_eq!(
        found.as_array().map(Vec::len),
        Some(0),
        "FTS is over payloads, not types"
    );
    d.stop().await;
}

#[tokio::test]
async fn incidents_and_receipts_live_in_the_ledger() {
    let d = Daemon::start().await;
    let c = d.agent();
    let inc = c
        .post_ok("/incident/create", &json!({"name": "nginx down"}))
        .await;
    let id = inc["id"].as_i64().expect("id");
    c.post_ok(
        &format!("/incident/{id}/step"),
        &json!({"action": "restart nginx", "result": "still failing"}),
    )
    .await;
    let open = c.get_ok("/incidents?status=open").await;
    assert_eq!(open[0]["steps"][0]["action"], "restart nginx");
    c.post_ok(
        &format!("/incident/{id}/resolve"),
        &json!({"summary": "config fixed"}),
    )
    .await;
    assert_eq!(c.get_ok("/incidents?status=open").await, json!([]));
    let again = c
        .post(
            &format!("/incident/{id}/step"),
            &json!({"action": "a", "result": "b"}),
        )
        .await
        .expect("post");
    assert_eq!(again.status, 409);
    assert_eq!(
        c.get("/incidents?status=bogus").await.expect("get").status,
        400
    );

    c.post_ok("/events/append", &json!({"type": "receipt.wallet.sign", "daemon": "osmoda-keyd", "payload": {"wallet": "w1"}})).await;
    let r = c.get_ok("/receipts?type=wallet.sign").await;
    assert_eq!(r[0]["receipt"]["wallet"], "w1");
    assert_eq!(r[0]["type"], "wallet.sign");

    // Projections are rebuilt from the ledger after a restart.
    let d = d.restart().await;
    let inc = d.agent().get_ok(&format!("/incident/{id}")).await;
    assert_eq!(inc["status"], "resolved");
    assert_eq!(inc["steps"].as_array().map(Vec::len), Some(1));
    d.stop().await;
}

async fn request_ticket(d: &Daemon, op: &Value) -> String {
    let t = d
        .agent()
        .post_ok(
            "/approval/request",
            &json!({"operation": op, "detail": "delete wallet w1"}),
        )
        .await;
    assert_eq!(t["status"], "pending");
    assert!(t["expires_at"].as_str().is_some());
    t["id"].as_str().expect("id").to_string()
}

#[tokio::test]
async fn approvals_need_a_human_are_single_use_and_bound_to_the_operation() {
    let d = Daemon::start().await;
    let op = json!({"op": "wallet.delete", "wallet_id": "w1"});
    let id = request_ticket(&d, &op).await;

    // The agent socket has no decision routes at all.
    let r = d
        .agent()
        .post(&format!("/approval/{id}/approve"), &json!({}))
        .await
        .expect("post");
    assert_eq!(r.status, 404);
    // Not yet approved.
    let r = d
        .agent()
        .post("/approval/check", &json!({"id": id, "operation": op}))
        .await
        .expect("post");
    assert_eq!(r.status, 409);

    d.human()
        .post_ok(&format!("/approval/{id}/approve"), &json!({"reason": "ok"}))
        .await;
    // A different operation cannot use it (and does not consume it).
    let other = json!({"op": "wallet.delete", "wallet_id": "w2"});
    let r = d
        .agent()
        .post("/approval/check", &json!({"id": id, "operation": other}))
        .await
        .expect("post");
    assert_eq!(r.status, 403);
    // Key order does not matter; the exact operation does.
    let same = json!({"wallet_id": "w1", "op": "wallet.delete"});
    let r = d
        .agent()
        .post("/approval/check", &json!({"id": id, "operation": same}))
        .await
        .expect("post");
    assert_eq!(r.status, 200, "{:?}", r.body);
    let r = d
        .agent()
        .post("/approval/check", &json!({"id": id, "operation": op}))
        .await
        .expect("post");
    assert_eq!(r.status, 409, "second use refused");

    // Denied tickets cannot be used; decided tickets cannot be decided again.
    let id2 = request_ticket(&d, &op).await;
    d.human()
        .post_ok(&format!("/approval/{id2}/deny"), &json!({}))
        .await;
    let r = d
        .agent()
        .post("/approval/check", &json!({"id": id2, "operation": op}))
        .await
        .expect("post");
    assert_eq!(r.status, 403);
    let r = d
        .human()
        .post(&format!("/approval/{id2}/approve"), &json!({}))
        .await
        .expect("post");
    assert_eq!(r.status, 409);

    // Every request, decision and use is in the ledger, decided by a human actor.
    let log = d.agent().get_ok("/events/log?type=approval.*").await;
    let kinds: Vec<&str> = log
        .as_array()
        .expect("log")
        .iter()
        .filter_map(|e| e["type"].as_str())
        .collect();
    assert_eq!(
        kinds,
        [
            "approval.requested",
            "approval.approved",
            "approval.used",
            "approval.requested",
            "approval.denied"
        ]
    );
    assert!(log[1]["actor"]
        .as_str()
        .expect("actor")
        .starts_with("human["));
    d.stop().await;
}

#[tokio::test]
async fn expired_tickets_cannot_be_used() {
    let settings = agentd::Settings {
        approval_ttl: std::time::Duration::from_secs(1),
        ..Default::default()
    };
    let d = Daemon::start_with(settings).await;
    let op = json!({"op": "user.remove", "name": "bob"});
    let id = request_ticket(&d, &op).await;
    d.human()
        .post_ok(&format!("/approval/{id}/approve"), &json!({}))
        .await;
    // Expiry is wall-clock based (whole seconds): wait it out.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let r = d
        .agent()
        .post("/approval/check", &json!({"id": id, "operation": op}))
        .await
        .expect("post");
    assert_eq!(r.status, 410, "{:?}", r.body);
    let list = d.human().get_ok("/approvals").await;
    assert_eq!(list[0]["status"], "expired");
    d.stop().await;
}

#[tokio::test]
async fn the_agent_cannot_forge_a_human_decision() {
    let d = Daemon::start().await;
    let op = json!({"op": "wallet.delete", "wallet_id": "w9"});
    let id = request_ticket(&d, &op).await;

    // Appending a decision event through the daemon API is refused...
    let r = d
        .agent()
        .post(
            "/events/append",
            &json!({"type": "approval.approved", "daemon": "osmoda-watch", "payload": {"id": id}}),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 400, "{}", r.body);
    // ...and so is claiming to be the human, in a body or in the header.
    let r = d
        .agent()
        .post(
            "/events/append",
            &json!({"type": "note", "daemon": "human", "payload": {}}),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 400);
    let r = d
        .agent()
        .as_daemon("human")
        .post(
            "/approval/request",
            &json!({"operation": op, "detail": "x"}),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 400);

    // Even a decision event in the ledger that the approval socket did not record (a bug
    // elsewhere, or a hand-edited database) does not approve the ticket after a restart.
    let forged = osmoda_ledger::NewEvent::new(
        "approval.approved",
        "agent[uid=0,pid=1,exe=node]",
        json!({"id": id}).to_string(),
    );
    d.state.ledger.append(forged).await.expect("append");
    let d = d.restart().await;
    let r = d
        .agent()
        .post("/approval/check", &json!({"id": id, "operation": op}))
        .await
        .expect("post");
    assert_eq!(r.status, 409, "still pending: {}", r.body);
    let list = d.human().get_ok("/approvals").await;
    assert_eq!(list[0]["status"], "pending");
    d.stop().await;
}
