//! One established link: a task owns the Noise transport state and the socket, so every
//! encryption and decryption happens in order in one place. It sends what the API queues,
//! answers pings, rekeys each direction after `Tuning::rekey_messages` messages or
//! `Tuning::rekey_after`, pings when idle, closes a link that went silent, and hands what it
//! receives to the inbox, the request queue or the rotation check.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use crate::frame::{read_frame, write_frame, MAX_FRAME};
use crate::handshake::Established;
use crate::identity::Keys;
use crate::message::{MeshMessage, MAX_PLAINTEXT};
use crate::AppState;
use osmoda_daemon::shutdown::Shutdown;

/// One use of a sending nonce (tests assert none repeats).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NonceUse {
    /// The session's handshake hash.
    pub session: Vec<u8>,
    /// Whether the sender initiated the session.
    pub initiator: bool,
    /// Rekeys of the sending direction so far.
    pub epoch: u64,
    /// The Noise nonce.
    pub nonce: u64,
}

type Ack = Option<oneshot::Sender<Result<(), String>>>;

/// What the API asks of a link.
pub enum Cmd {
    /// Send a message; the sender hears when it was written (or why not).
    Send(MeshMessage, Ack),
    /// Close the link.
    Close(String),
}

/// A handle on a running link.
#[derive(Clone)]
pub struct LinkHandle {
    /// Unique per daemon run.
    pub id: u64,
    /// Queue to the link task.
    pub tx: mpsc::Sender<Cmd>,
    /// Facts about the link.
    pub info: Arc<LinkInfo>,
}

/// Facts about a link.
#[derive(Debug)]
pub struct LinkInfo {
    /// The peer's name.
    pub peer: String,
    /// The peer's keys as verified in the handshake.
    pub keys: Keys,
    /// The peer's identity now: the handshake's keys, then the new keys of each identity
    /// hand-over that verified on this link (the next hand-over must be signed by these).
    pub current: std::sync::Mutex<Keys>,
    /// Whether we dialed.
    pub initiator: bool,
    /// The X25519 key of whoever dialed (the duplicate-link tie-break).
    pub initiator_key: [u8; 32],
    /// The X25519 key the peer knows this host by on this link: the one it authenticated with
    /// (a previous identity's on a link that delivers a hand-over after a restart), then each
    /// hand-over's new key once sent.
    mine: std::sync::Mutex<[u8; 32]>,
    /// The first 8 bytes of the handshake hash, hex.
    pub session: String,
    /// The peer's address.
    pub remote: String,
    /// Seconds since the epoch.
    pub connected_at: u64,
    /// Whether this link was admitted by an invite (its peer may not be in mesh.json yet).
    pub paired: bool,
    /// Counters: messages sent and received, rekeys.
    pub sent: std::sync::atomic::AtomicU64,
    /// Messages received.
    pub received: std::sync::atomic::AtomicU64,
    /// Rekeys (both directions).
    pub rekeys: std::sync::atomic::AtomicU64,
    /// Becomes true once a frame from the peer decrypted (the peer admitted us).
    pub heard: tokio::sync::watch::Sender<bool>,
}

impl LinkInfo {
    /// The X25519 key the peer knows this host by on this link.
    pub fn mine(&self) -> [u8; 32] {
        *self
            .mine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// After a hand-over to `key` was sent on this link.
    pub fn set_mine(&self, key: [u8; 32]) {
        *self
            .mine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = key;
    }

    /// The peer's identity now (see [`LinkInfo::current`]).
    pub fn current_keys(&self) -> Keys {
        self.current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

impl LinkHandle {
    /// Queues `m` and waits until it was written.
    ///
    /// # Errors
    /// The reason when the link is gone or the message cannot be sent.
    pub async fn send(&self, m: MeshMessage) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Cmd::Send(m, Some(tx)))
            .await
            .map_err(|_| "the link closed".to_string())?;
        rx.await.map_err(|_| "the link closed".to_string())?
    }

    /// The link as listed by the API.
    pub fn view(&self) -> Value {
        use std::sync::atomic::Ordering::Relaxed;
        let i = &self.info;
        json!({
            "connected": true,
            "session": i.session,
            "direction": if i.initiator { "outbound" } else { "inbound" },
            "remote": i.remote,
            "connected_at": i.connected_at,
            "sent": i.sent.load(Relaxed),
            "received": i.received.load(Relaxed),
            "rekeys": i.rekeys.load(Relaxed),
            "fingerprint": i.current_keys().fingerprint(),
        })
    }
}

fn epoch_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Registers a new link for `peer`, resolving a duplicate (both hosts dialed each other): the
/// link dialed by the host with the lower X25519 key wins on both sides. Returns the handle and
/// the command receiver when this link is kept, `None` when it lost.
pub fn register(
    st: &Arc<AppState>,
    peer: &str,
    est: &Established,
    remote: String,
    paired: bool,
) -> Option<(LinkHandle, mpsc::Receiver<Cmd>)> {
    let initiator_key = if est.initiator {
        est.local
    } else {
        est.peer.x25519
    };
    let (tx, rx) = mpsc::channel(64);
    let h = LinkHandle {
        id: st.link_id(),
        tx,
        info: Arc::new(LinkInfo {
            peer: peer.to_string(),
            keys: est.peer.clone(),
            current: std::sync::Mutex::new(est.peer.clone()),
            initiator: est.initiator,
            initiator_key,
            mine: std::sync::Mutex::new(est.local),
            session: hex::encode(&est.hash[..8]),
            remote,
            connected_at: epoch_secs(),
            paired,
            sent: Default::default(),
            received: Default::default(),
            rekeys: Default::default(),
            heard: tokio::sync::watch::Sender::new(false),
        }),
    };
    let mut links = st
        .links
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(old) = links.get(peer) {
        // A link with the same keys (the peer's identity now, after any hand-over on it)
        // dialed by the lower key stays; a link with other keys (the peer rotated, or a stale
        // record) is replaced by the newer handshake.
        if old.info.current_keys() == est.peer
            && old.info.initiator_key <= initiator_key
            && !old.tx.is_closed()
        {
            return None;
        }
        let _ = old
            .tx
            .try_send(Cmd::Close("replaced by a newer link".into()));
    }
    links.insert(peer.to_string(), h.clone());
    Some((h, rx))
}

struct Crypto {
    t: snow::TransportState,
    /// The last sealed frame body; one buffer for the link's life, not one per message.
    sealed: Vec<u8>,
    session: Vec<u8>,
    initiator: bool,
    send_epoch: u64,
    since_rekey: u64,
    rekeyed_at: Instant,
    log: Option<Arc<std::sync::Mutex<Vec<NonceUse>>>>,
}

impl Crypto {
    /// Encrypts `m` into `self.sealed` and returns the frame body's length.
    fn seal(&mut self, m: &MeshMessage) -> Result<usize, String> {
        let plain = serde_json::to_vec(m).map_err(|e| e.to_string())?;
        if plain.len() > MAX_PLAINTEXT {
            return Err(format!(
                "the message is {} bytes encoded; at most {MAX_PLAINTEXT} fit in one frame",
                plain.len()
            ));
        }
        if let Some(log) = &self.log {
            log.lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(NonceUse {
                    session: self.session.clone(),
                    initiator: self.initiator,
                    epoch: self.send_epoch,
                    nonce: self.t.sending_nonce(),
                });
        }
        let n = self
            .t
            .write_message(&plain, &mut self.sealed)
            .map_err(|e| format!("encryption: {e}"))?;
        self.since_rekey += 1;
        Ok(n)
    }
}

/// Runs the link until it closes; records connect and disconnect.
pub async fn run(
    st: Arc<AppState>,
    stream: TcpStream,
    est: Established,
    handle: LinkHandle,
    mut cmds: mpsc::Receiver<Cmd>,
    mut shutdown: Shutdown,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let info = handle.info.clone();
    st.agentd
        .event(
            "connect",
            json!({ "peer": info.peer, "session": info.session, "direction": if info.initiator { "outbound" } else { "inbound" }, "remote": info.remote, "paired": info.paired }),
        )
        .await;
    tracing::info!(peer = %info.peer, session = %info.session, "link up");
    let metrics = osmoda_daemon::metrics::global();
    metrics.mesh_link_up(if info.initiator {
        "outbound"
    } else {
        "inbound"
    });
    {
        // Hand-overs a crash kept from being sent go out on this link (or are dropped when the
        // peer already knows this host's identity now).
        let (st2, h) = (st.clone(), handle.clone());
        st.spawn(async move {
            if let Err(e) = crate::handover::deliver(&st2, &h).await {
                tracing::warn!(peer = %h.info.peer, "owed hand-over not sent: {e}");
            }
        });
    }
    let tuning = st.tuning.clone();
    let (rd, mut wr) = stream.into_split();
    // Buffered: a frame's header and body come from one read call, often several frames'.
    let mut rd = tokio::io::BufReader::with_capacity(4 * MAX_FRAME, rd);
    let (ftx, mut frames) = mpsc::channel::<std::io::Result<Vec<u8>>>(16);
    let reader = tokio::spawn(async move {
        loop {
            let f = read_frame(&mut rd).await;
            let end = f.is_err();
            if ftx.send(f).await.is_err() || end {
                return;
            }
        }
    });
    let mut c = Crypto {
        t: est.transport,
        sealed: vec![0u8; MAX_FRAME],
        session: est.hash,
        initiator: est.initiator,
        send_epoch: 0,
        since_rekey: 0,
        rekeyed_at: Instant::now(),
        log: tuning.nonce_log.clone(),
    };
    // The first tick pings at once, so the peer hears from us before anything else happens.
    let mut last_sent = Instant::now()
        .checked_sub(tuning.keepalive)
        .unwrap_or_else(Instant::now);
    let mut last_recv = Instant::now();
    let mut ping_nonce = 0u64;
    let mut plain = vec![0u8; MAX_FRAME];
    let mut tick = tokio::time::interval(
        tuning
            .keepalive
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(10)),
    );
    let reason: String = loop {
        // Each outgoing message: maybe rekey first, then write.
        let mut out: Vec<(MeshMessage, Ack)> = Vec::new();
        tokio::select! {
            _ = shutdown.wait() => break "shutdown".into(),
            cmd = cmds.recv() => match cmd {
                None => break "dropped".into(),
                Some(Cmd::Close(why)) => break why,
                Some(Cmd::Send(m, ack)) => out.push((m, ack)),
            },
            f = frames.recv() => {
                let frame = match f {
                    None | Some(Err(_)) => break "the connection closed".into(),
                    Some(Ok(f)) => f,
                };
                metrics.mesh_frame("received", frame.len());
                let n = match c.t.read_message(&frame, &mut plain) {
                    Ok(n) => n,
                    Err(e) => break format!("a frame did not decrypt ({e}); closing"),
                };
                last_recv = Instant::now();
                info.heard.send_replace(true);
                let m: MeshMessage = match serde_json::from_slice(&plain[..n]) {
                    Ok(m) => m,
                    // Not serde's text: it would quote the peer's bytes into the ledger.
                    Err(_) => break "a message is not a MeshMessage; closing".into(),
                };
                match m {
                    MeshMessage::Ping { nonce } => out.push((MeshMessage::Pong { nonce }, None)),
                    MeshMessage::Pong { .. } => {}
                    MeshMessage::Rekey => {
                        c.t.rekey_incoming();
                        info.rekeys.fetch_add(1, Relaxed);
                        metrics.mesh_rekey("receive");
                    }
                    other => {
                        info.received.fetch_add(1, Relaxed);
                        metrics.mesh_message("received", other.kind());
                        crate::net::received(&st, &handle, other, n);
                    }
                }
            }
            _ = tick.tick() => {
                if last_recv.elapsed() > tuning.dead_after {
                    break format!("nothing received for {} s", tuning.dead_after.as_secs());
                }
                if last_sent.elapsed() >= tuning.keepalive {
                    ping_nonce += 1;
                    out.push((MeshMessage::Ping { nonce: ping_nonce }, None));
                }
            }
        }
        let mut failed = None;
        for (m, ack) in out {
            let res = send_one(&mut c, &mut wr, &m, &tuning, &info).await;
            last_sent = Instant::now();
            let fatal = matches!(&res, Err((true, _)));
            if matches!(
                m,
                MeshMessage::Text { .. }
                    | MeshMessage::Json { .. }
                    | MeshMessage::Request { .. }
                    | MeshMessage::Response { .. }
                    | MeshMessage::Rotate { .. }
            ) && res.is_ok()
            {
                info.sent.fetch_add(1, Relaxed);
                metrics.mesh_message("sent", m.kind());
            }
            if let Some(a) = ack {
                let _ = a.send(res.as_ref().map(drop).map_err(|(_, e)| e.clone()));
            }
            if fatal {
                failed = res.err().map(|(_, e)| e);
                break;
            }
        }
        if let Some(e) = failed {
            break e;
        }
    };
    reader.abort();
    {
        let mut links = st
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if links.get(&info.peer).is_some_and(|l| l.id == handle.id) {
            links.remove(&info.peer);
            // Its queued requests can no longer be answered: they leave the queue.
            st.requests.drop_peer(&info.peer);
        }
    }
    tracing::info!(peer = %info.peer, session = %info.session, %reason, "link down");
    metrics.mesh_link_down(close_kind(&reason));
    st.agentd
        .event(
            "disconnect",
            json!({ "peer": info.peer, "session": info.session, "reason": reason,
                    "sent": info.sent.load(Relaxed), "received": info.received.load(Relaxed),
                    "rekeys": info.rekeys.load(Relaxed) }),
        )
        .await;
}

/// Sends one message (rekeying first when due). `Err((fatal, why))`: fatal when the link is
/// broken, not fatal when only this message was refused (too large).
async fn send_one(
    c: &mut Crypto,
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    m: &MeshMessage,
    tuning: &crate::Tuning,
    info: &LinkInfo,
) -> Result<(), (bool, String)> {
    if c.since_rekey >= tuning.rekey_messages || c.rekeyed_at.elapsed() >= tuning.rekey_after {
        let n = c.seal(&MeshMessage::Rekey).map_err(|e| (true, e))?;
        write(wr, &c.sealed[..n]).await?;
        c.t.rekey_outgoing();
        osmoda_daemon::metrics::global().mesh_rekey("send");
        c.send_epoch += 1;
        c.since_rekey = 0;
        c.rekeyed_at = Instant::now();
        info.rekeys
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
    let n = c.seal(m).map_err(|e| (false, e))?;
    write(wr, &c.sealed[..n]).await
}

async fn write(
    wr: &mut tokio::net::tcp::OwnedWriteHalf,
    frame: &[u8],
) -> Result<(), (bool, String)> {
    match tokio::time::timeout(Duration::from_secs(30), write_frame(wr, frame)).await {
        Ok(Ok(())) => {
            osmoda_daemon::metrics::global().mesh_frame("sent", frame.len());
            Ok(())
        }
        Ok(Err(e)) => Err((true, format!("write: {e}"))),
        Err(_) => Err((true, "write timed out after 30 s".into())),
    }
}

/// The reason a link closed as the fixed word `osmoda_mesh_link_closes_total` counts it by.
pub fn close_kind(reason: &str) -> &'static str {
    const KINDS: [(&str, &str); 12] = [
        ("shutdown", "shutdown"),
        ("dropped", "dropped"),
        ("the connection closed", "connection_closed"),
        ("a frame did not decrypt", "decrypt_failed"),
        ("a message is not a MeshMessage", "bad_message"),
        ("nothing received", "silent"),
        ("write", "write_failed"),
        ("replaced by a newer link", "replaced"),
        ("the peer is no longer declared", "not_declared"),
        ("the peer's declared keys", "keys_changed"),
        ("the peer was removed", "removed"),
        ("disconnected through the API", "api"),
    ];
    KINDS
        .iter()
        .find(|(start, _)| reason.starts_with(start))
        .map_or("other", |(_, k)| k)
}
