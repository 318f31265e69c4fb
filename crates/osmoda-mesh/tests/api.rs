//! The local API's refusals, against a real osmoda-mesh on a Unix socket (no peers, agentd
//! absent: events wait in the spool): every bad request gets its status and the JSON error
//! body, and changes nothing.
#![allow(clippy::unwrap_used)]

use serde_json::{json, Value};

struct Mesh {
    _dir: tempfile::TempDir,
    client: osmoda_client::Client,
    _trigger: osmoda_mesh::shutdown::Trigger,
}

async fn start() -> Mesh {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let state = osmoda_mesh::AppState::open(osmoda_mesh::Options {
        config: d.join("mesh.json"),
        state_dir: d.join("mesh"),
        agentd_socket: d.join("agentd.sock"),
        watch_socket: d.join("watch.sock"),
        key_file: None,
        name: "alpha".into(),
        tuning: osmoda_mesh::Tuning::default(),
    })
    .unwrap();
    let socket = d.join("mesh.sock");
    let listener = osmoda_daemon::bind_unix(&socket, 0o600).unwrap();
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (trigger, shutdown) = osmoda_mesh::shutdown::channel();
    tokio::spawn(osmoda_mesh::serve(listener, tcp, state, shutdown));
    Mesh {
        client: osmoda_client::Client::new(&socket),
        _dir: dir,
        _trigger: trigger,
    }
}

fn check(status: u16, v: &Value, want: u16, kind: &str, says: &str) {
    assert_eq!(status, want, "{v}");
    assert_eq!(v["detail"]["kind"], kind, "{v}");
    assert!(v["error"].as_str().unwrap().contains(says), "{says}: {v}");
}

#[tokio::test]
async fn bad_requests_get_clear_json_errors() {
    let m = start().await;
    let post = |p: &'static str, b: Value| {
        let c = m.client.clone();
        async move {
            let r = c.post(p, &b).await.unwrap();
            (r.status, r.body)
        }
    };
    let get = |p: String| {
        let c = m.client.clone();
        async move {
            let r = c.get(&p).await.unwrap();
            (r.status, r.body)
        }
    };
    let (s, v) = get("/health".into()).await;
    assert_eq!(
        (s, &v["status"], &v["peers"]),
        (200, &json!("ok"), &json!(0)),
        "{v}"
    );
    let (s, v) = get("/identity".into()).await;
    assert_eq!(s, 200);
    assert_eq!(v["noise"], "Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s");
    assert_eq!(v["public_keys"]["ml_kem_768"].as_str().unwrap().len(), 1580);

    let (s, v) = post("/invite/create", json!({ "ttl_secs": 0 })).await;
    check(s, &v, 400, "bad_request", "ttl_secs");
    let (s, v) = post("/invite/create", json!({})).await;
    check(s, &v, 400, "bad_request", "give \"endpoint\"");
    let (s, v) = post("/invite/create", json!({ "endpoint": "nohost" })).await;
    check(s, &v, 400, "bad_request", "host:port");
    let (s, v) = post(
        "/invite/create",
        json!({ "endpoint": "h:1", "name": "a b" }),
    )
    .await;
    check(s, &v, 400, "bad_request", "peer name");
    let (s, v) = post(
        "/invite/create",
        json!({ "endpoint": "h:1", "color": "red" }),
    )
    .await;
    check(s, &v, 400, "bad_request", "unknown field");
    let (s, v) = post("/invite/accept", json!({ "invite_code": "%%%" })).await;
    check(s, &v, 400, "bad_request", "base64url");
    // A real code, expired: refused before anything is dialed. (A live TTL, so the same code
    // is still unexpired for the "own invite" check below however slow this machine is.)
    let (s, v) = post(
        "/invite/create",
        json!({ "endpoint": "127.0.0.1:1", "ttl_secs": 3600 }),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let code = v["invite_code"].as_str().unwrap();
    let mut inv = osmoda_mesh::invite::Invite::decode(code).unwrap();
    inv.expires_at = 1;
    let (s, v) = post("/invite/accept", json!({ "invite_code": inv.encode() })).await;
    check(s, &v, 400, "bad_request", "expired");
    // Its own invite.
    let (s, v) = post("/invite/accept", json!({ "invite_code": code })).await;
    check(s, &v, 400, "bad_request", "own");

    let (s, v) = get("/peer/nobody".into()).await;
    check(s, &v, 404, "not_found", "no peer named");
    let (s, v) = get("/peer/a.b".into()).await;
    check(s, &v, 400, "bad_request", "peer name");
    let (s, v) = post("/peer/nobody/send", json!({ "message": "x" })).await;
    check(s, &v, 404, "not_found", "no peer named");
    let (s, v) = post("/peer/nobody/send", json!({ "message": "x", "payload": 1 })).await;
    check(s, &v, 400, "bad_request", "exactly one");
    let (s, v) = post("/peer/nobody/request", json!({ "topic": "a/b", "body": 1 })).await;
    check(s, &v, 400, "bad_request", "topic");
    let (s, v) = get("/peer/nobody/inbox?limit=0".into()).await;
    check(s, &v, 400, "bad_request", "limit");
    let (s, v) = get("/peer/nobody/inbox?bogus=1".into()).await;
    check(s, &v, 400, "bad_request", "invalid query");
    let (s, v) = get("/requests/next?wait_secs=0".into()).await;
    assert_eq!((s, &v["request"]), (200, &Value::Null), "{v}");
    let (s, v) = get("/requests/next?wait_secs=61".into()).await;
    check(s, &v, 400, "bad_request", "wait_secs");
    let (s, v) = post("/requests/5/respond", json!({ "body": 1 })).await;
    check(s, &v, 404, "not_found", "no request 5");
    let (s, v) = get("/nope".into()).await;
    check(s, &v, 404, "not_found", "no such route");
    let r = m.client.delete("/identity").await.unwrap();
    check(r.status, &r.body, 405, "method_not_allowed", "not allowed");
    let r = m.client.get("/metrics").await.unwrap();
    assert_eq!(r.status, 200);
}
