//! The OpenClaw gateway as the person's ear: each utterance goes to the agent as a user message
//! through the gateway's OpenAI-compatible `POST /v1/chat/completions`, with the gateway token
//! (`OPENCLAW_GATEWAY_TOKEN`) and the OpenAI `user` field `osmoda-voice`, which OpenClaw turns
//! into one stable session for everything said aloud.
//!
//! The gateway is reached at `http://127.0.0.1:<port>` (loopback only) or, where the voice
//! unit has no network (`PrivateNetwork=true`), at `unix:<path>`: a socket the NixOS module
//! forwards to the gateway's port with `osmoda-voice gateway-proxy` ([`crate::proxy`]), which
//! passes a connection on only to a port the gateway's user holds.

use std::time::Duration;

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use serde_json::{json, Value};

/// How long one turn of the agent may take.
pub const TURN_TIMEOUT: Duration = Duration::from_secs(300);
const MAX_REPLY_BYTES: usize = 4 << 20;

/// Where the gateway listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `host:port` on loopback.
    Tcp(String),
    /// A Unix socket path.
    Unix(std::path::PathBuf),
}

/// A gateway client.
#[derive(Debug, Clone)]
pub struct Gateway {
    target: Target,
    token: Option<String>,
}

/// Parses `http://127.0.0.1:<port>` / `http://[::1]:<port>` / `http://localhost:<port>` or
/// `unix:/absolute/path`.
///
/// # Errors
/// A message naming the URL and the accepted forms.
pub fn parse_url(url: &str) -> Result<Target, String> {
    if let Some(p) = url.strip_prefix("unix:") {
        let p = std::path::PathBuf::from(p);
        if p.is_absolute() {
            return Ok(Target::Unix(p));
        }
    } else if let Some(rest) = url.strip_prefix("http://") {
        let authority = rest.trim_end_matches('/');
        let host = authority
            .rsplit_once(':')
            .map(|(h, port)| (h, port.parse::<u16>()));
        if let Some((h, Ok(_))) = host {
            if matches!(h, "127.0.0.1" | "[::1]" | "localhost") {
                return Ok(Target::Tcp(authority.to_owned()));
            }
        }
    }
    Err(format!(
        "gateway_url {url:?} must be a loopback URL such as http://127.0.0.1:18789 or unix:/run/osmoda/voice-gateway.sock"
    ))
}

/// `host:port` from a loopback `host:port` (`127.0.0.1`, `[::1]` or `localhost`), for the
/// gateway proxy's `--to`.
///
/// # Errors
/// A message naming the address and the accepted forms.
pub fn loopback_authority(addr: &str) -> Result<String, String> {
    match parse_url(&format!("http://{addr}")) {
        Ok(Target::Tcp(a)) => Ok(a),
        _ => Err(format!(
            "{addr:?} must be a loopback address such as 127.0.0.1:18789"
        )),
    }
}

impl Gateway {
    /// A client for `target`, authenticating with `token` when given.
    pub fn new(target: Target, token: Option<String>) -> Gateway {
        Gateway { target, token }
    }

    /// Sends `text` as the person's message; returns the agent's answer.
    ///
    /// # Errors
    /// Why it was not delivered (connection, status, timeout): a [`Failure`] whose `reason` the
    /// daemon wrote (for the ledger) and whose `detail` is the gateway's own words, cut and
    /// stripped (for the log and the status page only).
    pub async fn say(&self, text: &str) -> Result<String, Failure> {
        let body = json!({
            "model": "openclaw",
            "user": "osmoda-voice",
            "messages": [{ "role": "user", "content": text }],
        });
        let (status, bytes) =
            tokio::time::timeout(TURN_TIMEOUT, self.post("/v1/chat/completions", &body))
                .await
                .map_err(|_| Failure {
                    reason: format!(
                        "the gateway did not answer within {} s",
                        TURN_TIMEOUT.as_secs()
                    ),
                    detail: None,
                })?
                .map_err(|(reason, detail)| Failure {
                    reason: reason.to_owned(),
                    detail: Some(clean(&detail)),
                })?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let why = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map_or_else(
                    || String::from_utf8_lossy(&bytes).into_owned(),
                    str::to_owned,
                );
            return Err(Failure {
                reason: format!("the gateway answered {status}"),
                detail: Some(clean(&why)),
            });
        }
        Ok(v.pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    /// The answer's status and body; on failure, a fixed reason and the error's own text.
    async fn post(&self, path: &str, body: &Value) -> Result<(u16, Bytes), (&'static str, String)> {
        let bytes = Bytes::from(body.to_string());
        let (host, io): (String, Box<dyn Io>) = match &self.target {
            Target::Tcp(a) => (
                a.clone(),
                Box::new(
                    tokio::net::TcpStream::connect(a)
                        .await
                        .map_err(|e| ("cannot connect to the gateway", format!("{a}: {e}")))?,
                ),
            ),
            Target::Unix(p) => (
                "localhost".into(),
                Box::new(tokio::net::UnixStream::connect(p).await.map_err(|e| {
                    (
                        "cannot connect to the gateway",
                        format!("{}: {e}", p.display()),
                    )
                })?),
            ),
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(|e| ("the gateway's handshake failed", e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let mut req = hyper::Request::post(path)
            .header(hyper::header::HOST, host)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::CONTENT_LENGTH, bytes.len());
        if let Some(t) = &self.token {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req
            .body(Full::new(bytes))
            .map_err(|e| ("cannot build the gateway request", e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| ("the gateway request failed", e.to_string()))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_REPLY_BYTES)
            .collect()
            .await
            .map_err(|e| ("cannot read the gateway's answer", e.to_string()))?
            .to_bytes();
        Ok((status, body))
    }
}

/// Why an utterance did not reach the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Words this daemon chose (`the gateway answered 500`): what the ledger records, since
    /// another program's text may echo what the person said.
    pub reason: String,
    /// The gateway's (or the connection's) own words, at most [`DETAIL_CHARS`] characters
    /// without control characters: for the log and the status page only.
    pub detail: Option<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.detail {
            Some(d) if !d.is_empty() => write!(f, "{}: {d}", self.reason),
            _ => f.write_str(&self.reason),
        }
    }
}

/// The most of another program's error text kept (characters).
pub const DETAIL_CHARS: usize = 200;

/// `text` with control characters (line breaks, escapes, bidi controls count as such here:
/// anything `char::is_control` or in the Unicode format class used for bidi) made spaces and cut
/// to [`DETAIL_CHARS`], marked with `…` where cut.
fn clean(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| {
            if c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}') {
                ' '
            } else {
                c
            }
        })
        .take(DETAIL_CHARS + 1)
        .collect();
    if out.chars().count() > DETAIL_CHARS {
        out = out.chars().take(DETAIL_CHARS).collect();
        out.push('…');
    }
    out
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in gateway on a Unix socket: answers every request with `status` and a body
    /// made from the request (`echo` puts the request body into an OpenAI-style error).
    async fn stand_in(dir: &std::path::Path, status: u16, echo: bool) -> Gateway {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let sock = dir.join("gw.sock");
        let l = tokio::net::UnixListener::bind(&sock).unwrap();
        tokio::spawn(async move {
            while let Ok((mut c, _)) = l.accept().await {
                let mut req = vec![0u8; 65536];
                let mut n = 0;
                // The whole request: headers, then the body the Content-Length announces.
                loop {
                    let m = c.read(&mut req[n..]).await.unwrap();
                    n += m;
                    let text = String::from_utf8_lossy(&req[..n]).into_owned();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len: usize = head
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length: ")
                                    .map(|v| v.trim().parse().unwrap())
                            })
                            .unwrap_or(0);
                        if body.len() >= len || m == 0 {
                            let reply = if echo {
                                json!({ "error": { "message": format!("echo:\n\u{202e}{body}") } })
                                    .to_string()
                            } else {
                                format!("<html>{}</html>", "\u{1b}[31m".repeat(500))
                            };
                            let resp = format!(
                                "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
                                reply.len()
                            );
                            c.write_all(resp.as_bytes()).await.unwrap();
                            break;
                        }
                    }
                }
            }
        });
        Gateway::new(Target::Unix(sock), Some("tok".into()))
    }

    /// The gateway's own text never becomes the reason (what the ledger records), and what is
    /// kept of it for the status is cut and has no control characters.
    #[tokio::test]
    async fn the_gateways_words_stay_out_of_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let said = "Please open the pod bay doors. ".repeat(20);
        let g = stand_in(dir.path(), 500, true).await;
        let e = g.say(&said).await.unwrap_err();
        assert_eq!(e.reason, "the gateway answered 500");
        let detail = e.detail.clone().unwrap();
        assert!(detail.starts_with("echo:  {"), "{detail}");
        assert!(detail.chars().count() <= DETAIL_CHARS + 1, "{detail}");
        assert!(detail.ends_with('…'), "{detail}");
        assert!(
            !detail.chars().any(|c| c.is_control() || c == '\u{202e}'),
            "{detail:?}"
        );
        assert!(e.to_string().starts_with("the gateway answered 500: echo:"));

        let dir = tempfile::tempdir().unwrap();
        let e = stand_in(dir.path(), 502, false)
            .await
            .say("hello")
            .await
            .unwrap_err();
        assert_eq!(e.reason, "the gateway answered 502");
        let detail = e.detail.unwrap();
        assert!(detail.chars().count() <= DETAIL_CHARS + 1, "{detail}");
        assert!(!detail.chars().any(char::is_control), "{detail:?}");

        // Nobody there: a reason of our own, the socket's error as the detail.
        let e = Gateway::new(Target::Unix(dir.path().join("none.sock")), None)
            .say("hello")
            .await
            .unwrap_err();
        assert_eq!(e.reason, "cannot connect to the gateway");
        assert!(e.detail.unwrap().contains("none.sock"));
    }

    #[test]
    fn only_loopback_and_unix_urls() {
        assert_eq!(
            parse_url("http://127.0.0.1:18789"),
            Ok(Target::Tcp("127.0.0.1:18789".into()))
        );
        assert_eq!(
            parse_url("http://[::1]:1/"),
            Ok(Target::Tcp("[::1]:1".into()))
        );
        assert_eq!(
            parse_url("unix:/run/x.sock"),
            Ok(Target::Unix("/run/x.sock".into()))
        );
        for bad in [
            "http://example.com:80",
            "https://127.0.0.1:1",
            "http://127.0.0.1",
            "unix:rel.sock",
            "http://10.0.0.1:80",
            "http://127.0.0.1:99999",
        ] {
            assert!(parse_url(bad).is_err(), "{bad}");
        }
    }
}
