//! The approval gate: destructive operations need a human. The agent requests a ticket bound
//! to the exact operation; a person decides on the approval socket (which the agent-facing
//! router does not serve); the ticket is consumed once, before it expires. The config API opens
//! tickets itself when the gate (`crate::gate`) refuses a destructive change.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;
use osmoda_ledger::{Event, Ledger, LedgerError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{ApiError, Json};
use crate::peer::{Caller, Peer};
use crate::AppState;

/// A ticket as shown to callers.
#[derive(Clone, Debug, Serialize)]
pub struct Ticket {
    /// Random ticket id.
    pub id: String,
    /// `pending`, `approved`, `denied`, `used` or `expired`.
    pub status: &'static str,
    /// The operation the ticket is bound to.
    pub operation: Value,
    /// Hex SHA-256 of the operation's canonical JSON (exact numbers, see `crate::gate::canon`).
    pub operation_hash: String,
    /// Why the agent wants it: text the agent wrote (for a gate ticket, the effect in words).
    pub detail: String,
    /// Who opened the ticket: `gate` (agentd's approval gate, from the effect it computed;
    /// only these tickets let a gated config change or switch through) or `agent` (a
    /// `POST /approval/request`, whose operation and detail are the agent's own words).
    pub origin: &'static str,
    /// The effect in words, one line per destructive difference (tickets opened by the gate).
    pub effect: Vec<String>,
    /// Who asked.
    pub requested_by: String,
    /// When it was asked for.
    pub requested_at: String,
    /// Expiry (RFC 3339, UTC).
    pub expires_at: String,
    /// Who approved or denied it.
    pub decided_by: Option<String>,
    #[serde(skip)]
    expires_unix: i64,
    #[serde(skip)]
    state: &'static str,
}

impl Ticket {
    fn refresh(&mut self, now: i64) {
        self.status = if matches!(self.state, "pending" | "approved") && now >= self.expires_unix {
            "expired"
        } else {
            self.state
        };
    }
}

/// [`Ticket::origin`] of the tickets agentd's gate opens.
pub const GATE: &str = "gate";
/// [`Ticket::origin`] of the tickets an agent asked for.
pub const AGENT: &str = "agent";
/// [`Ticket::origin`] of the tickets osmoda-keyd opened for a wallet operation
/// (`api::daemon_tickets`).
pub const KEYD: &str = "keyd";

/// Whether `operation` has a shape only agentd itself may open tickets for: an object with a
/// `gate` member (the config gate's and the switch gate's operations,
/// `crate::gate::enforce`).
pub fn reserved(operation: &Value) -> bool {
    operation.get("gate").is_some()
}

fn refuse_reserved(operation: &Value) -> Result<(), ApiError> {
    if reserved(operation) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "operations with a `gate` member are reserved for the tickets agentd's approval gate opens",
        )
        .with_detail(json!({ "hint": "make the change itself (config set/unset/revert/restore, a switch): a destructive one is refused with a ticket the gate opened for its effect" })));
    }
    Ok(())
}

/// Largest operation (canonical JSON) an agent's `POST /approval/request` may bind a ticket
/// to; the ticket shows the operation to a person and binds its hash, so a few KiB suffice.
pub const MAX_AGENT_OPERATION_BYTES: usize = 16 * 1024;
/// Largest operation plus effect text of any ticket (the gate's and keyd's included).
pub const MAX_TICKET_BYTES: usize = 256 * 1024;
/// Most open (pending or approved, unexpired) tickets one uid may have requested at once.
pub const MAX_OPEN_PER_UID: usize = 64;
/// How many closed (used, denied, expired) tickets stay in memory, slimmed to their status and
/// hash, so `approvals list` shows the recent ones and a late consume gets "used"/"denied";
/// older ones are only in the ledger (a consume of one is refused as unknown).
pub const MAX_CLOSED_KEPT: usize = 4096;

/// The tickets in memory, by id: every open ticket in full, and the most recent closed ones
/// without their operation (bounded by [`MAX_OPEN_PER_UID`] and [`MAX_CLOSED_KEPT`]; the ledger
/// keeps every ticket).
#[derive(Debug, Default)]
pub struct Approvals {
    tickets: BTreeMap<String, Ticket>,
    open: BTreeSet<String>,
    closed: VecDeque<String>,
}

/// The hash a ticket is bound to; an operation whose numbers have no exact form gets none, so
/// no ticket can match it.
pub fn operation_hash(op: &Value) -> String {
    crate::gate::canon::hash(op).unwrap_or_default()
}

fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl Approvals {
    /// Rebuild from every `approval.*` event.
    ///
    /// # Errors
    /// Fails when the ledger cannot be read.
    pub fn load(ledger: &Ledger) -> Result<Approvals, LedgerError> {
        let mut out = Approvals::default();
        crate::fold_events(ledger, "approval.", |e| out.apply(e))?;
        out.sweep(now_unix());
        Ok(out)
    }

    /// Fold one event into the projection.
    pub fn apply(&mut self, ev: &Event) {
        let p: Value = serde_json::from_str(&ev.payload).unwrap_or(Value::Null);
        let Some(id) = p.get("id").and_then(Value::as_str).map(str::to_string) else {
            return;
        };
        match ev.kind.as_str() {
            "approval.requested" => {
                let expires_unix = p.get("expires_unix").and_then(Value::as_i64).unwrap_or(0);
                let operation = p.get("operation").cloned().unwrap_or(Value::Null);
                self.open.insert(id.clone());
                self.tickets.insert(
                    id.clone(),
                    Ticket {
                        id,
                        status: "pending",
                        operation_hash: operation_hash(&operation),
                        operation,
                        detail: p.get("detail").and_then(Value::as_str).unwrap_or("").into(),
                        // Anything but the gate's own mark (older events too) is the agent's.
                        origin: match p.get("origin").and_then(Value::as_str) {
                            Some(GATE) => GATE,
                            Some(KEYD) => KEYD,
                            _ => AGENT,
                        },
                        effect: p
                            .get("effect")
                            .and_then(Value::as_array)
                            .into_iter()
                            .flatten()
                            .filter_map(|w| w.as_str().map(str::to_string))
                            .collect(),
                        requested_by: ev.actor.clone(),
                        requested_at: ev.ts.clone(),
                        expires_at: rfc3339(expires_unix),
                        decided_by: None,
                        expires_unix,
                        state: "pending",
                    },
                );
            }
            kind => {
                let Some(t) = self.tickets.get_mut(&id) else {
                    return;
                };
                // Defence in depth: a decision counts only if the approval socket recorded it.
                let human = ev.actor.starts_with("human[");
                match kind {
                    "approval.approved" | "approval.denied" if !human => return,
                    "approval.approved" => t.state = "approved",
                    "approval.denied" => t.state = "denied",
                    "approval.used" => t.state = "used",
                    _ => return,
                }
                if kind != "approval.used" {
                    t.decided_by = Some(ev.actor.clone());
                }
                if matches!(t.state, "used" | "denied") {
                    self.close(&id);
                }
            }
        }
    }

    /// Moves ticket `id` out of the open set: it keeps its status and hash, and drops its
    /// operation and words (they stay in the ledger's `approval.requested` event).
    fn close(&mut self, id: &str) {
        if !self.open.remove(id) {
            return;
        }
        if let Some(t) = self.tickets.get_mut(id) {
            t.operation = Value::Null;
            t.effect = Vec::new();
            if t.detail.len() > 200 {
                let mut end = 200;
                while !t.detail.is_char_boundary(end) {
                    end -= 1;
                }
                t.detail.truncate(end);
                t.detail.push('…');
            }
        }
        self.closed.push_back(id.to_string());
        while self.closed.len() > MAX_CLOSED_KEPT {
            if let Some(old) = self.closed.pop_front() {
                self.tickets.remove(&old);
            }
        }
    }

    /// Closes the open tickets that have expired. Linear in the open tickets only.
    fn sweep(&mut self, now: i64) {
        let expired: Vec<String> = self
            .open
            .iter()
            .filter(|id| self.tickets.get(*id).is_some_and(|t| now >= t.expires_unix))
            .cloned()
            .collect();
        for id in expired {
            if let Some(t) = self.tickets.get_mut(&id) {
                t.refresh(now);
            }
            self.close(&id);
        }
    }

    /// How many open tickets the caller with `uid` has requested.
    fn open_of(&self, uid: Option<u32>) -> usize {
        self.open
            .iter()
            .filter_map(|id| self.tickets.get(id))
            .filter(|t| uid_of(&t.requested_by) == uid)
            .count()
    }

    /// The open ticket of `origin` bound to `hash`, if any.
    fn open_with(&mut self, origin: &str, hash: &str) -> Option<Ticket> {
        self.sweep(now_unix());
        self.open
            .iter()
            .filter_map(|id| self.tickets.get(id))
            .find(|t| t.origin == origin && t.operation_hash == hash)
            .cloned()
    }

    /// One page of tickets in id order after `after`: walks the map from the cursor and copies
    /// only the page.
    fn page(&mut self, after: Option<&String>, limit: usize) -> Vec<Ticket> {
        use std::ops::Bound;
        let now = now_unix();
        self.sweep(now);
        let from = match after {
            Some(a) => Bound::Excluded(a.clone()),
            None => Bound::Unbounded,
        };
        self.tickets
            .range_mut((from, Bound::Unbounded))
            .take(limit)
            .map(|(_, t)| {
                t.refresh(now);
                t.clone()
            })
            .collect()
    }

    pub(crate) fn get(&mut self, id: &str) -> Result<&Ticket, ApiError> {
        let t = self.tickets.get_mut(id).ok_or_else(|| {
            ApiError::not_found(format!("no approval ticket {id}"))
                .with_detail(json!({ "hint": "request one with POST /approval/request" }))
        })?;
        t.refresh(now_unix());
        Ok(t)
    }

    /// Ids of the tickets still pending or approved and unused (a restore closes them: they
    /// come from the restored ledger, and may have been used or decided since).
    pub(crate) fn open_ids(&mut self) -> Vec<String> {
        self.sweep(now_unix());
        self.open.iter().cloned().collect()
    }
}

/// The uid in an actor label (`agent[uid=1000,pid=…]`), `None` when it has none.
fn uid_of(actor: &str) -> Option<u32> {
    let rest = &actor[actor.find("uid=")? + 4..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Body of `POST /approval/request`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestBody {
    /// The exact operation (any JSON); the ticket is bound to its hash.
    pub operation: Value,
    /// Why: shown to the person deciding.
    pub detail: String,
}

/// `POST /approval/request`
pub async fn request(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<RequestBody>,
) -> Result<axum::Json<Ticket>, ApiError> {
    if body.operation.is_null() {
        return Err(ApiError::bad_request(
            "`operation` must describe the operation",
        ));
    }
    if body.detail.len() > 4096 {
        return Err(ApiError::bad_request("`detail` is limited to 4096 bytes"));
    }
    refuse_reserved(&body.operation)?;
    let size = body.operation.to_string().len();
    if size > MAX_AGENT_OPERATION_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("`operation` is {size} bytes of JSON; at most {MAX_AGENT_OPERATION_BYTES} are accepted"),
        )
        .with_detail(json!({ "hint": "describe the operation (what, where, how much), not its data: the ticket binds the operation's hash" })));
    }
    let t = create(
        &st,
        &caller.actor,
        &body.operation,
        &body.detail,
        &[],
        AGENT,
    )
    .await?;
    Ok(axum::Json(t))
}

/// Record a new pending ticket for `operation`.
async fn create(
    st: &AppState,
    actor: &str,
    operation: &Value,
    detail: &str,
    effect: &[String],
    origin: &str,
) -> Result<Ticket, ApiError> {
    crate::gate::canon::hash(operation).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let size =
        operation.to_string().len() + effect.iter().map(String::len).sum::<usize>() + detail.len();
    if size > MAX_TICKET_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the operation and its effect are {size} bytes; a ticket holds at most {MAX_TICKET_BYTES}"),
        )
        .with_detail(json!({ "hint": "make the change in smaller parts" })));
    }
    let mut raw = [0u8; 16];
    getrandom::fill(&mut raw).map_err(ApiError::internal)?;
    let id = hex::encode(raw);
    let ttl = i64::try_from(st.settings.approval_ttl.as_secs()).unwrap_or(i64::MAX / 2);
    let payload = json!({
        "id": id,
        "operation": operation,
        "operation_hash": operation_hash(operation),
        "detail": detail,
        "effect": effect,
        "origin": origin,
        "expires_unix": now_unix() + ttl,
    });
    let _write = st.approvals_write.lock().await;
    let full = {
        let mut approvals = st.approvals();
        approvals.sweep(now_unix());
        approvals.open_of(uid_of(actor)) >= MAX_OPEN_PER_UID
    };
    if full {
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("this caller already has {MAX_OPEN_PER_UID} approval tickets open (pending or approved, unused); no new one is opened"),
        )
        .with_detail(json!({ "hint": "use, or wait for a person to decide, the open ones (`agentctl approvals list`); they expire after the approval TTL" })));
    }
    let ev = st.record("approval.requested", actor, &payload).await?;
    let mut approvals = st.approvals();
    approvals.apply(&ev);
    Ok(approvals.get(&id)?.clone())
}

/// The gate's open ticket for `operation`: a pending or approved, unexpired one the gate opened
/// if there is one (so an agent that retries does not pile up tickets), else a new pending
/// ticket (origin `gate`) whose detail and effect are `effect`.
///
/// # Errors
/// 400 for an operation without an exact canonical form; ledger errors.
pub async fn open(
    st: &AppState,
    actor: &str,
    operation: &Value,
    effect: &[String],
) -> Result<Ticket, ApiError> {
    open_for(st, actor, operation, effect, GATE).await
}

/// As [`open`], for tickets of `origin` ([`GATE`] or [`KEYD`]).
///
/// # Errors
/// As [`open`].
pub async fn open_for(
    st: &AppState,
    actor: &str,
    operation: &Value,
    effect: &[String],
    origin: &'static str,
) -> Result<Ticket, ApiError> {
    let hash = operation_hash(operation);
    let existing = st.approvals().open_with(origin, &hash);
    match existing {
        Some(t) => Ok(t),
        None => create(st, actor, operation, &effect.join("; "), effect, origin).await,
    }
}

/// `GET /approvals?after_id=&limit=` (both sockets), paged in ticket-id order (`crate::page`).
pub async fn list(
    State(st): State<Arc<AppState>>,
    crate::error::Query(p): crate::error::Query<crate::page::Params<String>>,
) -> Result<crate::page::Page<Ticket>, ApiError> {
    let limit = crate::page::limit(p.limit, crate::page::MAX_LIMIT)?;
    let page = st.approvals().page(p.after_id.as_ref(), limit);
    Ok(crate::page::Page::new(page, limit, |t| t.id.clone()))
}

/// Body of `POST /approval/check`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    /// Ticket id.
    pub id: String,
    /// The operation about to be performed; must hash to the ticket's.
    pub operation: Value,
}

/// Consume ticket `id` for `operation` on behalf of `actor`: succeeds once, only when a person
/// approved it, it has not expired, the operation is exactly the one approved and the ticket
/// was opened by `origin` ([`GATE`] for the gate's checks, [`AGENT`] for `/approval/check`).
///
/// # Errors
/// As [`verify`].
pub async fn consume(
    st: &AppState,
    id: &str,
    operation: &Value,
    actor: &str,
    origin: &str,
) -> Result<(), ApiError> {
    let _write = st.approvals_write.lock().await;
    {
        let mut approvals = st.approvals();
        check_ticket(&mut approvals, id, operation, origin)
    }?;
    let ev = st
        .record("approval.used", actor, &json!({ "id": id }))
        .await?;
    st.approvals().apply(&ev);
    Ok(())
}

/// Whether ticket `id` would let `operation` through (as [`consume`], without using it). The
/// gate verifies a ticket before a change and marks it used ([`mark_used`]) only once the
/// change has landed, so an approved change that then fails validation keeps its ticket.
///
/// # Errors
/// 404 unknown ticket, 403 denied, a different operation or another origin, 409 not yet decided
/// or already used, 410 expired.
pub async fn verify(
    st: &AppState,
    id: &str,
    operation: &Value,
    origin: &str,
) -> Result<(), ApiError> {
    check_ticket(&mut st.approvals(), id, operation, origin)
}

/// Record that ticket `id` was used by `actor` (after [`verify`] and the change landing).
///
/// # Errors
/// The ledger write failed.
pub async fn mark_used(st: &AppState, id: &str, actor: &str) -> Result<(), ApiError> {
    let _write = st.approvals_write.lock().await;
    let ev = st
        .record("approval.used", actor, &json!({ "id": id }))
        .await?;
    st.approvals().apply(&ev);
    Ok(())
}

fn check_ticket(
    approvals: &mut Approvals,
    id: &str,
    operation: &Value,
    origin: &str,
) -> Result<(), ApiError> {
    let hash =
        crate::gate::canon::hash(operation).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let t = approvals.get(id)?;
    if t.origin != origin {
        let msg = if origin == GATE {
            format!("ticket {id} was not opened by the approval gate; only the gate's own tickets let a gated change through")
        } else if origin == KEYD {
            format!("ticket {id} was not opened by osmoda-keyd; a wallet operation is approved only with the ticket keyd opened for it")
        } else {
            format!("ticket {id} was opened by the approval gate; it is used by retrying the change it was opened for")
        };
        return Err(ApiError::new(StatusCode::FORBIDDEN, msg).with_detail(json!({
            "hint": "retry the change without an approval: a destructive one is refused with the ticket to have approved"
        })));
    }
    if t.operation_hash.is_empty() || t.operation_hash != hash {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "ticket is bound to a different operation",
        )
        .with_detail(json!({ "approved_operation": t.operation })));
    }
    let fail = |status, msg: &str| Err(ApiError::new(status, format!("ticket {id} {msg}")));
    match t.status {
        "approved" => Ok(()),
        "pending" => fail(
            StatusCode::CONFLICT,
            "is still waiting for a human decision",
        ),
        "denied" => fail(StatusCode::FORBIDDEN, "was denied"),
        "used" => fail(StatusCode::CONFLICT, "was already used; request a new one"),
        _ => fail(StatusCode::GONE, "has expired; request a new one"),
    }
}

/// `POST /approval/check`
pub async fn check(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<CheckBody>,
) -> Result<axum::Json<Value>, ApiError> {
    refuse_reserved(&body.operation)?;
    consume(&st, &body.id, &body.operation, &caller.actor, AGENT).await?;
    Ok(axum::Json(json!({ "ok": true, "id": body.id })))
}

/// Optional body of a decision.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    /// Why the person decided so.
    #[serde(default)]
    pub reason: String,
}

/// What a person deciding a ticket that is unknown or no longer pending can do (the approval
/// socket's and the relay's refusals say it alike).
pub(crate) const LIST: &str = "`agentctl approvals list` shows the tickets waiting for a decision";

async fn decide(
    st: Arc<AppState>,
    peer: Peer,
    id: String,
    reason: String,
    approve: bool,
) -> Result<axum::Json<Ticket>, ApiError> {
    peer.require_outside_boundary()?;
    let _write = st.approvals_write.lock().await;
    let status = st.approvals().get(&id).map(|t| t.status);
    let Ok(status) = status else {
        return Err(ApiError::not_found(format!(
            "no approval ticket {id}; {LIST}"
        )));
    };
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
            &peer.actor("human"),
            &json!({ "id": id, "reason": reason }),
        )
        .await?;
    let mut approvals = st.approvals();
    approvals.apply(&ev);
    Ok(axum::Json(approvals.get(&id)?.clone()))
}

/// `POST /approval/{id}/approve` (approval socket only)
pub async fn approve(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(id): Path<String>,
    body: Option<Json<DecisionBody>>,
) -> Result<axum::Json<Ticket>, ApiError> {
    decide(
        st,
        peer,
        id,
        body.map(|Json(b)| b.reason).unwrap_or_default(),
        true,
    )
    .await
}

/// `POST /approval/{id}/deny` (approval socket only)
pub async fn deny(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Path(id): Path<String>,
    body: Option<Json<DecisionBody>>,
) -> Result<axum::Json<Ticket>, ApiError> {
    decide(
        st,
        peer,
        id,
        body.map(|Json(b)| b.reason).unwrap_or_default(),
        false,
    )
    .await
}

/// Routes served only on the approval socket.
pub fn human_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/approvals", get(list))
        .route("/approval/{id}/approve", post(approve))
        .route("/approval/{id}/deny", post(deny))
}
