//! No routine's sandbox may bind a path holding a secret of an osModa daemon
//! (`osmoda_config::binds`): a ring1 routine whose egress capability binds a webhook's secret
//! file, a directory holding it, another daemon's key file (`daemon_secrets`), a masked path or
//! this daemon's own state is refused by `check-config` (lexically, at build time), at load
//! (with symlinks resolved) and by `/routine/add` (400, nothing recorded), in either order of
//! arrival (a ring1 routine over an existing secret, a webhook whose secret lies under an
//! existing routine's bind). Refusals name the capability, the bind and the secret's option,
//! never the secret's path.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;

use common::{options, scratch, write_config_full, Agentd, Routines};
use serde_json::{json, Value};

fn ring1(cap: &str) -> Value {
    json!({ "enable": true, "trigger": { "type": "interval", "seconds": 3600 },
            "action": { "type": "command", "command": ["true"], "timeout_secs": 5,
                        "sandbox": "ring1", "capabilities": [cap] } })
}

fn hook(path: &str, secret: &Path) -> Value {
    json!({ "enable": true,
            "trigger": { "type": "webhook", "path": path, "secret_file": secret },
            "action": { "type": "command", "command": ["true"], "timeout_secs": 5 } })
}

fn check_config(file: &Path) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_osmoda-routines"))
        .arg("check-config")
        .arg(file)
        .env("NIX_BUILD_TOP", "/build")
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn start_error(d: &Path, agentd: &Path) -> String {
    match osmoda_routines::AppState::open(options(d, agentd)).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("started"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ring_binds_never_show_a_secret() {
    let dir = scratch();
    let d = dir.path();
    let agentd = Agentd::start(d, None);
    let secret = d.join("etc/hooks/deploy.secret");
    std::fs::create_dir_all(secret.parent().unwrap()).unwrap();
    common::write_secret(&secret, "webhook-secret-bytes\n");
    std::fs::create_dir_all(d.join("keys")).unwrap();
    std::fs::create_dir_all(d.join("data")).unwrap();
    std::os::unix::fs::symlink(d.join("etc"), d.join("view")).unwrap();
    let base = |paths: Value, routines: Value| {
        json!({ "egress_capabilities": ["data", "web"],
                "capability_paths": paths,
                "daemon_secrets": { "agentd.capabilityKeyFile": d.join("keys/cap.key") },
                "routines": routines })
    };
    let secret_text = secret.display().to_string();
    let file = d.join("routines.json");

    // Refused at build time and at load: the bind is the secret, holds it, or holds another
    // daemon's key; the message names the option, not the secret's path.
    for (bind, option) in [
        (d.join("etc"), "routines.deploy.trigger.secret_file"),
        (secret.clone(), "routines.deploy.trigger.secret_file"),
        (d.to_path_buf(), "boundary.masked_paths"),
        (d.join("keys"), "agentd.capabilityKeyFile"),
        (d.join("osmoda-admin/x"), "boundary.masked_paths"),
    ] {
        let mut cfg = base(
            json!({ "web": [d.join("data"), &bind] }),
            json!({ "deploy": hook("deploy", &secret), "fetch": ring1("web") }),
        );
        cfg["boundary"] = json!({ "masked_paths": [d.join("osmoda-admin")] });
        write_config_full(d, cfg);
        let (ok, text) = check_config(&file);
        let want = format!(
            "routines.fetch.action.capabilities: \"web\" binds {} into the ring1 sandbox",
            bind.display()
        );
        assert!(!ok && text.contains(&want), "{}: {text}", bind.display());
        assert!(text.contains(&format!("({option})")), "{text}");
        let err = start_error(d, &agentd.socket).await;
        assert!(err.contains(&want) && err.contains(option), "{err}");
        if bind != secret {
            assert!(!err.contains(&secret_text), "{err}");
        }
    }

    // Through a symlink the build-time check cannot see it; the load resolves it. So does the
    // daemon's own state (a bind of the state root) and its socket.
    for (bind, option) in [
        (d.join("view"), "routines.deploy.trigger.secret_file"),
        (d.join("state"), "a path hidden from routines' commands"),
        (
            d.join("routines.sock"),
            "a path hidden from routines' commands",
        ),
    ] {
        write_config_full(
            d,
            base(
                json!({ "web": [&bind] }),
                json!({ "deploy": hook("deploy", &secret), "fetch": ring1("web") }),
            ),
        );
        let (ok, text) = check_config(&file);
        assert!(ok, "lexically fine: {text}");
        let err = start_error(d, &agentd.socket).await;
        assert!(
            err.contains(&format!("\"web\" binds {}", bind.display())) && err.contains(option),
            "{}: {err}",
            bind.display()
        );
        assert!(!err.contains(&secret_text), "{err}");
    }

    // In force: a webhook and a ring1 routine on a capability that binds only `data`.
    write_config_full(
        d,
        base(
            json!({ "web": [d.join("etc")], "data": [d.join("data")] }),
            json!({ "deploy": hook("deploy", &secret), "fetch": ring1("data") }),
        ),
    );
    let r = Routines::start(options(d, &agentd.socket)).await;
    let (_, h) = r.get("/health").await;
    assert_eq!(h["status"], "ok", "{h}");
    let before = agentd.events("").len();
    // A new ring1 routine on `web` (binds the secret's directory): 400 before anything is asked.
    let (s, v) = r
        .post(
            "/routine/add",
            json!({ "name": "grab", "trigger": { "type": "interval", "seconds": 60 },
                    "action": ring1("web")["action"] }),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    let e = v["error"].as_str().unwrap();
    assert!(
        e.contains("routines.grab.action.capabilities: \"web\" binds")
            && e.contains("routines.deploy.trigger.secret_file"),
        "{e}"
    );
    assert!(!v.to_string().contains(&secret_text), "{v}");
    // A new webhook whose secret lies under `data`, which `fetch` binds: 400 as well.
    common::write_secret(&d.join("data/new.secret"), "another-secret\n");
    {
        let s_path = d.join("data/new.secret");
        let (s, v) = r
            .post(
                "/routine/add",
                json!({ "name": "newhook",
                        "trigger": { "type": "webhook", "path": "new", "secret_file": s_path },
                        "action": { "type": "command", "command": ["true"], "timeout_secs": 5 } }),
            )
            .await;
        assert_eq!(s, 400, "{v}");
        let e = v["error"].as_str().unwrap();
        assert!(
            e.contains("routines.fetch.action.capabilities: \"data\" binds")
                && e.contains("routines.newhook.trigger.secret_file"),
            "{e}"
        );
    }
    let (s, v) = r
        .post(
            "/routine/add",
            json!({ "name": "newhook2",
                    "trigger": { "type": "webhook", "path": "new2",
                                 "secret_file": d.join("view/hooks/deploy.secret") },
                    "action": { "type": "command", "command": ["true"], "timeout_secs": 5 } }),
        )
        .await;
    // The same secret through a symlink is fine for a webhook (it binds nothing): the check
    // passed and the request went on to osmoda-watch, which is not running here (502).
    assert_eq!(s, 502, "{v}");
    assert_eq!(agentd.events("").len(), before, "nothing recorded");
    r.stop().await;
}
