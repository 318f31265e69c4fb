//! The gate: an I/O wrapper between a client's socket and hyper that enforces the protocol rules
//! and the clock, so that a slow or malformed client costs a bounded amount and always gets a
//! JSON answer.
//!
//! Reading, the gate holds back each request head until it is complete and acceptable
//! ([`head::parse_head`]), then passes it on together with exactly the body its framing
//! announces. It knows at every moment what it is waiting for, and how long it may:
//! - a head: [`Timeouts::header`] from its first byte (from the connection's start for the first);
//! - a body: [`Timeouts::body`] from the end of its head, however the bytes trickle in;
//! - the next request on a keep-alive connection: [`Timeouts::idle`];
//! - nothing while a request is being handled (its handler owns that time).
//!
//! Writing, a response that the client does not read for [`Timeouts::send`] ends the connection.
//!
//! A malformed or late head is answered in order by hyper itself: the gate replaces it with a
//! stand-in request ([`STAND_IN`]) and leaves the error in [`ConnState`], where the connection's
//! service finds it and answers with the JSON error body and `Connection: close`.

pub mod head;

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use tokio::time::{Instant, Sleep};

use head::{Chunked, Framing, HeadStatus};

/// A request the client got wrong at the protocol level, answered as `{"error","detail"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProtocolError {
    /// HTTP status: 400, 408, 414 or 431.
    pub status: u16,
    /// What was wrong.
    pub error: String,
    /// What to do instead.
    pub hint: &'static str,
}

/// How long the gate waits for a client, per phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// A whole request head, from its first byte (or from the connection's start).
    pub header: Duration,
    /// A whole request body, from the end of its head.
    pub body: Duration,
    /// The next request on an idle keep-alive connection.
    pub idle: Duration,
    /// Progress writing a response (the client must read it).
    pub send: Duration,
}

/// The request the gate hands hyper in place of a refused head; never routed (see module docs).
pub const STAND_IN: &[u8] = b"GET /.osmoda/protocol-error HTTP/1.1\r\nconnection: close\r\n\r\n";

/// What the gate and the connection's service share.
#[derive(Debug, Default)]
pub struct ConnState {
    /// Heads passed to hyper (stand-ins included).
    heads: AtomicU64,
    /// Requests the service has answered.
    answered: AtomicU64,
    /// The error to answer as request number `.0` (1-based), instead of routing it.
    error: Mutex<Option<(u64, ProtocolError)>>,
}

impl ConnState {
    /// Called by the service when request number `n` (1-based) arrives: the protocol error to
    /// answer instead, if that request is the gate's stand-in.
    pub fn take_error(&self, n: u64) -> Option<ProtocolError> {
        let mut slot = self.error.lock().unwrap_or_else(|p| p.into_inner());
        match slot.as_ref() {
            Some((at, _)) if *at == n => slot.take().map(|(_, e)| e),
            _ => None,
        }
    }

    /// Called by the service when it has answered a request.
    pub fn answered(&self) {
        self.answered.fetch_add(1, Ordering::AcqRel);
    }

    fn in_flight(&self) -> bool {
        self.heads.load(Ordering::Acquire) > self.answered.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
enum Phase {
    /// Collecting a head (possibly empty so far).
    Head,
    /// Passing on `n` more body bytes.
    Body(u64),
    /// Passing on a chunked body.
    Chunked(Chunked),
    /// No more requests: after a stand-in, or after the client closed.
    Closed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Header,
    Body,
    Idle,
}

/// The gate around a connection's I/O (see the module docs).
pub struct Gate<T> {
    io: T,
    conn: Arc<ConnState>,
    timeouts: Timeouts,
    phase: Phase,
    /// Bytes of the current head, held back until it is complete.
    head: Vec<u8>,
    first_line_seen: bool,
    /// Bytes ready for hyper.
    out: Vec<u8>,
    out_at: usize,
    /// When the current wait started; `None` while a request is handled.
    since: Option<(Wait, Instant)>,
    served_one: bool,
    read_timer: Pin<Box<Sleep>>,
    write_timer: Option<Pin<Box<Sleep>>>,
    /// A body-phase error to report on every further read.
    failed: Option<(io::ErrorKind, &'static str)>,
}

impl<T> Gate<T> {
    /// Wraps `io`; `conn` is shared with the connection's service.
    pub fn new(io: T, conn: Arc<ConnState>, timeouts: Timeouts) -> Gate<T> {
        Gate {
            io,
            conn,
            timeouts,
            phase: Phase::Head,
            head: Vec::new(),
            first_line_seen: false,
            out: Vec::new(),
            out_at: 0,
            since: Some((Wait::Header, Instant::now())),
            served_one: false,
            read_timer: Box::pin(tokio::time::sleep(timeouts.header)),
            write_timer: None,
            failed: None,
        }
    }

    /// The wrapped I/O.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// Refuses the current head: hyper gets the stand-in and then end of input.
    fn refuse(&mut self, err: ProtocolError) {
        let n = self.conn.heads.fetch_add(1, Ordering::AcqRel) + 1;
        *self.conn.error.lock().unwrap_or_else(|p| p.into_inner()) = Some((n, err));
        self.out.extend_from_slice(STAND_IN);
        self.head.clear();
        self.phase = Phase::Closed;
        self.since = None;
    }

    /// Feeds bytes read from the client through the framing rules into `out`.
    fn absorb(&mut self, input: &[u8]) -> Result<(), (io::ErrorKind, &'static str)> {
        let mut pending = input.to_vec();
        let mut at = 0;
        while at < pending.len() {
            match &mut self.phase {
                Phase::Closed => return Ok(()),
                Phase::Body(left) => {
                    let take = (*left).min((pending.len() - at) as u64) as usize;
                    self.out.extend_from_slice(&pending[at..at + take]);
                    at += take;
                    *left -= take as u64;
                    if *left == 0 {
                        self.end_of_request();
                    }
                }
                Phase::Chunked(state) => {
                    let take = state
                        .feed(&pending[at..])
                        .map_err(|m| (io::ErrorKind::InvalidData, m))?;
                    let done = *state == Chunked::Done;
                    self.out.extend_from_slice(&pending[at..at + take]);
                    at += take;
                    if done {
                        self.end_of_request();
                    }
                }
                Phase::Head => {
                    let mut from = self.head.len();
                    self.head.extend_from_slice(&pending[at..]);
                    at = pending.len();
                    if from == 0 {
                        self.since = Some((Wait::Header, Instant::now()));
                    }
                    loop {
                        let before = self.conn.heads.load(Ordering::Acquire);
                        self.advance_head(from);
                        let completed = self.conn.heads.load(Ordering::Acquire) != before;
                        if !completed || !matches!(self.phase, Phase::Head) || self.head.is_empty()
                        {
                            break;
                        }
                        // A request without a body completed: what follows is the next head.
                        self.since = Some((Wait::Header, Instant::now()));
                        from = 0;
                    }
                    if matches!(self.phase, Phase::Body(_) | Phase::Chunked(_)) {
                        pending = std::mem::take(&mut self.head);
                        at = 0;
                    }
                }
            }
        }
        Ok(())
    }

    /// Looks at the head bytes collected so far (`from` is where the new ones start); when a
    /// complete head is acceptable, passes it on and enters its body phase, leaving the bytes
    /// after it in `self.head`.
    fn advance_head(&mut self, from: usize) {
        if !self.first_line_seen {
            if let Err(e) = head::strip_leading_empty_lines(&mut self.head) {
                return self.refuse(e);
            }
            if self.head.is_empty() {
                return;
            }
        }
        let from = from.min(self.head.len());
        if !head::worth_parsing(&self.head, from, self.first_line_seen)
            && self.head.len() <= head::MAX_HEAD_BYTES
        {
            return;
        }
        self.first_line_seen = self.head.contains(&b'\n');
        match head::parse_head(&self.head) {
            Err(e) => self.refuse(e),
            Ok(HeadStatus::Partial) => {}
            Ok(HeadStatus::Complete { len, framing }) => {
                self.out.extend_from_slice(&self.head[..len]);
                self.head.drain(..len);
                self.conn.heads.fetch_add(1, Ordering::AcqRel);
                self.first_line_seen = false;
                match framing {
                    Framing::Length(0) => self.end_of_request(),
                    Framing::Length(n) => {
                        self.phase = Phase::Body(n);
                        self.since = Some((Wait::Body, Instant::now()));
                    }
                    Framing::Chunked => {
                        self.phase = Phase::Chunked(Chunked::new());
                        self.since = Some((Wait::Body, Instant::now()));
                    }
                }
            }
        }
    }

    fn end_of_request(&mut self) {
        self.phase = Phase::Head;
        self.served_one = true;
        self.since = None;
    }

    /// What the gate waits for now and until when; `None` while it waits for nothing the client
    /// owes (a request is being handled, or input has ended).
    fn deadline(&mut self) -> Option<(Wait, Instant)> {
        match self.phase {
            Phase::Closed => None,
            Phase::Body(_) | Phase::Chunked(_) => {
                let (_, start) = self.since?;
                Some((Wait::Body, start + self.timeouts.body))
            }
            Phase::Head if !self.head.is_empty() => {
                let (_, start) = self.since?;
                Some((Wait::Header, start + self.timeouts.header))
            }
            Phase::Head => {
                if self.conn.in_flight() {
                    self.since = None;
                    return None;
                }
                let (_, start) = *self.since.get_or_insert((Wait::Idle, Instant::now()));
                let limit = if self.served_one {
                    self.timeouts.idle
                } else {
                    self.timeouts.header
                };
                Some((Wait::Idle, start + limit))
            }
        }
    }
}

impl<T: Read + Unpin> Gate<T> {
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            if self.out_at < self.out.len() || matches!(self.phase, Phase::Closed) {
                return Poll::Ready(Ok(()));
            }
            if let Some((kind, msg)) = self.failed {
                return Poll::Ready(Err(io::Error::new(kind, msg)));
            }
            let mut chunk = [0u8; 8192];
            let n = {
                let mut buf = hyper::rt::ReadBuf::new(&mut chunk);
                match Pin::new(&mut self.io).poll_read(cx, buf.unfilled()) {
                    Poll::Ready(Ok(())) => buf.filled().len(),
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => return self.poll_deadline(cx),
                }
            };
            if n == 0 {
                // The client closed its side: pass on what is complete, then end of input.
                self.phase = Phase::Closed;
                return Poll::Ready(Ok(()));
            }
            if let Err(e) = self.absorb(&chunk[..n]) {
                self.failed = Some(e);
            }
        }
    }

    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some((wait, at)) = self.deadline() else {
            return Poll::Pending;
        };
        if self.read_timer.deadline() != at {
            self.read_timer.as_mut().reset(at);
        }
        if self.read_timer.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        match wait {
            // Nothing started: closing is the normal end of a keep-alive connection.
            Wait::Idle => self.phase = Phase::Closed,
            Wait::Header => self.refuse(ProtocolError {
                status: 408,
                error: format!(
                    "request head not received within {} s",
                    self.timeouts.header.as_secs()
                ),
                hint: "send the whole request head at once",
            }),
            Wait::Body => {
                self.failed = Some((io::ErrorKind::TimedOut, "request body not received in time"));
                self.phase = Phase::Closed;
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request body not received in time",
                )));
            }
        }
        Poll::Ready(Ok(()))
    }

    fn poll_write_timer(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        let send = self.timeouts.send;
        let timer = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(send)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read the response in time",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: Read + Unpin> Read for Gate<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.poll_fill(cx) {
            Poll::Ready(Ok(())) => {}
            other => return other,
        }
        let avail = &this.out[this.out_at..];
        let n = avail.len().min(buf.remaining());
        buf.put_slice(&avail[..n]);
        this.out_at += n;
        if this.out_at == this.out.len() {
            this.out.clear();
            this.out_at = 0;
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: Read + Write + Unpin> Write for Gate<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_write(cx, buf) {
            Poll::Pending => this.poll_write_timer(cx).map(Err),
            done => {
                this.write_timer = None;
                done
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.io).poll_flush(cx) {
            Poll::Pending => this.poll_write_timer(cx).map(Err),
            done => {
                this.write_timer = None;
                done
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}
