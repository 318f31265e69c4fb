//! Bad input on the proxy (malformed heads, huge headers, slowloris, a flood of refusals)
//! never stops it serving others; limits (tunnel cap, per-token rate, idle timeout) hold.
//! Inside a network namespace with only loopback.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::dns::{self, Rec};
use common::*;
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
            let keys = Keys::new();
            let dns = dns::serve(zone()).await;
            backend().await;
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let cfg = config(&keys, l.local_addr().unwrap(), CAPS, &["127.0.0.2/32"], dns);
            let p = start(l, None, &cfg, &keys.spool()).await;
            let token = keys.token(CAPS);

            // 200 slowloris clients: half a head each, then silence.
            let mut slow = Vec::new();
            for _ in 0..200 {
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
            let keys = Keys::new();
            let dns = dns::serve(zone()).await;
            backend().await;
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut cfg = config(&keys, l.local_addr().unwrap(), CAPS, &["127.0.0.2/32"], dns);
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
            let keys = Keys::new();
            let dns = dns::serve(zone()).await;
            backend().await;
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let mut cfg = config(&keys, l.local_addr().unwrap(), CAPS, &["127.0.0.2/32"], dns);
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
