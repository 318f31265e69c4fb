//! git's lock files and the tree's owner, on every path that writes the tree: a stale
//! `refs/heads/main.lock` or `index.lock` (no live holder) is cleared with a
//! `config.lock_cleared` event for a person's `config commit` as for an agent's edit; a lock a
//! live process holds is a 409 naming it; a tree chowned to another user while agentd runs is a
//! 409 saying what to do, never a 500, and nothing is written.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{git, ClientExt, Daemon};
use serde_json::json;

fn hand_edit(d: &Daemon) {
    let p = d.tree_dir().join("configuration.nix");
    let text = std::fs::read_to_string(&p).expect("read");
    std::fs::write(&p, text.replace("\"UTC\"", "\"Europe/Paris\"")).expect("write");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_git_locks_are_cleared_for_every_kind_of_change() {
    let d = Daemon::start_with_tree().await;
    let git_dir = d.tree_dir().join(".git");
    // A person's commit, then an agent's edit, then a revert: each after a crash left locks.
    for (i, route) in ["/config/commit", "/config/set", "/config/revert"]
        .into_iter()
        .enumerate()
    {
        for lock in ["refs/heads/main.lock", "index.lock"] {
            std::fs::write(git_dir.join(lock), "").expect("plant a stale lock");
        }
        let body = match route {
            "/config/commit" => {
                hand_edit(&d);
                json!({"reason": "by hand"})
            }
            "/config/set" => {
                json!({"path": "services.osmoda.watch.watchers.sshd.intervalSecs", "value": 45, "reason": "slower"})
            }
            _ => json!({"rev": "HEAD", "reason": "undo"}),
        };
        let r = d.agent().post(route, &body).await.expect("post");
        assert_eq!(r.status, 200, "{route}: {}", r.body);
        for lock in ["refs/heads/main.lock", "index.lock"] {
            assert!(!git_dir.join(lock).exists(), "{route}: {lock} left");
        }
        let cleared = d
            .agent()
            .get_ok("/events/log?type=config.lock_cleared")
            .await;
        assert_eq!(
            cleared.as_array().map(Vec::len),
            Some(2 * (i + 1)),
            "{route}: {cleared}"
        );
    }
    assert_eq!(git(&d.tree_dir(), &["status", "--porcelain"]), "");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_held_by_a_live_process_is_named_not_a_500() {
    let d = Daemon::start_with_tree().await;
    let lock = d.tree_dir().join(".git/refs/heads/main.lock");
    std::fs::write(&lock, "").expect("lock");
    // A live holder: a shell that keeps the lock file open until we stop it.
    let mut holder = std::process::Command::new("sh")
        .arg("-c")
        .arg("exec 3<>\"$0\"; echo ready; exec sleep 60")
        .arg(&lock)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the holder");
    let mut ready = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(holder.stdout.take().expect("stdout")),
        &mut ready,
    )
    .expect("ready");
    hand_edit(&d);
    let head = git(&d.tree_dir(), &["rev-parse", "HEAD"]);
    let r = d
        .agent()
        .post("/config/commit", &json!({"reason": "by hand"}))
        .await
        .expect("post");
    holder.kill().expect("kill the holder");
    holder.wait().expect("reap");
    assert_eq!(r.status, 409, "{}", r.body);
    let error = r.body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("main.lock") && error.contains(&format!("pid {}", holder.id())),
        "{error}"
    );
    assert_eq!(git(&d.tree_dir(), &["rev-parse", "HEAD"]), head);
    // Once the holder is gone, the same commit lands.
    let r = d
        .agent()
        .post("/config/commit", &json!({"reason": "by hand"}))
        .await
        .expect("post");
    assert_eq!(r.status, 200, "{}", r.body);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_chowned_while_agentd_runs_gets_advice_not_a_500() {
    let me = std::fs::metadata("/proc/self").expect("proc").uid();
    if me != 0 {
        println!(
            "skipped: a_tree_chowned_while_agentd_runs_gets_advice_not_a_500: needs root (chown)"
        );
        return;
    }
    let trusted = std::process::Command::new("git")
        .args(["config", "--global", "--get-all", "safe.directory"])
        .output()
        .is_ok_and(|o| !o.stdout.is_empty());
    if trusted {
        println!("skipped: a_tree_chowned_while_agentd_runs_gets_advice_not_a_500: this user's git trusts other users' trees (safe.directory)");
        return;
    }
    let d = Daemon::start_with_tree().await;
    let tree = d.tree_dir();
    let chown = |uid: u32| {
        let out = std::process::Command::new("chown")
            .arg("-R")
            .arg(format!("{uid}:{uid}"))
            .arg(&tree)
            .output()
            .expect("chown");
        assert!(out.status.success(), "{out:?}");
    };
    chown(65534);
    let head = git_as_root(&tree, &["rev-parse", "HEAD"]);
    for (route, body) in [
        (
            "/config/set",
            json!({"path": "services.osmoda.watch.watchers.sshd.intervalSecs", "value": 45, "reason": "slower"}),
        ),
        ("/config/commit", json!({"reason": "by hand"})),
    ] {
        let r = d.agent().post(route, &body).await.expect("post");
        assert_eq!(r.status, 409, "{route}: {}", r.body);
        let error = r.body["error"].as_str().unwrap_or_default();
        assert!(
            error.contains("owned by another user") && error.contains("safe.directory"),
            "{route}: {error}"
        );
    }
    let r = d.agent().get("/config/status").await.expect("get");
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(git_as_root(&tree, &["rev-parse", "HEAD"]), head);
    // Given back, the tree works again.
    chown(0);
    let r = d
        .agent()
        .post(
            "/config/set",
            &json!({"path": "services.osmoda.watch.watchers.sshd.intervalSecs", "value": 45, "reason": "slower"}),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 200, "{}", r.body);
    d.stop().await;
}

/// git as root on a tree root does not own: trusted for this one command.
fn git_as_root(dir: &std::path::Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .arg("-c")
        .arg(format!("safe.directory={}", dir.display()))
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .expect("git");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
