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

    /// Records `receipt.<kind>` (spooled first; never fails the caller).
    pub async fn receipt(&self, kind: &str, payload: Value) {
        if let Err(e) = self
            .reporter
            .report(&format!("receipt.{kind}"), payload)
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
