//! Every refusal and suggestion of the config API, as one table: reads say "cannot read",
//! suggestions name operations that exist (and the test runs them), positions are the node's
//! `file:line:col`.

mod common;

use std::path::Path;

use common::{git, ClientExt, Daemon};
use serde_json::{json, Value};

fn commit_files(tree: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        std::fs::write(tree.join(name), text).expect("write");
    }
    git(tree, &["add", "-A"]);
    git(
        tree,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@e",
            "commit",
            "-qm",
            "fixture",
        ],
    );
}

const EXTRA: &str = "{ lib, ... }:\n{\n  # nginx only on big hosts\n  services.nginx = lib.mkIf true {\n    enable = true;\n  };\n  networking.firewall.allowedTCPPorts = [ 80 ];\n}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_say_what_and_where_and_suggest_what_exists() {
    let d = Daemon::start_with_tree().await;
    let tree = d.tree_dir();
    let conf = std::fs::read_to_string(tree.join("configuration.nix")).expect("read");
    let conf = conf.replacen(
        "imports = [ ./osmoda.nix ];",
        "imports = [ ./osmoda.nix ./extra.nix ];",
        1,
    );
    commit_files(&tree, &[("configuration.nix", &conf), ("extra.nix", EXTRA)]);

    // (method, route, body, status, fragments that must be there, fragments that must not)
    type Case<'a> = (&'a str, String, Value, u16, Vec<&'a str>, Vec<&'a str>);
    let cases: Vec<Case> = vec![
        (
            "GET",
            "/config/get?path=services.nginx.enable".into(),
            Value::Null,
            422,
            vec!["cannot read", "mkIf", "extra.nix:4:20"],
            vec!["refusing to edit"],
        ),
        (
            "POST",
            "/config/set".into(),
            json!({"path": "services.nginx.enable", "value": false, "reason": "r"}),
            422,
            vec!["mkIf", "extra.nix:4:20"],
            vec![],
        ),
        (
            "POST",
            "/config/set".into(),
            json!({"path": "services.osmoda.enable", "value": true, "file": "flake.nix", "reason": "r"}),
            409,
            vec!["already defined at osmoda.nix:9:5", "leave `file` out"],
            vec![],
        ),
        (
            "POST",
            "/config/set".into(),
            json!({"path": "networking.domain", "value": "lan", "file": "flake.nix", "reason": "r"}),
            422,
            vec!["flake.nix:5:1 is a flake", "configuration.nix"],
            vec!["1:1"],
        ),
        (
            "POST",
            "/config/set".into(),
            json!({"path": "networking.firewall.allowedTCPPorts", "value": [80, 443], "file": "osmoda.nix", "reason": "r"}),
            409,
            vec!["already defined at configuration.nix:"],
            vec![],
        ),
        (
            "POST",
            "/config/set".into(),
            json!({"path": "imports.x", "value": 1, "reason": "r"}),
            400,
            vec![
                "`agentctl config append imports --nix ./module.nix`",
                "`agentctl config remove imports",
            ],
            vec!["1:1"],
        ),
        (
            "GET",
            "/config/get?path=imports.x".into(),
            Value::Null,
            400,
            vec!["`agentctl config append imports"],
            vec!["1:1"],
        ),
        (
            "POST",
            "/config/unset".into(),
            json!({"path": "services.nothing", "reason": "r"}),
            404,
            vec!["not defined"],
            vec![],
        ),
    ];
    for (method, route, body, status, want, never) in &cases {
        let r = if *method == "GET" {
            d.agent().get(route).await.expect("get")
        } else {
            d.agent().post(route, body).await.expect("post")
        };
        let text = r.body.to_string();
        println!("{route} {body} → {} {text}", r.status);
        assert_eq!(r.status, *status, "{route} {body}: {text}");
        for w in want {
            assert!(text.contains(w), "{route} {body}: {text} lacks {w:?}");
        }
        for n in never {
            assert!(!text.contains(n), "{route} {body}: {text} has {n:?}");
        }
    }

    // What the refusals suggest exists and works: append/remove on `imports` ...
    std::fs::write(tree.join("more.nix"), "{ }\n").expect("write");
    git(&tree, &["add", "more.nix"]);
    git(
        &tree,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@e",
            "commit",
            "-qm",
            "more",
        ],
    );
    for route in ["/config/append", "/config/remove"] {
        d.agent()
            .post_ok(
                route,
                &json!({"path": "imports", "nix": "./more.nix", "reason": "r"}),
            )
            .await;
    }
    // ... and restore, which a conflicting revert suggests.
    let first = git(&tree, &["rev-list", "--max-parents=0", "HEAD"])
        .trim()
        .to_string();
    let touched = d
        .agent()
        .post_ok("/config/set", &json!({"path": "services.osmoda.watch.watchers.sshd.intervalSecs", "value": 31, "reason": "a"}))
        .await;
    d.agent()
        .post_ok("/config/set", &json!({"path": "services.osmoda.watch.watchers.sshd.intervalSecs", "value": 32, "reason": "b"}))
        .await;
    let rev = touched["generation"]["rev"].as_str().expect("rev");
    let r = d
        .agent()
        .post("/config/revert", &json!({"rev": rev, "reason": "undo a"}))
        .await
        .expect("post");
    assert_eq!(r.status, 409, "{}", r.body);
    let error = r.body["error"].as_str().expect("error");
    assert!(error.contains("agentctl config restore <rev>"), "{error}");
    assert!(!error.contains("use restore to"), "{error}");
    let r = d
        .agent()
        .post(
            "/config/restore",
            &json!({"rev": first, "reason": "back to the start"}),
        )
        .await
        .expect("post");
    assert!(
        r.status == 200 || r.status == 403,
        "restore exists: {} {}",
        r.status,
        r.body
    );
    d.stop().await;
}
