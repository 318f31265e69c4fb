//! [`Reporter`]: durable, ordered, exactly-once delivery of a daemon's events to agentd.
//!
//! `report` returns once the event is fsync'ed in the spool. A background task posts spooled
//! events to `POST /events/append` in sequence order, deletes each file only after a 2xx, and on
//! any other failure stops and retries the same event with exponential backoff. agentd
//! deduplicates on (stream, seq), so a retry after a lost acknowledgement records nothing twice.
//! For the same reason deleting a delivered file needs no directory fsync: a file that reappears
//! after a crash is delivered again and deduplicated. Only `400`, `413`, `415` and `422` count as
//! "this event will never be accepted" and move the file to `rejected/`; every other failure
//! (connect error, timeout, 5xx, 401/403/404/429...) keeps the queue waiting, because the next
//! try may succeed and skipping an event would break the order.

use crate::spool::Spool;
use crate::{Client, ClientError};
use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Largest payload accepted by `report`, matching agentd's ledger limit.
pub const MAX_PAYLOAD_BYTES: usize = 1024 * 1024;

/// How long the delivery task waits before retrying after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// First wait after a failure.
    pub initial: Duration,
    /// Upper bound; the wait doubles after each consecutive failure until it reaches this.
    pub max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

/// Statuses that mean "this event is malformed and will never be accepted": such an event is
/// moved to `rejected/` instead of blocking the queue. Anything else is retried.
fn is_permanent_rejection(status: u16) -> bool {
    matches!(status, 400 | 413 | 415 | 422)
}

struct Inner {
    client: Client,
    spool: Spool,
    daemon: String,
    wake: tokio::sync::Notify,
    delivering: tokio::sync::Mutex<()>,
    retry: RetryPolicy,
}

/// Reports events to agentd through a durable on-disk spool. Dropping it stops delivery; events
/// still pending stay in the spool and are delivered by the next reporter opened on it.
pub struct Reporter {
    inner: Arc<Inner>,
    task: tokio::task::JoinHandle<()>,
    _lock: Flock<File>,
}

impl std::fmt::Debug for Reporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reporter")
            .field("spool", &self.inner.spool.dir())
            .field("stream", &self.inner.spool.stream())
            .finish_non_exhaustive()
    }
}

impl Drop for Reporter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Same rules as the ledger's labels: 1-128 bytes, no `|`, no control characters.
fn check_label(what: &str, s: &str) -> Result<(), ClientError> {
    let problem = if s.is_empty() {
        "is empty"
    } else if s.len() > 128 {
        "is longer than 128 bytes"
    } else if s.contains('|') {
        "contains '|'"
    } else if s.chars().any(char::is_control) {
        "contains a control character"
    } else {
        return Ok(());
    };
    Err(ClientError::InvalidEvent(format!(
        "{what} {s:?} {problem}; use 1-128 bytes without '|' or control characters"
    )))
}

impl Reporter {
    /// Opens (creating if needed) the spool in `spool_dir` and starts delivering to the agentd
    /// listening on `agentd_socket`. Must be called inside a tokio runtime.
    ///
    /// # Errors
    /// [`ClientError::InvalidEvent`] for a bad daemon name, [`ClientError::SpoolLocked`] if another
    /// reporter uses the directory, [`ClientError::Spool`]/[`ClientError::SpoolCorrupt`] for
    /// filesystem problems, [`ClientError::NoRuntime`] outside tokio.
    pub fn open(
        agentd_socket: impl Into<PathBuf>,
        spool_dir: &Path,
        daemon_name: &str,
    ) -> Result<Reporter, ClientError> {
        Self::open_with(
            Client::new(agentd_socket),
            spool_dir,
            daemon_name,
            RetryPolicy::default(),
        )
    }

    /// Like [`Reporter::open`] with an explicit client and retry policy.
    ///
    /// # Errors
    /// As [`Reporter::open`].
    pub fn open_with(
        client: Client,
        spool_dir: &Path,
        daemon_name: &str,
        retry: RetryPolicy,
    ) -> Result<Reporter, ClientError> {
        check_label("daemon name", daemon_name)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| ClientError::NoRuntime)?;
        std::fs::create_dir_all(spool_dir)
            .map_err(|e| ClientError::spool(format!("creating {}", spool_dir.display()), e))?;
        let lock_file = File::create(spool_dir.join(".lock")).map_err(|e| {
            ClientError::spool(format!("creating {}/.lock", spool_dir.display()), e)
        })?;
        let lock = Flock::lock(lock_file, FlockArg::LockExclusiveNonblock).map_err(|_| {
            ClientError::SpoolLocked {
                dir: spool_dir.to_owned(),
            }
        })?;
        let spool = Spool::open(spool_dir)?;
        let inner = Arc::new(Inner {
            client,
            spool,
            daemon: daemon_name.to_owned(),
            wake: tokio::sync::Notify::new(),
            delivering: tokio::sync::Mutex::new(()),
            retry,
        });
        let task = runtime.spawn(deliver_forever(Arc::clone(&inner)));
        Ok(Reporter {
            inner,
            task,
            _lock: lock,
        })
    }

    /// What was set aside when the spool was opened (an unreadable stream id or counter, kept
    /// in `rejected/`; a new stream began), for the daemon to record.
    pub fn set_aside_at_open(&self) -> Option<&str> {
        self.inner.spool.set_aside()
    }

    /// The random stream id used in this spool's dedup keys.
    pub fn stream(&self) -> &str {
        self.inner.spool.stream()
    }

    /// Durably spools one event; delivery happens in the background, in order.
    ///
    /// # Errors
    /// [`ClientError::InvalidEvent`] for a bad type or an oversized payload (nothing spooled);
    /// [`ClientError::Spool`] if it could not be written durably (nothing spooled).
    pub async fn report(&self, kind: &str, payload: Value) -> Result<(), ClientError> {
        self.report_for(kind, payload, None).await
    }

    /// Like [`Reporter::report`], for an event recorded because of a request marked with the
    /// action label `action` (its [`crate::ACTION_HEADER`]): agentd records the label in the
    /// event's actor (`<daemon>[action=<label>,uid=..,..]`) while the daemon keeps its standing,
    /// so whoever traces events to the action that caused them (osmoda-routines' loop guard)
    /// finds it.
    ///
    /// # Errors
    /// As [`Reporter::report`]; [`ClientError::InvalidEvent`] for an invalid label.
    pub async fn report_for(
        &self,
        kind: &str,
        payload: Value,
        action: Option<&str>,
    ) -> Result<(), ClientError> {
        check_label("event type", kind)?;
        if let Some(a) = action.filter(|a| !crate::valid_action_label(a)) {
            return Err(ClientError::InvalidEvent(format!(
                "action label {a:?} is not 1-40 characters of [a-z0-9._-]"
            )));
        }
        let size = serde_json::to_vec(&payload)
            .map(|v| v.len())
            .unwrap_or(usize::MAX);
        if size > MAX_PAYLOAD_BYTES {
            return Err(ClientError::InvalidEvent(format!(
                "payload is {size} bytes, the limit is {MAX_PAYLOAD_BYTES}"
            )));
        }
        let inner = Arc::clone(&self.inner);
        let kind = kind.to_owned();
        let action = action.map(str::to_owned);
        tokio::task::spawn_blocking(move || {
            inner
                .spool
                .append(&inner.daemon, &kind, &payload, action.as_deref())
        })
        .await
        .map_err(|e| {
            ClientError::spool("spool writer task", std::io::Error::other(e.to_string()))
        })??;
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Delivers everything pending now, in order, and returns how many events were delivered.
    ///
    /// # Errors
    /// The failure that stopped delivery (e.g. [`ClientError::Connect`] while agentd is down);
    /// the undelivered events stay spooled.
    pub async fn flush(&self) -> Result<usize, ClientError> {
        deliver_pending(&self.inner).await
    }

    /// Number of events waiting in the spool.
    ///
    /// # Errors
    /// [`ClientError::Spool`] if the spool directory cannot be listed.
    pub fn pending(&self) -> Result<usize, ClientError> {
        Ok(self.inner.spool.list()?.len())
    }
}

/// The background task: deliver whenever woken, back off while delivery fails.
async fn deliver_forever(inner: Arc<Inner>) {
    let mut backoff = inner.retry.initial;
    let mut failing = false;
    loop {
        match deliver_pending(&inner).await {
            Ok(n) => {
                if failing {
                    tracing::info!(delivered = n, "event delivery to agentd resumed");
                }
                failing = false;
                backoff = inner.retry.initial;
                inner.wake.notified().await;
            }
            Err(e) => {
                if failing {
                    tracing::debug!(error = %e, "event delivery still failing; retrying");
                } else {
                    tracing::warn!(error = %e, "event delivery to agentd failed; events stay spooled and are retried");
                }
                failing = true;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(inner.retry.max);
            }
        }
    }
}

/// One pass over the spool in sequence order; stops at the first event that is not accepted.
async fn deliver_pending(inner: &Inner) -> Result<usize, ClientError> {
    let _only_one_deliverer = inner.delivering.lock().await;
    let mut delivered = 0;
    for (seq, path) in inner.spool.list()? {
        let body = match tokio::fs::read(&path).await {
            Ok(bytes) => serde_json::from_slice::<Value>(&bytes),
            // Gone already: delivered by an earlier pass that raced with this listing.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(ClientError::spool(format!("reading {}", path.display()), e)),
        };
        let body = match body {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(seq, error = %e, "spooled event is not JSON; moved to rejected/");
                inner
                    .spool
                    .reject(seq, &format!("unreadable spool file: {e}"))?;
                continue;
            }
        };
        let resp = inner.client.post("/events/append", &body).await?;
        if resp.is_success() {
            inner.spool.remove(seq)?;
            delivered += 1;
        } else if is_permanent_rejection(resp.status) {
            tracing::error!(seq, status = resp.status, body = %resp.body, "agentd rejected a spooled event; moved to rejected/");
            inner
                .spool
                .reject(seq, &format!("HTTP {}: {}", resp.status, resp.body))?;
        } else {
            return Err(resp.ok_json().err().unwrap_or(ClientError::Http {
                socket: inner.client.socket().to_owned(),
                message: "unexpected response".into(),
            }));
        }
    }
    Ok(delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_and_statuses() {
        assert!(check_label("t", "watch.alert").is_ok());
        for bad in ["", "a|b", "a\tb"] {
            assert!(
                matches!(check_label("t", bad), Err(ClientError::InvalidEvent(_))),
                "{bad:?}"
            );
        }
        assert!(check_label("t", &"x".repeat(129)).is_err());
        assert!(is_permanent_rejection(400) && is_permanent_rejection(422));
        assert!(
            !is_permanent_rejection(404)
                && !is_permanent_rejection(429)
                && !is_permanent_rejection(503)
        );
    }

    #[test]
    fn open_outside_a_runtime_is_an_error() {
        let dir = tempfile::tempdir();
        let dir = match dir {
            Ok(d) => d,
            Err(e) => panic!("tempdir: {e}"),
        };
        let r = Reporter::open("/nonexistent.sock", dir.path(), "watch");
        assert!(matches!(r, Err(ClientError::NoRuntime)));
    }
}
