//! `/peers`, `/peer/{id}` (read, remove), `/peer/{id}/send|inbox|request`, and the receiving
//! end of requests, `/requests/next` and `/requests/{id}/respond`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{check_peer_name, ApiError, Json, Path};
use crate::error::MeshError;
use crate::message::{valid_topic, MeshMessage};
use crate::topics::Caller;
use crate::AppState;

/// The kernel's identity of the caller (`SO_PEERCRED`, inserted by the listener).
type Cred = Option<axum::Extension<osmoda_daemon::server::PeerCred>>;

/// The caller as far as topics go, and why agentd's uid is unknown (if it is).
async fn caller(st: &AppState, cred: Cred) -> (Caller, Option<String>) {
    Caller::of(cred.and_then(|c| c.0.uid), st.agentd.socket()).await
}

fn view(
    st: &AppState,
    cfg: &osmoda_config::MeshConfig,
    name: &str,
    p: Option<&osmoda_config::Peer>,
) -> Value {
    st.settle_inbox(cfg, name);
    let link = st.link(name);
    let mut v = json!({
        "id": name,
        "declared": p.is_some(),
        "endpoint": p.map(|p| p.endpoint.clone()),
        "public_keys": p.map(|p| p.public_keys.clone()),
        "connection": link.as_ref().map_or(json!({ "connected": false }), |l| l.view()),
        "inbox": st.store.inbox_len(name).unwrap_or(0),
        "last_error": st.dial_error(name),
    });
    if let (None, Some(l)) = (p, &link) {
        v["public_keys"] = serde_json::to_value(l.info.current_keys().encode()).unwrap_or_default();
    }
    v
}

pub(super) async fn list(State(st): State<Arc<AppState>>) -> Result<axum::Json<Value>, ApiError> {
    let cfg = st
        .config()
        .map_err(|e| MeshError::Conflict(format!("mesh.json is invalid: {e}")))?;
    let mut names: Vec<String> = cfg.peers.keys().cloned().collect();
    for n in st
        .links
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .keys()
    {
        if !cfg.peers.contains_key(n) {
            names.push(n.clone());
        }
    }
    Ok(axum::Json(Value::Array(
        names
            .iter()
            .map(|n| view(&st, &cfg, n, cfg.peers.get(n)))
            .collect(),
    )))
}

type Known = (Arc<osmoda_config::MeshConfig>, Option<osmoda_config::Peer>);

fn known(st: &AppState, id: &str) -> Result<Known, MeshError> {
    check_peer_name(id)?;
    let cfg = st
        .config()
        .map_err(|e| MeshError::Conflict(format!("mesh.json is invalid: {e}")))?;
    let p = cfg.peers.get(id).cloned();
    if p.is_none() && st.link(id).is_none() {
        return Err(MeshError::NotFound(format!(
            "no peer named {id:?}; GET /peers lists the declared and connected ones"
        )));
    }
    Ok((cfg, p))
}

pub(super) async fn get_one(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    let (cfg, p) = known(&st, &id)?;
    Ok(axum::Json(view(&st, &cfg, &id, p.as_ref())))
}

/// Body of `POST /peer/{id}/send`: exactly one of `message` (text) and `payload` (JSON).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SendBody {
    message: Option<String>,
    payload: Option<Value>,
}

fn connected(st: &AppState, id: &str) -> Result<crate::link::LinkHandle, MeshError> {
    known(st, id)?;
    st.link(id).ok_or_else(|| {
        MeshError::Conflict(format!(
            "peer {id:?} is not connected now; it reconnects by itself (GET /peer/{id} shows the state)"
        ))
    })
}

pub(super) async fn send(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    Json(b): Json<SendBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let (m, kind) = match (b.message, b.payload) {
        (Some(t), None) => (MeshMessage::Text { text: t }, "text"),
        (None, Some(p)) => (MeshMessage::Json { payload: p }, "json"),
        _ => {
            return Err(MeshError::BadRequest(
                "give exactly one of \"message\" (text) and \"payload\" (JSON)".into(),
            )
            .into())
        }
    };
    let link = connected(&st, &id)?;
    let bytes = serde_json::to_vec(&m).map_or(0, |v| v.len());
    link.send(m).await.map_err(|e| {
        if e.contains("at most") {
            MeshError::BadRequest(e)
        } else {
            MeshError::Conflict(format!("peer {id:?}: {e}"))
        }
    })?;
    st.agentd
        .event(
            "message.send",
            json!({ "peer": id, "kind": kind, "bytes": bytes, "session": link.info.session }),
        )
        .await;
    Ok(axum::Json(
        json!({ "sent": true, "peer": id, "kind": kind, "bytes": bytes }),
    ))
}

/// Query of `GET /peer/{id}/inbox`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InboxQuery {
    /// Messages after this id (default 0).
    after: Option<i64>,
    /// Page size, 1..=1000 (default 100).
    limit: Option<i64>,
}

pub(super) async fn inbox(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: Result<Query<InboxQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let Query(q) = q?;
    check_peer_name(&id)?;
    let limit = q.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(MeshError::BadRequest("limit must be in 1..=1000".into()).into());
    }
    // Only the words of the identity behind the name now (mesh.json may have changed since
    // the dialer last looked).
    if let Ok(cfg) = st.config() {
        st.settle_inbox(&cfg, &id);
    }
    let msgs = st.store.inbox(&id, q.after.unwrap_or(0), limit)?;
    Ok(axum::Json(json!({ "peer": id, "messages": msgs })))
}

/// Query of `DELETE /peer/{id}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RemoveQuery {
    /// The commit message.
    reason: Option<String>,
    /// An approved ticket for `mesh.peer.remove` (agentd's gate asks for one).
    approval: Option<String>,
}

pub(super) async fn remove(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    q: Result<Query<RemoveQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let Query(q) = q?;
    check_peer_name(&id)?;
    let cfg = st
        .config()
        .map_err(|e| MeshError::Conflict(format!("mesh.json is invalid: {e}")))?;
    if !cfg.peers.contains_key(&id) {
        if let Some(l) = st.link(&id) {
            let _ =
                l.tx.send(crate::link::Cmd::Close(
                    "disconnected through the API".into(),
                ))
                .await;
            return Ok(axum::Json(json!({ "disconnected": id, "declared": false })));
        }
        return Err(MeshError::NotFound(format!(
            "no peer named {id:?} is declared or connected; GET /peers lists them"
        ))
        .into());
    }
    let reason = q
        .reason
        .unwrap_or_else(|| format!("mesh: remove peer {id}"));
    let (edit, switch) = crate::intents::remove(&st, &id, &reason, q.approval.as_deref()).await?;
    if let Some(l) = st.link(&id) {
        let _ =
            l.tx.send(crate::link::Cmd::Close("the peer was removed".into()))
                .await;
    }
    st.store.clear_inbox(&id)?;
    Ok(axum::Json(
        json!({ "removed": id, "config": edit, "switch": switch }),
    ))
}

/// Body of `POST /peer/{id}/request`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RequestBody {
    topic: String,
    body: Value,
    /// Seconds to wait for the answer, 1..=300 (default 30).
    timeout_secs: Option<u64>,
}

pub(super) async fn request(
    State(st): State<Arc<AppState>>,
    cred: Cred,
    Path(id): Path<String>,
    Json(b): Json<RequestBody>,
) -> Result<axum::Json<Value>, ApiError> {
    if !valid_topic(&b.topic) {
        return Err(MeshError::BadRequest("topic must be 1..=64 of [A-Za-z0-9._-]".into()).into());
    }
    let (who, why) = caller(&st, cred).await;
    who.check(&b.topic, why.as_deref())?;
    let timeout = b.timeout_secs.unwrap_or(30);
    if !(1..=300).contains(&timeout) {
        return Err(MeshError::BadRequest("timeout_secs must be in 1..=300".into()).into());
    }
    let link = connected(&st, &id)?;
    let rid = st.requests.id();
    let rx = st.requests.expect(&id, rid);
    let m = MeshMessage::Request {
        id: rid,
        topic: b.topic.clone(),
        body: b.body,
    };
    if let Err(e) = link.send(m).await {
        st.requests.forget(&id, rid);
        return Err(if e.contains("at most") {
            MeshError::BadRequest(e)
        } else {
            MeshError::Conflict(e)
        }
        .into());
    }
    st.agentd
        .event("request.send", json!({ "peer": id, "topic": b.topic }))
        .await;
    match tokio::time::timeout(Duration::from_secs(timeout), rx).await {
        Ok(Ok((ok, body))) => Ok(axum::Json(
            json!({ "peer": id, "topic": b.topic, "ok": ok, "body": body }),
        )),
        Ok(Err(_)) | Err(_) => {
            st.requests.forget(&id, rid);
            Err(MeshError::Timeout(format!("peer {id:?} did not answer within {timeout} s")).into())
        }
    }
}

/// Query of `GET /requests/next`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NextQuery {
    /// Only this topic (default: any).
    topic: Option<String>,
    /// Seconds to wait for one, 0..=60 (default 30).
    wait_secs: Option<u64>,
}

pub(super) async fn next_request(
    State(st): State<Arc<AppState>>,
    cred: Cred,
    q: Result<Query<NextQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let Query(q) = q?;
    let wait = q.wait_secs.unwrap_or(30);
    if wait > 60 {
        return Err(MeshError::BadRequest("wait_secs must be in 0..=60".into()).into());
    }
    let (who, why) = caller(&st, cred).await;
    if let Some(t) = &q.topic {
        who.check(t, why.as_deref())?;
    }
    // Without a topic: any topic this caller may take (never another daemon's).
    let topic = q.topic.clone();
    let (found, stale) = st
        .requests
        .take(
            |t| topic.as_deref().is_none_or(|w| w == t) && who.may(t),
            who.uid,
            Duration::from_secs(wait),
        )
        .await;
    for r in stale {
        if let Some(l) = st.link(&r.peer) {
            let _ = l.tx.try_send(crate::link::Cmd::Send(
                MeshMessage::Response {
                    id: r.remote_id,
                    ok: false,
                    body: json!("no local service took the request in time"),
                },
                None,
            ));
        }
    }
    Ok(axum::Json(json!({ "request": found })))
}

/// Body of `POST /requests/{id}/respond`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RespondBody {
    /// Whether the request succeeded (default true).
    ok: Option<bool>,
    body: Value,
}

pub(super) async fn respond(
    State(st): State<Arc<AppState>>,
    cred: Cred,
    Path(id): Path<u64>,
    Json(b): Json<RespondBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let uid = cred.and_then(|c| c.0.uid);
    let (peer, remote_id) = st.requests.respond_to(id, uid).map_err(|other| {
        if other {
            MeshError::Forbidden(format!(
                "request {id} was taken by another caller; only the caller that took it (GET /requests/next) answers it"
            ))
        } else {
            MeshError::NotFound(format!(
                "no request {id} is waiting for an answer (taken with GET /requests/next?)"
            ))
        }
    })?;
    let link = st.link(&peer).ok_or_else(|| {
        MeshError::Conflict(format!("peer {peer:?} disconnected; the answer is lost"))
    })?;
    link.send(MeshMessage::Response {
        id: remote_id,
        ok: b.ok.unwrap_or(true),
        body: b.body,
    })
    .await
    .map_err(|e| {
        if e.contains("at most") {
            MeshError::BadRequest(e)
        } else {
            MeshError::Conflict(e)
        }
    })?;
    Ok(axum::Json(json!({ "answered": id, "peer": peer })))
}
