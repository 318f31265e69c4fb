//! `agentctl backup create|list|restore` against a real in-process agentd: a restore is
//! refused with the ticket to approve, and lands with `--approval` once a person approved it.

mod common;

use common::{stderr, stdout};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_create_list_and_an_approved_restore() {
    let env = common::start().await;
    let head = |env: &common::Env| {
        let o = std::process::Command::new("git")
            .arg("-C")
            .arg(env.tree())
            .args(["rev-parse", "HEAD"])
            .output()
            .expect("git");
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    };
    let before = head(&env);
    let out = env
        .ctl_code(0, &["backup", "create", "-m", "before the change"])
        .await;
    assert!(out.starts_with("ID "), "{out}");
    let id = out
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .expect("id");
    let id = id.to_string();
    let list = env.ctl_code(0, &["backup", "list"]).await;
    assert!(list.contains(&id) && list.contains(&before[..12]), "{list}");
    let json = env.ctl_code(0, &["--json", "backup", "list"]).await;
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["backups"][0]["id"], serde_json::json!(id));

    env.ctl_code(
        0,
        &[
            "config",
            "set",
            "services.osmoda.agentd.approvalTtlSecs",
            "600",
            "-m",
            "a later change",
        ],
    )
    .await;
    assert_ne!(head(&env), before);

    // Refused with the ticket a person approves (exit 1, the approve command on stderr).
    let o = env.ctl(&["backup", "restore", &id]).await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    let ticket = err
        .split("agentctl approvals approve ")
        .nth(1)
        .and_then(|r| r.get(..32))
        .unwrap_or_else(|| panic!("no approve command in {err}"))
        .to_string();
    env.ctl_code(0, &["approvals", "approve", &ticket]).await;
    let o = env
        .ctl(&["backup", "restore", &id, "--approval", &ticket])
        .await;
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("restored backup {id}")),
        "{}",
        stdout(&o)
    );
    assert_eq!(head(&env), before, "the tree is back at the backup's HEAD");
    // Bad input: exit 1 with the daemon's words.
    let o = env.ctl(&["backup", "restore", "nope"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("invalid backup id"), "{}", stderr(&o));
}
