//! Request/response between daemons on two hosts, over a link: a local daemon (e.g. agentd
//! asking a peer to cosign a ledger checkpoint) calls `POST /peer/{id}/request`, the peer's
//! mesh queues it, and a service there takes it with `GET /requests/next?topic=..` and answers
//! with `POST /requests/{id}/respond`; the answer travels back as `MeshMessage::Response`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{oneshot, Notify};

/// Requests waiting for a local service, at most.
pub const QUEUE_MAX: usize = 1000;
/// Requests of one peer waiting at most: one peer cannot fill the queue for the others.
pub const PER_PEER_MAX: usize = 100;
/// A queued request nobody took within this is answered `ok: false`.
pub const STALE_AFTER: Duration = Duration::from_secs(120);

/// A request from a peer, waiting for a local service.
#[derive(Debug, Clone, Serialize)]
pub struct Incoming {
    /// Local id (for `/requests/{id}/respond`).
    pub id: u64,
    /// The peer that asked.
    pub peer: String,
    /// The topic.
    pub topic: String,
    /// The question.
    pub body: Value,
    #[serde(skip)]
    pub(crate) remote_id: u64,
    #[serde(skip)]
    pub(crate) at: Option<Instant>,
}

type Answer = oneshot::Sender<(bool, Value)>;

/// Requests in flight, both ways.
#[derive(Default)]
pub struct Requests {
    next: std::sync::atomic::AtomicU64,
    waiting: Mutex<HashMap<(String, u64), Answer>>,
    queue: Mutex<VecDeque<Incoming>>,
    /// Taken requests: (peer, the peer's id, the taker's uid).
    taken: Mutex<HashMap<u64, (String, u64, Option<u32>)>>,
    arrived: Notify,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Requests {
    /// A fresh id.
    pub fn id(&self) -> u64 {
        1 + self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Registers an outgoing request `id` to `peer`; the receiver gets its answer.
    pub fn expect(&self, peer: &str, id: u64) -> oneshot::Receiver<(bool, Value)> {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting).insert((peer.to_string(), id), tx);
        rx
    }

    /// Forgets an outgoing request (timed out).
    pub fn forget(&self, peer: &str, id: u64) {
        lock(&self.waiting).remove(&(peer.to_string(), id));
    }

    /// Delivers a peer's answer; false when nothing waits for it (late or forged).
    pub fn answer(&self, peer: &str, id: u64, ok: bool, body: Value) -> bool {
        match lock(&self.waiting).remove(&(peer.to_string(), id)) {
            Some(tx) => tx.send((ok, body)).is_ok(),
            None => false,
        }
    }

    /// Queues a peer's request; `Err` with the reason to answer when the queue is full.
    ///
    /// # Errors
    /// When [`PER_PEER_MAX`] of this peer's or [`QUEUE_MAX`] requests already wait.
    pub fn push(
        &self,
        peer: &str,
        remote_id: u64,
        topic: String,
        body: Value,
    ) -> Result<u64, String> {
        let mut q = lock(&self.queue);
        if q.iter().filter(|r| r.peer == peer).count() >= PER_PEER_MAX {
            return Err(format!(
                "{PER_PEER_MAX} requests of this peer already wait for a local service"
            ));
        }
        if q.len() >= QUEUE_MAX {
            return Err(format!(
                "{QUEUE_MAX} requests already wait for a local service"
            ));
        }
        let id = self.id();
        q.push_back(Incoming {
            id,
            peer: peer.to_string(),
            topic,
            body,
            remote_id,
            at: Some(Instant::now()),
        });
        drop(q);
        self.arrived.notify_waiters();
        Ok(id)
    }

    /// Takes the oldest queued request whose topic `wanted` accepts, for the caller `taker`
    /// (its uid: only it may answer), waiting up to `wait`. Requests older than
    /// [`STALE_AFTER`] are returned in `.1` to be refused.
    pub async fn take(
        &self,
        wanted: impl Fn(&str) -> bool,
        taker: Option<u32>,
        wait: Duration,
    ) -> (Option<Incoming>, Vec<Incoming>) {
        let deadline = Instant::now() + wait;
        loop {
            let notified = self.arrived.notified();
            let (found, stale) = {
                let mut q = lock(&self.queue);
                let stale: Vec<Incoming> = {
                    let (old, keep): (Vec<_>, Vec<_>) = q
                        .drain(..)
                        .partition(|r| r.at.is_some_and(|t| t.elapsed() > STALE_AFTER));
                    q.extend(keep);
                    old
                };
                let pos = q.iter().position(|r| wanted(&r.topic));
                (pos.and_then(|i| q.remove(i)), stale)
            };
            if let Some(r) = &found {
                lock(&self.taken).insert(r.id, (r.peer.clone(), r.remote_id, taker));
            }
            if found.is_some() || !stale.is_empty() || Instant::now() >= deadline {
                return (found, stale);
            }
            let _ = tokio::time::timeout_at(deadline.into(), notified).await;
        }
    }

    /// Requests queued for a local service now.
    pub fn waiting(&self) -> usize {
        lock(&self.queue).len()
    }

    /// Drops `peer`'s queued requests (its link closed: they cannot be answered).
    pub fn drop_peer(&self, peer: &str) {
        lock(&self.queue).retain(|r| r.peer != peer);
    }

    /// The (peer, remote id) of request `id`, taken by `uid`, removing it. `Err(true)` when
    /// another caller took it (it stays for that one to answer), `Err(false)` when no request
    /// `id` waits for an answer.
    ///
    /// # Errors
    /// As above.
    pub fn respond_to(&self, id: u64, uid: Option<u32>) -> Result<(String, u64), bool> {
        let mut t = lock(&self.taken);
        match t.get(&id) {
            None => Err(false),
            Some((_, _, taker)) if *taker != uid || uid.is_none() => Err(true),
            Some(_) => Ok(t
                .remove(&id)
                .map(|(p, r, _)| (p, r))
                .unwrap_or_else(|| unreachable!("just found"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn queue_take_answer() {
        let r = Requests::default();
        let rx = r.expect("a", 7);
        assert!(r.answer("a", 7, true, json!(1)));
        assert_eq!(rx.await.unwrap(), (true, json!(1)));
        assert!(!r.answer("a", 7, true, json!(1)), "answered once");
        assert!(!r.answer("b", 8, true, json!(1)));

        let id = r.push("a", 3, "ledger.cosign".into(), json!({})).unwrap();
        let (none, _) = r
            .take(|t| t == "other", Some(7), Duration::from_millis(1))
            .await;
        assert!(none.is_none());
        let (got, _) = r
            .take(|t| t == "ledger.cosign", Some(7), Duration::from_millis(1))
            .await;
        assert_eq!(got.unwrap().id, id);
        // Only the caller that took it answers it.
        assert_eq!(r.respond_to(id, Some(8)), Err(true));
        assert_eq!(r.respond_to(id, None), Err(true));
        assert_eq!(r.respond_to(id, Some(7)), Ok(("a".into(), 3)));
        assert_eq!(r.respond_to(id, Some(7)), Err(false));
    }

    /// One peer fills its share, not the queue; its requests leave with its link.
    #[tokio::test]
    async fn one_peer_cannot_fill_the_queue() {
        let r = Requests::default();
        for i in 0..PER_PEER_MAX as u64 {
            r.push("greedy", i, "junk".into(), json!(1)).unwrap();
        }
        let e = r.push("greedy", 999, "junk".into(), json!(1)).unwrap_err();
        assert!(e.contains("of this peer"), "{e}");
        let id = r
            .push("witness", 1, "ledger.cosign".into(), json!({}))
            .unwrap();
        r.drop_peer("greedy");
        let (got, _) = r.take(|_| true, None, Duration::from_millis(1)).await;
        assert_eq!(got.unwrap().id, id);
        r.push("greedy", 1000, "junk".into(), json!(1)).unwrap();
    }
}
