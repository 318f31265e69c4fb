//! The real `osmoda-egress` binary end to end, inside a network namespace with only loopback:
//! `curl` reaches a TLS server on loopback through the proxy with a token (the allow range is
//! in this test's config only) and nothing else; the status socket serves `/metrics`;
//! `check-config` judges files.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Command;

use common::dns;
use common::procs::{cert, daemon, tls_server, Kill};
use common::*;

fn curl(args: &[&str]) -> (bool, String, String) {
    let o = Command::new("curl")
        .args(["-sS", "--max-time", "20"])
        .args(args)
        .output()
        .unwrap();
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

/// egress.json for a proxy on 127.0.0.1:19999 with `caps` and 127.0.0.2 in the allow range,
/// written to the keys' dir.
fn write_config(
    keys: &Keys,
    caps: &[(&str, &[&str], &[u16])],
    dns: std::net::SocketAddr,
) -> (osmoda_config::EgressConfig, std::path::PathBuf) {
    let listen = "127.0.0.1:19999".parse().unwrap();
    let cfg = config(keys, listen, caps, &["127.0.0.2/32"], dns);
    let path = keys.dir.path().join("egress.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    (cfg, path)
}

#[test]
fn curl_through_the_real_daemon() {
    in_netns("curl_through_the_real_daemon", || {
        let rt = runtime();
        let keys = Keys::new();
        let dir = keys.dir.path().to_path_buf();
        let z = zone_of(&[
            ("api.allowed.test", "127.0.0.2"),
            ("other.allowed.test", "127.0.0.3"),
        ]);
        let dns = rt.block_on(dns::serve(z));
        cert(&dir, "api.allowed.test");
        let _tls = Kill(tls_server(&dir, "127.0.0.2:8443"));
        let _tls3 = Kill(tls_server(&dir, "127.0.0.3:8443"));
        let caps: &[(&str, &[&str], &[u16])] = &[("web", &["*.allowed.test"], &[443, 8443])];
        let (cfg, cfg_path) = write_config(&keys, caps, dns);

        let ok = Command::new(BIN)
            .arg("check-config")
            .arg(&cfg_path)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        let mut bad = cfg.clone();
        bad.allow_ranges = vec!["127.0.0.2".into()];
        std::fs::write(dir.join("bad.json"), serde_json::to_vec(&bad).unwrap()).unwrap();
        let no = Command::new(BIN)
            .arg("check-config")
            .arg(dir.join("bad.json"))
            .output()
            .unwrap();
        assert!(!no.status.success());
        assert!(String::from_utf8_lossy(&no.stderr).contains("allow_ranges[0]"));

        let mut d = daemon(BIN, &dir, &cfg_path);
        let token = keys.token(&[("web", &["api.allowed.test"], &[8443])]);
        let cacert = dir.join("cert.pem").display().to_string();
        let proxy = "http://127.0.0.1:19999";
        let user = format!("osmoda:{token}");
        // Allowed: the granted name, resolved by the proxy (curl never resolves it).
        let (ok, out, err) = curl(&[
            "--proxy",
            proxy,
            "--proxy-user",
            &user,
            "--cacert",
            &cacert,
            "https://api.allowed.test:8443/",
        ]);
        assert!(ok, "{err}");
        assert!(out.contains("s_server"), "{out}");
        // The same through the proxy URL's userinfo, as HTTPS_PROXY would carry it.
        let (ok, _, err) = curl(&[
            "--proxy",
            &format!("http://osmoda:{token}@127.0.0.1:19999"),
            "--cacert",
            &cacert,
            "https://API.allowed.test.:8443/",
        ]);
        assert!(ok, "{err}");
        // Everything else fails: another name (outside the token), a name outside the allow
        // range, the literal address, no token.
        for (url, why) in [
            ("https://other.allowed.test:8443/", "403"),
            ("https://127.0.0.3:8443/", "403"),
            ("https://api.allowed.test:443/", "403"),
        ] {
            let (ok, _, err) = curl(&[
                "--proxy",
                proxy,
                "--proxy-user",
                &user,
                "--cacert",
                &cacert,
                url,
            ]);
            assert!(!ok && err.contains(why), "{url}: {err}");
        }
        let (ok, _, err) = curl(&[
            "--proxy",
            proxy,
            "--cacert",
            &cacert,
            "https://api.allowed.test:8443/",
        ]);
        assert!(!ok && err.contains("407"), "{err}");
        // A token for a name outside the allow range resolves to 127.0.0.3: loopback, refused.
        let wide = keys.token(&[("web", &["*.allowed.test"], &[8443])]);
        let (ok, _, err) = curl(&[
            "--proxy",
            proxy,
            "--proxy-user",
            &format!("osmoda:{wide}"),
            "--cacert",
            &cacert,
            "https://other.allowed.test:8443/",
        ]);
        assert!(!ok && err.contains("403"), "{err}");

        // The same proxy on its Unix socket (what the Ring 1 relay forwards to).
        let mut u = UnixStream::connect(dir.join("egress-proxy.sock")).unwrap();
        write!(
            u,
            "CONNECT api.allowed.test:8443 HTTP/1.1\r\nProxy-Authorization: Bearer {token}\r\n\r\n"
        )
        .unwrap();
        let mut head = [0u8; 12];
        u.read_exact(&mut head).unwrap();
        assert_eq!(&head, b"HTTP/1.1 200");
        drop(u);

        // /metrics on the status socket counts the decisions.
        let mut s = UnixStream::connect(dir.join("egress.sock")).unwrap();
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut m = String::new();
        s.read_to_string(&mut m).unwrap();
        assert!(
            m.contains(
                r#"osmoda_egress_decisions_total{outcome="deny",reason="domain-not-granted"} 1"#
            ),
            "{m}"
        );
        assert!(
            m.contains(r#"osmoda_egress_decisions_total{outcome="deny",reason="ip-literal"} 1"#),
            "{m}"
        );
        assert!(
            m.contains(r#"osmoda_egress_decisions_total{outcome="deny",reason="no-token"} 1"#),
            "{m}"
        );
        assert!(
            m.contains(r#"osmoda_egress_decisions_total{outcome="allow""#),
            "{m}"
        );

        // SIGTERM: clean exit; the aggregated allows are in the spool.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(d.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        assert!(d.0.wait().unwrap().success());
        let events = spooled(&dir.join("state/spool"));
        assert!(
            events
                .iter()
                .any(|(t, p)| t == "egress.allow" && p["count"] == 1),
            "{events:#?}"
        );
        assert_eq!(
            events.iter().filter(|(t, _)| t == "egress.deny").count(),
            5,
            "{events:#?}"
        );
    });
}

/// Opens one tunnel to `target` through the daemon on 127.0.0.1:19999 and accepts it on
/// `backend`.
fn hold(
    target: &str,
    token: &str,
    backend: &std::net::TcpListener,
) -> (std::net::TcpStream, std::net::TcpStream) {
    let mut s = std::net::TcpStream::connect("127.0.0.1:19999").unwrap();
    s.write_all(&connect(target, Some(token))).unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    (s, backend.accept().unwrap().0)
}

fn kill(d: &mut Kill, signal: nix::sys::signal::Signal) -> std::process::ExitStatus {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(d.0.id() as i32), signal).unwrap();
    d.0.wait().unwrap()
}

/// The allow rule's two halves with the real binary: the first allow of each (token,
/// capability, host, port) in a window is durable before its `200`, so `kill -9` loses no
/// target a token reached (only repeat counts); the repeats are written at the window's end,
/// here SIGTERM's flush, so a clean stop loses no count.
#[test]
fn the_first_allow_of_each_target_survives_kill_9() {
    in_netns("the_first_allow_of_each_target_survives_kill_9", || {
        let rt = runtime();
        let keys = Keys::new();
        let dir = keys.dir.path().to_path_buf();
        let dns = rt.block_on(dns::serve(zone_of(&[
            ("api.allowed.test", "127.0.0.2"),
            ("www.allowed.test", "127.0.0.2"),
        ])));
        let backend = std::net::TcpListener::bind("127.0.0.2:443").unwrap();
        let caps: &[(&str, &[&str], &[u16])] = &[("web", &["*.allowed.test"], &[443])];
        let (_, cfg_path) = write_config(&keys, caps, dns);
        let spool = dir.join("state/spool");
        let tokens = [keys.token(caps), keys.token(caps)];
        let ids: Vec<String> = tokens
            .iter()
            .map(|t| {
                osmoda_egress::token::verify(&keys.sk.verifying_key(), t, now())
                    .unwrap()
                    .id
            })
            .collect();
        // (token, target): 7 tunnels, 3 distinct keys (one spelled two ways), held open while
        // the proxy is killed.
        let plan = [
            (0, "api.allowed.test:443"),
            (1, "api.allowed.test:443"),
            (0, "API.allowed.test.:443"),
            (0, "www.allowed.test:443"),
            (1, "api.allowed.test:443"),
            (0, "api.allowed.test:443"),
            (1, "api.allowed.test:443"),
        ];
        let mut d = daemon(BIN, &dir, &cfg_path);
        let held: Vec<_> = plan
            .iter()
            .map(|(t, target)| hold(target, &tokens[*t], &backend))
            .collect();
        kill(&mut d, nix::sys::signal::Signal::SIGKILL);
        let events = spooled(&spool);
        let allows: Vec<_> = events
            .iter()
            .filter(|(t, _)| t.starts_with("egress.allow"))
            .map(|(_, p)| p)
            .collect();
        // Each target each token reached is there, first and durable; only repeats were lost.
        let mut reached: Vec<(String, String)> = allows
            .iter()
            .map(|p| {
                assert_eq!(
                    (&p["first"], &p["count"]),
                    (&serde_json::json!(true), &serde_json::json!(1)),
                    "{p}"
                );
                (
                    p["token_id"].as_str().unwrap().to_string(),
                    p["host"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        reached.sort();
        let mut want = vec![
            (ids[0].clone(), "api.allowed.test".to_string()),
            (ids[0].clone(), "www.allowed.test".to_string()),
            (ids[1].clone(), "api.allowed.test".to_string()),
        ];
        want.sort();
        assert_eq!(reached, want, "{events:#?}");
        drop(held);

        // Again, stopped cleanly: SIGTERM ends the window and every count is written.
        std::fs::remove_file(dir.join("notify.sock")).unwrap();
        let mut d = daemon(BIN, &dir, &cfg_path);
        let held: Vec<_> = plan
            .iter()
            .map(|(t, target)| hold(target, &tokens[*t], &backend))
            .collect();
        assert!(kill(&mut d, nix::sys::signal::Signal::SIGTERM).success());
        // Counted over both runs: 3 firsts survived the kill, the clean run wrote 7.
        let events = spooled(&spool);
        let count = |id: &str| -> u64 {
            events
                .iter()
                .filter(|(k, p)| k == "egress.allow" && p["token_id"] == id)
                .map(|(_, p)| p["count"].as_u64().unwrap())
                .sum()
        };
        assert_eq!(
            (count(&ids[0]), count(&ids[1])),
            (2 + 4, 1 + 3),
            "{events:#?}"
        );
        let repeats: Vec<_> = events
            .iter()
            .filter(|(k, p)| k == "egress.allow" && p["first"] == false)
            .map(|(_, p)| {
                (
                    p["token_id"].as_str().unwrap(),
                    p["count"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(repeats.len(), 2, "{events:#?}");
        assert!(repeats.contains(&(ids[0].as_str(), 2)) && repeats.contains(&(ids[1].as_str(), 2)));
        drop(held);
    });
}
