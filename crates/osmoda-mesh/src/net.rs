//! The network side: the TCP listener (responder handshakes, admission), the dialer that keeps
//! a link to every declared peer (reconnecting with exponential backoff), pairing through
//! invites, and what happens to received messages (inbox, request queue, identity hand-overs).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};

use crate::handshake::{self, Extra, HandshakeError};
use crate::identity::{handover_bytes, verify, Identity, Keys};
use crate::invite::{secret_hash, Invite};
use crate::link::{self, LinkHandle};
use crate::message::MeshMessage;
use crate::peer_events::Kind;
use crate::{AppState, MeshError};
use osmoda_daemon::shutdown::Shutdown;

/// Handshakes in progress at once, all sources together, and from one network (an IPv4 /24,
/// an IPv6 /64: one attacker holds many addresses of one network, rarely many networks). Each
/// lasts at most [`handshake::RESPOND_DEADLINE`] from accept to admission.
const MAX_HANDSHAKES: usize = 64;
const MAX_HANDSHAKES_PER_NET: usize = 8;
/// Inbound refusals recorded in the ledger per minute at most; the rest are counted and the
/// count rides on the next recorded one (`suppressed`).
const REFUSALS_PER_MINUTE: u32 = 30;

/// The network an address is accounted to.
fn network(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            std::net::IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, 0))
        }
        std::net::IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return network(std::net::IpAddr::V4(v4));
            }
            let s = v6.segments();
            std::net::IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
    }
}

/// How many inbound refusals may still be recorded this minute.
struct RefusalBudget {
    window: Instant,
    recorded: u32,
    suppressed: u64,
}

impl RefusalBudget {
    /// `Some(suppressed since the last recorded one)` when this refusal is recorded.
    fn take(&mut self) -> Option<u64> {
        if self.window.elapsed() >= Duration::from_secs(60) {
            self.window = Instant::now();
            self.recorded = 0;
        }
        if self.recorded >= REFUSALS_PER_MINUTE {
            self.suppressed += 1;
            return None;
        }
        self.recorded += 1;
        Some(std::mem::take(&mut self.suppressed))
    }
}

/// Handshakes in progress (not yet admitted: nothing about their sender is known), bounded
/// per network ([`MAX_HANDSHAKES_PER_NET`]) and overall ([`MAX_HANDSHAKES`]), and shared
/// fairly between networks: when all are taken, a newcomer takes the oldest slot of the
/// network holding the most, if that network holds at least two more than the newcomer's
/// would; otherwise the newcomer is refused. So a flood refilling its slots as fast as they
/// free takes them from itself, never from a network holding fewer (a new honest peer holds
/// one), and every slot ends by the handshake deadline whatever its holder does.
#[derive(Default)]
struct Slots {
    next: u64,
    open: std::collections::BTreeMap<u64, (std::net::IpAddr, tokio::sync::oneshot::Sender<()>)>,
    per_net: HashMap<std::net::IpAddr, usize>,
}

/// Why [`Slots::take`] refused a newcomer.
#[derive(Debug, PartialEq, Eq)]
enum NoSlot {
    /// Its network holds [`MAX_HANDSHAKES_PER_NET`] already.
    Network,
    /// All slots are taken by networks holding no more than one over the newcomer's.
    Full,
}

impl Slots {
    /// A slot for a new handshake from `net`. The receiver fires when the slot is taken from
    /// it for a newcomer.
    fn take(
        &mut self,
        net: std::net::IpAddr,
    ) -> Result<(u64, tokio::sync::oneshot::Receiver<()>), NoSlot> {
        let mine = self.per_net.get(&net).copied().unwrap_or(0);
        if mine >= MAX_HANDSHAKES_PER_NET {
            return Err(NoSlot::Network);
        }
        if self.open.len() >= MAX_HANDSHAKES {
            // The network holding the most (ties: the one whose slot is oldest), and its
            // oldest slot.
            let (victim, _) = self
                .open
                .iter()
                .map(|(k, (n, _))| (*k, self.per_net.get(n).copied().unwrap_or(0)))
                .fold(None::<(u64, usize)>, |best, (k, c)| match best {
                    Some((_, bc)) if bc >= c => best,
                    _ => Some((k, c)),
                })
                .ok_or(NoSlot::Full)?;
            let most = self.open.get(&victim).map_or(0, |(n, _)| self.per_net[n]);
            if most < mine + 2 {
                return Err(NoSlot::Full);
            }
            if let Some((n, tx)) = self.open.remove(&victim) {
                self.release_net(n);
                let _ = tx.send(());
            }
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.next += 1;
        self.open.insert(self.next, (net, tx));
        *self.per_net.entry(net).or_default() += 1;
        Ok((self.next, rx))
    }

    fn release_net(&mut self, net: std::net::IpAddr) {
        if let Some(c) = self.per_net.get_mut(&net) {
            *c -= 1;
            if *c == 0 {
                self.per_net.remove(&net);
            }
        }
    }

    /// Ends slot `id` (its handshake finished, failed or was dropped).
    fn end(&mut self, id: u64) {
        if let Some((n, _)) = self.open.remove(&id) {
            self.release_net(n);
        }
    }
}

/// How the responder admitted an initiator.
enum Admitted {
    Peer(String),
    Invite(String),
}

/// Runs the listener and the dialer until shutdown.
pub async fn run(st: Arc<AppState>, tcp: TcpListener, shutdown: Shutdown) {
    let dialer = tokio::spawn(dial_loop(st.clone(), shutdown.clone()));
    accept_loop(st, tcp, shutdown).await;
    let _ = dialer.await;
}

async fn accept_loop(st: Arc<AppState>, tcp: TcpListener, mut shutdown: Shutdown) {
    let budget = Arc::new(std::sync::Mutex::new(RefusalBudget {
        window: Instant::now(),
        recorded: 0,
        suppressed: 0,
    }));
    let slots: Arc<std::sync::Mutex<Slots>> = Default::default();
    loop {
        let (stream, addr) = tokio::select! {
            _ = shutdown.wait() => return,
            r = tcp.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let metrics = osmoda_daemon::metrics::global();
        let taken = slots
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take(network(addr.ip()));
        let (slot, dropped) = match taken {
            Ok(x) => x,
            Err(why) => {
                tracing::debug!(%addr, ?why, "no handshake slot for this connection; closing");
                metrics.mesh_handshake("inbound", "limited");
                continue;
            }
        };
        let slots = slots.clone();
        let st = st.clone();
        let budget = budget.clone();
        let sd = shutdown.clone();
        let st0 = st.clone();
        st0.spawn(async move {
            let (res, evicted) = tokio::select! {
                r = inbound(&st, stream, addr) => (r, false),
                _ = dropped => (Err(HandshakeError::Silent("dropped for a newcomer from a network holding fewer handshake slots".into())), true),
            };
            slots
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .end(slot);
            let outcome = match &res {
                _ if evicted => "limited",
                Ok(_) => "ok",
                Err(HandshakeError::Silent(_)) => "silent",
                Err(_) => "refused",
            };
            metrics.mesh_handshake("inbound", outcome);
            match res {
                Ok(Some((stream, est, h, rx))) => link::run(st, stream, est, h, rx, sd).await,
                Ok(None) => {}
                Err(HandshakeError::Silent(e)) => {
                    tracing::debug!(%addr, "inbound connection without a handshake: {e}");
                }
                Err(e) => {
                    tracing::info!(%addr, "inbound handshake refused: {e}");
                    let take = budget
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .take();
                    if let Some(suppressed) = take {
                        st.agentd
                            .event(
                                "handshake.refused",
                                json!({ "remote": addr.to_string(), "direction": "inbound", "reason": e.to_string(), "suppressed": suppressed }),
                            )
                            .await;
                    }
                }
            }
        });
    }
}

type Ready = (
    TcpStream,
    handshake::Established,
    LinkHandle,
    tokio::sync::mpsc::Receiver<link::Cmd>,
);

async fn inbound(
    st: &Arc<AppState>,
    mut stream: TcpStream,
    addr: SocketAddr,
) -> Result<Option<Ready>, HandshakeError> {
    let _ = stream.set_nodelay(true);
    let id = st.identity();
    let (est, extra, admitted) =
        handshake::respond(&mut stream, &id, |keys, extra| admit(st, keys, extra)).await?;
    let (name, paired) = match admitted {
        Admitted::Peer(n) => (n, false),
        Admitted::Invite(n) => (n, true),
    };
    if paired {
        // Where to dial the acceptor: what it says, if that is a host:port, else the address
        // it came from with the listen port it gives. Remote text never reaches the tree
        // unchecked (it becomes a peer record and a commit message).
        let endpoint = extra
            .endpoint
            .clone()
            .filter(|e| osmoda_config::mesh::check_endpoint(e).is_ok())
            .or_else(|| {
                extra
                    .listen_port
                    .filter(|p| *p != 0)
                    .map(|p| SocketAddr::new(addr.ip(), p).to_string())
            });
        st.pending.hold(&name, est.peer.x25519, endpoint.clone());
        // A name given to a new identity starts with an empty inbox.
        if let Err(e) = st.store.clear_inbox(&name) {
            tracing::error!(peer = %name, "cannot clear the inbox: {e}");
        }
        st.agentd
            .event("invite.consumed", json!({ "peer": name, "remote": addr.to_string(), "fingerprint": est.peer.fingerprint() }))
            .await;
        // The inviting side records the accepting peer as a generation too.
        let st2 = st.clone();
        let (n2, keys) = (name.clone(), est.peer.clone());
        st.spawn(async move {
            let Some(ep) = endpoint else {
                tracing::warn!(peer = %n2, "the paired peer gave no usable endpoint; not recorded");
                st2.pending.release(&n2, &keys.x25519);
                st2.agentd
                    .event(
                        "peer.record_failed",
                        json!({ "peer": n2, "error": "the accepting host gave no host:port to dial it at; its link closes" }),
                    )
                    .await;
                return;
            };
            let _g = st2.pairing.lock().await;
            let reason = format!("mesh: pair with {n2} (invite accepted from {ep})");
            match crate::intents::record(&st2, &n2, &ep, &keys, &reason).await {
                Ok((edit, switch)) => {
                    st2.agentd
                        .event("peer.recorded", json!({ "peer": n2, "rev": osmoda_config::tree_edit::landed_rev(&edit), "switch": switch.get("id") }))
                        .await;
                }
                Err(e @ MeshError::Unavailable(_)) => {
                    // Owed, not lost: the record is written when agentd answers, and the name
                    // stays held for the peer meanwhile.
                    tracing::warn!(peer = %n2, "the paired peer's record waits for agentd: {e}");
                    st2.agentd
                        .event("peer.record_owed", json!({ "peer": n2, "error": e.to_string() }))
                        .await;
                }
                Err(e) => {
                    tracing::error!(peer = %n2, "cannot record the paired peer: {e}");
                    // No record, no link: the dialer closes it (records::keep_link).
                    st2.pending.release(&n2, &keys.x25519);
                    st2.agentd
                        .event(
                            "peer.record_failed",
                            json!({ "peer": n2, "error": e.to_string() }),
                        )
                        .await;
                }
            }
        });
    }
    Ok(link::register(st, &name, &est, addr.to_string(), paired)
        .map(|(h, rx)| (stream, est, h, rx)))
}

fn admit(st: &AppState, keys: &Keys, extra: &Extra) -> Result<Admitted, String> {
    if let Some((name, recorded, _)) = st.peer_by_key(&keys.x25519) {
        if recorded.ed25519 != keys.ed25519 || recorded.ml_kem != keys.ml_kem {
            return Err(format!(
                "peer {name}'s X25519 key matches but its Ed25519 or ML-KEM key is not the recorded one"
            ));
        }
        return Ok(Admitted::Peer(name));
    }
    let Some(secret) = &extra.invite else {
        return Err(format!(
            "unknown key {}: neither a declared peer nor presenting an invite",
            keys.fingerprint()
        ));
    };
    let cfg = st
        .config()
        .map_err(|e| format!("mesh.json is invalid: {e}"))?;
    let name = st.store.consume_invite(&secret_hash(secret))?;
    // A name no declared peer, live link or pending record holds, kept until the record is
    // in mesh.json (so a second pairing inside the first one's switch cannot overwrite it).
    let unique = st.pending.hold_unique(&name, keys.x25519, |n| {
        cfg.peers.contains_key(n) || st.link(n).is_some()
    });
    Ok(Admitted::Invite(unique))
}

/// Dials `endpoint` as `id` and runs the initiator handshake expecting `expect`.
///
/// # Errors
/// `Peer` with the reason (connection, protocol, refusal).
pub async fn dial(
    id: &Identity,
    endpoint: &str,
    expect: &Keys,
    extra: Extra,
) -> Result<(TcpStream, handshake::Established), MeshError> {
    let metrics = osmoda_daemon::metrics::global();
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(endpoint))
        .await
        .map_err(|_| {
            MeshError::Peer(format!(
                "connecting to {endpoint} timed out; is the other host's osmoda-mesh running and its port open?"
            ))
        })
        .and_then(|r| {
            r.map_err(|e| {
                MeshError::Peer(format!(
                    "cannot connect to {endpoint}: {e}; is the other host's osmoda-mesh running and its port open?"
                ))
            })
        })
        .inspect_err(|_| metrics.mesh_handshake("outbound", "unreachable"))?;
    let _ = stream.set_nodelay(true);
    let est = handshake::initiate(&mut stream, id, expect, extra)
        .await
        .map_err(|e| {
            metrics.mesh_handshake("outbound", "refused");
            MeshError::Peer(format!("{HANDSHAKE_WITH} {endpoint}: {e}"))
        })?;
    metrics.mesh_handshake("outbound", "ok");
    Ok((stream, est))
}

/// How [`dial`]'s error for a handshake that failed (not a connection) begins.
const HANDSHAKE_WITH: &str = "handshake with";

fn my_extra(st: &AppState) -> Extra {
    Extra {
        invite: None,
        name: Some(st.name.clone()),
        endpoint: None,
        listen_port: *st
            .listen_port
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    }
}

struct Backoff {
    next_at: Instant,
    delay: Duration,
    busy: bool,
    /// While a hand-over is owed: whether the next dial is as the previous identity (the one
    /// the peer knows until it gets the hand-over); attempts alternate with the current one.
    as_previous: bool,
}

async fn dial_loop(st: Arc<AppState>, mut shutdown: Shutdown) {
    let state: Arc<std::sync::Mutex<HashMap<String, Backoff>>> = Default::default();
    let mut tick = tokio::time::interval(st.tuning.tick);
    loop {
        tokio::select! {
            _ = shutdown.wait() => {
                st.record_over_budget(true).await;
                return;
            }
            _ = tick.tick() => {}
        }
        st.record_over_budget(false).await;
        let Ok(cfg) = st.config() else { continue };
        // A link stays only while mesh.json declares its peer with exactly the keys it
        // authenticated, or a pending record (a pairing, a hand-over) holds the name for them.
        st.pending.settle(&cfg);
        // Inboxes follow the identities behind the names, whatever changed them (a reload of
        // mesh.json included).
        st.settle_inboxes(&cfg);
        let links: Vec<LinkHandle> = st
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        for l in links {
            if let Err(why) =
                crate::records::keep_link(&cfg, &st.pending, &l.info.peer, &l.info.current_keys())
            {
                let _ = l.tx.try_send(link::Cmd::Close(why.into()));
            }
        }
        // Hand-overs owed to peers, by the identity they hand over from (the oldest first);
        // those of peers neither declared nor linked any more are dropped.
        let mut owed: HashMap<String, i64> = HashMap::new();
        for h in st.store.handovers().unwrap_or_default() {
            if !cfg.peers.contains_key(&h.peer) && st.link(&h.peer).is_none() {
                let _ = st.store.handover_done(h.seq);
                continue;
            }
            owed.entry(h.peer).or_insert(h.old_identity);
        }
        for (name, p) in &cfg.peers {
            if st.link(name).is_some() {
                state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .remove(name);
                continue;
            }
            let Ok(keys) = Keys::decode(&p.public_keys) else {
                continue;
            };
            let previous;
            {
                let mut m = state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let b = m.entry(name.clone()).or_insert(Backoff {
                    next_at: Instant::now(),
                    delay: st.tuning.backoff_min,
                    busy: false,
                    as_previous: true,
                });
                if b.busy || Instant::now() < b.next_at {
                    continue;
                }
                b.busy = true;
                previous = owed.get(name).copied().filter(|_| b.as_previous);
                b.as_previous = !b.as_previous;
            }
            let id = match previous.map(|row| st.store.identity_at(row)) {
                Some(Ok(old)) => Arc::new(old),
                Some(Err(e)) => {
                    tracing::error!(peer = %name, "cannot open the previous identity to deliver its hand-over: {e}");
                    st.identity()
                }
                None => st.identity(),
            };
            let (st2, state2, name2, ep, sd) = (
                st.clone(),
                state.clone(),
                name.clone(),
                p.endpoint.clone(),
                shutdown.clone(),
            );
            st.spawn(async move {
                let res = dial(&id, &ep, &keys, my_extra(&st2)).await;
                {
                    let mut m = state2
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    if let Some(b) = m.get_mut(&name2) {
                        b.busy = false;
                        if res.is_err() {
                            b.next_at = Instant::now() + b.delay;
                            b.delay = (b.delay * 2).min(st2.tuning.backoff_max);
                        } else {
                            b.delay = st2.tuning.backoff_min;
                        }
                    }
                }
                match res {
                    Ok((stream, est)) => {
                        st2.note_dial_error(&name2, None);
                        let remote = stream
                            .peer_addr()
                            .map(|a| a.to_string())
                            .unwrap_or_default();
                        if let Some((h, rx)) = link::register(&st2, &name2, &est, remote, false) {
                            link::run(st2, stream, est, h, rx, sd).await;
                        }
                    }
                    Err(e) => {
                        let e = e.to_string();
                        // A host that answers with other keys (a man in the middle, a peer
                        // that rotated without a hand-over) is not a host that is down: it is
                        // logged, shown in GET /peer/{id} and recorded once per reason.
                        let refused = e.starts_with(HANDSHAKE_WITH);
                        let changed = st2.note_dial_error(&name2, Some(&e));
                        if refused && changed {
                            tracing::warn!(peer = %name2, "outbound handshake refused: {e}");
                            st2.agentd
                                .event(
                                    "handshake.refused",
                                    json!({ "peer": name2, "direction": "outbound", "remote": ep, "reason": e }),
                                )
                                .await;
                        } else {
                            tracing::debug!(peer = %name2, "dial failed: {e}");
                        }
                    }
                }
            });
        }
    }
}

/// Accepts an invite: dials the inviter, pairs, keeps the link, and records the inviter as a
/// peer (a generation). Returns (peer name, agentd's answer, watch's answer).
///
/// # Errors
/// `BadRequest` for a bad code or name, `Conflict` for a name taken, `Peer` when the inviter
/// refuses or cannot be reached; `Agentd` when recording fails (the link stays up).
pub async fn accept_invite(
    st: &Arc<AppState>,
    shutdown: Shutdown,
    inv: &Invite,
    name: &str,
    endpoint: Option<String>,
) -> Result<(String, serde_json::Value, serde_json::Value), MeshError> {
    let keys = Keys::decode(&inv.keys).map_err(|e| {
        MeshError::BadRequest(format!(
            "the invite's keys: {e}; ask the inviter for a new code"
        ))
    })?;
    if keys.x25519 == st.identity().x25519_public {
        return Err(MeshError::BadRequest(
            "this invite is this host's own; accept it on the other host".into(),
        ));
    }
    let cfg = st
        .config()
        .map_err(|e| MeshError::Conflict(format!("mesh.json is invalid: {e}")))?;
    if cfg.peers.contains_key(name) {
        return Err(MeshError::Conflict(format!(
            "a peer named {name:?} is declared already; give another \"name\""
        )));
    }
    // The name is held for the inviter's keys until its record is in mesh.json: a second
    // acceptance under it (another inviter offering the same host name) is a 409, not an
    // overwrite of the first record.
    if !st
        .pending
        .try_hold(name, keys.x25519, Some(inv.endpoint.clone()), |n| {
            st.name_taken(&cfg, n, &keys.x25519)
        })
    {
        return Err(MeshError::Conflict(format!(
            "a peer named {name:?} is being paired or is connected with other keys; give another \"name\""
        )));
    }
    st.store.clear_inbox(name)?;
    let res = pair_with_inviter(st, shutdown, inv, name, endpoint, &keys).await;
    // An owed record (agentd did not answer) keeps its name: it is written when agentd answers.
    if res
        .as_ref()
        .is_err_and(|e| !matches!(e, MeshError::Unavailable(_)))
    {
        st.pending.release(name, &keys.x25519);
    }
    res
}

async fn pair_with_inviter(
    st: &Arc<AppState>,
    shutdown: Shutdown,
    inv: &Invite,
    name: &str,
    endpoint: Option<String>,
    keys: &Keys,
) -> Result<(String, serde_json::Value, serde_json::Value), MeshError> {
    let mut extra = my_extra(st);
    extra.invite = Some(inv.secret.clone());
    extra.endpoint = endpoint;
    let (stream, est) = dial(&st.identity(), &inv.endpoint, keys, extra).await?;
    let remote = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    // The inviter closes right after message 3 when it refuses the invite, and pings at once
    // when it admits: the first frame that decrypts is the answer.
    if let Some((h, rx)) = link::register(st, name, &est, remote, true) {
        let mut heard = h.info.heard.subscribe();
        let st2 = st.clone();
        st.spawn(link::run(st2, stream, est, h.clone(), rx, shutdown));
        let admitted = tokio::time::timeout(Duration::from_secs(10), async {
            tokio::select! {
                r = heard.wait_for(|v| *v) => r.is_ok(),
                () = h.tx.closed() => false,
            }
        })
        .await;
        if !matches!(admitted, Ok(true)) {
            return Err(MeshError::Peer(
                "the inviter closed the link: the invite is unknown, already used or expired; ask the inviter for a new code"
                    .into(),
            ));
        }
    }
    let _g = st.pairing.lock().await;
    let reason = format!("mesh: pair with {name} (accepted its invite)");
    let (edit, switch) = crate::intents::record(st, name, &inv.endpoint, keys, &reason).await?;
    Ok((name.to_string(), edit, switch))
}

/// Handles an application message from `link`'s peer.
pub fn received(st: &Arc<AppState>, link: &LinkHandle, m: MeshMessage, bytes: usize) {
    let peer = link.info.peer.clone();
    match m {
        MeshMessage::Text { text } => {
            store_msg(st, link, "text", &json!(text), bytes);
        }
        MeshMessage::Json { payload } => {
            store_msg(st, link, "json", &payload, bytes);
        }
        MeshMessage::Request { id, topic, body } => {
            let t = topic.clone();
            let refused = st.requests.push(&peer, id, topic, body).err();
            let kind = if refused.is_some() {
                Kind::RefusedRequest
            } else {
                Kind::Request
            };
            st.peer_event(
                &peer,
                kind,
                bytes,
                "request.receive",
                json!({ "peer": peer, "topic": t, "bytes": bytes, "queued": refused.is_none() }),
            );
            if let Some(why) = refused {
                let _ = link.tx.try_send(link::Cmd::Send(
                    MeshMessage::Response {
                        id,
                        ok: false,
                        body: json!(why),
                    },
                    None,
                ));
            }
        }
        MeshMessage::Response { id, ok, body } => {
            st.requests.answer(&peer, id, ok, body);
        }
        MeshMessage::Rotate {
            new,
            issued_at,
            by_old,
            by_new,
        } => {
            // Verified here, in the link's order, against the identity the peer has now (the
            // handshake's, or the last hand-over's): a second rotation before reconnecting
            // verifies against the first one's keys, and a replayed older hand-over does not.
            let old = link.info.current_keys();
            let verified = verify_handover(&old, &new, issued_at, &by_old, &by_new)
                .and_then(|k| match keys_held_elsewhere(st, &peer, &k) {
                    Some(other) => Err(format!(
                        "its new keys are those of peer {other:?}: a hand-over cannot claim another peer's keys"
                    )),
                    None => Ok(k),
                });
            match verified {
                Ok(newk) => {
                    *link
                        .info
                        .current
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = newk.clone();
                    // The name is held for the new keys at once (the link and the inbox keep
                    // to it), and the inbox passes to the new identity: the old one signed
                    // the hand-over.
                    st.pending
                        .hold(&peer, newk.x25519, record_endpoint(st, &peer));
                    if let Err(e) = st.store.rekey_inbox(&peer, &old.x25519, &newk.x25519) {
                        tracing::error!(%peer, "cannot pass the inbox to the new identity: {e}");
                    }
                    let (st2, info) = (st.clone(), link.info.clone());
                    st.spawn(async move { rotated(&st2, &peer, &info, &old, newk).await });
                }
                Err(e) => {
                    tracing::warn!(%peer, "refused an identity hand-over: {e}");
                    st.peer_event(
                        &peer,
                        Kind::RefusedRotation,
                        bytes,
                        "peer.rotation_refused",
                        json!({ "peer": peer, "reason": e }),
                    );
                }
            }
        }
        MeshMessage::Ping { .. } | MeshMessage::Pong { .. } | MeshMessage::Rekey => {}
    }
}

fn store_msg(
    st: &Arc<AppState>,
    link: &LinkHandle,
    kind: &str,
    body: &serde_json::Value,
    bytes: usize,
) {
    let peer = link.info.peer.as_str();
    let sender = link.info.current_keys();
    if let Err(e) = st
        .store
        .push_inbox(peer, &sender.fingerprint(), &sender.x25519, kind, body)
    {
        tracing::error!(%peer, "cannot store a message: {e}");
    }
    st.peer_event(
        peer,
        Kind::Message,
        bytes,
        "message.receive",
        json!({ "peer": peer, "kind": kind, "bytes": bytes }),
    );
}

/// Another peer (declared, linked or pending under another name) that holds `k`'s X25519 or
/// Ed25519 key, or this host's own.
fn keys_held_elsewhere(st: &AppState, peer: &str, k: &Keys) -> Option<String> {
    let me = st.identity();
    if k.x25519 == me.x25519_public || k.ed25519 == me.signing.verifying_key() {
        return Some(st.name.clone());
    }
    if let Ok(cfg) = st.config() {
        for (name, p) in cfg.peers.iter().filter(|(n, _)| n.as_str() != peer) {
            if let Ok(d) = Keys::decode(&p.public_keys) {
                if d.x25519 == k.x25519 || d.ed25519 == k.ed25519 {
                    return Some(name.clone());
                }
            }
        }
    }
    let links = st
        .links
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    links
        .iter()
        .filter(|(n, _)| n.as_str() != peer)
        .find(|(_, l)| {
            let c = l.info.current_keys();
            c.x25519 == k.x25519 || c.ed25519 == k.ed25519
        })
        .map(|(n, _)| n.clone())
}

/// The peer's new keys when the hand-over from `old` is signed by both `old` and the new identity.
fn verify_handover(
    old: &Keys,
    new: &crate::identity::PublicKeys,
    issued_at: u64,
    by_old: &str,
    by_new: &str,
) -> Result<Keys, String> {
    let newk = Keys::decode(new)?;
    let msg = handover_bytes(old, &newk, issued_at);
    let so = B64.decode(by_old).map_err(|_| "by_old is not base64")?;
    let sn = B64.decode(by_new).map_err(|_| "by_new is not base64")?;
    if !verify(&old.ed25519, &msg, &so) {
        return Err("the hand-over is not signed by the peer's current identity".into());
    }
    if !verify(&newk.ed25519, &msg, &sn) {
        return Err("the hand-over is not signed by the new identity".into());
    }
    Ok(newk)
}

/// Where `peer`'s record says it is reached: the record as it is (applied or still pending),
/// never the socket's address (an inbound link's source port is no place to dial).
fn record_endpoint(st: &AppState, peer: &str) -> Option<String> {
    st.config()
        .ok()
        .and_then(|c| c.peers.get(peer).map(|p| p.endpoint.clone()))
        .or_else(|| st.pending.endpoint(peer))
}

/// Records a verified hand-over (`old` → `newk`) of `peer` as a generation, unless a later
/// hand-over on the same link superseded it (that one records its own keys).
async fn rotated(st: &AppState, peer: &str, info: &link::LinkInfo, old: &Keys, newk: Keys) {
    // The link may stay up with the new keys while their record is on its way (held when the
    // hand-over verified, by the newest one: a superseded one leaves it to its successor).
    if info.current_keys() != newk {
        return;
    }
    let Some(endpoint) = st.pending.endpoint(peer) else {
        st.pending.release(peer, &newk.x25519);
        st.agentd
            .event(
                "peer.record_failed",
                json!({ "peer": peer, "error": "no endpoint is known for it; the rotated keys are not recorded and its link closes" }),
            )
            .await;
        return;
    };
    let _g = st.pairing.lock().await;
    if info.current_keys() != newk {
        return;
    }
    let reason = format!(
        "mesh: {peer} rotated its identity ({} → {})",
        old.fingerprint(),
        newk.fingerprint()
    );
    match crate::intents::record(st, peer, &endpoint, &newk, &reason).await {
        Ok((edit, _)) => {
            st.agentd
                .event("peer.rotated", json!({ "peer": peer, "old": old.fingerprint(), "new": newk.fingerprint(), "rev": osmoda_config::tree_edit::landed_rev(&edit) }))
                .await;
        }
        Err(e @ MeshError::Unavailable(_)) => {
            tracing::warn!(%peer, "the rotated keys' record waits for agentd: {e}");
            st.agentd
                .event(
                    "peer.record_owed",
                    json!({ "peer": peer, "error": e.to_string() }),
                )
                .await;
        }
        Err(e) => {
            tracing::error!(%peer, "cannot record the rotated keys: {e}");
            st.pending.release(peer, &newk.x25519);
            st.agentd
                .event(
                    "peer.record_failed",
                    json!({ "peer": peer, "error": e.to_string() }),
                )
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn net(a: u8) -> std::net::IpAddr {
        network(std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, a, 0, 9)))
    }

    /// Finding 3: pre-handshake slots are bounded per network and overall; a full table is
    /// shared fairly: a newcomer from a network holding fewer takes the oldest slot of the
    /// network holding the most, a flood refilling its own slots is refused, and a network
    /// holding one slot (a new honest peer) never loses it to a flood.
    #[test]
    fn slots_are_bounded_per_network_and_overall_and_shared_fairly() {
        let mut s = Slots::default();
        let mut fired = Vec::new();
        for a in 1..=8u8 {
            for _ in 0..MAX_HANDSHAKES_PER_NET {
                fired.push((a, s.take(net(a)).unwrap()));
            }
        }
        assert_eq!(s.open.len(), MAX_HANDSHAKES);
        assert_eq!(s.take(net(1)).unwrap_err(), NoSlot::Network);
        // A newcomer from a ninth network: the oldest slot of the (tied) largest network goes.
        let (honest, mut honest_rx) = s.take(net(9)).unwrap();
        assert_eq!(s.open.len(), MAX_HANDSHAKES);
        assert!(
            fired[0].1 .1.try_recv().is_ok(),
            "the oldest slot was taken"
        );
        assert!(fired[1].1 .1.try_recv().is_err());
        assert_eq!(s.per_net[&net(1)], 7);
        // The flood refills network 1 (7 → 8 would need a slot from a network of 8): refused.
        assert_eq!(s.take(net(1)).unwrap_err(), NoSlot::Full);
        // Ten more networks arrive: each takes from the largest, never from the newcomer's.
        for a in 10..=40u8 {
            let _ = s.take(net(a));
            assert!(honest_rx.try_recv().is_err(), "the honest slot stays");
            assert!(s.open.len() <= MAX_HANDSHAKES);
            assert!(s.per_net.values().all(|&c| c <= MAX_HANDSHAKES_PER_NET));
        }
        // 63 flood slots of networks 1..=8 gave 31 newcomers one each: 4 left in each.
        assert!((1..=8).all(|a| s.per_net[&net(a)] == 4), "{:?}", s.per_net);
        s.end(honest);
        assert!(!s.open.contains_key(&honest));
        let total: usize = s.per_net.values().sum();
        assert_eq!(total, s.open.len(), "per-network counts follow the slots");

        // 64 networks holding one each: a newcomer is refused rather than taking a slot of
        // a network holding as few as it would.
        let mut s = Slots::default();
        let _held: Vec<_> = (0..MAX_HANDSHAKES)
            .map(|i| {
                let ip = std::net::Ipv4Addr::new(10, (i / 200) as u8, (i % 200) as u8, 1);
                s.take(network(ip.into())).unwrap()
            })
            .collect();
        assert_eq!(s.take(net(1)).unwrap_err(), NoSlot::Full);
    }

    /// A hand-over from `old` to `new` as `POST /identity/rotate` makes it.
    fn handover(
        old: &Identity,
        new: &Identity,
    ) -> (crate::identity::PublicKeys, u64, String, String) {
        use ed25519_dalek::Signer as _;
        let issued_at = 1_700_000_000;
        let msg = handover_bytes(&old.keys(), &new.keys(), issued_at);
        (
            new.keys().encode(),
            issued_at,
            B64.encode(old.signing.sign(&msg).to_bytes()),
            B64.encode(new.signing.sign(&msg).to_bytes()),
        )
    }

    /// Hand-overs verify against the peer's identity now: the second of two rotations on one
    /// link against the first one's keys (it was refused while the link kept the handshake's),
    /// and neither a replayed older hand-over nor one signed by a stranger does.
    #[test]
    fn hand_overs_verify_against_the_identity_now() {
        let ids: Vec<Identity> = (0..3).map(|_| Identity::generate().unwrap()).collect();
        let (k0, k1, k2) = (ids[0].keys(), ids[1].keys(), ids[2].keys());
        let check = |now: &Keys, h: &(crate::identity::PublicKeys, u64, String, String)| {
            verify_handover(now, &h.0, h.1, &h.2, &h.3)
        };
        let first = handover(&ids[0], &ids[1]);
        let second = handover(&ids[1], &ids[2]);
        assert_eq!(check(&k0, &first).unwrap(), k1);
        assert_eq!(check(&k1, &second).unwrap(), k2);
        let e = check(&k0, &second).unwrap_err();
        assert!(
            e.contains("not signed by the peer's current identity"),
            "{e}"
        );
        let e = check(&k1, &first).unwrap_err();
        assert!(
            e.contains("not signed by the peer's current identity"),
            "{e}"
        );
        // Signed by the current identity but not by the new one it names.
        let mut forged = handover(&ids[1], &ids[2]);
        forged.3 = handover(&ids[1], &ids[0]).3;
        let e = check(&k1, &forged).unwrap_err();
        assert!(e.contains("not signed by the new identity"), "{e}");
        let mut bad = first.clone();
        bad.2 = "%%".into();
        assert!(check(&k0, &bad).is_err());
    }
}
