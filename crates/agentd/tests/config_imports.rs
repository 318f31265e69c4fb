//! Imports the editor cannot follow, and imports of modules that do not exist: a first
//! definition is not added beside a computed import that may already define the option (a
//! `./. + "/dyn.nix"` import is followed: it names one file), and `append imports` refuses a
//! module that is not there. Refusals leave HEAD, the work tree and the ledger as they were.

mod common;

use common::{git, ClientExt, Daemon};
use serde_json::json;

/// Replaces `from` by `to` in configuration.nix, adds `extra` files, and records it as a
/// person's generation.
async fn hand_commit(d: &Daemon, from: &str, to: &str, extra: &[(&str, &str)]) {
    let p = d.tree_dir().join("configuration.nix");
    let text = std::fs::read_to_string(&p).expect("read");
    assert!(text.contains(from), "{from}");
    std::fs::write(&p, text.replacen(from, to, 1)).expect("write");
    for (name, body) in extra {
        std::fs::write(d.tree_dir().join(name), body).expect("write");
    }
    d.agent()
        .post_ok("/config/commit", &json!({"reason": "by hand"}))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn computed_imports_are_followed_when_they_name_a_file_and_refused_otherwise() {
    let d = Daemon::start_with_tree().await;
    hand_commit(
        &d,
        "imports = [ ./osmoda.nix ];",
        "imports = [ ./osmoda.nix (./. + \"/dyn.nix\") ];",
        &[(
            "dyn.nix",
            "{ ... }:\n{\n  networking.domain = \"example.org\";\n}\n",
        )],
    )
    .await;
    // `./. + "/dyn.nix"` names one file: the option is edited there, not defined twice.
    let r = d
        .agent()
        .post_ok(
            "/config/set",
            &json!({"path": "networking.domain", "value": "example.net", "reason": "domain"}),
        )
        .await;
    assert_eq!(r["file"], "dyn.nix", "{r}");
    let got = d.agent().get_ok("/config/get?path=networking.domain").await;
    assert_eq!(got["value"], "example.net");

    // A computed name cannot be followed: a first definition is refused, naming the import.
    hand_commit(
        &d,
        "(./. + \"/dyn.nix\")",
        "(./. + \"/${\"dyn\"}.nix\")",
        &[],
    )
    .await;
    let head = git(&d.tree_dir(), &["rev-parse", "HEAD"]);
    let events = d.agent().get_ok("/events/log?type=config.*").await;
    let r = d
        .agent()
        .post(
            "/config/set",
            &json!({"path": "networking.domain", "value": "example.com", "reason": "domain"}),
        )
        .await
        .expect("post");
    assert_eq!(r.status, 409, "{}", r.body);
    let error = r.body["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("configuration.nix:10:")
            && error.contains("cannot tell whether `networking.domain`"),
        "{error}"
    );
    assert_eq!(git(&d.tree_dir(), &["rev-parse", "HEAD"]), head);
    assert_eq!(d.agent().get_ok("/events/log?type=config.*").await, events);
    // Options defined where the editor can see still edit; naming the file says where it goes.
    d.agent()
        .post_ok(
            "/config/set",
            &json!({"path": "time.timeZone", "value": "Europe/Paris", "reason": "tz"}),
        )
        .await;
    let r = d
        .agent()
        .post_ok(
            "/config/set",
            &json!({"path": "networking.domain", "value": "example.com", "file": "dyn.nix", "reason": "domain"}),
        )
        .await;
    assert_eq!(r["file"], "dyn.nix", "{r}");
    d.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_modules_that_exist_can_be_imported() {
    let d = Daemon::start_with_tree().await;
    let head = git(&d.tree_dir(), &["rev-parse", "HEAD"]);
    for (element, status, want) in [
        (
            json!({"nix": "./missing.nix"}),
            422,
            "cannot import `./missing.nix` from configuration.nix",
        ),
        (json!({"nix": "./hosts"}), 422, "cannot import `./hosts`"),
        (
            json!({"nix": "/nonexistent/hardware-configuration.nix"}),
            422,
            "no such file on this machine",
        ),
        (json!({"value": "./osmoda.nix"}), 400, "not strings"),
    ] {
        let mut body = json!({"path": "imports", "reason": "import"});
        body.as_object_mut()
            .expect("object")
            .extend(element.as_object().cloned().unwrap_or_default());
        let r = d.agent().post("/config/append", &body).await.expect("post");
        assert_eq!(r.status, status, "{body} → {}", r.body);
        let error = r.body["error"].as_str().unwrap_or_default();
        assert!(error.contains(want), "{body}: {error}");
    }
    assert_eq!(git(&d.tree_dir(), &["rev-parse", "HEAD"]), head);
    assert_eq!(
        d.agent().get_ok("/events/log?type=config.*").await,
        json!([])
    );
    // Once the module is in the tree (a file, or a directory with default.nix), it imports.
    std::fs::create_dir_all(d.tree_dir().join("hosts")).expect("mkdir");
    std::fs::write(d.tree_dir().join("hosts/default.nix"), "{ ... }:\n{ }\n").expect("write");
    std::fs::write(d.tree_dir().join("extra.nix"), "{ ... }:\n{ }\n").expect("write");
    d.agent()
        .post_ok("/config/commit", &json!({"reason": "modules"}))
        .await;
    for nix in ["./extra.nix", "./hosts"] {
        d.agent()
            .post_ok(
                "/config/append",
                &json!({"path": "imports", "nix": nix, "reason": "import"}),
            )
            .await;
    }
    let got = d.agent().get_ok("/config/get?path=imports").await;
    assert_eq!(
        got["elements"],
        json!(["./osmoda.nix", "./extra.nix", "./hosts"]),
        "{got}"
    );
    d.stop().await;
}
