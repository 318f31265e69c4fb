//! The budget of connections that are not tunnels yet: from accept until the head is read,
//! authorized and the destination connected. Each listener has its own [`Pending`], with a cap
//! in total and per peer (uid on the Unix socket, from `SO_PEERCRED`; source address on TCP),
//! so one peer's unfinished heads neither take another peer's place nor count as tunnels.
//!
//! A connection over a cap is refused at once (the caller answers 503); nothing waits.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Connections not yet tunnels, per listener, all peers together.
pub const MAX_PENDING: usize = 1024;

/// Connections not yet tunnels, per listener, from one peer.
pub const MAX_PENDING_PER_PEER: usize = 128;

/// Who a connection is from, as far as the caps are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeerKey {
    /// A Unix-socket peer's uid (`None` when the kernel reported no credentials).
    Uid(Option<u32>),
    /// A TCP peer's address (IPv4-mapped IPv6 folded to IPv4).
    Addr(IpAddr),
}

impl PeerKey {
    /// The key of a TCP peer at `ip`.
    pub fn tcp(ip: IpAddr) -> PeerKey {
        PeerKey::Addr(ip.to_canonical())
    }
}

/// Why a connection was not admitted: `(reason, detail)`.
pub type Over = (&'static str, String);

/// One listener's pending-connection budget.
#[derive(Debug)]
pub struct Pending {
    total_cap: usize,
    per_peer_cap: usize,
    counts: Mutex<(usize, HashMap<PeerKey, usize>)>,
}

/// An admitted connection's place; given back when dropped.
#[derive(Debug)]
pub struct Slot {
    pending: Arc<Pending>,
    key: PeerKey,
}

impl Pending {
    /// A budget of `total_cap` connections, `per_peer_cap` of them from one peer.
    pub fn new(total_cap: usize, per_peer_cap: usize) -> Arc<Pending> {
        Arc::new(Pending {
            total_cap,
            per_peer_cap,
            counts: Mutex::new((0, HashMap::new())),
        })
    }

    /// Takes a place for a connection from `key`.
    ///
    /// # Errors
    /// `peer-cap` when `key` already holds its share, `pending-cap` when the listener is full.
    pub fn admit(self: &Arc<Self>, key: PeerKey) -> Result<Slot, Over> {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let mine = c.1.get(&key).copied().unwrap_or(0);
        if mine >= self.per_peer_cap {
            return Err((
                "peer-cap",
                format!(
                    "this peer has {mine} connections that are not tunnels yet (the cap is {}); finish or close them",
                    self.per_peer_cap
                ),
            ));
        }
        if c.0 >= self.total_cap {
            return Err((
                "pending-cap",
                format!(
                    "{} connections are waiting for their request head or destination",
                    c.0
                ),
            ));
        }
        c.0 += 1;
        *c.1.entry(key).or_default() += 1;
        Ok(Slot {
            pending: Arc::clone(self),
            key,
        })
    }

    /// Connections admitted and not yet given back.
    pub fn open(&self) -> usize {
        self.counts.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self
            .pending
            .counts
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        c.0 -= 1;
        if let Some(n) = c.1.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                c.1.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_per_peer_and_in_total_and_give_back() {
        let p = Pending::new(3, 2);
        let a = PeerKey::Uid(Some(1000));
        let b = PeerKey::tcp("::ffff:127.0.0.2".parse().unwrap());
        let a1 = p.admit(a).unwrap();
        let _a2 = p.admit(a).unwrap();
        assert_eq!(p.admit(a).unwrap_err().0, "peer-cap");
        let _b1 = p.admit(b).unwrap();
        // Folded: the mapped and the plain form are one peer.
        assert_eq!(
            p.admit(PeerKey::tcp("127.0.0.3".parse().unwrap()))
                .unwrap_err()
                .0,
            "pending-cap"
        );
        assert_eq!(b, PeerKey::tcp("127.0.0.2".parse().unwrap()));
        drop(a1);
        assert_eq!(p.open(), 2);
        let _a3 = p.admit(a).unwrap();
        assert_eq!(p.open(), 3);
    }
}
