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
use crate::identity::{handover_bytes, verify, Keys};
use crate::invite::{secret_hash, Invite};
use crate::link::{self, LinkHandle};
use crate::message::MeshMessage;
use crate::{AppState, MeshError};
use osmoda_daemon::shutdown::Shutdown;

/// Handshakes in progress at once (all peers), and from one IP address.
const MAX_HANDSHAKES: usize = 64;
const MAX_HANDSHAKES_PER_IP: usize = 8;

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
    let per_ip: Arc<std::sync::Mutex<HashMap<std::net::IpAddr, usize>>> = Default::default();
    let total = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
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
        let Ok(permit) = total.clone().try_acquire_owned() else {
            tracing::warn!(%addr, "too many handshakes in progress; closing");
            continue;
        };
        {
            let mut m = per_ip
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let n = m.entry(addr.ip()).or_default();
            if *n >= MAX_HANDSHAKES_PER_IP {
                tracing::warn!(%addr, "too many handshakes from this address; closing");
                continue;
            }
            *n += 1;
        }
        let st = st.clone();
        let per_ip = per_ip.clone();
        let sd = shutdown.clone();
        let st0 = st.clone();
        st0.spawn(async move {
            let res = inbound(&st, stream, addr).await;
            drop(permit);
            {
                let mut m = per_ip
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if let Some(n) = m.get_mut(&addr.ip()) {
                    *n -= 1;
                    if *n == 0 {
                        m.remove(&addr.ip());
                    }
                }
            }
            match res {
                Ok(Some((stream, est, h, rx))) => link::run(st, stream, est, h, rx, sd).await,
                Ok(None) => {}
                Err(e) => {
                    tracing::info!(%addr, "inbound handshake refused: {e}");
                    st.agentd
                        .event(
                            "handshake.refused",
                            json!({ "remote": addr.to_string(), "direction": "inbound", "reason": e.to_string() }),
                        )
                        .await;
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
        let endpoint = extra.endpoint.clone().or_else(|| {
            extra
                .listen_port
                .map(|p| SocketAddr::new(addr.ip(), p).to_string())
        });
        st.agentd
            .event("invite.consumed", json!({ "peer": name, "remote": addr.to_string(), "fingerprint": est.peer.fingerprint() }))
            .await;
        // The inviting side records the accepting peer as a generation too.
        let st2 = st.clone();
        let (n2, keys) = (name.clone(), est.peer.clone());
        st.spawn(async move {
            let Some(ep) = endpoint else {
                tracing::warn!(peer = %n2, "the paired peer gave no endpoint; not recorded");
                return;
            };
            let _g = st2.pairing.lock().await;
            let reason = format!("mesh: pair with {n2} (invite accepted from {ep})");
            match st2.agentd.record_peer(&n2, &ep, &keys, &reason).await {
                Ok((edit, switch)) => {
                    st2.agentd
                        .event("peer.recorded", json!({ "peer": n2, "rev": osmoda_config::tree_edit::landed_rev(&edit), "switch": switch.get("id") }))
                        .await;
                }
                Err(e) => {
                    tracing::error!(peer = %n2, "cannot record the paired peer: {e}");
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
    let name = st.store.consume_invite(&secret_hash(secret))?;
    let cfg = st
        .config()
        .map_err(|e| format!("mesh.json is invalid: {e}"))?;
    let mut unique = name.clone();
    let mut k = 2;
    while cfg.peers.contains_key(&unique) {
        unique = format!("{name}-{k}");
        k += 1;
    }
    Ok(Admitted::Invite(unique))
}

/// Dials `endpoint` and runs the initiator handshake expecting `expect`.
///
/// # Errors
/// `Peer` with the reason (connection, protocol, refusal).
pub async fn dial(
    st: &AppState,
    endpoint: &str,
    expect: &Keys,
    extra: Extra,
) -> Result<(TcpStream, handshake::Established), MeshError> {
    let mut stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(endpoint))
        .await
        .map_err(|_| {
            MeshError::Peer(format!(
                "connecting to {endpoint} timed out; is the other host's osmoda-mesh running and its port open?"
            ))
        })?
        .map_err(|e| {
            MeshError::Peer(format!(
                "cannot connect to {endpoint}: {e}; is the other host's osmoda-mesh running and its port open?"
            ))
        })?;
    let _ = stream.set_nodelay(true);
    let id = st.identity();
    let est = handshake::initiate(&mut stream, &id, expect, extra)
        .await
        .map_err(|e| MeshError::Peer(format!("handshake with {endpoint}: {e}")))?;
    Ok((stream, est))
}

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
}

async fn dial_loop(st: Arc<AppState>, mut shutdown: Shutdown) {
    let state: Arc<std::sync::Mutex<HashMap<String, Backoff>>> = Default::default();
    let mut tick = tokio::time::interval(st.tuning.tick);
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tick.tick() => {}
        }
        let Ok(cfg) = st.config() else { continue };
        // Links to peers no longer declared close (unless just paired: their record is on
        // its way through SafeSwitch).
        let stale: Vec<LinkHandle> = st
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .filter(|l| !l.info.paired && !cfg.peers.contains_key(&l.info.peer))
            .cloned()
            .collect();
        for l in stale {
            let _ =
                l.tx.try_send(link::Cmd::Close("the peer is no longer declared".into()));
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
            {
                let mut m = state
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let b = m.entry(name.clone()).or_insert(Backoff {
                    next_at: Instant::now(),
                    delay: st.tuning.backoff_min,
                    busy: false,
                });
                if b.busy || Instant::now() < b.next_at {
                    continue;
                }
                b.busy = true;
            }
            let (st2, state2, name2, ep, sd) = (
                st.clone(),
                state.clone(),
                name.clone(),
                p.endpoint.clone(),
                shutdown.clone(),
            );
            st.spawn(async move {
                let res = dial(&st2, &ep, &keys, my_extra(&st2)).await;
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
                        let remote = stream
                            .peer_addr()
                            .map(|a| a.to_string())
                            .unwrap_or_default();
                        if let Some((h, rx)) = link::register(&st2, &name2, &est, remote, false) {
                            link::run(st2, stream, est, h, rx, sd).await;
                        }
                    }
                    Err(e) => {
                        tracing::debug!(peer = %name2, "dial failed: {e}");
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
    let mut extra = my_extra(st);
    extra.invite = Some(inv.secret.clone());
    extra.endpoint = endpoint;
    let (stream, est) = dial(st, &inv.endpoint, &keys, extra).await?;
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
    let (edit, switch) = st
        .agentd
        .record_peer(name, &inv.endpoint, &keys, &reason)
        .await?;
    Ok((name.to_string(), edit, switch))
}

/// Handles an application message from `link`'s peer.
pub async fn received(st: &Arc<AppState>, link: &LinkHandle, m: MeshMessage, bytes: usize) {
    let peer = link.info.peer.clone();
    match m {
        MeshMessage::Text { text } => {
            store_msg(st, &peer, "text", &json!(text), bytes).await;
        }
        MeshMessage::Json { payload } => {
            store_msg(st, &peer, "json", &payload, bytes).await;
        }
        MeshMessage::Request { id, topic, body } => {
            st.agentd
                .event(
                    "request.receive",
                    json!({ "peer": peer, "topic": topic, "bytes": bytes }),
                )
                .await;
            if let Err(why) = st.requests.push(&peer, id, topic, body) {
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
            match verify_handover(&old, &new, issued_at, &by_old, &by_new) {
                Ok(newk) => {
                    *link
                        .info
                        .current
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = newk.clone();
                    let (st2, info) = (st.clone(), link.info.clone());
                    st.spawn(async move { rotated(&st2, &peer, &info, &old, newk).await });
                }
                Err(e) => {
                    tracing::warn!(%peer, "refused an identity hand-over: {e}");
                    st.agentd
                        .event(
                            "peer.rotation_refused",
                            json!({ "peer": peer, "reason": e }),
                        )
                        .await;
                }
            }
        }
        MeshMessage::Ping { .. } | MeshMessage::Pong { .. } | MeshMessage::Rekey => {}
    }
}

async fn store_msg(st: &AppState, peer: &str, kind: &str, body: &serde_json::Value, bytes: usize) {
    if let Err(e) = st.store.push_inbox(peer, kind, body) {
        tracing::error!(%peer, "cannot store a message: {e}");
    }
    st.agentd
        .event(
            "message.receive",
            json!({ "peer": peer, "kind": kind, "bytes": bytes }),
        )
        .await;
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

/// Records a verified hand-over (`old` → `newk`) of `peer` as a generation, unless a later
/// hand-over on the same link superseded it (that one records its own keys).
async fn rotated(st: &AppState, peer: &str, info: &link::LinkInfo, old: &Keys, newk: Keys) {
    let endpoint = st
        .config()
        .ok()
        .and_then(|c| c.peers.get(peer).map(|p| p.endpoint.clone()))
        .or_else(|| st.link(peer).map(|l| l.info.remote.clone()));
    let Some(endpoint) = endpoint else { return };
    let _g = st.pairing.lock().await;
    if info.current_keys() != newk {
        return;
    }
    let reason = format!(
        "mesh: {peer} rotated its identity ({} → {})",
        old.fingerprint(),
        newk.fingerprint()
    );
    match st.agentd.record_peer(peer, &endpoint, &newk, &reason).await {
        Ok((edit, _)) => {
            st.agentd
                .event("peer.rotated", json!({ "peer": peer, "old": old.fingerprint(), "new": newk.fingerprint(), "rev": osmoda_config::tree_edit::landed_rev(&edit) }))
                .await;
        }
        Err(e) => {
            tracing::error!(%peer, "cannot record the rotated keys: {e}");
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
