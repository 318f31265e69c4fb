//! The command boundary seen from agentd: no agent-supplied command (run by `osmoda-sandbox`,
//! as SafeSwitch/watcher checks are) can record a human decision. Needs root, like bwrap under
//! osmoda-watch; says `skipped: needs root` otherwise (we run as root here and in CI).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use osmoda_client::Client;
use osmoda_sandbox::{Boundary, Spec};
use serde_json::json;
use tokio::net::UnixListener;

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

async fn curl_post(boundary: &Boundary, socket: &Path, path: &str) -> (bool, String) {
    let out = boundary
        .run(
            &Spec::new([
                "curl",
                "-sS",
                "-X",
                "POST",
                "-w",
                "\n%{http_code}",
                "--unix-socket",
                &socket.display().to_string(),
                &format!("http://agentd{path}"),
            ])
            .user("root")
            .timeout(Duration::from_secs(30)),
        )
        .await
        .expect("run curl in the sandbox");
    (
        out.success(),
        format!("{}{}", out.stdout_lossy(), out.stderr_lossy()),
    )
}

#[tokio::test]
async fn a_command_inside_the_boundary_cannot_approve_and_a_person_outside_can() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // Outside /tmp (the sandbox has its own) and traversable, so only the boundary hides things.
    let dir = tempfile::tempdir_in(outside_tmp()).expect("tempdir");
    chmod(dir.path(), 0o755);
    let admin: PathBuf = dir.path().join("osmoda-admin");
    std::fs::create_dir(&admin).expect("mkdir");
    chmod(&admin, 0o700);
    let agent_sock = dir.path().join("agentd.sock");
    let approval_sock = admin.join("approval.sock");
    let state = agentd::AppState::open(dir.path().join("state"), agentd::Settings::default(), None)
        .expect("open state");
    let (trigger, shutdown) = agentd::shutdown_channel();
    let server = tokio::spawn(agentd::serve(
        UnixListener::bind(&agent_sock).expect("bind"),
        UnixListener::bind(&approval_sock).expect("bind"),
        state,
        shutdown,
    ));
    let agent = Client::new(&agent_sock);
    let human = Client::new(&approval_sock);
    let ticket = agent
        .post(
            "/approval/request",
            &json!({"operation": {"op": "user.remove", "user": "alice"}, "detail": "test"}),
        )
        .await
        .expect("request");
    assert_eq!(ticket.status, 200, "{:?}", ticket.body);
    let id = ticket.body["id"].as_str().expect("id").to_string();
    let approve = format!("/approval/{id}/approve");

    // Control: from inside, the agent socket next to it answers (the sandbox works, only the
    // approval path is gone).
    let deployed = Boundary::new([admin.clone()]);
    let (ok, text) = curl_post(&deployed, &agent_sock, "/health").await;
    assert!(ok, "{text}");
    assert!(text.ends_with("405") || text.ends_with("200"), "{text}");

    // As deployed: the approval socket's directory is masked, curl cannot even connect.
    let (ok, text) = curl_post(&deployed, &approval_sock, &approve).await;
    assert!(!ok, "curl reached the approval socket: {text}");
    assert!(!text.contains("approved"), "{text}");

    // Even with the mask missing, agentd refuses a peer in another mount namespace.
    let unmasked = Boundary::new(Vec::<PathBuf>::new());
    let (ok, text) = curl_post(&unmasked, &approval_sock, &approve).await;
    assert!(ok, "curl itself should have run: {text}");
    assert!(text.ends_with("\n403"), "{text}");
    assert!(text.contains("outside the command sandbox"), "{text}");

    let list = human.get("/approvals").await.expect("list");
    assert_eq!(list.body[0]["status"], "pending", "{:?}", list.body);

    // A person's client outside the boundary still decides.
    let done = human
        .post(&approve, &json!({"reason": "ok"}))
        .await
        .expect("approve");
    assert_eq!(done.status, 200, "{:?}", done.body);
    assert_eq!(done.body["status"], "approved");
    assert!(done.body["decided_by"]
        .as_str()
        .unwrap_or("")
        .starts_with("human["));

    trigger.fire();
    server.await.expect("join").expect("serve");
}

/// A scratch root that commands inside the boundary can see: the target dir's tmp, unless the
/// checkout itself lives under `/tmp` (commands get a private `/tmp`), then `/var/tmp`.
fn outside_tmp() -> &'static std::path::Path {
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    if root.starts_with("/tmp") {
        std::path::Path::new("/var/tmp")
    } else {
        root
    }
}
