//! `kill -9` of the real osmoda-mesh binary at each point of a peer record and of a rotation
//! (`OSMODA_MESH_PAUSE_IN` stops it there), then a restart: what was owed is finished at
//! start-up. A pairing cut off before or after its commit, or while its switch was queued
//! behind another, ends with the peer committed once and applied; an inviter whose agentd was
//! down records the peer once agentd is back; a rotation cut off after its new identity was
//! sealed still hands the peer the new keys. agentd and osmoda-watch run in the test's process.
#![allow(clippy::unwrap_used)]

mod common;

use common::{fast, wait_switch, within, Host, MeshProcess};
use serde_json::{json, Value};

/// How many commits of `host`'s tree say "pair with `peer`".
fn pairings(host: &Host, peer: &str) -> usize {
    host.tree
        .generations(200)
        .unwrap()
        .iter()
        .filter(|g| g.message.contains(&format!("pair with {peer}")))
        .count()
}

/// Starts `POST path` on `host`'s mesh without waiting (the binary pauses inside it).
fn post_in_background(host: &Host, path: &str, body: Value) -> tokio::task::JoinHandle<()> {
    let (c, path) = (host.client(), path.to_string());
    tokio::spawn(async move {
        let _ = c.post(&path, &body).await;
    })
}

/// beta (the real binary, paused at `point`) accepts alpha's invite and is killed there; after
/// a restart both hold each other, committed once, applied and connected.
async fn acceptor_killed_at(point: &str) {
    let alpha = Host::start("alpha", fast()).await;
    let beta = Host::start_without_mesh("beta", fast()).await;
    let code = alpha.invite("beta").await;
    let p = MeshProcess::spawn(&beta, Some(point)).await;
    let accept = post_in_background(&beta, "/invite/accept", json!({ "invite_code": code }));
    p.wait_paused(point).await;
    p.kill9();
    let _ = accept.await;

    let _p = MeshProcess::spawn(&beta, None).await;
    beta.wait_declared("alpha").await;
    alpha.wait_declared("beta").await;
    beta.wait_connected("alpha").await;
    alpha.wait_connected("beta").await;
    assert_eq!(pairings(&beta, "alpha"), 1, "{point}: one commit, not two");
    assert_eq!(pairings(&alpha, "beta"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_the_records_intent_before_its_commit() {
    acceptor_killed_at("record-intent").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_the_commit_before_the_switch() {
    acceptor_killed_at("record-committed").await;
}

/// The acceptor's switch is queued behind a running one when it is killed; once that switch
/// ends, the restarted mesh begins the owed one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_while_the_switch_is_queued() {
    let alpha = Host::start("alpha", fast()).await;
    let beta = Host::start_without_mesh("beta", fast()).await;
    // A switch that runs until it is committed by hand.
    let busy = beta
        .watch
        .post(
            "/switch/begin",
            &json!({ "health_checks": [], "ttl_secs": 3600 }),
        )
        .await
        .unwrap();
    assert_eq!(busy.status, 200, "{}", busy.body);
    let code = alpha.invite("beta").await;
    let p = MeshProcess::spawn(&beta, Some("switch-queued")).await;
    let accept = post_in_background(&beta, "/invite/accept", json!({ "invite_code": code }));
    p.wait_paused("switch-queued").await;
    p.kill9();
    let _ = accept.await;
    assert_eq!(pairings(&beta, "alpha"), 1, "committed before the kill");

    let _p = MeshProcess::spawn(&beta, None).await;
    let (s, v) = beta.get("/peer/alpha").await;
    assert_eq!(
        s, 404,
        "not applied (nor connected) while the other switch runs: {v}"
    );
    let id = &busy.body["id"];
    let r = beta
        .watch
        .post(&format!("/switch/commit/{id}"), &json!({}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(wait_switch(&beta.watch, id).await["state"], "committed");
    beta.wait_declared("alpha").await;
    beta.wait_connected("alpha").await;
    assert_eq!(pairings(&beta, "alpha"), 1);
}

/// The inviter's agentd does not answer when the acceptor pairs: the record is owed, the
/// inviter is killed, agentd comes back, the restarted inviter records the peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inviter_whose_agentd_was_down_records_the_peer_after_a_kill9() {
    let alpha = Host::start_without_mesh("alpha", fast()).await;
    let beta = Host::start("beta", fast()).await;
    let p = MeshProcess::spawn(&alpha, Some("record-owed")).await;
    let code = alpha.invite("beta").await;
    // agentd "down": its socket's name is gone (the listener keeps the inode).
    let away = alpha.dir.path().join("agentd.sock.away");
    std::fs::rename(&alpha.agentd_socket, &away).unwrap();
    let (s, v) = beta
        .post("/invite/accept", json!({ "invite_code": code }))
        .await;
    assert_eq!(s, 200, "{v}");
    p.wait_paused("record-owed").await;
    p.kill9();
    assert_eq!(
        pairings(&alpha, "beta"),
        0,
        "nothing recorded while agentd was down"
    );
    std::fs::rename(&away, &alpha.agentd_socket).unwrap();

    let _p = MeshProcess::spawn(&alpha, None).await;
    alpha.wait_declared("beta").await;
    alpha.wait_connected("beta").await;
    beta.wait_connected("alpha").await;
    assert_eq!(pairings(&alpha, "beta"), 1);
    let (s, v) = beta
        .post("/peer/alpha/send", json!({ "message": "after the crash" }))
        .await;
    assert_eq!(s, 200, "{v}");
    within("alpha's inbox", async {
        loop {
            let (_, v) = alpha.get("/peer/beta/inbox").await;
            if v["messages"].as_array().is_some_and(|m| !m.is_empty()) {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await;
}

/// alpha is killed right after its new identity and the hand-overs were sealed, before any was
/// sent: restarted, it reaches beta as its previous identity, hands over, and beta records the
/// new keys; after one more restart they connect with the new identity alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill9_after_sealing_a_rotation_hands_over_at_restart() {
    let alpha = Host::start_without_mesh("alpha", fast()).await;
    let beta = Host::start("beta", fast()).await;
    let p = MeshProcess::spawn(&alpha, Some("rotate-sealed")).await;
    let code = alpha.invite("beta").await;
    let (s, v) = beta
        .post("/invite/accept", json!({ "invite_code": code }))
        .await;
    assert_eq!(s, 200, "{v}");
    alpha.wait_declared("beta").await;
    beta.wait_declared("alpha").await;
    alpha.wait_connected("beta").await;
    let (_, old) = alpha.get("/identity").await;

    let rotate = post_in_background(&alpha, "/identity/rotate", json!({}));
    p.wait_paused("rotate-sealed").await;
    p.kill9();
    let _ = rotate.await;

    let p = MeshProcess::spawn(&alpha, None).await;
    let (_, new) = alpha.get("/identity").await;
    assert_ne!(
        new["public_keys"], old["public_keys"],
        "the sealed identity is current"
    );
    beta.wait_peer("alpha", "has alpha's new keys", |v| {
        v["declared"] == true && v["public_keys"] == new["public_keys"]
    })
    .await;
    beta.wait_event("peer.rotated", |e| e["new"] == new["fingerprint"])
        .await;
    assert!(beta.events("peer.rotation_refused").await.is_empty());

    // Nothing is owed any more: restarted again, alpha connects as its new identity.
    let before = beta.wait_connected("alpha").await["connection"]["session"].clone();
    p.kill9();
    let _p = MeshProcess::spawn(&alpha, None).await;
    let v = beta
        .wait_peer("alpha", "reconnected after the second restart", |v| {
            v["connection"]["connected"] == true && v["connection"]["session"] != before
        })
        .await;
    assert_eq!(v["connection"]["fingerprint"], new["fingerprint"], "{v}");
}
