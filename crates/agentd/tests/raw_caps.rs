//! Raw Nix values before the commit: bounded by CPU time and memory (a slow `foldl'` is refused
//! and changes nothing), and evaluated with stand-ins for their module's arguments up to the
//! first use of one.

mod common;

use common::{git, ClientExt, Daemon};
use serde_json::{json, Value};

fn nix_installed() -> bool {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .any(|d| d.join("nix-instantiate").is_file());
    if !found {
        println!("skipped: nix-instantiate not found; raw values cannot be evaluated here");
    }
    found
}

async fn set(d: &Daemon, path: &str, nix: &str) -> (u16, Value) {
    let r = d
        .agent()
        .post(
            "/config/set",
            &json!({"path": path, "nix": nix, "reason": "test"}),
        )
        .await
        .expect("post");
    (r.status, r.body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_fold_is_refused_at_its_cpu_cap_and_changes_nothing() {
    let d = Daemon::start_with_tree().await;
    if !nix_installed() {
        return;
    }
    let tree = d.tree_dir();
    let head = git(&tree, &["rev-parse", "HEAD"]).trim().to_string();
    // ~5 s of CPU in ~450 MiB: the CPU cap (2 s), not the memory cap, stops it.
    let slow = "let l = builtins.genList (x: x) 1000; in \
                builtins.foldl' (a: i: a + builtins.foldl' (x: y: x + y) 0 l) 0 (builtins.genList (x: x) 100000)";
    // Through both evaluations: as JSON (an osModa option) and plain (any other option).
    for (path, wrapped) in [
        ("services.osmoda.motd", slow.to_string()),
        ("networking.hostName", format!("{{ n = {slow}; }}.n")),
    ] {
        let (status, body) = set(&d, path, &wrapped).await;
        assert_eq!(status, 422, "{body}");
        let msg = body["error"].as_str().expect("error");
        // The CPU cap, or on a loaded machine the 10 s wall clock that comes first.
        assert!(
            msg.contains("refused before the commit")
                && (msg.contains("2 s of CPU time") || msg.contains("within 10 s")),
            "{msg}"
        );
        assert_eq!(body["detail"]["caps"]["cpu_secs"], 2, "{body}");
    }
    assert_eq!(
        git(&tree, &["rev-parse", "HEAD"]).trim(),
        head,
        "nothing committed"
    );
    assert_eq!(
        git(&tree, &["status", "--porcelain"]),
        "",
        "the tree is clean"
    );
    // The lock was released: the next edit lands at once.
    let r = d
        .agent()
        .post_ok(
            "/config/set",
            &json!({"path": "networking.hostName", "value": "after", "reason": "after"}),
        )
        .await;
    assert!(r["generation"]["rev"].is_string(), "{r}");
    assert_ne!(git(&tree, &["rev-parse", "HEAD"]).trim(), head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_naming_module_arguments_are_evaluated_up_to_their_first_use() {
    let d = Daemon::start_with_tree().await;
    if !nix_installed() {
        return;
    }
    let tree = d.tree_dir();
    let head = git(&tree, &["rev-parse", "HEAD"]).trim().to_string();
    for (raw, needle) in [
        // Errors before the first use of a module argument are found.
        (
            "[ (1 + \"a\") pkgs.vim ]",
            "cannot add a string to an integer",
        ),
        (
            "with pkgs; [ (builtins.readFile /etc/hostname) vim ]",
            "reads outside the configuration tree",
        ),
        // ... and after it: the other parts of the value are evaluated on their own.
        (
            "[ pkgs.vim (1 + \"a\") ]",
            "cannot add a string to an integer",
        ),
        (
            "with pkgs; [ vim (builtins.readFile /etc/hostname) ]",
            "reads outside the configuration tree",
        ),
        // Behind a module argument, a function's argument or an `if` (review of issue 11,
        // finding 6): refused from the syntax, before any evaluation.
        (
            "pkgs.writeText \"x\" (builtins.readFile /etc/shadow)",
            "`/etc/shadow` is an absolute path",
        ),
        (
            "[ (if pkgs.stdenv.isLinux then builtins.readFile /etc/shadow else \"\") ]",
            "`/etc/shadow` is an absolute path",
        ),
        (
            "[ (pkgs.lib.id (builtins.readFile \"/etc/shadow\")) ]",
            "reads outside the configuration tree",
        ),
        (
            "[ pkgs.vim { a = pkgs.git; b = { c = [ pkgs.jq (true + 1) ]; }; } ]",
            "cannot coerce a Boolean",
        ),
        ("[ pkgs.vim { }.missing ]", "attribute 'missing' missing"),
        // A module-system wrapper is looked through: what it wraps is evaluated.
        (
            "lib.mkForce (builtins.seq (1 + \"a\") 1)",
            "cannot add a string to an integer",
        ),
        ("lib.mkForce (pkgs.lib.seq (1 + \"a\") 1)", ""),
        ("let x = 1 + true; in pkgs.lib.optional x pkgs.vim", ""),
    ] {
        let (status, body) = set(&d, "environment.systemPackages", raw).await;
        if needle.is_empty() {
            // The error is behind a module argument: not reachable before the commit.
            assert_eq!(status, 200, "{raw}: {body}");
            let note = body["notes"][0].as_str().unwrap_or_default();
            assert!(note.contains("first use"), "{raw}: {body}");
            git(&tree, &["reset", "-q", "--hard", &head]);
            continue;
        }
        assert_eq!(status, 422, "{raw}: {body}");
        let msg = body["error"].as_str().expect("error");
        assert!(msg.contains(needle), "{raw}: {msg}");
        assert_eq!(git(&tree, &["rev-parse", "HEAD"]).trim(), head, "{raw}");
    }
    // A value that uses its arguments only where they exist is accepted, with a note.
    let r = d
        .agent()
        .post_ok(
            "/config/set",
            &json!({"path": "environment.systemPackages", "nix": "with pkgs; [ git jq ]", "reason": "r"}),
        )
        .await;
    assert!(
        r["notes"][0]
            .as_str()
            .unwrap_or_default()
            .contains("first use"),
        "{r}"
    );
}
