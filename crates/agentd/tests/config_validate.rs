//! agentd's `--validate parse|eval|build` (`services.osmoda.agentd.validate`): how much checking
//! an edit gets before it is committed.

mod common;

use common::{git, ClientExt, Daemon};
use serde_json::json;

fn nix(args: &[&str]) -> Option<bool> {
    std::process::Command::new("nix-instantiate")
        .args(args)
        .output()
        .ok()
        .map(|o| o.status.success())
}

fn settings(level: osmoda_generations::Validate) -> agentd::Settings {
    agentd::Settings {
        validate: level,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_skips_the_evaluator_and_eval_uses_it() {
    if nix(&["--version"]) != Some(true) {
        println!("skipped: nix-instantiate not found; parse and eval cannot be told apart");
        return;
    }
    let body =
        json!({"path": "services.osmoda.memory.embeddingModel", "nix": "\"a\" + 1", "reason": "r"});
    let d = Daemon::start_with_tree_and(settings(osmoda_generations::Validate::Eval)).await;
    let r = d.agent().post("/config/set", &body).await.expect("post");
    assert_eq!(r.status, 422, "{}", r.body);
    assert!(
        r.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("does not evaluate")),
        "{}",
        r.body
    );
    d.stop().await;

    let d = Daemon::start_with_tree_and(settings(osmoda_generations::Validate::Parse)).await;
    let before = git(&d.tree_dir(), &["rev-parse", "HEAD"]);
    let r = d.agent().post_ok("/config/set", &body).await;
    assert!(
        r["notes"][0]
            .as_str()
            .is_some_and(|n| n.contains("validate = parse")),
        "{r}"
    );
    assert_ne!(git(&d.tree_dir(), &["rev-parse", "HEAD"]), before);
    // Parsing is still checked.
    let r = d
        .agent()
        .post("/config/set", &json!({"path": "services.osmoda.memory.embeddingModel", "nix": "\"a\" +", "reason": "r"}))
        .await
        .expect("post");
    assert!((400..500).contains(&r.status), "{}", r.body);
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_without_nixpkgs_is_unavailable_and_commits_nothing() {
    if nix(&["--find-file", "nixpkgs"]) == Some(true) {
        println!(
            "skipped: <nixpkgs> resolves here, so validate = build evaluates instead of refusing"
        );
        return;
    }
    let d = Daemon::start_with_tree_and(settings(osmoda_generations::Validate::Build)).await;
    // A tree without a flake is evaluated with <nixpkgs>; one with a flake as the flake (its
    // inputs here are on a host that never resolves, so the test never downloads anything).
    let dir = d.tree_dir();
    std::fs::remove_file(dir.join("flake.nix")).expect("rm flake.nix");
    commit_approved(&d, "no flake").await;
    let unfetchable = "{\n  inputs.nixpkgs.url = \"git+https://osmoda-test.invalid/nixpkgs\";\n  outputs = { self, nixpkgs }: {\n    nixosConfigurations.osmoda = nixpkgs.lib.nixosSystem { modules = [ ./configuration.nix ]; };\n  };\n}\n";
    for (flake, want) in [
        (None, "needs nixpkgs"),
        (Some(unfetchable), "could not be fetched"),
    ] {
        if let Some(text) = flake {
            std::fs::write(dir.join("flake.nix"), text).expect("write flake.nix");
            commit_approved(&d, "a flake").await;
        }
        let head = git(&dir, &["rev-parse", "HEAD"]);
        let r = d
            .agent()
            .post(
                "/config/set",
                &json!({"path": "services.osmoda.watch.watchers.sshd.intervalSecs", "value": 15, "reason": "r"}),
            )
            .await
            .expect("post");
        assert_eq!(r.status, 503, "{}", r.body);
        let error = r.body["error"].as_str().expect("error");
        assert!(
            error.contains("validate = build")
                && error.contains("unavailable")
                && error.contains(want)
                && error.contains("validate = \"eval\""),
            "{error}"
        );
        assert_eq!(git(&dir, &["rev-parse", "HEAD"]), head);
        assert_eq!(git(&dir, &["status", "--porcelain"]), "");
    }
    d.stop().await;
}

/// Commits a person's hand edit of flake.nix, which the gate cannot judge (it asks a person):
/// approved on the approval socket, then committed with the ticket.
async fn commit_approved(d: &Daemon, reason: &str) {
    let r = d
        .agent()
        .post("/config/commit", &json!({"reason": reason}))
        .await
        .expect("post");
    let id = match r.status {
        200 => return,
        403 => r.body["detail"]["ticket"]
            .as_str()
            .expect("ticket")
            .to_string(),
        other => panic!("{other}: {}", r.body),
    };
    d.human()
        .post_ok(&format!("/approval/{id}/approve"), &json!({}))
        .await;
    d.agent()
        .post_ok("/config/commit", &json!({"reason": reason, "approval": id}))
        .await;
}
