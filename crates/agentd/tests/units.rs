//! `/system/query` `service` and `journal` against a real agentd: bad arguments are refused
//! first (400 with what to fix); then systemd answers where it runs, and "unavailable here"
//! (503) where it does not.

mod common;

use common::Daemon;
use serde_json::json;

#[tokio::test]
async fn service_and_journal() {
    let d = Daemon::start().await;
    let a = d.agent();
    let query = |q: &str, args: serde_json::Value| {
        let a = a.clone();
        let body = json!({ "query": q, "args": args });
        async move { a.post("/system/query", &body).await.expect("post") }
    };
    for (q, args, needle) in [
        ("service", json!(null), "not a systemd unit name"),
        (
            "service",
            json!({ "unit": "-H evil" }),
            "not a systemd unit name",
        ),
        (
            "service",
            json!({ "unit": "nginx", "all": true }),
            "invalid args for `service`",
        ),
        ("journal", json!({ "lines": 0 }), "lines must be"),
        ("journal", json!({ "lines": 5000 }), "lines must be"),
        (
            "journal",
            json!({ "unit": "a;b" }),
            "not a systemd unit name",
        ),
        (
            "journal",
            json!({ "since": "$(reboot)" }),
            "`since` must be",
        ),
        (
            "journal",
            json!({ "priority": "loud" }),
            "`priority` must be",
        ),
    ] {
        let r = query(q, args.clone()).await;
        assert_eq!(r.status, 400, "{q} {args}: {}", r.body);
        assert!(
            r.body["error"]
                .as_str()
                .unwrap_or_default()
                .contains(needle),
            "{q} {args}: {}",
            r.body
        );
    }
    let systemd = std::path::Path::new("/run/systemd/system").exists();
    let svc = query("service", json!({ "unit": "systemd-journald" })).await;
    let jr = query("journal", json!({ "unit": "systemd-journald", "lines": 5, "priority": "info", "since": "1 hour ago" })).await;
    if systemd {
        assert_eq!(svc.status, 200, "{}", svc.body);
        assert_eq!(svc.body["Id"], "systemd-journald.service");
        assert_eq!(jr.status, 200, "{}", jr.body);
        assert!(jr.body.as_array().expect("array").len() <= 5);
        let missing = query("service", json!({ "unit": "osmoda-no-such-unit" })).await;
        assert_eq!(missing.status, 404, "{}", missing.body);
    } else {
        for r in [svc, jr] {
            assert_eq!(r.status, 503, "{}", r.body);
            assert!(
                r.body["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("unavailable here"),
                "{}",
                r.body
            );
        }
    }
    d.stop().await;
}
