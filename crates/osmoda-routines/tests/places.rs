//! Where things may lie on the machine: a webhook secret in a place of its own (not in /proc
//! or /sys, not in the approval path or another daemon's state), masks the sandbox can place,
//! command users that exist, absolute state paths. Each is refused when the config is loaded
//! (start, `/routine/add`) instead of failing every run later, and a refusal about a path in
//! a hidden directory reads the same whether the file exists or not (no existence oracle).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{options, scratch, write_config, write_config_full, Agentd, Routines};
use serde_json::{json, Value};

fn hook(secret: &Path) -> Value {
    json!({ "enable": true,
            "trigger": { "type": "webhook", "path": "h", "secret_file": secret },
            "action": { "type": "command", "command": ["true"], "timeout_secs": 5 } })
}

async fn start_error(dir: &Path, agentd: &Path) -> String {
    match osmoda_routines::AppState::open(options(dir, agentd)).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started"),
    }
}

const KERNEL: &str = "is on a kernel file system";
const FOREIGN: &str = "lies where osmoda-routines may not read secrets";

#[tokio::test]
async fn secrets_must_lie_in_a_place_of_their_own() {
    let dir = scratch();
    let d = dir.path();
    let agentd = Agentd::start(d, None);
    // The harness hides `agentd/` and `osmoda-admin/` (as the module hides agentd's state and
    // the approval path); the state root `state/` holds other daemons' state.
    std::fs::write(d.join("agentd/real.key"), "agentd-key\n").unwrap();
    std::fs::create_dir_all(d.join("state/keyd")).unwrap();
    std::fs::write(d.join("state/keyd/identity.key"), "keyd-key\n").unwrap();
    std::os::unix::fs::symlink(d.join("agentd"), d.join("link")).unwrap();
    let cases: Vec<(std::path::PathBuf, &str)> = vec![
        ("/proc/self/environ".into(), KERNEL),
        ("/proc/1/environ".into(), KERNEL),
        ("/sys/kernel/no-such-file".into(), KERNEL),
        (d.join("agentd/real.key"), FOREIGN),
        (d.join("agentd/missing.key"), FOREIGN),
        (d.join("link/real.key"), FOREIGN),
        (d.join("link/missing/deeper.key"), FOREIGN),
        (d.join("osmoda-admin/approval.sock"), FOREIGN),
        (d.join("state/keyd/identity.key"), FOREIGN),
        (d.join("state/mesh/missing.key"), FOREIGN),
    ];
    let mut by_want = std::collections::BTreeMap::<&str, std::collections::BTreeSet<String>>::new();
    for (secret, want) in &cases {
        write_config(d, json!({ "h": hook(secret) }));
        let err = start_error(d, &agentd.socket).await;
        assert!(
            err.contains(&format!("routines.h.trigger.secret_file {want}")),
            "{}: {err}",
            secret.display()
        );
        assert!(!err.contains(&secret.display().to_string()), "{err}");
        by_want.entry(want).or_default().insert(err);
    }
    // Existing or not, through a symlink or not: one and the same message per rule.
    assert!(by_want.values().all(|m| m.len() == 1), "{by_want:#?}");

    // A secret in the daemon's own state dir, or outside the state root, is fine.
    for ok in [
        d.join("state/routines/own.secret"),
        d.join("elsewhere.secret"),
    ] {
        std::fs::create_dir_all(ok.parent().unwrap()).unwrap();
        common::write_secret(&ok, "a-secret-of-its-own\n");
        write_config(d, json!({ "h": hook(&ok) }));
        let r = Routines::start(options(d, &agentd.socket)).await;
        let (_, h) = r.get("/health").await;
        assert_eq!(h["status"], "ok", "{}: {h}", ok.display());
        r.stop().await;
    }

    // `/routine/add` judges the same way, before osmoda-watch or agentd is asked (there is no
    // watch here: a 400 means the check refused it), with the same answer for existing and
    // missing files.
    write_config(d, json!({}));
    let r = Routines::start(options(d, &agentd.socket)).await;
    let mut answers = std::collections::BTreeMap::<&str, std::collections::BTreeSet<String>>::new();
    for (secret, want) in &cases {
        let (s, v) = r
            .post(
                "/routine/add",
                json!({ "name": "h", "trigger": { "type": "webhook", "path": "h", "secret_file": secret },
                        "action": { "type": "command", "command": ["true"], "timeout_secs": 5 } }),
            )
            .await;
        assert_eq!(s, 400, "{}: {v}", secret.display());
        let e = v["error"].as_str().unwrap().to_string();
        assert!(e.contains(want), "{e}");
        answers.entry(want).or_default().insert(e);
    }
    assert!(answers.values().all(|m| m.len() == 1), "{answers:#?}");
    r.stop().await;

    // check-config (outside a Nix build) refuses a /proc secret too.
    write_config(d, json!({ "h": hook(Path::new("/proc/self/environ")) }));
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_osmoda-routines"))
        .arg("check-config")
        .arg(d.join("routines.json"))
        .env_remove("NIX_BUILD_TOP")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(KERNEL));
}

/// A uid the machine does not know, a relative or `..` state dir, socket or mask, and a mask in
/// /proc would each make every command run fail: each is refused at start, saying what to do.
#[tokio::test]
async fn unknown_uids_relative_paths_and_proc_masks_are_refused_at_start() {
    let dir = scratch();
    let d = dir.path();
    let agentd = Agentd::start(d, None);
    let uid = 3_999_999_999u32;
    assert!(
        nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
            .unwrap()
            .is_none(),
        "uid {uid} exists here"
    );
    write_config(
        d,
        json!({ "r": { "enable": true, "trigger": { "type": "interval", "seconds": 60 },
                       "action": { "type": "command", "command": ["true"], "timeout_secs": 5,
                                   "user": uid.to_string() } } }),
    );
    let err = start_error(d, &agentd.socket).await;
    assert!(
        err.contains(&format!(
            "routines.r.action.user: \"{uid}\" is not a user on this machine"
        )),
        "{err}"
    );
    assert!(!err.contains("`root`"), "never suggests root: {err}");

    write_config(d, json!({}));
    type Edit = fn(&mut osmoda_routines::Options);
    let edits: [(&str, Edit); 4] = [
        ("--state-dir relative/state", |o| {
            o.state_dir = "relative/state".into()
        }),
        ("--state-dir /var/lib/../tmp/x", |o| {
            o.state_dir = "/var/lib/../tmp/x".into()
        }),
        ("--socket routines.sock", |o| {
            o.socket = "routines.sock".into()
        }),
        ("--mask ./secrets", |o| o.masks.push("./secrets".into())),
    ];
    for (want, edit) in edits {
        let mut o = options(d, &agentd.socket);
        edit(&mut o);
        let err = match osmoda_routines::AppState::open(o).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("started with {want}"),
        };
        assert!(
            err.contains(&format!("{want} must be an absolute path")),
            "{err}"
        );
    }

    write_config_full(
        d,
        json!({ "routines": {}, "boundary": { "masked_paths": ["/proc/1/environ"] } }),
    );
    let err = start_error(d, &agentd.socket).await;
    assert!(
        err.contains("boundary.masked_paths: /proc/1/environ is in /proc"),
        "{err}"
    );
}

/// A user that went away after the config was loaded: the run fails saying to name an
/// unprivileged user, never suggesting `root` (the sandbox's own hint does).
#[tokio::test]
async fn a_vanished_user_is_reported_without_suggesting_root() {
    let action: osmoda_config::RoutineAction = serde_json::from_value(json!({
        "type": "command", "command": ["true"], "timeout_secs": 5, "user": "3999999999" }))
    .unwrap();
    let env = osmoda_routines::actions::ActionEnv {
        boundary: osmoda_sandbox::Boundary::new(Vec::<std::path::PathBuf>::new()),
        agentd_socket: "/nonexistent/agentd.sock".into(),
        gateway_url: None,
        gateway_token: None,
        gateway_uid: 0,
    };
    let info = osmoda_routines::actions::RunInfo {
        routine: "r".into(),
        run_id: 1,
        fired: osmoda_routines::actions::Fired {
            kind: "manual".into(),
            reference: "test".into(),
            payload: None,
            chain: Vec::new(),
            origin: None,
        },
    };
    let out = osmoda_routines::actions::run(&action, &env, &info).await;
    assert!(!out.ok);
    let e = out.error.unwrap();
    assert!(e.contains("not a user on this machine"), "{e}");
    assert!(!e.contains("root"), "{e}");
}
