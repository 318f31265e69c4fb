//! Options edited where the tree defines them, checked with the real NixOS module system: after
//! the API's edits (a `mkForce` definition beside a profile's plain one, an inline module's
//! list, an option inside a part of `lib.mkMerge [ … ]` in an imported file, osModa's own
//! settings), `lib.evalModules` on the tree
//! gives the values asked for and no "conflicting definition values". And the check can fail:
//! the second definition a naive editor would add is rejected by the same evaluation.
//!
//! Runs with `../shared/nixos-eval` (or `$OSMODA_NIXOS_EVAL`): real nixpkgs `lib` and NixOS
//! modules, offline; elsewhere with `<nixpkgs>` if it resolves; otherwise it prints
//! "skipped: … not found" and checks nothing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{git, ClientExt, Daemon};
use serde_json::{json, Value};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// The evaluator to use: an expression prefix that turns `modules` into a `config`, or why none.
fn evaluator() -> Option<String> {
    let ok = |args: &[&str]| {
        Command::new("nix-instantiate")
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !ok(&["--version"]) {
        println!("skipped: nix-instantiate not found");
        return None;
    }
    let dir = std::env::var_os("OSMODA_NIXOS_EVAL")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/nixos-eval"));
    if dir.join("eval.nix").is_file() {
        return Some(format!(
            "modules: (import {} {{ inherit modules; raw = true; }}).evaluated.config",
            dir.join("eval.nix").display()
        ));
    }
    if ok(&["--find-file", "nixpkgs"]) {
        return Some(
            "modules: (import <nixpkgs/nixos/lib/eval-config.nix> { system = builtins.currentSystem; \
             modules = modules ++ [ { boot.loader.grub.enable = false; fileSystems.\"/\" = { device = \"none\"; fsType = \"tmpfs\"; }; system.stateVersion = \"24.11\"; } ]; }).config"
                .into(),
        );
    }
    println!(
        "skipped: nixos-eval not found ({}) and <nixpkgs> not found: the edited trees are not checked with the module system",
        dir.display()
    );
    None
}

/// Evaluates the tree's `configuration.nix` with osModa's module; the selected values as JSON,
/// or the module system's error.
fn evaluate(eval: &str, tree: &Path) -> Result<Value, String> {
    let expr = format!(
        "let config = ({eval}) [ {root}/modules/osmoda.nix {tree}/configuration.nix ]; in {{ \
           hostName = config.networking.hostName; \
           ports = config.networking.firewall.allowedTCPPorts; \
           permitRoot = config.services.openssh.settings.PermitRootLogin; \
           interval = config.services.osmoda.watch.watchers.sshd.intervalSecs; \
         }}",
        root = repo_root().display(),
        tree = tree.display(),
    );
    let out = Command::new("nix-instantiate")
        .args([
            "--readonly-mode",
            "--eval",
            "--strict",
            "--json",
            "-E",
            &expr,
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

const CONFIGURATION: &str = "{ lib, ... }:\n{\n  imports = [\n    ./osmoda.nix\n    ./profile.nix\n    ./ssh.nix\n    { networking.firewall.allowedTCPPorts = [ 22 ]; }\n  ];\n\n  # This machine's name wins over the profile's.\n  networking.hostName = lib.mkForce \"web\";\n}\n";
const PROFILE: &str = "{ ... }:\n{\n  networking.hostName = \"generic\";\n}\n";
const SSH: &str = "{ lib, ... }:\n{\n  services.openssh = lib.mkMerge [\n    { enable = true; }\n    { settings.PermitRootLogin = \"no\"; }\n  ];\n}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_made_where_options_are_defined_evaluate_with_the_module_system() {
    let Some(eval) = evaluator() else { return };
    let d = Daemon::start_with_tree().await;
    let tree = d.tree_dir();
    for (name, text) in [
        ("configuration.nix", CONFIGURATION),
        ("profile.nix", PROFILE),
        ("ssh.nix", SSH),
    ] {
        std::fs::write(tree.join(name), text).expect("write");
    }
    git(&tree, &["add", "-A"]);
    git(
        &tree,
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
    let before = evaluate(&eval, &tree).expect("the fixture evaluates");
    assert_eq!(before["hostName"], "web", "{before}");

    // The hostName has two definitions: name the one to edit; its mkForce is kept.
    let r = d
        .agent()
        .post(
            "/config/set",
            &json!({"path": "networking.hostName", "value": "db", "reason": "r"}),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 409, "{}", r.body);
    let r = d
        .agent()
        .post_ok("/config/set", &json!({"path": "networking.hostName", "value": "db", "file": "configuration.nix", "reason": "rename"}))
        .await;
    assert!(r["notes"].to_string().contains("mkForce"), "{r}");
    // The inline module's list, the imported file's option, osModa's own setting.
    d.agent()
        .post_ok("/config/append", &json!({"path": "networking.firewall.allowedTCPPorts", "value": 443, "reason": "https"}))
        .await;
    d.agent()
        .post_ok("/config/set", &json!({"path": "services.openssh.settings.PermitRootLogin", "value": "prohibit-password", "reason": "keys only"}))
        .await;
    d.agent()
        .post_ok("/config/set", &json!({"path": "services.osmoda.watch.watchers.sshd.intervalSecs", "value": 15, "reason": "faster"}))
        .await;
    assert_eq!(git(&tree, &["status", "--porcelain"]), "");

    let after =
        evaluate(&eval, &tree).unwrap_or_else(|e| panic!("the edited tree does not evaluate: {e}"));
    assert_eq!(
        after,
        json!({"hostName": "db", "ports": [22, 443], "permitRoot": "prohibit-password", "interval": 15})
    );

    // The same change made the naive way — a second plain definition in osmoda.nix — is what
    // NixOS rejects; the check above would have caught it.
    let naive = std::fs::read_to_string(tree.join("ssh.nix"))
        .expect("read")
        .replace(
            "{\n  services",
            "{\n  networking.hostName = \"db\";\n  services",
        );
    let copy = tempfile::tempdir().expect("tempdir");
    for name in ["configuration.nix", "profile.nix", "osmoda.nix"] {
        std::fs::copy(tree.join(name), copy.path().join(name)).expect("copy");
    }
    std::fs::write(copy.path().join("ssh.nix"), naive).expect("write");
    let mut naive_conf =
        std::fs::read_to_string(copy.path().join("configuration.nix")).expect("read");
    naive_conf = naive_conf.replace("lib.mkForce \"db\"", "\"db2\"");
    std::fs::write(copy.path().join("configuration.nix"), naive_conf).expect("write");
    let err = evaluate(&eval, copy.path()).expect_err("two plain definitions must not evaluate");
    assert!(err.contains("conflicting definition values"), "{err}");
    d.stop().await;
}
