//! `POST /system/exec` against a real agentd and the real sandbox (bubblewrap): output, exit
//! codes, timeouts, the ledger event, writable paths, and the boundary (agentd's state hidden,
//! the config tree never writable, the approval socket out of reach).

mod common;
#[path = "../../osmoda-sandbox/tests/support/swap.rs"]
mod swap;

use common::{ClientExt, Daemon};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use swap::Swapper;

async fn exec(d: &Daemon, body: Value) -> Value {
    d.agent().post_ok("/system/exec", &body).await
}

async fn last_id(d: &Daemon) -> Value {
    d.agent().get_ok("/events/log?order=desc&limit=1").await[0]["id"].clone()
}

#[tokio::test]
async fn runs_commands_inside_the_boundary_and_records_them() {
    let d = Daemon::start_with_tree().await;
    let r = exec(&d, json!({ "argv": ["echo", "hello"], "timeout_secs": 10 })).await;
    assert_eq!(
        (
            r["exit_code"].as_i64(),
            r["stdout"].as_str(),
            r["timed_out"].as_bool()
        ),
        (Some(0), Some("hello\n"), Some(false))
    );
    assert_eq!(r["user"], "nobody");
    let ev = d
        .agent()
        .get_ok("/events/log?type=system.exec&order=desc&limit=1")
        .await[0]
        .clone();
    assert_eq!(ev["id"], r["event_id"]);
    let p: Value = serde_json::from_str(ev["payload"].as_str().expect("payload")).expect("json");
    assert_eq!(p["argv"], json!(["echo", "hello"]));
    assert_eq!(p["stdout_sha256"], hex::encode(Sha256::digest(b"hello\n")));

    let r = exec(&d, json!({ "command": "echo oops >&2; id -un; exit 3", "timeout_secs": 10, "env": { "GREETING": "hi" } })).await;
    assert_eq!(
        (
            r["exit_code"].as_i64(),
            r["stderr"].as_str(),
            r["stdout"].as_str()
        ),
        (Some(3), Some("oops\n"), Some("nobody\n"))
    );
    let r = exec(
        &d,
        json!({ "command": "echo $GREETING", "timeout_secs": 10, "env": { "GREETING": "hi" } }),
    )
    .await;
    assert_eq!(r["stdout"], "hi\n");

    let r = exec(&d, json!({ "argv": ["sleep", "30"], "timeout_secs": 1 })).await;
    assert_eq!(
        (r["timed_out"].as_bool(), r["exit_code"].clone()),
        (Some(true), Value::Null)
    );
    assert!(r["duration_ms"].as_u64().expect("ms") < 20_000);

    // The approval socket refuses a command's connection (nobody may not write to it).
    let r = exec(&d, json!({ "argv": ["curl", "-sS", "--unix-socket", d.approval_socket, "http://x/approvals"], "timeout_secs": 10 })).await;
    assert_ne!(r["exit_code"].as_i64(), Some(0), "{r}");
    d.stop().await;
}

/// The real binary with its state outside /tmp (commands get a fresh /tmp, which would hide
/// a state dir there anyway): the ledger is masked while its neighbours are visible, and the
/// root file system is read-only except for the writable paths the caller names.
#[tokio::test]
async fn state_is_masked_and_the_root_is_read_only() {
    let dir = tempfile::Builder::new()
        .prefix("osmoda-exec-")
        .tempdir_in("/var/tmp")
        .expect("tempdir");
    // The approval socket in a directory of its own, as the module puts it (not the default
    // path, so agentd must mask the directory it was given).
    let admin = dir.path().join("admin");
    std::fs::create_dir(&admin).expect("mkdir");
    let approval = admin.join("approval.sock");
    let p = common::Process::spawn_full(dir.path(), &approval, &[]);
    let a = osmoda_client::Client::new(&p.socket);
    let run = |body: Value| {
        let a = a.clone();
        async move { a.post_ok("/system/exec", &body).await }
    };
    let visible = dir.path().join("visible.txt");
    std::fs::write(&visible, "seen\n").expect("write");
    let ledger = dir.path().join("state/ledger.db");
    assert!(ledger.exists());
    let r = run(json!({ "argv": ["cat", visible], "timeout_secs": 10, "user": "root" })).await;
    assert_eq!(r["stdout"], "seen\n", "{r}");
    let r = run(json!({ "argv": ["cat", ledger], "timeout_secs": 10, "user": "root" })).await;
    assert_ne!(r["exit_code"].as_i64(), Some(0), "{r}");
    assert!(
        r["stderr"]
            .as_str()
            .unwrap_or_default()
            .contains("No such file"),
        "{r}"
    );

    let out = dir.path().join("out");
    std::fs::create_dir(&out).expect("mkdir");
    let target = out.join("f");
    let r = run(json!({ "argv": ["touch", target], "timeout_secs": 10, "user": "root" })).await;
    assert!(
        r["stderr"]
            .as_str()
            .unwrap_or_default()
            .contains("Read-only file system"),
        "{r}"
    );
    assert!(!target.exists());
    let r = run(
        json!({ "argv": ["touch", target], "timeout_secs": 10, "user": "root", "writable": [out] }),
    )
    .await;
    assert_eq!(r["exit_code"].as_i64(), Some(0), "{r}");
    assert!(target.exists());

    // The approval socket's directory is masked: neither nobody nor root can reach it (and a
    // root decision from inside would be refused anyway, see tests/boundary.rs).
    let ticket = a
        .post_ok(
            "/approval/request",
            &json!({ "operation": { "kind": "test" }, "detail": "t" }),
        )
        .await;
    let url = format!(
        "http://x/approval/{}/approve",
        ticket["id"]
            .as_str()
            .map_or_else(|| ticket["id"].to_string(), str::to_string)
    );
    let r = run(json!({ "argv": ["curl", "-sS", "--unix-socket", approval, "-X", "POST", url], "timeout_secs": 10 })).await;
    assert_ne!(r["exit_code"].as_i64(), Some(0), "{r}");
    let r = run(json!({ "argv": ["curl", "-sS", "--unix-socket", approval, "-X", "POST", url.clone()], "timeout_secs": 10, "user": "root" })).await;
    assert_ne!(r["exit_code"].as_i64(), Some(0), "{r}");
    let r = run(json!({ "argv": ["ls", "-A", admin], "timeout_secs": 10, "user": "root" })).await;
    assert_eq!(
        r["stdout"], "",
        "the approval socket's directory is empty inside: {r}"
    );
    // The socket itself still answers outside.
    assert!(std::os::unix::fs::FileTypeExt::is_socket(
        &std::fs::metadata(&approval).expect("socket").file_type()
    ));
    let tickets = a.get_ok("/approvals").await;
    assert_eq!(tickets[0]["status"], "pending", "{tickets}");
}

#[tokio::test]
async fn bad_requests_run_nothing_and_record_nothing() {
    let d = Daemon::start_with_tree().await;
    let tree = d.tree_dir();
    let marker = d.dir.path().join("marker");
    let touch = json!(["touch", marker]);
    for (body, status, needle) in [
        (
            json!({ "argv": touch, "command": "true", "timeout_secs": 5 }),
            400,
            "exactly one of",
        ),
        (
            json!({ "argv": [], "timeout_secs": 5 }),
            400,
            "exactly one of",
        ),
        (json!({ "argv": touch }), 422, "wrong shape"),
        (
            json!({ "argv": touch, "timeout_secs": 0 }),
            400,
            "timeout_secs",
        ),
        (
            json!({ "argv": touch, "timeout_secs": 601 }),
            400,
            "timeout_secs",
        ),
        (
            json!({ "argv": touch, "timeout_secs": 5, "env": { "BAD-KEY": "x" } }),
            400,
            "env",
        ),
        (
            json!({ "argv": touch, "timeout_secs": 5, "user": "no-such-user-osmoda" }),
            400,
            "is not one a command may run as",
        ),
        // An existing account other than nobody/root (a daemon's would act with its standing).
        (
            json!({ "argv": touch, "timeout_secs": 5, "user": "daemon" }),
            400,
            "is not one a command may run as",
        ),
        (
            json!({ "argv": touch, "timeout_secs": 5, "user": "0" }),
            400,
            "is not one a command may run as",
        ),
        (
            json!({ "argv": touch, "timeout_secs": 5, "stdin": 5 }),
            422,
            "wrong shape",
        ),
        (
            json!({ "argv": touch, "timeout_secs": 5, "stdin": "x".repeat(512 * 1024 + 1) }),
            400,
            "stdin",
        ),
        (
            json!({ "argv": touch, "timeout_secs": 5, "cwd": "relative" }),
            400,
            "absolute",
        ),
        (
            json!({ "argv": touch, "timeout_secs": 5, "writable": [tree] }),
            403,
            "config_set",
        ),
        (
            json!({ "argv": touch, "timeout_secs": 5, "writable": ["/etc/nixos"] }),
            400,
            "writable path",
        ),
        (
            json!({ "argv": touch, "timeout_secs": 5, "writable": [d.dir.path().join("state")] }),
            403,
            "cannot see",
        ),
        (
            json!({ "argv": touch, "timeout_secs": 5, "writable": [d.dir.path()] }),
            403,
            "may not touch",
        ),
    ] {
        let before = last_id(&d).await;
        let r = d.agent().post("/system/exec", &body).await.expect("post");
        assert_eq!(r.status, status, "{body}: {}", r.body);
        assert!(
            r.body["error"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{body}: {}",
            r.body
        );
        assert_eq!(last_id(&d).await, before, "{body}: nothing recorded");
        assert!(!marker.exists(), "{body}: nothing ran");
    }
    d.stop().await;
}

#[tokio::test]
async fn stdin_is_passed_through_and_recorded() {
    let d = Daemon::start_with_tree().await;
    // Text in, the same text out, its size and hash in the ledger.
    let r = exec(
        &d,
        json!({ "argv": ["cat"], "stdin": "line one\nline two\n", "timeout_secs": 10 }),
    )
    .await;
    assert_eq!(r["stdout"], "line one\nline two\n", "{r}");
    let ev = d
        .agent()
        .get_ok("/events/log?type=system.exec&order=desc&limit=1")
        .await[0]
        .clone();
    let p: Value = serde_json::from_str(ev["payload"].as_str().expect("payload")).expect("json");
    assert_eq!(p["stdin_bytes"], 18);
    assert_eq!(
        p["stdin_sha256"],
        hex::encode(Sha256::digest(b"line one\nline two\n"))
    );
    // The largest input allowed arrives whole, through a shell too.
    let big = "y".repeat(512 * 1024);
    let r = exec(
        &d,
        json!({ "command": "wc -c", "stdin": big, "timeout_secs": 30 }),
    )
    .await;
    assert_eq!(r["stdout"].as_str().map(str::trim), Some("524288"), "{r}");
    // A command that never reads its input is not held up by it, and exits on its own.
    let r = exec(
        &d,
        json!({ "argv": ["true"], "stdin": big, "timeout_secs": 30 }),
    )
    .await;
    assert_eq!(
        (r["exit_code"].as_i64(), r["timed_out"].as_bool()),
        (Some(0), Some(false)),
        "{r}"
    );
    // Without stdin the command reads end-of-file at once (it is /dev/null), not a hang.
    let r = exec(&d, json!({ "argv": ["cat"], "timeout_secs": 10 })).await;
    assert_eq!(
        (r["exit_code"].as_i64(), r["stdout"].as_str()),
        (Some(0), Some(""))
    );
    let p: Value = serde_json::from_str(
        d.agent()
            .get_ok("/events/log?type=system.exec&order=desc&limit=1")
            .await[0]["payload"]
            .as_str()
            .expect("payload"),
    )
    .expect("json");
    assert_eq!(p["stdin_bytes"], Value::Null);
    d.stop().await;
}

/// A writable path outside the writable roots (or holding login files) is the same effect as
/// `/fs/write` there: 403 with the gate's ticket before anything runs; the same call with the
/// approved ticket runs once (also when two carry it at once); another call cannot use it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_command_runs_once_with_its_approved_ticket() {
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
    let r = exec(
        &d,
        json!({ "command": format!("echo a >> {}/log", free.display()), "timeout_secs": 10, "user": "root", "writable": [free] }),
    )
    .await;
    assert_eq!(r["exit_code"], 0, "{r}");
    // Outside: refused with the ticket, and the command did not run.
    let body = json!({ "command": format!("echo run >> {}/log", other.display()), "timeout_secs": 10,
        "user": "root", "writable": [other], "env": { "TOKEN": "s3cret-value" } });
    let before = last_id(&d).await;
    let r = a.post("/system/exec", &body).await.expect("post");
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(r.body["detail"]["kind"], "approval_required", "{}", r.body);
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
            .contains("writable"),
        "{}",
        r.body
    );
    // An env value may be a secret: bound by its hash, never shown.
    assert!(!r.body.to_string().contains("s3cret-value"), "{}", r.body);
    assert!(!other.join("log").exists(), "ran before approval");
    let id = r.body["detail"]["ticket"]
        .as_str()
        .expect("ticket")
        .to_string();
    let events = d
        .agent()
        .get_ok(&format!("/events/log?after_id={}&limit=10", before))
        .await;
    assert!(
        events
            .as_array()
            .expect("events")
            .iter()
            .all(|e| e["type"] != "system.exec"),
        "{events}"
    );
    // Pending: the ticket does not run it.
    let mut with = body.clone();
    with["approval"] = json!(id);
    let r = a.post("/system/exec", &with).await.expect("post");
    assert_eq!(r.status, 409, "pending: {}", r.body);
    d.human()
        .post_ok(&format!("/approval/{id}/approve"), &json!({}))
        .await;
    // Another command, user, env value or writable set is another call.
    for (k, v) in [
        (
            "command",
            json!(format!("echo other >> {}/log", other.display())),
        ),
        ("user", json!("nobody")),
        ("env", json!({ "TOKEN": "other" })),
        ("writable", json!([other, free])),
        ("timeout_secs", json!(11)),
    ] {
        let mut o = with.clone();
        o[k] = v;
        let r = a.post("/system/exec", &o).await.expect("post");
        assert_eq!(r.status, 403, "{k}: {}", r.body);
    }
    assert!(!other.join("log").exists());
    // Two requests with the approved ticket at once: it runs exactly once.
    let (r1, r2) = tokio::join!(a.post("/system/exec", &with), a.post("/system/exec", &with));
    let mut statuses = [r1.expect("post").status, r2.expect("post").status];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 409],
        "one runs, the other finds the ticket used"
    );
    assert_eq!(
        std::fs::read_to_string(other.join("log")).expect("log"),
        "run\n"
    );
    let ev = d
        .agent()
        .get_ok("/events/log?type=system.exec&order=desc&limit=1")
        .await[0]
        .clone();
    let p: Value = serde_json::from_str(ev["payload"].as_str().expect("payload")).expect("json");
    assert_eq!(p["approval"], json!(id), "{p}");
    let list = d.human().get_ok("/approvals").await;
    assert!(
        list.as_array()
            .expect("list")
            .iter()
            .any(|t| t["id"] == id.as_str() && t["status"] == "used"),
        "{list}"
    );
    d.stop().await;
}

/// keyd's ticket routes take keyd's uid only from keyd's own process outside the command
/// sandbox (the 2026-11-30 review: a command running as keyd's uid opened keyd-origin tickets
/// with words of its own). Here keyd's uid is the test's (root): the same request from this
/// process opens a ticket, from another mount namespace it is a 403 and nothing is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyd_tickets_are_keyds_own_not_its_uids() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: keyd_tickets_are_keyds_own_not_its_uids needs root for unshare -m");
        return;
    }
    let d = Daemon::start_with(agentd::Settings {
        keyd_uid: Some(nix::unistd::getuid().as_raw()),
        ..agentd::Settings::default()
    })
    .await;
    let open = |to: &str| {
        serde_json::json!({
            "operation": {"daemon": "keyd", "op": "send", "wallet": "main", "chain": "solana", "to": to, "amount": "5"},
            "effect": ["send 5 lamports"],
        })
    };
    let inside = tokio::process::Command::new("unshare")
        .arg("-m")
        .args(["curl", "-sS", "--unix-socket"])
        .arg(&d.socket)
        .args(["-H", "content-type: application/json", "-d"])
        .arg(open("Other111").to_string())
        .arg("http://agentd/daemon/ticket/open")
        .output()
        .await
        .expect("unshare");
    let answer = String::from_utf8_lossy(&inside.stdout);
    assert!(
        answer.contains("runs inside the command sandbox"),
        "{answer} {}",
        String::from_utf8_lossy(&inside.stderr)
    );
    let pending = d.human().get_ok("/approvals").await;
    assert_eq!(pending.as_array().map(Vec::len), Some(0), "{pending}");
    let r = d
        .agent()
        .post("/daemon/ticket/open", &open("Mine111"))
        .await
        .expect("post");
    assert_eq!(r.status, 200, "{}", r.body);
}

/// A root command reads no credential that `/fs/read` refuses (the 2026-11-30 review: `cat
/// /etc/shadow` and agentd's own key files through `/system/exec` as root): the password hashes
/// and agentd's capability key read as empty, while the rest of `/etc` is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_commands_read_no_credentials() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: root_commands_read_no_credentials needs root to run a command as root");
        return;
    }
    // Outside /tmp, which every command gets fresh.
    let keys = tempfile::tempdir_in("/var/tmp").expect("tempdir");
    let key = keys.path().join("capability.key");
    std::fs::write(&key, "SECRET-CAPABILITY-KEY").expect("write");
    // agentd refuses a key group or others can read (the key-file rule).
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let d = Daemon::start_with(agentd::Settings {
        capability_key: Some(key.clone()),
        ..agentd::Settings::default()
    })
    .await;
    let r = d
        .agent()
        .post_ok(
            "/system/exec",
            &json!({
                "argv": ["/bin/sh", "-c", format!(
                    "printf 'readable=%s passwd=%s' \"$(cat /etc/shadow /etc/gshadow {} 2>/dev/null | wc -c)\" \"$(head -c 5 /etc/passwd)\"",
                    key.display()
                )],
                "timeout_secs": 20, "user": "root",
            }),
        )
        .await;
    assert_eq!(
        r["stdout"], "readable=0 passwd=root:",
        "no byte of a credential (masked: empty or refused), /etc/passwd as it is: {r}"
    );
}

/// The review's race (issue 11, finding 4): while something swaps a directory and a symlink to
/// the osModa state root back and forth (`renameat2(RENAME_EXCHANGE)`, as a command given the
/// parent writable can), commands ask for `<race>/d/agentd` writable, or as their working
/// directory. Whatever the timing, a command sees and writes only the decoy: the path is
/// opened once, checked through that descriptor and bound by it; a working directory is
/// entered inside the sandbox, where the masks already hold. 300 attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_symlink_raced_into_a_writable_path_never_binds_the_state() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: a_symlink_raced_into_a_writable_path_never_binds_the_state needs root for bubblewrap binds");
        return;
    }
    // Outside /tmp: commands get a fresh one, where a working directory would not exist.
    let d = Daemon::start_in_state_root_under(std::path::Path::new("/var/tmp")).await;
    let state = d.dir.path().join("osmoda/agentd");
    assert!(state.join("ledger.db").exists());
    let race = d.dir.path().join("race");
    std::fs::create_dir_all(race.join("d/agentd")).expect("decoy");
    std::os::unix::fs::symlink("../osmoda", race.join("s")).expect("symlink");
    let racer = Swapper::start(race.join("d"), race.join("s"));
    let w = race.join("d/agentd");
    let (mut ran, mut refused) = (0, 0);
    for i in 0..300 {
        let body = if i % 2 == 0 {
            json!({ "command": format!("ls -A {0}; echo WROTE > {0}/written-by-sandbox", w.display()),
                    "timeout_secs": 10, "user": "root", "writable": [w] })
        } else {
            json!({ "command": "ls -A .; echo WROTE > written-by-sandbox",
                    "timeout_secs": 10, "user": "root", "cwd": w })
        };
        let r = d.agent().post("/system/exec", &body).await.expect("exec");
        match r.status {
            200 => {
                ran += 1;
                let out = r.body["stdout"].as_str().unwrap_or_default();
                assert!(
                    !out.contains("ledger.db") && !out.contains("checkpoint"),
                    "attempt {i} saw agentd's state: {}",
                    r.body
                );
            }
            403 | 409 => refused += 1,
            s => panic!("attempt {i}: unexpected {s}: {}", r.body),
        }
        assert!(
            !state.join("written-by-sandbox").exists(),
            "attempt {i} wrote into agentd's state: {}",
            r.body
        );
    }
    let swaps = racer.stop();
    println!("race: {ran} ran, {refused} refused, {swaps} swaps");
    assert!(swaps > 300, "the race ran ({swaps} swaps)");
    // Both sides of the race were hit: commands ran (with the decoy) and checks saw the swap.
    assert!(ran > 0 && refused > 0, "ran {ran}, refused {refused}");
    let decoy_written = ["d", "s"]
        .iter()
        .any(|n| race.join(n).join("agentd/written-by-sandbox").exists());
    assert!(decoy_written, "no command wrote the decoy (ran {ran})");
    d.stop().await;
}

/// A command cannot reach agentd through its resources (issue 11): a fork bomb and a memory
/// hog run through `/system/exec` (as root, which `RLIMIT_NPROC` never bounds) stop at the
/// run's own group (`osmoda_sandbox::COMMAND_LIMITS`: 512 tasks, 2 GiB), leave nothing behind,
/// and agentd answers throughout. Bounded here (600 forks, 3 GB) so that a failure cannot take
/// the machine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commands_fork_bomb_and_memory_hog_stay_in_their_own_group() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: a_commands_fork_bomb_and_memory_hog_stay_in_their_own_group needs root (cgroups, a root command)");
        return;
    }
    let d = Daemon::start_with_tree().await;
    let bomb = "import os, time\nn = 0\nfor i in range(600):\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n    if pid == 0:\n        time.sleep(60)\n        os._exit(0)\n    n += 1\nprint(n, flush=True)\nos._exit(0)\n";
    let r = exec(
        &d,
        json!({ "argv": ["/usr/bin/python3", "-c", bomb], "timeout_secs": 60, "user": "root" }),
    )
    .await;
    let n: u64 = r["stdout"]
        .as_str()
        .unwrap_or("")
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{r}"));
    assert!(
        (1..osmoda_sandbox::COMMAND_LIMITS.tasks).contains(&n),
        "{n} children under a bound of {}: {r}",
        osmoda_sandbox::COMMAND_LIMITS.tasks
    );
    let left = || {
        std::fs::read_dir("/proc")
            .expect("proc")
            .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
            .filter(|c| {
                c.starts_with(b"/usr/bin/python3\0-c\0import os, time\nn = 0\nfor i in range(600)")
            })
            .count()
    };
    let t = std::time::Instant::now();
    while left() > 0 && t.elapsed() < std::time::Duration::from_secs(10) {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(left(), 0, "the command's children outlived its run");
    d.agent().get_ok("/health").await;

    let hog = "b = bytearray(3 * 1024 * 1024 * 1024)\nfor i in range(0, len(b), 4096):\n    b[i] = 1\nprint('held', flush=True)\n";
    let r = exec(
        &d,
        json!({ "argv": ["/usr/bin/python3", "-c", hog], "timeout_secs": 60, "user": "root" }),
    )
    .await;
    assert_ne!(r["exit_code"].as_i64(), Some(0), "{r}");
    assert!(!r["stdout"].as_str().unwrap_or("").contains("held"), "{r}");
    d.agent().get_ok("/health").await;
    d.stop().await;
}
