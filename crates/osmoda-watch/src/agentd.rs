//! Everything osmoda-watch asks of agentd: ledger events (durably spooled by the `Reporter`),
//! incidents, and config edits through agentd's config API.
//!
//! What watch does because of a request marked with an action label (`X-Osmoda-Action`, e.g. a
//! routine's run) carries that label: its own events keep watch's standing and name the action
//! (`Reporter::report_for`), and its calls to agentd are marked like the request (made for the
//! action, so without watch's name), so every event agentd records for them names it too.

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

    /// Records in the ledger what the event spool set aside when it was opened (an unreadable
    /// stream id or counter; a new stream began), if anything.
    pub async fn record_spool_set_aside(&self) {
        if let Some(note) = self.reporter.set_aside_at_open().map(str::to_owned) {
            self.event("watch.spool.set-aside", json!({ "note": note }))
                .await;
        }
    }

    /// Records an event in the ledger (spooled durably first; never lost, never fails the caller).
    pub async fn event(&self, kind: &str, payload: Value) {
        self.event_for(kind, payload, None).await;
    }

    /// [`Agentd::event`] for an event recorded because of a request made for the action
    /// `action` (its label is recorded in the event's actor).
    pub async fn event_for(&self, kind: &str, payload: Value, action: Option<&str>) {
        if let Err(e) = self.reporter.report_for(kind, payload, action).await {
            tracing::error!("cannot spool ledger event {kind}: {e}");
        }
    }

    /// The client for a call made because of a request marked `action`: marked like it, and
    /// so without watch's name (agentd gives a marked request none of a daemon's standing).
    fn client_for(&self, action: Option<&str>) -> Client {
        match action {
            Some(a) => Client::new(self.client.socket()).for_action(a),
            None => self.client.clone(),
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

    /// Opens an incident with a first step holding `detail` (marked with `action`, the label of
    /// the request that caused it); `None` when agentd is unreachable (the event recording the
    /// same fact is still spooled).
    pub async fn incident(&self, name: &str, detail: &str, action: Option<&str>) -> Option<String> {
        let created = self
            .call_for(action, "/incident/create", &json!({ "name": name }))
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
        let body = json!({ "action": "osmoda-watch detected", "result": detail });
        if let Err(e) = self
            .call_for(action, &format!("/incident/{id}/step"), &body)
            .await
        {
            tracing::error!("cannot add a step to incident {id}: {e}");
        }
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
    /// (agentd's gate judges it against the running generation); `action` the label of the
    /// request that caused it. Returns the new commit.
    ///
    /// # Errors
    /// As [`Agentd::call`]: agentd unreachable, or its refusal (e.g. uncommitted hand edits).
    pub async fn restore(
        &self,
        rev: &str,
        reason: &str,
        switch: bool,
        approval: Option<&str>,
        action: Option<&str>,
    ) -> Result<String> {
        let mut body = json!({
            "rev": rev,
            "reason": reason,
            "purpose": if switch { "switch" } else { "restore" },
        });
        if let Some(a) = approval {
            body["approval"] = json!(a);
        }
        let v = self.call_for(action, "/config/restore", &body).await?;
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
        self.call_for(None, path, body).await
    }

    /// [`Agentd::call`] for a request marked with the action label `action`.
    ///
    /// # Errors
    /// As [`Agentd::call`].
    pub async fn call_for(&self, action: Option<&str>, path: &str, body: &Value) -> Result<Value> {
        let resp = self
            .client_for(action)
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
