//! Where decisions go: every deny and every allow to the ledger (through osmoda-client's
//! durable [`Reporter`]), every decision counted on `/metrics` and logged.
//!
//! A client that floods the proxy with bad requests must not turn each one into an fsync: at
//! most [`DENY_EVENTS_PER_SEC`] denies a second are recorded one by one; the rest are counted
//! and reported as one `egress.deny.suppressed` event at the next flush.
//!
//! An allow is spooled before the client hears `200`, so a crash loses no tunnel. Allows are
//! written in batches (group commit: the allows that arrive while one batch is being fsync'ed
//! form the next), one `egress.allow` event per (token, subject, target, capability) with its
//! `count`; past [`ALLOW_EVENTS_PER_SEC`] such events a second, or [`MAX_BATCH_KEYS`] keys in one
//! batch, the rest of a batch is one `egress.allow.unitemised` event with their count, so
//! every allow is counted in some event and none is dropped.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

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

/// `egress.allow` events written one by one per second; more allows are counted in
/// `egress.allow.unitemised` events.
pub const ALLOW_EVENTS_PER_SEC: u32 = 50;

/// Distinct keys one batch itemises at most; allows of further keys are only counted.
pub const MAX_BATCH_KEYS: usize = 1024;

/// Over the budget, `egress.allow.unitemised` events are written at most this often; the
/// allows arriving meanwhile wait and join that one event.
const UNITEMISED_EVERY: Duration = Duration::from_millis(100);

type AllowKey = (Option<String>, Option<String>, String, Option<String>);

/// The allows not yet written.
#[derive(Debug, Default)]
struct Batch {
    /// Number of this batch; every allow in it waits until a batch numbered at least this one
    /// is durable.
    gen: u64,
    items: BTreeMap<AllowKey, u64>,
    /// Allows of keys beyond [`MAX_BATCH_KEYS`].
    unkeyed: u64,
}

/// The one writer of allow batches, and what it wrote.
#[derive(Debug, Default)]
struct Writer {
    /// Batches numbered below this are written.
    durable: u64,
    /// Batches whose writing failed, newest last (a few kept).
    failed: BTreeMap<u64, String>,
    /// Start of the current second and `egress.allow` events written in it.
    window: (Option<Instant>, u32),
    last_unitemised: Option<Instant>,
}

/// The proxy's record keeper.
#[derive(Debug)]
pub struct Events {
    reporter: Option<Reporter>,
    budget: u32,
    allow_budget: u32,
    window: Mutex<(Option<Instant>, u32)>,
    suppressed: AtomicU64,
    allows: Mutex<Batch>,
    writer: tokio::sync::Mutex<Writer>,
}

impl Events {
    /// Records to the ledger through `reporter`, or only to logs and metrics when `None`.
    pub fn new(reporter: Option<Reporter>) -> Events {
        Events::with_deny_budget(reporter, DENY_EVENTS_PER_SEC)
    }

    /// Like [`Events::new`], recording at most `per_sec` denies a second one by one.
    pub fn with_deny_budget(reporter: Option<Reporter>, per_sec: u32) -> Events {
        Events::with_budgets(reporter, per_sec, ALLOW_EVENTS_PER_SEC)
    }

    /// Like [`Events::new`], recording at most `deny_per_sec` denies and `allow_per_sec`
    /// `egress.allow` events a second one by one.
    pub fn with_budgets(
        reporter: Option<Reporter>,
        deny_per_sec: u32,
        allow_per_sec: u32,
    ) -> Events {
        Events {
            reporter,
            budget: deny_per_sec,
            allow_budget: allow_per_sec,
            window: Mutex::new((None, 0)),
            suppressed: AtomicU64::new(0),
            allows: Mutex::new(Batch::default()),
            writer: tokio::sync::Mutex::new(Writer::default()),
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

    /// Records an allow; returns once it is durably spooled, itemised or counted.
    ///
    /// # Errors
    /// Why the spool could not take the batch holding this allow (the caller refuses the
    /// tunnel: an allow that is not recorded is not granted).
    pub async fn allow(&self, d: &Decision) -> Result<(), String> {
        osmoda_daemon::metrics::global().egress_decision("allow", &d.reason);
        tracing::debug!(target = %d.target, token = ?d.token_id, address = ?d.address, "egress allowed");
        let Some(r) = &self.reporter else {
            return Ok(());
        };
        let key = (
            d.token_id.clone(),
            d.subject.clone(),
            d.target.clone(),
            d.capability.clone(),
        );
        let mine = {
            let mut b = self.allows.lock().unwrap_or_else(PoisonError::into_inner);
            if b.items.len() < MAX_BATCH_KEYS || b.items.contains_key(&key) {
                *b.items.entry(key).or_default() += 1;
            } else {
                b.unkeyed += 1;
            }
            b.gen
        };
        let mut w = self.writer.lock().await;
        if w.durable <= mine {
            // This allow's batch is still open: write it, with every allow that joined it.
            self.write_batch(r, &mut w).await;
        }
        match w.failed.get(&mine) {
            Some(e) => Err(format!("the allow could not be recorded: {e}")),
            None => Ok(()),
        }
    }

    async fn write_batch(&self, r: &Reporter, w: &mut Writer) {
        let per_sec = self.allow_budget;
        let fresh = |w: &Writer, now: Instant| {
            w.window
                .0
                .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        };
        if !fresh(w, Instant::now()) && w.window.1 >= per_sec {
            if let Some(t) = w.last_unitemised {
                tokio::time::sleep(UNITEMISED_EVERY.saturating_sub(t.elapsed())).await;
            }
        }
        let now = Instant::now();
        if fresh(w, now) {
            w.window = (Some(now), 0);
        }
        let batch = {
            let mut b = self.allows.lock().unwrap_or_else(PoisonError::into_inner);
            let gen = b.gen;
            std::mem::replace(
                &mut *b,
                Batch {
                    gen: gen + 1,
                    ..Batch::default()
                },
            )
        };
        let left = per_sec.saturating_sub(w.window.1) as usize;
        let mut unitemised = batch.unkeyed;
        let mut tokens = BTreeSet::new();
        let mut error = None;
        for (i, ((token_id, subject, target, capability), count)) in
            batch.items.into_iter().enumerate()
        {
            if i >= left {
                unitemised += count;
                if let Some(t) = token_id {
                    tokens.insert(t);
                }
                continue;
            }
            w.window.1 += 1;
            let payload = json!({ "token_id": token_id, "subject": subject, "target": target,
                "capability": capability, "count": count });
            if let Err(e) = r.report("egress.allow", payload).await {
                error = Some(e.to_string());
            }
        }
        if unitemised > 0 {
            w.last_unitemised = Some(Instant::now());
            let tokens: Vec<_> = tokens.into_iter().take(64).collect();
            let payload = json!({ "count": unitemised, "tokens": tokens,
                "limit_per_sec": per_sec, "max_keys": MAX_BATCH_KEYS });
            if let Err(e) = r.report("egress.allow.unitemised", payload).await {
                error = Some(e.to_string());
            }
        }
        if let Some(e) = error {
            tracing::warn!(error = %e, "could not spool egress.allow events; those tunnels are refused");
            w.failed.insert(batch.gen, e);
            while w.failed.len() > 64 {
                w.failed.pop_first();
            }
        }
        w.durable = batch.gen + 1;
    }

    /// Reports the number of denies suppressed since the last flush.
    pub async fn flush(&self) {
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        let Some(r) = &self.reporter else { return };
        if suppressed > 0 {
            let payload = json!({ "count": suppressed, "limit_per_sec": self.budget });
            if let Err(e) = r.report("egress.deny.suppressed", payload).await {
                tracing::warn!(error = %e, "could not spool an egress.deny.suppressed event");
            }
        }
    }
}
