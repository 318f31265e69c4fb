//! The Unix-socket client against a real axum server in a temp dir.

use axum::extract::{Path as UrlPath, RawQuery};
use axum::http::{Method as HttpMethod, StatusCode};
use axum::routing::{any, get};
use axum::{Json, Router};
use osmoda_client::{Client, ClientError, Method};
use serde_json::{json, Value};
use std::time::Duration;

async fn echo(
    method: HttpMethod,
    UrlPath(rest): UrlPath<String>,
    RawQuery(q): RawQuery,
    body: String,
) -> Json<Value> {
    let parsed: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    Json(json!({"method": method.as_str(), "path": rest, "query": q, "body": parsed}))
}

fn app() -> Router {
    Router::new()
        .route("/echo/{*rest}", any(echo))
        .route("/empty", get(|| async { StatusCode::NO_CONTENT }))
        .route(
            "/text",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, "down for maintenance") }),
        )
        .route(
            "/fail",
            get(|| async {
                (
                    StatusCode::CONFLICT,
                    Json(json!({"error": "ticket already used", "detail": {"id": 7}})),
                )
            }),
        )
        .route("/hang", get(std::future::pending::<&'static str>))
}

struct Server {
    _dir: tempfile::TempDir,
    client: Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start() -> anyhow::Result<Server> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("d.sock");
    let listener = tokio::net::UnixListener::bind(&socket)?;
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app()).await;
    });
    Ok(Server {
        _dir: dir,
        client: Client::new(socket),
        task,
    })
}

#[tokio::test]
async fn get_post_delete_round_trip() -> anyhow::Result<()> {
    let s = start()?;
    let r = s.client.get("/echo/a/b?x=1&y=two").await?;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.body,
        json!({"method": "GET", "path": "a/b", "query": "x=1&y=two", "body": null})
    );
    let body = json!({"operation": {"kind": "remove_user", "name": "bob"}, "n": [1, 2.5, "ü"]});
    let r = s.client.post("/echo/p", &body).await?;
    assert_eq!(r.body["body"], body);
    assert_eq!(r.body["method"], "POST");
    let r = s.client.delete("/echo/watcher/3").await?;
    assert_eq!((r.status, r.body["method"].clone()), (200, json!("DELETE")));
    let r = s
        .client
        .request(Method::PUT, "/echo/x", Some(&json!(1)))
        .await?;
    assert_eq!(r.body["body"], json!(1));
    Ok(())
}

#[tokio::test]
async fn statuses_and_bodies() -> anyhow::Result<()> {
    let s = start()?;
    let r = s.client.get("/empty").await?;
    assert_eq!((r.status, r.body.clone()), (204, Value::Null));
    assert_eq!(r.ok_json()?, Value::Null);
    let r = s.client.get("/text").await?;
    assert_eq!(
        (r.status, r.body.clone()),
        (503, json!("down for maintenance"))
    );
    match s.client.get("/fail").await?.ok_json() {
        Err(ClientError::Api {
            status,
            error,
            detail,
        }) => {
            assert_eq!(
                (status, error.as_str(), detail),
                (409, "ticket already used", json!({"id": 7}))
            );
        }
        other => anyhow::bail!("expected an Api error, got {other:?}"),
    }
    let r = s.client.get("/nowhere").await?;
    assert_eq!(r.status, 404);
    assert!(r.ok_json().is_err());
    Ok(())
}

#[tokio::test]
async fn missing_socket_is_a_connect_error_naming_the_path() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("absent.sock");
    let err = Client::new(&socket).get("/health").await.err();
    let Some(err @ ClientError::Connect { .. }) = err else {
        anyhow::bail!("expected Connect, got {err:?}")
    };
    let msg = err.to_string();
    assert!(
        msg.contains("absent.sock") && msg.contains("is the daemon running?"),
        "{msg}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_paths_are_refused_before_sending() -> anyhow::Result<()> {
    let s = start()?;
    for bad in ["health", "", "http://example.com/x"] {
        assert!(
            matches!(s.client.get(bad).await, Err(ClientError::InvalidRequest(_))),
            "{bad:?}"
        );
    }
    assert!(matches!(
        s.client.get("/bad path").await,
        Err(ClientError::InvalidRequest(_))
    ));
    Ok(())
}

#[tokio::test]
async fn a_hanging_daemon_times_out() -> anyhow::Result<()> {
    let s = start()?;
    let client = s.client.clone().with_timeout(Duration::from_millis(200));
    let err = client.get("/hang").await.err();
    assert!(matches!(err, Some(ClientError::Timeout { .. })), "{err:?}");
    Ok(())
}

#[tokio::test]
async fn many_concurrent_requests() -> anyhow::Result<()> {
    let s = start()?;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..50 {
        let c = s.client.clone();
        set.spawn(async move {
            c.post("/echo/n", &json!(i))
                .await
                .map(|r| (i, r.body["body"].clone()))
        });
    }
    while let Some(res) = set.join_next().await {
        let (i, echoed) = res??;
        assert_eq!(echoed, json!(i));
    }
    Ok(())
}

/// Accepted connections, counted by a listener wrapper, so the test can see reuse.
async fn counting_server(
    socket: std::path::PathBuf,
    accepted: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    shutdown: tokio::sync::oneshot::Receiver<()>,
) {
    let listener = tokio::net::UnixListener::bind(&socket).expect("bind");
    let mut shutdown = std::pin::pin!(shutdown);
    let mut conns = Vec::new();
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                // Close every connection, idle keep-alive ones included.
                conns.iter().for_each(tokio::task::JoinHandle::abort);
                return;
            }
            conn = listener.accept() => {
                let Ok((stream, _)) = conn else { return };
                accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let svc = hyper::service::service_fn(|req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = format!("{{\"path\":\"{}\"}}", req.uri().path());
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(http_body_util::Full::new(hyper::body::Bytes::from(body))))
                });
                conns.push(tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(stream), svc)));
            }
        }
    }
}

#[tokio::test]
async fn idle_connections_are_reused_and_a_stale_one_is_replaced() -> anyhow::Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("d.sock");
    let accepted = std::sync::Arc::new(AtomicUsize::new(0));
    let (stop, stopped) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(counting_server(socket.clone(), accepted.clone(), stopped));
    while !socket.exists() {
        tokio::task::yield_now().await;
    }
    let client = Client::new(&socket);
    for i in 0..5 {
        let r = client.get(&format!("/n{i}")).await?;
        assert_eq!(r.body["path"], format!("/n{i}"));
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        1,
        "one keep-alive connection for sequential requests"
    );

    // The server goes away (closing the idle connection) and a new one takes the socket.
    stop.send(()).ok();
    server.await?;
    std::fs::remove_file(&socket)?;
    let (_stop2, stopped2) = tokio::sync::oneshot::channel();
    tokio::spawn(counting_server(socket.clone(), accepted.clone(), stopped2));
    while !socket.exists() {
        tokio::task::yield_now().await;
    }
    let r = client.get("/after").await?;
    assert_eq!(r.body["path"], "/after");
    assert_eq!(accepted.load(Ordering::SeqCst), 2);
    Ok(())
}

/// A daemon whose accept backlog is full (a flood it has not accepted yet) answers `connect`
/// with EAGAIN at once; the client tries again until the daemon has room, rather than failing
/// a request the daemon would serve a moment later.
#[tokio::test]
async fn a_full_accept_backlog_is_waited_out_not_a_failure() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let socket = dir.path().join("d.sock");
    let std_listener = std::os::unix::net::UnixListener::bind(&socket)?;
    std_listener.set_nonblocking(true)?;
    // Fill the backlog: connections nobody accepts, until the kernel says EAGAIN.
    let mut flood = Vec::new();
    let full = loop {
        match tokio::net::UnixStream::connect(&socket).await {
            Ok(s) => flood.push(s),
            Err(e) => break e,
        }
        anyhow::ensure!(flood.len() < 100_000, "the backlog never filled");
    };
    assert_eq!(full.kind(), std::io::ErrorKind::WouldBlock, "{full}");
    // The daemon catches up 300 ms later: the flood is accepted (and ends), the client's
    // request is served.
    let listener = tokio::net::UnixListener::from_std(std_listener)?;
    let serve = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        drop(flood);
        let _ = axum::serve(listener, app()).await;
    });
    let client = Client::new(&socket);
    let started = std::time::Instant::now();
    let v = client.get("/echo/x").await?.ok_json()?;
    assert_eq!(v["path"], "x");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "it waited for the backlog"
    );
    serve.abort();
    Ok(())
}
