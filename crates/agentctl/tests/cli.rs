//! agentctl against a real agentd on temp sockets: readable output, --json, exit codes.

mod common;

use std::path::Path;
use std::process::Output;

use common::{start, start_with_watch, stdout};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_events_and_json_output() {
    let env = start().await;
    let o = env.ctl(&["health"]).await;
    assert!(o.status.success());
    assert!(stdout(&o).contains("uptime"), "{}", stdout(&o));
    let o = env.ctl(&["--json", "health"]).await;
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert!(v["ram"]["total_bytes"].as_u64().expect("ram") > 0);

    env.ctl(&[
        "config",
        "set",
        "services.osmoda.watch.enable",
        "true",
        "--reason",
        "enable watch",
    ])
    .await;
    let o = env.ctl(&["events", "--type", "config.*"]).await;
    let table = stdout(&o);
    assert!(table.starts_with("    ID  TIME"), "{table}");
    assert!(
        table.contains("config.requested") && table.contains("config.committed"),
        "{table}"
    );
    let o = env.ctl(&["--json", "events", "--limit", "1"]).await;
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v[0]["type"], "config.committed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_round_trip_and_refusals_exit_non_zero() {
    let env = start().await;
    let o = env
        .ctl(&["config", "set", "services.osmoda.watch.watchers.web", r#"{"check":{"type":"tcp","host":"127.0.0.1","port":80},"intervalSecs":10,"actions":["notify"]}"#, "--reason", "watch web"])
        .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("generation "), "{}", stdout(&o));
    let o = env
        .ctl(&[
            "config",
            "get",
            "services.osmoda.watch.watchers.web.intervalSecs",
        ])
        .await;
    assert_eq!(stdout(&o).trim(), "10");
    let o = env
        .ctl(&[
            "config",
            "set",
            "environment.systemPackages",
            "--nix",
            "[ pkgs.htop ]",
            "--file",
            "configuration.nix",
            "--reason",
            "htop",
        ])
        .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(env.tree().join("configuration.nix")).expect("read");
    assert!(text.contains("pkgs.htop"));
    let o = env.ctl(&["config", "log"]).await;
    let log = stdout(&o);
    assert_eq!(log.lines().count(), 3, "{log}");
    assert!(log.lines().next().expect("line").contains("htop"));

    // Refusals: non-zero exit, the reason on stderr, nothing committed.
    for args in [
        vec![
            "config",
            "set",
            "services.osmoda.enable",
            "not-json",
            "--reason",
            "x",
        ],
        vec![
            "config",
            "set",
            "services.osmoda.enable",
            "--nix",
            "1 +",
            "--reason",
            "x",
        ],
        vec![
            "config",
            "unset",
            "services.osmoda",
            "--reason",
            "drop it all",
        ],
        vec!["config", "show", "0000000000000000000000000000000000000000"],
    ] {
        let o = env.ctl(&args).await;
        assert_eq!(o.status.code(), Some(1), "{args:?} should fail");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.starts_with("agentctl: ") && err.len() > 20,
            "{args:?}: {err}"
        );
    }
    let o = env.ctl(&["config", "log"]).await;
    assert_eq!(stdout(&o).lines().count(), 3);
    let o = env
        .ctl(&["config", "init", env.tree().to_str().expect("utf8")])
        .await;
    assert!(!o.status.success(), "init refuses a non-empty directory");
}

/// A ticket the agent asks for itself (`POST /approval/request`), with its own words.
async fn agent_ticket(env: &common::Env) -> Value {
    osmoda_client::Client::new(env.sock())
        .post(
            "/approval/request",
            &json!({"operation": {"op": "wallet.delete", "id": "w1"}, "detail": "cleanup"}),
        )
        .await
        .expect("post")
        .ok_json()
        .expect("the agent's ticket")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_are_decided_from_agentctl() {
    let env = start().await;
    let t = agent_ticket(&env).await;
    let id = t["id"].as_str().expect("id");
    let o = env.ctl(&["approvals", "list"]).await;
    assert!(
        stdout(&o).contains(id) && stdout(&o).contains("pending"),
        "{}",
        stdout(&o)
    );
    let o = env
        .ctl(&["approvals", "approve", id, "--reason", "fine"])
        .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("approved"));
    let o = env.ctl(&["approvals", "deny", id]).await;
    assert!(
        !o.status.success(),
        "a decided ticket cannot be decided again"
    );
}

/// `agentctl approvals list` labels each ticket's words with who wrote them (agentd records the
/// ticket's `origin`): the gate's and osmoda-keyd's effect lines as theirs, the agent's request
/// as the agent's words — for tickets opened through agentd's real routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_list_labels_each_tickets_words_by_their_author() {
    use std::os::unix::fs::MetadataExt;
    // This test's process plays osmoda-keyd: agentd knows its uid as keyd's.
    let mine = tempfile::tempfile().expect("temp file");
    let env = common::start_with(agentd::Settings {
        keyd_uid: Some(mine.metadata().expect("metadata").uid()),
        ..agentd::Settings::default()
    })
    .await;
    let agent = osmoda_client::Client::new(env.sock());
    let words = "wallet.send: TRANSFER 1500000000000000000 wei (1.5 ETH) to 0x3535353535353535353535353535353535353535 on chain id 1";
    let keyd = agent
        .post(
            "/daemon/ticket/open",
            &json!({"operation": {"daemon": "keyd", "op": "wallet.send", "amount": "1500000000000000000"},
                    "effect": [words]}),
        )
        .await
        .expect("post")
        .ok_json()
        .expect("keyd's ticket");
    let asked = agent_ticket(&env).await;
    let o = env
        .ctl(&[
            "config",
            "set",
            "services.openssh.enable",
            "--nix",
            "!true",
            "--file",
            "configuration.nix",
            "--reason",
            "sshd off",
        ])
        .await;
    let gate = ticket_in(&o);
    let list = stdout(&env.ctl(&["approvals", "list"]).await);
    let row = |id: &str| {
        list.lines()
            .find(|l| l.starts_with(id))
            .unwrap_or_else(|| panic!("no row {id} in {list}"))
            .to_string()
    };
    assert!(
        row(keyd["id"].as_str().expect("id")).ends_with(&format!("[osmoda-keyd's words] {words}")),
        "{list}"
    );
    assert!(
        row(&gate).contains("[agentd's words] disables service openssh"),
        "{list}"
    );
    let a = row(asked["id"].as_str().expect("id"));
    assert!(
        a.contains("[agent's words] ") && a.ends_with("— cleanup"),
        "{list}"
    );
    assert_eq!(list.matches("[agent's words]").count(), 1, "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_destructive_edit_names_its_ticket_and_approval_lets_it_land() {
    let env = start().await;
    let set = |approval: Option<&str>| {
        let mut a = vec!["config", "set", "services.openssh.enable", "--nix", "!true"];
        a.extend(["--file", "configuration.nix", "--reason", "sshd off"]);
        if let Some(id) = approval {
            a.extend(["--approval", id]);
        }
        a.into_iter().map(str::to_string).collect::<Vec<_>>()
    };
    let args = set(None);
    let o = env
        .ctl(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let id = err
        .split("agentctl approvals approve ")
        .nth(1)
        .and_then(|r| r.get(..32))
        .unwrap_or_else(|| panic!("no approve command in {err}"))
        .to_string();
    let o = env.ctl(&["approvals", "list"]).await;
    assert!(
        stdout(&o).contains(&id) && stdout(&o).contains("disables service openssh"),
        "the listing shows the effect: {}",
        stdout(&o)
    );
    let o = env.ctl(&["approvals", "approve", &id]).await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let args = set(Some(&id));
    let o = env
        .ctl(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .await;
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
}

/// The ticket id named by a refusal's "agentctl approvals approve <id>".
fn ticket_in(o: &Output) -> String {
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(!o.status.success(), "expected a refusal");
    err.split("agentctl approvals approve ")
        .nth(1)
        .and_then(|r| r.get(..32))
        .unwrap_or_else(|| panic!("no approve command in {err}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revert_and_commit_take_an_approval_too() {
    let env = start().await;
    let ok = |o: &Output| assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let cfg = ["--file", "configuration.nix", "--reason", "add dave"];
    let mut add = vec![
        "config",
        "set",
        "users.users.dave",
        r#"{"isNormalUser":true}"#,
    ];
    add.extend(cfg);
    ok(&env.ctl(&add).await);
    // Undoing it removes a user.
    let id = ticket_in(
        &env.ctl(&["config", "revert", "HEAD", "--reason", "undo"])
            .await,
    );
    ok(&env.ctl(&["approvals", "approve", &id]).await);
    let undo = [
        "config",
        "revert",
        "HEAD",
        "--reason",
        "undo",
        "--approval",
        &id,
    ];
    ok(&env.ctl(&undo).await);
    // A hand edit that turns sshd off.
    let file = env.tree().join("configuration.nix");
    let text = std::fs::read_to_string(&file).expect("read");
    let off = text.replacen(
        "enable = true;\n    settings",
        "enable = false;\n    settings",
        1,
    );
    assert_ne!(text, off);
    std::fs::write(&file, off).expect("write");
    let id = ticket_in(&env.ctl(&["config", "commit", "-m", "sshd off"]).await);
    ok(&env.ctl(&["approvals", "approve", &id]).await);
    ok(&env
        .ctl(&["config", "commit", "-m", "sshd off", "--approval", &id])
        .await);
}

fn verify(db: &Path) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .args(["verify-ledger", "--db"])
        .arg(db)
        .output()
        .expect("run")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_ledger_reads_the_file_and_names_the_first_bad_event() {
    let env = start().await;
    let agent = osmoda_client::Client::new(env.sock());
    for i in 0..5 {
        agent
            .post(
                "/events/append",
                &json!({"type": "t", "daemon": "test", "payload": {"i": i}}),
            )
            .await
            .expect("post")
            .ok_json()
            .expect("200");
    }
    let db = env.dir.path().join("state/ledger.db");
    let o = verify(&db);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(stdout(&o).contains("5 events verified"), "{}", stdout(&o));
    // Tamper with event 3's payload behind agentd's back.
    let conn = rusqlite::Connection::open(&db).expect("open");
    assert_eq!(
        conn.execute("UPDATE events SET payload = '{\"i\":99}' WHERE id = 3", [])
            .expect("tamper"),
        1
    );
    let o = verify(&db);
    assert_eq!(o.status.code(), Some(6), "exit 6: the chain is broken");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("event 3"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = verify(&env.dir.path().join("missing.db"));
    assert_eq!(
        o.status.code(),
        Some(1),
        "a missing file is an error, not a broken chain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switch_and_watchers_through_agentctl() {
    if !common::nix_available("switch_and_watchers_through_agentctl") {
        return;
    }
    let env = start_with_watch().await;
    env.ctl_code(
        0,
        &[
            "config",
            "set",
            "services.osmoda.watch.watchers.alive",
            r#"{"check":{"type":"agentd"},"intervalSecs":30,"actions":["notify"]}"#,
            "--reason",
            "watch agentd",
        ],
    )
    .await;
    let out = env
        .ctl_code(
            0,
            &[
                "--json",
                "switch",
                "begin",
                "--wait",
                "--ttl",
                common::TTL,
                "--check",
                r#"{"type":"agentd"}"#,
                "--plan",
                "add alive",
            ],
        )
        .await;
    let v: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["state"], "committed", "{out}");
    let id = v["id"].to_string();
    let history = env.ctl_code(0, &["switch", "history"]).await;
    assert!(
        history
            .lines()
            .any(|l| l.starts_with(&format!("{id} ")) && l.contains("committed")),
        "{history}"
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let table = env.ctl_code(0, &["watchers", "list"]).await;
        assert!(table.starts_with("NAME"), "{table}");
        if table
            .lines()
            .any(|l| l.starts_with("alive") && l.contains("agentd") && l.contains("ok:"))
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "watcher never ran: {table}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let o = env.ctl(&["switch", "status", "999"]).await;
    assert_eq!(o.status.code(), Some(1), "unknown switch is an error");
}
