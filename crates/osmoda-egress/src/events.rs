//! Where decisions go: every deny to the ledger (through osmoda-client's durable
//! [`Reporter`]), allows aggregated per (token, host, port) and reported by [`Events::flush`],
//! every decision counted on `/metrics` and logged.
//!
//! A client that floods the proxy with bad requests must not turn each one into an fsync: at
//! most [`DENY_EVENTS_PER_SEC`] denies a second are recorded one by one; the rest are counted
//! and reported as one `egress.deny.suppressed` event at the next flush.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use osmoda_client::Reporter;
use serde_json::{json, Value};

/// Denies recorded individually per second; more are aggregated.
pub const DENY_EVENTS_PER_SEC: u32 = 50;

/// One decision, as recorded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Stable reason (`no-token`, `loopback`, `domain-not-granted`, ...).
    pub reason: String,
    /// The request target as sent (clipped to 100 characters).
    pub target: String,
    /// The token's id, when a token verified.
    pub token_id: Option<String>,
    /// The token's subject, when a token verified.
    pub subject: Option<String>,
    /// The capability that allowed it (allows only).
    pub capability: Option<String>,
    /// The resolved address that was refused or dialled.
    pub address: Option<String>,
    /// Human-readable detail.
    pub detail: String,
    /// The client's address.
    pub peer: String,
}

impl Decision {
    fn payload(&self) -> Value {
        json!({
            "reason": self.reason,
            "target": self.target,
            "token_id": self.token_id,
            "subject": self.subject,
            "capability": self.capability,
            "address": self.address,
            "detail": self.detail,
            "peer": self.peer,
        })
    }
}

type AllowKey = (Option<String>, Option<String>, String, Option<String>);

/// The proxy's record keeper.
#[derive(Debug)]
pub struct Events {
    reporter: Option<Reporter>,
    budget: u32,
    window: Mutex<(Option<Instant>, u32)>,
    suppressed: AtomicU64,
    allows: Mutex<HashMap<AllowKey, u64>>,
}

impl Events {
    /// Records to the ledger through `reporter`, or only to logs and metrics when `None`.
    pub fn new(reporter: Option<Reporter>) -> Events {
        Events::with_deny_budget(reporter, DENY_EVENTS_PER_SEC)
    }

    /// Like [`Events::new`], recording at most `per_sec` denies a second one by one.
    pub fn with_deny_budget(reporter: Option<Reporter>, per_sec: u32) -> Events {
        Events {
            reporter,
            budget: per_sec,
            window: Mutex::new((None, 0)),
            suppressed: AtomicU64::new(0),
            allows: Mutex::new(HashMap::new()),
        }
    }

    /// Records a deny; returns once the event is durably spooled (or suppressed).
    pub async fn deny(&self, d: &Decision) {
        osmoda_daemon::metrics::global().egress_decision("deny", &d.reason);
        tracing::info!(reason = %d.reason, target = %d.target, token = ?d.token_id,
            address = ?d.address, peer = %d.peer, "egress denied: {}", d.detail);
        let Some(r) = &self.reporter else { return };
        let admit = self
            .window
            .lock()
            .map(|mut w| {
                let now = Instant::now();
                if w.0.is_none_or(|t| now.duration_since(t).as_secs() >= 1) {
                    *w = (Some(now), 0);
                }
                w.1 += 1;
                w.1 <= self.budget
            })
            .unwrap_or(false);
        if !admit {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Err(e) = r.report("egress.deny", d.payload()).await {
            tracing::warn!(error = %e, "could not spool an egress.deny event");
        }
    }

    /// Counts an allow; reported in aggregate by [`Events::flush`].
    pub fn allow(&self, d: &Decision) {
        osmoda_daemon::metrics::global().egress_decision("allow", &d.reason);
        tracing::debug!(target = %d.target, token = ?d.token_id, address = ?d.address, "egress allowed");
        let key = (
            d.token_id.clone(),
            d.subject.clone(),
            d.target.clone(),
            d.capability.clone(),
        );
        if let Ok(mut m) = self.allows.lock() {
            // Bound the map: past 10,000 distinct keys, flush early rather than grow.
            if m.len() < 10_000 || m.contains_key(&key) {
                *m.entry(key).or_default() += 1;
            }
        }
    }

    /// Reports the allows counted since the last flush (one `egress.allow` event per token,
    /// target and capability, with `count`) and the number of suppressed denies.
    pub async fn flush(&self) {
        let allows = self
            .allows
            .lock()
            .map(|mut m| std::mem::take(&mut *m))
            .unwrap_or_default();
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        let Some(r) = &self.reporter else { return };
        let mut allows: Vec<_> = allows.into_iter().collect();
        allows.sort();
        for ((token_id, subject, target, capability), count) in allows {
            let payload = json!({ "token_id": token_id, "subject": subject, "target": target,
                "capability": capability, "count": count });
            if let Err(e) = r.report("egress.allow", payload).await {
                tracing::warn!(error = %e, "could not spool an egress.allow event");
            }
        }
        if suppressed > 0 {
            let payload = json!({ "count": suppressed, "limit_per_sec": self.budget });
            if let Err(e) = r.report("egress.deny.suppressed", payload).await {
                tracing::warn!(error = %e, "could not spool an egress.deny.suppressed event");
            }
        }
    }
}
