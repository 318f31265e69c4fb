//! Issue 11's error-text audit as a table: every refusal of the agent socket's APIs (config,
//! files, commands, events, incidents, approvals, ledger, capabilities, system) is driven
//! against a real agentd with a real tree, and its body must have the one shape: a JSON object
//! `{error, detail}`, `error` a sentence that names what was wrong (each row's needles) and what
//! to do where there is something to do, `detail` null or an object; no empty body, no Debug
//! dump (`Some(`, `Os {`, `kind: …`), no internal error, and none of agentd's own paths (its
//! state dir, its sockets). The approval socket's and the relay socket's refusals likewise.

mod common;

use common::Daemon;
use osmoda_client::Method;
use serde_json::{json, Value};

/// One refusal: method, path (with query), body, status, words the error must contain.
type Row = (&'static str, String, Option<Value>, u16, Vec<&'static str>);

fn row(m: &'static str, p: &str, b: Option<Value>, s: u16, needles: &[&'static str]) -> Row {
    (m, p.to_string(), b, s, needles.to_vec())
}

/// The shape every refusal shares (`osmoda_daemon::audit`): the error text, or what is wrong.
fn check_shape(
    what: &str,
    status: u16,
    body: &Value,
    private: &[String],
) -> Result<String, String> {
    osmoda_daemon::audit::check_refusal(what, status, body, private)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_says_what_was_wrong_in_one_shape() {
    let d = Daemon::start_with_tree().await;
    let state = d.dir.path().join("state");
    let private = vec![
        state.display().to_string(),
        d.approval_socket.display().to_string(),
    ];
    let scratch = d.dir.path().join("scratch");
    std::fs::create_dir(&scratch).expect("mkdir");
    let tree = d.tree_dir();
    let nix = |path: &str, v: &str| Some(json!({"path": path, "nix": v, "reason": "r"}));
    let set = |path: &str, v: Value| Some(json!({"path": path, "value": v, "reason": "r"}));
    let rows: Vec<Row> = vec![
        // Protocol and routing.
        row("GET", "/no/such/route", None, 404, &["/no/such/route"]),
        row("GET", "/config/set", None, 405, &["GET", "/config/set"]),
        row(
            "POST",
            "/config/set",
            Some(json!("text")),
            422,
            &["wrong shape", "expected a JSON object"],
        ),
        row(
            "POST",
            "/config/set",
            Some(json!({"path": "a", "value": 1, "reason": "r", "bogus": 1})),
            422,
            &["unknown field `bogus`", "`path`"],
        ),
        row(
            "POST",
            "/config/set",
            Some(json!({"path": 1, "value": 1, "reason": "r"})),
            422,
            &["path", "expected a string"],
        ),
        row(
            "POST",
            "/config/set",
            Some(json!({"path": "a", "reason": "r"})),
            400,
            &["value", "nix"],
        ),
        // Config.
        row(
            "POST",
            "/config/set",
            set("a", json!(1)).map(|mut b| {
                b["reason"] = json!(" ");
                b
            }),
            400,
            &["reason"],
        ),
        row("POST", "/config/set", set("", json!(1)), 400, &["path"]),
        row("POST", "/config/set", set("a..b", json!(1)), 400, &["path"]),
        row(
            "POST",
            "/config/set",
            Some(json!({"path": "a", "value": 1, "reason": "r", "file": "../etc/passwd"})),
            400,
            &["file"],
        ),
        row(
            "POST",
            "/config/set",
            Some(json!({"path": "a", "value": 1, "reason": "r", "file": "missing.nix"})),
            404,
            &["missing.nix"],
        ),
        row(
            "POST",
            "/config/set",
            nix("a", "1 +"),
            400,
            &["raw Nix value does not parse at 1:4"],
        ),
        row(
            "POST",
            "/config/set",
            nix("a", "1 + \"a\""),
            422,
            &["cannot add a string to an integer"],
        ),
        row(
            "POST",
            "/config/set",
            nix("a", "builtins.readFile /etc/hostname"),
            422,
            &["forbidden in restricted mode"],
        ),
        row(
            "POST",
            "/config/set",
            set("services.osmoda.wach.enable", json!(true)),
            422,
            &["services.osmoda.wach", "did you mean"],
        ),
        row(
            "POST",
            "/config/set",
            set(
                "services.osmoda.watch.watchers.x.intervalSecs",
                json!("ten"),
            ),
            422,
            &["intervalSecs"],
        ),
        row(
            "POST",
            "/config/unset",
            Some(json!({"path": "no.such.option", "reason": "r"})),
            404,
            &[
                "no.such.option",
                "not defined in the tree",
                "nothing to unset",
            ],
        ),
        row(
            "POST",
            "/config/append",
            nix("time.timeZone", "\"x\""),
            422,
            &["time.timeZone"],
        ),
        row(
            "POST",
            "/config/remove",
            nix("environment.systemPackages", "pkgs.nothere"),
            404,
            &[
                "pkgs.nothere",
                "not an element of `environment.systemPackages`",
            ],
        ),
        row(
            "GET",
            "/config/get?path=no.such.option",
            None,
            404,
            &["no.such.option"],
        ),
        row(
            "GET",
            "/config/get",
            None,
            400,
            &["invalid query string", "missing field `path`"],
        ),
        row("GET", "/config/get?path=a&bogus=1", None, 400, &["bogus"]),
        row("GET", "/config/generation/nothere", None, 404, &["nothere"]),
        row("GET", "/config/diff?from=nothere", None, 404, &["nothere"]),
        row("GET", "/config/generations?limit=0", None, 400, &["limit"]),
        row(
            "POST",
            "/config/revert",
            Some(json!({"rev": "nothere", "reason": "r"})),
            404,
            &["nothere"],
        ),
        row(
            "POST",
            "/config/restore",
            Some(json!({"rev": "nothere", "reason": "r"})),
            404,
            &["nothere"],
        ),
        row(
            "POST",
            "/config/commit",
            Some(json!({"reason": "r"})),
            409,
            &["nothing"],
        ),
        // Files.
        row("GET", "/fs/read?path=relative", None, 400, &["absolute"]),
        row(
            "GET",
            &format!("/fs/read?path={}", scratch.join("none").display()),
            None,
            400,
            &["none: No such file or directory"],
        ),
        row(
            "GET",
            &format!("/fs/read?path={}", scratch.display()),
            None,
            400,
            &["regular file"],
        ),
        row(
            "GET",
            &format!("/fs/read?path={}", state.join("ledger.db").display()),
            None,
            403,
            &["cannot see"],
        ),
        row("GET", "/fs/read?path=/etc/shadow", None, 403, &["shadow"]),
        row(
            "GET",
            &format!("/fs/list?path={}", scratch.join("none").display()),
            None,
            400,
            &["none: No such file or directory"],
        ),
        row(
            "POST",
            "/fs/write",
            Some(json!({"path": scratch.join("a"), "content": "a", "content_base64": "YQ=="})),
            400,
            &["content"],
        ),
        row(
            "POST",
            "/fs/write",
            Some(json!({"path": scratch.join("a"), "content_base64": "!!"})),
            400,
            &["base64"],
        ),
        row(
            "POST",
            "/fs/write",
            Some(json!({"path": scratch.join("a"), "content": "a", "mode": 0o10000})),
            400,
            &["mode"],
        ),
        row(
            "POST",
            "/fs/write",
            Some(json!({"path": tree.join("configuration.nix"), "content": "{ }"})),
            403,
            &["config_set"],
        ),
        // Commands.
        row(
            "POST",
            "/system/exec",
            Some(json!({"timeout_secs": 5})),
            400,
            &["argv", "command"],
        ),
        row(
            "POST",
            "/system/exec",
            Some(json!({"argv": ["true"], "timeout_secs": 0})),
            400,
            &["timeout_secs"],
        ),
        row(
            "POST",
            "/system/exec",
            Some(json!({"argv": ["true"], "timeout_secs": 5, "cwd": "rel"})),
            400,
            &["absolute"],
        ),
        row(
            "POST",
            "/system/exec",
            Some(json!({"argv": ["true"], "timeout_secs": 5, "writable": [scratch.join("none")]})),
            400,
            &[
                "writable path",
                "No such file or directory",
                "create it first",
            ],
        ),
        row(
            "POST",
            "/system/exec",
            Some(json!({"argv": ["true"]})),
            422,
            &["missing field `timeout_secs`"],
        ),
        row(
            "POST",
            "/system/exec",
            Some(json!({"argv": ["true"], "timeout_secs": 5, "env": {"1X": "a"}})),
            400,
            &["env"],
        ),
        // Events and the ledger.
        row("GET", "/events/log?limit=0", None, 400, &["limit"]),
        row("GET", "/events/log?order=sideways", None, 400, &["order"]),
        row("GET", "/events/log?since=yesterday", None, 400, &["since"]),
        row("GET", "/events/search", None, 400, &["q"]),
        row("GET", "/events/search?q=a%00b", None, 400, &["q"]),
        row(
            "POST",
            "/events/append",
            Some(json!({"type": "Approval.approved", "daemon": "x", "payload": {}})),
            400,
            &["approval.", "only by agentd"],
        ),
        row(
            "POST",
            "/events/append",
            Some(json!({"type": "a|b", "daemon": "x", "payload": {}})),
            400,
            &["type"],
        ),
        row(
            "POST",
            "/events/append",
            Some(json!({"type": "x.y", "payload": {}})),
            422,
            &["missing field `daemon`"],
        ),
        row(
            "GET",
            "/ledger/proof/inclusion?id=999999",
            None,
            400,
            &["999999", "ids 1..="],
        ),
        row(
            "GET",
            "/ledger/proof/consistency?from=5&to=2",
            None,
            400,
            &["larger than the tree"],
        ),
        // Incidents.
        row(
            "GET",
            "/incident/abc",
            None,
            400,
            &["invalid path parameter", "`abc` is not a number"],
        ),
        row("GET", "/incident/999999", None, 404, &["999999"]),
        row(
            "POST",
            "/incident/999999/step",
            Some(json!({"action": "x", "result": "y"})),
            404,
            &["999999"],
        ),
        row(
            "POST",
            "/incident/create",
            Some(json!({"name": ""})),
            400,
            &["name"],
        ),
        // Approvals.
        row(
            "POST",
            "/approval/request",
            Some(json!({"detail": "x"})),
            422,
            &["missing field `operation`"],
        ),
        row(
            "POST",
            "/approval/check",
            Some(json!({"id": "nothere", "operation": {}})),
            404,
            &["nothere"],
        ),
        row("GET", "/approvals?limit=0", None, 400, &["limit"]),
        // System and capabilities.
        row(
            "POST",
            "/system/query",
            Some(json!({"what": "everything"})),
            422,
            &["unknown field `what`", "`query`"],
        ),
        row(
            "POST",
            "/system/query",
            Some(json!({"query": "everything"})),
            400,
            &["everything"],
        ),
        row(
            "POST",
            "/capability/revoke",
            Some(json!({"id": ""})),
            400,
            &["id"],
        ),
    ];
    let audit = std::env::var("OSMODA_PRINT_ERRORS").is_ok();
    let mut failures = Vec::new();
    for (method, path, body, status, needles) in &rows {
        let what = format!(
            "{method} {path} {}",
            body.as_ref().map(Value::to_string).unwrap_or_default()
        );
        let m = if *method == "GET" {
            Method::GET
        } else {
            Method::POST
        };
        let r = d
            .agent()
            .request(m, path, body.as_ref())
            .await
            .expect("request");
        if audit {
            println!("{} {what}\n    → {}", r.status, r.body);
        }
        if r.status != *status {
            failures.push(format!(
                "{what}: status {} (wanted {status}): {}",
                r.status, r.body
            ));
            continue;
        }
        let error = match check_shape(&what, r.status, &r.body, &private) {
            Ok(e) => e,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        for n in needles {
            if !error.contains(n) {
                failures.push(format!("{what}: {error:?} does not name {n:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    // Nothing any of them asked for landed.
    assert_eq!(
        common::git(&tree, &["rev-list", "--count", "HEAD"]).trim(),
        "1"
    );
    d.stop().await;
}

/// The approval socket's refusals, in the same shape: a person deciding a ticket that does not
/// exist or is no longer pending, a malformed decision, a wrong route or method, a bad listing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_of_the_approval_socket_says_what_was_wrong_in_one_shape() {
    let d = Daemon::start().await;
    let state = d.dir.path().join("state");
    let private = vec![
        state.display().to_string(),
        d.approval_socket.display().to_string(),
    ];
    let ticket = |op: &str| {
        let agent = d.agent();
        let op = op.to_string();
        async move {
            let t = agent
                .request(
                    Method::POST,
                    "/approval/request",
                    Some(&json!({"operation": {"op": op}, "detail": "x"})),
                )
                .await
                .expect("request");
            assert_eq!(t.status, 200, "{}", t.body);
            t.body["id"].as_str().expect("id").to_string()
        }
    };
    let (pending, approved, denied) = (ticket("a").await, ticket("b").await, ticket("c").await);
    for (id, verb) in [(&approved, "approve"), (&denied, "deny")] {
        let r = d
            .human()
            .request(Method::POST, &format!("/approval/{id}/{verb}"), None)
            .await
            .expect("decide");
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let long = "x".repeat(5000);
    let rows: Vec<Row> = vec![
        row("GET", "/no/such/route", None, 404, &["/no/such/route"]),
        row("GET", "/config/set", None, 404, &["/config/set"]),
        row(
            "GET",
            &format!("/approval/{pending}/approve"),
            None,
            405,
            &["GET", "POST"],
        ),
        row(
            "POST",
            "/approval/nothere/approve",
            None,
            404,
            &["no approval ticket nothere", "approvals list"],
        ),
        row(
            "POST",
            "/approval/nothere/deny",
            Some(json!({"reason": "no"})),
            404,
            &["no approval ticket nothere", "approvals list"],
        ),
        row(
            "POST",
            &format!("/approval/{long}/approve"),
            None,
            404,
            &["no approval ticket", "approvals list"],
        ),
        row(
            "POST",
            &format!("/approval/{pending}/approve"),
            Some(json!({"bogus": 1})),
            422,
            &["unknown field `bogus`", "`reason`"],
        ),
        row(
            "POST",
            &format!("/approval/{pending}/approve"),
            Some(json!({"reason": 5})),
            422,
            &["reason", "expected a string"],
        ),
        row(
            "POST",
            &format!("/approval/{approved}/approve"),
            None,
            409,
            &["is approved, not pending", "approvals list"],
        ),
        row(
            "POST",
            &format!("/approval/{denied}/approve"),
            None,
            409,
            &["is denied, not pending", "approvals list"],
        ),
        row(
            "POST",
            &format!("/approval/{approved}/deny"),
            None,
            409,
            &["is approved, not pending"],
        ),
        row("GET", "/approvals?limit=0", None, 400, &["limit"]),
        row("GET", "/approvals?limit=abc", None, 400, &["limit"]),
        row("GET", "/approvals?bogus=1", None, 400, &["bogus"]),
    ];
    let mut failures = Vec::new();
    for (method, path, body, status, needles) in &rows {
        let what = format!(
            "{method} {} {}",
            &path[..path.len().min(80)],
            body.as_ref().map(Value::to_string).unwrap_or_default()
        );
        let m = if *method == "GET" {
            Method::GET
        } else {
            Method::POST
        };
        let r = d
            .human()
            .request(m, path, body.as_ref())
            .await
            .expect("request");
        if r.status != *status {
            failures.push(format!(
                "{what}: status {} (wanted {status}): {}",
                r.status, r.body
            ));
            continue;
        }
        let error = match check_shape(&what, r.status, &r.body, &private) {
            Ok(e) => e,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        for n in needles {
            if !error.contains(n) {
                failures.push(format!("{what}: {error:?} does not name {n:?}"));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    // None of them decided anything: the pending ticket is still pending.
    let listed = d
        .human()
        .request(Method::GET, "/approvals", None)
        .await
        .expect("list");
    let t = listed
        .body
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["id"] == json!(pending))
        .cloned()
        .expect("listed");
    assert_eq!(t["status"], "pending");
    d.stop().await;
}

/// The relay socket's refusals (the gateway passing on a person's decision), in the same shape:
/// a malformed body or decision, no requester, labels that would break the actor, a sender who
/// is not the owner, an unknown, agent-requested or decided ticket, a wrong route or method.
/// None of them decides anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_of_the_relay_socket_says_what_was_wrong_in_one_shape() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relay_dir = dir.path().join("relay");
    std::fs::create_dir(&relay_dir).expect("mkdir");
    let sock = relay_dir.join("relay.sock");
    let settings = agentd::Settings {
        relay_uid: Some(nix::unistd::geteuid().as_raw()),
        relay_socket: Some(sock.clone()),
        ..Default::default()
    };
    let d = Daemon::start_with_tree_and(settings).await;
    let (trigger, shutdown) = agentd::shutdown_channel();
    tokio::spawn(agentd::api::relay::serve(
        agentd::api::relay::bind(&sock).expect("bind relay"),
        d.state.clone(),
        shutdown,
    ));
    let relay = osmoda_client::Client::new(&sock);
    let private = vec![
        d.dir.path().join("state").display().to_string(),
        d.approval_socket.display().to_string(),
        sock.display().to_string(),
    ];
    // Gate tickets (disabling sshd: one denied, then one pending) and one the agent requested.
    let gate = || {
        let agent = d.agent();
        async move {
            let r = agent
                .request(
                    Method::POST,
                    "/config/set",
                    Some(&json!({"file": "configuration.nix", "path": "services.openssh.enable", "value": false, "reason": "r"})),
                )
                .await
                .expect("post");
            assert_eq!(r.status, 403, "{}", r.body);
            r.body["detail"]["ticket"]
                .as_str()
                .expect("ticket")
                .to_string()
        }
    };
    let requested = d
        .agent()
        .request(
            Method::POST,
            "/approval/request",
            Some(&json!({"operation": {"op": "x"}, "detail": "x"})),
        )
        .await
        .expect("request");
    let requested = requested.body["id"].as_str().expect("id").to_string();
    let decided = gate().await;
    let owner = json!({"channel": "telegram", "sender_id": "42", "owner": true});
    let r = relay
        .request(
            Method::POST,
            &format!("/relay/approval/{decided}"),
            Some(&json!({"decision": "deny", "requester": owner})),
        )
        .await
        .expect("deny");
    assert_eq!(r.status, 200, "{}", r.body);
    // Asked again after the denial: a new ticket, pending.
    let pending = gate().await;
    assert_ne!(pending, decided);
    let at = |id: &str| format!("/relay/approval/{id}");
    let decide = |decision: &str, requester: Value| {
        Some(json!({"decision": decision, "requester": requester}))
    };
    let rows: Vec<Row> = vec![
        row("GET", "/no/such/route", None, 404, &["/no/such/route"]),
        row(
            "POST",
            &format!("/approval/{pending}/approve"),
            None,
            404,
            &["/approval/"],
        ),
        row("GET", &at(&pending), None, 405, &["GET", "POST"]),
        row(
            "POST",
            &at(&pending),
            Some(json!("text")),
            422,
            &["expected a JSON object"],
        ),
        row(
            "POST",
            &at(&pending),
            Some(json!({"decision": "approve", "requester": owner, "bogus": 1})),
            422,
            &["unknown field `bogus`", "`decision`"],
        ),
        row(
            "POST",
            &at(&pending),
            Some(json!({"requester": owner})),
            422,
            &["missing field `decision`"],
        ),
        row(
            "POST",
            &at(&pending),
            decide("approve", json!({"channel": "telegram", "owner": "yes"})),
            422,
            &["owner", "expected a boolean"],
        ),
        row(
            "POST",
            &at(&pending),
            decide("maybe", owner.clone()),
            400,
            &["approve", "deny", "maybe"],
        ),
        row(
            "POST",
            &at(&pending),
            Some(json!({"decision": "approve"})),
            400,
            &["requester", "nothing is decided"],
        ),
        row(
            "POST",
            &at(&pending),
            decide("approve", json!({"channel": "tele gram", "owner": true})),
            400,
            &["requester.channel", "letters, digits"],
        ),
        row(
            "POST",
            &at(&pending),
            decide(
                "approve",
                json!({"channel": "telegram", "sender_id": "a]b", "owner": true}),
            ),
            400,
            &["requester.sender_id"],
        ),
        row(
            "POST",
            &at(&pending),
            Some(json!({"decision": "approve", "requester": owner, "approval_request": "x,y"})),
            400,
            &["approval_request"],
        ),
        row(
            "POST",
            &at(&pending),
            decide(
                "approve",
                json!({"channel": "telegram", "sender_id": "7", "owner": false}),
            ),
            403,
            &["only the owner", "not the owner"],
        ),
        row(
            "POST",
            &at("nothere"),
            decide("approve", owner.clone()),
            404,
            &["no approval ticket nothere", "approvals list"],
        ),
        row(
            "POST",
            &at(&requested),
            decide("approve", owner.clone()),
            403,
            &["requested by the agent", "agentctl"],
        ),
        row(
            "POST",
            &at(&decided),
            decide("approve", owner.clone()),
            409,
            &["is denied, not pending", "approvals list"],
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, body, status, needles) in &rows {
        let what = format!(
            "{method} {path} {}",
            body.as_ref().map(Value::to_string).unwrap_or_default()
        );
        let m = if *method == "GET" {
            Method::GET
        } else {
            Method::POST
        };
        let r = relay
            .request(m, path, body.as_ref())
            .await
            .expect("request");
        failures.extend(osmoda_daemon::audit::audit_row(
            &what,
            (r.status, &r.body),
            *status,
            needles,
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
    // None of them decided anything: the gate's ticket is still pending, the tree unchanged.
    let listed = d
        .agent()
        .request(Method::GET, "/approvals?limit=1000", None)
        .await
        .expect("list");
    let t = listed
        .body
        .as_array()
        .expect("list")
        .iter()
        .find(|t| t["id"] == json!(pending))
        .cloned()
        .expect("listed");
    assert_eq!(t["status"], "pending");
    trigger.fire();
    d.stop().await;
}

/// The relay's refusals that need a caller of another uid than the gateway's: the relay is
/// configured for `nobody` and this test (root, or whoever runs it) sends a well-formed
/// decision, so the caller is "another uid"; and a relay socket served without `--relay-user`.
/// Both keep the one shape, name what is wrong and what to do, and decide nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relays_refusals_of_another_uid_keep_the_shape_and_decide_nothing() {
    let me = nix::unistd::geteuid().as_raw();
    let gateway = if me == 65534 { 65533 } else { 65534 };
    for relay_uid in [Some(gateway), None] {
        let dir = tempfile::tempdir().expect("tempdir");
        let sock = dir.path().join("relay.sock");
        let settings = agentd::Settings {
            relay_uid,
            relay_socket: Some(sock.clone()),
            ..Default::default()
        };
        let d = Daemon::start_with_tree_and(settings).await;
        let (trigger, shutdown) = agentd::shutdown_channel();
        tokio::spawn(agentd::api::relay::serve(
            agentd::api::relay::bind(&sock).expect("bind relay"),
            d.state.clone(),
            shutdown,
        ));
        let r = d
            .agent()
            .request(
                Method::POST,
                "/config/set",
                Some(&json!({"file": "configuration.nix", "path": "services.openssh.enable", "value": false, "reason": "r"})),
            )
            .await
            .expect("post");
        assert_eq!(r.status, 403, "{}", r.body);
        let ticket = r.body["detail"]["ticket"]
            .as_str()
            .expect("ticket")
            .to_string();
        let private = vec![
            d.dir.path().join("state").display().to_string(),
            d.approval_socket.display().to_string(),
            sock.display().to_string(),
        ];
        let owner = json!({"channel": "telegram", "sender_id": "42", "owner": true});
        let body = json!({"decision": "approve", "requester": owner});
        let what = format!("POST /relay/approval/{ticket} as uid {me} (relay: {relay_uid:?})");
        let r = osmoda_client::Client::new(&sock)
            .request(
                Method::POST,
                &format!("/relay/approval/{ticket}"),
                Some(&body),
            )
            .await
            .expect("relay");
        let needles: &[&str] = match relay_uid {
            Some(_) => &["only the gateway's user", "may relay decisions"],
            None => &["the approval relay is not configured"],
        };
        let failures =
            osmoda_daemon::audit::audit_row(&what, (r.status, &r.body), 403, needles, &private);
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        let hint = r.body["detail"]["hint"].as_str().unwrap_or_default();
        assert!(
            hint.contains("agentctl approvals") || hint.contains("--relay-user"),
            "{}",
            r.body
        );
        let listed = d
            .human()
            .request(Method::GET, "/approvals?limit=1000", None)
            .await
            .expect("list");
        let t = listed
            .body
            .as_array()
            .expect("list")
            .iter()
            .find(|t| t["id"] == json!(ticket))
            .cloned();
        assert_eq!(t.expect("listed")["status"], "pending");
        trigger.fire();
        d.stop().await;
    }
}
