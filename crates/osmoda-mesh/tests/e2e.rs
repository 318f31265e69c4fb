//! Two and three hosts on loopback, each with its own agentd, config tree, osmoda-watch
//! (local backend) and osmoda-mesh: invite → accept → both trees hold the other as a commit
//! and the rendered mesh.json declares it → messages both ways → identity rotation (still
//! connected, the peer records the new keys as a generation) → restart → they reconnect from
//! config alone. Events in each ledger carry metadata only.
#![allow(clippy::unwrap_used)]

mod common;

use common::{fast, pair, Host};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pair_talk_rotate_restart() {
    let mut a = Host::start("alpha", fast()).await;
    let mut b = Host::start("beta", fast()).await;
    pair(&a, &b).await;

    // Both trees have the other as a commit.
    let text = std::fs::read_to_string(a.tree.dir().join("osmoda.nix")).unwrap();
    assert!(
        text.contains("beta") && text.contains(&b.endpoint()),
        "{text}"
    );
    let log = a.tree.generations(5).unwrap();
    assert!(
        log.iter().any(|g| g.message.contains("pair with beta")),
        "{log:?}"
    );
    let log = b.tree.generations(5).unwrap();
    assert!(
        log.iter().any(|g| g.message.contains("pair with alpha")),
        "{log:?}"
    );

    // Messages both ways: text and JSON.
    let (s, v) = a
        .post("/peer/beta/send", json!({ "message": "hello beta" }))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = b
        .post("/peer/alpha/send", json!({ "payload": { "n": 1 } }))
        .await;
    assert_eq!(s, 200, "{v}");
    let got = b.wait_inbox("alpha", 1).await;
    assert_eq!(
        (got[0]["kind"].as_str(), &got[0]["body"]),
        (Some("text"), &json!("hello beta"))
    );
    let got = a.wait_inbox("beta", 1).await;
    assert_eq!(got[0]["body"], json!({ "n": 1 }));

    // Rotation: still connected; beta records alpha's new keys as a generation.
    let (_, before) = a.get("/identity").await;
    let (s, r) = a.post("/identity/rotate", json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["notified"], json!(["beta"]));
    assert_ne!(r["public_keys"], before["public_keys"]);
    b.wait_peer("alpha", "has the new keys", |v| {
        v["public_keys"] == r["public_keys"]
    })
    .await;
    let (s, v) = a
        .post("/peer/beta/send", json!({ "message": "after rotation" }))
        .await;
    assert_eq!(s, 200, "{v}");
    b.wait_inbox("alpha", 2).await;

    // A second rotation on the same link (no reconnect in between): beta verifies it against
    // the first one's keys and records the newest (it was refused while the link kept the
    // handshake's keys).
    let (s, r) = a.post("/identity/rotate", json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["notified"], json!(["beta"]));
    b.wait_peer("alpha", "has the second rotation's keys", |v| {
        v["public_keys"] == r["public_keys"]
    })
    .await;
    b.wait_event("peer.rotated", |e| e["new"] == r["fingerprint"])
        .await;
    assert!(b.events("peer.rotation_refused").await.is_empty());

    // Restart both: they reconnect from mesh.json alone, with alpha's new identity.
    a.stop_mesh().await;
    b.stop_mesh().await;
    a.start_mesh().await;
    b.start_mesh().await;
    a.wait_connected("beta").await;
    b.wait_connected("alpha").await;
    let (_, id) = a.get("/identity").await;
    assert_eq!(
        id["public_keys"], r["public_keys"],
        "the identity survives a restart"
    );
    let (s, v) = b
        .post("/peer/alpha/send", json!({ "message": "after restart" }))
        .await;
    assert_eq!(s, 200, "{v}");
    a.wait_inbox("beta", 2).await;
    // The inbox survived the restart too.
    assert_eq!(b.inbox("alpha").await.len(), 2);

    // The ledger has metadata, never the content.
    let sent = a.events("message.send").await;
    assert!(
        sent.iter()
            .any(|e| e["peer"] == "beta" && e["kind"] == "text"),
        "{sent:?}"
    );
    for kind in ["message.send", "message.receive"] {
        for e in a
            .events(kind)
            .await
            .iter()
            .chain(b.events(kind).await.iter())
        {
            let s = e.to_string();
            assert!(!s.contains("hello") && !s.contains("after"), "{s}");
        }
    }
    assert!(!a.events("connect").await.is_empty());
    assert!(!a.events("disconnect").await.is_empty());
    assert_eq!(a.events("invite.create").await.len(), 1);
    assert_eq!(b.events("invite.accept").await.len(), 1);
    assert_eq!(b.events("peer.rotated").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hosts_and_requests() {
    let a = Host::start("alpha", fast()).await;
    let b = Host::start("beta", fast()).await;
    let c = Host::start("gamma", fast()).await;
    pair(&a, &b).await;
    pair(&a, &c).await;
    pair(&b, &c).await;
    for (h, others) in [
        (&a, ["beta", "gamma"]),
        (&b, ["alpha", "gamma"]),
        (&c, ["alpha", "beta"]),
    ] {
        let (_, peers) = h.get("/peers").await;
        let mut names: Vec<&str> = peers
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        names.sort_unstable();
        assert_eq!(names, others, "{}", h.name);
    }

    // Request/response (how ledger witnesses cosign): gamma asks alpha; a service on alpha
    // takes it from /requests/next and answers.
    let svc = {
        let client = a.client();
        tokio::spawn(async move {
            let r = client
                .get("/requests/next?topic=ledger.cosign&wait_secs=30")
                .await
                .unwrap();
            assert_eq!(r.status, 200, "{}", r.body);
            let req = r.body["request"].clone();
            assert_eq!(req["peer"], "gamma");
            let id = req["id"].as_u64().unwrap();
            let a = client
                .post(
                    &format!("/requests/{id}/respond"),
                    &json!({ "body": { "cosigned": req["body"]["checkpoint"] } }),
                )
                .await
                .unwrap();
            assert_eq!(a.status, 200, "{}", a.body);
        })
    };
    let (s, v) = c
        .post("/peer/alpha/request", json!({ "topic": "ledger.cosign", "body": { "checkpoint": "abc" }, "timeout_secs": 30 }))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["ok"].clone(), v["body"].clone()),
        (json!(true), json!({ "cosigned": "abc" }))
    );
    common::within("alpha's service to answer gamma's request", svc)
        .await
        .unwrap();
    // Nobody answers: a clear 504 after the timeout.
    let (s, v) = c
        .post(
            "/peer/beta/request",
            json!({ "topic": "x", "body": 1, "timeout_secs": 1 }),
        )
        .await;
    assert_eq!(s, 504, "{v}");
}

/// A pairing while another switch runs (inside its TTL): the peer is committed at once and its
/// switch queued, on the inviting side and on the accepting one; it is applied as soon as the
/// running switch ends. Unpairing a declared peer: agentd's gate ticket comes back as a 403 with
/// the ticket; approved, the same request removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pairing_during_a_switch_is_queued_and_unpairing_needs_a_person() {
    let a = Host::start("alpha", fast()).await;
    let b = Host::start("beta", fast()).await;
    // A switch on each host that would probe for ten minutes.
    let mut blocking = Vec::new();
    for h in [&a, &b] {
        let s = h
            .watch
            .post(
                "/switch/begin",
                &json!({ "health_checks": [], "ttl_secs": 600 }),
            )
            .await
            .unwrap();
        assert_eq!(s.status, 200, "{}", s.body);
        blocking.push(s.body["id"].clone());
    }
    let code = a.invite("beta").await;
    let (s, v) = b
        .post("/invite/accept", json!({ "invite_code": code }))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["switch"]["state"], "queued", "{v}");
    assert!(v["switch"]["detail"]
        .as_str()
        .unwrap()
        .contains("another switch is running"));
    a.wait_connected("beta").await;
    // Committed on both sides, not yet applied.
    let committed = |h: &Host| {
        let log = h.tree.generations(5).unwrap();
        log.iter().any(|g| g.message.contains("pair with"))
    };
    let start = std::time::Instant::now();
    while !committed(&a) {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(60),
            "alpha never committed beta"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(committed(&b));
    for h in [&a, &b] {
        let (_, peers) = h.get("/peers").await;
        assert!(
            peers
                .as_array()
                .unwrap()
                .iter()
                .all(|p| p["declared"] == false),
            "{}: {peers}",
            h.name
        );
    }
    // The running switches end; the queued ones apply HEAD.
    for (h, id) in [&a, &b].into_iter().zip(&blocking) {
        let r = h
            .watch
            .post(&format!("/switch/commit/{id}"), &json!({}))
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
    }
    a.wait_declared("beta").await;
    b.wait_declared("alpha").await;

    // Unpairing: the gate's ticket, passed on as a 403; nothing removed until a person approves.
    let head = a.tree.generations(1).unwrap()[0].rev.clone();
    let r = a
        .client()
        .delete("/peer/beta?reason=retired")
        .await
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body["detail"]["kind"], "approval_required", "{}", r.body);
    // The one refusal the error-text audit (tests/error_texts.rs) cannot reach without agentd.
    let private = [
        a.mesh.as_ref().unwrap().socket.display().to_string(),
        a.agentd_socket.display().to_string(),
    ];
    let problems = osmoda_daemon::audit::audit_row(
        "DELETE /peer/beta?reason=retired",
        (r.status, &r.body),
        403,
        &["mesh peer"],
        &private,
    );
    assert!(problems.is_empty(), "{problems:?}");
    let ticket = r.body["detail"]["ticket"].as_str().unwrap().to_string();
    assert!(r.body["detail"]["hint"]
        .as_str()
        .unwrap()
        .contains(&format!("approval={ticket}")));
    assert!(
        r.body["error"].as_str().unwrap().contains("mesh peer"),
        "{}",
        r.body
    );
    assert_eq!(
        a.tree.generations(1).unwrap()[0].rev,
        head,
        "nothing committed"
    );
    let approval = osmoda_client::Client::new(a.dir.path().join("osmoda-admin/approval.sock"));
    let ok = approval
        .post(&format!("/approval/{ticket}/approve"), &json!({}))
        .await
        .unwrap();
    assert_eq!(ok.status, 200, "{}", ok.body);
    let r = a
        .client()
        .delete(&format!("/peer/beta?reason=retired&approval={ticket}"))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["removed"], "beta");
    a.wait_peer("beta", "removed", |v| v["error"].is_string())
        .await;
}
