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
    assert_eq!(b.events("peer.rotated").await.len(), 1);
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
    svc.await.unwrap();
    // Nobody answers: a clear 504 after the timeout.
    let (s, v) = c
        .post(
            "/peer/beta/request",
            json!({ "topic": "x", "body": 1, "timeout_secs": 1 }),
        )
        .await;
    assert_eq!(s, 504, "{v}");
}
