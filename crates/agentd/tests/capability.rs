//! `/capability/mint` and `/capability/revoke` against a real agentd: a token names only
//! declared capabilities and can only narrow them; it verifies with the published public key
//! (as osmoda-egress verifies it); the ledger records the mint without the token; revocations
//! land in the list the proxy reads; bad input records nothing.

mod common;

use common::{ClientExt, Daemon};
use serde_json::{json, Value};

fn egress_json(dir: &std::path::Path) -> std::path::PathBuf {
    let cfg = json!({
        "listen": "127.0.0.1:19999",
        "capabilities": {
            "github": { "domains": ["*.github.com", "github.com"], "ports": [443, 22] },
            "pypi": { "domains": ["pypi.org"], "ports": [443] }
        },
        "public_key_file": dir.join("pub/public.key"),
        "revocation_file": dir.join("pub/revoked"),
    });
    let p = dir.join("egress.json");
    std::fs::write(&p, serde_json::to_vec(&cfg).expect("json")).expect("write");
    p
}

async fn last_id(d: &Daemon) -> Value {
    d.agent().get_ok("/events/log?order=desc&limit=1").await[0]["id"].clone()
}

#[tokio::test]
async fn mint_narrows_verifies_and_revokes() {
    let extra = tempfile::tempdir().expect("tempdir");
    let settings = agentd::Settings {
        egress_config: Some(egress_json(extra.path())),
        ..Default::default()
    };
    let d = Daemon::start_with(settings).await;
    let r = d
        .agent()
        .post_ok(
            "/capability/mint",
            &json!({ "granted_to": "tool-x", "ttl_sec": 600,
                     "permissions": { "github": { "domains": ["api.github.com"], "ports": [443] } } }),
        )
        .await;
    let token = r["token"].as_str().expect("token").to_string();
    assert_eq!(r["proxy"], "http://127.0.0.1:19999");
    assert_eq!(
        r["capabilities"]["github"]["domains"],
        json!(["api.github.com"])
    );
    // Verifies offline with the published key, exactly as osmoda-egress does.
    let pk_text = std::fs::read_to_string(extra.path().join("pub/public.key")).expect("published");
    let pk = osmoda_egress::token::decode_public_key(&pk_text).expect("key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = osmoda_egress::token::verify(&pk, &token, now).expect("verifies");
    assert_eq!(claims.sub, "tool-x");
    assert_eq!(claims.id, r["id"].as_str().expect("id"));
    assert!(claims.exp > now + 590 && claims.exp <= now + 600);
    // The signing key is outside the ledger, 0600; the ledger has the mint but not the token.
    use std::os::unix::fs::PermissionsExt;
    let key = d.state.state_dir.join("capability.key");
    assert_eq!(
        std::fs::metadata(&key).expect("key").permissions().mode() & 0o777,
        0o600
    );
    let ev = d.agent().get_ok("/events/log?order=desc&limit=1").await[0].clone();
    assert_eq!(ev["type"], "capability.mint");
    assert!(
        !ev.to_string().contains(&token),
        "the token is not in the ledger"
    );
    let p: Value = serde_json::from_str(ev["payload"].as_str().expect("payload")).expect("json");
    assert_eq!(p["id"], r["id"]);
    assert_eq!(p["subject"], "tool-x");
    // Whole capabilities by name.
    let r2 = d
        .agent()
        .post_ok(
            "/capability/mint",
            &json!({ "granted_to": "t", "ttl_sec": 60, "permissions": ["pypi"] }),
        )
        .await;
    assert_eq!(r2["capabilities"]["pypi"]["ports"], json!([443]));

    // Refusals: nothing recorded.
    let before = last_id(&d).await;
    for (body, status, needle) in [
        (
            json!({ "granted_to": "t", "ttl_sec": 60, "permissions": ["npm"] }),
            403,
            "not declared",
        ),
        (
            json!({ "granted_to": "t", "ttl_sec": 60, "permissions": { "github": { "domains": ["*.com"] } } }),
            403,
            "only narrow",
        ),
        (
            json!({ "granted_to": "t", "ttl_sec": 60, "permissions": { "github": { "domains": ["evil.net"] } } }),
            403,
            "only narrow",
        ),
        (
            json!({ "granted_to": "t", "ttl_sec": 60, "permissions": { "github": { "ports": [8080] } } }),
            403,
            "port 8080",
        ),
        (
            json!({ "granted_to": "t", "ttl_sec": 0, "permissions": ["pypi"] }),
            400,
            "ttl_sec",
        ),
        (
            json!({ "granted_to": "t", "ttl_sec": 86401, "permissions": ["pypi"] }),
            400,
            "ttl_sec",
        ),
        (
            json!({ "granted_to": "", "ttl_sec": 60, "permissions": ["pypi"] }),
            400,
            "granted_to",
        ),
        (
            json!({ "granted_to": "t", "ttl_sec": 60, "permissions": [] }),
            400,
            "at least one",
        ),
        (
            json!({ "granted_to": "t", "ttl_sec": 60, "permissions": ["pypi"], "x": 1 }),
            422,
            "unknown field",
        ),
    ] {
        let resp = d
            .agent()
            .post("/capability/mint", &body)
            .await
            .expect("answer");
        assert_eq!(resp.status, status, "{body}: {}", resp.body);
        let msg = resp.body.to_string();
        assert!(msg.contains(needle), "{body}: {msg}");
    }
    assert_eq!(last_id(&d).await, before, "refusals record nothing");
    // The mint-only event types are agentd's: nobody can append a fake one.
    let fake = d
        .agent()
        .post(
            "/events/append",
            &json!({ "type": "capability.mint", "daemon": "x", "payload": {} }),
        )
        .await
        .expect("answer");
    assert_eq!(fake.status, 400, "{}", fake.body);

    // Revocation: into the list the proxy reads, once, and recorded.
    let id = r["id"].as_str().expect("id");
    let rv = d
        .agent()
        .post_ok("/capability/revoke", &json!({ "id": id }))
        .await;
    assert_eq!(rv["revoked"], true);
    d.agent()
        .post_ok("/capability/revoke", &json!({ "id": id }))
        .await;
    let list = std::fs::read_to_string(extra.path().join("pub/revoked")).expect("list");
    assert_eq!(list, format!("{id}\n"));
    let bad = d
        .agent()
        .post("/capability/revoke", &json!({ "id": "../x" }))
        .await
        .expect("answer");
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn mint_without_egress_config_is_503() {
    let extra = tempfile::tempdir().expect("tempdir");
    let settings = agentd::Settings {
        egress_config: Some(extra.path().join("missing.json")),
        ..Default::default()
    };
    let d = Daemon::start_with(settings).await;
    let before = last_id(&d).await;
    let r = d
        .agent()
        .post(
            "/capability/mint",
            &json!({ "granted_to": "t", "ttl_sec": 60, "permissions": ["pypi"] }),
        )
        .await
        .expect("answer");
    assert_eq!(r.status, 503, "{}", r.body);
    assert!(r.body["error"]
        .as_str()
        .unwrap_or_default()
        .contains("services.osmoda.egress.capabilities"));
    assert_eq!(last_id(&d).await, before);
}
