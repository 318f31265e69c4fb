//! The backup directory is daemon state: the agent's file API and its commands can neither read
//! nor replace archives, wherever `backup.dir` points; agentd creates it 0700, refuses one that
//! others may use, and never follows a symbolic link in it (nor quotes what such a link points
//! at).

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;

use common::{ClientExt, Daemon};
use serde_json::json;

fn q(p: &Path) -> String {
    url_escape(&p.display().to_string())
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

async fn with_backups_in(dir: &Path) -> Daemon {
    Daemon::start_with(agentd::Settings {
        backup: agentd::backup::BackupSettings {
            dir: Some(dir.to_path_buf()),
            ..Default::default()
        },
        ..agentd::Settings::default()
    })
    .await
}

#[tokio::test]
async fn the_agent_cannot_read_list_or_replace_archives() {
    // Outside /tmp so that commands (which get a fresh /tmp) would otherwise see it.
    let outer = tempfile::Builder::new()
        .prefix("osmoda-bk-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    let dir = outer.path().join("backups");
    let d = with_backups_in(&dir).await;
    let s = d.agent().post_ok("/backup/create", &json!({})).await;
    let file = Path::new(s["file"].as_str().expect("file")).to_path_buf();
    let mode = std::fs::metadata(&dir).expect("dir").permissions().mode();
    assert_eq!(mode & 0o7777, 0o700, "agentd creates the backup dir 0700");
    let before = std::fs::read(&file).expect("archive");

    let a = d.agent();
    for path in [
        format!("/fs/read?path={}", q(&file)),
        format!("/fs/list?path={}", q(&dir)),
    ] {
        let r = a.get(&path).await.expect("get");
        assert_eq!(r.status, 403, "{path}: {}", r.body);
        assert!(
            r.body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("backup archives"),
            "{path}: {}",
            r.body
        );
    }
    for body in [
        json!({ "path": file, "content": "replaced" }),
        json!({ "path": dir.join("20261130T120000000Z-00000001.tar"), "content": "planted" }),
    ] {
        let r = a.post("/fs/write", &body).await.expect("post");
        assert_eq!(r.status, 403, "{body}: {}", r.body);
    }
    assert_eq!(std::fs::read(&file).expect("archive"), before);
    assert_eq!(std::fs::read_dir(&dir).expect("ls").count(), 1);

    // A command sees neither the archive nor the directory (masked like agentd's state).
    let r = a
        .post_ok(
            "/system/exec",
            &json!({ "argv": ["cat", file], "timeout_secs": 10, "user": "root" }),
        )
        .await;
    assert_ne!(r["exit_code"].as_i64(), Some(0), "{r}");
    assert!(r["stdout"].as_str().unwrap_or_default().is_empty(), "{r}");
    let r = a
        .post_ok(
            "/system/exec",
            &json!({ "argv": ["ls", dir], "timeout_secs": 10, "user": "root" }),
        )
        .await;
    assert!(
        !r["stdout"].as_str().unwrap_or_default().contains(".tar"),
        "{r}"
    );
    d.stop().await;
}

#[tokio::test]
async fn a_link_in_the_backup_dir_is_never_followed_nor_quoted() {
    let outer = tempfile::tempdir().expect("tempdir");
    let dir = outer.path().join("backups");
    let d = with_backups_in(&dir).await;
    d.agent().post_ok("/backup/create", &json!({})).await;
    // A root-only file whose first bytes look like /etc/shadow.
    let secret = outer.path().join("shadow");
    std::fs::write(&secret, "root:SECRETHASH:20228:0:99999:7:::\n").expect("write");
    let id = "20261130T120000001Z-00000001";
    std::os::unix::fs::symlink(&secret, dir.join(format!("{id}.tar"))).expect("symlink");
    // A directory with an archive's name, too.
    let id_dir = "20261130T120000002Z-00000002";
    std::fs::create_dir(dir.join(format!("{id_dir}.tar"))).expect("mkdir");

    let list = d.agent().get_ok("/backup/list").await;
    let ids: Vec<&str> = list["backups"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|b| b["id"].as_str())
        .collect();
    assert_eq!(ids.len(), 1, "only the real archive is listed: {list}");
    for bad in [id, id_dir] {
        let r = d
            .agent()
            .post("/backup/restore", &json!({ "backup_id": bad }))
            .await
            .expect("post");
        assert_eq!(r.status, 409, "{bad}: {}", r.body);
        let text = r.body.to_string();
        assert!(!text.contains("SECRETHASH"), "{text}");
        assert!(text.contains("not a regular file"), "{text}");
    }
    // A garbage regular file: refused as damaged without quoting its bytes.
    let id_junk = "20261130T120000003Z-00000003";
    std::fs::copy(&secret, dir.join(format!("{id_junk}.tar"))).expect("copy");
    let r = d
        .agent()
        .post("/backup/restore", &json!({ "backup_id": id_junk }))
        .await
        .expect("post");
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(!r.body.to_string().contains("SECRETHASH"), "{}", r.body);
    d.stop().await;
}

#[tokio::test]
async fn a_backup_dir_others_may_use_or_a_linked_one_is_refused() {
    let outer = tempfile::tempdir().expect("tempdir");
    // Group/other permissions: every call refuses, naming the fix.
    let loose = outer.path().join("loose");
    std::fs::create_dir(&loose).expect("mkdir");
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
    let d = with_backups_in(&loose).await;
    let r = d
        .agent()
        .post("/backup/create", &json!({}))
        .await
        .expect("post");
    assert_eq!(r.status, 409, "{}", r.body);
    let msg = r.body["error"].as_str().unwrap_or_default();
    assert!(msg.contains("1777") && msg.contains("chmod 0700"), "{msg}");
    let r = d.agent().get("/backup/list").await.expect("get");
    assert_eq!(r.status, 409, "{}", r.body);
    assert_eq!(std::fs::read_dir(&loose).expect("ls").count(), 0);
    d.stop().await;

    // The backup dir itself a symbolic link (to a dir the attacker owns): not followed.
    let real = outer.path().join("elsewhere");
    std::fs::create_dir(&real).expect("mkdir");
    std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    let link = outer.path().join("linked");
    std::os::unix::fs::symlink(&real, &link).expect("symlink");
    let d = with_backups_in(&link).await;
    let r = d
        .agent()
        .post("/backup/create", &json!({}))
        .await
        .expect("post");
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("not a directory"),
        "{}",
        r.body
    );
    assert_eq!(std::fs::read_dir(&real).expect("ls").count(), 0);
    d.stop().await;
}
