//! What keyd asks of agentd: receipts in the ledger (durably spooled by the `Reporter`, so none
//! is lost while agentd is down) and approval tickets (`/daemon/ticket/open|consume`, which
//! agentd serves only to keyd's uid).

use std::path::Path;

use osmoda_client::{Client, Reporter};
use serde_json::{json, Value};

use crate::error::KeydError;

/// agentd as seen from keyd.
pub struct Agentd {
    client: Client,
    reporter: Reporter,
}

impl Agentd {
    /// Talks to agentd at `socket`; receipts wait in `spool_dir` until agentd has them.
    ///
    /// # Errors
    /// `Internal` when the spool cannot be opened.
    pub fn open(socket: &Path, spool_dir: &Path) -> Result<Agentd, KeydError> {
        let reporter = Reporter::open(socket, spool_dir, "osmoda-keyd").map_err(|e| {
            KeydError::Internal(format!(
                "cannot open the receipt spool {}: {e}",
                spool_dir.display()
            ))
        })?;
        Ok(Agentd {
            client: Client::new(socket).as_daemon("osmoda-keyd"),
            reporter,
        })
    }

    /// The client keyd talks to agentd with (as `osmoda-keyd`).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Records `receipt.<kind>` (spooled first; never fails the caller). Strings are
    /// [`bounded`].
    pub async fn receipt(&self, kind: &str, payload: Value) {
        if let Err(e) = self
            .reporter
            .report(&format!("receipt.{kind}"), bounded(payload))
            .await
        {
            tracing::error!("cannot spool receipt {kind}: {e}");
        }
    }

    /// Delivers spooled receipts now; returns how many.
    ///
    /// # Errors
    /// When agentd cannot be reached.
    pub async fn flush(&self) -> Result<usize, KeydError> {
        self.reporter
            .flush()
            .await
            .map_err(|e| KeydError::Agentd(e.to_string()))
    }

    /// Asks agentd to open (or return the open) ticket for `operation`; `effect` is what the
    /// person is shown.
    ///
    /// # Errors
    /// `Agentd` when unreachable, `Ticket` when agentd refuses.
    pub async fn open_ticket(
        &self,
        operation: &Value,
        effect: &[String],
    ) -> Result<Value, KeydError> {
        self.call(
            "/daemon/ticket/open",
            &json!({ "operation": operation, "effect": effect }),
        )
        .await
    }

    /// Has agentd consume ticket `id` for exactly `operation` (once, approved, unexpired).
    ///
    /// # Errors
    /// `Ticket` with agentd's status and message when it refuses.
    pub async fn consume_ticket(&self, id: &str, operation: &Value) -> Result<(), KeydError> {
        self.call(
            "/daemon/ticket/consume",
            &json!({ "id": id, "operation": operation }),
        )
        .await
        .map(drop)
    }

    async fn call(&self, path: &str, body: &Value) -> Result<Value, KeydError> {
        let resp = self
            .client
            .post(path, body)
            .await
            .map_err(|e| KeydError::Agentd(format!("agentd POST {path}: {e}")))?;
        match resp.status {
            200..=299 => Ok(resp.body),
            s @ 400..=499 => Err(KeydError::Ticket {
                status: s,
                message: resp
                    .body
                    .get("error")
                    .and_then(Value::as_str)
                    .map_or_else(|| resp.body.to_string(), str::to_string),
            }),
            s => Err(KeydError::Agentd(format!(
                "agentd POST {path} answered {s}: {}",
                resp.body
            ))),
        }
    }
}

/// Longest string kept whole in a receipt, in bytes. keyd's own values (addresses, hashes,
/// signatures, error texts) are far shorter; a longer string can only come from a caller.
pub const MAX_RECEIPT_STRING: usize = 1024;

/// `v` with every string longer than [`MAX_RECEIPT_STRING`] bytes cut at a character boundary
/// and marked `…[truncated, N bytes]`, so that a receipt always fits agentd's body limit
/// (receipts have a fixed set of fields; only their strings come from callers).
pub fn bounded(v: Value) -> Value {
    match v {
        Value::String(s) if s.len() > MAX_RECEIPT_STRING => {
            let mut cut = MAX_RECEIPT_STRING;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            Value::String(format!("{}…[truncated, {} bytes]", &s[..cut], s.len()))
        }
        Value::Array(a) => Value::Array(a.into_iter().map(bounded).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, bounded(v))).collect()),
        other => other,
    }
}

/// The stand-in recorded (`receipt.wallet.rejected`) when agentd refuses receipt `id` for
/// good: what identifies the signature, so that the ledger has an event for every one. The
/// refused receipt stays in keyd's `outbox_rejected`.
pub fn stand_in(id: i64, kind: &str, payload: &Value, why: &str) -> Value {
    let mut keep = serde_json::Map::new();
    for k in [
        "wallet_id",
        "chain",
        "from",
        "kind",
        "to",
        "amount",
        "token",
        "chain_id",
        "tx_hash",
        "digest",
        "signature",
        "caller",
    ] {
        if let Some(v) = payload.get(k) {
            keep.insert(k.into(), v.clone());
        }
    }
    bounded(json!({
        "outbox_id": id, "receipt": format!("receipt.{kind}"), "refused": why,
        "summary": keep,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_strings_are_cut_at_a_char_boundary_everywhere() {
        let long = "é".repeat(MAX_RECEIPT_STRING); // 2 bytes each
        let v = bounded(json!({ "a": long, "b": [long.clone()], "c": { "d": "short" }, "n": 5 }));
        for s in [&v["a"], &v["b"][0]] {
            let s = s.as_str().unwrap();
            assert!(s.len() < MAX_RECEIPT_STRING + 40, "{}", s.len());
            assert!(s.ends_with(&format!("…[truncated, {} bytes]", 2 * MAX_RECEIPT_STRING)));
        }
        assert_eq!(
            (v["c"]["d"].as_str(), v["n"].as_i64()),
            (Some("short"), Some(5))
        );
        let exact = "x".repeat(MAX_RECEIPT_STRING);
        assert_eq!(bounded(json!(exact.clone())), json!(exact));
    }
}
