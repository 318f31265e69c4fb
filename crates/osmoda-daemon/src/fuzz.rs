//! The body of the `http_request` fuzz target, shared with a stable-Rust test: arbitrary client
//! bytes go through the real connection code (gate, hyper, a router) over a real socket pair.

use std::time::Duration;

use axum::routing::any;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::gate::Timeouts;
use crate::server::PeerCred;

/// Sends `data` as one client's bytes, then closes the client's write side; panics (reports a
/// bug) if serving panics or hangs, or if any response is not well-framed with a JSON body.
pub fn fuzz_one(data: &[u8]) {
    check_responses(&exchange(data));
}

/// What the server sends back for `data` (the client's whole input).
pub fn exchange(data: &[u8]) -> Vec<u8> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(data))
}

async fn run(data: &[u8]) -> Vec<u8> {
    let (server, mut client) = UnixStream::pair().expect("socket pair");
    let app = crate::metrics::instrument(
        Router::new()
            .route(
                "/",
                any(|| async { axum::Json(serde_json::json!({ "ok": true })) }),
            )
            .fallback(|| async {
                crate::server::error_response(
                    axum::http::StatusCode::NOT_FOUND,
                    "no such route",
                    "fuzz",
                    false,
                )
            }),
    );
    let (_trigger, shutdown) = crate::shutdown_channel();
    let timeouts = Timeouts {
        header: Duration::from_secs(10),
        body: Duration::from_secs(30),
        idle: Duration::from_secs(60),
        send: Duration::from_secs(30),
    };
    let cred = PeerCred::of(&server);
    let task = tokio::spawn(crate::server::connection(
        server,
        cred,
        (),
        app,
        timeouts,
        "fuzz",
        shutdown,
    ));
    let input = data.to_vec();
    let (mut rd, mut wr) = client.split();
    let write = async move {
        let _ = wr.write_all(&input).await;
        let _ = wr.shutdown().await;
    };
    let mut out = Vec::new();
    let read = rd.read_to_end(&mut out);
    let done = tokio::time::timeout(Duration::from_secs(5), async {
        let (_, r) = tokio::join!(write, read);
        r
    })
    .await;
    assert!(done.is_ok(), "the connection neither answered nor closed");
    if let Err(e) = task.await {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
    }
    out
}

/// Every response must be complete, carry a `content-length`, and a 4xx/5xx a JSON object
/// with an `error` string.
fn check_responses(mut out: &[u8]) {
    while !out.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let head_len = match resp.parse(out) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "malformed response {other:?}: {:?}",
                String::from_utf8_lossy(out)
            ),
        };
        let code = resp.code.unwrap_or(0);
        if code == 100 {
            out = &out[head_len..];
            continue;
        }
        let len: usize = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "response without content-length: {:?}",
                    String::from_utf8_lossy(out)
                )
            });
        let body = &out[head_len..head_len + len];
        if code >= 400 {
            let v: serde_json::Value = serde_json::from_slice(body).unwrap_or_else(|_| {
                panic!(
                    "{code} without a JSON body: {:?}",
                    String::from_utf8_lossy(out)
                )
            });
            assert!(v["error"].is_string(), "{code} body lacks `error`: {v}");
        }
        out = &out[head_len + len..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fragments real and hostile requests are made of.
    const PIECES: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\n",
        b"POST / HTTP/1.1\r\n",
        b"GET /nope HTTP/1.0\r\n",
        b"GARBAGE\r\n",
        b"GET /a%00b?q=a%00b HTTP/1.1\r\n",
        b"Host: x\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: -1\r\n",
        b"Content-Length: 99999999999999999999999\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Connection: close\r\n",
        b"Expect: 100-continue\r\n",
        b"X: \x01\r\n",
        b"\r\n",
        b"\n",
        b"hello",
        b"5\r\nhello\r\n0\r\n\r\n",
        b"ffffffffffffffffff\r\n",
        b"0\r\n\r\n",
        b" ",
        b"\xff\xfe",
    ];

    fn statuses(data: &[u8]) -> Vec<u16> {
        let out = exchange(data);
        check_responses(&out);
        String::from_utf8_lossy(&out)
            .match_indices("HTTP/1.1 ")
            .filter_map(|(i, _)| String::from_utf8_lossy(&out)[i + 9..i + 12].parse().ok())
            .collect()
    }

    #[test]
    fn known_cases_get_json_answers_in_order() {
        for (case, expected) in [
            (&b"GARBAGE\r\n\r\n"[..], &[400][..]),
            (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab", &[400]),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", &[400]),
            (b"GET / HTTP/1.1\r\n\r\nGET /x HTTP/1.1\r\n\r\nBAD\r\n\r\n", &[200, 404, 400]),
            (
                b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\n\r\n",
                &[200, 200],
            ),
            (b"GET / HTTP/1.1\r\nHost: x", &[]),
            (b"GET /?q=a%00b HTTP/1.1\r\n\r\n", &[200]),
        ] {
            assert_eq!(statuses(case), expected, "{:?}", String::from_utf8_lossy(case));
        }
    }

    /// The fuzz body on stable: random sequences of the fragments, with random bytes mixed in.
    #[test]
    fn random_requests() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..400 {
            let mut data = Vec::new();
            for _ in 0..(next() % 12) {
                let r = next();
                if r % 7 == 0 {
                    data.push((r >> 8) as u8);
                } else {
                    data.extend_from_slice(PIECES[(r as usize >> 3) % PIECES.len()]);
                }
            }
            fuzz_one(&data);
        }
    }
}
