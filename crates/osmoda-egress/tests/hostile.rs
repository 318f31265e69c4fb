//! Bad input on the proxy (malformed heads, huge headers, slowloris, a flood of refusals)
//! never stops it serving others; limits (tunnel cap, per-token rate, idle timeout) hold.
//! Inside a network namespace with only loopback.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::dns::{self, Rec};
use common::*;
use std::os::unix::process::CommandExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use tokio::net::TcpStream;

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn zone() -> dns::Zone {
    let mut z: dns::Zone = HashMap::new();
    z.insert(
        "api.allowed.test".into(),
        vec![Rec::Ip("127.0.0.2".parse().unwrap())],
    );
    z
}

const CAPS: &[(&str, &[&str], &[u16])] = &[("web", &["*.allowed.test"], &[443])];

/// A server on 127.0.0.2:443 that answers each connection with "ok" and keeps it open.
async fn backend() {
    let l = tokio::net::TcpListener::bind(("127.0.0.2", 443))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.write_all(b"ok").await;
                let mut sink = [0u8; 64];
                while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
            });
        }
    });
}

/// Keys, the DNS server, the backend and a bound listener with its config (not started yet).
async fn fixture() -> (Keys, tokio::net::TcpListener, osmoda_config::EgressConfig) {
    let keys = Keys::new();
    let dns = dns::serve(zone()).await;
    backend().await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = config(&keys, l.local_addr().unwrap(), CAPS, &["127.0.0.2/32"], dns);
    (keys, l, cfg)
}

async fn tunnel_ok(proxy: std::net::SocketAddr, token: &str) -> TcpStream {
    let mut a = send(proxy, &connect("api.allowed.test:443", Some(token))).await;
    assert_eq!(a.status, 200, "{}", a.text);
    let mut b = [0u8; 2];
    a.stream.read_exact(&mut b).await.unwrap();
    assert_eq!(&b, b"ok");
    a.stream
}

#[test]
fn hostile_clients_do_not_stop_service() {
    in_netns("hostile_clients_do_not_stop_service", || {
        rt().block_on(async {
            let (keys, l, cfg) = fixture().await;
            let p = start(l, None, &cfg, &keys.spool()).await;
            let token = keys.token(CAPS);

            // 100 slowloris clients (within one peer's cap of heads in progress, 128): half a
            // head each, then silence.
            let mut slow = Vec::new();
            for _ in 0..100 {
                let mut s = TcpStream::connect(p.addr).await.unwrap();
                s.write_all(b"CONNECT api.allowed.test:443 HTTP/1.1\r\nX-Slow: ")
                    .await
                    .unwrap();
                slow.push(s);
            }
            // A huge head, garbage, an over-long target, and a head cut off.
            let huge = format!(
                "CONNECT api.allowed.test:443 HTTP/1.1\r\nX-Big: {}\r\n\r\n",
                "a".repeat(20_000)
            );
            let a = send(p.addr, huge.as_bytes()).await;
            assert_eq!(
                (a.status, a.reason.as_str()),
                (431, "head-too-large"),
                "{}",
                a.text
            );
            let a = send(
                p.addr,
                b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
            )
            .await;
            assert_eq!((a.status, a.reason.as_str()), (400, "malformed-request"));
            let long = format!("{}.allowed.test:443", "a".repeat(300));
            let a = send(p.addr, &connect(&long, Some(&token))).await;
            assert_eq!((a.status, a.reason.as_str()), (400, "invalid-target"));
            let mut many = String::from("CONNECT api.allowed.test:443 HTTP/1.1\r\n");
            for i in 0..100 {
                many.push_str(&format!("X-{i}: y\r\n"));
            }
            many.push_str("\r\n");
            let a = send(p.addr, many.as_bytes()).await;
            assert_eq!((a.status, a.reason.as_str()), (431, "head-too-large"));
            {
                let mut s = TcpStream::connect(p.addr).await.unwrap();
                s.write_all(b"CONNECT api.allowed.test:443 HTTP/1.1\r\n")
                    .await
                    .unwrap();
            }
            // Meanwhile an honest client is served at once.
            let _t = tunnel_ok(p.addr, &token).await;
            // The slow clients are answered 408 at the header timeout, not before.
            let mut first = String::new();
            slow[0].read_to_string(&mut first).await.unwrap();
            assert!(first.starts_with("HTTP/1.1 408"), "{first}");
            assert!(first.contains("header-timeout"), "{first}");
            drop(slow);
            let _t2 = tunnel_ok(p.addr, &token).await;
        });
    });
}

#[test]
fn tunnel_cap_and_rate_limit() {
    in_netns("tunnel_cap_and_rate_limit", || {
        rt().block_on(async {
            let (keys, l, mut cfg) = fixture().await;
            cfg.limits.max_tunnels = 3;
            cfg.limits.rate_per_minute = 5;
            let p = start(l, None, &cfg, &keys.spool()).await;
            let token = keys.token(CAPS);
            let held: Vec<_> = futures_join(&p, &token, 3).await;
            let a = send(p.addr, &connect("api.allowed.test:443", Some(&token))).await;
            assert_eq!(
                (a.status, a.reason.as_str()),
                (503, "tunnel-cap"),
                "{}",
                a.text
            );
            drop(held);
            // The cap frees as tunnels close; the token has used 3 of its 5 a minute.
            let mut t = None;
            for _ in 0..1000 {
                let a = send(p.addr, &connect("api.allowed.test:443", Some(&token))).await;
                if a.status == 200 {
                    t = Some(a.stream);
                    break;
                }
                assert_eq!(a.reason, "tunnel-cap");
                tokio::task::yield_now().await;
            }
            drop(t.expect("a tunnel once others closed"));
            let another = keys.token(CAPS);
            let mut reasons = Vec::new();
            for _ in 0..3 {
                let a = send(p.addr, &connect("api.allowed.test:443", Some(&token))).await;
                reasons.push(a.reason.clone());
                drop(a);
            }
            assert!(reasons.contains(&"rate-limited".to_string()), "{reasons:?}");
            // Another token is not limited by the first one's rate.
            let _ok = tunnel_ok(p.addr, &another).await;
        });
    });
}

async fn futures_join(p: &Running, token: &str, n: usize) -> Vec<TcpStream> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(tunnel_ok(p.addr, token).await);
    }
    v
}

#[test]
fn idle_tunnels_close() {
    in_netns("idle_tunnels_close", || {
        rt().block_on(async {
            let (keys, l, mut cfg) = fixture().await;
            cfg.limits.idle_timeout_secs = 1;
            let p = start(l, None, &cfg, &keys.spool()).await;
            let mut t = tunnel_ok(p.addr, &keys.token(CAPS)).await;
            // The proxy closes the idle tunnel: the read ends (EOF) instead of hanging.
            let mut rest = Vec::new();
            let n =
                tokio::time::timeout(std::time::Duration::from_secs(30), t.read_to_end(&mut rest))
                    .await
                    .expect("closed by the idle timeout")
                    .unwrap_or(0);
            assert_eq!(n, 0);
        });
    });
}

/// Reads whatever a flood connection is answered within `wait`: the status of a refusal, or
/// `None` for a connection the proxy still holds open (admitted, waiting for its head).
async fn answered<S: tokio::io::AsyncRead + Unpin>(
    mut s: S,
    wait: std::time::Duration,
) -> Option<String> {
    let mut buf = Vec::new();
    match tokio::time::timeout(wait, s.read_to_end(&mut buf)).await {
        Ok(_) if !buf.is_empty() => Some(String::from_utf8_lossy(&buf).to_string()),
        Ok(_) => Some(String::new()),
        Err(_) => None,
    }
}

/// A CONNECT through the proxy's Unix socket.
async fn unix_tunnel_ok(socket: &std::path::Path, token: &str) -> tokio::net::UnixStream {
    let mut u = tokio::net::UnixStream::connect(socket).await.unwrap();
    u.write_all(&connect("api.allowed.test:443", Some(token)))
        .await
        .unwrap();
    let mut head = [0u8; 12];
    u.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200", "{}", String::from_utf8_lossy(&head));
    u
}

#[test]
fn one_peers_idle_flood_neither_fills_the_tunnel_cap_nor_blocks_others() {
    use osmoda_egress::admission::MAX_PENDING_PER_PEER as CAP;
    use std::process::{Command, Stdio};
    use std::time::Duration;
    const FLOOD: usize = 1000;
    in_netns(
        "one_peers_idle_flood_neither_fills_the_tunnel_cap_nor_blocks_others",
        || {
            // The flood holds ~2,000 sockets here and ~2,000 in the relay (which inherits this).
            let (_, hard) =
                nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
            nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, hard, hard)
                .unwrap();
            rt().block_on(async {
                let (keys, l, mut cfg) = fixture().await;
                // The Unix socket in a directory user nobody can reach, as /run/osmoda is.
                let sockdir = tempfile::tempdir().unwrap();
                std::fs::set_permissions(
                    sockdir.path(),
                    std::os::unix::fs::PermissionsExt::from_mode(0o755),
                )
                .unwrap();
                let sock = sockdir.path().join("egress-proxy.sock");
                let relay_listener = tokio::net::UnixListener::bind(&sock).unwrap();
                std::fs::set_permissions(
                    &sock,
                    std::os::unix::fs::PermissionsExt::from_mode(0o666),
                )
                .unwrap();
                // Far fewer than the flood: a head in progress must not count as a tunnel.
                cfg.limits.max_tunnels = 4;
                cfg.limits.header_timeout_secs = 60;
                let budget = osmoda_egress::events::DENY_EVENTS_PER_SEC;
                let p =
                    start_with_budgets(l, Some(relay_listener), &cfg, &keys.spool(), budget, 50)
                        .await;
                let token = keys.token(CAPS);
                let began = std::time::Instant::now();

                // User nobody, with no token, through the real relay binary: every connection to
                // the relay is one Unix-socket connection to the proxy from uid 65534.
                let mut relay = Command::new(BIN)
                    .args(["relay", "--listen", "127.0.0.1:0", "--to"])
                    .arg(&sock)
                    .stdout(Stdio::piped())
                    .uid(65534)
                    .gid(65534)
                    .spawn()
                    .unwrap();
                let relay_addr: std::net::SocketAddr = {
                    use std::io::BufRead;
                    let mut line = String::new();
                    std::io::BufReader::new(relay.stdout.take().unwrap())
                        .read_line(&mut line)
                        .unwrap();
                    line.trim()
                        .strip_prefix("listening ")
                        .unwrap()
                        .parse()
                        .unwrap()
                };
                let mut unix_flood = Vec::new();
                let mut tcp_flood = Vec::new();
                for _ in 0..FLOOD {
                    unix_flood.push(TcpStream::connect(relay_addr).await.unwrap());
                    // And from another source address straight to the TCP listener.
                    let s = tokio::net::TcpSocket::new_v4().unwrap();
                    s.bind("127.0.0.3:0".parse().unwrap()).unwrap();
                    tcp_flood.push(s.connect(p.addr).await.unwrap());
                }
                // Both floods are in: a token's CONNECT is served at once on both listeners.
                let _t = tunnel_ok(p.addr, &token).await;
                let _u = unix_tunnel_ok(&sock, &token).await;

                // Over its cap, each flooding peer was refused at once; the rest are held open.
                let wait = Duration::from_secs(5);
                for (what, flood) in [("unix", unix_flood), ("tcp", tcp_flood)] {
                    let answers =
                        futures_all(flood.into_iter().map(|s| answered(s, wait)).collect()).await;
                    let held = answers.iter().filter(|a| a.is_none()).count();
                    let capped = answers
                        .iter()
                        .flatten()
                        .filter(|a| a.starts_with("HTTP/1.1 503") && a.contains("peer-cap"))
                        .count();
                    assert_eq!(
                        (held, capped),
                        (CAP, FLOOD - CAP),
                        "{what}: {:?}",
                        answers.iter().flatten().find(|a| !a.contains("peer-cap"))
                    );
                }
                // The held heads still do not block a third tunnel (the cap is 4).
                let _t3 = tunnel_ok(p.addr, &token).await;
                let secs = began.elapsed().as_secs() + 1;
                let _ = relay.kill();
                let _ = relay.wait();
                p.trigger.fire();
                p.task.await.unwrap().unwrap();
                // The refusals stay within the deny budget; the rest are one suppressed count.
                let events = spooled(&keys.spool());
                let denies = events.iter().filter(|(t, _)| t == "egress.deny").count();
                let suppressed: u64 = events
                    .iter()
                    .filter(|(t, _)| t == "egress.deny.suppressed")
                    .map(|(_, p)| p["count"].as_u64().unwrap())
                    .sum();
                assert!(
                    denies as u64 <= u64::from(budget) * secs,
                    "{denies} denies in {secs} s"
                );
                // Every flood connection is one deny: refused over the cap, or (the held ones,
                // dropped by `answered`) closed before a whole head.
                assert_eq!(denies as u64 + suppressed, 2 * FLOOD as u64);
                assert!(events
                    .iter()
                    .any(|(t, p)| t == "egress.deny" && p["reason"] == "peer-cap"));
                assert_eq!(allowed(&events), 3, "{events:#?}");
            });
        },
    );
}

async fn futures_all<F: std::future::Future + Send + 'static>(fs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = fs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// Allows recorded in `events`, itemised or not.
fn allowed(events: &[(String, serde_json::Value)]) -> u64 {
    events
        .iter()
        .filter(|(t, _)| t == "egress.allow" || t == "egress.allow.unitemised")
        .map(|(_, p)| p["count"].as_u64().unwrap())
        .sum()
}

#[test]
fn allows_past_the_budget_are_counted_not_dropped() {
    in_netns("allows_past_the_budget_are_counted_not_dropped", || {
        rt().block_on(async {
            let (keys, l, cfg) = fixture().await;
            // Two itemised allow events a second; 60 tunnels of 60 tokens (distinct keys).
            let p = start_with_budgets(l, None, &cfg, &keys.spool(), 10_000, 2).await;
            let began = std::time::Instant::now();
            let tasks: Vec<_> = (0..60)
                .map(|_| {
                    let token = keys.token(CAPS);
                    let addr = p.addr;
                    tokio::spawn(async move { tunnel_ok(addr, &token).await })
                })
                .collect();
            let mut held = Vec::new();
            for t in tasks {
                held.push(t.await.unwrap());
            }
            let secs = began.elapsed().as_secs() + 1;
            // Every tunnel was recorded before its 200: nothing is left to flush.
            let events = spooled(&keys.spool());
            assert_eq!(allowed(&events), 60, "{events:#?}");
            let itemised = events.iter().filter(|(t, _)| t == "egress.allow").count() as u64;
            assert!(itemised <= 2 * secs, "{itemised} itemised in {secs} s");
            let unitemised: Vec<_> = events
                .iter()
                .filter(|(t, _)| t == "egress.allow.unitemised")
                .collect();
            assert!(!unitemised.is_empty(), "{events:#?}");
            assert!(unitemised[0].1["tokens"]
                .as_array()
                .is_some_and(|t| !t.is_empty()));
            drop(held);
        });
    });
}
