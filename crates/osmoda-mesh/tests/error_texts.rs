//! Issue 11's error-text audit for osmoda-mesh: every refusal of its socket (routing, bodies,
//! protocol-level errors, invites made, pasted, forged, expired, used, unreachable, peers,
//! messages, requests, a broken mesh.json) is driven against a real osmoda-mesh — and, for
//! pairing, a second one on loopback — and its body must keep `osmoda_daemon::audit`'s rule:
//! `{error, detail}`, `error` a sentence naming what was wrong (each row's needles) and what to
//! do; no Debug dump or Rust name, no internal error, none of mesh's own paths (state dir,
//! config, sockets, agentd's and watch's sockets). And no answer ever carries an invite code or
//! its secret, wherever the caller put it (body, path, a wrong field, a bare string).
//! agentd is absent here: its failures are 502s, whose bodies keep the same rule.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine as _;
use common::within;
use osmoda_client::Method;
use osmoda_daemon::audit::{audit_row, check_refusal};
use osmoda_mesh::identity::Identity;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Daemon {
    dir: PathBuf,
    socket: PathBuf,
    addr: String,
    client: osmoda_client::Client,
    _trigger: osmoda_mesh::shutdown::Trigger,
}

impl Daemon {
    /// A real osmoda-mesh in `dir` with `config` as its mesh.json (agentd and watch absent).
    async fn start(dir: &Path, name: &str, config: Option<Value>) -> Daemon {
        std::fs::create_dir_all(dir).unwrap();
        if let Some(c) = config {
            std::fs::write(dir.join("mesh.json"), c.to_string()).unwrap();
        }
        let state = osmoda_mesh::AppState::open(osmoda_mesh::Options {
            config: dir.join("mesh.json"),
            state_dir: dir.join("state"),
            agentd_socket: dir.join("agentd.sock"),
            watch_socket: dir.join("watch.sock"),
            key_file: None,
            name: name.into(),
            tuning: osmoda_mesh::Tuning::default(),
        })
        .unwrap();
        let socket = dir.join("mesh.sock");
        let listener = osmoda_daemon::bind_unix(&socket, 0o600).unwrap();
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap().to_string();
        let (trigger, shutdown) = osmoda_mesh::shutdown::channel();
        tokio::spawn(osmoda_mesh::serve(listener, tcp, state, shutdown));
        Daemon {
            dir: dir.to_path_buf(),
            client: osmoda_client::Client::new(&socket),
            socket,
            addr,
            _trigger: trigger,
        }
    }

    /// The daemon's own paths, which no answer may name.
    fn private(&self) -> Vec<String> {
        [
            self.dir.join("state"),
            self.dir.join("mesh.json"),
            self.socket.clone(),
            self.dir.join("agentd.sock"),
            self.dir.join("watch.sock"),
        ]
        .iter()
        .map(|p| p.display().to_string())
        .collect()
    }

    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> (u16, Value) {
        let r = within(
            &format!("{method} {path}"),
            self.client.request(method.clone(), path, body),
        )
        .await
        .unwrap();
        (r.status, r.body)
    }

    /// Sends `raw` bytes on a fresh connection and reads the whole answer: (status, body).
    /// The request is written while the answer is read: a daemon may answer (and close)
    /// before it has read a body it refuses.
    async fn raw(&self, raw: Vec<u8>) -> (u16, Value) {
        let s = tokio::net::UnixStream::connect(&self.socket).await.unwrap();
        let (mut r, mut w) = s.into_split();
        let writer = tokio::spawn(async move {
            let _ = w.write_all(&raw).await;
            w
        });
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 16];
        within("the raw answer", async {
            while let Ok(n) = r.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                out.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        writer.abort();
        let text = String::from_utf8_lossy(&out);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line: {text}"));
        let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let body = serde_json::from_str(body).unwrap_or_else(|_| json!(body));
        (status, body)
    }
}

/// An invite code from parts (forged ones too), and the secret inside it.
fn code(endpoint: &str, keys: Value, name: &str, expires_at: Value, v: Value) -> (String, String) {
    let secret = B64URL.encode(rand_bytes());
    let inv = json!({
        "v": v, "endpoint": endpoint, "keys": keys, "name": name,
        "expires_at": expires_at, "secret": secret,
    });
    (B64URL.encode(inv.to_string()), secret)
}

fn rand_bytes() -> [u8; 32] {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).unwrap();
    b
}

fn in_an_hour() -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    json!(now + 3600)
}

type Row = (Method, String, Option<Value>, u16, Vec<&'static str>);

/// Runs the futures at once and returns their outputs in order.
async fn futures_join<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    let mut set = Vec::new();
    for f in fs {
        set.push(Box::pin(f));
    }
    // Poll all of them together: each is a request on its own connection.
    let mut pending: Vec<Option<_>> = set.into_iter().map(Some).collect();
    let mut done: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, p) in pending.iter_mut().enumerate() {
            if let Some(f) = p {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        done[i] = Some(v);
                        *p = None;
                    }
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    for d in done {
        out.push(d.expect("every future finished"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_says_what_was_wrong_in_one_shape_and_no_secret_comes_back() {
    let tmp = tempfile::tempdir().unwrap();
    let beta = Identity::generate().unwrap();
    let config = json!({
        "listen": "0.0.0.0:18800",
        "peers": { "beta": { "endpoint": "127.0.0.1:1", "public_keys": beta.public() } },
    });
    let a = Daemon::start(&tmp.path().join("a"), "alpha", Some(config.clone())).await;
    let b = Daemon::start(&tmp.path().join("b"), "gamma", None).await;
    let private = a.private();

    // A real code of alpha's, and forged or broken ones; none of them may come back.
    let (s, v) = a
        .call(
            Method::POST,
            "/invite/create",
            Some(&json!({ "endpoint": a.addr })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let real = v["invite_code"].as_str().unwrap().to_string();
    let real_secret = osmoda_mesh::invite::Invite::decode(&real).unwrap().secret;
    let other = Identity::generate().unwrap();
    let keys = serde_json::to_value(other.public()).unwrap();
    let own_keys = {
        let (_, v) = a.call(Method::GET, "/identity", None).await;
        v["public_keys"].clone()
    };
    let mut secrets = vec![real.clone(), real_secret];
    let mut mk = |endpoint: &str, keys: Value, name: &str, exp: Value, v: Value| {
        let (c, s) = code(endpoint, keys, name, exp, v);
        secrets.push(c.clone());
        secrets.push(s);
        c
    };
    let unreachable = mk("127.0.0.1:1", keys.clone(), "delta", in_an_hour(), json!(1));
    let expired = mk("127.0.0.1:1", keys.clone(), "delta", json!(1), json!(1));
    let own = mk("127.0.0.1:1", own_keys, "delta", in_an_hour(), json!(1));
    let declared = mk("127.0.0.1:1", keys.clone(), "beta", in_an_hour(), json!(1));
    let v2 = mk("127.0.0.1:1", keys.clone(), "delta", in_an_hour(), json!(2));
    let typed = mk(
        "127.0.0.1:1",
        keys.clone(),
        "delta",
        json!("soon"),
        json!(1),
    );
    let bad_name = mk("127.0.0.1:1", keys.clone(), "a.b", in_an_hour(), json!(1));
    let bad_endpoint = mk("nohost", keys.clone(), "delta", in_an_hour(), json!(1));
    let bad_keys = mk(
        "127.0.0.1:1",
        json!({"ed25519": "AAAA", "x25519": "AAAA", "ml_kem_768": "AAAA"}),
        "delta",
        in_an_hour(),
        json!(1),
    );
    let short_secret = {
        let inv = json!({"v": 1, "endpoint": "127.0.0.1:1", "keys": keys, "name": "delta", "expires_at": in_an_hour(), "secret": B64URL.encode([7u8; 8])});
        B64URL.encode(inv.to_string())
    };
    let accept = |c: &str| Some(json!({ "invite_code": c }));
    let post = |p: &str, body: Value| (Method::POST, p.to_string(), Some(body));

    let mut rows: Vec<Row> = vec![
        // Routing.
        (
            Method::GET,
            "/no/such/route".into(),
            None,
            404,
            vec![
                "no such route GET /no/such/route",
                "/peers",
                "/invite/accept",
            ],
        ),
        (
            Method::DELETE,
            "/identity".into(),
            None,
            405,
            vec!["DELETE is not allowed on /identity", "GET /health"],
        ),
        (
            Method::GET,
            format!("/peer/{real}/send"),
            None,
            405,
            vec!["GET is not allowed", "characters, not repeated"],
        ),
        (
            Method::POST,
            format!("/invite/accept/{real}"),
            None,
            404,
            vec![
                "no such route POST /invite/accept/",
                "characters, not repeated",
            ],
        ),
        // Bodies.
        {
            let (m, p, b) = post("/invite/create", json!("text"));
            (
                m,
                p,
                b,
                400,
                vec!["invalid JSON body", "a string, expected a JSON object"],
            )
        },
        {
            // The code sent as a bare JSON string, not {"invite_code": ...}.
            let (m, p, b) = post("/invite/accept", json!(real));
            (
                m,
                p,
                b,
                400,
                vec!["invalid JSON body", "expected a JSON object"],
            )
        },
        {
            let (m, p, b) = post("/invite/create", json!({ "ttl_secs": real }));
            (
                m,
                p,
                b,
                400,
                vec!["ttl_secs", "a string, expected a non-negative integer"],
            )
        },
        {
            let (m, p, b) = post("/invite/create", json!({ "ttl_secs": 0 }));
            (m, p, b, 400, vec!["ttl_secs", "1..=604800"])
        },
        {
            let (m, p, b) = post("/invite/create", json!({}));
            (m, p, b, 400, vec!["0.0.0.0:18800", "give \"endpoint\""])
        },
        {
            let (m, p, b) = post("/invite/create", json!({ "endpoint": "nohost" }));
            (m, p, b, 400, vec!["`endpoint`", "host:port"])
        },
        {
            let (m, p, b) = post("/invite/create", json!({ "endpoint": real }));
            (m, p, b, 400, vec!["`endpoint`", "host:port", "not one"])
        },
        {
            let (m, p, b) = post(
                "/invite/create",
                json!({ "endpoint": "h:1", "name": "a b" }),
            );
            (m, p, b, 400, vec!["peer name", "start with a letter"])
        },
        {
            let (m, p, b) = post("/invite/create", json!({ "endpoint": "h:1", "name": real }));
            (m, p, b, 400, vec!["peer name", "not repeated"])
        },
        {
            let (m, p, b) = post(
                "/invite/create",
                json!({ "endpoint": "h:1", "color": "red" }),
            );
            (m, p, b, 400, vec!["unknown field `color`", "`ttl_secs`"])
        },
        // Invites pasted, forged, broken.
        {
            let (m, p, b) = post("/invite/accept", json!({}));
            (m, p, b, 400, vec!["missing field `invite_code`"])
        },
        {
            let (m, p, b) = post("/invite/accept", json!({ "code": real }));
            (m, p, b, 400, vec!["unknown field `code`", "`invite_code`"])
        },
        (
            Method::POST,
            "/invite/accept".into(),
            accept("%%%"),
            400,
            vec!["not base64url", "paste the whole code"],
        ),
        (
            Method::POST,
            "/invite/accept".into(),
            accept(&real[..real.len() - 7]),
            400,
            vec!["invite code", "paste the whole code"],
        ),
        (
            Method::POST,
            "/invite/accept".into(),
            accept(&"A".repeat(9000)),
            400,
            vec!["over 8192 characters"],
        ),
        (
            Method::POST,
            "/invite/accept".into(),
            accept(&B64URL.encode("{}")),
            400,
            vec!["does not hold an invite", "missing field"],
        ),
        (
            Method::POST,
            "/invite/accept".into(),
            accept(&B64URL.encode("\"x\"")),
            400,
            vec!["does not hold an invite", "not an invite object"],
        ),
        (
            Method::POST,
            "/invite/accept".into(),
            accept(&typed),
            400,
            vec!["`expires_at`", "wrong type"],
        ),
        (
            Method::POST,
            "/invite/accept".into(),
            accept(&v2),
            400,
            vec!["version 2", "version 1"],
        ),
        (
            Method::POST,
            "/invite/accept".into(),
            accept(&bad_name),
            400,
            vec!["the invite's name", "new one"],
        ),
        (
            Method::POST,
            "/invite/accept".into(),
            accept(&bad_endpoint),
            400,
            vec!["the invite's endpoint", "host:port"],
        ),
        (
            Method::POST,
            "/invite/accept".into(),
            accept(&short_secret),
            400,
            vec!["128 bits"],
        ),
        (
            Method::POST,
            "/invite/accept".into(),
            accept(&expired),
            400,
            vec!["expired", "ask for a new one"],
        ),
        (
            Method::POST,
            "/invite/accept".into(),
            accept(&own),
            400,
            vec!["this host's own"],
        ),
        (
            Method::POST,
            "/invite/accept".into(),
            accept(&bad_keys),
            400,
            vec!["the invite's keys", "ed25519"],
        ),
        (
            Method::POST,
            "/invite/accept".into(),
            accept(&declared),
            409,
            vec!["\"beta\" is declared already", "another \"name\""],
        ),
        (
            Method::POST,
            "/invite/accept".into(),
            Some(json!({ "invite_code": unreachable, "name": "a.b" })),
            400,
            vec!["peer name"],
        ),
        (
            Method::POST,
            "/invite/accept".into(),
            Some(json!({ "invite_code": unreachable, "endpoint": real })),
            400,
            vec!["`endpoint`", "host:port"],
        ),
        // Peers, messages, requests.
        (
            Method::GET,
            "/peer/nobody".into(),
            None,
            404,
            vec!["no peer named \"nobody\"", "GET /peers"],
        ),
        (
            Method::GET,
            "/peer/a.b".into(),
            None,
            400,
            vec!["peer name", "start with a letter"],
        ),
        (
            Method::GET,
            format!("/peer/{real}"),
            None,
            400,
            vec!["peer name", "not repeated"],
        ),
        (
            Method::GET,
            "/peer/%FF".into(),
            None,
            400,
            vec!["invalid URL path", "peer name"],
        ),
        {
            let (m, p, b) = post("/peer/nobody/send", json!({ "message": "x" }));
            (m, p, b, 404, vec!["no peer named \"nobody\""])
        },
        {
            let (m, p, b) = post("/peer/beta/send", json!({ "message": "x", "payload": 1 }));
            (
                m,
                p,
                b,
                400,
                vec!["exactly one of \"message\"", "\"payload\""],
            )
        },
        {
            let (m, p, b) = post("/peer/beta/send", json!({}));
            (m, p, b, 400, vec!["exactly one of \"message\""])
        },
        {
            let (m, p, b) = post("/peer/beta/send", json!({ "message": 5 }));
            (m, p, b, 400, vec!["message", "expected a string"])
        },
        {
            let (m, p, b) = post("/peer/beta/send", json!({ "message": "x" }));
            (
                m,
                p,
                b,
                409,
                vec!["\"beta\" is not connected", "reconnects by itself"],
            )
        },
        {
            let (m, p, b) = post("/peer/beta/request", json!({ "topic": "a/b", "body": 1 }));
            (m, p, b, 400, vec!["topic", "[A-Za-z0-9._-]"])
        },
        {
            let (m, p, b) = post(
                "/peer/beta/request",
                json!({ "topic": "t", "body": 1, "timeout_secs": 0 }),
            );
            (m, p, b, 400, vec!["timeout_secs", "1..=300"])
        },
        {
            let (m, p, b) = post("/peer/beta/request", json!({ "topic": "t" }));
            (m, p, b, 400, vec!["missing field `body`"])
        },
        {
            let (m, p, b) = post("/peer/beta/request", json!({ "topic": "t", "body": 1 }));
            (m, p, b, 409, vec!["\"beta\" is not connected"])
        },
        (
            Method::GET,
            "/peer/beta/inbox?limit=0".into(),
            None,
            400,
            vec!["limit", "1..=1000"],
        ),
        (
            Method::GET,
            "/peer/beta/inbox?bogus=1".into(),
            None,
            400,
            vec!["invalid query", "unknown field `bogus`"],
        ),
        (
            Method::GET,
            "/peer/beta/inbox?after=x".into(),
            None,
            400,
            vec!["invalid query", "after"],
        ),
        (
            Method::DELETE,
            "/peer/ghost".into(),
            None,
            404,
            vec!["no peer named \"ghost\" is declared"],
        ),
        (
            Method::DELETE,
            "/peer/beta?bogus=1".into(),
            None,
            400,
            vec!["invalid query", "unknown field `bogus`"],
        ),
        (
            Method::GET,
            "/requests/next?wait_secs=61".into(),
            None,
            400,
            vec!["wait_secs", "0..=60"],
        ),
        // A reserved topic for a caller that is not agentd's uid (agentd is absent here, so
        // nobody is): 403 naming the topic and its owner.
        (
            Method::GET,
            "/requests/next?topic=ledger.cosign&wait_secs=0".into(),
            None,
            403,
            vec![
                "\"ledger.cosign\" belongs to agentd",
                "agentd's uid is not known now",
            ],
        ),
        {
            let (m, p, b) = post(
                "/peer/beta/request",
                json!({ "topic": "ledger.cosign", "body": 1 }),
            );
            (m, p, b, 403, vec!["\"ledger.cosign\" belongs to agentd"])
        },
        {
            let (m, p, b) = post("/requests/5/respond", json!({ "body": 1 }));
            (m, p, b, 404, vec!["no request 5", "GET /requests/next"])
        },
        {
            let (m, p, b) = post("/requests/abc/respond", json!({ "body": 1 }));
            (
                m,
                p,
                b,
                400,
                vec!["invalid URL path", "`abc` is not a number"],
            )
        },
        {
            let (m, p, b) = post("/requests/5/respond", json!({}));
            (m, p, b, 400, vec!["missing field `body`"])
        },
    ];
    // Failures of another party (502): agentd is absent; the inviter is unreachable.
    let failures: Vec<Row> = vec![
        (
            Method::DELETE,
            "/peer/beta".into(),
            None,
            502,
            vec![
                "agentd did not answer POST /config/unset",
                "systemctl status osmoda-agentd",
            ],
        ),
        (
            Method::POST,
            "/invite/accept".into(),
            accept(&unreachable),
            502,
            vec!["cannot connect to 127.0.0.1:1"],
        ),
    ];

    let mut problems = Vec::new();
    let check = |what: &str,
                 (s, v): (u16, &Value),
                 want: u16,
                 needles: &[&str],
                 problems: &mut Vec<String>| {
        if std::env::var("OSMODA_PRINT_ERRORS").is_ok() {
            println!("{s} {}\n    → {v}", &what[..what.len().min(160)]);
        }
        if want >= 500 {
            // Not a refusal, but the body keeps the same rule (the status is checked here).
            if s != want {
                problems.push(format!("{what}: status {s} (wanted {want}): {v}"));
            } else {
                match check_refusal(what, 400, v, &private) {
                    Err(e) => problems.push(e),
                    Ok(error) => problems.extend(
                        needles
                            .iter()
                            .filter(|n| !error.contains(**n))
                            .map(|n| format!("{what}: {error:?} does not name {n:?}")),
                    ),
                }
            }
        } else {
            problems.extend(audit_row(what, (s, v), want, needles, &private));
        }
        let text = v.to_string();
        for secret in &secrets {
            if text.contains(secret.as_str()) {
                problems.push(format!(
                    "{what}: the answer carries an invite code or secret: {text}"
                ));
            }
        }
    };
    for (method, path, body, want, needles) in rows.drain(..).chain(failures) {
        let what = format!(
            "{method} {path} {}",
            body.as_ref().map(Value::to_string).unwrap_or_default()
        );
        let (s, v) = a.call(method, &path, body.as_ref()).await;
        check(&what, (s, &v), want, &needles, &mut problems);
    }

    // Protocol level: what the shared listener answers before a route runs.
    let big = format!(
        "POST /invite/create HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        3 << 20,
        " ".repeat(3 << 20)
    );
    for (raw, want, needles) in [
        (b"HELLO\r\n\r\n".to_vec(), 400, vec!["request"]),
        (b"POST /invite/create HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\n{}".to_vec(), 400, vec!["more than one Content-Length"]),
        (b"POST /invite/create HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}".to_vec(), 400, vec!["Content-Type: application/json"]),
        (big.into_bytes(), 413, vec!["over 2097152 bytes", "65,519"]),
    ] {
        let what = format!("raw {:?}", String::from_utf8_lossy(&raw[..raw.len().min(80)]));
        let raw = raw.clone();
        let (s, v) = a.raw(raw).await;
        check(&what, (s, &v), want, &needles, &mut problems);
    }

    // Pairing with a second daemon: gamma accepts alpha's real code. Alpha admits it (the
    // invite is consumed), but recording the peer needs agentd: 502, and nothing is declared.
    let (s, v) = b
        .call(Method::POST, "/invite/accept", accept(&real).as_ref())
        .await;
    check(
        "gamma accepts alpha's code (agentd absent)",
        (s, &v),
        502,
        &[
            "agentd did not answer POST /config/set",
            "systemctl status osmoda-agentd",
        ],
        &mut problems,
    );
    // The same code again, under another name: alpha refuses the used invite.
    let (s, v) = b
        .call(
            Method::POST,
            "/invite/accept",
            Some(&json!({ "invite_code": real, "name": "alpha2" })),
        )
        .await;
    check(
        "gamma accepts the used code again",
        (s, &v),
        502,
        &["the inviter closed the link", "already used"],
        &mut problems,
    );

    // The dialer's last failure is shown, not hidden in a debug log.
    let (_, v) = a.call(Method::GET, "/peer/beta", None).await;
    assert!(
        v["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot connect to 127.0.0.1:1")),
        "{v}"
    );

    // Rotation: refused while a declared peer cannot get the hand-over (it would refuse the
    // new identity for good), unless forced; then it says who was not reached and revokes the
    // open invites (they name the old keys).
    for (body, want, needles) in [
        (
            json!({}),
            409,
            vec!["beta", "not connected", "\"force\": true"],
        ),
        (
            json!({ "force": "yes" }),
            400,
            vec!["force", "expected a boolean"],
        ),
    ] {
        let (s, v) = a.call(Method::POST, "/identity/rotate", Some(&body)).await;
        check(
            &format!("POST /identity/rotate {body}"),
            (s, &v),
            want,
            &needles,
            &mut problems,
        );
    }
    let (_, before) = a.call(Method::GET, "/identity", None).await;
    let (s, v) = a
        .call(
            Method::POST,
            "/invite/create",
            Some(&json!({ "endpoint": "h:1" })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // Concurrent rotations: one at a time (409 for the others), so the answers chain from the
    // identity before to the identity after without a fork.
    let force = json!({ "force": true });
    let answers = futures_join(
        (0..4)
            .map(|_| a.call(Method::POST, "/identity/rotate", Some(&force)))
            .collect(),
    )
    .await;
    let mut chain: Vec<(String, String)> = Vec::new();
    for (s, v) in &answers {
        match s {
            200 => {
                assert_eq!(v["unreachable"], json!(["beta"]), "{v}");
                chain.push((
                    v["previous"].as_str().unwrap().to_string(),
                    v["fingerprint"].as_str().unwrap().to_string(),
                ));
            }
            409 => check(
                "a concurrent rotation",
                (*s, v),
                409,
                &["another identity rotation is running"],
                &mut problems,
            ),
            _ => panic!("{s} {v}"),
        }
    }
    assert!(!chain.is_empty());
    assert_eq!(
        chain
            .iter()
            .map(|c| c.1.clone())
            .collect::<std::collections::HashSet<_>>()
            .len(),
        chain.len()
    );
    let mut now = before["fingerprint"].as_str().unwrap().to_string();
    while let Some(i) = chain.iter().position(|c| c.0 == now) {
        now = chain.remove(i).1;
    }
    assert!(chain.is_empty(), "the rotations forked: {chain:?}");
    let (_, after) = a.call(Method::GET, "/identity", None).await;
    assert_eq!(
        after["fingerprint"],
        json!(now),
        "the host keeps the last identity handed over"
    );
    let (_, h) = a.call(Method::GET, "/health", None).await;
    assert_eq!(
        h["invites"],
        json!(0),
        "a rotation revokes the open invites: {h}"
    );

    // A mesh.json that does not load: the routes that need it say so, without its path.
    std::fs::write(a.dir.join("mesh.json"), "{ not json").unwrap();
    for (method, path, body) in [
        (Method::GET, "/peers", None),
        (Method::GET, "/peer/beta", None),
        (
            Method::POST,
            "/invite/create",
            Some(json!({ "endpoint": "h:1" })),
        ),
    ] {
        let what = format!("{method} {path} (mesh.json broken)");
        let (s, v) = a.call(method, path, body.as_ref()).await;
        check(
            &what,
            (s, &v),
            409,
            &[
                "mesh.json is invalid",
                "services.osmoda",
                "no peer is admitted",
            ],
            &mut problems,
        );
    }
    // Still serving.
    let (s, v) = a.call(Method::GET, "/health", None).await;
    assert_eq!((s, &v["status"]), (200, &json!("config_refused")), "{v}");

    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    drop(b);
}
