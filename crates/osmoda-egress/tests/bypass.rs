//! The bypass suite: every vector is refused with its reason and recorded in the ledger spool,
//! inside a network namespace with only loopback (a bug can never send a packet off the
//! machine). Names resolve through a DNS fixture on loopback.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;

use common::dns::{self, Rec};
use common::*;

const ALLOWED: &str = "127.0.0.2";

fn zone() -> dns::Zone {
    let ip = |s: &str| Rec::Ip(s.parse().unwrap());
    let mut z: dns::Zone = HashMap::new();
    for (name, recs) in [
        ("api.allowed.test", vec![ip(ALLOWED)]),
        ("lo.allowed.test", vec![ip("127.0.0.1")]),
        ("ten.allowed.test", vec![ip("10.0.0.1")]),
        ("chain.allowed.test", vec![Rec::Cname("c2.allowed.test")]),
        ("c2.allowed.test", vec![Rec::Cname("c3.elsewhere.test")]),
        ("c3.elsewhere.test", vec![ip("192.168.1.5")]),
        (
            "two.allowed.test",
            vec![ip("93.184.216.34"), ip("10.1.2.3")],
        ),
        ("meta.allowed.test", vec![ip("169.254.169.254")]),
        ("cgnat.allowed.test", vec![ip("100.100.100.200")]),
        ("zero.allowed.test", vec![ip("0.0.0.0")]),
        ("v6lo.allowed.test", vec![ip("::1")]),
        ("mapped.allowed.test", vec![ip("::ffff:127.0.0.1")]),
        ("nat64.allowed.test", vec![ip("64:ff9b::a00:1")]),
        ("sixto4.allowed.test", vec![ip("2002:a00:1::1")]),
        (
            "teredo.allowed.test",
            vec![ip("2001:0:4136:e378:8000:63bf:3fff:fdd2")],
        ),
        ("ula.allowed.test", vec![ip("fd00::1")]),
        (
            "mixed.allowed.test",
            vec![ip("93.184.216.34"), ip("fe80::1")],
        ),
        ("api.exact.test", vec![ip(ALLOWED)]),
    ] {
        z.insert(name.to_string(), recs);
    }
    z
}

struct Vector {
    what: &'static str,
    raw: Vec<u8>,
    status: u16,
    reason: &'static str,
}

#[test]
fn bypass_vectors_are_denied_and_logged() {
    in_netns("bypass_vectors_are_denied_and_logged", || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(suite());
    });
}

async fn suite() {
    let keys = Keys::new();
    let dns = dns::serve(zone()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let pport = listener.local_addr().unwrap().port();
    let ports: &[u16] = &[443, pport];
    let caps: &[(&str, &[&str], &[u16])] = &[
        ("web", &["*.allowed.test"], ports),
        ("exact", &["api.exact.test"], &[443]),
    ];
    let cfg = config(
        &keys,
        listener.local_addr().unwrap(),
        caps,
        &["127.0.0.2/32"],
        dns,
    );
    let proxy = start(listener, None, &cfg, &keys.spool()).await;

    let good = keys.token(&[("web", &["*.allowed.test"], ports)]);
    let exact = keys.token(&[("exact", &["api.exact.test"], &[443])]);
    let expired = keys.token_at(
        &[("web", &["*.allowed.test"], &[443])],
        now() - 7200,
        now() - 3600,
    );
    let forged = {
        let other = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        osmoda_egress::token::mint(
            &other,
            &claims(&[("web", &["*.allowed.test"], &[443])], now(), now() + 60),
        )
        .unwrap()
    };
    let tampered = {
        // The good token's signature on claims widened to every name.
        let (_, sig) = good.rsplit_once('.').unwrap();
        use base64::Engine as _;
        let c = claims(&[("web", &["*.test"], &[443])], now(), now() + 60);
        let b = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&c).unwrap());
        format!("osm1.{b}.{sig}")
    };
    let revoked_claims = claims(&[("web", &["*.allowed.test"], &[443])], now(), now() + 3600);
    let revoked = osmoda_egress::token::mint(&keys.sk, &revoked_claims).unwrap();
    std::fs::write(keys.revoked(), format!("{}\n", revoked_claims.id)).unwrap();
    let undeclared = keys.token(&[("gone", &["*.allowed.test"], &[443])]);

    let g = Some(good.as_str());
    let c = |target: &str| connect(target, g);
    let v = |what, raw: Vec<u8>, status, reason| Vector {
        what,
        raw,
        status,
        reason,
    };
    let vectors = vec![
        v(
            "IPv4 loopback literal",
            c("127.0.0.1:443"),
            403,
            "ip-literal",
        ),
        v(
            "decimal integer address",
            c("2130706433:443"),
            400,
            "ip-literal",
        ),
        v("hex short form", c("0x7f.1:443"), 400, "ip-literal"),
        v("hex integer", c("0x7f000001:443"), 400, "ip-literal"),
        v("octal dotted", c("0177.0.0.1:443"), 400, "ip-literal"),
        v("short dotted", c("127.1:443"), 400, "ip-literal"),
        v("IPv6 loopback", c("[::1]:443"), 403, "ip-literal"),
        v(
            "IPv4-mapped dotted",
            c("[::ffff:127.0.0.1]:443"),
            403,
            "ip-literal",
        ),
        v(
            "IPv4-mapped hex",
            c("[::ffff:7f00:1]:443"),
            403,
            "ip-literal",
        ),
        v(
            "cloud metadata",
            c("169.254.169.254:443"),
            403,
            "ip-literal",
        ),
        v(
            "CGNAT metadata",
            c("100.100.100.200:443"),
            403,
            "ip-literal",
        ),
        v(
            "NAT64 literal",
            c("[64:ff9b::a00:1]:443"),
            403,
            "ip-literal",
        ),
        v("6to4 literal", c("[2002:a00:1::1]:443"), 403, "ip-literal"),
        v(
            "Teredo literal",
            c("[2001:0:4136:e378:8000:63bf:3fff:fdd2]:443"),
            403,
            "ip-literal",
        ),
        v("unspecified literal", c("0.0.0.0:443"), 403, "ip-literal"),
        v(
            "name → 127.0.0.1",
            c("lo.allowed.test:443"),
            403,
            "loopback",
        ),
        v("name → 10.0.0.1", c("ten.allowed.test:443"), 403, "private"),
        v(
            "CNAME chain → private",
            c("chain.allowed.test:443"),
            403,
            "private",
        ),
        v(
            "two A records, one private",
            c("two.allowed.test:443"),
            403,
            "private",
        ),
        v(
            "A + AAAA, one link-local",
            c("mixed.allowed.test:443"),
            403,
            "link-local",
        ),
        v(
            "name → metadata",
            c("meta.allowed.test:443"),
            403,
            "link-local",
        ),
        v("name → CGNAT", c("cgnat.allowed.test:443"), 403, "cgnat"),
        v(
            "name → 0.0.0.0",
            c("zero.allowed.test:443"),
            403,
            "unspecified",
        ),
        v("AAAA ::1", c("v6lo.allowed.test:443"), 403, "loopback"),
        v(
            "AAAA IPv4-mapped loopback",
            c("mapped.allowed.test:443"),
            403,
            "loopback",
        ),
        v(
            "AAAA NAT64",
            c("nat64.allowed.test:443"),
            403,
            "ipv4-embedding",
        ),
        v(
            "AAAA 6to4",
            c("sixto4.allowed.test:443"),
            403,
            "ipv4-embedding",
        ),
        v(
            "AAAA Teredo",
            c("teredo.allowed.test:443"),
            403,
            "ipv4-embedding",
        ),
        v(
            "AAAA unique local",
            c("ula.allowed.test:443"),
            403,
            "private",
        ),
        v(
            "trailing dot on a denied name",
            c("lo.allowed.test.:443"),
            403,
            "loopback",
        ),
        v(
            "upper case on a denied name",
            c("LO.ALLOWED.TEST:443"),
            403,
            "loopback",
        ),
        v(
            "upper case of an ungranted name",
            c("API.EVIL.TEST:443"),
            403,
            "domain-not-granted",
        ),
        v(
            "Cyrillic look-alike",
            connect("аpi.exact.test:443", Some(&exact)),
            403,
            "domain-not-granted",
        ),
        v(
            "punycode look-alike",
            connect("xn--pi-7kc.exact.test:443", Some(&exact)),
            403,
            "domain-not-granted",
        ),
        v(
            "apex of a wildcard",
            c("allowed.test:443"),
            403,
            "domain-not-granted",
        ),
        v(
            "suffix without a label boundary",
            c("evilallowed.test:443"),
            403,
            "domain-not-granted",
        ),
        v("localhost", c("localhost:443"), 403, "domain-not-granted"),
        v(
            "double brackets",
            c("[[example.com]]:443"),
            400,
            "invalid-target",
        ),
        v(
            "userinfo",
            c("example.com@127.0.0.1:443"),
            400,
            "invalid-target",
        ),
        v(
            "port 22 without a grant",
            c("api.allowed.test:22"),
            403,
            "port-not-granted",
        ),
        v(
            "port 25 without a grant",
            c("api.allowed.test:25"),
            403,
            "port-not-granted",
        ),
        v(
            "port 8080 without a grant",
            c("api.allowed.test:8080"),
            403,
            "port-not-granted",
        ),
        v(
            "the proxy itself",
            c(&format!("api.allowed.test:{pport}")),
            403,
            "loop",
        ),
        v(
            "expired token",
            connect("api.allowed.test:443", Some(&expired)),
            407,
            "token-expired",
        ),
        v(
            "forged token",
            connect("api.allowed.test:443", Some(&forged)),
            407,
            "token-forged",
        ),
        v(
            "claims swapped under a signature",
            connect("api.allowed.test:443", Some(&tampered)),
            407,
            "token-forged",
        ),
        v(
            "token for another domain",
            connect("api.allowed.test:443", Some(&exact)),
            403,
            "domain-not-granted",
        ),
        v(
            "no token",
            connect("api.allowed.test:443", None),
            407,
            "no-token",
        ),
        v(
            "revoked token",
            connect("api.allowed.test:443", Some(&revoked)),
            407,
            "token-revoked",
        ),
        v(
            "capability no longer declared",
            connect("api.allowed.test:443", Some(&undeclared)),
            403,
            "capability-not-declared",
        ),
        v(
            "plain HTTP request",
            b"GET http://api.allowed.test/ HTTP/1.1\r\nHost: api.allowed.test\r\n\r\n".to_vec(),
            405,
            "not-connect",
        ),
        v(
            "malformed CONNECT",
            b"CONNECT\r\n\r\n".to_vec(),
            400,
            "malformed-request",
        ),
        v(
            "unknown auth scheme",
            b"CONNECT api.allowed.test:443 HTTP/1.1\r\nProxy-Authorization: Digest x\r\n\r\n"
                .to_vec(),
            407,
            "bad-credential",
        ),
        v(
            "name that does not resolve",
            c("nx.allowed.test:443"),
            502,
            "resolve-failed",
        ),
    ];
    assert!(vectors.len() >= 40, "{}", vectors.len());
    for vec in &vectors {
        let a = send(proxy.addr, &vec.raw).await;
        assert_eq!(
            (a.status, a.reason.as_str()),
            (vec.status, vec.reason),
            "{}: {}",
            vec.what,
            a.text
        );
        assert!(
            a.text.contains("osmoda-egress denied"),
            "{}: {}",
            vec.what,
            a.text
        );
    }
    // Every refusal is in the ledger spool, in order, with its reason.
    let events = spooled(&keys.spool());
    let denies: Vec<_> = events.iter().filter(|(t, _)| t == "egress.deny").collect();
    assert_eq!(denies.len(), vectors.len(), "{events:#?}");
    for (vec, (_, p)) in vectors.iter().zip(&denies) {
        assert_eq!(p["reason"], vec.reason, "{}", vec.what);
        assert!(p["peer"].as_str().unwrap().starts_with("127.0.0.1:"));
    }
    let metrics = osmoda_daemon::metrics::global().encode();
    assert!(
        metrics.contains(r#"osmoda_egress_decisions_total{outcome="deny",reason="ip-literal"} 15"#),
        "{metrics}"
    );

    // And the allowed path works: trailing dot and upper case of a granted name, through to
    // a loopback server inside the allow range; the bytes flow both ways.
    let server = tokio::net::TcpListener::bind((ALLOWED, 443)).await.unwrap();
    let echo = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut s, from) = server.accept().await.unwrap();
        let mut b = [0u8; 5];
        s.read_exact(&mut b).await.unwrap();
        s.write_all(&b).await.unwrap();
        from
    });
    let mut a = send(proxy.addr, &c("API.Allowed.Test.:443")).await;
    assert_eq!(a.status, 200, "{}", a.text);
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        a.stream.write_all(b"hello").await.unwrap();
        let mut b = [0u8; 5];
        a.stream.read_exact(&mut b).await.unwrap();
        assert_eq!(&b, b"hello");
    }
    echo.await.unwrap();
    drop(a);
    proxy.trigger.fire();
    proxy.task.await.unwrap().unwrap();
    let events = spooled(&keys.spool());
    let allows: Vec<_> = events.iter().filter(|(t, _)| t == "egress.allow").collect();
    assert_eq!(allows.len(), 1, "{events:#?}");
    assert_eq!(allows[0].1["target"], "API.Allowed.Test.:443");
    assert_eq!(allows[0].1["capability"], "web");
    assert_eq!(allows[0].1["count"], 1);
}
