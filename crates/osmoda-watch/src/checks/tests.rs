//! Each check against the real thing: loopback sockets, real commands, statvfs, /proc.

use super::*;
use std::time::Duration;

use osmoda_sandbox::Boundary;
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
        follow_redirects: false,
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
        follow_redirects: false,
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

/// Command checks run behind the boundary (bwrap), which needs root: we run as root here and
/// in CI; elsewhere these say `skipped: needs root`.
fn root() -> bool {
    let r = nix::unistd::geteuid().is_root();
    if !r {
        eprintln!("skipped: needs root");
    }
    r
}

fn cmd(v: &[&str]) -> ProbeKind {
    ProbeKind::Command {
        command: v.iter().map(|s| s.to_string()).collect(),
        user: "nobody".into(),
    }
}

#[tokio::test]
async fn command_exit_status_and_timeout() {
    if !root() {
        return;
    }
    assert!(run(cmd(&["true"])).await.ok);
    let f = run(cmd(&["sh", "-c", "echo broken >&2; exit 3"])).await;
    assert!(!f.ok && f.detail.contains("broken"), "{f:?}");
    assert!(f.detail.contains("exit code 3"), "{f:?}");
    let missing = run(cmd(&["/nonexistent/program"])).await;
    assert!(
        !missing.ok && missing.detail.contains("No such file"),
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
async fn a_background_child_holding_stdout_does_not_make_a_healthy_command_fail() {
    if !root() {
        return;
    }
    let p = Probe {
        kind: cmd(&["sh", "-c", "sleep 30 & exit 0"]),
        timeout: Duration::from_secs(20),
        retries: 0,
    };
    let start = std::time::Instant::now();
    let out = p.run(&CheckEnv::default()).await;
    assert!(out.ok, "{out:?}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
    let p = Probe {
        kind: cmd(&["sh", "-c", "sleep 30 & exit 4"]),
        ..p
    };
    let out = p.run(&CheckEnv::default()).await;
    assert!(!out.ok && out.detail.contains("exit code 4"), "{out:?}");
}

#[tokio::test]
async fn commands_run_as_nobody_unless_they_ask_for_root() {
    if !root() {
        return;
    }
    assert!(
        run(cmd(&["sh", "-c", "test \"$(id -u)\" = 65534"]))
            .await
            .ok
    );
    let as_root = ProbeKind::Command {
        command: vec!["sh".into(), "-c".into(), "test \"$(id -u)\" = 0".into()],
        user: "root".into(),
    };
    assert!(run(as_root).await.ok);
    let unknown = run(ProbeKind::Command {
        command: vec!["true".into()],
        user: "no-such-user-osmoda".into(),
    })
    .await;
    assert!(
        !unknown.ok && unknown.detail.contains("unknown user"),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn command_checks_cannot_see_masked_paths() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let secret = dir.path().join("admin");
    std::fs::create_dir(&secret).unwrap();
    std::fs::write(secret.join("approval.sock"), "").unwrap();
    let env = CheckEnv {
        boundary: SharedBoundary::new(Boundary::new([secret.clone()])),
        ..CheckEnv::default()
    };
    let probe = |p: &std::path::Path| Probe {
        kind: ProbeKind::Command {
            command: vec!["test".into(), "-e".into(), p.display().to_string()],
            user: "root".into(),
        },
        timeout: Duration::from_secs(10),
        retries: 0,
    };
    assert!(
        probe(dir.path()).run(&env).await.ok,
        "control: the parent is visible"
    );
    let hidden = probe(&secret.join("approval.sock")).run(&env).await;
    assert!(!hidden.ok, "{hidden:?}");
}

/// Answers the n-th connection with `responses[n]` (the last one repeats); `{host}` in a body
/// becomes the request's Host header.
fn serve_sequence(listener: tokio::net::TcpListener, responses: Vec<(String, String)>) {
    tokio::spawn(async move {
        let mut n = 0;
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let resp = responses[n.min(responses.len() - 1)].clone();
            n += 1;
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(k) => got.extend_from_slice(&buf[..k]),
                }
            }
            let head = String::from_utf8_lossy(&got).to_string();
            let host = head
                .lines()
                .find_map(|l| {
                    l.strip_prefix("host: ")
                        .or_else(|| l.strip_prefix("Host: "))
                })
                .unwrap_or("")
                .trim()
                .to_string();
            let (head, body) = (resp.0, resp.1.replace("{host}", &host));
            let out = format!(
                "{head}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(out.as_bytes()).await;
            let _ = s.shutdown().await;
        }
    });
}

fn response(status: &str, headers: &str, body: &str) -> (String, String) {
    (format!("HTTP/1.1 {status}\r\n{headers}"), body.to_string())
}

#[tokio::test]
async fn retries_until_success() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    serve_sequence(
        l,
        vec![response("500 Oops", "", ""), response("200 OK", "", "")],
    );
    let http = ProbeKind::Http {
        url: format!("http://127.0.0.1:{port}/"),
        expect_status: None,
        body_contains: None,
        follow_redirects: false,
    };
    let p = Probe {
        kind: http,
        timeout: Duration::from_secs(5),
        retries: 2,
    };
    let out = p.run(&CheckEnv::default()).await;
    assert!(out.ok, "{out:?}");
    assert_eq!(out.attempts, 2);
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    serve_sequence(l, vec![response("503 Down", "", "")]);
    let never = Probe {
        kind: ProbeKind::Http {
            url: format!("http://127.0.0.1:{port}/"),
            expect_status: None,
            body_contains: None,
            follow_redirects: false,
        },
        ..p
    };
    let out = never.run(&CheckEnv::default()).await;
    assert!(!out.ok);
    assert_eq!(out.attempts, 3);
}

#[tokio::test]
async fn http_sends_the_port_in_host_and_does_not_follow_redirects_unless_asked() {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    serve_sequence(
        l,
        vec![
            response("302 Found", "Location: /login\r\n", ""),
            response("200 OK", "", "login page host={host}"),
        ],
    );
    let http = |follow_redirects| ProbeKind::Http {
        url: format!("http://127.0.0.1:{port}/app"),
        expect_status: None,
        body_contains: None,
        follow_redirects,
    };
    let redirect = run(http(false)).await;
    assert!(!redirect.ok, "a redirect is not healthy: {redirect:?}");
    assert!(
        redirect.detail.contains("302") && redirect.detail.contains("followRedirects"),
        "{redirect:?}"
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    serve_sequence(
        l,
        vec![
            response("302 Found", "Location: /login\r\n", ""),
            response("200 OK", "", "login page host={host}"),
        ],
    );
    let followed = run(ProbeKind::Http {
        url: format!("http://127.0.0.1:{port}/app"),
        expect_status: None,
        body_contains: Some(format!("host=127.0.0.1:{port}")),
        follow_redirects: true,
    })
    .await;
    assert!(followed.ok, "{followed:?}");
    assert!(followed.detail.contains("redirected to"), "{followed:?}");
    assert_eq!(http::host_header("127.0.0.1", 80), "127.0.0.1");
    assert_eq!(http::host_header("::1", 8080), "[::1]:8080");
    // A redirect loop ends.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    serve_sequence(l, vec![response("301 Moved", "Location: /again\r\n", "")]);
    let looped = run(ProbeKind::Http {
        url: format!("http://127.0.0.1:{port}/"),
        expect_status: None,
        body_contains: None,
        follow_redirects: true,
    })
    .await;
    assert!(
        !looped.ok && looped.detail.contains("more than 5 redirects"),
        "{looped:?}"
    );
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

/// `systemctl is-active` answering `states` in turn (the last repeats).
fn systemctl(states: &[&str]) -> CheckEnv {
    let r = crate::runner::RecordingRunner::default();
    for st in states
        .iter()
        .chain(std::iter::repeat_n(states.last().unwrap_or(&""), 100))
    {
        r.answer(
            "systemctl is-active -- web.service",
            crate::runner::CmdOutput {
                code: Some(if *st == "active" { 0 } else { 3 }),
                stdout: format!("{st}\n"),
                stderr: String::new(),
            },
        );
    }
    CheckEnv {
        systemctl: Some(Arc::new(r)),
        ..CheckEnv::default()
    }
}

#[tokio::test]
async fn systemd_states_are_judged_like_systemctl_is_active() {
    let unit = || Probe {
        kind: ProbeKind::Systemd {
            unit: "web.service".into(),
        },
        timeout: Duration::from_secs(5),
        retries: 0,
    };
    for (states, ok) in [
        (&["active"][..], true),
        (&["reloading"][..], true),
        (&["activating", "activating", "active"][..], true),
        (&["activating", "failed"][..], false),
        (&["failed"][..], false),
        (&["inactive"][..], false),
        (&["deactivating"][..], false),
    ] {
        let out = unit().run(&systemctl(states)).await;
        assert_eq!(out.ok, ok, "{states:?}: {out:?}");
        assert!(out.detail.contains("web.service is"), "{out:?}");
    }
    let stuck = Probe {
        timeout: Duration::from_millis(600),
        ..unit()
    }
    .run(&systemctl(&["activating"]))
    .await;
    assert!(!stuck.ok && stuck.detail.contains("timed out"), "{stuck:?}");
}

#[tokio::test]
async fn agentd_health_over_a_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("agentd.sock");
    let env = CheckEnv {
        agentd_socket: Some(sock.clone()),
        retry_delay: Duration::ZERO,
        ..CheckEnv::default()
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
