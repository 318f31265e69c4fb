//! The one hardened HTTP/1.1 listener every osModa daemon serves its Unix sockets with.
//!
//! Each listener has its own budget ([`Limits`]): a cap on connections in total, per peer uid and
//! per peer pid (from `SO_PEERCRED`), and the [`crate::gate`]'s header, body, idle and send
//! timeouts. A connection over a cap is answered `503` with a JSON body at once and closed, so a
//! flood from one peer neither blocks others nor uses the daemon's file descriptors; a daemon that
//! serves two sockets (agentd's agent and approval sockets) gives each its own budget, so the
//! second stays answerable whatever happens on the first. Protocol-level errors are answered with
//! the same `{"error","detail"}` body as the daemon's own errors.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::{header, HeaderValue, Request, Response, StatusCode};
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tower::ServiceExt as _;

use crate::gate::{ConnState, Gate, ProtocolError, Timeouts};
use crate::Shutdown;

/// The kernel's identity of a connected peer (`SO_PEERCRED`), inserted into every request's
/// extensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerCred {
    /// Effective uid; `None` when the kernel reported no credentials.
    pub uid: Option<u32>,
    /// Process id.
    pub pid: Option<i32>,
}

impl PeerCred {
    /// The credentials of the peer of `stream`.
    pub fn of(stream: &UnixStream) -> PeerCred {
        let cred = stream.peer_cred().ok();
        PeerCred {
            uid: cred.map(|c| c.uid()),
            pid: cred.and_then(|c| c.pid()),
        }
    }
}

/// One listener's budget: connection caps and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once, all peers together.
    pub max_connections: usize,
    /// Connections open at once from one uid.
    pub max_per_uid: usize,
    /// Connections open at once from one process.
    pub max_per_pid: usize,
    /// Header, body, idle and send timeouts.
    pub timeouts: Timeouts,
}

/// File descriptors kept free for everything that is not a connection (ledger, git, children).
pub const RESERVED_FDS: u64 = 256;

impl Limits {
    /// Timeouts every listener uses: 10 s for a head, 30 s for a body, 60 s idle, 30 s to send.
    pub const TIMEOUTS: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        body: Duration::from_secs(30),
        idle: Duration::from_secs(60),
        send: Duration::from_secs(30),
    };

    /// The small budget of a human-only socket (agentd's approval socket): 64 connections, 16
    /// per process.
    pub fn small() -> Limits {
        Limits {
            max_connections: 64,
            max_per_uid: 64,
            max_per_pid: 16,
            timeouts: Self::TIMEOUTS,
        }
    }

    /// The budget of a daemon's main socket when the process may hold `fd_limit` descriptors:
    /// everything except [`RESERVED_FDS`] and one [`Limits::small`] budget, at most 8,192
    /// connections; half of that per uid, 256 per process.
    pub fn main(fd_limit: u64) -> Limits {
        let spare = fd_limit.saturating_sub(RESERVED_FDS + Self::small().max_connections as u64);
        let max = usize::try_from(spare).unwrap_or(usize::MAX).clamp(16, 8192);
        Limits {
            max_connections: max,
            max_per_uid: (max / 2).max(8),
            max_per_pid: 256.min(max / 2).max(4),
            timeouts: Self::TIMEOUTS,
        }
    }

    /// Connections every uid may open whatever the others hold: 1/64 of the total, 1 to 64.
    pub fn floor_per_uid(&self) -> usize {
        (self.max_connections / 64).clamp(1, 64)
    }

    /// Connections kept back from the shared pool for uids still under their
    /// [`Limits::floor_per_uid`]: room for 16 such uids, never more than what one uid may not
    /// take anyway (`max_connections - max_per_uid`). Connections above a uid's floor come from
    /// the pool of the rest, so however many connections two or three uids (the agent's
    /// command accounts) keep open, another daemon's uid still gets its floor.
    pub fn reserved_for_new_uids(&self) -> usize {
        (16 * self.floor_per_uid()).min(self.max_connections.saturating_sub(self.max_per_uid))
    }
}

/// Open connections per peer, for the caps.
#[derive(Debug, Default)]
struct Counts {
    total: usize,
    /// Connections above their uid's floor ([`Limits::floor_per_uid`]), all uids together.
    above_floor: usize,
    uid: HashMap<Option<u32>, usize>,
    pid: HashMap<Option<i32>, usize>,
}

struct Admission {
    name: &'static str,
    limits: Limits,
    counts: Mutex<Counts>,
}

/// Holds one admitted connection's place; gives it back when dropped.
struct Slot {
    adm: Arc<Admission>,
    cred: PeerCred,
}

impl Admission {
    fn admit(self: &Arc<Self>, cred: PeerCred) -> Result<Slot, &'static str> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let uid = c.uid.get(&cred.uid).copied().unwrap_or(0);
        let pid = c.pid.get(&cred.pid).copied().unwrap_or(0);
        if c.total >= self.limits.max_connections {
            return Err("the daemon is at its connection limit");
        }
        if uid >= self.limits.max_per_uid {
            return Err("this user has too many connections open");
        }
        if pid >= self.limits.max_per_pid {
            return Err("this process has too many connections open");
        }
        let above = uid >= self.limits.floor_per_uid();
        if above
            && c.above_floor
                >= self
                    .limits
                    .max_connections
                    .saturating_sub(self.limits.reserved_for_new_uids())
        {
            return Err(
                "this user has its share of connections open; the rest is kept for other users",
            );
        }
        c.above_floor += usize::from(above);
        c.total += 1;
        *c.uid.entry(cred.uid).or_default() += 1;
        *c.pid.entry(cred.pid).or_default() += 1;
        crate::metrics::global().connections_open(self.name, 1);
        Ok(Slot {
            adm: Arc::clone(self),
            cred,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        crate::metrics::global().connections_open(self.adm.name, -1);
        let mut guard = self.adm.counts.lock().unwrap_or_else(|p| p.into_inner());
        let c = &mut *guard;
        c.total -= 1;
        let floor = self.adm.limits.floor_per_uid();
        if let Some(n) = c.uid.get_mut(&self.cred.uid) {
            if *n > floor {
                c.above_floor -= 1;
            }
            *n -= 1;
            if *n == 0 {
                c.uid.remove(&self.cred.uid);
            }
        }
        if let Some(n) = c.pid.get_mut(&self.cred.pid) {
            *n -= 1;
            if *n == 0 {
                c.pid.remove(&self.cred.pid);
            }
        }
    }
}

/// The JSON error body every osModa daemon answers with: `{"error": .., "detail": {"hint": ..}}`.
pub fn error_response(
    status: StatusCode,
    error: &str,
    hint: &str,
    close: bool,
) -> Response<axum::body::Body> {
    let body = serde_json::json!({ "error": error, "detail": { "hint": hint } }).to_string();
    let mut resp = Response::new(axum::body::Body::from(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if close {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

fn protocol_response(e: &ProtocolError) -> Response<axum::body::Body> {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    error_response(status, &e.error, e.hint, true)
}

/// The bytes of a whole `503` answer for a connection refused by a cap.
fn refusal(reason: &str) -> Vec<u8> {
    let body = serde_json::json!({
        "error": reason,
        "detail": { "hint": "close idle connections and retry" },
    })
    .to_string();
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// Serves `app` on `listener` under `limits` until `shutdown`, then lets requests in progress
/// finish and returns. `name` labels the listener in metrics and logs (`agent`, `approval`,
/// `watch`); `info` builds the value handlers get as `ConnectInfo<I>` from each new connection.
///
/// # Errors
/// Only when the listener itself fails; per-connection errors are logged and end that connection.
pub async fn serve<I, F>(
    listener: UnixListener,
    name: &'static str,
    limits: Limits,
    app: Router,
    info: F,
    shutdown: Shutdown,
) -> io::Result<()>
where
    I: Clone + Send + Sync + 'static,
    F: Fn(&UnixStream) -> I,
{
    let adm = Arc::new(Admission {
        name,
        limits,
        counts: Mutex::default(),
    });
    let app = crate::metrics::instrument(app);
    let mut conns = JoinSet::new();
    let mut stop = shutdown.clone();
    loop {
        let accepted = tokio::select! {
            _ = stop.wait() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            a = listener.accept() => a,
        };
        let stream = match accepted {
            Ok((s, _)) => s,
            Err(e) if is_fd_exhaustion(&e) => {
                tracing::warn!(listener = name, error = %e, "out of file descriptors; pausing accepts");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            Err(e) if is_transient(&e) => continue,
            Err(e) => return Err(e),
        };
        let cred = PeerCred::of(&stream);
        let slot = match adm.admit(cred) {
            Ok(slot) => slot,
            Err(reason) => {
                crate::metrics::global().connection_refused(name);
                tracing::debug!(listener = name, ?cred, reason, "connection refused");
                // A fresh socket's send buffer is empty: the answer fits without waiting.
                let _ = stream.try_write(&refusal(reason));
                continue;
            }
        };
        let peer = info(&stream);
        let (app, timeouts, shutdown) = (app.clone(), limits.timeouts, shutdown.clone());
        conns.spawn(async move {
            let _slot = slot;
            connection(stream, cred, peer, app, timeouts, name, shutdown).await;
        });
    }
    // Stop accepting at once; finish what is in progress.
    drop(listener);
    while conns.join_next().await.is_some() {}
    Ok(())
}

fn is_fd_exhaustion(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE) | Some(libc::ENFILE) | Some(libc::ENOBUFS) | Some(libc::ENOMEM)
    )
}

fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

/// Serves one accepted connection until it ends or `shutdown` fires (then gracefully).
pub(crate) async fn connection<I: Clone + Send + Sync + 'static>(
    stream: UnixStream,
    cred: PeerCred,
    peer: I,
    app: Router,
    timeouts: Timeouts,
    name: &'static str,
    mut shutdown: Shutdown,
) {
    let state = Arc::new(ConnState::default());
    let calls = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let svc_state = Arc::clone(&state);
    let watch = Arc::new(crate::hangup::Watch::default());
    let svc_watch = Arc::clone(&watch);
    let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
    let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::AcqRel) + 1;
        let state = Arc::clone(&svc_state);
        let watch = Arc::clone(&svc_watch);
        let app = app.clone();
        let peer = peer.clone();
        async move {
            let resp = if let Some(e) = state.take_error(n) {
                crate::metrics::global().http_request(name, "(protocol error)", e.status);
                protocol_response(&e)
            } else {
                req.extensions_mut().insert(ConnectInfo(peer));
                req.extensions_mut().insert(cred);
                req.extensions_mut().insert(watch.begin(n));
                req.extensions_mut().insert(crate::metrics::Listener(name));
                let req = req.map(axum::body::Body::new);
                let resp = match app.oneshot(req).await {
                    Ok(resp) => resp,
                    Err(never) => match never {},
                };
                watch.end(n);
                resp
            };
            state.answered();
            Ok::<_, Infallible>(resp)
        }
    });
    let io = Gate::new(TokioIo::new(stream), state, timeouts);
    let conn = hyper::server::conn::http1::Builder::new()
        .keep_alive(true)
        // A client may shut down its write side after its request and still read the answer.
        .half_close(true)
        .max_buf_size(64 * 1024)
        .serve_connection(io, service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        // Only after a handler asked (crate::hangup): the request in flight is dropped with `conn`.
        () = crate::hangup::hung_up(&watch, fd) => {
            tracing::debug!(listener = name, ?cred, "the caller hung up; its request is dropped");
            Ok(())
        }
        _ = shutdown.wait() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(listener = name, ?cred, error = %e, "connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn cred(uid: u32, pid: i32) -> PeerCred {
        PeerCred {
            uid: Some(uid),
            pid: Some(pid),
        }
    }

    #[test]
    fn caps_per_listener_uid_and_pid_hold_and_free_up() {
        let adm = Arc::new(Admission {
            name: "test",
            limits: Limits {
                max_connections: 5,
                max_per_uid: 3,
                max_per_pid: 2,
                timeouts: Limits::TIMEOUTS,
            },
            counts: Mutex::default(),
        });
        let a1 = adm.admit(cred(1, 10)).unwrap();
        let _a2 = adm.admit(cred(1, 10)).unwrap();
        assert!(adm.admit(cred(1, 10)).err().unwrap().contains("process"));
        let _a3 = adm.admit(cred(1, 11)).unwrap();
        assert!(adm.admit(cred(1, 12)).err().unwrap().contains("user"));
        let _b1 = adm.admit(cred(2, 20)).unwrap();
        let _b2 = adm.admit(cred(2, 21)).unwrap();
        assert!(adm.admit(cred(3, 30)).err().unwrap().contains("limit"));
        drop(a1);
        let _c = adm.admit(cred(3, 30)).unwrap();
    }

    /// The review's flood (issue 11, finding 8): two uids, 16 processes each, 256 connections
    /// per process against the default budget. A third uid still gets its floor, and so does a
    /// fourth; the two flooding uids together stay under the total.
    #[test]
    fn two_flooding_uids_cannot_starve_another_uid() {
        for fds in [1024, 65536] {
            let limits = Limits::main(fds);
            let adm = Arc::new(Admission {
                name: "test",
                limits,
                counts: Mutex::default(),
            });
            let mut held = Vec::new();
            for uid in [0u32, 1] {
                for p in 0..16 {
                    for _ in 0..256 {
                        if let Ok(s) = adm.admit(cred(uid, (uid * 100) as i32 + p)) {
                            held.push(s);
                        }
                    }
                }
            }
            assert!(held.len() < limits.max_connections, "{fds}: {}", held.len());
            for uid in [2u32, 3] {
                for k in 0..limits.floor_per_uid() {
                    held.push(
                        adm.admit(cred(uid, 1000 + uid as i32 * 100 + k as i32))
                            .unwrap_or_else(|e| panic!("{fds}: uid {uid}'s connection {k}: {e}")),
                    );
                }
            }
            // Connections given back are counted back: all closed, the whole budget is free.
            held.clear();
            let counts = adm.counts.lock().unwrap();
            assert_eq!((counts.total, counts.above_floor), (0, 0));
        }
    }

    /// What the floors hold against any number of flooding uids below 16, and where they stop:
    /// k uids each trying far more than the budget (16 processes × 256 connections) leave
    /// every other uid its floor for k = 1..=15; from the 16th flooding uid on, the 16 floors
    /// kept back are all held and a new uid can be refused. Each flooder holds at most its
    /// per-uid cap, and everyone's connections are counted back when closed.
    #[test]
    fn floors_hold_against_up_to_fifteen_flooding_uids() {
        for fds in [1024, 65536] {
            let limits = Limits::main(fds);
            for k in 1u32..=17 {
                let adm = Arc::new(Admission {
                    name: "test",
                    limits,
                    counts: Mutex::default(),
                });
                let mut held = Vec::new();
                for uid in 0..k {
                    let before = held.len();
                    for p in 0..16 {
                        for _ in 0..256 {
                            if let Ok(s) = adm.admit(cred(uid, (uid * 100 + p) as i32)) {
                                held.push(s);
                            }
                        }
                    }
                    let got = held.len() - before;
                    if uid < 16 {
                        assert!(
                            got >= limits.floor_per_uid(),
                            "{fds}: flooder {uid} got {got}"
                        );
                    }
                    assert!(got <= limits.max_per_uid, "{fds}: flooder {uid} got {got}");
                }
                let fresh = 10_000;
                let floor: Vec<_> = (0..limits.floor_per_uid())
                    .map_while(|i| adm.admit(cred(fresh, 50_000 + i as i32)).ok())
                    .collect();
                if k < 16 {
                    assert_eq!(
                        floor.len(),
                        limits.floor_per_uid(),
                        "{fds}: {k} flooding uids"
                    );
                } else {
                    // The documented bound: 16 flooding uids hold every floor kept back.
                    assert!(floor.len() < limits.floor_per_uid(), "{fds}: {k}");
                }
                drop(floor);
                held.clear();
                let counts = adm.counts.lock().unwrap();
                assert_eq!((counts.total, counts.above_floor), (0, 0));
            }
        }
    }

    #[test]
    fn the_main_budget_stays_below_the_fd_limit() {
        for fds in [1024, 4096, 65536, 1 << 20] {
            let l = Limits::main(fds);
            assert!(
                (l.max_connections + Limits::small().max_connections) as u64 + RESERVED_FDS <= fds
            );
            assert!(l.max_per_pid <= l.max_per_uid && l.max_per_uid <= l.max_connections);
        }
    }

    async fn serve_test(
        timeouts: Timeouts,
    ) -> (tempfile::TempDir, std::path::PathBuf, crate::Trigger) {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let app = Router::new().route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                "done"
            }),
        );
        let (trigger, shutdown) = crate::shutdown_channel();
        let limits = Limits {
            timeouts,
            ..Limits::small()
        };
        tokio::spawn(serve(listener, "test", limits, app, |_| (), shutdown));
        (dir, sock, trigger)
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed_but_a_slow_handler_is_not_cut() {
        let t = Duration::from_millis(200);
        let (_dir, sock, _trigger) = serve_test(Timeouts {
            header: t,
            body: t,
            idle: t,
            send: t,
        })
        .await;
        let mut s = UnixStream::connect(&sock).await.unwrap();
        // The handler takes three idle timeouts: the connection waits for it.
        s.write_all(b"GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(
            head.starts_with("HTTP/1.1 200") && head.ends_with("done"),
            "{head}"
        );
        // Then nothing: the idle connection is closed (end of input, no answer).
        let n = tokio::time::timeout(Duration::from_secs(30), s.read(&mut buf))
            .await
            .expect("the idle connection was never closed")
            .unwrap();
        assert_eq!(n, 0);
    }

    /// Sets its flag when dropped.
    struct OnDrop(Arc<std::sync::atomic::AtomicBool>);

    impl Drop for OnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }

    async fn within(what: &str, flag: &std::sync::atomic::AtomicBool) {
        let start = std::time::Instant::now();
        while !flag.load(std::sync::atomic::Ordering::SeqCst) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{what} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Reads one `200 … done` answer from a keep-alive connection, leaving it open.
    async fn answer_on(s: &mut UnixStream) {
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).ends_with("done") {
            let mut buf = [0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "{}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
        assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn a_handler_that_asks_is_dropped_when_its_caller_hangs_up_and_only_then() {
        use crate::hangup::Hangup;
        use axum::Extension;
        use std::sync::atomic::AtomicBool;
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("s.sock");
        let listener = UnixListener::bind(&sock).unwrap();
        let (dropped, finished) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let (d, f) = (Arc::clone(&dropped), Arc::clone(&finished));
        let app = Router::new()
            .route(
                "/armed/{ms}",
                axum::routing::get(
                    move |Extension(h): Extension<Hangup>,
                          axum::extract::Path(ms): axum::extract::Path<u64>| {
                        let d = Arc::clone(&d);
                        async move {
                            h.drop_on_hangup();
                            let _guard = OnDrop(d);
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                            "done"
                        }
                    },
                ),
            )
            .route(
                "/plain",
                axum::routing::get(move || {
                    let f = Arc::clone(&f);
                    async move {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        f.store(true, std::sync::atomic::Ordering::SeqCst);
                        "done"
                    }
                }),
            );
        let (_trigger, shutdown) = crate::shutdown_channel();
        tokio::spawn(serve(
            listener,
            "test",
            Limits::small(),
            app,
            |_| (),
            shutdown,
        ));
        let ask = |path: &str| format!("GET {path} HTTP/1.1\r\nHost: a\r\n\r\n");

        // A caller that half-closes still gets its answer from a handler that asked.
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(ask("/armed/300").as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        let mut answer = String::new();
        s.read_to_string(&mut answer).await.unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
            "{answer}"
        );
        dropped.store(false, std::sync::atomic::Ordering::SeqCst);

        // A caller that hangs up: the handler that asked is dropped, long before its end.
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(ask("/armed/600000").as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!dropped.load(std::sync::atomic::Ordering::SeqCst));
        drop(s);
        within("the handler dropped", &dropped).await;

        // One that did not ask runs to its end.
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(ask("/plain").as_bytes()).await.unwrap();
        drop(s);
        within("the plain handler finished", &finished).await;

        // The ask is the request's own: on a keep-alive connection, a request after one that
        // asked (and was answered) runs to its end when the caller hangs up.
        finished.store(false, std::sync::atomic::Ordering::SeqCst);
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(ask("/armed/10").as_bytes()).await.unwrap();
        answer_on(&mut s).await;
        s.write_all(ask("/plain").as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
        within("the plain handler after an armed one finished", &finished).await;

        // And a later request that asks is still dropped on its own hang-up.
        dropped.store(false, std::sync::atomic::Ordering::SeqCst);
        let mut s = UnixStream::connect(&sock).await.unwrap();
        s.write_all(ask("/plain").as_bytes()).await.unwrap();
        answer_on(&mut s).await;
        s.write_all(ask("/armed/600000").as_bytes()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(s);
        within("the second request, which asked, dropped", &dropped).await;
    }
}
