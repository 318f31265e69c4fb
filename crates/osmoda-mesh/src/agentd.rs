//! What osmoda-mesh asks of agentd and osmoda-watch: ledger events (metadata only, durably
//! spooled by the `Reporter`, so none is lost while agentd is down), and peer records written
//! into the config tree through agentd's config API (`/config/set`) and applied with
//! SafeSwitch (`/switch/begin`), the path `/routine/add` takes.

use std::path::Path;

use osmoda_client::{Client, Reporter};
use serde_json::{json, Value};

use crate::error::MeshError;
use crate::identity::Keys;

/// agentd and osmoda-watch as seen from mesh.
pub struct Agentd {
    client: Client,
    watch: Client,
    reporter: Reporter,
}

/// How long a queued switch waits for a running one to end (a switch runs for its TTL).
pub const QUEUE_FOR: std::time::Duration = std::time::Duration::from_secs(1800);

/// The option path of peer `name`.
pub fn peer_path(name: &str) -> String {
    format!("services.osmoda.mesh.peers.{name}")
}

impl Agentd {
    /// Talks to agentd at `socket` and watch at `watch`; events wait in `spool_dir`.
    ///
    /// # Errors
    /// `Internal` when the spool cannot be opened.
    pub fn open(socket: &Path, watch: &Path, spool_dir: &Path) -> Result<Agentd, MeshError> {
        let reporter = Reporter::open(socket, spool_dir, "osmoda-mesh").map_err(|e| {
            MeshError::Internal(format!(
                "cannot open the event spool {}: {e}",
                spool_dir.display()
            ))
        })?;
        Ok(Agentd {
            client: Client::new(socket).as_daemon("osmoda-mesh"),
            watch: Client::new(watch),
            reporter,
        })
    }

    /// Records `mesh.<kind>` (spooled first; never fails the caller).
    pub async fn event(&self, kind: &str, payload: Value) {
        if let Err(e) = self.reporter.report(&format!("mesh.{kind}"), payload).await {
            tracing::error!("cannot spool event mesh.{kind}: {e}");
        }
    }

    /// Delivers spooled events now; returns how many.
    ///
    /// # Errors
    /// When agentd cannot be reached.
    pub async fn flush(&self) -> Result<usize, MeshError> {
        self.reporter
            .flush()
            .await
            .map_err(|e| MeshError::Agentd(e.to_string()))
    }

    /// POSTs `body` to `who` (`agentd`, `osmoda-watch`: named, never by its socket's path).
    async fn call(c: &Client, who: &str, path: &str, body: &Value) -> Result<Value, MeshError> {
        let r = c.post(path, body).await.map_err(|e| {
            tracing::warn!(socket = %c.socket().display(), "POST {path}: {e}");
            MeshError::Agentd(format!(
                "{who} did not answer POST {path} (is it running? `systemctl status osmoda-{}`)",
                who.trim_start_matches("osmoda-")
            ))
        })?;
        let said = |b: &Value| {
            b["error"]
                .as_str()
                .map_or_else(|| b.to_string(), str::to_string)
        };
        match r.status {
            200..=299 => Ok(r.body),
            // The gate's refusal keeps its status and ticket, so the caller can ask a person.
            403 if r.body["detail"]["ticket"].is_string() => Err(MeshError::ApprovalRequired {
                message: format!(
                    "{who} refused POST {path}: {}",
                    r.body["error"].as_str().unwrap_or("approval required")
                ),
                detail: r.body["detail"].clone(),
            }),
            409 => Err(MeshError::Conflict(format!(
                "{who} refused POST {path} (409): {}",
                said(&r.body)
            ))),
            s => Err(MeshError::Agentd(format!(
                "{who} answered POST {path} with {s}: {}",
                said(&r.body)
            ))),
        }
    }

    /// Writes peer `name` (`endpoint`, `keys`) into the config tree (one commit, message
    /// `reason`) and starts a SafeSwitch to that generation. Returns (agentd's answer, watch's).
    ///
    /// # Errors
    /// `Agentd`/`Conflict` with their answer; nothing is switched when the edit failed.
    pub async fn record_peer(
        &self,
        name: &str,
        endpoint: &str,
        keys: &Keys,
        reason: &str,
    ) -> Result<(Value, Value), MeshError> {
        let k = keys.encode();
        let value = json!({
            "endpoint": endpoint,
            "publicKeys": { "ed25519": k.ed25519, "x25519": k.x25519, "mlKem768": k.ml_kem_768 },
        });
        let edit = Self::call(
            &self.client,
            "agentd",
            "/config/set",
            &json!({ "path": peer_path(name), "value": value, "reason": reason }),
        )
        .await?;
        if osmoda_config::tree_edit::landed_rev(&edit).is_none() {
            return Err(MeshError::Agentd(format!(
                "agentd's config API answered without a rev: {edit}"
            )));
        }
        Ok((edit, self.apply(reason).await?))
    }

    /// Applies the tree's `HEAD` (which holds the change just committed) with SafeSwitch and
    /// returns watch's answer. `HEAD`, not the commit's own rev: a switch to a rev that is no
    /// longer `HEAD` would be a restore that undoes what others committed since. While another
    /// switch runs (watch answers 409; a pairing right after another one, inside its TTL), the
    /// switch is queued: a task begins it as soon as watch takes one (every second, for at most
    /// [`QUEUE_FOR`]), and the answer is `{"state": "queued", "id": null, "detail"}`.
    ///
    /// # Errors
    /// `Agentd` when watch cannot be reached or refuses otherwise.
    async fn apply(&self, reason: &str) -> Result<Value, MeshError> {
        let body = json!({ "plan": reason, "health_checks": [] });
        match Self::call(&self.watch, "osmoda-watch", "/switch/begin", &body).await {
            Err(MeshError::Conflict(why)) => {
                let watch = self.watch.clone();
                tokio::spawn(async move {
                    let until = tokio::time::Instant::now() + QUEUE_FOR;
                    while tokio::time::Instant::now() < until {
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        match Self::call(&watch, "osmoda-watch", "/switch/begin", &body).await {
                            Err(MeshError::Conflict(_)) => continue,
                            Ok(s) => return tracing::info!("queued switch began: {s}"),
                            Err(e) => return tracing::error!("queued switch refused: {e}"),
                        }
                    }
                    tracing::error!("queued switch: another switch ran for {QUEUE_FOR:?}; the change is committed, apply it with a switch");
                });
                Ok(json!({
                    "state": "queued",
                    "id": null,
                    "detail": format!("another switch is running ({why}); this change is committed and is applied by a switch of HEAD as soon as that one ends"),
                }))
            }
            other => other,
        }
    }

    /// Removes peer `name` from the config tree and switches; agentd's gate answers that a
    /// person must approve (`mesh.peer.remove` is destructive) unless `approval` names a ticket
    /// a person approved for exactly this removal.
    ///
    /// # Errors
    /// `ApprovalRequired` with agentd's ticket; otherwise as [`Agentd::record_peer`].
    pub async fn remove_peer(
        &self,
        name: &str,
        reason: &str,
        approval: Option<&str>,
    ) -> Result<(Value, Value), MeshError> {
        let mut body = json!({ "path": peer_path(name), "reason": reason });
        if let Some(a) = approval {
            body["approval"] = json!(a);
        }
        let edit = Self::call(&self.client, "agentd", "/config/unset", &body).await?;
        if osmoda_config::tree_edit::landed_rev(&edit).is_none() {
            return Err(MeshError::Agentd(format!(
                "agentd's config API answered without a rev: {edit}"
            )));
        }
        Ok((edit, self.apply(reason).await?))
    }
}
