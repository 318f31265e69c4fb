//! Issue 11's error-text audit for osmoda-routines: every refusal of its socket (routing,
//! queries, bodies, `/routine/add`'s validation and machine checks, `/routine/remove`, manual
//! triggers, and the webhooks served on the same socket) is driven against a real daemon, with
//! a real agentd (config tree) and osmoda-watch behind it, and its body must keep
//! `osmoda_daemon::audit`'s rule: `{error, detail}`, `error` a sentence naming what was wrong
//! (each row's needles) and what to do; no Debug dump or Rust name, no internal error, none of
//! the daemons' own paths (state dir, config, sockets) and never a webhook secret's path or
//! bytes. The daemon's 5xx answers (osmoda-watch down, a secret file gone) keep the same shape.
//! Nothing a refusal asked for ran or was committed.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{scratch, write_config, Agentd, Routines};
use osmoda_daemon::audit::{audit_row, check_refusal};
use osmoda_routines::api::webhook::{sign, SIGNATURE_HEADER, TIMESTAMP_HEADER};
use serde_json::{json, Value};

const SECRET: &str = "audit-webhook-secret-0123456789";

/// One raw HTTP/1.1 request on the daemon's socket: any method, path bytes, headers and body.
async fn send(
    socket: &Path,
    method: &str,
    path: &[u8],
    headers: &[(String, String)],
    body: Option<&[u8]>,
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut req = Vec::new();
    req.extend_from_slice(method.as_bytes());
    req.push(b' ');
    req.extend_from_slice(path);
    req.extend_from_slice(b" HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n");
    for (k, v) in headers {
        req.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if let Some(b) = body {
        req.extend_from_slice(
            format!(
                "content-type: application/json\r\ncontent-length: {}\r\n",
                b.len()
            )
            .as_bytes(),
        );
    }
    req.extend_from_slice(b"\r\n");
    if let Some(b) = body {
        req.extend_from_slice(b);
    }
    let exchange = async {
        let mut s = tokio::net::UnixStream::connect(socket).await.unwrap();
        s.write_all(&req).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        out
    };
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), exchange)
        .await
        .expect("no answer within 60 s");
    let text = String::from_utf8_lossy(&out).into_owned();
    let status: u16 = text.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let body = serde_json::from_str(body).unwrap_or(Value::String(body.to_string()));
    (status, body)
}

fn hook_headers(path: &str, ts: &str, body: &[u8]) -> Vec<(String, String)> {
    let sig = hex::encode(sign(SECRET.as_bytes(), ts, path, body).unwrap());
    vec![
        (TIMESTAMP_HEADER.into(), ts.into()),
        (SIGNATURE_HEADER.into(), format!("sha256={sig}")),
    ]
}

/// A request of the table: method, path (bytes), headers, body, wanted status, needles.
struct Row {
    method: &'static str,
    path: Vec<u8>,
    headers: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    status: u16,
    needles: Vec<&'static str>,
}

fn row(method: &'static str, path: &str, body: Option<Value>, status: u16) -> Row {
    Row {
        method,
        path: path.as_bytes().to_vec(),
        headers: Vec::new(),
        body: body.map(|b| b.to_string().into_bytes()),
        status,
        needles: Vec::new(),
    }
}

impl Row {
    fn says(mut self, needles: &[&'static str]) -> Row {
        self.needles = needles.to_vec();
        self
    }
    fn headers(mut self, h: Vec<(String, String)>) -> Row {
        self.headers = h;
        self
    }
    fn raw_body(mut self, b: Vec<u8>) -> Row {
        self.body = Some(b);
        self
    }
    fn what(&self) -> String {
        let body = self.body.as_deref().map_or(String::new(), |b| {
            let t = String::from_utf8_lossy(b);
            if t.len() > 200 {
                format!("<{} bytes>", b.len())
            } else {
                t.into_owned()
            }
        });
        format!(
            "{} {} {body}",
            self.method,
            String::from_utf8_lossy(&self.path)
        )
    }
}

fn add(name: &str, trigger: Value, action: Value) -> Option<Value> {
    Some(json!({ "name": name, "trigger": trigger, "action": action }))
}

fn cmd() -> Value {
    json!({ "type": "command", "command": ["true"], "timeout_secs": 5 })
}

fn every(s: u64) -> Value {
    json!({ "type": "interval", "seconds": s })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_says_what_was_wrong_in_one_shape() {
    let dir = scratch();
    let d = dir.path();
    let tree_dir = d.join("tree");
    let actor = osmoda_generations::Actor::new("Test Person", "test@example.org");
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../generations");
    osmoda_generations::Tree::init(&tree_dir, &template, &actor).unwrap();
    let agentd = Agentd::start(d, Some(&tree_dir));

    // A real osmoda-watch (local backend), so /routine/remove reaches agentd's config API.
    let wsock = d.join("watch.sock");
    let wopts = osmoda_watch::Options {
        config: d.join("etc/osmoda/watch.json"),
        state_dir: d.join("watch"),
        agentd_socket: agentd.socket.clone(),
        backend: osmoda_watch::BackendKind::Local,
        config_tree: tree_dir.clone(),
        etc_dir: d.join("etc"),
        lib_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("../../lib"),
        host: String::new(),
        probe_interval: std::time::Duration::from_millis(100),
        retry_delay: std::time::Duration::from_millis(100),
        pause: None,
        masks: vec![d.join("osmoda-admin")],
    };
    let wstate = osmoda_watch::AppState::open(wopts).await.unwrap();
    let wl = osmoda_daemon::bind_unix(&wsock, 0o660).unwrap();
    let (wtrigger, wshutdown) = osmoda_watch::shutdown::channel();
    let wtask = tokio::spawn(osmoda_watch::serve(wl, Arc::clone(&wstate), wshutdown));

    let secret_file = d.join("hooks/audit.secret");
    std::fs::create_dir_all(secret_file.parent().unwrap()).unwrap();
    common::write_secret(&secret_file, &format!("{SECRET}\n"));
    write_config(
        d,
        json!({
            "job": { "enable": true, "trigger": every(3600), "action": cmd() },
            "off": { "enable": false, "trigger": every(3600), "action": cmd() },
            "hook": { "enable": true,
                      "trigger": { "type": "webhook", "path": "audit", "secret_file": secret_file,
                                   "replay_window_secs": 60 },
                      "action": cmd() },
        }),
    );
    let mut opts = common::options(d, &agentd.socket);
    opts.watch_socket = wsock.clone();
    let r = Routines::start(opts.clone()).await;
    let private: Vec<String> = [
        &opts.state_dir,
        &opts.config,
        &opts.socket,
        &opts.agentd_socket,
        &opts.watch_socket,
        &secret_file,
        &d.join("agentd"),
    ]
    .iter()
    .map(|p| p.display().to_string())
    .chain([SECRET.to_string()])
    .collect();
    let tree = osmoda_generations::Tree::open(&tree_dir).unwrap();
    let head = tree.head().unwrap();

    let now = chrono::Utc::now().timestamp().to_string();
    let stale = (chrono::Utc::now().timestamp() - 3600).to_string();
    let hook_body = br#"{"ref":"main"}"#.to_vec();
    let big_payload = json!({ "payload": "x".repeat(70 * 1024) });
    let big_hook = serde_json::to_vec(&json!({ "x": "y".repeat(70 * 1024) })).unwrap();
    let huge = vec![b' '; 1024 * 1024 + 16];
    let missing_secret = d.join("hooks/missing.secret");

    let rows: Vec<Row> = vec![
        // Routing.
        row("GET", "/no/such/route", None, 404).says(&[
            "no such route GET /no/such/route",
            "/routine/list",
            "/webhook/",
        ]),
        row("GET", "/routine/add", None, 405).says(&["GET", "/routine/add"]),
        row("POST", "/routine/list", Some(json!({})), 405).says(&["POST", "/routine/list"]),
        row("GET", "/routine/remove/job", None, 405).says(&["GET", "/routine/remove/job"]),
        row("GET", "/webhook/audit", None, 405).says(&["GET", "/webhook/audit"]),
        // Queries.
        row("GET", "/routine/list?limit=0", None, 400).says(&["limit 0", "1 and 1000"]),
        row("GET", "/routine/list?limit=ten", None, 400).says(&["invalid query", "limit"]),
        row("GET", "/routine/list?bogus=1", None, 400)
            .says(&["invalid query", "unknown field `bogus`"]),
        row("GET", "/routine/history?limit=1001", None, 400).says(&["limit 1001", "1 and 1000"]),
        row("GET", "/routine/history?before_id=abc", None, 400)
            .says(&["invalid query", "before_id"]),
        row("DELETE", "/routine/remove/job?bogus=1", None, 400)
            .says(&["invalid query", "unknown field `bogus`"]),
        // Manual triggers.
        row("POST", "/routine/trigger/nothere", None, 404).says(&["nothere", "/routine/list"]),
        row("POST", "/routine/trigger/off", None, 409).says(&["\"off\"", "disabled", "enable"]),
        row("POST", "/routine/trigger/job", Some(json!("text")), 400)
            .says(&["invalid JSON body", "expected a JSON object"]),
        row("POST", "/routine/trigger/job", Some(json!({"bogus": 1})), 400)
            .says(&["unknown field `bogus`", "`payload`"]),
        row("POST", "/routine/trigger/job", None, 400)
            .raw_body(b"{not json".to_vec())
            .says(&["invalid JSON body"]),
        row("POST", "/routine/trigger/job", Some(big_payload), 413)
            .says(&["payload", "65536"]),
        row("POST", "/routine/trigger/%FF%FE", None, 400)
            .says(&["invalid URL path", "letters, digits"]),
        // A request target that is not a URL at all: the shared listener's protocol error.
        Row {
            path: b"/routine/trigger/\xff\xfe".to_vec(),
            ..row("POST", "", None, 400)
        }
        .says(&["request target is invalid"]),
        // /routine/add: the body.
        row("POST", "/routine/add", Some(json!("text")), 400)
            .says(&["invalid JSON body", "expected a JSON object"]),
        row("POST", "/routine/add", Some(json!({})), 400).says(&["missing field `name`"]),
        row(
            "POST",
            "/routine/add",
            Some(json!({"name": "x", "trigger": every(5), "action": cmd(), "colour": 1})),
            400,
        )
        .says(&["unknown field `colour`", "`trigger`"]),
        row("POST", "/routine/add", add("a.b", every(5), cmd()), 400)
            .says(&["\"a.b\"", "letters, digits"]),
        row(
            "POST",
            "/routine/add",
            add("x", json!({"type": "weekly"}), cmd()),
            400,
        )
        .says(&["trigger", "weekly", "cron"]),
        row(
            "POST",
            "/routine/add",
            add("x", every(5), json!({"type": "shell", "line": "true"})),
            400,
        )
        .says(&["action", "shell", "command"]),
        row(
            "POST",
            "/routine/add",
            Some(json!({"name": "x", "trigger": every(5), "action": cmd(), "ttl_secs": 0})),
            400,
        )
        .says(&["ttl_secs 0", "86400"]),
        // /routine/add: what the config check refuses.
        row(
            "POST",
            "/routine/add",
            add("x", json!({"type": "cron", "schedule": "61 * * * *"}), cmd()),
            400,
        )
        .says(&["routines.x.trigger.schedule", "61 * * * *", "day-of-month"]),
        row(
            "POST",
            "/routine/add",
            add(
                "x",
                json!({"type": "cron", "schedule": "0 8 * * *", "timezone": "Mars/Base"}),
                cmd(),
            ),
            400,
        )
        .says(&["routines.x.trigger.timezone", "Mars/Base"]),
        row("POST", "/routine/add", add("x", every(0), cmd()), 400)
            .says(&["routines.x.trigger.seconds"]),
        row(
            "POST",
            "/routine/add",
            add(
                "x",
                json!({"type": "event", "match": "a*b"}),
                cmd(),
            ),
            400,
        )
        .says(&["routines.x.trigger.match", "a*b"]),
        row(
            "POST",
            "/routine/add",
            add(
                "x",
                every(5),
                json!({"type": "command", "command": [], "timeout_secs": 5}),
            ),
            400,
        )
        .says(&["routines.x.action.command"]),
        row(
            "POST",
            "/routine/add",
            add(
                "x",
                every(5),
                json!({"type": "command", "command": ["true"], "timeout_secs": 0}),
            ),
            400,
        )
        .says(&["routines.x.action.timeout_secs"]),
        row(
            "POST",
            "/routine/add",
            add(
                "x",
                every(5),
                json!({"type": "command", "command": ["true"], "timeout_secs": 5, "sandbox": "ring3"}),
            ),
            400,
        )
        .says(&["action", "unknown variant `ring3`", "`ring1`"]),
        row(
            "POST",
            "/routine/add",
            add(
                "x",
                every(5),
                json!({"type": "command", "command": ["true"], "timeout_secs": 5, "sandbox": "ring1"}),
            ),
            400,
        )
        .says(&["routines.x.action", "capabilities"]),
        row(
            "POST",
            "/routine/add",
            add(
                "x",
                every(5),
                json!({"type": "command", "command": ["true"], "timeout_secs": 5, "user": "root"}),
            ),
            400,
        )
        .says(&["routines.x.action.user", "root"]),
        row(
            "POST",
            "/routine/add",
            add("x", every(5), json!({"type": "prompt", "message": "hi"})),
            400,
        )
        .says(&["routines.x.action is a prompt", "gateway"]),
        row(
            "POST",
            "/routine/add",
            add(
                "x",
                every(5),
                json!({"type": "http", "method": "GET", "path": "/health",
                       "socket": d.join("agentd/agentd.sock")}),
            ),
            400,
        )
        .says(&["routines.x.action.socket", "may not reach"]),
        row(
            "POST",
            "/routine/add",
            add("x", every(5), json!({"type": "chain", "steps": []})),
            400,
        )
        .says(&["routines.x.action.steps"]),
        row(
            "POST",
            "/routine/add",
            add(
                "x",
                json!({"type": "webhook", "path": "audit", "secret_file": secret_file}),
                cmd(),
            ),
            400,
        )
        .says(&["webhook", "audit"]),
        row(
            "POST",
            "/routine/add",
            add(
                "x",
                json!({"type": "webhook", "path": "other", "secret_file": "/proc/self/environ"}),
                cmd(),
            ),
            400,
        )
        .says(&["routines.x.trigger.secret_file", "kernel file system"]),
        row(
            "POST",
            "/routine/add",
            add(
                "x",
                json!({"type": "webhook", "path": "other", "secret_file": d.join("agentd/key")}),
                cmd(),
            ),
            400,
        )
        .says(&["routines.x.trigger.secret_file", "may not read secrets"]),
        row(
            "POST",
            "/routine/add",
            add(
                "x",
                json!({"type": "webhook", "path": "other", "secret_file": missing_secret}),
                cmd(),
            ),
            400,
        )
        .says(&["routines.x.trigger.secret_file does not exist", "put a random secret"]),
        // /routine/remove.
        row("DELETE", "/routine/remove/a.b", None, 400).says(&["\"a.b\"", "letters, digits"]),
        row("DELETE", "/routine/remove/nothere", None, 404)
            .says(&["\"nothere\"", "config tree"]),
        row("DELETE", "/routine/remove/job", None, 409)
            .says(&["\"job\"", "not defined in the config tree", ".enable = false"]),
        // Webhooks.
        row("POST", "/webhook/nothere", None, 404)
            .raw_body(hook_body.clone())
            .headers(hook_headers("nothere", &now, &hook_body))
            .says(&["\"nothere\"", "no enabled routine"]),
        row("POST", "/webhook/audit", None, 401)
            .raw_body(hook_body.clone())
            .says(&["X-Osmoda-Timestamp"]),
        row("POST", "/webhook/audit", None, 401)
            .raw_body(hook_body.clone())
            .headers(vec![
                (TIMESTAMP_HEADER.into(), now.clone()),
                (SIGNATURE_HEADER.into(), "md5=abc".into()),
            ])
            .says(&["X-Osmoda-Signature", "sha256=<hex>"]),
        row("POST", "/webhook/audit", None, 401)
            .raw_body(hook_body.clone())
            .headers(hook_headers("other", &now, &hook_body))
            .says(&["signature does not match", "<timestamp>:<path>:<body>"]),
        row("POST", "/webhook/audit", None, 401)
            .raw_body(hook_body.clone())
            .headers(hook_headers("audit", "soon", &hook_body))
            .says(&["X-Osmoda-Timestamp", "Unix seconds"]),
        row("POST", "/webhook/audit", None, 401)
            .raw_body(hook_body.clone())
            .headers(hook_headers("audit", &stale, &hook_body))
            .says(&["behind this machine's clock", "60s"]),
        row("POST", "/webhook/audit", None, 413)
            .raw_body(big_hook.clone())
            .headers(hook_headers("audit", &now, &big_hook))
            .says(&["payload", "65536"]),
        row("POST", "/webhook/audit", None, 413)
            .raw_body(huge)
            .says(&["request body", "1048576"]),
        row("POST", "/webhook/%FF", None, 400)
            .raw_body(hook_body.clone())
            .says(&["invalid URL path", "letters, digits"]),
    ];
    // A replay: accepted once, then refused.
    let replay = hook_headers("audit", &now, b"{\"n\":1}");
    let (s, v) = send(
        &r.socket,
        "POST",
        b"/webhook/audit",
        &replay,
        Some(b"{\"n\":1}"),
    )
    .await;
    assert_eq!(s, 202, "{v}");
    let accepted = r.wait_run(v["run_id"].as_i64().unwrap()).await;
    let rows: Vec<Row> = rows
        .into_iter()
        .chain([row("POST", "/webhook/audit", None, 409)
            .raw_body(b"{\"n\":1}".to_vec())
            .headers(replay)
            .says(&["already accepted", "replay", "sign a new timestamp"])])
        .collect();

    let print = std::env::var("OSMODA_PRINT_ERRORS").is_ok();
    let mut failures = Vec::new();
    for row in &rows {
        let what = row.what();
        let (status, body) = send(
            &r.socket,
            row.method,
            &row.path,
            &row.headers,
            row.body.as_deref(),
        )
        .await;
        if print {
            println!("{status} {what}\n    → {body}");
        }
        failures.extend(audit_row(
            &what,
            (status, &body),
            row.status,
            &row.needles,
            &private,
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    // Nothing a refusal asked for ran or was committed: the one accepted webhook run only.
    let runs = r.state.engine.history().list(None, None, 100).unwrap();
    assert_eq!(
        runs.iter().map(|x| x.id).collect::<Vec<_>>(),
        vec![accepted.id],
        "{runs:?}"
    );
    assert_eq!(tree.head().unwrap(), head, "nothing committed");

    // The daemon's own failures keep the shape too (status aside), without paths: a webhook
    // whose secret file went away (503), osmoda-watch down (502).
    let shape = |what: &str, status: u16, want: u16, body: &Value, needles: &[&str]| {
        assert_eq!(status, want, "{what}: {body}");
        let error = check_refusal(what, 400, body, &private).unwrap_or_else(|e| panic!("{e}"));
        for n in needles {
            assert!(error.contains(n), "{what}: {error:?} does not name {n:?}");
        }
    };
    std::fs::rename(&secret_file, d.join("hooks/moved")).unwrap();
    let h = hook_headers("audit", &now, b"{\"n\":2}");
    let (s, v) = send(&r.socket, "POST", b"/webhook/audit", &h, Some(b"{\"n\":2}")).await;
    shape(
        "webhook without its secret",
        s,
        503,
        &v,
        &["\"audit\"", "nothing ran"],
    );
    std::fs::rename(d.join("hooks/moved"), &secret_file).unwrap();
    wtrigger.fire();
    wtask.await.unwrap().unwrap();
    let (s, v) = send(
        &r.socket,
        "POST",
        b"/routine/add",
        &[],
        add("x", every(60), cmd())
            .map(|b| b.to_string().into_bytes())
            .as_deref(),
    )
    .await;
    shape(
        "add with watch down",
        s,
        502,
        &v,
        &["osmoda-watch", "nothing was committed"],
    );
    assert_eq!(tree.head().unwrap(), head, "nothing committed");
    r.stop().await;
}
