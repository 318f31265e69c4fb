//! Delivers the receipts waiting in the state database's outbox (written in the same
//! transaction as their charge, `store::Store::charge`) to agentd's ledger, oldest first, each
//! with the dedup key `(outbox stream, receipt id)`: a delivery repeated after a lost answer or
//! a crash is recorded once. A receipt leaves the outbox only after agentd accepted it; one
//! agentd will never accept (400, 413, 415, 422) moves to `outbox_rejected` and a small
//! `receipt.wallet.rejected` naming its signature takes its place (receipts' strings are
//! bounded, so this is a fault, not something a caller can cause); any other failure
//! waits and retries the same receipt, so the order holds. Receipts survive agentd being down
//! and keyd restarting.

use std::sync::Arc;
use std::time::Duration;

use osmoda_client::Client;
use serde_json::{json, Value};

use crate::store::Store;

/// Receipts read and delivered per pass.
const BATCH: usize = 256;
/// First wait after a failed delivery; doubles up to [`MAX_BACKOFF`].
const INITIAL_BACKOFF: Duration = Duration::from_millis(100);
/// Longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

fn permanent(status: u16) -> bool {
    matches!(status, 400 | 413 | 415 | 422)
}

/// One pass: delivers what is waiting, in order; returns how many were delivered.
///
/// # Errors
/// The first failure that is worth retrying (agentd unreachable, 5xx, ...); what was
/// delivered before it is forgotten, the rest stays.
pub async fn deliver(store: &Arc<Store>, agentd: &Client, stream: &str) -> Result<usize, String> {
    let mut total = 0;
    loop {
        let s = Arc::clone(store);
        let rows = tokio::task::spawn_blocking(move || s.outbox(BATCH))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if rows.is_empty() {
            return Ok(total);
        }
        let mut done = Vec::with_capacity(rows.len());
        let mut failure = None;
        for (id, kind, payload) in &rows {
            let payload: Value = serde_json::from_str(payload).unwrap_or(Value::Null);
            let body = json!({
                "type": format!("receipt.{kind}"), "daemon": "osmoda-keyd", "payload": payload,
                "dedup": { "stream": stream, "seq": id },
            });
            // agentd refuses a body over its 1 MiB limit (413) and may close the connection
            // while the body is still being written, so its answer would race a write error:
            // such a receipt is refused here, as agentd would, without sending it.
            let size = body.to_string().len();
            let answer = if size > osmoda_client::MAX_PAYLOAD_BYTES {
                Ok(osmoda_client::Response {
                    status: 413,
                    body: json!({
                        "error": format!(
                            "the receipt is {size} bytes, agentd's limit is {} (not sent)",
                            osmoda_client::MAX_PAYLOAD_BYTES
                        )
                    }),
                })
            } else {
                agentd.post("/events/append", &body).await
            };
            match answer {
                Ok(r) if r.is_success() => done.push(*id),
                Ok(r) if permanent(r.status) => {
                    tracing::error!(id, status = r.status, body = %r.body, "agentd refused a receipt; moved to outbox_rejected");
                    let (s, why, id) = (
                        Arc::clone(store),
                        format!("HTTP {}: {}", r.status, r.body),
                        *id,
                    );
                    // A stand-in for a refused stand-in would loop: that one is only kept.
                    let stand_in = (kind != "wallet.rejected")
                        .then(|| crate::agentd::stand_in(id, kind, &payload, &why));
                    tokio::task::spawn_blocking(move || {
                        s.outbox_reject(id, &why, stand_in.as_ref())
                    })
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                }
                Ok(r) => {
                    failure = Some(format!("agentd answered {}: {}", r.status, r.body));
                    break;
                }
                Err(e) => {
                    failure = Some(e.to_string());
                    break;
                }
            }
        }
        total += done.len();
        let s = Arc::clone(store);
        tokio::task::spawn_blocking(move || s.outbox_delivered(&done))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        if let Some(f) = failure {
            return Err(f);
        }
    }
}

/// Runs until the task is dropped: delivers after every commit, backs off while delivery
/// fails.
pub async fn run(store: Arc<Store>, agentd: Client) {
    let stream = loop {
        let s = Arc::clone(&store);
        match tokio::task::spawn_blocking(move || s.outbox_stream()).await {
            Ok(Ok(stream)) => break stream,
            other => {
                tracing::error!("cannot read the outbox stream id: {other:?}");
                tokio::time::sleep(MAX_BACKOFF).await;
            }
        }
    };
    let wake = store.committed();
    let mut backoff = INITIAL_BACKOFF;
    let mut failing = false;
    loop {
        let woken = wake.notified();
        match deliver(&store, &agentd, &stream).await {
            Ok(_) => {
                if failing {
                    tracing::info!("receipt delivery to agentd resumed");
                }
                failing = false;
                backoff = INITIAL_BACKOFF;
                woken.await;
            }
            Err(e) => {
                if !failing {
                    tracing::warn!("receipt delivery to agentd failed ({e}); receipts stay in the outbox and are retried");
                }
                failing = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
