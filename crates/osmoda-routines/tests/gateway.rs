//! others-13: a prompt action sends the gateway's owner token only to the gateway. Any local
//! user can bind the gateway's loopback port while the gateway is not bound to it; here a real
//! process of user `nobody` holds it (IPv4, and an IPv6 socket on the IPv4-mapped loopback,
//! whose connections the kernel lists in `tcp6`): the run fails saying who holds the port and
//! that nothing was sent, and the squatter receives no byte. The same listener gets the prompt
//! (with the token) once its user is the one routines is told runs the gateway
//! (`--gateway-user`), so the check is on that user, not on root.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::time::Duration;

use common::{options, scratch, write_config_full, Agentd, Routines};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

const NOBODY: u32 = 65534;
const PYTHON: &str = "/usr/bin/python3";

/// Listens as the caller's uid, prints `ready PORT`, then `conn N HEX` for each connection
/// (everything received until the peer closes or is silent for a second).
const SQUATTER: &str = r#"
import socket, sys
if sys.argv[1] == "4":
    s = socket.socket(socket.AF_INET); addr = ("127.0.0.1", 0)
else:
    s = socket.socket(socket.AF_INET6)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0); addr = ("::ffff:127.0.0.1", 0)
s.bind(addr); s.listen(8)
print("ready", s.getsockname()[1], flush=True)
while True:
    c, _ = s.accept(); c.settimeout(1.0); data = b""
    try:
        while True:
            d = c.recv(65536)
            if not d: break
            data += d
    except socket.timeout:
        pass
    print("conn", len(data), data.hex(), flush=True); c.close()
"#;

struct Squatter {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    port: u16,
}

impl Squatter {
    /// A listener on 127.0.0.1 run by user `nobody` (`family`: "4" or "mapped").
    async fn start(family: &str) -> Squatter {
        let mut cmd = std::process::Command::new(PYTHON);
        cmd.args(["-c", SQUATTER, family])
            .current_dir("/")
            .env_clear()
            .uid(NOBODY)
            .gid(NOBODY)
            .stdout(std::process::Stdio::piped());
        let mut child = tokio::process::Command::from(cmd)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = next_line(&mut lines).await;
        let port = ready.strip_prefix("ready ").unwrap().parse().unwrap();
        Squatter { child, lines, port }
    }

    /// What the next connection brought: its bytes.
    async fn received(&mut self) -> Vec<u8> {
        let line = next_line(&mut self.lines).await;
        let hex = line.split(' ').nth(2).unwrap_or_default();
        hex::decode(hex).unwrap()
    }
}

async fn next_line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the squatter said nothing in 30 s")
        .unwrap()
        .expect("the squatter exited")
}

/// Starts routines with one prompt routine against `port`, runs it, waits for its
/// `routine.run.finished` event (the `nth` in this ledger), returns the run.
async fn run_prompt(
    dir: &Path,
    agentd: &Agentd,
    port: u16,
    gateway_uid: Option<u32>,
    nth: usize,
) -> osmoda_routines::history::Run {
    write_config_full(
        dir,
        json!({
            "gateway_url": format!("http://127.0.0.1:{port}"),
            "routines": { "brief": { "enable": true, "trigger": { "type": "interval", "seconds": 86400 },
                "action": { "type": "prompt", "message": "Write the morning briefing.", "timeout_secs": 10 } } },
        }),
    );
    let mut opts = options(dir, &agentd.socket);
    opts.gateway_uid = gateway_uid;
    let r = Routines::start(opts).await;
    let (s, v): (u16, Value) = r.post("/routine/trigger/brief", json!({})).await;
    assert_eq!(s, 200, "{v}");
    let run = r.wait_run(v["run_id"].as_i64().unwrap()).await;
    agentd.wait_events("routine.run.finished", nth).await;
    r.stop().await;
    run
}

#[tokio::test]
async fn a_prompt_sends_nothing_to_a_port_another_user_holds() {
    if !nix::unistd::geteuid().is_root() || !Path::new(PYTHON).exists() {
        eprintln!("skipped: needs root and {PYTHON} to run a listener as another user");
        return;
    }
    let v6 = std::net::TcpListener::bind("[::ffff:127.0.0.1]:0").is_ok();
    for family in ["4", "mapped"].into_iter().filter(|f| v6 || *f == "4") {
        let dir = scratch();
        let agentd = Agentd::start(dir.path(), None);
        let mut squatter = Squatter::start(family).await;
        // routines' own uid (root here) is the gateway's by default: nobody's port is refused.
        let run = run_prompt(dir.path(), &agentd, squatter.port, None, 1).await;
        assert_eq!(run.status, "failed", "{family}: {run:?}");
        let error = run.error.clone().unwrap_or_default();
        for part in [
            "is held by uid 65534 (nobody), not the gateway's user (uid 0 (root))",
            "nothing was sent",
        ] {
            assert!(
                error.contains(part),
                "{family}: {part:?} missing in {error}"
            );
        }
        assert!(
            !format!("{run:?}").contains("test-token"),
            "{family}: {run:?}"
        );
        assert_eq!(
            squatter.received().await,
            Vec::<u8>::new(),
            "{family}: the squatter got bytes"
        );
        // The run's ledger event says it failed, and carries no token either.
        let events = agentd.events("routine.run.finished");
        assert!(!events[0].payload.contains("test-token"), "{family}");

        // Told that `nobody` runs the gateway, routines sends it the prompt with the token.
        let run = run_prompt(dir.path(), &agentd, squatter.port, Some(NOBODY), 2).await;
        let got = String::from_utf8(squatter.received().await).unwrap();
        assert!(
            got.starts_with("POST /v1/chat/completions HTTP/1.1")
                && got
                    .to_ascii_lowercase()
                    .contains("authorization: bearer test-token"),
            "{family}: {got}"
        );
        // It answers nothing, so the run fails, but not for the holder's uid.
        assert_eq!(run.status, "failed", "{run:?}");
        assert!(
            !run.error.unwrap_or_default().contains("is held by uid"),
            "{family}"
        );
        squatter.child.kill().await.unwrap();
    }
    if !v6 {
        eprintln!("no IPv6 loopback here: the IPv4-mapped case was not run");
    }
}

/// `--gateway-user` names an existing user (by name or uid), else the daemon does not start.
#[test]
fn the_gateway_user_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("routines.json");
    std::fs::write(&cfg, r#"{ "routines": {} }"#).unwrap();
    let run = |user: &str| {
        std::process::Command::new(env!("CARGO_BIN_EXE_osmoda-routines"))
            .args(["--state-dir", &dir.path().join("state").to_string_lossy()])
            .args(["--gateway-user", user, "check-config"])
            .arg(&cfg)
            .env_remove("NIX_BUILD_TOP")
            .output()
            .unwrap()
    };
    for user in ["nobody", "65534", "root"] {
        let out = run(user);
        assert!(
            out.status.success(),
            "{user}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = run("no-such-user-osmoda");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("--gateway-user \"no-such-user-osmoda\": no such user"),
        "{err}"
    );
}
