//! A small agentd-like HTTP server on a Unix socket: `POST /events/append` with (stream, seq)
//! dedup, plus knobs to refuse or to drop acknowledgements.

#![allow(dead_code)]

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;

#[derive(Default)]
pub struct Recorded {
    /// New (non-duplicate) events in arrival order.
    pub events: Vec<Value>,
    /// (stream, seq) -> index in `events`.
    pub keys: HashMap<(String, u64), usize>,
    /// Requests that hit an existing key.
    pub duplicates: usize,
    /// Requests answered 500 after recording (lost acknowledgements).
    pub dropped_acks: usize,
}

pub struct AppendServer {
    pub recorded: Arc<Mutex<Recorded>>,
    pub arrivals: mpsc::UnboundedReceiver<Value>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AppendServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct AppState {
    recorded: Arc<Mutex<Recorded>>,
    arrivals: mpsc::UnboundedSender<Value>,
    drop_ack_every: usize,
}

async fn append(State(st): State<AppState>, Json(body): Json<Value>) -> (StatusCode, Json<Value>) {
    if body["payload"]["malformed"] == json!(true) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "payload is malformed", "detail": null})),
        );
    }
    let (Some(stream), Some(seq)) = (
        body["dedup"]["stream"].as_str(),
        body["dedup"]["seq"].as_u64(),
    ) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "missing dedup"})),
        );
    };
    let mut rec = st
        .recorded
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let key = (stream.to_owned(), seq);
    if let Some(&idx) = rec.keys.get(&key) {
        rec.duplicates += 1;
        return (
            StatusCode::OK,
            Json(json!({"id": idx + 1, "duplicate": true})),
        );
    }
    rec.events.push(body.clone());
    let idx = rec.events.len() - 1;
    rec.keys.insert(key, idx);
    let _ = st.arrivals.send(body);
    if st.drop_ack_every > 0 && rec.events.len() % st.drop_ack_every == 0 {
        rec.dropped_acks += 1;
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "ack lost (test)"})),
        );
    }
    (StatusCode::OK, Json(json!({"id": idx + 1})))
}

/// Binds `socket` and serves until dropped. With `drop_ack_every = n > 0`, every n-th new event
/// is recorded but answered 500, as if the acknowledgement got lost.
pub fn serve_append(socket: &Path, drop_ack_every: usize) -> anyhow::Result<AppendServer> {
    let _ = std::fs::remove_file(socket);
    let listener = tokio::net::UnixListener::bind(socket)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let recorded = Arc::new(Mutex::new(Recorded::default()));
    let state = AppState {
        recorded: Arc::clone(&recorded),
        arrivals: tx,
        drop_ack_every,
    };
    let app = Router::new()
        .route("/events/append", post(append))
        .with_state(state);
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(AppendServer {
        recorded,
        arrivals: rx,
        task,
    })
}

impl AppendServer {
    /// Waits (bounded) for the next newly recorded event.
    pub async fn next_arrival(&mut self) -> anyhow::Result<Value> {
        match tokio::time::timeout(std::time::Duration::from_secs(20), self.arrivals.recv()).await {
            Ok(Some(v)) => Ok(v),
            Ok(None) => anyhow::bail!("server stopped"),
            Err(_) => anyhow::bail!("no event arrived within 20 s"),
        }
    }

    pub fn with<T>(&self, f: impl FnOnce(&Recorded) -> T) -> T {
        f(&self
            .recorded
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}
