//! `osmoda-voice gateway-proxy`, the real binary, between osmoda-voice's gateway client and a
//! stand-in gateway on loopback TCP: a port held by the gateway's user gets the request (token
//! and words); a port held by anyone else (a local user that bound it while the gateway was
//! down) gets not one byte, and the voice daemon is told who holds it (a 502). The proxy runs
//! both on a socket of its own (`--listen`) and from systemd's socket activation
//! (`systemd-socket-activate`, as the `.socket` unit starts it).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use osmoda_voice::gateway::{Gateway, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the stand-in gateway received, one entry per connection.
type Seen = Arc<Mutex<Vec<Vec<u8>>>>;

/// A stand-in gateway on 127.0.0.1 (this process's uid holds it): answers each request with an
/// OpenAI-style reply.
async fn stand_in() -> (u16, Seen) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let s = Arc::clone(&s);
            tokio::spawn(async move {
                let i = {
                    let mut v = s.lock().unwrap();
                    v.push(Vec::new());
                    v.len() - 1
                };
                let mut buf = [0u8; 8192];
                loop {
                    let n = match c.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    let all = {
                        let mut v = s.lock().unwrap();
                        v[i].extend_from_slice(&buf[..n]);
                        String::from_utf8_lossy(&v[i]).into_owned()
                    };
                    if all.contains("\r\n\r\n") && all.trim_end().ends_with('}') {
                        let body = r#"{"choices":[{"message":{"role":"assistant","content":"heard you"}}]}"#;
                        let resp = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
                        let _ = c.write_all(resp.as_bytes()).await;
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

/// Kills the child when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn proxy_args(port: u16, user: &str) -> Vec<String> {
    [
        "gateway-proxy",
        "--to",
        &format!("127.0.0.1:{port}"),
        "--gateway-user",
        user,
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

fn proxy(sock: &Path, port: u16, user: &str) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_osmoda-voice"))
        .args(proxy_args(port, user))
        .arg("--listen")
        .arg(sock)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    Proc(child)
}

async fn wait_for(sock: &Path) {
    let start = Instant::now();
    while tokio::net::UnixStream::connect(sock).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "{} never answered",
            sock.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client(sock: PathBuf) -> Gateway {
    Gateway::new(Target::Unix(sock), Some("owner-token-123".into()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_goes_only_to_a_port_the_gateways_user_holds() {
    let dir = tempfile::tempdir().unwrap();
    let (port, seen) = stand_in().await;
    let me = nix::unistd::getuid().as_raw().to_string();

    // The gateway's user holds the port: the request goes through, token and words.
    let ok = dir.path().join("ok.sock");
    let _p = proxy(&ok, port, &me);
    wait_for(&ok).await;
    let before = seen.lock().unwrap().len();
    let reply = client(ok)
        .say("Please open the pod bay doors.")
        .await
        .unwrap();
    assert_eq!(reply, "heard you");
    let got = String::from_utf8_lossy(&seen.lock().unwrap()[before..].concat()).into_owned();
    assert!(got.contains("Bearer owner-token-123"), "{got}");
    assert!(got.contains("Please open the pod bay doors."), "{got}");

    // The same port, but the proxy expects another user (nobody) there: as when a local user
    // bound the port while the gateway was down. Not a byte reaches it; the voice daemon's
    // client is told who holds the port.
    let squat = dir.path().join("squat.sock");
    let _p = proxy(&squat, port, "nobody");
    wait_for(&squat).await;
    let before = seen.lock().unwrap().len();
    let e = client(squat)
        .say("Please open the pod bay doors.")
        .await
        .unwrap_err();
    assert_eq!(e.reason, "the gateway answered 502", "{e}");
    let detail = e.detail.unwrap();
    assert!(detail.contains(&format!("is held by uid {me}")), "{detail}");
    assert!(
        detail.contains("not the gateway's user (uid 65534 (nobody))"),
        "{detail}"
    );
    assert!(detail.contains("nothing was sent"), "{detail}");
    // The proxy connected (to learn who holds the port) but sent nothing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = seen.lock().unwrap()[before..].to_vec();
    assert!(
        after.iter().all(Vec::is_empty),
        "the squatter got {after:?}"
    );

    // Nobody on the port at all: a 502 saying so.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let free_port = free.local_addr().unwrap().port();
    drop(free);
    let none = dir.path().join("none.sock");
    let _p = proxy(&none, free_port, &me);
    wait_for(&none).await;
    let e = client(none).say("hello").await.unwrap_err();
    assert_eq!(e.reason, "the gateway answered 502", "{e}");
    assert!(e.detail.unwrap().contains("cannot connect to the gateway"));

    // Bad flags stop the start, naming them.
    for (args, says) in [
        (proxy_args(port, "no-such-user-here"), "--gateway-user"),
        (
            proxy_args(port, &me)
                .into_iter()
                .map(|a| a.replace("127.0.0.1:", "10.1.2.3:"))
                .collect(),
            "--to",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_osmoda-voice"))
            .args(&args)
            .arg("--listen")
            .arg(dir.path().join("never.sock"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

/// As the NixOS unit starts it: systemd passes the listening socket (LISTEN_FDS).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activated_as_the_unit_runs_it() {
    let Ok(activate) = which("systemd-socket-activate") else {
        eprintln!("skipped: systemd-socket-activate not found (apt-get install systemd)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (port, seen) = stand_in().await;
    let me = nix::unistd::getuid().as_raw().to_string();
    let sock = dir.path().join("act.sock");
    let child = Command::new(activate)
        .arg("-l")
        .arg(&sock)
        .arg(env!("CARGO_BIN_EXE_osmoda-voice"))
        .args(proxy_args(port, &me))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let _p = Proc(child);
    wait_for(&sock).await;
    let reply = client(sock).say("Is the backup done?").await.unwrap();
    assert_eq!(reply, "heard you");
    let got = String::from_utf8_lossy(&seen.lock().unwrap().concat()).into_owned();
    assert!(got.contains("Is the backup done?"), "{got}");

    // Without a socket from systemd and without --listen it says how to start it.
    let out = Command::new(env!("CARGO_BIN_EXE_osmoda-voice"))
        .args(proxy_args(port, &me))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no socket from systemd"), "{err}");
}

fn which(name: &str) -> Result<PathBuf, ()> {
    std::env::var_os("PATH")
        .and_then(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .find(|c| c.is_file())
        })
        .ok_or(())
}

/// A gateway that takes connections and never answers nor closes: each connection ends at the
/// proxy's deadline, freeing its slot; while all [`MAX_CONNECTIONS`] slots are held, one more
/// is answered with a 503 saying why (not closed in silence), and after the deadline the proxy
/// carries connections again. (The binary's deadline is `CONNECTION_DEADLINE`, 330 s; the
/// library's `serve_proxy` is run here with 3 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_gateway_connections_end_at_the_deadline_and_a_full_proxy_says_so() {
    use osmoda_voice::proxy::{serve_proxy, ProxyTarget, MAX_CONNECTIONS};
    let dir = tempfile::tempdir().unwrap();
    // The quiet gateway: reads whatever comes and keeps every connection open.
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = Arc::clone(&held);
    tokio::spawn(async move {
        while let Ok((mut c, _)) = l.accept().await {
            let h = Arc::clone(&h);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                while let Ok(n) = c.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                // Its side stays open even after the proxy's half-close.
                h.lock().unwrap().push(c);
            });
        }
    });
    let sock = dir.path().join("proxy.sock");
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let (_stop, shutdown) = osmoda_voice::shutdown::channel();
    let deadline = Duration::from_secs(3);
    tokio::spawn(serve_proxy(
        listener,
        ProxyTarget {
            to: format!("127.0.0.1:{port}"),
            gateway_uid: nix::unistd::getuid().as_raw(),
            deadline,
        },
        shutdown,
    ));

    // Fill every slot with a request the gateway never answers (the caller half-closes, as a
    // client that sent everything may).
    let started = Instant::now();
    let mut open = Vec::new();
    for _ in 0..MAX_CONNECTIONS {
        let mut c = tokio::net::UnixStream::connect(&sock).await.unwrap();
        c.write_all(b"POST /v1/chat/completions HTTP/1.1\r\ncontent-length: 2\r\n\r\n{}")
            .await
            .unwrap();
        c.shutdown().await.unwrap();
        open.push(c);
    }
    // One more is refused with the reason, at once.
    let mut extra = tokio::net::UnixStream::connect(&sock).await.unwrap();
    extra.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(2), extra.read_to_string(&mut answer))
        .await
        .expect("the proxy with every slot taken did not answer")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 503 "), "{answer}");
    assert!(answer.contains("\"type\":\"gateway_busy\""), "{answer}");
    assert!(
        answer.contains(&format!("carries {MAX_CONNECTIONS} connections at once")),
        "{answer}"
    );
    // The daemon's gateway client reports it as the gateway's answer with that reason.
    let e = client(sock.clone()).say("hello").await.unwrap_err();
    assert_eq!(e.reason, "the gateway answered 503", "{e}");

    // Every held connection is closed by the proxy at its deadline (EOF), not before.
    for mut c in open {
        let mut rest = Vec::new();
        tokio::time::timeout(deadline + Duration::from_secs(10), c.read_to_end(&mut rest))
            .await
            .expect("a quiet gateway's connection outlived the proxy's deadline")
            .unwrap();
    }
    assert!(started.elapsed() >= deadline, "{:?}", started.elapsed());
    // The slots are free again: a new connection is carried to the gateway (it reaches it).
    let before = held.lock().unwrap().len();
    let mut c = tokio::net::UnixStream::connect(&sock).await.unwrap();
    c.write_all(b"POST / HTTP/1.1\r\ncontent-length: 0\r\n\r\n")
        .await
        .unwrap();
    c.shutdown().await.unwrap();
    let mut rest = String::new();
    tokio::time::timeout(
        deadline + Duration::from_secs(10),
        c.read_to_string(&mut rest),
    )
    .await
    .expect("the freed proxy's connection outlived its deadline")
    .unwrap();
    assert!(!rest.contains("503"), "{rest}");
    assert!(
        held.lock().unwrap().len() > before,
        "the gateway never got it"
    );
}
