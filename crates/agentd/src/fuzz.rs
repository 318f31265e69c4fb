//! The body of the `agentd_json` fuzz target, shared with a stable-Rust test: arbitrary bytes as
//! the JSON body of every POST endpoint of agentd's real routers (real ledger in a directory).

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, Request};
use axum::Router;
use tower::ServiceExt as _;

use crate::peer::Peer;
use crate::{AppState, Settings};

/// Every POST route with a JSON body, on the socket it is served on (`true`: approval socket).
pub const ROUTES: &[(&str, bool)] = &[
    ("/events/append", false),
    ("/incident/create", false),
    ("/incident/1/step", false),
    ("/incident/1/resolve", false),
    ("/approval/request", false),
    ("/approval/check", false),
    ("/system/query", false),
    ("/config/set", false),
    ("/config/unset", false),
    ("/config/revert", false),
    ("/config/commit", false),
    ("/approval/00/approve", true),
    ("/approval/00/deny", true),
];

/// agentd's routers over a ledger in `dir`, and a runtime to drive them.
pub struct Target {
    agent: Router,
    human: Router,
    rt: tokio::runtime::Runtime,
    /// The state (for checks after a run).
    pub state: Arc<AppState>,
}

impl Target {
    /// Opens agentd's state in `dir` (no config tree: the config routes answer 503 after
    /// decoding their bodies).
    ///
    /// # Panics
    /// When the state cannot be opened (a fuzzing setup error, not a finding).
    pub fn open(dir: &Path) -> Target {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let state = AppState::open(dir.join("state"), Settings::default(), None).expect("state");
        Target {
            agent: crate::agent_router(Arc::clone(&state)),
            human: crate::approval_router(Arc::clone(&state)),
            rt,
            state,
        }
    }

    /// One case: the first byte picks the route, the rest is the body. Panics (reports a bug)
    /// if a handler panics, answers 5xx, or answers an error without the JSON error body.
    pub fn run(&self, data: &[u8]) {
        let Some((&pick, body)) = data.split_first() else {
            return;
        };
        let (route, human) = ROUTES[usize::from(pick) % ROUTES.len()];
        let router = if human { &self.human } else { &self.agent };
        let mut req = Request::post(route)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body.to_vec()))
            .expect("request");
        req.extensions_mut().insert(ConnectInfo(Peer {
            uid: Some(0),
            pid: Some(1),
            exe: Some("fuzz".into()),
            mnt_ns: None,
            action: None,
        }));
        let resp = self
            .rt
            .block_on(router.clone().oneshot(req))
            .unwrap_or_else(|never| match never {});
        let status = resp.status();
        let bytes = self
            .rt
            .block_on(axum::body::to_bytes(resp.into_body(), 16 << 20))
            .expect("body");
        if route.starts_with("/config/") && status.as_u16() == 503 {
            return; // no config tree: refused after decoding, as documented
        }
        assert!(
            !status.is_server_error(),
            "{route} answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        );
        if status.is_client_error() {
            let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                panic!(
                    "{route} {status} without JSON: {}",
                    String::from_utf8_lossy(&bytes)
                )
            });
            assert!(v["error"].is_string(), "{route} {status}: {v}");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// Bodies real and hostile callers send.
    const BODIES: &[&str] = &[
        r#"{"type":"switch.committed","daemon":"osmoda-watch","payload":{"a":1}}"#,
        r#"{"type":"Approval.approved","daemon":"x","payload":{}}"#,
        r#"{"type":"a","daemon":"human","payload":{}}"#,
        r#"{"type":"a","daemon":"d","payload":{},"dedup":{"stream":"s","seq":18446744073709551615}}"#,
        r#"{"type":"a","daemon":"d","payload":{},"dedup":{"stream":"s/../x","seq":1}}"#,
        r#"{"name":"disk full"}"#,
        r#"{"action":"df -h","result":"full"}"#,
        r#"{"summary":"ok"}"#,
        r#"{"operation":{"kind":"service.remove","name":"nginx"},"detail":"why"}"#,
        r#"{"id":"00","operation":{}}"#,
        r#"{"query":"kernel"}"#,
        r#"{"query":"processes","args":{"limit":-1}}"#,
        r#"{"path":"services.nginx.enable","value":true,"reason":"r"}"#,
        r#"{"reason":"because"}"#,
        r#"[1e999999, -0, 1.5e-400]"#,
        r#""\ud800""#,
        "",
        "{",
        "null",
    ];

    #[test]
    fn bodies_and_their_mutations_never_break_a_handler() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::open(dir.path());
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for (i, _) in ROUTES.iter().enumerate() {
            for body in BODIES {
                let mut data = vec![i as u8];
                data.extend_from_slice(body.as_bytes());
                t.run(&data);
            }
        }
        let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
        t.run(&[0].iter().copied().chain(deep.bytes()).collect::<Vec<_>>());
        for _ in 0..600 {
            let body = BODIES[(next() as usize) % BODIES.len()].as_bytes();
            let mut data = vec![next() as u8];
            data.extend_from_slice(body);
            for _ in 0..(next() % 4) {
                if data.len() > 1 {
                    let at = 1 + (next() as usize) % (data.len() - 1);
                    data[at] = next() as u8;
                }
            }
            t.run(&data);
        }
    }
}
