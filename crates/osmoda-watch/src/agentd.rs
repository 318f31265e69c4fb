//! Everything osmoda-watch asks of agentd: ledger events (durably spooled by the `Reporter`),
//! incidents, and config edits through agentd's config API.

use std::path::Path;

use osmoda_client::{Client, Reporter};
use serde_json::{json, Value};

use crate::error::{Result, WatchError};

/// agentd, as seen from this daemon.
pub struct Agentd {
    client: Client,
    reporter: Reporter,
}

impl Agentd {
    /// Talks to agentd at `socket`; events wait in `spool_dir` until agentd acknowledges them.
    ///
    /// # Errors
    /// When the spool directory cannot be opened.
    pub fn open(socket: &Path, spool_dir: &Path) -> Result<Agentd> {
        let reporter = Reporter::open(socket, spool_dir, "osmoda-watch").map_err(|e| {
            WatchError::Agentd(format!(
                "cannot open the event spool {}: {e}",
                spool_dir.display()
            ))
        })?;
        Ok(Agentd {
            client: Client::new(socket).as_daemon("osmoda-watch"),
            reporter,
        })
    }

    /// Records an event in the ledger (spooled durably first; never lost, never fails the caller).
    pub async fn event(&self, kind: &str, payload: Value) {
        if let Err(e) = self.reporter.report(kind, payload).await {
            tracing::error!("cannot spool ledger event {kind}: {e}");
        }
    }

    /// Tries to deliver spooled events now; returns how many were delivered.
    ///
    /// # Errors
    /// When agentd cannot be reached.
    pub async fn flush(&self) -> Result<usize> {
        self.reporter
            .flush()
            .await
            .map_err(|e| WatchError::Agentd(e.to_string()))
    }

    /// Opens an incident with a first step holding `detail`; `None` when agentd is unreachable
    /// (the event recording the same fact is still spooled).
    pub async fn incident(&self, name: &str, detail: &str) -> Option<String> {
        let created = self
            .call("/incident/create", &json!({ "name": name }))
            .await;
        let id = match created {
            Ok(v) => v.get("id").map(|id| match id {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })?,
            Err(e) => {
                tracing::error!("cannot open incident {name:?}: {e}");
                return None;
            }
        };
        self.incident_step(&id, "osmoda-watch detected", detail)
            .await;
        Some(id)
    }

    /// Adds a step to an incident (logged, not fatal, when agentd is unreachable).
    pub async fn incident_step(&self, id: &str, action: &str, result: &str) {
        let body = json!({ "action": action, "result": result });
        if let Err(e) = self.call(&format!("/incident/{id}/step"), &body).await {
            tracing::error!("cannot add a step to incident {id}: {e}");
        }
    }

    /// Resolves an incident.
    ///
    /// # Errors
    /// When agentd refuses or is unreachable.
    pub async fn resolve_incident(&self, id: &str, summary: &str) -> Result<()> {
        self.call(
            &format!("/incident/{id}/resolve"),
            &json!({ "summary": summary }),
        )
        .await
        .map(drop)
    }

    /// Records a generation whose tree equals `rev`'s through agentd's config API
    /// (`POST /config/restore`), so the commit carries `Osmoda-Event`/`Osmoda-Actor`; `switch`
    /// titles it "Switch to generation …", otherwise "Revert to generation …". `reason`'s first
    /// line is the subject, the rest the body; `approval` is the ticket for a destructive one
    /// (agentd's gate judges it against the running generation). Returns the new commit.
    ///
    /// # Errors
    /// As [`Agentd::call`]: agentd unreachable, or its refusal (e.g. uncommitted hand edits).
    pub async fn restore(
        &self,
        rev: &str,
        reason: &str,
        switch: bool,
        approval: Option<&str>,
    ) -> Result<String> {
        let mut body = json!({
            "rev": rev,
            "reason": reason,
            "purpose": if switch { "switch" } else { "restore" },
        });
        if let Some(a) = approval {
            body["approval"] = json!(a);
        }
        let v = self.call("/config/restore", &body).await?;
        v.pointer("/generation/rev")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| WatchError::Agentd(format!("agentd answered without a generation: {v}")))
    }

    /// `POST path` with a JSON body, returning the JSON answer.
    ///
    /// # Errors
    /// `Agentd` when unreachable; `Refused` carrying agentd's status, `error` and `detail` when
    /// it answers with an error.
    pub async fn call(&self, path: &str, body: &Value) -> Result<Value> {
        let resp = self
            .client
            .post(path, body)
            .await
            .map_err(|e| WatchError::Agentd(format!("POST {path}: {e}")))?;
        if (200..300).contains(&resp.status) {
            return Ok(resp.body);
        }
        let error = match resp.body.get("error") {
            Some(Value::String(e)) => e.clone(),
            _ => resp.body.to_string(),
        };
        Err(WatchError::Refused {
            status: resp.status,
            message: format!("agentd refused POST {path}: {error}"),
            error,
            detail: resp.body.get("detail").cloned().unwrap_or(Value::Null),
        })
    }
}
