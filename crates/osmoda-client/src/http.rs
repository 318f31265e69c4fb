//! A small HTTP/1.1 JSON client over a Unix socket, reusing idle keep-alive connections.

use crate::ClientError;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a connection is retried while the daemon's accept backlog is full (EAGAIN).
const BACKLOG_FULL_RETRY: std::time::Duration = std::time::Duration::from_secs(10);

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// Idle connections kept per client (clones share them).
const MAX_IDLE: usize = 32;

/// Largest response body accepted.
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;
/// Default time allowed for connect + request + response.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// A daemon's answer: status code and JSON body (`Null` when empty, a string when not JSON).
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// Parsed JSON body.
    pub body: Value,
}

impl Response {
    /// True for 2xx statuses.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The body of a 2xx response.
    ///
    /// # Errors
    /// [`ClientError::Api`] carrying the status and the body's `error` and `detail` fields.
    pub fn ok_json(self) -> Result<Value, ClientError> {
        if self.is_success() {
            return Ok(self.body);
        }
        let (error, detail) = match self.body {
            Value::Object(mut map) => {
                let error = match map.remove("error") {
                    Some(Value::String(s)) => s,
                    Some(other) => other.to_string(),
                    None => Value::Object(map.clone()).to_string(),
                };
                (error, map.remove("detail").unwrap_or(Value::Null))
            }
            Value::String(s) => (s, Value::Null),
            Value::Null => (
                format!("HTTP {} with an empty body", self.status),
                Value::Null,
            ),
            other => (other.to_string(), Value::Null),
        };
        Err(ClientError::Api {
            status: self.status,
            error,
            detail,
        })
    }
}

/// HTTP client for one daemon socket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
    timeout: Duration,
    daemon: Option<String>,
    action: Option<String>,
    idle: Arc<Mutex<Vec<Sender>>>,
}

/// Header naming the daemon a request comes from. agentd records it next to the kernel's
/// `SO_PEERCRED` identity of the caller, never instead of it.
pub const DAEMON_HEADER: &str = "x-osmoda-daemon";

/// Header by which a daemon marks a request it makes for an action it runs (a routine's http
/// action): agentd then gives the request none of the daemon's standing and records the label
/// in the actor of every event it writes for it (`<role>[action=<label>,uid=..,..]`).
pub const ACTION_HEADER: &str = "x-osmoda-action";

/// Whether `label` is a valid action label (agentd's rule for [`ACTION_HEADER`]): 1..=40 of
/// `[a-z0-9._-]`.
pub fn valid_action_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 40
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl Client {
    /// A client for the daemon listening on `socket`, with a 30 s timeout.
    pub fn new(socket: impl Into<PathBuf>) -> Client {
        Client {
            socket: socket.into(),
            timeout: DEFAULT_TIMEOUT,
            daemon: None,
            action: None,
            idle: Arc::default(),
        }
    }

    /// The same client, announcing itself as daemon `name` (sent as [`DAEMON_HEADER`]).
    #[must_use]
    pub fn as_daemon(mut self, name: impl Into<String>) -> Client {
        self.daemon = Some(name.into());
        self
    }

    /// The same client, marking every request as made for the action `label` (sent as
    /// [`ACTION_HEADER`]; 1..=40 of `[a-z0-9._-]`, e.g. `routine-run.42`).
    #[must_use]
    pub fn for_action(mut self, label: impl Into<String>) -> Client {
        self.action = Some(label.into());
        self
    }

    /// The same client with another timeout for each whole request.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `GET path_and_query`.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn get(&self, path_and_query: &str) -> Result<Response, ClientError> {
        self.request(Method::GET, path_and_query, None).await
    }

    /// `POST path` with a JSON body.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn post(&self, path: &str, body: &Value) -> Result<Response, ClientError> {
        self.request(Method::POST, path, Some(body)).await
    }

    /// `DELETE path`.
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn delete(&self, path: &str) -> Result<Response, ClientError> {
        self.request(Method::DELETE, path, None).await
    }

    /// Sends one request (on an idle keep-alive connection when there is one) and reads the
    /// whole response.
    ///
    /// Any status is returned as `Ok`; use [`Response::ok_json`] to turn 4xx/5xx into errors.
    ///
    /// # Errors
    /// [`ClientError::InvalidRequest`] for a path not starting with `/`; [`ClientError::Connect`]
    /// when nobody listens; [`ClientError::Http`] on protocol or connection failure;
    /// [`ClientError::Timeout`] when the timeout expires.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Response, ClientError> {
        if !path.starts_with('/') {
            return Err(ClientError::InvalidRequest(format!(
                "path {path:?} must start with '/'"
            )));
        }
        let bytes = match body {
            Some(v) => Bytes::from(serde_json::to_vec(v).map_err(|e| {
                ClientError::InvalidRequest(format!("body is not serialisable: {e}"))
            })?),
            None => Bytes::new(),
        };
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, "localhost")
            .header(CONTENT_LENGTH, bytes.len());
        if body.is_some() {
            builder = builder.header(CONTENT_TYPE, "application/json");
        }
        if let Some(name) = &self.daemon {
            builder = builder.header(DAEMON_HEADER, name.as_str());
        }
        if let Some(label) = &self.action {
            builder = builder.header(ACTION_HEADER, label.as_str());
        }
        let req = builder.body(Full::new(bytes)).map_err(|e| {
            ClientError::InvalidRequest(format!("cannot build request for {path:?}: {e}"))
        })?;
        match tokio::time::timeout(self.timeout, self.exchange(req)).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Timeout {
                socket: self.socket.clone(),
                secs: self.timeout.as_secs_f64(),
            }),
        }
    }

    async fn exchange(&self, mut req: Request<Full<Bytes>>) -> Result<Response, ClientError> {
        // An idle connection may have been closed by the server meanwhile. A request it did not
        // start sending is handed back by hyper and goes out on the next (or a fresh) connection,
        // so nothing is ever sent twice.
        while let Some(mut sender) = self.take_idle() {
            if sender.ready().await.is_err() {
                continue;
            }
            match sender.try_send_request(req).await {
                Ok(resp) => return self.finish(sender, resp).await,
                Err(mut e) => match e.take_message() {
                    Some(unsent) => req = unsent,
                    None => return Err(self.http_err(e.error())),
                },
            }
        }
        let mut sender = self.connect().await?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| self.http_err(&e))?;
        self.finish(sender, resp).await
    }

    fn http_err(&self, e: &dyn std::fmt::Display) -> ClientError {
        ClientError::Http {
            socket: self.socket.clone(),
            message: e.to_string(),
        }
    }

    fn take_idle(&self) -> Option<Sender> {
        self.idle.lock().ok()?.pop()
    }

    async fn connect(&self) -> Result<Sender, ClientError> {
        // A Unix socket whose accept backlog is full answers `connect` with EAGAIN at once
        // (a flood of connections the daemon has not accepted yet): try again for a while,
        // as the daemon accepts and refuses what is over its caps.
        let started = std::time::Instant::now();
        let mut pause = std::time::Duration::from_millis(5);
        let stream = loop {
            match tokio::net::UnixStream::connect(&self.socket).await {
                Ok(stream) => break stream,
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && started.elapsed() < BACKLOG_FULL_RETRY =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(std::time::Duration::from_millis(200));
                }
                Err(source) => {
                    return Err(ClientError::Connect {
                        socket: self.socket.clone(),
                        source,
                    })
                }
            }
        };
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.http_err(&e))?;
        // The connection task lives as long as the connection (pooled or in use).
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "unix socket connection closed with an error");
            }
        });
        Ok(sender)
    }

    async fn finish(
        &self,
        sender: Sender,
        resp: hyper::Response<hyper::body::Incoming>,
    ) -> Result<Response, ClientError> {
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| self.http_err(&format!("reading the response body: {e}")))?
            .to_bytes();
        // The whole response was read, so the connection can carry the next request.
        if !sender.is_closed() {
            if let Ok(mut idle) = self.idle.lock() {
                if idle.len() < MAX_IDLE {
                    idle.push(sender);
                }
            }
        }
        Ok(Response {
            status,
            body: parse_body(&body),
        })
    }
}

/// JSON if it parses, `Null` if empty, else the text as a JSON string (e.g. plain-text errors).
fn parse_body(bytes: &[u8]) -> Value {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn api_err(status: u16, body: Value) -> Option<(u16, String, Value)> {
        match (Response { status, body }).ok_json() {
            Err(ClientError::Api {
                status,
                error,
                detail,
            }) => Some((status, error, detail)),
            _ => None,
        }
    }

    #[test]
    fn bodies() {
        assert_eq!(parse_body(b""), Value::Null);
        assert_eq!(parse_body(b" \n"), Value::Null);
        assert_eq!(parse_body(br#"{"a":1}"#), json!({"a": 1}));
        assert_eq!(parse_body(b"Bad Request"), json!("Bad Request"));
    }

    #[test]
    fn ok_json_maps_errors() {
        assert_eq!(
            (Response {
                status: 204,
                body: Value::Null
            })
            .ok_json()
            .ok(),
            Some(Value::Null)
        );
        assert_eq!(
            api_err(
                400,
                json!({"error": "bad type", "detail": {"field": "type"}})
            ),
            Some((400, "bad type".into(), json!({"field": "type"})))
        );
        assert_eq!(
            api_err(500, json!("boom")),
            Some((500, "boom".into(), Value::Null))
        );
        assert_eq!(
            api_err(404, Value::Null),
            Some((404, "HTTP 404 with an empty body".into(), Value::Null))
        );
        assert_eq!(
            api_err(409, json!({"other": 1})),
            Some((409, r#"{"other":1}"#.into(), Value::Null))
        );
    }
}
