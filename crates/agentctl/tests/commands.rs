//! agentctl's incident, approval-request and watcher commands against real daemons, and the
//! examples in the help texts run as written on a fresh default tree.

mod common;

use common::{start, start_with_watch, stderr, Env};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incidents_list_show_resolve() {
    let env = start().await;
    let agent = osmoda_client::Client::new(env.sock());
    let inc = agent
        .post("/incident/create", &json!({"name": "disk full on /var"}))
        .await
        .expect("post")
        .ok_json()
        .expect("created");
    let id = inc["id"].to_string();
    agent
        .post(
            &format!("/incident/{id}/step"),
            &json!({"action": "journalctl --vacuum-size=1G", "result": "freed 3 GiB"}),
        )
        .await
        .expect("post")
        .ok_json()
        .expect("step");

    let table = env
        .ctl_code(0, &["incidents", "list", "--status", "open"])
        .await;
    assert!(table.starts_with("ID      STATUS"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with(&format!("{id} ")) && l.contains("disk full on /var")),
        "{table}"
    );
    let one = env.ctl_code(0, &["incidents", "show", &id]).await;
    assert!(
        one.contains("journalctl --vacuum-size=1G → freed 3 GiB"),
        "{one}"
    );
    let out = env
        .ctl_code(
            0,
            &[
                "incidents",
                "resolve",
                &id,
                "--reason",
                "vacuumed the journal",
            ],
        )
        .await;
    assert!(
        out.contains("resolved") && out.contains("vacuumed the journal"),
        "{out}"
    );
    let open = env
        .ctl_code(0, &["incidents", "list", "--status", "open"])
        .await;
    assert_eq!(open.lines().count(), 1, "only the header is left: {open}");
    let v: Value =
        serde_json::from_str(&env.ctl_code(0, &["--json", "incidents", "show", &id]).await)
            .expect("json");
    assert_eq!(v["resolution"], "vacuumed the journal");

    // Refusals carry the daemon's detail; a bad --status is a usage error.
    let o = env.ctl(&["incidents", "show", "424242"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("(HTTP 404)"), "{}", stderr(&o));
    let o = env.ctl(&["incidents", "list", "--status", "closed"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_request_from_the_agent_side() {
    let env = start().await;
    let op = r#"{"op":"wallet.delete","id":"w1"}"#;
    let v: Value = serde_json::from_str(
        &env.ctl_code(
            0,
            &[
                "--json",
                "approvals",
                "request",
                "--operation",
                op,
                "--reason",
                "cleanup",
            ],
        )
        .await,
    )
    .expect("json");
    let t = &v[0];
    assert_eq!(t["status"], "pending");
    assert_eq!(t["detail"], "cleanup");
    assert_eq!(t["operation"], json!({"op": "wallet.delete", "id": "w1"}));
    let id = t["id"].as_str().expect("id");
    let list = env.ctl_code(0, &["approvals", "list"]).await;
    assert!(list.contains(id) && list.contains("pending"), "{list}");
    let o = env
        .ctl(&[
            "approvals",
            "request",
            "--operation",
            "not json",
            "--reason",
            "x",
        ])
        .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--operation"), "{}", stderr(&o));
}

fn git_log(env: &Env) -> String {
    let o = std::process::Command::new("git")
        .arg("-C")
        .arg(env.tree())
        .args(["log", "--format=%s"])
        .output()
        .expect("git");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_add_and_remove_are_generations_with_reasons() {
    if !common::nix_available("watchers_add_and_remove_are_generations_with_reasons") {
        return;
    }
    let env = start_with_watch().await;
    let out = env
        .ctl_code(
            0,
            &[
                "watchers",
                "add",
                "alive",
                "--check",
                r#"{"type":"agentd"}"#,
                "--interval",
                "15",
                "--ttl",
                common::TTL,
                "--reason",
                "watch agentd itself",
            ],
        )
        .await;
    assert!(
        out.contains("watch agentd itself") && out.contains(": committed"),
        "{out}"
    );
    // osmoda-watch reloads its watchers just after the switch finishes (its reloader task), so
    // under load the first listing can precede that reload.
    let mut list = String::new();
    for _ in 0..300 {
        list = env.ctl_code(0, &["watchers", "list"]).await;
        if list.lines().any(|l| l.starts_with("alive")) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        list.lines()
            .any(|l| l.starts_with("alive") && l.contains("15s")),
        "{list}"
    );
    let out = env
        .ctl_code(
            0,
            &[
                "watchers",
                "remove",
                "alive",
                "--reason",
                "not needed any more",
            ],
        )
        .await;
    assert!(out.contains(": committed"), "{out}");
    let log = git_log(&env);
    let subjects: Vec<&str> = log.lines().take(2).collect();
    // The reasons are the commit messages.
    assert_eq!(
        subjects,
        ["not needed any more", "watch agentd itself"],
        "{log}"
    );
    let o = env
        .ctl(&["watchers", "remove", "alive", "--reason", "again"])
        .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("(HTTP 404)") && stderr(&o).contains("alive"),
        "{}",
        stderr(&o)
    );
    let o = env
        .ctl(&["watchers", "add", "x", "--check", "{", "--reason", "bad"])
        .await;
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("is not JSON"), "{}", stderr(&o));
}

/// Splits an example line the way a POSIX shell would for the quoting the help texts use.
fn shell_words(line: &str) -> Vec<String> {
    let (mut words, mut cur, mut in_word) = (Vec::new(), String::new(), false);
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                cur.extend(chars.by_ref().take_while(|&c| c != '\''));
            }
            '"' => {
                in_word = true;
                while let Some(c) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => cur.extend(chars.next()),
                        c => cur.push(c),
                    }
                }
            }
            ' ' if in_word => {
                words.push(std::mem::take(&mut cur));
                in_word = false;
            }
            ' ' => {}
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    words
}

#[test]
fn shell_words_handles_the_quoting_of_the_examples() {
    assert_eq!(
        shell_words(r#"agentctl x '{"a":1}' --reason "say \"hi\"" 'it''s'"#),
        [
            "agentctl",
            "x",
            r#"{"a":1}"#,
            "--reason",
            r#"say "hi""#,
            "its"
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_examples_work_on_the_default_tree() {
    if !common::nix_available("help_examples_work_on_the_default_tree") {
        return;
    }
    let env = start_with_watch().await;
    let mut ran = 0;
    for page in [
        &[][..],
        &["config", "get"],
        &["config", "set"],
        &["config", "append"],
        &["config", "remove"],
        &["switch", "begin"],
        &["switch", "preview"],
        &["watchers", "add"],
        &["watchers", "remove"],
        &["incidents", "list"],
        &["approvals", "request"],
        &["backup", "create"],
    ] {
        let mut args: Vec<&str> = page.to_vec();
        args.push("--help");
        let help = env.ctl_code(0, &args).await;
        let examples: Vec<&str> = help
            .lines()
            .filter_map(|l| l.strip_prefix("  "))
            .filter(|l| l.starts_with("agentctl "))
            .collect();
        assert!(
            !examples.is_empty(),
            "agentctl {page:?} --help has no examples:\n{help}"
        );
        for ex in examples {
            // Run the agentctl part; what a shell does after `|` or `&&` is not ours.
            let cmd = ex.split(" | ").next().unwrap_or(ex);
            let cmd = cmd.split(" && ").next().unwrap_or(cmd);
            let mut words = shell_words(cmd);
            // TTLs shortened to keep the suite fast; the command is otherwise as written. A
            // switch commits only after a whole round of checks finished inside its TTL, so the
            // TTL leaves room for one round on a loaded machine (common::TTL).
            let ttl_flag = ["switch begin", "watchers add"].contains(
                &words
                    .get(1..3)
                    .map(|w| w.join(" "))
                    .unwrap_or_default()
                    .as_str(),
            );
            if ttl_flag {
                match words.iter().position(|w| w == "--ttl") {
                    Some(i) => words[i + 1] = common::TTL.into(),
                    None => words.extend(["--ttl".into(), common::TTL.into()]),
                }
            }
            let refs: Vec<&str> = words[1..].iter().map(String::as_str).collect();
            let o = env.ctl(&refs).await;
            assert_eq!(
                o.status.code(),
                Some(0),
                "example `{ex}` from agentctl {page:?} --help failed:\nstdout: {}\nstderr: {}",
                common::stdout(&o),
                stderr(&o)
            );
            common::settle(&env).await;
            ran += 1;
        }
    }
    assert!(ran >= 18, "{ran} examples ran");
}
