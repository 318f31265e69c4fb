//! CRLF trees end to end: an edit of a CRLF file writes only CRLF line breaks (JSON lists and
//! attribute sets rendered over several lines included), and a set that changes no value is
//! "nothing changed" (409, no generation) whether git stores the file with CRLF (no attributes)
//! or normalises it (`* text=auto`, CRLF only in the work tree).

mod common;

use common::{git, ClientExt, Daemon};
use serde_json::json;

fn bare_lf(text: &str) -> usize {
    text.replace("\r\n", "").matches('\n').count()
}

async fn crlf_tree(attributes: Option<&str>) -> Daemon {
    let d = Daemon::start_with_tree().await;
    let dir = d.tree_dir();
    if let Some(a) = attributes {
        std::fs::write(dir.join(".gitattributes"), format!("{a}\n")).expect("write");
    }
    for f in ["osmoda.nix", "configuration.nix"] {
        let p = dir.join(f);
        let text = std::fs::read_to_string(&p).expect("read");
        std::fs::write(&p, text.replace('\n', "\r\n")).expect("write");
    }
    let status = d.agent().get_ok("/config/status").await;
    if status["clean"] == json!(false) {
        d.agent()
            .post_ok("/config/commit", &json!({"reason": "CRLF"}))
            .await;
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crlf_files_get_crlf_lines_and_a_no_op_set_records_nothing() {
    for attributes in [None, Some("* text=auto")] {
        let d = crlf_tree(attributes).await;
        let dir = d.tree_dir();
        let case = format!("{attributes:?}");
        for body in [
            json!({"path": "services.osmoda.watch.watchers.sshd.actions", "value": ["restart", "rollback", "notify", "restart", "rollback", "notify"], "reason": "list"}),
            json!({"path": "networking.firewall.allowedTCPPorts", "value": [22, 80, 443, 8080, 8443, 9090, 9100, 9200, 9300, 9400, 9500, 9600, 9700, 9800, 9900, 10000, 10100, 10200, 10300], "reason": "ports"}),
            json!({"path": "services.osmoda.watch.watchers.web", "value": {"check": {"type": "http", "url": "http://127.0.0.1/"}, "intervalSecs": 5, "actions": ["notify"]}, "reason": "set"}),
        ] {
            d.agent().post_ok("/config/set", &body).await;
            for f in ["osmoda.nix", "configuration.nix"] {
                let text = std::fs::read_to_string(dir.join(f)).expect("read");
                assert_eq!(
                    bare_lf(&text),
                    0,
                    "{case}: {body}: {f} has LF-only lines: {text:?}"
                );
            }
            assert_eq!(git(&dir, &["status", "--porcelain"]), "", "{case}: clean");
        }
        let head = git(&dir, &["rev-parse", "HEAD"]);
        for body in [
            json!({"path": "time.timeZone", "value": "UTC", "reason": "same"}),
            json!({"path": "services.osmoda.watch.watchers.sshd.intervalSecs", "value": 30, "reason": "same"}),
        ] {
            let r = d.agent().post("/config/set", &body).await.expect("post");
            assert_eq!(r.status, 409, "{case}: {body}: {}", r.body);
            assert!(
                r.body["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("nothing changed"),
                "{case}: {}",
                r.body
            );
        }
        assert_eq!(
            git(&dir, &["rev-parse", "HEAD"]),
            head,
            "{case}: no generation"
        );
        assert_eq!(git(&dir, &["status", "--porcelain"]), "", "{case}: clean");
        let text = std::fs::read_to_string(dir.join("osmoda.nix")).expect("read");
        assert_eq!(
            bare_lf(&text),
            0,
            "{case}: a refused no-op keeps the CRLF bytes"
        );
        d.stop().await;
    }
}
