//! The command boundary end to end: a SafeSwitch check and a watcher that try to approve the
//! agent's own ticket through agentd's approval socket cannot reach it; the ticket stays pending
//! and a person outside still approves. Needs root (bwrap, as under the module); says
//! `skipped: needs root` otherwise. We run as root here and in CI.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::Env;
use serde_json::{json, Value};

async fn ticket(env: &Env) -> String {
    let r = osmoda_client::Client::new(&env.agentd.socket)
        .post(
            "/approval/request",
            &json!({"operation": {"op": "user.remove", "user": "alice"}, "detail": "boundary test"}),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    r.body["id"].as_str().unwrap().to_string()
}

async fn status_of(env: &Env, id: &str) -> Value {
    let r = osmoda_client::Client::new(env.approval_socket())
        .get("/approvals")
        .await
        .unwrap();
    r.body
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id)
        .unwrap()["status"]
        .clone()
}

fn curl(env: &Env, path: &str) -> Vec<String> {
    [
        "curl",
        "-fsS",
        "-X",
        "POST",
        "--unix-socket",
        &env.approval_socket().display().to_string(),
        &format!("http://agentd{path}"),
    ]
    .map(String::from)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_and_watchers_cannot_reach_the_approval_socket() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let env = Env::new().await;
    let w = env.spawn(None);
    let first = env.begin(json!({"ttl_secs": 1})).await;
    assert_eq!(
        env.wait_terminal(first["id"].as_u64().unwrap()).await["state"],
        "committed"
    );
    let id = ticket(&env).await;
    let approve = format!("/approval/{id}/approve");

    // Control: the same kind of check reaches agentd's agent socket next door.
    let health = json!({"type": "command", "user": "root", "command": [
        "curl", "-fsS", "--unix-socket", env.agentd.socket.display().to_string(), "http://agentd/health"]});
    let s = env
        .begin(json!({"ttl_secs": 1, "health_checks": [health]}))
        .await;
    let done = env.wait_terminal(s["id"].as_u64().unwrap()).await;
    assert_eq!(done["state"], "committed", "{done}");

    // A SafeSwitch check that approves its own ticket, as root and as the default user.
    for user in ["root", "nobody"] {
        let rev = env.commit(
            &common::variant(if user == "root" { 1 } else { 2 }),
            "a change",
        );
        let check = json!({"type": "command", "user": user, "command": curl(&env, &approve)});
        let s = env
            .begin(json!({"generation": rev, "ttl_secs": 1, "health_checks": [check]}))
            .await;
        let done = env.wait_terminal(s["id"].as_u64().unwrap()).await;
        assert_eq!(done["state"], "rolled-back", "{user}: {done}");
        let why = done["reason"].as_str().unwrap();
        assert!(why.contains("curl failed"), "{user}: {why}");
        assert_eq!(status_of(&env, &id).await, "pending");
    }

    // A watcher doing the same, every second.
    let (status, added) = env
        .post(
            "/watcher/add",
            json!({"name": "sneaky", "check": {"type": "command", "user": "root", "command": curl(&env, &approve)},
                   "interval_secs": 1, "actions": ["notify"], "ttl_secs": 1}),
        )
        .await;
    assert_eq!(status, 200, "{added}");
    let start = Instant::now();
    loop {
        let (_, list) = env.get("/watcher/list").await;
        let probed = list
            .as_array()
            .into_iter()
            .flatten()
            .any(|w| w["name"] == "sneaky" && w["status"]["last_check_at"].is_string());
        if probed {
            let w = list
                .as_array()
                .unwrap()
                .iter()
                .find(|w| w["name"] == "sneaky")
                .unwrap()
                .clone();
            assert_eq!(w["status"]["health"], "failing", "{w}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "watcher never ran: {list}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status_of(&env, &id).await, "pending");

    // A person outside the boundary approves.
    let r = osmoda_client::Client::new(env.approval_socket())
        .post(&approve, &json!({"reason": "I checked"}))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(status_of(&env, &id).await, "approved");
    w.stop();
}
