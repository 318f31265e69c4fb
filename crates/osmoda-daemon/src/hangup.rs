//! A request whose caller has hung up can ask to be dropped ([`Hangup`]).
//!
//! The listener serves HTTP/1.1 with half-close allowed (a client may shut down its write side
//! after its request and still read the answer), so hyper never drops a request because the
//! client's input ended: every handler runs to its end, whoever is left to read the answer. A
//! handler whose work is worth stopping when nobody is (a transcription that takes minutes)
//! calls [`Hangup::drop_on_hangup`]. From then until that request's handler returns, the
//! connection watches its socket for the peer's full close, `EPOLLHUP` (both directions shut
//! down: a half-close never gives it), and when it comes drops the connection with the request
//! in flight, so the handler's future is dropped and its guards run. The watch belongs to the
//! request that asked: later requests on the same keep-alive connection, and handlers that do
//! not ask, are never dropped this way.

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::watch;

/// In every request's extensions (`axum::Extension<Hangup>`): lets the handler ask to be
/// dropped when its caller hangs up.
#[derive(Debug, Clone)]
pub struct Hangup {
    watch: Arc<Watch>,
    /// The request (its number on the connection) this handle was given to.
    request: u64,
}

/// One connection's watch: which request is running and whether it asked.
#[derive(Debug)]
pub(crate) struct Watch {
    state: watch::Sender<Armed>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Armed {
    /// The request being handled (0: none).
    current: u64,
    /// It asked to be dropped on a hang-up.
    armed: bool,
}

impl Default for Watch {
    fn default() -> Self {
        Watch {
            state: watch::Sender::new(Armed::default()),
        }
    }
}

impl Watch {
    /// Request `n` starts: the handle for its handler; nothing is armed.
    pub(crate) fn begin(self: &Arc<Self>, n: u64) -> Hangup {
        self.state.send_replace(Armed {
            current: n,
            armed: false,
        });
        Hangup {
            watch: Arc::clone(self),
            request: n,
        }
    }

    /// Request `n`'s handler has returned: its ask ends with it.
    pub(crate) fn end(&self, n: u64) {
        self.state.send_if_modified(|s| {
            if s.current == n {
                *s = Armed::default();
                true
            } else {
                false
            }
        });
    }
}

impl Hangup {
    /// From now until this request's handler returns, a full hang-up of the caller drops the
    /// connection and this request (its future is dropped, not resumed). Asked from a task that
    /// outlives its request, it does nothing.
    pub fn drop_on_hangup(&self) {
        let n = self.request;
        self.watch.state.send_if_modified(|s| {
            if s.current == n && !s.armed {
                s.armed = true;
                true
            } else {
                false
            }
        });
    }
}

/// Resolves once the peer of socket `fd` has closed both directions while the request being
/// handled has asked ([`Hangup::drop_on_hangup`]); never resolves otherwise (or if the socket
/// cannot be watched).
///
/// `fd` must stay open while this future is polled: [`crate::server`] polls it beside the
/// connection that owns the socket, in one `select!`, and drops it with that `select!`.
pub(crate) async fn hung_up(watch: &Watch, fd: RawFd) {
    let mut state = watch.state.subscribe();
    // `wait_for`'s guard is not `Send`: only whether it came is kept across an await.
    async fn until(state: &mut watch::Receiver<Armed>, armed: bool) -> bool {
        state.wait_for(|s| s.armed == armed).await.is_ok()
    }
    loop {
        if !until(&mut state, true).await {
            return std::future::pending().await;
        }
        tokio::select! {
            () = peer_closed(fd) => return,
            // The request that asked has returned: wait for the next one that asks.
            ok = until(&mut state, false) => if !ok {
                return std::future::pending().await;
            },
        }
    }
}

/// Resolves once the peer of socket `fd` has closed both directions (never if it cannot be
/// watched). `fd` as for [`hung_up`].
async fn peer_closed(fd: RawFd) {
    // SAFETY: `fd` is the connection's socket. The connection that owns it is alive while this
    // future is polled (see above), so the descriptor is open and is not another file; the
    // borrow ends with this statement, leaving a duplicate this future owns.
    #[allow(unsafe_code)]
    let dup = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned();
    // SAFETY: the `AsyncFd` owns the duplicate (an `OwnedFd`): it stays open, and the same
    // file, for as long as the `AsyncFd` exists.
    #[allow(unsafe_code)]
    let afd = dup
        .ok()
        .and_then(|d| unsafe { AsyncFd::register_with_interest(d, EITHER) }.ok());
    let Some(afd) = afd else {
        return std::future::pending().await;
    };
    loop {
        match afd.ready(EITHER).await {
            // EPOLLHUP: the peer closed its end; nobody can read an answer any more.
            Ok(g) if g.ready().is_write_closed() => return,
            Ok(mut g) => g.clear_ready(),
            Err(_) => return std::future::pending().await,
        }
        // Writable, or readable because of pipelined input or a half-close (whose end-of-input
        // readiness tokio never clears): look again a little later rather than spin.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Both directions: tokio reports `WRITE_CLOSED` (where `EPOLLHUP` shows) only to a waiter
/// that asked for writability.
const EITHER: Interest = Interest::READABLE.add(Interest::WRITABLE);
