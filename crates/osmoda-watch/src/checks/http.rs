//! The HTTP check, and a minimal HTTP/1.1 GET over any stream (TCP for `http`, Unix for agentd).

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// Largest body read by a check; more is cut (a health page does not need more).
const MAX_BODY: usize = 1 << 20;

/// Most redirects a check with `follow_redirects` follows.
const MAX_REDIRECTS: usize = 5;

/// What one GET answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status code.
    pub status: u16,
    /// Body text (at most 1 MiB, lossily decoded).
    pub body: String,
    /// The `Location` header, if any.
    pub location: Option<String>,
}

/// Sends `GET path` with `Host: host` over `stream` and returns the status and the body text.
///
/// # Errors
/// A readable reason when the handshake, the request or reading the body fails.
pub async fn http_get<S>(stream: S, host: &str, path: &str) -> Result<(u16, String), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    get(stream, host, path).await.map(|a| (a.status, a.body))
}

/// Like [`http_get`], with the `Location` header.
///
/// # Errors
/// As [`http_get`].
pub async fn get<S>(stream: S, host: &str, path: &str) -> Result<Answer, String>
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
    let location = resp
        .headers()
        .get(hyper::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
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
    Ok(Answer {
        status,
        body: String::from_utf8_lossy(&buf).into_owned(),
        location,
    })
}

/// The `Host` header for `host:port` (RFC 9110 §7.2: the port unless it is the default 80;
/// IPv6 literals in brackets).
pub fn host_header(host: &str, port: u16) -> String {
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == 80 {
        host
    } else {
        format!("{host}:{port}")
    }
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

/// The URL a `Location` points to from `base` (absolute `http://`, or a path on the same
/// host; anything else cannot be followed).
fn redirect_target(base: &str, location: &str) -> Result<String, String> {
    if location.starts_with("http://") {
        return Ok(location.to_string());
    }
    if let Some(path) = location.strip_prefix('/').filter(|p| !p.starts_with('/')) {
        let (host, port, _) = parse_http_url(base)?;
        return Ok(format!("http://{}/{path}", host_header(&host, port)));
    }
    Err(format!(
        "{base} redirects to {location:?}, which this check cannot follow (only http:// and absolute paths)"
    ))
}

/// Runs the `http` check: one GET (and its redirects when `follow_redirects`), judged by the
/// status of the last answer (any 2xx, or exactly `expect_status`) and the body substring.
pub(super) async fn check_url(
    url: &str,
    expect_status: Option<u16>,
    body_contains: Option<&str>,
    follow_redirects: bool,
) -> Result<String, String> {
    let mut current = url.to_string();
    let mut hops = 0;
    let answer = loop {
        let (host, port, path) = parse_http_url(&current)?;
        let stream = tokio::net::TcpStream::connect((host.as_str(), port))
            .await
            .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
        let a = get(stream, &host_header(&host, port), &path).await?;
        match (&a.location, (300..400).contains(&a.status)) {
            (Some(loc), true) if follow_redirects => {
                hops += 1;
                if hops > MAX_REDIRECTS {
                    return Err(format!("{url}: more than {MAX_REDIRECTS} redirects"));
                }
                current = redirect_target(&current, loc)?;
            }
            _ => break a,
        }
    };
    let status = answer.status;
    let status_ok = match expect_status {
        Some(want) => status == want,
        None => (200..300).contains(&status),
    };
    let via = if current == url {
        String::new()
    } else {
        format!(" (redirected to {current})")
    };
    if !status_ok {
        let want = expect_status.map_or("2xx".to_string(), |s| s.to_string());
        let hint = match (&answer.location, follow_redirects) {
            (Some(loc), false) if (300..400).contains(&status) => {
                format!(" (a redirect to {loc}; set followRedirects to follow it)")
            }
            _ => String::new(),
        };
        return Err(format!(
            "{url}{via} answered {status}, expected {want}{hint}"
        ));
    }
    if let Some(needle) = body_contains {
        if !answer.body.contains(needle) {
            return Err(format!(
                "{url}{via} answered {status} but the body does not contain {needle:?}"
            ));
        }
    }
    Ok(format!("{url}{via} answered {status}"))
}
