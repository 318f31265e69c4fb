//! A request whose caller has hung up can ask to be dropped ([`Hangup`]).
//!
//! The listener serves HTTP/1.1 with half-close allowed (a client may shut down its write side
//! after its request and still read the answer), so hyper never drops a request because the
//! client's input ended: every handler runs to its end, whoever is left to read the answer. A
//! handler whose work is worth stopping when nobody is (a transcription that takes minutes)
//! calls [`Hangup::drop_on_hangup`]. From then on the connection watches its socket for the
//! peer's full close, `EPOLLHUP` (both directions shut down: a half-close never gives it), and
//! when it comes drops the connection with the request in flight, so the handler's future is
//! dropped and its guards run. Handlers that do not ask are never dropped this way.

use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

/// In every request's extensions (`axum::Extension<Hangup>`): lets the handler ask to be
/// dropped when its caller hangs up.
#[derive(Debug, Clone)]
pub struct Hangup(pub(crate) Arc<Watch>);

/// One connection's watch, armed by the first handler that asks.
#[derive(Debug, Default)]
pub(crate) struct Watch {
    armed: Notify,
}

impl Hangup {
    /// From now on, for the rest of this connection, a full hang-up of the caller drops the
    /// connection and the request in flight (its future is dropped, not resumed).
    pub fn drop_on_hangup(&self) {
        self.0.armed.notify_one();
    }
}

/// Resolves once a handler has armed `watch` and the peer of socket `fd` has closed both
/// directions; never resolves otherwise (or if the socket cannot be watched).
///
/// `fd` must stay open while this future is polled: [`crate::server`] polls it beside the
/// connection that owns the socket, in one `select!`, and drops it with that `select!`.
pub(crate) async fn hung_up(watch: &Watch, fd: RawFd) {
    watch.armed.notified().await;
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
