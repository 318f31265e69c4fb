//! The approval relay (`api::relay`): only the gateway's uid, only the owner, only gate tickets;
//! every refusal leaves the ticket pending and records nothing; an accepted decision is
//! recorded with the person the gateway reports as `decided_by`, and a command run through
//! `/system/exec` cannot reach the relay socket.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{ClientExt, Daemon};
use osmoda_client::Client;
use serde_json::{json, Value};
use tokio::net::UnixListener;

const CFG: &str = "configuration.nix";

fn my_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// A real agentd with a tree, plus its relay on `<dir>/relay/relay.sock` admitting `uid`.
async fn start(uid: u32, dir: Option<&Path>) -> (Daemon, Client, PathBuf, agentd::Trigger) {
    let relay_dir = match dir {
        Some(d) => d.join("relay"),
        None => tempfile::tempdir().expect("tempdir").keep().join("relay"),
    };
    std::fs::create_dir_all(&relay_dir).expect("mkdir");
    std::fs::set_permissions(&relay_dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let sock = relay_dir.join("relay.sock");
    let settings = agentd::Settings {
        relay_uid: Some(uid),
        relay_socket: Some(sock.clone()),
        ..Default::default()
    };
    let d = Daemon::start_with_tree_and(settings).await;
    let listener: UnixListener = agentd::api::relay::bind(&sock).expect("bind relay");
    let mode = std::fs::metadata(&sock).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "relay socket mode");
    let (trigger, shutdown) = agentd::shutdown_channel();
    tokio::spawn(agentd::api::relay::serve(
        listener,
        d.state.clone(),
        shutdown,
    ));
    (d, Client::new(&sock), relay_dir, trigger)
}

/// Ask agentd to disable sshd: the gate refuses with a ticket; returns its id.
async fn gate_ticket(d: &Daemon) -> String {
    let r = d
        .agent()
        .post("/config/set", &disable_sshd(None))
        .await
        .expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    r.body["detail"]["ticket"]
        .as_str()
        .expect("ticket")
        .to_string()
}

fn disable_sshd(approval: Option<&str>) -> Value {
    let mut b = json!({"file": CFG, "path": "services.openssh.enable", "value": false, "reason": "disable sshd"});
    if let Some(a) = approval {
        b["approval"] = json!(a);
    }
    b
}

fn owner(channel: &str, sender: Option<&str>) -> Value {
    json!({"channel": channel, "sender_id": sender, "owner": true})
}

async fn ticket(d: &Daemon, id: &str) -> Value {
    let all = d.agent().get_ok("/approvals?limit=1000").await;
    all.as_array()
        .expect("list")
        .iter()
        .find(|t| t["id"] == id)
        .cloned()
        .expect("ticket listed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_approves_through_the_relay_and_the_edit_lands_with_the_sender_recorded() {
    let (d, relay, _dir, _t) = start(my_uid(), None).await;
    let id = gate_ticket(&d).await;
    let r = relay
        .post(
            &format!("/relay/approval/{id}"),
            &json!({"decision": "approve", "requester": owner("telegram", Some("4242")), "approval_request": "plugin:abc-1"}),
        )
        .await
        .expect("relay");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "approved");
    let by = r.body["decided_by"].as_str().expect("decided_by");
    assert!(
        by.starts_with(&format!(
            "human[channel=telegram,sender=4242,owner=true,via=relay,uid={}",
            my_uid()
        )),
        "{by}"
    );
    // The ledger keeps the structured requester too.
    let evs = d.agent().get_ok("/events/log?type=approval.approved").await;
    let p: Value = serde_json::from_str(evs[0]["payload"].as_str().expect("value")).expect("value");
    assert_eq!(p["relay"]["sender_id"], "4242");
    assert_eq!(p["relay"]["approval_request"], "plugin:abc-1");
    // The agent retries with the ticket: the edit lands.
    let head = common::git(&d.tree_dir(), &["rev-parse", "HEAD"]);
    d.agent()
        .post_ok("/config/set", &disable_sshd(Some(&id)))
        .await;
    assert_ne!(common::git(&d.tree_dir(), &["rev-parse", "HEAD"]), head);
    // Decided once: a second decision is a conflict.
    let r = relay
        .post(
            &format!("/relay/approval/{id}"),
            &json!({"decision": "deny", "requester": owner("telegram", Some("4242"))}),
        )
        .await
        .expect("relay");
    assert_eq!(r.status, 409, "{}", r.body);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denial_through_the_relay_leaves_the_tree_unchanged() {
    let (d, relay, _dir, _t) = start(my_uid(), None).await;
    let id = gate_ticket(&d).await;
    let head = common::git(&d.tree_dir(), &["rev-parse", "HEAD"]);
    let r = relay
        .post(
            &format!("/relay/approval/{id}"),
            &json!({"decision": "deny", "requester": owner("webchat", None)}),
        )
        .await
        .expect("relay");
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["status"], "denied");
    assert!(r.body["decided_by"]
        .as_str()
        .expect("value")
        .starts_with("human[channel=webchat,sender=-,owner=true,via=relay,"));
    let r = d
        .agent()
        .post("/config/set", &disable_sshd(Some(&id)))
        .await
        .expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(common::git(&d.tree_dir(), &["rev-parse", "HEAD"]), head);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_relays_decide_nothing() {
    let (d, relay, _dir, _t) = start(my_uid(), None).await;
    let id = gate_ticket(&d).await;
    let path = format!("/relay/approval/{id}");
    let cases = [
        // Not the owner.
        (
            json!({"decision": "approve", "requester": {"channel": "telegram", "sender_id": "7", "owner": false}}),
            403,
        ),
        // No requester (OpenClaw gave none).
        (json!({"decision": "approve"}), 400),
        (json!({"decision": "approve", "requester": null}), 400),
        // Not a decision.
        (
            json!({"decision": "allow-always", "requester": owner("telegram", Some("1"))}),
            400,
        ),
        // Labels that could forge the actor's shape.
        (
            json!({"decision": "approve", "requester": owner("tele]gram", Some("1"))}),
            400,
        ),
        (
            json!({"decision": "approve", "requester": owner("telegram", Some("1,owner=true"))}),
            400,
        ),
        (
            json!({"decision": "approve", "requester": owner("telegram", Some("a|b"))}),
            400,
        ),
        (
            json!({"decision": "approve", "requester": owner("", None)}),
            400,
        ),
        (
            json!({"decision": "approve", "requester": owner("telegram", Some(&"9".repeat(129)))}),
            400,
        ),
        // Unknown fields.
        (
            json!({"decision": "approve", "requester": owner("telegram", None), "decided_by": "me"}),
            422,
        ),
    ];
    for (body, status) in cases {
        let r = relay.post(&path, &body).await.expect("relay");
        assert_eq!(r.status, status, "{body}: {}", r.body);
    }
    let r = relay
        .post(
            "/relay/approval/nope",
            &json!({"decision": "approve", "requester": owner("telegram", None)}),
        )
        .await
        .expect("relay");
    assert_eq!(r.status, 404, "{}", r.body);
    // A ticket the agent asked for in its own words is never decided in the chat.
    let agents = d
        .agent()
        .post_ok(
            "/approval/request",
            &json!({"operation": {"op": "user.remove", "name": "bob"}, "detail": "tidy"}),
        )
        .await;
    let r = relay
        .post(
            &format!("/relay/approval/{}", agents["id"].as_str().expect("value")),
            &json!({"decision": "approve", "requester": owner("telegram", None)}),
        )
        .await
        .expect("relay");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(ticket(&d, &id).await["status"], "pending");
    assert_eq!(
        ticket(&d, agents["id"].as_str().expect("value")).await["status"],
        "pending"
    );
    // The relay serves nothing else, and the agent socket has no relay route.
    let r = relay.get("/approvals").await.expect("get");
    assert_eq!(r.status, 404);
    let r = d
        .agent()
        .post(
            &path,
            &json!({"decision": "approve", "requester": owner("telegram", None)}),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 404);
    let decided = d.agent().get_ok("/events/log?type=approval.approved").await;
    assert_eq!(decided, json!([]));
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_uid_is_refused() {
    let (d, relay, _dir, _t) = start(my_uid().wrapping_add(1), None).await;
    let id = gate_ticket(&d).await;
    let r = relay
        .post(
            &format!("/relay/approval/{id}"),
            &json!({"decision": "approve", "requester": owner("telegram", None)}),
        )
        .await
        .expect("relay");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .expect("value")
            .contains("only the gateway's user"),
        "{}",
        r.body
    );
    assert_eq!(ticket(&d, &id).await["status"], "pending");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_run_through_system_exec_cannot_reach_the_relay() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // Outside /tmp (commands get a private one) and traversable, so only the boundary hides it.
    let root = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let root = if root.starts_with("/tmp") {
        Path::new("/var/tmp")
    } else {
        root
    };
    let outer = tempfile::tempdir_in(root).expect("tempdir");
    std::fs::set_permissions(outer.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let (d, _relay, dir, _t) = start(my_uid(), Some(outer.path())).await;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let id = gate_ticket(&d).await;
    let sock = dir.join("relay.sock");
    let body =
        json!({"decision": "approve", "requester": owner("telegram", Some("1"))}).to_string();
    for user in ["root", "nobody"] {
        let r = d
            .agent()
            .post_ok(
                "/system/exec",
                &json!({
                    "argv": ["curl", "-sS", "-X", "POST", "-H", "content-type: application/json", "-d", body,
                             "--unix-socket", sock.display().to_string(), format!("http://agentd/relay/approval/{id}")],
                    "timeout_secs": 30, "user": user,
                }),
            )
            .await;
        assert_ne!(r["exit_code"], 0, "{user}: curl reached the relay: {r}");
        assert_eq!(r["stdout"], "", "{user}: {r}");
        // curl ran and found no socket to connect to: the boundary masks the directory.
        assert!(
            r["stderr"]
                .as_str()
                .expect("value")
                .contains("Couldn't connect"),
            "{user}: {r}"
        );
    }
    assert_eq!(ticket(&d, &id).await["status"], "pending");
    // The directory is hidden from the files API as well.
    let r = d
        .agent()
        .get(&format!("/fs/list?path={}", dir.display()))
        .await
        .expect("get");
    assert_eq!(r.status, 403, "{}", r.body);
    d.stop().await;
}
