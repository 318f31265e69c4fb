//! The approval relay: the OpenClaw gateway passes on a decision a person made in the chat
//! (`/approve` on a plugin approval the bridge asked for) to a ticket the gate opened.
//!
//! It is served on a socket of its own (default [`DEFAULT_RELAY_SOCKET`]) that only the
//! gateway's user may use: the socket (mode 0660) sits in a setgid directory of group
//! `osmoda-relay`, whose only member is that user, and every decision's `SO_PEERCRED` uid must
//! be that user's (root included: refused), and the caller must run in agentd's or the host's mount namespace, so
//! nothing inside the command sandbox (where the directory is masked) can decide. The bridge
//! calls it only from its approval resolution callback, code the model cannot call.
//!
//! The decision is recorded like one made on the approval socket (`approval.approved` /
//! `approval.denied` by a `human[...]` actor) with the person the gateway reports: channel,
//! sender id and owner flag. Only the owner may decide; only tickets the gate or osmoda-keyd opened are relayed.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use serde_json::json;

use super::approvals::{Ticket, GATE, KEYD, LIST};
use crate::error::{ApiError, Json};
use crate::peer::Peer;
use crate::AppState;

/// The relay socket of the NixOS module (`lib/default.nix`, `gateway.relaySocket`).
pub const DEFAULT_RELAY_SOCKET: &str = "/run/osmoda-relay/relay.sock";

/// The person the gateway reports for the decision (OpenClaw's `ctx.requester`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Requester {
    /// Channel the person wrote in (`telegram`, `whatsapp`, `webchat`, ...).
    pub channel: String,
    /// The channel's id of the sender, when the channel has one (the Control UI has none).
    #[serde(default)]
    pub sender_id: Option<String>,
    /// Whether the gateway knows the sender as the owner. Must be `true`.
    pub owner: bool,
}

/// Body of `POST /relay/approval/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayBody {
    /// `approve` or `deny`.
    pub decision: String,
    /// Who decided; a decision without one changes nothing (400).
    pub requester: Option<Requester>,
    /// The gateway's own id of its approval request (`plugin:...`), kept in the ledger.
    #[serde(default)]
    pub approval_request: Option<String>,
}

/// 1..=128 characters that cannot break the actor's `key=value,...` shape or the ledger's
/// `|` encoding.
fn label_ok(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"._@:+-/#".contains(&c))
}

/// The ledger actor of a relayed decision: `human[channel=..,sender=..,owner=true,via=relay,
/// uid=..,pid=..,exe=..]` (the gateway process's kernel identity attached).
fn actor(peer: &Peer, r: &Requester) -> String {
    let kernel = peer.actor("human");
    let inner = kernel
        .strip_prefix("human[")
        .unwrap_or(kernel.as_str())
        .to_string();
    format!(
        "human[channel={},sender={},owner=true,via=relay,{inner}",
        r.channel,
        r.sender_id.as_deref().unwrap_or("-")
    )
}

fn forbidden(msg: impl Into<String>, hint: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, msg).with_detail(json!({ "hint": hint }))
}

/// `POST /relay/approval/{id}` (relay socket only) → the decided [`Ticket`]. 400 bad body or
/// requester, 403 wrong caller or not the owner or not a gate ticket, 404 unknown ticket, 409
/// not pending. Nothing is recorded unless the decision is accepted.
pub async fn decide(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    UrlPath(id): UrlPath<String>,
    Json(b): Json<RelayBody>,
) -> Result<axum::Json<Ticket>, ApiError> {
    // The listener admits only the gateway's uid; this is the same check again, next to the
    // decision, so a wiring mistake cannot open it.
    let Some(expected) = st.settings.relay_uid else {
        return Err(forbidden(
            "the approval relay is not configured",
            "start agentd with --relay-user",
        ));
    };
    if peer.uid != Some(expected) {
        return Err(forbidden(
            format!("only the gateway's user (uid {expected}) may relay decisions"),
            "people decide with `agentctl approvals approve|deny <ticket>`",
        ));
    }
    peer.require_outside_boundary()?;
    let approve = match b.decision.as_str() {
        "approve" => true,
        "deny" => false,
        other => {
            return Err(ApiError::bad_request(format!(
                "decision must be `approve` or `deny`, not {other:?}"
            )))
        }
    };
    let Some(r) = b.requester else {
        return Err(ApiError::bad_request(
            "a relayed decision needs the requester (channel, sender_id, owner); without one nothing is decided",
        ));
    };
    if !label_ok(&r.channel, 40) || !r.sender_id.as_deref().is_none_or(|s| label_ok(s, 128)) {
        return Err(ApiError::bad_request(
            "requester.channel (1..40) and requester.sender_id (1..128) may hold only letters, digits and ._@:+-/#",
        ));
    }
    if b.approval_request
        .as_deref()
        .is_some_and(|a| !label_ok(a, 128))
    {
        return Err(ApiError::bad_request(
            "approval_request: 1..128 of letters, digits and ._@:+-/#",
        ));
    }
    if !r.owner {
        return Err(forbidden(
            "only the owner may decide an approval; this sender is not the owner",
            "the owner answers /approve in the chat, or runs `agentctl approvals approve <ticket>`",
        ));
    }
    let _write = st.approvals_write.lock().await;
    let found = st.approvals().get(&id).map(|t| (t.origin, t.status));
    let Ok((origin, status)) = found else {
        return Err(ApiError::not_found(format!(
            "no approval ticket {id}; {LIST}"
        )));
    };
    // Tickets agentd's gate or osmoda-keyd opened describe the effect themselves; an agent's
    // own request carries only its words, so it is decided with agentctl.
    if origin != GATE && origin != KEYD {
        return Err(forbidden(
            format!("ticket {id} was requested by the agent, not opened by the gate or osmoda-keyd; it is decided with agentctl only"),
            "`agentctl approvals list` shows it with the agent's words",
        ));
    }
    if status != "pending" {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "ticket {id} is {status}, not pending, so there is nothing left to decide; {LIST}"
            ),
        ));
    }
    let kind = if approve {
        "approval.approved"
    } else {
        "approval.denied"
    };
    let ev = st
        .record(
            kind,
            &actor(&peer, &r),
            &json!({
                "id": id,
                "reason": format!("{} in {} through the gateway", if approve { "approved" } else { "denied" }, r.channel),
                "relay": { "channel": r.channel, "sender_id": r.sender_id, "owner": r.owner, "approval_request": b.approval_request },
            }),
        )
        .await?;
    let mut approvals = st.approvals();
    approvals.apply(&ev);
    Ok(axum::Json(approvals.get(&id)?.clone()))
}

/// Routes served only on the relay socket.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/relay/approval/{id}", post(decide))
        .route("/health", get(super::health::health))
}

/// The uid of `user`: a number, or a name looked up in `/etc/passwd`.
///
/// # Errors
/// An unknown name or an unreadable `/etc/passwd`.
pub fn resolve_user(user: &str) -> anyhow::Result<u32> {
    if let Ok(uid) = user.parse() {
        return Ok(uid);
    }
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let name = f.next()?;
            let uid = f.nth(1)?.parse().ok()?;
            (name == user).then_some(uid)
        })
        .next()
        .ok_or_else(|| anyhow::anyhow!("--relay-user {user}: no such user in /etc/passwd"))
}

/// Bind the relay socket at `path` with mode 0660. Its directory is setgid group
/// `osmoda-relay` (the module's tmpfiles rule), whose only member is the gateway's user, so the
/// socket gets that group without a chown (agentd has no `CAP_CHOWN`).
///
/// # Errors
/// The bind fails.
pub fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    osmoda_daemon::bind_unix(path, 0o660)
}

/// Serve the relay on `listener` until `shutdown` fires; a decision is accepted only from a peer
/// with uid `settings.relay_uid`.
///
/// # Errors
/// The listener stops with an I/O error.
pub async fn serve(
    listener: tokio::net::UnixListener,
    state: Arc<AppState>,
    shutdown: crate::Shutdown,
) -> std::io::Result<()> {
    let router = routes()
        .fallback(crate::error::not_found)
        .method_not_allowed_fallback(crate::error::method_not_allowed)
        .layer(axum::middleware::map_response(
            crate::error::json_errors_only,
        ))
        .layer(axum::extract::DefaultBodyLimit::max(64 * 1024))
        .with_state(state);
    osmoda_daemon::server::serve(
        listener,
        "relay",
        crate::Limits::small(),
        router,
        Peer::of,
        shutdown,
    )
    .await
}
