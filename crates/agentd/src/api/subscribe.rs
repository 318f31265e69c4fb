//! `GET /events/subscribe`: a long poll on the ledger from a cursor. It answers as soon as an
//! event after the cursor matches (or at once when some already do), else after a bounded
//! wait with no events; the answer's `cursor` is where to continue. A subscriber that stores
//! that cursor sees every matching event once, in order, across restarts of either side
//! (osmoda-routines' event triggers are built on it).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use osmoda_ledger::{Event, Query as LedgerQuery};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::{ApiError, Query};
use crate::AppState;

/// Longest wait of one request.
pub const MAX_WAIT_SECS: u64 = 60;
/// Default wait.
pub const DEFAULT_WAIT_SECS: u64 = 30;
/// Most patterns in `types`.
pub const MAX_TYPES: usize = 16;
/// Most events in one answer (and the default).
pub const MAX_EVENTS: usize = 1000;
/// Long polls one uid may have waiting at once. Each holds a connection for up to
/// [`MAX_WAIT_SECS`] and reads the ledger on every commit, so they are counted apart from the
/// listener's connection caps: a subscriber needs one or two (osmoda-routines holds one).
pub const MAX_LONG_POLLS_PER_UID: usize = 16;
/// Long polls waiting at once, all uids together.
pub const MAX_LONG_POLLS: usize = 256;

/// One waiting long poll's place in [`AppState::long_polls`]; given back when dropped (the
/// answer, or the caller going away).
struct LongPoll {
    st: Arc<AppState>,
    uid: Option<u32>,
}

impl LongPoll {
    fn take(st: &Arc<AppState>, uid: Option<u32>) -> Result<LongPoll, ApiError> {
        let mut open = st.long_polls.lock().unwrap_or_else(|p| p.into_inner());
        let mine = open.get(&uid).copied().unwrap_or(0);
        let total: usize = open.values().sum();
        if mine >= MAX_LONG_POLLS_PER_UID || total >= MAX_LONG_POLLS {
            let why = if mine >= MAX_LONG_POLLS_PER_UID {
                format!("this user already has {MAX_LONG_POLLS_PER_UID} long polls waiting")
            } else {
                format!("{MAX_LONG_POLLS} long polls are waiting")
            };
            return Err(ApiError::new(
                axum::http::StatusCode::TOO_MANY_REQUESTS,
                format!("{why}; no new one is opened"),
            )
            .with_detail(json!({ "hint": "keep one subscription per subscriber and pass its cursor back; a wait of 0 reads without waiting" })));
        }
        *open.entry(uid).or_default() += 1;
        Ok(LongPoll {
            st: Arc::clone(st),
            uid,
        })
    }
}

impl Drop for LongPoll {
    fn drop(&mut self) {
        let mut open = self.st.long_polls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.uid);
            }
        }
    }
}

/// Query of `GET /events/subscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeParams {
    /// Cursor: only events with a greater id; absent = from the ledger's tip (only new events).
    pub after: Option<i64>,
    /// Comma-separated event types, each exact or a prefix with a trailing `*`; absent = all.
    pub types: Option<String>,
    /// Seconds to wait for a matching event, 0..=60 (default 30).
    pub wait_secs: Option<u64>,
    /// Most events returned, 1..=1000 (default 1000).
    pub limit: Option<usize>,
}

/// Answer of `GET /events/subscribe`.
#[derive(Debug, Serialize)]
pub struct Batch {
    /// Matching events after the cursor, oldest first.
    pub events: Vec<Event>,
    /// Pass back as `after`: every event up to it was considered.
    pub cursor: i64,
}

fn patterns(types: Option<&str>) -> Result<Vec<Option<String>>, ApiError> {
    let Some(types) = types else {
        return Ok(vec![None]);
    };
    let list: Vec<&str> = types.split(',').collect();
    if list.len() > MAX_TYPES {
        return Err(ApiError::bad_request(format!(
            "at most {MAX_TYPES} types per subscription, got {}",
            list.len()
        )));
    }
    list.into_iter()
        .map(|t| {
            let body = t.strip_suffix('*').unwrap_or(t);
            let ok = !t.is_empty()
                && t.len() <= 128
                && body
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'|');
            if ok {
                Ok(Some(t.to_string()))
            } else {
                Err(ApiError::bad_request(format!(
                    "type {t:?} must be an event type (printable ASCII), optionally ending in '*'"
                ))
                .with_detail(json!({ "hint": "e.g. types=watch.switch.*,incident.opened" })))
            }
        })
        .collect()
}

async fn tip(st: &AppState) -> Result<i64, ApiError> {
    let q = LedgerQuery {
        limit: Some(1),
        descending: true,
        ..Default::default()
    };
    super::read_ledger(st, move |l| Ok(l.query(&q)?.first().map_or(0, |e| e.id))).await
}

/// Matching events in `(after, upto]`, at most `limit`, with the cursor to continue from.
async fn scan(
    st: &AppState,
    pats: &[Option<String>],
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Batch, ApiError> {
    let pats = pats.to_vec();
    super::read_ledger(st, move |l| scan_ledger(l, &pats, after, upto, limit)).await
}

fn scan_ledger(
    ledger: &osmoda_ledger::Ledger,
    pats: &[Option<String>],
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Batch, osmoda_ledger::LedgerError> {
    let mut events = Vec::new();
    for p in pats {
        let q = LedgerQuery {
            kind: p.clone(),
            after_id: Some(after),
            before_id: Some(upto.saturating_add(1)),
            limit: Some(limit),
            ..Default::default()
        };
        events.extend(ledger.query(&q)?);
    }
    events.sort_by_key(|e| e.id);
    events.dedup_by_key(|e| e.id);
    let cursor = if events.len() >= limit {
        events.truncate(limit);
        events.last().map_or(upto, |e| e.id)
    } else {
        upto
    };
    Ok(Batch { events, cursor })
}

/// `GET /events/subscribe?after=&types=&wait_secs=&limit=`.
pub async fn subscribe(
    State(st): State<Arc<AppState>>,
    caller: crate::peer::Caller,
    Query(p): Query<SubscribeParams>,
) -> Result<axum::Json<Batch>, ApiError> {
    let pats = patterns(p.types.as_deref())?;
    let wait = p.wait_secs.unwrap_or(DEFAULT_WAIT_SECS);
    if wait > MAX_WAIT_SECS {
        return Err(ApiError::bad_request(format!(
            "wait_secs must be at most {MAX_WAIT_SECS}"
        )));
    }
    let limit = crate::page::limit(Some(p.limit.unwrap_or(MAX_EVENTS)), MAX_EVENTS)?;
    if p.after.is_some_and(|a| a < 0) {
        return Err(ApiError::bad_request(
            "after must be an event id (0 or more)",
        ));
    }
    // A poll that does not wait is an ordinary read; one that waits takes a long-poll place.
    let _place = match wait {
        0 => None,
        _ => Some(LongPoll::take(&st, caller.peer.uid)?),
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    let mut commits = st.commits.subscribe();
    let mut after = match p.after {
        Some(a) => a,
        None => tip(&st).await?,
    };
    loop {
        commits.borrow_and_update();
        let upto = tip(&st).await?;
        if upto > after {
            let batch = scan(&st, &pats, after, upto, limit).await?;
            if !batch.events.is_empty() {
                return Ok(axum::Json(batch));
            }
            after = batch.cursor;
        }
        match tokio::time::timeout_at(deadline, commits.changed()).await {
            Ok(Ok(())) => continue,
            _ => {
                return Ok(axum::Json(Batch {
                    events: Vec::new(),
                    cursor: after,
                }))
            }
        }
    }
}
