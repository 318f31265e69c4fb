//! `/fs/read`, `/fs/write`, `/fs/list` against a real agentd: effects on disk, ledger events with
//! the SHA-256 before and after, and refusals (bad paths, the config tree, agentd's state,
//! symlinks and non-regular files) that change nothing.

mod common;

use common::{ClientExt, Daemon};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn q(path: &std::path::Path) -> String {
    let mut s = String::new();
    for b in path.to_str().expect("utf-8 path").bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'/' | b'.' | b'-' | b'_' => {
                s.push(b as char)
            }
            _ => s.push_str(&format!("%{b:02X}")),
        }
    }
    s
}

async fn last_event(d: &Daemon) -> Value {
    let evs = d.agent().get_ok("/events/log?order=desc&limit=1").await;
    evs[0].clone()
}

async fn refused(
    d: &Daemon,
    req: impl std::future::Future<Output = osmoda_client::Response>,
    status: u16,
    needle: &str,
) {
    let before = last_event(d).await["id"].clone();
    let r = req.await;
    assert_eq!(r.status, status, "{}", r.body);
    let msg = r.body["error"].as_str().unwrap_or_default().to_string();
    assert!(msg.contains(needle), "wanted {needle:?} in {msg:?}");
    assert_eq!(
        last_event(d).await["id"],
        before,
        "a refused call records nothing"
    );
}

#[tokio::test]
async fn write_read_list_roundtrip_with_audit() {
    let d = Daemon::start_with_tree().await;
    let work = d.dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");
    let file = work.join("sub dir/notes.txt");

    let w = d
        .agent()
        .post_ok(
            "/fs/write",
            &json!({ "path": file, "content": "hello\n", "create_dirs": true }),
        )
        .await;
    assert_eq!(std::fs::read_to_string(&file).expect("read"), "hello\n");
    assert_eq!(w["created"], true);
    assert_eq!(w["sha256_before"], Value::Null);
    assert_eq!(w["sha256_after"], hex::encode(Sha256::digest(b"hello\n")));
    assert_eq!(w["mode"], 0o644);
    let ev = last_event(&d).await;
    assert_eq!(ev["type"], "fs.write");
    assert_eq!(ev["id"], w["event_id"]);
    let p: Value = serde_json::from_str(ev["payload"].as_str().expect("payload")).expect("json");
    assert_eq!(p["sha256_after"], w["sha256_after"]);

    // Replace: the old hash is recorded, the mode kept unless given.
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let w2 = d
        .agent()
        .post_ok(
            "/fs/write",
            &json!({ "path": file, "content_base64": "AAEC/w==" }),
        )
        .await;
    assert_eq!(std::fs::read(&file).expect("read"), [0, 1, 2, 255]);
    assert_eq!(w2["sha256_before"], w["sha256_after"]);
    assert_eq!(w2["created"], false);
    assert_eq!(w2["mode"], 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(file.parent().expect("parent"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(leftovers, ["notes.txt"], "no temporary file is left behind");

    // Binary content comes back as base64; offset and limit page through it.
    let r = d
        .agent()
        .get_ok(&format!("/fs/read?path={}", q(&file)))
        .await;
    assert_eq!(
        (r["encoding"].as_str(), r["content"].as_str()),
        (Some("base64"), Some("AAEC/w=="))
    );
    let r = d
        .agent()
        .get_ok(&format!("/fs/read?path={}&offset=1&limit=2", q(&file)))
        .await;
    assert_eq!(
        (r["bytes"].as_u64(), r["truncated"].as_bool()),
        (Some(2), Some(true))
    );
    assert_eq!(last_event(&d).await["type"], "fs.read");

    let l = d
        .agent()
        .get_ok(&format!("/fs/list?path={}", q(&work)))
        .await;
    assert_eq!(
        l["entries"],
        json!([{ "name": "sub dir", "kind": "dir", "size": l["entries"][0]["size"], "mode": 0o755 }])
    );
    assert_eq!(last_event(&d).await["type"], "fs.list");
    d.stop().await;
}

#[tokio::test]
async fn refusals_change_nothing() {
    let d = Daemon::start_with_tree().await;
    let a = d.agent();
    let tree = d.tree_dir();
    let nix = tree.join("osmoda.nix");
    let before = std::fs::read(&nix).expect("read");
    let work = d.dir.path().join("work");
    std::fs::create_dir(&work).expect("mkdir");

    // The configuration tree is written only through config_set, also through a symlink.
    refused(
        &d,
        async {
            a.post("/fs/write", &json!({ "path": nix, "content": "{}" }))
                .await
                .expect("post")
        },
        403,
        "config_set",
    )
    .await;
    std::os::unix::fs::symlink(&tree, work.join("t")).expect("symlink");
    refused(
        &d,
        async {
            a.post(
                "/fs/write",
                &json!({ "path": work.join("t/osmoda.nix"), "content": "{}" }),
            )
            .await
            .expect("post")
        },
        403,
        "config_set",
    )
    .await;
    refused(
        &d,
        async {
            a.post(
                "/fs/write",
                &json!({ "path": work.join("t/new/x.nix"), "content": "{}", "create_dirs": true }),
            )
            .await
            .expect("post")
        },
        403,
        "config_set",
    )
    .await;
    assert!(!tree.join("new").exists(), "no directory was created");
    assert_eq!(std::fs::read(&nix).expect("read"), before);
    // Reading the tree is fine.
    let r = a.get_ok(&format!("/fs/read?path={}", q(&nix))).await;
    assert_eq!(
        r["content"].as_str().map(str::as_bytes),
        Some(before.as_slice())
    );

    // agentd's own state (the ledger) is hidden, for reads, listings and writes.
    let state = d.dir.path().join("state");
    refused(
        &d,
        async {
            a.get(&format!("/fs/read?path={}", q(&state.join("ledger.db"))))
                .await
                .expect("get")
        },
        403,
        "cannot see",
    )
    .await;
    refused(
        &d,
        async {
            a.get(&format!("/fs/list?path={}", q(&state)))
                .await
                .expect("get")
        },
        403,
        "cannot see",
    )
    .await;
    refused(
        &d,
        async {
            a.post(
                "/fs/write",
                &json!({ "path": state.join("x"), "content": "" }),
            )
            .await
            .expect("post")
        },
        403,
        "cannot see",
    )
    .await;

    // Bad paths and bodies.
    refused(
        &d,
        async { a.get("/fs/read?path=etc/hosts").await.expect("get") },
        400,
        "absolute and normal",
    )
    .await;
    refused(
        &d,
        async {
            a.get(&format!("/fs/read?path={}/../x", q(&work)))
                .await
                .expect("get")
        },
        400,
        "absolute and normal",
    )
    .await;
    refused(
        &d,
        async {
            a.get(&format!("/fs/read?path={}&limit=0", q(&nix)))
                .await
                .expect("get")
        },
        400,
        "limit",
    )
    .await;
    refused(
        &d,
        async {
            a.get(&format!("/fs/read?path={}", q(&work)))
                .await
                .expect("get")
        },
        400,
        "not a regular file",
    )
    .await;
    refused(
        &d,
        async {
            a.get(&format!("/fs/list?path={}", q(&nix)))
                .await
                .expect("get")
        },
        400,
        "Not a directory",
    )
    .await;
    refused(
        &d,
        async {
            a.post(
                "/fs/write",
                &json!({ "path": work.join("a"), "content": "x", "content_base64": "eA==" }),
            )
            .await
            .expect("post")
        },
        400,
        "exactly one",
    )
    .await;
    refused(
        &d,
        async {
            a.post(
                "/fs/write",
                &json!({ "path": work.join("a"), "content_base64": "***" }),
            )
            .await
            .expect("post")
        },
        400,
        "not base64",
    )
    .await;
    refused(
        &d,
        async {
            a.post(
                "/fs/write",
                &json!({ "path": work.join("a"), "content": "x", "mode": 0o17777 }),
            )
            .await
            .expect("post")
        },
        400,
        "permission bits",
    )
    .await;
    refused(
        &d,
        async {
            a.post(
                "/fs/write",
                &json!({ "path": work.join("a"), "content": "x", "owner": "root" }),
            )
            .await
            .expect("post")
        },
        422,
        "wrong shape",
    )
    .await;
    refused(
        &d,
        async {
            a.post(
                "/fs/write",
                &json!({ "path": work.join("missing/a"), "content": "x" }),
            )
            .await
            .expect("post")
        },
        400,
        "No such file",
    )
    .await;

    // A symlink, a FIFO or a directory is never replaced (the approval socket is a non-regular file too).
    std::os::unix::fs::symlink("/etc/hostname", work.join("link")).expect("symlink");
    refused(
        &d,
        async {
            a.post(
                "/fs/write",
                &json!({ "path": work.join("link"), "content": "x" }),
            )
            .await
            .expect("post")
        },
        400,
        "symlink",
    )
    .await;
    nix::unistd::mkfifo(
        &work.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    refused(
        &d,
        async {
            a.post(
                "/fs/write",
                &json!({ "path": work.join("fifo"), "content": "x" }),
            )
            .await
            .expect("post")
        },
        400,
        "not a regular file",
    )
    .await;
    refused(
        &d,
        async {
            a.get(&format!("/fs/read?path={}", q(&work.join("fifo"))))
                .await
                .expect("get")
        },
        400,
        "not a regular file",
    )
    .await;
    refused(
        &d,
        async {
            a.post(
                "/fs/write",
                &json!({ "path": d.approval_socket, "content": "x" }),
            )
            .await
            .expect("post")
        },
        400,
        "not a regular file",
    )
    .await;
    assert!(std::fs::metadata(&d.approval_socket)
        .expect("stat")
        .file_type()
        .is_socket_like());
    d.stop().await;
}

trait SocketLike {
    fn is_socket_like(&self) -> bool;
}
impl SocketLike for std::fs::FileType {
    fn is_socket_like(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_socket(self)
    }
}

#[tokio::test]
async fn credentials_are_unreadable_and_login_files_are_left_to_a_person() {
    let d = Daemon::start().await;
    let a = d.agent();
    for p in ["/etc/shadow", "/proc/self/mem", "/proc/1/environ"] {
        refused(
            &d,
            async { a.get(&format!("/fs/read?path={p}")).await.expect("get") },
            403,
            "never shown to the agent",
        )
        .await;
    }
    // A sibling that is not a credential is still readable.
    let r = a.get_ok("/fs/read?path=/proc/self/status").await;
    assert!(
        r["content"].as_str().is_some_and(|c| c.contains("Pid")),
        "{r}"
    );
    // Files that decide logins and what a shell runs: refused with a ticket, nothing written.
    for p in [
        "/etc/profile.d/osmoda-gate-test.sh",
        "/etc/sudoers.d/osmoda-gate-test",
        "/usr/local/bin/osmoda-gate-test",
        "/home/osmoda-gate-test/.bashrc",
        "/root/.osmoda-gate-test",
    ] {
        let r = a
            .post(
                "/fs/write",
                &json!({ "path": p, "content": "echo owned\n", "create_dirs": true }),
            )
            .await
            .expect("post");
        assert_eq!(r.status, 403, "{p}: {}", r.body);
        assert_eq!(r.body["detail"]["kind"], "approval_required", "{}", r.body);
        assert_eq!(r.body["detail"]["kinds"], json!(["fs.login"]), "{}", r.body);
        assert!(
            r.body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("a person"),
            "{}",
            r.body
        );
        assert!(!std::path::Path::new(p).exists(), "{p} was written");
    }
    assert!(
        !std::path::Path::new("/home/osmoda-gate-test").exists(),
        "a refused write creates no directory"
    );
    // A credential's old content is not hashed into the ticket (nor the ledger).
    let r = a
        .post(
            "/fs/write",
            &json!({ "path": "/etc/shadow", "content": "root::1::::::\n" }),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    let was = &r.body["detail"]["operation"]["effect"][0]["was"];
    assert_eq!(was["sha256"], "<credential: not hashed>", "{}", r.body);
    let shadow = std::fs::read("/etc/shadow").expect("read /etc/shadow");
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&shadow));
    assert!(!r.body.to_string().contains(&digest), "{}", r.body);
    // Kernel and process memory are never written, approved or not.
    refused(
        &d,
        async {
            a.post(
                "/fs/write",
                &json!({ "path": "/proc/self/mem", "content": "x" }),
            )
            .await
            .expect("post")
        },
        403,
        "memory",
    )
    .await;
    // Nor can a command get them writable without a person's ticket for exactly that call.
    // (`/etc` holds the configuration tree `/etc/nixos`: never writable, ticket or not.)
    let r = a
        .post(
            "/system/exec",
            &json!({ "argv": ["true"], "timeout_secs": 5, "user": "root", "writable": ["/etc"] }),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body["detail"]["use"], "config_set", "{}", r.body);
    for w in ["/usr/local/bin", "/home", "/etc/ssh", "/etc/pam.d"] {
        let marker = d.dir.path().join("ran");
        let r = a
            .post(
                "/system/exec",
                &json!({ "argv": ["touch", marker], "timeout_secs": 5, "user": "root", "writable": [w] }),
            )
            .await
            .expect("post");
        assert_eq!(r.status, 403, "{w}: {}", r.body);
        assert_eq!(r.body["detail"]["kind"], "approval_required", "{}", r.body);
        assert_eq!(r.body["detail"]["kinds"], json!(["fs.login"]), "{}", r.body);
        assert!(
            r.body["error"].as_str().unwrap_or_default().contains("log"),
            "{}",
            r.body
        );
        assert!(!marker.exists(), "{w}: the command ran");
    }
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_write_lands_with_its_approved_ticket_and_only_that_write() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (free, other) = (dir.path().join("free"), dir.path().join("other"));
    std::fs::create_dir(&free).expect("mkdir");
    std::fs::create_dir(&other).expect("mkdir");
    let settings = agentd::Settings {
        writable_roots: vec![free.clone()],
        ..agentd::Settings::default()
    };
    let d = Daemon::start_with(settings).await;
    let a = d.agent();
    // Inside a writable root: no ticket.
    a.post_ok(
        "/fs/write",
        &json!({ "path": free.join("a.txt"), "content": "a" }),
    )
    .await;
    // Outside: 403 with the gate's ticket, nothing written, no directory created.
    let target = other.join("new/conf");
    let body = json!({ "path": target, "content": "port 80\n", "create_dirs": true });
    let r = a.post("/fs/write", &body).await.expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.body["detail"]["kinds"],
        json!(["fs.outside_roots"]),
        "{}",
        r.body
    );
    assert!(
        !other.join("new").exists(),
        "nothing created before approval"
    );
    let id = r.body["detail"]["ticket"]
        .as_str()
        .expect("ticket")
        .to_string();
    // Asking again gives the same ticket; it cannot be used before a person decides.
    let again = a.post("/fs/write", &body).await.expect("post");
    assert_eq!(again.body["detail"]["ticket"], json!(id), "{}", again.body);
    let mut with = body.clone();
    with["approval"] = json!(id);
    let r = a.post("/fs/write", &with).await.expect("post");
    assert_eq!(r.status, 409, "pending: {}", r.body);
    assert!(!target.exists());
    d.human()
        .post_ok(&format!("/approval/{id}/approve"), &json!({}))
        .await;
    // Another content or mode is another write: the ticket does not fit.
    for other_write in [
        json!({ "path": target, "content": "port 81\n", "create_dirs": true, "approval": id }),
        json!({ "path": target, "content": "port 80\n", "mode": 0o4755, "create_dirs": true, "approval": id }),
    ] {
        let r = a.post("/fs/write", &other_write).await.expect("post");
        assert_eq!(r.status, 403, "{other_write}: {}", r.body);
        assert!(!target.exists(), "{other_write}");
    }
    // The approved write lands, once; the event names the ticket.
    let w = a.post_ok("/fs/write", &with).await;
    assert_eq!(std::fs::read_to_string(&target).expect("read"), "port 80\n");
    let ev = last_event(&d).await;
    assert!(
        ev["type"] == "fs.write" || ev["type"] == "approval.used",
        "{ev}"
    );
    assert!(w["event_id"].is_number(), "{w}");
    let list = d.human().get_ok("/approvals").await;
    assert!(
        list.as_array()
            .expect("list")
            .iter()
            .any(|t| t["id"] == id.as_str() && t["status"] == "used"),
        "{list}"
    );
    // The same body again is another write now (the file it replaces has changed).
    let r = a.post("/fs/write", &with).await.expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    d.stop().await;
}

/// `services.osmoda.agentd.writableRoots`, rendered by `lib/` into agentd.json, is what agentd
/// writes freely: a write inside lands, one outside takes the gate's ticket; the default
/// rendering is the code's default list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writable_roots_come_from_the_rendered_option() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (free, other) = (dir.path().join("free"), dir.path().join("other"));
    std::fs::create_dir(&free).expect("mkdir");
    std::fs::create_dir(&other).expect("mkdir");
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lib");
    let render = |cfg: String| {
        let out = std::process::Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json", "-E"])
            .arg(format!("(import {}).render {cfg}", lib.display()))
            .output()
            .expect("nix-instantiate");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rendered: Value = serde_json::from_slice(&out.stdout).expect("json");
        let path = dir.path().join("agentd.json");
        std::fs::write(&path, rendered["agentd"].to_string()).expect("write");
        agentd::config::load(&path).expect("the rendered agentd.json loads")
    };
    let defaults = render("{ }".into());
    let want: Vec<std::path::PathBuf> = agentd::DEFAULT_WRITABLE_ROOTS
        .iter()
        .map(std::path::PathBuf::from)
        .collect();
    assert_eq!(defaults.writable_roots, want);
    let settings = render(format!(
        "{{ agentd.writableRoots = [ \"{}\" ]; }}",
        free.display()
    ));
    assert_eq!(settings.writable_roots, [free.clone()]);
    let d = Daemon::start_with(settings).await;
    d.agent()
        .post_ok(
            "/fs/write",
            &json!({ "path": free.join("a"), "content": "a" }),
        )
        .await;
    let r = d
        .agent()
        .post(
            "/fs/write",
            &json!({ "path": other.join("a"), "content": "a" }),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(
        r.body["detail"]["kinds"],
        json!(["fs.outside_roots"]),
        "{}",
        r.body
    );
    assert!(
        r.body["error"]
            .as_str()
            .unwrap_or_default()
            .contains(&free.display().to_string()),
        "names the roots: {}",
        r.body
    );
    d.stop().await;
}

/// Login files are those under any account's home, as `/etc/passwd` (here: the daemon's
/// accounts file) or the configuration tree says, not only under `/home`: a service user's
/// `authorized_keys` under `/var/lib` or `/opt` needs a person, for `/fs/write` and for a
/// command given the home writable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_files_under_any_accounts_home_need_a_person() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().canonicalize().expect("real");
    let (lib, opt, srv) = (root.join("var-lib"), root.join("opt"), root.join("srv"));
    for d in [&lib, &opt, &srv] {
        std::fs::create_dir(d).expect("mkdir");
    }
    let passwd = root.join("passwd");
    std::fs::write(
        &passwd,
        format!(
            "root:x:0:0:root:/root:/bin/sh\nsvc:x:990:990::{}:/bin/sh\n",
            lib.join("svc").display()
        ),
    )
    .expect("write");
    let settings = agentd::Settings {
        writable_roots: vec![lib.clone(), opt.clone(), srv.clone()],
        accounts_file: passwd,
        ..agentd::Settings::default()
    };
    let d = Daemon::start_with_tree_and(settings).await;
    // The tree gives a system user its home under /opt (adding a user needs no ticket).
    let app_home = opt.join("app");
    d.agent()
        .post_ok(
            "/config/set",
            &json!({"file": "configuration.nix", "path": "users.users.app",
                    "value": {"isSystemUser": true, "group": "app", "home": app_home},
                    "reason": "a service user"}),
        )
        .await;
    let a = d.agent();
    for p in [
        lib.join("svc/.ssh/authorized_keys"),
        lib.join("svc/.bashrc"),
        app_home.join(".ssh/authorized_keys"),
        app_home.join(".profile"),
    ] {
        let r = a
            .post(
                "/fs/write",
                &json!({ "path": p, "content": "ssh-ed25519 AAAA agent\n", "create_dirs": true }),
            )
            .await
            .expect("post");
        assert_eq!(r.status, 403, "{}: {}", p.display(), r.body);
        assert_eq!(r.body["detail"]["kinds"], json!(["fs.login"]), "{}", r.body);
        assert!(!p.exists(), "{} was written", p.display());
    }
    // Beside them, ordinary files (and a `.ssh` under no account's home) need nothing.
    for p in [
        lib.join("svc/data/db.txt"),
        app_home.join("share/x"),
        srv.join("www/.ssh/authorized_keys"),
    ] {
        let r = a
            .post(
                "/fs/write",
                &json!({ "path": p, "content": "x", "create_dirs": true }),
            )
            .await
            .expect("post");
        assert_eq!(r.status, 200, "{}: {}", p.display(), r.body);
    }
    // A command given a home (or a directory holding one) writable needs a ticket; one given a
    // directory below a home does not.
    let marker = root.join("ran");
    for w in [lib.clone(), lib.join("svc"), opt.clone()] {
        let r = a
            .post(
                "/system/exec",
                &json!({ "argv": ["touch", marker], "timeout_secs": 5, "user": "root", "writable": [w] }),
            )
            .await
            .expect("post");
        assert_eq!(r.status, 403, "{}: {}", w.display(), r.body);
        assert_eq!(r.body["detail"]["kinds"], json!(["fs.login"]), "{}", r.body);
        assert!(!marker.exists(), "{}: the command ran", w.display());
    }
    let r = a
        .post(
            "/system/exec",
            &json!({ "argv": ["true"], "timeout_secs": 5, "user": "root", "writable": [lib.join("svc/data")] }),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 200, "{}", r.body);
    d.stop().await;
}

/// `/system/exec` of `true` with `path` writable is refused (403 naming `needle`), recording nothing.
async fn writable_refused(d: &Daemon, path: &std::path::Path, needle: &str) {
    let body = json!({ "argv": ["true"], "timeout_secs": 5, "writable": [path] });
    refused(
        d,
        async { d.agent().post("/system/exec", &body).await.expect("post") },
        403,
        needle,
    )
    .await;
}

/// Every osModa daemon's state beside agentd's is out of the agent's reach (the 2026-11-30
/// review: a file written into osmoda-watch's spool was delivered as watch's own event, and a
/// switch record made watch re-activate the agent's directory): reading, listing, writing and
/// binding it writable are refused and record nothing. The agent's own places beside them (the
/// gateway's dir, the memory notes) are not daemon state.
#[tokio::test]
async fn other_daemons_state_is_out_of_reach() {
    let d = Daemon::start_in_state_root().await;
    let a = d.agent();
    let root = d.dir.path().join("osmoda");
    for daemon in ["watch", "routines", "mesh", "voice", "egress", "keyd"] {
        let spool = root.join(daemon).join("spool");
        std::fs::create_dir_all(&spool).expect("mkdir");
        std::fs::write(spool.join("1.json"), "{}").expect("write");
        let planted = spool.join("2.json");
        refused(
            &d,
            async {
                a.post("/fs/write", &json!({ "path": planted, "content": "{}" }))
                    .await
                    .expect("post")
            },
            403,
            "an osModa daemon's state",
        )
        .await;
        assert!(!planted.exists(), "{daemon}: written");
        for get in [
            format!("/fs/read?path={}", q(&spool.join("1.json"))),
            format!("/fs/list?path={}", q(&spool)),
        ] {
            refused(
                &d,
                async { a.get(&get).await.expect("get") },
                403,
                "an osModa daemon's state",
            )
            .await;
        }
        writable_refused(&d, &spool, "an osModa daemon's state").await;
    }
    // The state root itself holds them: binding it writable would let a command replace masks.
    writable_refused(&d, &root, "which commands may not touch").await;
    for own in ["gateway", "memory"] {
        let p = root.join(own).join("note.md");
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        let r = a
            .post("/fs/write", &json!({ "path": p, "content": "ok" }))
            .await
            .expect("post");
        assert_eq!(r.status, 200, "{own}: {}", r.body);
    }
}
