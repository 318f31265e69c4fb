//! The OpenClaw gateway as the person's ear: each utterance goes to the agent as a user message
//! through the gateway's OpenAI-compatible `POST /v1/chat/completions`, with the gateway token
//! (`OPENCLAW_GATEWAY_TOKEN`) and the OpenAI `user` field `osmoda-voice`, which OpenClaw turns
//! into one stable session for everything said aloud.
//!
//! The gateway is reached at `http://127.0.0.1:<port>` (loopback only) or, where the voice
//! unit has no network (`PrivateNetwork=true`), at `unix:<path>`: a socket the NixOS module
//! forwards to the gateway's port with `systemd-socket-proxyd`.

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

impl Gateway {
    /// A client for `target`, authenticating with `token` when given.
    pub fn new(target: Target, token: Option<String>) -> Gateway {
        Gateway { target, token }
    }

    /// Sends `text` as the person's message; returns the agent's answer.
    ///
    /// # Errors
    /// Why it was not delivered (connection, status, timeout), in words for the status page.
    pub async fn say(&self, text: &str) -> Result<String, String> {
        let body = json!({
            "model": "openclaw",
            "user": "osmoda-voice",
            "messages": [{ "role": "user", "content": text }],
        });
        let (status, bytes) =
            tokio::time::timeout(TURN_TIMEOUT, self.post("/v1/chat/completions", &body))
                .await
                .map_err(|_| {
                    format!(
                        "the gateway did not answer within {} s",
                        TURN_TIMEOUT.as_secs()
                    )
                })??;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if !(200..300).contains(&status) {
            let why = v
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map_or_else(
                    || String::from_utf8_lossy(&bytes).chars().take(300).collect(),
                    str::to_owned,
                );
            return Err(format!("the gateway answered {status}: {why}"));
        }
        Ok(v.pointer("/choices/0/message/content")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned())
    }

    async fn post(&self, path: &str, body: &Value) -> Result<(u16, Bytes), String> {
        let bytes = Bytes::from(body.to_string());
        let (host, io): (String, Box<dyn Io>) = match &self.target {
            Target::Tcp(a) => (
                a.clone(),
                Box::new(
                    tokio::net::TcpStream::connect(a)
                        .await
                        .map_err(|e| format!("cannot connect to the gateway at {a}: {e}"))?,
                ),
            ),
            Target::Unix(p) => (
                "localhost".into(),
                Box::new(tokio::net::UnixStream::connect(p).await.map_err(|e| {
                    format!("cannot connect to the gateway at {}: {e}", p.display())
                })?),
            ),
        };
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
                .await
                .map_err(|e| format!("gateway handshake: {e}"))?;
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
            .map_err(|e| format!("cannot build the gateway request: {e}"))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("gateway request failed: {e}"))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_REPLY_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the gateway's answer: {e}"))?
            .to_bytes();
        Ok((status, body))
    }
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

#[cfg(test)]
mod tests {
    use super::*;

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
