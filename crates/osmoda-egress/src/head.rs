//! Reading and answering the proxy's one request head: a CONNECT, parsed with `httparse`
//! (hyper's parser) so that every refused request, however malformed, is logged as it was sent.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head accepted, in bytes; larger heads are answered 431.
pub const MAX_HEAD: usize = 16 * 1024;

/// Most header fields accepted.
const MAX_HEADERS: usize = 64;

/// A parsed request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The method (`CONNECT`).
    pub method: String,
    /// The request target as sent.
    pub target: String,
    /// The credential from `Proxy-Authorization` (Bearer token, or the password of Basic).
    pub token: Option<String>,
    /// Bytes the client sent after the head (a TLS ClientHello sent early, say).
    pub rest: Vec<u8>,
}

/// Why no head could be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not an HTTP/1.x request head.
    #[error("malformed request head: {0}")]
    Malformed(String),
    /// Over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] fields.
    #[error("request head over {MAX_HEAD} bytes or {MAX_HEADERS} fields")]
    TooLarge,
    /// The client closed before a whole head.
    #[error("connection closed before a whole request head")]
    Closed,
    /// `Proxy-Authorization` is present but not `Basic`/`Bearer`, or sent twice.
    #[error("Proxy-Authorization must be one `Basic <base64 user:token>` or `Bearer <token>`")]
    BadCredential,
}

/// Reads one head from `s` (the caller bounds the time).
///
/// # Errors
/// [`HeadError`].
pub async fn read<S: AsyncRead + Unpin>(s: &mut S) -> Result<Head, HeadError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await.map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(len)) => {
                let method = req.method.unwrap_or_default().to_string();
                let target = req.path.unwrap_or_default().to_string();
                let mut token = None;
                for h in req.headers.iter() {
                    if h.name.eq_ignore_ascii_case("proxy-authorization") {
                        if token.is_some() {
                            return Err(HeadError::BadCredential);
                        }
                        token = Some(credential(h.value)?);
                    }
                }
                let rest = buf[len..].to_vec();
                return Ok(Head {
                    method,
                    target,
                    token,
                    rest,
                });
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                return Err(HeadError::TooLarge)
            }
            Err(e) => return Err(HeadError::Malformed(e.to_string())),
        }
    }
}

fn credential(value: &[u8]) -> Result<String, HeadError> {
    let v = std::str::from_utf8(value).map_err(|_| HeadError::BadCredential)?;
    let (scheme, rest) = v.trim().split_once(' ').ok_or(HeadError::BadCredential)?;
    let rest = rest.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(rest.to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        let raw = STANDARD
            .decode(rest)
            .map_err(|_| HeadError::BadCredential)?;
        let text = String::from_utf8(raw).map_err(|_| HeadError::BadCredential)?;
        let (_, password) = text.split_once(':').ok_or(HeadError::BadCredential)?;
        // curl sends URL userinfo percent-decoded; a token is URL-safe, so nothing to undo.
        return Ok(password.to_string());
    }
    Err(HeadError::BadCredential)
}

/// What the client can do about a refusal with `status` and `reason`.
fn hint(status: u16, reason: &str) -> &'static str {
    match (status, reason) {
        (405, _) | (400, "malformed-request") => {
            "send `CONNECT host:port HTTP/1.1` with the token in Proxy-Authorization (HTTPS_PROXY does this)"
        }
        (400, "ip-literal") => "connect by the name the capability declares, not a numeric form of an address",
        (400, _) => "the target is `host:port`: a DNS name (or an address in an allow range) and a port",
        (407, _) => {
            "ask agentd for a token (POST /capability/mint, or /sandbox/exec mints one) and send it as `Proxy-Authorization: Bearer <token>`"
        }
        (403, _) => {
            "the token's capabilities (services.osmoda.egress.capabilities) name the domains and ports allowed; private, loopback and link-local addresses are never dialled"
        }
        (408, _) => "send the whole request head at once",
        (429, _) => "wait a minute: the token's CONNECT rate is capped (services.osmoda.egress.limits)",
        (431, _) => "keep the request head under 16 KiB",
        _ => "try again later; the proxy's events in the ledger (egress.deny) say more",
    }
}

/// Writes a short error response (`{error, detail: {kind, hint}}` as JSON, `connection: close`)
/// and ignores write errors: the client may already be gone.
pub async fn refuse<S: AsyncWrite + Unpin>(s: &mut S, status: u16, reason: &str, detail: &str) {
    let phrase = match status {
        400 => "Bad Request",
        403 => "Forbidden",
        405 => "Method Not Allowed",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    };
    let mut body = serde_json::json!({
        "error": format!("osmoda-egress denied ({reason}): {detail}"),
        "detail": { "kind": reason, "hint": hint(status, reason) },
    })
    .to_string();
    body.push('\n');
    let auth = if status == 407 {
        "proxy-authenticate: Basic realm=\"osmoda-egress\"\r\n"
    } else {
        ""
    };
    let msg = format!(
        "HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n{auth}connection: close\r\ncontent-length: {}\r\nx-osmoda-egress-reason: {reason}\r\n\r\n{body}",
        body.len()
    );
    let _ = s.write_all(msg.as_bytes()).await;
    let _ = s.shutdown().await;
}
