//! What osmoda-mesh asks of agentd and osmoda-watch: ledger events (metadata only, durably
//! spooled by the `Reporter`, so none is lost while agentd is down), and peer records written
//! into the config tree through agentd's config API (`/config/set`, `/config/unset`) and
//! applied with SafeSwitch (`/switch/begin`), the path `/routine/add` takes. Each call is one
//! attempt; `intents` makes them durable and retries them.

use std::path::Path;

use osmoda_client::{Client, Reporter};
use serde_json::{json, Value};

use crate::error::MeshError;

/// agentd and osmoda-watch as seen from mesh.
pub struct Agentd {
    client: Client,
    watch: Client,
    reporter: Reporter,
}

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

    /// agentd's socket.
    pub fn socket(&self) -> &Path {
        self.client.socket()
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
    /// No answer or a 5xx is [`MeshError::Unavailable`] (try again); a refusal is not.
    async fn call(c: &Client, who: &str, path: &str, body: &Value) -> Result<Value, MeshError> {
        let r = c.post(path, body).await.map_err(|e| {
            tracing::warn!(socket = %c.socket().display(), "POST {path}: {e}");
            MeshError::Unavailable(format!(
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
            s if s >= 500 => Err(MeshError::Unavailable(format!(
                "{who} failed POST {path} with {s}: {}",
                said(&r.body)
            ))),
            s => Err(MeshError::Agentd(format!(
                "{who} answered POST {path} with {s}: {}",
                said(&r.body)
            ))),
        }
    }

    /// Writes peer `name` (`endpoint`, `keys`) into the config tree: one commit, message
    /// `reason`. A tree that already holds exactly this record (a retry after a crash) answers
    /// `{"unchanged": true}`.
    ///
    /// # Errors
    /// `Unavailable` when agentd did not answer (try again), else agentd's refusal.
    pub async fn set_peer(
        &self,
        name: &str,
        endpoint: &str,
        keys: &crate::identity::PublicKeys,
        reason: &str,
    ) -> Result<Value, MeshError> {
        let value = json!({
            "endpoint": endpoint,
            "publicKeys": { "ed25519": keys.ed25519, "x25519": keys.x25519, "mlKem768": keys.ml_kem_768 },
        });
        let body = json!({ "path": peer_path(name), "value": value, "reason": reason });
        match Self::call(&self.client, "agentd", "/config/set", &body).await {
            Err(MeshError::Conflict(why)) if why.contains(NO_CHANGE) => {
                Ok(json!({ "unchanged": true, "path": peer_path(name) }))
            }
            Ok(edit) if osmoda_config::tree_edit::landed_rev(&edit).is_none() => {
                Err(MeshError::Agentd(format!(
                    "agentd's config API answered without a rev: {edit}"
                )))
            }
            other => other,
        }
    }

    /// Begins a SafeSwitch of the tree's `HEAD` (not a rev: a switch to a rev that is no
    /// longer `HEAD` would undo what others committed since).
    ///
    /// # Errors
    /// `Conflict` while another switch runs, `Unavailable` when watch did not answer.
    pub async fn begin_switch(&self, plan: &str) -> Result<Value, MeshError> {
        let body = json!({ "plan": plan, "health_checks": [] });
        Self::call(&self.watch, "osmoda-watch", "/switch/begin", &body).await
    }

    /// Removes peer `name` from the config tree (one commit); agentd's gate answers that a
    /// person must approve (`mesh.peer.remove` is destructive) unless `approval` names a ticket
    /// a person approved for exactly this removal.
    ///
    /// # Errors
    /// `ApprovalRequired` with agentd's ticket; otherwise as [`Agentd::set_peer`].
    pub async fn unset_peer(
        &self,
        name: &str,
        reason: &str,
        approval: Option<&str>,
    ) -> Result<Value, MeshError> {
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
        Ok(edit)
    }
}

/// How agentd refuses an edit that changes nothing (`GenError::NoChange`).
const NO_CHANGE: &str = "left every file as it was";
