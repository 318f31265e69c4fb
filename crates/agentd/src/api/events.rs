//! Ledger access: reading the event log, searching it, and appending events for other daemons.

use std::sync::Arc;

use axum::extract::{ConnectInfo, State};
use osmoda_ledger::{DedupKey, Event, NewEvent, Query as LedgerQuery};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{ApiError, Json, Query};
use crate::page::Page;
use crate::peer::{valid_role, Peer};
use crate::AppState;

/// Filters for `GET /events/log`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogParams {
    /// Event type; a trailing `*` matches a prefix.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Actor; a trailing `*` matches a prefix.
    pub actor: Option<String>,
    /// Only events with `ts >= since` (RFC 3339, UTC).
    pub since: Option<String>,
    /// Cursor for ascending pages: only events with an id greater than this.
    pub after_id: Option<i64>,
    /// Cursor for `order=desc` pages: only events with an id smaller than this.
    pub before_id: Option<i64>,
    /// At most this many events (default 100, max 10000).
    pub limit: Option<usize>,
    /// `desc` for newest first.
    pub order: Option<String>,
}

impl LogParams {
    fn to_query(&self) -> Result<LedgerQuery, ApiError> {
        let descending = match self.order.as_deref() {
            None | Some("asc") => false,
            Some("desc") => true,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "order must be `asc` or `desc`, not `{other}`"
                )))
            }
        };
        if let Some(limit) = self.limit {
            if limit == 0 || limit > 10_000 {
                return Err(ApiError::bad_request("limit must be between 1 and 10000"));
            }
        }
        Ok(LedgerQuery {
            kind: self.kind.clone(),
            actor: self.actor.clone(),
            since: self.since.clone(),
            after_id: self.after_id,
            before_id: self.before_id,
            limit: self.limit,
            descending,
        })
    }
}

/// `GET /events/log`, paged (`x-next-cursor`: the next `after_id`, or `before_id` with
/// `order=desc`).
pub async fn log(
    State(st): State<Arc<AppState>>,
    Query(p): Query<LogParams>,
) -> Result<Page<Event>, ApiError> {
    let q = p.to_query()?;
    let limit = q.limit.unwrap_or(osmoda_ledger::DEFAULT_LIMIT);
    let found = super::read_ledger(&st, move |l| l.query(&q)).await?;
    Ok(Page::new(found, limit, |e| e.id))
}

/// Parameters of `GET /events/search`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchParams {
    /// Full-text query over payloads (SQLite FTS5 syntax).
    pub q: String,
    /// At most this many results (default 50, at most 1,000).
    pub limit: Option<usize>,
    /// Cursor: only events with a smaller id (results are newest first).
    pub before_id: Option<i64>,
}

/// `GET /events/search?q=`, newest first, paged (`x-next-cursor` is the next `before_id`).
pub async fn search(
    State(st): State<Arc<AppState>>,
    Query(p): Query<SearchParams>,
) -> Result<Page<Event>, ApiError> {
    let limit = crate::page::limit(Some(p.limit.unwrap_or(50)), 1000)?;
    let found = super::read_ledger(&st, move |l| l.search_before(&p.q, limit, p.before_id)).await?;
    Ok(Page::new(found, limit, |e| e.id))
}

/// Checks the type of an event a caller appends: printable ASCII without spaces. Who may use
/// which namespace is [`crate::namespaces`]' table, matched in any letter case.
///
/// Non-ASCII is refused outright rather than normalised: with only ASCII allowed, NFKC
/// normalisation is the identity and case folding is ASCII lowercasing, so no full-width,
/// Cyrillic or zero-width look-alike (`аpproval.`, `ａpproval.`, `approval\u{200b}.`) and no
/// `Approval.` or ` approval.` can pass for a reserved type. Every type osModa's daemons write is
/// lowercase ASCII anyway.
///
/// # Errors
/// 400 naming the rule the type breaks; nothing is written.
pub fn check_appended_type(kind: &str) -> Result<(), ApiError> {
    if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "event type must be printable ASCII without spaces",
        )
        .with_detail(json!({
            "hint": "e.g. `switch.committed`; non-ASCII letters are refused so that no type can imitate a reserved one",
        })));
    }
    Ok(())
}

/// Body of `POST /events/append`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppendRequest {
    /// Event type, e.g. `switch.committed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Name of the daemon reporting; recorded together with its kernel identity.
    pub daemon: String,
    /// Any JSON value.
    pub payload: Value,
    /// Spool stream and sequence number, for exactly-once delivery.
    pub dedup: Option<Dedup>,
    /// The action label (`X-Osmoda-Action`) of the request this event is recorded because of:
    /// a daemon writing its own events for a labelled request (osmoda-watch's switch events)
    /// keeps its standing, and the actor names the action like a labelled request's.
    pub action: Option<String>,
}

/// Exactly-once delivery key.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Dedup {
    /// Stream id chosen by the sender's spool.
    pub stream: String,
    /// Monotonic sequence number within the stream.
    pub seq: u64,
}

/// `POST /events/append`: the way other daemons write to the ledger.
pub async fn append(
    State(st): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<Peer>,
    Json(req): Json<AppendRequest>,
) -> Result<axum::Json<Event>, ApiError> {
    if !valid_role(&req.daemon) {
        return Err(ApiError::bad_request("invalid `daemon` name").with_detail(
            json!({ "hint": "1 to 40 characters of [a-z0-9._-], not `human` or `agentd`" }),
        ));
    }
    check_appended_type(&req.kind)?;
    crate::namespaces::check_append_as(&peer, &req.daemon, &req.kind, st.settings.relay_uid)?;
    let dedup = match req.dedup {
        Some(d) => Some(bind_dedup(&peer, &req.daemon, d)?),
        None => None,
    };
    let mut recorded = peer.clone();
    if let Some(label) = req.action {
        if !valid_role(&label) {
            return Err(ApiError::bad_request("invalid `action` label").with_detail(
                json!({ "hint": "the X-Osmoda-Action label of the request the event is recorded because of: 1 to 40 characters of [a-z0-9._-]" }),
            ));
        }
        if peer.action.as_ref().is_some_and(|a| *a != label) {
            return Err(ApiError::bad_request(
                "the body's `action` and the X-Osmoda-Action header name different actions",
            )
            .with_detail(
                json!({ "hint": "an event has one cause: send one label, or the same in both" }),
            ));
        }
        recorded.action = Some(label);
    }
    let ev = NewEvent {
        kind: req.kind,
        actor: recorded.actor(&req.daemon),
        payload: req.payload.to_string(),
        dedup,
    };
    Ok(axum::Json(st.ledger.append(ev).await?))
}

/// Longest dedup stream a caller may name (the ledger's label limit, less agentd's prefix).
pub const MAX_STREAM_BYTES: usize = 64;

/// Binds a caller's dedup key to its identity: the stream is stored as
/// `u<uid>:<daemon>:<stream>`, with the uid from `SO_PEERCRED`. A caller can therefore only
/// deduplicate against its own stream; replaying another daemon's `(stream, seq)` from another
/// uid or under another daemon name lands in a different key and suppresses nothing. (Within one
/// uid and name, the ledger still records a replay whose content differs as a new event.)
///
/// # Errors
/// 400 when the stream is empty, longer than [`MAX_STREAM_BYTES`] or has characters outside
/// `[A-Za-z0-9._-]`.
pub fn bind_dedup(peer: &Peer, daemon: &str, d: Dedup) -> Result<DedupKey, ApiError> {
    let ok = !d.stream.is_empty()
        && d.stream.len() <= MAX_STREAM_BYTES
        && d.stream
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if !ok {
        return Err(
            ApiError::bad_request("invalid `dedup.stream`").with_detail(json!({
                "hint": format!("1 to {MAX_STREAM_BYTES} characters of [A-Za-z0-9._-]")
            })),
        );
    }
    let uid = peer.uid.map_or_else(|| "?".to_string(), |u| u.to_string());
    Ok(DedupKey {
        stream: format!("u{uid}:{daemon}:{}", d.stream),
        seq: d.seq,
    })
}

/// Filters for `GET /receipts`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptParams {
    /// Receipt type without the `receipt.` prefix, e.g. `wallet.sign`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Only receipts with `ts >= since`.
    pub since: Option<String>,
    /// At most this many (default 100, at most 10,000).
    pub limit: Option<usize>,
    /// Cursor: only receipts with a greater event id (from `x-next-cursor`).
    pub after_id: Option<i64>,
}

/// A structured receipt: a ledger event of type `receipt.<kind>`.
#[derive(Debug, Serialize)]
pub struct Receipt {
    /// Ledger event id.
    pub id: i64,
    /// Timestamp.
    pub ts: String,
    /// Receipt kind (event type without `receipt.`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Who recorded it.
    pub actor: String,
    /// The receipt body.
    pub receipt: Value,
    /// Ledger hash of the event, so a receipt can be checked against the chain.
    pub hash: String,
}

/// `GET /receipts`, oldest first, paged (`x-next-cursor` is the next `after_id`).
pub async fn receipts(
    State(st): State<Arc<AppState>>,
    Query(p): Query<ReceiptParams>,
) -> Result<Page<Receipt>, ApiError> {
    let kind = match &p.kind {
        Some(k) => format!("receipt.{k}"),
        None => "receipt.*".to_string(),
    };
    let q = LogParams {
        kind: Some(kind),
        since: p.since,
        limit: p.limit,
        after_id: p.after_id,
        ..Default::default()
    }
    .to_query()?;
    let limit = q.limit.unwrap_or(osmoda_ledger::DEFAULT_LIMIT);
    let out: Vec<Receipt> = super::read_ledger(&st, move |l| l.query(&q))
        .await?
        .into_iter()
        .map(|e| Receipt {
            id: e.id,
            kind: e.kind.trim_start_matches("receipt.").to_string(),
            receipt: serde_json::from_str(&e.payload).unwrap_or(Value::String(e.payload)),
            ts: e.ts,
            actor: e.actor,
            hash: e.hash,
        })
        .collect();
    Ok(Page::new(out, limit, |r| r.id))
}
