//! Approval tickets on behalf of osmoda-keyd (`POST /daemon/ticket/open|consume`). keyd builds
//! the canonical operation (wallet, chain, recipient, exact amount, token) from the request it
//! judged, asks agentd to open a ticket for it (origin `keyd`), a person approves it on the
//! approval socket, and on the retry keyd has agentd consume the ticket for exactly that
//! operation. Only a connection whose kernel-reported uid is keyd's (`Settings::keyd_uid`,
//! `--keyd-user`) may call these routes: a claim in a header is not enough, and an agent's
//! own `/approval/request` tickets (origin `agent`) never pass for keyd's.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

use super::approvals::{self, Ticket, KEYD};
use crate::error::{ApiError, Json};
use crate::peer::Caller;
use crate::AppState;

fn require_keyd(st: &AppState, caller: &Caller) -> Result<(), ApiError> {
    match st.settings.keyd_uid {
        // keyd's uid is not enough: a command, check or routine action running as that uid
        // (in the command sandbox, or carried for an action) is not keyd, and would open
        // tickets in keyd's name with words of its own.
        Some(uid) if caller.peer.uid == Some(uid) => match caller.peer.require_outside_boundary() {
            Ok(()) => Ok(()),
            Err(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "only osmoda-keyd itself may open or consume keyd's approval tickets: this caller has keyd's uid but runs inside the command sandbox or for a daemon's action",
            )
            .with_detail(json!({ "caller": caller.actor, "hint": "wallet operations go through keyd's socket (POST /wallet/send, /wallet/delete)" }))),
        },
        Some(uid) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("only osmoda-keyd (uid {uid}) may open or consume keyd's approval tickets"),
        )
        .with_detail(json!({ "caller": caller.actor, "hint": "wallet operations go through keyd's socket (POST /wallet/send, /wallet/delete)" }))),
        None => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "agentd does not know keyd's uid, so nobody may use keyd's approval tickets",
        )
        .with_detail(json!({ "hint": "start agentd with --keyd-user naming the user osmoda-keyd runs as" }))),
    }
}

fn require_keyd_operation(operation: &Value) -> Result<(), ApiError> {
    if operation.get("daemon").and_then(Value::as_str) != Some("keyd") {
        return Err(ApiError::bad_request(
            "a keyd ticket's operation is an object with \"daemon\": \"keyd\"",
        ));
    }
    Ok(())
}

/// Body of `POST /daemon/ticket/open`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OpenBody {
    /// keyd's canonical operation (`daemon` = `keyd`); the ticket binds its exact hash.
    pub operation: Value,
    /// The operation in words, one line each, shown to the person deciding (≤ 8 lines).
    pub effect: Vec<String>,
}

/// `POST /daemon/ticket/open`: the open ticket for this exact operation, or a new pending one.
pub async fn open(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<OpenBody>,
) -> Result<axum::Json<Ticket>, ApiError> {
    require_keyd(&st, &caller)?;
    require_keyd_operation(&body.operation)?;
    if body.effect.len() > 8 || body.effect.iter().any(|l| l.len() > 1024) {
        return Err(ApiError::bad_request(
            "`effect` is at most 8 lines of 1024 bytes",
        ));
    }
    let t = approvals::open_for(&st, &caller.actor, &body.operation, &body.effect, KEYD).await?;
    Ok(axum::Json(t))
}

/// Body of `POST /daemon/ticket/consume`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsumeBody {
    /// Ticket id.
    pub id: String,
    /// The operation keyd is about to perform; must hash to the ticket's.
    pub operation: Value,
}

/// `POST /daemon/ticket/consume`: uses the ticket once, only when a person approved it, it has
/// not expired, keyd opened it and the operation is exactly the approved one.
pub async fn consume(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<ConsumeBody>,
) -> Result<axum::Json<Value>, ApiError> {
    require_keyd(&st, &caller)?;
    require_keyd_operation(&body.operation)?;
    approvals::consume(&st, &body.id, &body.operation, &caller.actor, KEYD).await?;
    Ok(axum::Json(json!({ "ok": true, "id": body.id })))
}
