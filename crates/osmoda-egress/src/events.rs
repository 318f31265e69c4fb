//! Where decisions go: every deny and every allow to the ledger (through osmoda-client's
//! durable [`Reporter`]), every decision counted on `/metrics` and logged.
//!
//! A client that floods the proxy with bad requests must not turn each one into an fsync: at
//! most [`DENY_EVENTS_PER_SEC`] denies a second are recorded one by one; the rest are counted
//! and reported as one `egress.deny.suppressed` event at the next flush.
//!
//! Allows are recorded per window ([`ALLOW_WINDOW`], the serve loop's flush tick) and key
//! (token id, capability, normalised host, port):
//! - the **first** allow of a key in a window is spooled (fsync'ed) before the client hears
//!   `200` — one `egress.allow` event with `first: true`, `count: 1`. A crash, OOM kill or
//!   `kill -9` therefore never loses the fact that a token reached a target. Firsts are written
//!   in batches (group commit: the firsts that arrive while one batch is being fsync'ed form the
//!   next); past [`ALLOW_EVENTS_PER_SEC`] such events a second, or [`MAX_BATCH_KEYS`] keys in one
//!   batch, the rest of a batch is one `egress.allow.unitemised` event with their count and
//!   tokens, so every first is recorded before its `200` and none is dropped;
//! - **repeats** of a key whose first is durable are counted in memory and answered at once;
//!   at the window's end (or at shutdown, or early when [`MAX_WINDOW_KEYS`] keys are remembered)
//!   each key's repeats become one `egress.allow` event with `first: false` and their `count`
//!   (at most [`MAX_BATCH_KEYS`] such events a flush; the rest one `egress.allow.unitemised`).
//!   A `kill -9` loses at most the repeat counts of the current window.
//!
//! The sum of `count` over `egress.allow` and `egress.allow.unitemised` is the number of allowed
//! tunnels (up to the repeats of a window cut short by a crash).

use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// The normalised target host (lower case, A-labels, no trailing dot), once parsed.
    pub host: Option<String>,
    /// The target port, once parsed.
    pub port: Option<u16>,
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

/// `egress.allow` events for firsts written one by one per second; more firsts are counted
/// in `egress.allow.unitemised` events.
pub const ALLOW_EVENTS_PER_SEC: u32 = 50;

/// Distinct keys one batch of firsts (or one flush of repeats) itemises at most; further keys
/// are only counted.
pub const MAX_BATCH_KEYS: usize = 1024;

/// The allow window: a key's first allow in it is durable before its `200`, its repeats are
/// written as one event at its end.
pub const ALLOW_WINDOW: Duration = Duration::from_secs(60);

/// Keys remembered in one window at most; a first beyond it writes the repeats counted so far
/// and starts the window again (flush early rather than grow, and never drop a count).
pub const MAX_WINDOW_KEYS: usize = 10_000;

/// Over the budget, `egress.allow.unitemised` events are written at most this often; the
/// allows arriving meanwhile wait and join that one event.
const UNITEMISED_EVERY: Duration = Duration::from_millis(100);

/// Token id, capability, normalised host, port.
type AllowKey = (Option<String>, Option<String>, String, u16);

/// What a first's event names besides its key.
#[derive(Debug, Clone)]
struct Named {
    subject: Option<String>,
    /// The target as the first client sent it.
    target: String,
}

/// A key allowed in this window.
#[derive(Debug)]
struct Seen {
    /// The batch holding its first; the key's repeats are free once that batch is durable.
    gen: u64,
    named: Named,
    repeats: u64,
}

/// The allows not yet written, and the keys of this window.
#[derive(Debug, Default)]
struct Allows {
    /// Number of the open batch; a first in it waits until a batch numbered at least this one
    /// is durable.
    gen: u64,
    /// Batches numbered below this are written (those that failed are forgotten in `seen`).
    durable: u64,
    items: BTreeMap<AllowKey, Named>,
    /// Firsts of keys beyond [`MAX_BATCH_KEYS`] in the open batch, and their tokens.
    unkeyed: u64,
    unkeyed_tokens: BTreeSet<String>,
    seen: HashMap<AllowKey, Seen>,
}

/// The one writer of allow events, and what it wrote.
#[derive(Debug, Default)]
struct Writer {
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
    allow_window: Duration,
    max_window_keys: usize,
    window: Mutex<(Option<Instant>, u32)>,
    suppressed: AtomicU64,
    allows: Mutex<Allows>,
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
    /// `egress.allow` events of firsts a second one by one.
    pub fn with_budgets(
        reporter: Option<Reporter>,
        deny_per_sec: u32,
        allow_per_sec: u32,
    ) -> Events {
        Events {
            reporter,
            budget: deny_per_sec,
            allow_budget: allow_per_sec,
            allow_window: ALLOW_WINDOW,
            max_window_keys: MAX_WINDOW_KEYS,
            window: Mutex::new((None, 0)),
            suppressed: AtomicU64::new(0),
            allows: Mutex::new(Allows::default()),
            writer: tokio::sync::Mutex::new(Writer::default()),
        }
    }

    /// The same, with an allow window of `window` remembering at most `max_keys` keys, instead
    /// of [`ALLOW_WINDOW`] and [`MAX_WINDOW_KEYS`] (tests).
    #[must_use]
    pub fn with_allow_window(mut self, window: Duration, max_keys: usize) -> Events {
        self.allow_window = window;
        self.max_window_keys = max_keys;
        self
    }

    /// How often the serve loop calls [`Events::flush`].
    pub fn allow_window(&self) -> Duration {
        self.allow_window
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

    /// Records an allow. The first of its key in this window returns once it is durably
    /// spooled (itemised or counted); a repeat of a key whose first is durable returns at once,
    /// counted in memory until the window's end.
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
            d.capability.clone(),
            d.host.clone().unwrap_or_else(|| d.target.clone()),
            d.port.unwrap_or(0),
        );
        let mine = {
            let mut guard = self.allows.lock().unwrap_or_else(PoisonError::into_inner);
            let a = &mut *guard;
            let (open, durable) = (a.gen, a.durable);
            match a.seen.get_mut(&key) {
                Some(s) => {
                    // A repeat: counted; it waits only while its key's first is not durable
                    // (and is refused with it if that first cannot be written).
                    s.repeats += 1;
                    if s.gen < durable {
                        return Ok(());
                    }
                    s.gen
                }
                None => {
                    let named = Named {
                        subject: d.subject.clone(),
                        target: d.target.clone(),
                    };
                    if a.items.len() < MAX_BATCH_KEYS {
                        a.items.insert(key.clone(), named.clone());
                    } else {
                        a.unkeyed += 1;
                        if let Some(t) = &d.token_id {
                            a.unkeyed_tokens.insert(t.clone());
                        }
                    }
                    a.seen.insert(
                        key,
                        Seen {
                            gen: open,
                            named,
                            repeats: 0,
                        },
                    );
                    open
                }
            }
        };
        let mut w = self.writer.lock().await;
        let (durable, full) = {
            let a = self.allows.lock().unwrap_or_else(PoisonError::into_inner);
            (a.durable, a.seen.len() > self.max_window_keys)
        };
        if durable <= mine {
            // This allow's batch is still open: write it, with every first that joined it.
            self.write_batch(r, &mut w).await;
        }
        if full {
            self.write_repeats(r).await;
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
        let (gen, items, unkeyed, unkeyed_tokens) = {
            let mut a = self.allows.lock().unwrap_or_else(PoisonError::into_inner);
            let gen = a.gen;
            a.gen += 1;
            (
                gen,
                std::mem::take(&mut a.items),
                std::mem::take(&mut a.unkeyed),
                std::mem::take(&mut a.unkeyed_tokens),
            )
        };
        let left = per_sec.saturating_sub(w.window.1) as usize;
        let mut unitemised = unkeyed;
        let mut tokens = unkeyed_tokens;
        let mut error = None;
        for (i, ((token_id, capability, host, port), named)) in items.into_iter().enumerate() {
            if i >= left {
                unitemised += 1;
                if let Some(t) = token_id {
                    tokens.insert(t);
                }
                continue;
            }
            w.window.1 += 1;
            let payload = json!({ "token_id": token_id, "subject": named.subject,
                "target": named.target, "host": host, "port": port,
                "capability": capability, "count": 1, "first": true });
            if let Err(e) = r.report("egress.allow", payload).await {
                error = Some(e.to_string());
            }
        }
        if unitemised > 0 {
            w.last_unitemised = Some(Instant::now());
            if let Err(e) = self.unitemised(r, unitemised, tokens, true).await {
                error = Some(e);
            }
        }
        let mut a = self.allows.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(e) = error {
            tracing::warn!(error = %e, "could not spool egress.allow events; those tunnels are refused");
            w.failed.insert(gen, e);
            while w.failed.len() > 64 {
                w.failed.pop_first();
            }
            // Its firsts (and the repeats that waited on them) are refused: not allowed, so
            // not counted; the next allow of those keys is a first again.
            a.seen.retain(|_, s| s.gen != gen);
        }
        a.durable = gen + 1;
    }

    async fn unitemised(
        &self,
        r: &Reporter,
        count: u64,
        tokens: BTreeSet<String>,
        first: bool,
    ) -> Result<(), String> {
        let tokens: Vec<_> = tokens.into_iter().take(64).collect();
        let payload = json!({ "count": count, "tokens": tokens, "first": first,
            "limit_per_sec": self.allow_budget, "max_keys": MAX_BATCH_KEYS });
        r.report("egress.allow.unitemised", payload)
            .await
            .map_err(|e| e.to_string())
    }

    /// Writes the repeats counted for every key whose first is durable and forgets those keys
    /// (their next allow is a first of a new window). The caller holds the writer.
    async fn write_repeats(&self, r: &Reporter) {
        let secs = self.allow_window.as_secs();
        let done: Vec<(AllowKey, Seen)> = {
            let mut a = self.allows.lock().unwrap_or_else(PoisonError::into_inner);
            let durable = a.durable;
            let keys: Vec<AllowKey> = a
                .seen
                .iter()
                .filter(|(_, s)| s.gen < durable)
                .map(|(k, _)| k.clone())
                .collect();
            keys.into_iter()
                .filter_map(|k| a.seen.remove(&k).map(|s| (k, s)))
                .filter(|(_, s)| s.repeats > 0)
                .collect()
        };
        let mut over = 0;
        let mut over_tokens = BTreeSet::new();
        let mut lost = Vec::new();
        for (i, (key, s)) in done.into_iter().enumerate() {
            if i >= MAX_BATCH_KEYS {
                over += s.repeats;
                if let Some(t) = &key.0 {
                    over_tokens.insert(t.clone());
                }
                continue;
            }
            let (token_id, capability, host, port) = &key;
            let payload = json!({ "token_id": token_id, "subject": s.named.subject,
                "target": s.named.target, "host": host, "port": port,
                "capability": capability, "count": s.repeats, "first": false,
                "window_secs": secs });
            if let Err(e) = r.report("egress.allow", payload).await {
                tracing::warn!(error = %e, count = s.repeats, "could not spool repeated allows; kept for the next window");
                lost.push((key, s));
            }
        }
        if over > 0 {
            if let Err(e) = self.unitemised(r, over, over_tokens, false).await {
                tracing::warn!(error = %e, count = over, "could not spool repeated allows");
            }
        }
        if !lost.is_empty() {
            // Kept as repeats of durable firsts: written with the next window.
            let mut a = self.allows.lock().unwrap_or_else(PoisonError::into_inner);
            for (k, s) in lost {
                let kept = a.seen.entry(k).or_insert(Seen {
                    gen: 0,
                    named: s.named,
                    repeats: 0,
                });
                kept.repeats += s.repeats;
            }
        }
    }

    /// Ends the allow window — writes the repeats counted in it — and reports the number of
    /// denies suppressed since the last flush. Called every [`Events::allow_window`] and at
    /// shutdown.
    pub async fn flush(&self) {
        let suppressed = self.suppressed.swap(0, Ordering::Relaxed);
        let Some(r) = &self.reporter else { return };
        {
            let _w = self.writer.lock().await;
            self.write_repeats(r).await;
        }
        if suppressed > 0 {
            let payload = json!({ "count": suppressed, "limit_per_sec": self.budget });
            if let Err(e) = r.report("egress.deny.suppressed", payload).await {
                tracing::warn!(error = %e, "could not spool an egress.deny.suppressed event");
            }
        }
    }
}

#[cfg(test)]
#[path = "events_tests.rs"]
mod tests;
