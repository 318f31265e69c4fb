//! The proxy's two shortcuts for repeated CONNECTs, and what they must not change (inside a
//! network namespace with only loopback, DNS from a fixture on loopback):
//! - allows: the first of a (token, capability, host, port) in a window is spooled before its
//!   `200`, repeats are written by the serve loop at the window's end, while it keeps serving;
//! - verified tokens are kept by their bytes, yet a revocation (or a new key) holds from the
//!   first CONNECT after the file was replaced, as documented.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, Instant};

use common::dns::{self, Rec};
use common::*;
use osmoda_egress::events::Events;

const CAPS: &[(&str, &[&str], &[u16])] = &[("web", &["*.allowed.test"], &[443])];

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// DNS, a backend on 127.0.0.2:443 that accepts and holds, and a listener for the proxy.
async fn fixture() -> (Keys, tokio::net::TcpListener, osmoda_config::EgressConfig) {
    let keys = Keys::new();
    let mut z = dns::Zone::new();
    z.insert(
        "api.allowed.test".into(),
        vec![Rec::Ip("127.0.0.2".parse().unwrap())],
    );
    let dns = dns::serve(z).await;
    let backend = tokio::net::TcpListener::bind(("127.0.0.2", 443))
        .await
        .unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = backend.accept().await {
            held.push(s);
        }
    });
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = config(&keys, l.local_addr().unwrap(), CAPS, &["127.0.0.2/32"], dns);
    (keys, l, cfg)
}

fn allows(keys: &Keys) -> Vec<serde_json::Value> {
    spooled(&keys.spool())
        .into_iter()
        .filter(|(t, _)| t == "egress.allow")
        .map(|(_, p)| p)
        .collect()
}

#[test]
fn repeats_are_written_at_the_windows_end_while_serving() {
    in_netns(
        "repeats_are_written_at_the_windows_end_while_serving",
        || {
            rt().block_on(async {
                let (keys, l, cfg) = fixture().await;
                let spool = keys.spool();
                let reporter =
                    osmoda_client::Reporter::open(spool.join("no-agentd.sock"), &spool, "egress")
                        .unwrap();
                let events =
                    Events::new(Some(reporter)).with_allow_window(Duration::from_secs(1), 100);
                let p = start_with_events(l, None, &cfg, events).await;
                let token = keys.token(CAPS);
                let mut held = Vec::new();
                for _ in 0..5 {
                    let a = send(p.addr, &connect("api.allowed.test:443", Some(&token))).await;
                    assert_eq!(a.status, 200, "{}", a.text);
                    held.push(a.stream);
                }
                // The first is in the spool as soon as it was answered; the repeats are not yet
                // (unless the window already ended: then they are complete).
                let a = allows(&keys);
                assert_eq!(a[0]["first"], true, "{a:#?}");
                assert_eq!(a[0]["count"], 1);
                // The window ends while the proxy serves: one event with the four repeats.
                let until = Instant::now() + Duration::from_secs(10);
                let total = loop {
                    let a = allows(&keys);
                    let total: u64 = a.iter().map(|p| p["count"].as_u64().unwrap()).sum();
                    if total == 5 || Instant::now() > until {
                        break (a, total);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                };
                assert_eq!(total.1, 5, "{:#?}", total.0);
                assert!(total.0.iter().any(|p| p["first"] == false));
                // And it still serves: the next one is the first of a new window.
                let a = send(p.addr, &connect("api.allowed.test:443", Some(&token))).await;
                assert_eq!(a.status, 200, "{}", a.text);
                assert_eq!(allows(&keys).last().unwrap()["first"], true);
                p.trigger.fire();
                p.task.await.unwrap().unwrap();
                drop(held);
            });
        },
    );
}

#[test]
fn a_kept_token_is_refused_once_revoked_or_the_key_changes() {
    in_netns(
        "a_kept_token_is_refused_once_revoked_or_the_key_changes",
        || {
            rt().block_on(async {
                let (keys, l, cfg) = fixture().await;
                let p = start(l, None, &cfg, &keys.spool()).await;
                let token = keys.token(CAPS);
                let id = osmoda_egress::token::verify(&keys.sk.verifying_key(), &token, now())
                    .unwrap()
                    .id;
                let ask = || async {
                    let a = send(p.addr, &connect("api.allowed.test:443", Some(&token))).await;
                    (a.status, a.reason, a.text)
                };
                let ok =
                    |(status, _, text): (u16, String, String)| assert_eq!(status, 200, "{text}");
                let refused = |(status, reason, text): (u16, String, String), want: &str| {
                    assert_eq!((status, reason.as_str()), (407, want), "{text}")
                };
                // Verified once, then kept.
                for _ in 0..3 {
                    ok(ask().await);
                }
                // Revoked the way agentd does it (a new file renamed into place): refused at the
                // very next CONNECT.
                let tmp = keys.dir.path().join("revoked.tmp");
                std::fs::write(&tmp, format!("{id}\n")).unwrap();
                std::fs::rename(&tmp, keys.revoked()).unwrap();
                refused(ask().await, "token-revoked");
                // Also when the list is rewritten in place (no rename): emptied, then the id again.
                std::fs::write(keys.revoked(), "").unwrap();
                ok(ask().await);
                std::fs::write(keys.revoked(), format!("{id}\n")).unwrap();
                refused(ask().await, "token-revoked");
                // A new key: the kept verification does not outlive it.
                std::fs::write(keys.revoked(), "").unwrap();
                let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
                std::fs::write(
                    &tmp,
                    osmoda_egress::token::encode_public_key(&other.verifying_key()),
                )
                .unwrap();
                std::fs::rename(&tmp, keys.public()).unwrap();
                refused(ask().await, "token-forged");
                p.trigger.fire();
                p.task.await.unwrap().unwrap();
                let denies: Vec<_> = spooled(&keys.spool())
                    .into_iter()
                    .filter(|(t, _)| t == "egress.deny")
                    .map(|(_, p)| p["reason"].as_str().unwrap().to_string())
                    .collect();
                assert_eq!(denies, ["token-revoked", "token-revoked", "token-forged"]);
            });
        },
    );
}
