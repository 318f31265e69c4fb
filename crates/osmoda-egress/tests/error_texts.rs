//! Issue 11's error-text audit for osmoda-egress: the proxy's refusals (a malformed head, not a
//! CONNECT, no, bad, forged, expired or revoked token, a target that does not parse, one the
//! token does not allow, one that resolves where nothing is dialled) and the status socket's
//! (the real binary) keep `osmoda_daemon::audit`'s rule: a JSON `{error, detail}` naming what
//! was wrong, with a `kind` and a `hint` saying what to do; no Debug dump, none of the proxy's
//! own paths (key files, spool). Names resolve through the DNS fixture on loopback; no refusal
//! here dials anything.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::dns::{self, Rec};
use common::*;
use osmoda_client::Method;
use osmoda_daemon::audit::audit_row;
use serde_json::Value;

/// The JSON body of a proxy answer (after its head).
fn body(text: &str) -> Value {
    let b = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(b).unwrap_or(Value::Null)
}

/// One proxy answer against the rule: JSON, `detail.kind` = the reason header, a hint, and
/// `audit_row`'s shape, status and words. Returns the failures.
fn audit_answer(
    what: &str,
    a: &Answer,
    status: u16,
    needles: &[&str],
    private: &[String],
) -> Vec<String> {
    let mut failures = Vec::new();
    if !a.text.contains("content-type: application/json") {
        failures.push(format!("{what}: not JSON: {}", a.text));
    }
    let b = body(&a.text);
    if b["detail"]["kind"] != a.reason.as_str() || !b["detail"]["hint"].is_string() {
        failures.push(format!(
            "{what}: detail.kind is not the reason header {:?}, or no hint: {b}",
            a.reason
        ));
    }
    failures.extend(audit_row(what, (a.status, &b), status, needles, private));
    failures
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proxy_refusal_says_what_was_wrong_in_one_shape() {
    let keys = Keys::new();
    let mut zone: dns::Zone = HashMap::new();
    zone.insert(
        "ten.allowed.test".into(),
        vec![Rec::Ip("10.0.0.1".parse().unwrap())],
    );
    let dns = dns::serve(zone).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let caps: &[(&str, &[&str], &[u16])] = &[("web", &["*.allowed.test"], &[443])];
    let cfg = config(&keys, listener.local_addr().unwrap(), caps, &[], dns);
    let proxy = start(listener, None, &cfg, &keys.spool()).await;
    let private = vec![
        keys.public().display().to_string(),
        keys.revoked().display().to_string(),
        keys.spool().display().to_string(),
    ];

    let good = keys.token(caps);
    let expired = keys.token_at(caps, now() - 7200, now() - 3600);
    let forged = osmoda_egress::token::mint(
        &ed25519_dalek::SigningKey::from_bytes(&[9; 32]),
        &claims(caps, now(), now() + 60),
    )
    .unwrap();
    let revoked_claims = claims(caps, now(), now() + 3600);
    let revoked = osmoda_egress::token::mint(&keys.sk, &revoked_claims).unwrap();
    std::fs::write(keys.revoked(), format!("{}\n", revoked_claims.id)).unwrap();
    let g = Some(good.as_str());
    let rows: Vec<(&str, Vec<u8>, u16, Vec<&str>)> = vec![
        (
            "garbage",
            b"\x16\x03\x01 hello\r\n\r\n".to_vec(),
            400,
            vec!["malformed-request"],
        ),
        (
            "GET",
            b"GET http://x.allowed.test/ HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            405,
            vec!["GET is not proxied", "CONNECT"],
        ),
        (
            "no token",
            connect("api.allowed.test:443", None),
            407,
            vec!["no-token", "Proxy-Authorization"],
        ),
        (
            "not a token",
            connect("api.allowed.test:443", Some("hello")),
            407,
            vec!["token-invalid"],
        ),
        (
            "Basic without a password",
            b"CONNECT a.allowed.test:443 HTTP/1.1\r\nProxy-Authorization: Basic !!!\r\n\r\n"
                .to_vec(),
            407,
            vec!["bad-credential"],
        ),
        (
            "forged",
            connect("api.allowed.test:443", Some(&forged)),
            407,
            vec!["token-forged"],
        ),
        (
            "expired",
            connect("api.allowed.test:443", Some(&expired)),
            407,
            vec!["token-expired"],
        ),
        (
            "revoked",
            connect("api.allowed.test:443", Some(&revoked)),
            407,
            vec!["token-revoked", "revoked"],
        ),
        (
            "no port",
            connect("api.allowed.test", g),
            400,
            vec!["invalid-target"],
        ),
        (
            "numeric form",
            connect("0x7f000001:443", g),
            400,
            vec!["ip-literal"],
        ),
        (
            "another name",
            connect("api.other.test:443", g),
            403,
            vec!["api.other.test:443 is not allowed by this token"],
        ),
        (
            "another port",
            connect("api.allowed.test:22", g),
            403,
            vec!["api.allowed.test:22 is not allowed by this token"],
        ),
        (
            "resolves to a private address",
            connect("ten.allowed.test:443", g),
            403,
            vec!["10.0.0.1", "never dialled"],
        ),
    ];
    let mut failures = Vec::new();
    for (what, raw, status, needles) in &rows {
        let a = send(proxy.addr, raw).await;
        failures.extend(audit_answer(what, &a, *status, needles, &private));
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    proxy.trigger.fire();
    proxy.task.await.unwrap().unwrap();
}

/// The proxy's failures (5xx) keep the same rule as its refusals: the resolver knows no such
/// name (502), has no address for it (502), never answers (504); nothing listens at the allowed
/// address (502); every tunnel is taken (503). Each names the target and what failed, with the
/// reason as `detail.kind` and a hint; no resolver or OS error dump. Only loopback is dialled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_proxy_failure_says_what_went_wrong_in_one_shape() {
    let keys = Keys::new();
    // A port nothing listens on (bound, then closed) and one that accepts.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = upstream.local_addr().unwrap().port();
    let mut zone: dns::Zone = HashMap::new();
    zone.insert(
        "local.allowed.test".into(),
        vec![Rec::Ip("127.0.0.1".parse().unwrap())],
    );
    zone.insert("empty.allowed.test".into(), Vec::new());
    let dns = dns::serve(zone).await;
    // A resolver that never answers: a UDP socket nobody reads.
    let deaf = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let caps: &[(&str, &[&str], &[u16])] = &[("web", &["*.allowed.test"], &[closed, open])];
    let private = vec![
        keys.public().display().to_string(),
        keys.revoked().display().to_string(),
        keys.spool().display().to_string(),
    ];
    // Each proxy has its own spool: a spool is one reporter's, locked while it runs.
    let proxy = |name: &'static str, resolver: std::net::SocketAddr, tunnels: usize| {
        let keys = &keys;
        async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut cfg = config(
                keys,
                listener.local_addr().unwrap(),
                caps,
                &["127.0.0.1/32"],
                resolver,
            );
            cfg.limits.connect_timeout_secs = 1;
            cfg.limits.max_tunnels = tunnels;
            start(listener, None, &cfg, &keys.spool().join(name)).await
        }
    };
    let plain = proxy("plain", dns, 64).await;
    let deaf_proxy = proxy("deaf", deaf.local_addr().unwrap(), 64).await;
    let capped = proxy("capped", dns, 1).await;
    let token = keys.token(caps);
    let g = Some(token.as_str());
    // The capped proxy's one tunnel, held open while its next request is answered.
    let held = send(
        capped.addr,
        &connect(&format!("local.allowed.test:{open}"), g),
    )
    .await;
    assert_eq!(held.status, 200, "{}", held.text);
    let (_upstream_end, _) = upstream.accept().await.unwrap();

    let closed_at = format!("127.0.0.1:{closed}");
    let rows: Vec<(&str, std::net::SocketAddr, String, u16, Vec<&str>)> = vec![
        (
            "a name the resolver does not know",
            plain.addr,
            format!("missing.allowed.test:{open}"),
            502,
            vec!["missing.allowed.test"],
        ),
        (
            "a name without an address",
            plain.addr,
            format!("empty.allowed.test:{open}"),
            502,
            vec!["empty.allowed.test"],
        ),
        (
            "nothing listens at the address",
            plain.addr,
            format!("local.allowed.test:{closed}"),
            502,
            vec![closed_at.as_str(), "refused"],
        ),
        (
            "a resolver that never answers",
            deaf_proxy.addr,
            format!("local.allowed.test:{open}"),
            504,
            vec!["local.allowed.test"],
        ),
        (
            "every tunnel taken",
            capped.addr,
            format!("local.allowed.test:{open}"),
            503,
            vec!["tunnels are open"],
        ),
    ];
    let mut failures = Vec::new();
    for (what, addr, target, status, needles) in &rows {
        let started = Instant::now();
        let a = send(*addr, &connect(target, g)).await;
        if started.elapsed() > Duration::from_secs(10) {
            failures.push(format!("{what}: answered after {:?}", started.elapsed()));
        }
        failures.extend(audit_answer(what, &a, *status, needles, &private));
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    drop(held);
    for p in [plain, deaf_proxy, capped] {
        p.trigger.fire();
        p.task.await.unwrap().unwrap();
    }
}

/// The real binary's status socket: an unknown route or a wrong method is a JSON refusal naming
/// what it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_socket_refuses_in_one_shape() {
    let keys = Keys::new();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = config(
        &keys,
        format!("127.0.0.1:{port}").parse().unwrap(),
        &[],
        &[],
        "127.0.0.1:53".parse().unwrap(),
    );
    let config_file = dir.path().join("egress.json");
    std::fs::write(&config_file, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let socket = dir.path().join("egress.sock");
    let mut child = std::process::Command::new(BIN)
        .arg("--config")
        .arg(&config_file)
        .arg("--socket")
        .arg(&socket)
        .arg("--proxy-socket")
        .arg(dir.path().join("egress-proxy.sock"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--agentd-socket")
        .arg(dir.path().join("agentd.sock"))
        .spawn()
        .unwrap();
    let client = osmoda_client::Client::new(&socket);
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get("/health").await.is_err() {
        assert!(child.try_wait().unwrap().is_none(), "osmoda-egress exited");
        assert!(Instant::now() < deadline, "no status socket within 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let private = vec![
        dir.path().join("state").display().to_string(),
        config_file.display().to_string(),
        keys.public().display().to_string(),
    ];
    let rows: Vec<(Method, &str, u16, Vec<&str>)> = vec![
        (
            Method::GET,
            "/no/such/route",
            404,
            vec!["no such route /no/such/route", "/health", "CONNECT"],
        ),
        (Method::POST, "/health", 405, vec!["POST", "/health"]),
    ];
    let mut failures = Vec::new();
    for (method, path, status, needles) in &rows {
        let r = client
            .request(method.clone(), path, None::<&Value>)
            .await
            .unwrap();
        failures.extend(audit_row(
            &format!("{method} {path}"),
            (r.status, &r.body),
            *status,
            needles,
            &private,
        ));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Connects from `from` (a loopback address) and reads what the proxy answers without a byte
/// sent: the admission refusals come before the head is read.
async fn admitted_from(proxy: std::net::SocketAddr, from: &str) -> Answer {
    use tokio::io::AsyncReadExt;
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
    let mut s = sock.connect(proxy).await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let reason = text
        .lines()
        .find_map(|l| l.strip_prefix("x-osmoda-egress-reason: "))
        .unwrap_or("")
        .to_string();
    Answer {
        status,
        reason,
        text,
        stream: s,
    }
}

/// The refusals that come before a request is read or after it was judged: a peer over its
/// share of waiting connections (`peer-cap`), a listener full of them (`pending-cap`), and an
/// allow the spool could not take (`unrecorded`: the tunnel is refused, its spool's path is in
/// no answer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admission_and_recording_refusals_say_what_was_wrong_in_one_shape() {
    use osmoda_egress::admission::{MAX_PENDING, MAX_PENDING_PER_PEER};
    let keys = Keys::new();
    let upstream = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let open = upstream.local_addr().unwrap().port();
    let mut zone: dns::Zone = HashMap::new();
    zone.insert(
        "local.allowed.test".into(),
        vec![Rec::Ip("127.0.0.1".parse().unwrap())],
    );
    let dns = dns::serve(zone).await;
    let caps: &[(&str, &[&str], &[u16])] = &[("web", &["*.allowed.test"], &[open])];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = config(
        &keys,
        listener.local_addr().unwrap(),
        caps,
        &["127.0.0.1/32"],
        dns,
    );
    let spool = keys.spool().join("admission");
    let proxy = start(listener, None, &cfg, &spool).await;
    let private = vec![
        keys.public().display().to_string(),
        keys.revoked().display().to_string(),
        spool.display().to_string(),
    ];
    let mut failures = Vec::new();

    // One peer's share, held by idle connections, then one more from it.
    let mut held = Vec::new();
    let addr = proxy.addr;
    let hold_from = |from: String| async move {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(format!("{from}:0").parse().unwrap()).unwrap();
        sock.connect(addr).await.unwrap()
    };
    for _ in 0..MAX_PENDING_PER_PEER {
        held.push(hold_from("127.0.0.1".into()).await);
    }
    // The proxy counts a connection when it accepts it: wait until it has all of them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = admitted_from(addr, "127.0.0.1").await;
    failures.extend(audit_answer(
        "a peer over its share of waiting connections",
        &a,
        503,
        &[
            "peer-cap",
            "connections",
            &format!("the cap is {MAX_PENDING_PER_PEER}"),
        ],
        &private,
    ));
    // The listener's whole budget, held from other addresses, then a newcomer.
    let peers = MAX_PENDING / MAX_PENDING_PER_PEER;
    for p in 2..=peers {
        for _ in 0..MAX_PENDING_PER_PEER {
            held.push(hold_from(format!("127.0.0.{p}")).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let a = admitted_from(addr, &format!("127.0.0.{}", peers + 1)).await;
    failures.extend(audit_answer(
        "a listener full of waiting connections",
        &a,
        503,
        &["pending-cap", "connections are waiting"],
        &private,
    ));
    drop(held);
    tokio::time::sleep(Duration::from_millis(500)).await;

    // An allow the spool cannot take: its directory is gone (moved away at once, while the
    // denies above may still be written into it).
    std::fs::rename(&spool, keys.spool().join("admission-gone")).unwrap();
    let token = keys.token(caps);
    let a = send(
        addr,
        &connect(&format!("local.allowed.test:{open}"), Some(&token)),
    )
    .await;
    failures.extend(audit_answer(
        "an allow the spool could not take",
        &a,
        503,
        &["unrecorded", "could not be recorded"],
        &private,
    ));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    proxy.trigger.fire();
    proxy.task.await.unwrap().unwrap();
}
