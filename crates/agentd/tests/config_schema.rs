//! `services.osmoda` edits are checked against the module's option schema before anything is
//! written: a typo, a wrong type or a value outside an enum is a 422 naming the option and what
//! is allowed, and the ledger, the tree and the history stay as they were.

mod common;

use common::{git, ClientExt, Daemon};
use serde_json::{json, Value};

fn nix_installed() -> bool {
    std::process::Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn option_edits_outside_the_schema_are_refused_before_anything_is_written() {
    let d = Daemon::start_with_tree().await;
    let head = git(&d.tree_dir(), &["rev-parse", "HEAD"]);
    let w = "services.osmoda.watch.watchers.web";
    let mut cases: Vec<(&str, Value, &[&str], Option<&str>)> = vec![
        (
            "/config/set",
            json!({"path": "services.osmoda.wach.watchers.x", "value": {"intervalSecs": 5}, "reason": "typo"}),
            &[
                "services.osmoda.wach",
                "did you mean `services.osmoda.watch`",
            ],
            Some("services.osmoda.watch"),
        ),
        (
            "/config/set",
            json!({"path": format!("{w}.intervalSecs"), "value": "ten", "reason": "wrong type"}),
            &["intervalSecs", "positive integer", "\"ten\""],
            None,
        ),
        (
            "/config/set",
            json!({"path": w, "value": {"check": {"type": "htp", "url": "http://127.0.0.1/"}}, "reason": "enum"}),
            &[
                "web.check.type",
                "\"htp\" is not allowed",
                "did you mean \"http\"",
            ],
            Some("http"),
        ),
        (
            "/config/append",
            json!({"path": format!("{w}.actions"), "value": "reboot", "reason": "enum element"}),
            &["actions.*", "\"reboot\""],
            None,
        ),
        (
            "/config/append",
            json!({"path": "services.osmoda.gateway.port", "value": 1, "reason": "not a list"}),
            &["is not a list"],
            None,
        ),
    ];
    if nix_installed() {
        // Raw values that evaluate on their own are checked by their value…
        cases.push((
            "/config/set",
            json!({"path": format!("{w}.intervalSecs"), "nix": "\"t\" + \"en\"", "reason": "raw"}),
            &["intervalSecs", "positive integer", "\"ten\""],
            None,
        ));
    }
    // …and the rest by their path.
    cases.push((
        "/config/set",
        json!({"path": "services.osmoda.watch.watcher", "nix": "lib.mkForce { }", "reason": "raw path"}),
        &["did you mean `services.osmoda.watch.watchers`"],
        Some("services.osmoda.watch.watchers"),
    ));
    for (route, body, want, suggestion) in cases {
        let r = d.agent().post(route, &body).await.expect("post");
        assert_eq!(r.status, 422, "{body} → {}", r.body);
        let error = r.body["error"].as_str().expect("error");
        for w in want {
            assert!(error.contains(w), "{body}: {error:?} lacks {w:?}");
        }
        assert!(r.body["detail"]["option"].is_string(), "{}", r.body);
        assert!(r.body["detail"]["expected"].is_string(), "{}", r.body);
        assert_eq!(
            r.body["detail"]["did_you_mean"].as_str(),
            suggestion,
            "{}",
            r.body
        );
    }
    assert_eq!(git(&d.tree_dir(), &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&d.tree_dir(), &["status", "--porcelain"]), "");
    let log = d.agent().get_ok("/events/log?type=config.*").await;
    assert_eq!(log, json!([]), "refused edits write nothing to the ledger");

    // The same edits, corrected, land.
    d.agent()
        .post_ok(
            "/config/set",
            &json!({"path": w, "value": {"check": {"type": "http", "url": "http://127.0.0.1/"}, "intervalSecs": 10, "actions": ["notify"]}, "reason": "watch web"}),
        )
        .await;
    d.agent()
        .post_ok(
            "/config/append",
            &json!({"path": format!("{w}.actions"), "value": "restart", "reason": "escalate"}),
        )
        .await;
    d.stop().await;
}
