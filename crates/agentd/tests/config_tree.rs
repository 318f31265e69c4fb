//! Edits of real-shaped trees through the API: options are edited where the tree defines them
//! (following imports and inline modules), lists through append/remove, raw values evaluated in
//! restricted mode, and trees agentd must not touch (detached HEAD, symlinks) refused.

mod common;

use std::path::Path;

use common::{git, ClientExt, Daemon};
use serde_json::{json, Value};

async fn post(d: &Daemon, path: &str, body: Value) -> (u16, Value) {
    let r = d.agent().post(path, &body).await.expect("post");
    (r.status, r.body)
}

/// Writes `files` into the tree and records them as a person's generation.
fn commit_files(tree: &Path, files: &[(&str, &str)]) {
    for (name, text) in files {
        let p = tree.join(name);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_option_is_edited_where_the_tree_defines_it() {
    let d = Daemon::start_with_tree().await;
    // The starter tree sets time.timeZone in configuration.nix; the agent's default file is
    // osmoda.nix. The edit must go to configuration.nix, not add a conflicting definition.
    let r = d
        .agent()
        .post_ok(
            "/config/set",
            &json!({"path": "time.timeZone", "value": "Europe/Berlin", "reason": "move"}),
        )
        .await;
    assert_eq!(r["file"], "configuration.nix");
    let conf = std::fs::read_to_string(d.tree_dir().join("configuration.nix")).expect("read");
    assert!(
        conf.contains("time.timeZone = \"Europe/Berlin\";"),
        "{conf}"
    );
    let osmoda = std::fs::read_to_string(d.tree_dir().join("osmoda.nix")).expect("read");
    assert!(!osmoda.contains("timeZone"), "{osmoda}");

    // get reports the definition with file:line.
    let g = d.agent().get_ok("/config/get?path=time.timeZone").await;
    assert_eq!(g["value"], "Europe/Berlin");
    assert_eq!(g["definitions"][0]["file"], "configuration.nix");
    assert_eq!(g["definitions"][0]["line"], 13);

    // Naming another file while configuration.nix defines it: refused with the existing place.
    let (status, body) = post(
        &d,
        "/config/set",
        json!({"path": "networking.hostName", "value": "x", "file": "osmoda.nix", "reason": "r"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("configuration.nix:12"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inline_modules_several_definitions_and_priorities() {
    let d = Daemon::start_with_tree().await;
    let tree = d.tree_dir();
    let conf = std::fs::read_to_string(tree.join("configuration.nix")).expect("read");
    let conf = conf.replace(
        "imports = [ ./osmoda.nix ];",
        "imports = [\n    ./osmoda.nix\n    ./hosts/web.nix\n    { services.openssh.ports = [ 2222 ]; }\n  ];",
    );
    commit_files(
        &tree,
        &[
            ("configuration.nix", conf.as_str()),
            ("hosts/web.nix", "{ lib, ... }:\nlet port = 80;\nin\n{\n  networking.firewall.allowedTCPPorts = [ 80 ];\n  hardware.pulseaudio.enable = lib.mkForce false;\n}\n"),
        ],
    );
    // The inline module holds the only definition: edited in place.
    let r = d
        .agent()
        .post_ok(
            "/config/append",
            &json!({"path": "services.openssh.ports", "value": 2223, "reason": "second port"}),
        )
        .await;
    assert_eq!(r["file"], "configuration.nix");
    let conf = std::fs::read_to_string(tree.join("configuration.nix")).expect("read");
    assert!(
        conf.contains("{ services.openssh.ports = [ 2222 2223 ]; }"),
        "{conf}"
    );

    // Defined in configuration.nix and hosts/web.nix: refused, listing both places.
    let (status, body) = post(
        &d,
        "/config/append",
        json!({"path": "networking.firewall.allowedTCPPorts", "value": 443, "reason": "r"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let msg = body["error"].as_str().expect("error");
    assert!(
        msg.contains("configuration.nix:") && msg.contains("hosts/web.nix:5"),
        "{msg}"
    );
    // Naming the file resolves it.
    let r = d.agent().post_ok("/config/append", &json!({"path": "networking.firewall.allowedTCPPorts", "value": 443, "file": "hosts/web.nix", "reason": "https"})).await;
    assert_eq!(r["file"], "hosts/web.nix");

    // mkForce is kept and reported, through the top-level let.
    let r = d
        .agent()
        .post_ok(
            "/config/set",
            &json!({"path": "hardware.pulseaudio.enable", "value": true, "reason": "sound"}),
        )
        .await;
    assert!(
        r["notes"][0]
            .as_str()
            .expect("note")
            .contains("lib.mkForce"),
        "{r}"
    );
    let web = std::fs::read_to_string(tree.join("hosts/web.nix")).expect("read");
    assert!(
        web.contains("hardware.pulseaudio.enable = lib.mkForce true;"),
        "{web}"
    );
    let g = d
        .agent()
        .get_ok("/config/get?path=hardware.pulseaudio.enable")
        .await;
    assert_eq!(
        (g["value"].clone(), g["priority"].clone()),
        (json!(true), json!("lib.mkForce"))
    );
    assert_eq!(g["definitions"][0]["priority"], "lib.mkForce");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_pkgs_lists_through_append_and_remove() {
    let d = Daemon::start_with_tree().await;
    let r = d
        .agent()
        .post_ok(
            "/config/append",
            &json!({"path": "environment.systemPackages", "nix": "jq", "reason": "json"}),
        )
        .await;
    assert_eq!(r["file"], "configuration.nix");
    d.agent().post_ok("/config/remove", &json!({"path": "environment.systemPackages", "nix": "pkgs.htop", "reason": "not needed"})).await;
    let g = d
        .agent()
        .get_ok("/config/get?path=environment.systemPackages")
        .await;
    assert_eq!(g["elements"], json!(["git", "curl", "jq"]));
    let conf = std::fs::read_to_string(d.tree_dir().join("configuration.nix")).expect("read");
    assert!(
        conf.contains("with pkgs; [\n    git\n    curl\n    jq\n  ];"),
        "{conf}"
    );
    // The commit's author is stable; the caller's identity is a trailer.
    let log = git(&d.tree_dir(), &["log", "-1", "--format=%an%n%B"]);
    assert!(
        log.starts_with("agent\n") && log.contains("Osmoda-Peer: uid="),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_values_are_evaluated_in_restricted_mode_before_commit() {
    let d = Daemon::start_with_tree().await;
    if which("nix-instantiate").is_none() {
        println!("skipped: nix-instantiate not found; raw values cannot be evaluated here");
        return;
    }
    let before = git(&d.tree_dir(), &["rev-parse", "HEAD"]);
    for (raw, needle) in [
        ("1 + \"a\"", "cannot add a string to an integer"),
        (
            "builtins.readFile /nonexistent",
            "forbidden in restricted mode",
        ),
        (
            "builtins.readFile /etc/hostname",
            "forbidden in restricted mode",
        ),
    ] {
        let (status, body) = post(
            &d,
            "/config/set",
            json!({"path": "services.osmoda.motd", "nix": raw, "reason": "r"}),
        )
        .await;
        assert_eq!(status, 422, "{raw}: {body}");
        assert!(
            body["error"].as_str().expect("error").contains(needle),
            "{raw}: {body}"
        );
    }
    assert_eq!(
        git(&d.tree_dir(), &["rev-parse", "HEAD"]),
        before,
        "nothing committed"
    );
    // A value using module arguments is checked by parsing, and says so.
    let r = d
        .agent()
        .post_ok(
            "/config/append",
            &json!({"path": "environment.systemPackages", "nix": "pkgs.jq", "reason": "r"}),
        )
        .await;
    assert!(
        r["notes"][0].as_str().expect("note").contains("first use"),
        "{r}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detached_heads_symlinks_and_flakes_are_refused() {
    let d = Daemon::start_with_tree().await;
    let tree = d.tree_dir();
    // A symlink inside the tree that points outside it is never followed or committed.
    let outside = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        outside.path().join("secret.nix"),
        "{ secret = \"s3cret\"; }\n",
    )
    .expect("write");
    std::os::unix::fs::symlink(outside.path().join("secret.nix"), tree.join("link.nix"))
        .expect("symlink");
    git(&tree, &["add", "link.nix"]);
    git(
        &tree,
        &[
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@e",
            "commit",
            "-qm",
            "link",
        ],
    );
    let (status, body) = post(
        &d,
        "/config/set",
        json!({"path": "secret", "value": "x", "file": "link.nix", "reason": "r"}),
    )
    .await;
    assert!(status == 400 || status == 422, "{status} {body}");
    assert!(body.to_string().contains("symbolic link"), "{body}");
    let (status, body) = d
        .agent()
        .get("/config/get?path=secret&file=link.nix")
        .await
        .map(|r| (r.status, r.body))
        .expect("get");
    assert!(
        status >= 400 && !body.to_string().contains("s3cret"),
        "{body}"
    );

    // flake.nix is not a module.
    let (status, body) = post(
        &d,
        "/config/set",
        json!({"path": "services.nginx.enable", "value": true, "file": "flake.nix", "reason": "r"}),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().expect("error").contains("flake"),
        "{body}"
    );

    // Detached HEAD: refused, naming the fix.
    let head = git(&tree, &["rev-parse", "HEAD"]);
    git(&tree, &["checkout", "-q", head.trim()]);
    let (status, body) = post(
        &d,
        "/config/set",
        json!({"path": "services.osmoda.enable", "value": true, "reason": "r"}),
    )
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]
            .as_str()
            .expect("error")
            .contains("checkout main"),
        "{body}"
    );
    assert_eq!(git(&tree, &["rev-parse", "HEAD"]), head);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_and_paths_get_a_4xx_and_the_daemon_keeps_serving() {
    let d = Daemon::start_with_tree().await;
    let long_path = vec!["a"; 100_000].join(".");
    for body in [
        json!({"path": "services.osmoda.motd", "nix": "[".repeat(12_000), "reason": "r"}),
        json!({"path": "services.osmoda.motd", "nix": "-".repeat(100_000), "reason": "r"}),
        json!({"path": "services.osmoda.motd", "nix": format!("{}1", "1+".repeat(100_000)), "reason": "r"}),
        json!({"path": long_path, "value": 1, "reason": "r"}),
    ] {
        let (status, _) = post(&d, "/config/set", body).await;
        assert!((400..500).contains(&status), "{status}");
    }
    d.agent().get_ok("/health").await;
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(bin))
        .find(|p| p.is_file())
}
