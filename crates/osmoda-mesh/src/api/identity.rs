//! `/health`, `/identity`, `/identity/rotate`, `/invite/create`, `/invite/accept`.

use std::sync::Arc;

use axum::extract::State;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::Signer as _;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_peer_name, ApiError, Json};
use crate::error::MeshError;
use crate::identity::handover_bytes;
use crate::invite::{fresh_secret, secret_hash, Invite, DEFAULT_TTL_SECS, MAX_TTL_SECS};
use crate::message::MeshMessage;
use crate::AppState;

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(super) async fn health(State(st): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let cfg = st.config();
    let links = st
        .links
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .len();
    Ok(axum::Json(json!({
        "status": if cfg.is_ok() { "ok" } else { "config_refused" },
        "peers": cfg.as_ref().map_or(0, |c| c.peers.len()),
        "connected": links,
        "listen_port": *st.listen_port.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
        "invites": st.store.invites()?.len(),
        "config_error": cfg.err(),
    })))
}

pub(super) async fn identity(State(st): State<Arc<AppState>>) -> axum::Json<Value> {
    let id = st.identity();
    let k = id.keys();
    axum::Json(json!({
        "name": st.name,
        "public_keys": k.encode(),
        "fingerprint": k.fingerprint(),
        "noise": crate::handshake::PATTERN,
        "kem": "ML-KEM-768",
    }))
}

/// Body of `POST /identity/rotate`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RotateBody {
    /// Rotate although some declared peers are not connected: their hand-over is kept and
    /// delivered when this host reaches them as its previous identity; until then they refuse
    /// the new one (default false: 409).
    #[serde(default)]
    force: bool,
}

pub(super) async fn rotate(
    State(st): State<Arc<AppState>>,
    Json(b): Json<RotateBody>,
) -> Result<axum::Json<Value>, ApiError> {
    // One rotation at a time: two would sign hand-overs from the same old identity, and the
    // peers would accept one while this host keeps the other.
    let Ok(_one) = st.rotating.try_lock() else {
        return Err(MeshError::Conflict(
            "another identity rotation is running; wait for its answer, then GET /identity".into(),
        )
        .into());
    };
    // A hand-over travels only on a link: a declared peer that is not connected now refuses
    // the new identity as a man in the middle until the dialer delivers its hand-over.
    let cfg = st
        .config()
        .map_err(|e| MeshError::Conflict(format!("mesh.json is invalid: {e}")))?;
    let unreachable: Vec<String> = cfg
        .peers
        .keys()
        .filter(|n| st.link(n).is_none())
        .cloned()
        .collect();
    if !unreachable.is_empty() && !b.force {
        return Err(MeshError::Conflict(format!(
            "declared peers not connected now cannot get the hand-over yet and refuse the new identity until they do: {}; rotate when they are connected (GET /peers), or send {{\"force\": true}}: their hand-over is kept and delivered when this host reaches them as its previous identity",
            unreachable.join(", ")
        ))
        .into());
    }
    let old = st.identity();
    let new = crate::identity::Identity::generate().map_err(MeshError::Internal)?;
    let (ok, nk) = (old.keys(), new.keys());
    let issued_at = now() as u64;
    let msg = handover_bytes(&ok, &nk, issued_at);
    let rot = MeshMessage::Rotate {
        new: nk.encode(),
        issued_at,
        by_old: B64.encode(old.signing.sign(&msg).to_bytes()),
        by_new: B64.encode(new.signing.sign(&msg).to_bytes()),
    };
    let links: Vec<_> = st
        .links
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .values()
        .cloned()
        .collect();
    // Every peer that knows the old identity is owed the hand-over, durably, in the same
    // transaction that makes the new identity current (and revokes the open invites, which
    // name the old keys): a crash before the sends below leaves it owed, not lost.
    let mut owed: Vec<String> = cfg.peers.keys().cloned().collect();
    for l in &links {
        if !owed.contains(&l.info.peer) {
            owed.push(l.info.peer.clone());
        }
    }
    let message = serde_json::to_string(&rot)
        .map_err(|e| MeshError::Internal(format!("cannot encode the hand-over: {e}")))?;
    let invites_revoked = st.store.rotate_to(&new, &message, &owed)?;
    st.set_identity(new);
    st.pause("rotate-sealed").await;
    let mut notified = Vec::new();
    let mut failed = Vec::new();
    for l in links {
        match crate::handover::deliver(&st, &l).await {
            Ok(_) => notified.push(l.info.peer.clone()),
            Err(e) => failed.push(json!({ "peer": l.info.peer, "error": e })),
        }
    }
    st.agentd
        .event("identity.rotate", json!({ "old": ok.fingerprint(), "new": nk.fingerprint(), "notified": notified, "failed": failed, "unreachable": unreachable, "invites_revoked": invites_revoked }))
        .await;
    Ok(axum::Json(json!({
        "public_keys": nk.encode(),
        "fingerprint": nk.fingerprint(),
        "previous": ok.fingerprint(),
        "notified": notified,
        "failed": failed,
        "unreachable": unreachable,
        "invites_revoked": invites_revoked,
    })))
}

/// Body of `POST /invite/create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateBody {
    /// Lifetime, 1..=604800 s (default 3600).
    ttl_secs: Option<u64>,
    /// What this host will call the peer that accepts (default: the name it offers).
    name: Option<String>,
    /// `host:port` the accepting host dials (default: the listen address, unless it is a
    /// wildcard such as 0.0.0.0).
    endpoint: Option<String>,
}

pub(super) async fn invite_create(
    State(st): State<Arc<AppState>>,
    Json(b): Json<CreateBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let ttl = b.ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
    if ttl == 0 || ttl > MAX_TTL_SECS {
        return Err(
            MeshError::BadRequest(format!("ttl_secs must be in 1..={MAX_TTL_SECS}")).into(),
        );
    }
    let cfg = st
        .config()
        .map_err(|e| MeshError::Conflict(format!("mesh.json is invalid: {e}")))?;
    let endpoint = match b.endpoint {
        Some(e) => e,
        None => {
            let wildcard = cfg
                .listen
                .parse::<std::net::SocketAddr>()
                .map_or(true, |a| a.ip().is_unspecified());
            if wildcard {
                return Err(MeshError::BadRequest(format!(
                    "listen is {}, which peers cannot dial; give \"endpoint\": the host:port peers reach this host at",
                    cfg.listen
                ))
                .into());
            }
            cfg.listen.clone()
        }
    };
    super::check_endpoint("endpoint", &endpoint)?;
    let peer_name = b.name.unwrap_or_else(|| "peer".into());
    check_peer_name(&peer_name)?;
    let secret = fresh_secret().map_err(MeshError::Internal)?;
    let expires_at = now() + ttl as i64;
    st.store
        .add_invite(&secret_hash(&secret), &peer_name, expires_at)?;
    let inv = Invite {
        v: 1,
        endpoint: endpoint.clone(),
        keys: st.identity().public(),
        name: st.name.clone(),
        expires_at,
        secret,
    };
    st.agentd
        .event(
            "invite.create",
            json!({ "peer_name": peer_name, "endpoint": endpoint, "expires_at": expires_at }),
        )
        .await;
    Ok(axum::Json(json!({
        "invite_code": inv.encode(),
        "expires_at": expires_at,
        "endpoint": endpoint,
        "peer_name": peer_name,
    })))
}

/// Body of `POST /invite/accept`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AcceptBody {
    /// The code from `/invite/create` on the other host.
    invite_code: String,
    /// What this host calls the inviter (default: the name in the invite).
    name: Option<String>,
    /// `host:port` the inviter dials this host at (default: the address it sees and this
    /// host's listen port).
    endpoint: Option<String>,
}

pub(super) async fn invite_accept(
    State(st): State<Arc<AppState>>,
    Json(b): Json<AcceptBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let inv = Invite::decode(&b.invite_code).map_err(MeshError::BadRequest)?;
    if inv.expires_at <= now() {
        return Err(MeshError::BadRequest(format!(
            "the invite expired at {} (seconds since the epoch); ask for a new one",
            inv.expires_at
        ))
        .into());
    }
    let name = b.name.unwrap_or_else(|| inv.name.clone());
    check_peer_name(&name)?;
    if let Some(e) = &b.endpoint {
        super::check_endpoint("endpoint", e)?;
    }
    let res = crate::net::accept_invite(&st, st.shutdown(), &inv, &name, b.endpoint).await;
    st.agentd
        .event("invite.accept", json!({ "peer": name, "endpoint": inv.endpoint, "ok": res.is_ok(), "error": res.as_ref().err().map(ToString::to_string) }))
        .await;
    let (name, edit, switch) = res?;
    Ok(axum::Json(
        json!({ "peer": name, "config": edit, "switch": switch }),
    ))
}
