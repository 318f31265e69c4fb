//! Each check against the real thing: loopback sockets, real commands, statvfs, /proc.

use super::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn probe(kind: ProbeKind) -> Probe {
    Probe {
        kind,
        timeout: Duration::from_secs(5),
        retries: 0,
    }
}

async fn run(kind: ProbeKind) -> CheckOutcome {
    probe(kind).run(&CheckEnv::default()).await
}

/// Serves one fixed HTTP response to every connection on `listener`.
fn serve_fixed<L>(listener: L, response: &'static str)
where
    L: Accept + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            let Some(mut s) = listener.accept_one().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = s.write_all(response.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
}

trait Accept {
    type S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static;
    fn accept_one(&self) -> impl std::future::Future<Output = Option<Self::S>> + Send;
}
impl Accept for tokio::net::TcpListener {
    type S = tokio::net::TcpStream;
    async fn accept_one(&self) -> Option<Self::S> {
        self.accept().await.ok().map(|(s, _)| s)
    }
}
impl Accept for tokio::net::UnixListener {
    type S = tokio::net::UnixStream;
    async fn accept_one(&self) -> Option<Self::S> {
        self.accept().await.ok().map(|(s, _)| s)
    }
}

const OK_HELLO: &str =
    "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nConnection: close\r\n\r\nhello world";
const NOT_FOUND: &str = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn tcp_connects_to_a_listener_and_fails_on_a_closed_port() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let ok = run(ProbeKind::Tcp {
        host: "127.0.0.1".into(),
        port,
    })
    .await;
    assert!(ok.ok, "{ok:?}");
    drop(l);
    // A closed port that no parallel test can take over: bound, never listening.
    let closed = tokio::net::TcpSocket::new_v4().unwrap();
    closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let bad = run(ProbeKind::Tcp {
        host: "127.0.0.1".into(),
        port: closed.local_addr().unwrap().port(),
    })
    .await;
    assert!(!bad.ok);
    assert!(bad.detail.contains("cannot connect"), "{}", bad.detail);
}

#[tokio::test]
async fn http_checks_status_and_body() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    serve_fixed(l, OK_HELLO);
    let url = format!("http://127.0.0.1:{port}/health");
    let http = |expect_status, body_contains: Option<&str>| ProbeKind::Http {
        url: url.clone(),
        expect_status,
        body_contains: body_contains.map(String::from),
    };
    assert!(run(http(None, None)).await.ok);
    assert!(run(http(Some(200), Some("world"))).await.ok);
    let wrong_body = run(http(Some(200), Some("nope"))).await;
    assert!(
        !wrong_body.ok && wrong_body.detail.contains("does not contain"),
        "{wrong_body:?}"
    );
    let wrong_status = run(http(Some(204), None)).await;
    assert!(
        !wrong_status.ok && wrong_status.detail.contains("expected 204"),
        "{wrong_status:?}"
    );

    let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port2 = l2.local_addr().unwrap().port();
    serve_fixed(l2, NOT_FOUND);
    let nf = run(ProbeKind::Http {
        url: format!("http://127.0.0.1:{port2}/"),
        expect_status: None,
        body_contains: None,
    })
    .await;
    assert!(!nf.ok && nf.detail.contains("404"), "{nf:?}");
}

#[test]
fn http_url_parsing() {
    assert_eq!(
        parse("http://localhost"),
        Ok(("localhost".into(), 80, "/".into()))
    );
    assert_eq!(
        parse("http://127.0.0.1:8080/a?b=c"),
        Ok(("127.0.0.1".into(), 8080, "/a?b=c".into()))
    );
    assert_eq!(
        parse("http://[::1]:81/x"),
        Ok(("::1".into(), 81, "/x".into()))
    );
    assert!(parse("https://x/").unwrap_err().contains("only http://"));
    assert!(parse("http://h:notaport/")
        .unwrap_err()
        .contains("invalid port"));
    assert!(parse("http:///x").unwrap_err().contains("invalid URL"));
    fn parse(u: &str) -> Result<(String, u16, String), String> {
        super::http::parse_http_url(u)
    }
}

#[tokio::test]
async fn command_exit_status_and_timeout() {
    let cmd = |v: &[&str]| ProbeKind::Command {
        command: v.iter().map(|s| s.to_string()).collect(),
    };
    assert!(run(cmd(&["true"])).await.ok);
    let f = run(cmd(&["sh", "-c", "echo broken >&2; exit 3"])).await;
    assert!(!f.ok && f.detail.contains("broken"), "{f:?}");
    let missing = run(cmd(&["/nonexistent/program"])).await;
    assert!(
        !missing.ok && missing.detail.contains("cannot run"),
        "{missing:?}"
    );
    let empty = run(cmd(&[])).await;
    assert!(!empty.ok && empty.detail.contains("empty command"));
    let slow = Probe {
        kind: cmd(&["sleep", "5"]),
        timeout: Duration::from_millis(100),
        retries: 0,
    };
    let t = slow.run(&CheckEnv::default()).await;
    assert!(!t.ok && t.detail.contains("timed out"), "{t:?}");
}

#[tokio::test]
async fn retries_until_success() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("m");
    // Fails on the first attempt (creating the marker), passes on the second.
    let script = format!(
        "if [ -e {0} ]; then exit 0; else touch {0}; exit 1; fi",
        marker.display()
    );
    let p = Probe {
        kind: ProbeKind::Command {
            command: vec!["sh".into(), "-c".into(), script],
        },
        timeout: Duration::from_secs(5),
        retries: 2,
    };
    let out = p.run(&CheckEnv::default()).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.attempts, 2);
    let never = Probe {
        kind: ProbeKind::Command {
            command: vec!["false".into()],
        },
        ..p
    };
    let out = never.run(&CheckEnv::default()).await;
    assert!(!out.ok);
    assert_eq!(out.attempts, 3);
}

#[tokio::test]
async fn disk_free_space_from_statvfs() {
    let free = system::free_percent(std::path::Path::new("/")).unwrap();
    assert!((0.0..=100.0).contains(&free));
    let ok = run(ProbeKind::Disk {
        path: "/".into(),
        min_free_percent: 0.0,
    })
    .await;
    assert!(ok.ok, "{ok:?}");
    let bad = run(ProbeKind::Disk {
        path: "/".into(),
        min_free_percent: 100.5,
    })
    .await;
    assert!(!bad.ok && bad.detail.contains("below"), "{bad:?}");
    let missing = run(ProbeKind::Disk {
        path: "/nonexistent/x".into(),
        min_free_percent: 1.0,
    })
    .await;
    assert!(
        !missing.ok && missing.detail.contains("cannot statvfs"),
        "{missing:?}"
    );
}

#[tokio::test]
async fn process_found_in_proc() {
    let me = std::fs::read_to_string("/proc/self/comm")
        .unwrap()
        .trim()
        .to_string();
    let ok = run(ProbeKind::Process { name: me }).await;
    assert!(ok.ok, "{ok:?}");
    let bad = run(ProbeKind::Process {
        name: "no-such-process-osmoda".into(),
    })
    .await;
    assert!(
        !bad.ok && bad.detail.contains("no process named"),
        "{bad:?}"
    );
}

#[tokio::test]
async fn systemd_check_says_when_systemd_is_missing() {
    let out = run(ProbeKind::Systemd {
        unit: "osmoda-test-nonexistent.service".into(),
    })
    .await;
    assert!(!out.ok);
    if !std::path::Path::new("/run/systemd/system").is_dir() {
        assert!(out.detail.contains("systemd not available"), "{out:?}");
    } else {
        assert!(
            out.detail.contains("osmoda-test-nonexistent.service is"),
            "{out:?}"
        );
    }
}

#[tokio::test]
async fn agentd_health_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agentd.sock");
    let env = CheckEnv {
        agentd_socket: Some(sock.clone()),
        retry_delay: Duration::ZERO,
    };
    let down = probe(ProbeKind::Agentd).run(&env).await;
    assert!(
        !down.ok && down.detail.contains("cannot connect to agentd"),
        "{down:?}"
    );
    serve_fixed(tokio::net::UnixListener::bind(&sock).unwrap(), OK_HELLO);
    let up = probe(ProbeKind::Agentd).run(&env).await;
    assert!(up.ok, "{up:?}");
    let none = run(ProbeKind::Agentd).await;
    assert!(!none.ok && none.detail.contains("--agentd-socket"));
}
