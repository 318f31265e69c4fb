//! The ledger events a peer's traffic causes on this host, on a budget: a peer sets the rate
//! of what it sends, not the rate at which this host's ledger grows. Per peer and window
//! ([`crate::Tuning::event_window`]), the first [`PER_WINDOW`] events (`message.receive`,
//! `request.receive`, `peer.rotation_refused`) are recorded one by one; the rest are counted
//! and recorded as one `mesh.receive.over_budget` when the window ends. Recording never holds
//! up the link that received the frame: [`PeerEvents::admit`] only counts, and the events it
//! admits are spooled by tasks of their own.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Events of one peer recorded one by one per window, at most.
pub const PER_WINDOW: u32 = 60;

/// What a peer's frame caused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A text or JSON message (stored in the inbox).
    Message,
    /// A request, queued for a local service.
    Request,
    /// A request refused because the peer (or everyone) has too many waiting.
    RefusedRequest,
    /// An identity hand-over that did not verify.
    RefusedRotation,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Over {
    messages: u64,
    requests: u64,
    refused_requests: u64,
    refused_rotations: u64,
    bytes: u64,
}

impl Over {
    fn is_empty(&self) -> bool {
        *self == Over::default()
    }
}

#[derive(Debug)]
struct Window {
    start: Instant,
    since: u64,
    recorded: u32,
    over: Over,
}

/// Per-peer windows of recorded and counted events.
#[derive(Debug)]
pub struct PeerEvents {
    window: Duration,
    peers: Mutex<HashMap<String, Window>>,
}

fn epoch_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl PeerEvents {
    /// Windows of `window`.
    pub fn new(window: Duration) -> PeerEvents {
        PeerEvents {
            window,
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Window>> {
        self.peers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `peer`'s event of `kind` (`bytes` received) is recorded one by one (`true`),
    /// or only counted into the window's summary (`false`). A window that ended is closed
    /// first (its summary waits for [`PeerEvents::due`]).
    pub fn admit(&self, peer: &str, kind: Kind, bytes: usize) -> bool {
        let mut g = self.lock();
        let w = g.entry(peer.to_string()).or_insert_with(|| Window {
            start: Instant::now(),
            since: epoch_secs(),
            recorded: 0,
            over: Over::default(),
        });
        if w.start.elapsed() >= self.window && w.over.is_empty() {
            w.start = Instant::now();
            w.since = epoch_secs();
            w.recorded = 0;
        }
        if w.recorded < PER_WINDOW && w.start.elapsed() < self.window {
            w.recorded += 1;
            return true;
        }
        let o = &mut w.over;
        match kind {
            Kind::Message => o.messages += 1,
            Kind::Request => o.requests += 1,
            Kind::RefusedRequest => {
                o.requests += 1;
                o.refused_requests += 1;
            }
            Kind::RefusedRotation => o.refused_rotations += 1,
        }
        o.bytes += bytes as u64;
        false
    }

    /// The summaries (`mesh.receive.over_budget` payloads) of the windows that ended with
    /// something over budget, or of every window with something over budget when `all`
    /// (shutdown); those windows start again.
    pub fn due(&self, all: bool) -> Vec<Value> {
        let mut out = Vec::new();
        let mut g = self.lock();
        g.retain(|peer, w| {
            let ended = w.start.elapsed() >= self.window;
            if (ended || all) && !w.over.is_empty() {
                let o = std::mem::take(&mut w.over);
                out.push(json!({
                    "peer": peer,
                    "since": w.since,
                    "window_secs": self.window.as_secs(),
                    "recorded": w.recorded,
                    "messages": o.messages,
                    "requests": o.requests,
                    "refused_requests": o.refused_requests,
                    "refused_rotations": o.refused_rotations,
                    "bytes": o.bytes,
                }));
                w.start = Instant::now();
                w.since = epoch_secs();
                w.recorded = 0;
                return true;
            }
            // A window that ended with nothing over budget is forgotten (no peer leaves a
            // trace here once it is quiet).
            !ended
        });
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Finding 7: a peer's first events of a window are recorded one by one, the rest are
    /// counted (kind and bytes) into one summary when the window ends; each peer has its own.
    #[test]
    fn a_peer_gets_a_budget_and_one_summary_for_the_rest() {
        let e = PeerEvents::new(Duration::from_millis(200));
        let recorded = (0..500)
            .filter(|i| {
                let kind = if i % 5 == 0 {
                    Kind::RefusedRequest
                } else {
                    Kind::Message
                };
                e.admit("b", kind, 10)
            })
            .count();
        assert_eq!(recorded, PER_WINDOW as usize);
        assert!(
            e.admit("c", Kind::Message, 1),
            "another peer has its own budget"
        );
        assert!(e.due(false).is_empty(), "the window has not ended");
        std::thread::sleep(Duration::from_millis(250));
        // Over budget until the summary is out: nothing is recorded one by one meanwhile.
        assert!(!e.admit("b", Kind::RefusedRotation, 0));
        let due = e.due(false);
        assert_eq!(due.len(), 1, "{due:?}");
        let s = &due[0];
        assert_eq!(s["peer"], "b");
        assert_eq!(s["recorded"], PER_WINDOW);
        // 400 messages and 100 refused requests; the first 60 were 48 and 12.
        assert_eq!(
            (s["messages"].as_u64(), s["requests"].as_u64()),
            (Some(352), Some(88))
        );
        assert_eq!(s["refused_requests"], 88);
        assert_eq!(s["refused_rotations"], 1);
        assert_eq!(s["bytes"], 10 * (500 - PER_WINDOW as u64));
        // A fresh window: recorded again; a quiet peer is forgotten.
        assert!(e.admit("b", Kind::Message, 1));
        assert!(e.due(true).is_empty());
    }
}
