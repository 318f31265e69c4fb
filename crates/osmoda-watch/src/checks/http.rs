//! The HTTP check, and a minimal HTTP/1.1 GET over any stream (TCP for `http`, Unix for agentd).

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Largest body read by a check; more is cut (a health page does not need more).
const MAX_BODY: usize = 1 << 20;

/// Sends `GET path` with `Host: host` over `stream` and returns the status and the body text.
///
/// # Errors
/// A readable reason when the handshake, the request or reading the body fails.
pub async fn http_get<S>(stream: S, host: &str, path: &str) -> Result<(u16, String), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    let driver = tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, host)
        .body(Empty::<Bytes>::new())
        .map_err(|e| format!("invalid request for {path}: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("HTTP request failed: {e}"))?;
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("reading the body failed: {e}"))?;
        if let Some(data) = frame.data_ref() {
            buf.extend_from_slice(data);
            if buf.len() >= MAX_BODY {
                buf.truncate(MAX_BODY);
                break;
            }
        }
    }
    driver.abort();
    Ok((status, String::from_utf8_lossy(&buf).into_owned()))
}

/// Splits `http://host[:port][/path]` into (host, port, path).
///
/// # Errors
/// A readable reason for any other scheme or a malformed URL.
pub fn parse_http_url(url: &str) -> Result<(String, u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        format!("unsupported URL {url:?}: only http:// is supported (use a command check with curl for https)")
    })?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(format!(
            "invalid URL {url:?}: expected http://host[:port]/path"
        ));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6
            .split_once(']')
            .ok_or_else(|| format!("invalid IPv6 host in {url:?}"))?;
        (h.to_string(), p.strip_prefix(':').unwrap_or(""))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (authority.to_string(), ""),
        }
    };
    let port = if port.is_empty() {
        80
    } else {
        port.parse()
            .map_err(|_| format!("invalid port {port:?} in URL {url:?}"))?
    };
    Ok((host, port, path.to_string()))
}

/// Runs the `http` check.
pub(super) async fn check_url(
    url: &str,
    expect_status: Option<u16>,
    body_contains: Option<&str>,
) -> Result<String, String> {
    let (host, port, path) = parse_http_url(url)?;
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let (status, body) = http_get(stream, &host, &path).await?;
    let status_ok = match expect_status {
        Some(want) => status == want,
        None => (200..300).contains(&status),
    };
    if !status_ok {
        let want = expect_status.map_or("2xx".to_string(), |s| s.to_string());
        return Err(format!("{url} answered {status}, expected {want}"));
    }
    if let Some(needle) = body_contains {
        if !body.contains(needle) {
            return Err(format!(
                "{url} answered {status} but the body does not contain {needle:?}"
            ));
        }
    }
    Ok(format!("{url} answered {status}"))
}
