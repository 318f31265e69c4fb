//! Incident workspaces: a named, auditable troubleshooting log. The ledger is the store; this
//! module folds `incident.*` events into workspaces and appends new ones.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Arc;

use axum::extract::State;
use osmoda_ledger::{Event, Ledger, LedgerError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{ApiError, Json, Path, Query};
use crate::page::Page;
use crate::peer::Caller;
use crate::AppState;

/// One step taken while working an incident.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    /// Ledger event id of the step.
    pub event_id: i64,
    /// When it was recorded.
    pub ts: String,
    /// Who recorded it.
    pub actor: String,
    /// What was done.
    pub action: String,
    /// What came of it.
    pub result: String,
}

/// An incident workspace.
#[derive(Clone, Debug, Serialize)]
pub struct Incident {
    /// Incident id: the ledger id of its `incident.created` event.
    pub id: i64,
    /// Short name.
    pub name: String,
    /// `open` or `resolved`.
    pub status: &'static str,
    /// Creation time.
    pub created_at: String,
    /// Creator.
    pub created_by: String,
    /// Steps in order.
    pub steps: Vec<Step>,
    /// Resolution time, when resolved.
    pub resolved_at: Option<String>,
    /// Resolution summary, when resolved.
    pub resolution: Option<String>,
}

/// All incidents, by id.
#[derive(Debug, Default)]
pub struct Incidents(BTreeMap<i64, Incident>);

impl Incidents {
    /// Rebuild from every `incident.*` event in the ledger.
    ///
    /// # Errors
    /// Fails when the ledger cannot be read.
    pub fn load(ledger: &Ledger) -> Result<Incidents, LedgerError> {
        let mut out = Incidents::default();
        crate::fold_events(ledger, "incident.", |e| out.apply(e))?;
        Ok(out)
    }

    /// Fold one event into the projection; events of other types are ignored.
    pub fn apply(&mut self, ev: &Event) {
        let p: Value = serde_json::from_str(&ev.payload).unwrap_or(Value::Null);
        let text = |k: &str| {
            p.get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        let target = p.get("incident_id").and_then(Value::as_i64);
        match ev.kind.as_str() {
            "incident.created" => {
                self.0.insert(
                    ev.id,
                    Incident {
                        id: ev.id,
                        name: text("name"),
                        status: "open",
                        created_at: ev.ts.clone(),
                        created_by: ev.actor.clone(),
                        steps: Vec::new(),
                        resolved_at: None,
                        resolution: None,
                    },
                );
            }
            "incident.step" => {
                if let Some(inc) = target.and_then(|id| self.0.get_mut(&id)) {
                    inc.steps.push(Step {
                        event_id: ev.id,
                        ts: ev.ts.clone(),
                        actor: ev.actor.clone(),
                        action: text("action"),
                        result: text("result"),
                    });
                }
            }
            "incident.resolved" => {
                if let Some(inc) = target.and_then(|id| self.0.get_mut(&id)) {
                    inc.status = "resolved";
                    inc.resolved_at = Some(ev.ts.clone());
                    inc.resolution = Some(text("summary"));
                }
            }
            _ => {}
        }
    }

    fn open_incident(&self, id: i64) -> Result<&Incident, ApiError> {
        let inc = self.0.get(&id).ok_or_else(|| {
            ApiError::not_found(format!("no incident {id}"))
                .with_detail(json!({ "hint": "GET /incidents lists them" }))
        })?;
        if inc.status != "open" {
            return Err(ApiError::new(
                axum::http::StatusCode::CONFLICT,
                format!("incident {id} is already resolved"),
            )
            .with_detail(json!({ "hint": "create a new incident" })));
        }
        Ok(inc)
    }
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() || value.len() > max {
        return Err(ApiError::bad_request(format!(
            "`{field}` must be non-empty and at most {max} bytes"
        )));
    }
    Ok(())
}

/// Body of `POST /incident/create`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    /// Short name of the incident.
    pub name: String,
}

/// `POST /incident/create`
pub async fn create(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(req): Json<CreateRequest>,
) -> Result<axum::Json<Incident>, ApiError> {
    check_text("name", &req.name, 200)?;
    let mut incidents = st.incidents.lock().await;
    let ev = st
        .record(
            "incident.created",
            &caller.actor,
            &json!({ "name": req.name }),
        )
        .await?;
    incidents.apply(&ev);
    Ok(axum::Json(incidents.0[&ev.id].clone()))
}

/// Body of `POST /incident/{id}/step`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRequest {
    /// What was done.
    pub action: String,
    /// What came of it.
    pub result: String,
}

/// `POST /incident/{id}/step`
pub async fn step(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    Json(req): Json<StepRequest>,
) -> Result<axum::Json<Incident>, ApiError> {
    check_text("action", &req.action, 4096)?;
    if req.result.len() > 64 * 1024 {
        return Err(ApiError::bad_request("`result` is limited to 64 KiB"));
    }
    let mut incidents = st.incidents.lock().await;
    incidents.open_incident(id)?;
    let payload = json!({ "incident_id": id, "action": req.action, "result": req.result });
    let ev = st.record("incident.step", &caller.actor, &payload).await?;
    incidents.apply(&ev);
    Ok(axum::Json(incidents.0[&id].clone()))
}

/// Body of `POST /incident/{id}/resolve` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// How it ended.
    #[serde(default)]
    pub summary: String,
}

/// `POST /incident/{id}/resolve`
pub async fn resolve(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<i64>,
    body: Option<Json<ResolveRequest>>,
) -> Result<axum::Json<Incident>, ApiError> {
    let summary = body.map(|Json(b)| b.summary).unwrap_or_default();
    let mut incidents = st.incidents.lock().await;
    incidents.open_incident(id)?;
    let payload = json!({ "incident_id": id, "summary": summary });
    let ev = st
        .record("incident.resolved", &caller.actor, &payload)
        .await?;
    incidents.apply(&ev);
    Ok(axum::Json(incidents.0[&id].clone()))
}

/// `GET /incident/{id}`
pub async fn get_one(
    State(st): State<Arc<AppState>>,
    Path(id): Path<i64>,
) -> Result<axum::Json<Incident>, ApiError> {
    let incidents = st.incidents.lock().await;
    incidents
        .0
        .get(&id)
        .cloned()
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(format!("no incident {id}")))
}

/// Filters for `GET /incidents`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    /// `open` or `resolved`; all when absent.
    pub status: Option<String>,
    /// Cursor: only incidents with a greater id (from `x-next-cursor`).
    pub after_id: Option<i64>,
    /// Page size: default 100, at most 1,000.
    pub limit: Option<usize>,
}

/// `GET /incidents?status=open&after_id=&limit=`, oldest first, paged (see `crate::page`).
pub async fn list(
    State(st): State<Arc<AppState>>,
    Query(p): Query<ListParams>,
) -> Result<Page<Incident>, ApiError> {
    if let Some(s) = p.status.as_deref() {
        if s != "open" && s != "resolved" {
            return Err(ApiError::bad_request(format!(
                "status must be `open` or `resolved`, not `{s}`"
            )));
        }
    }
    let limit = crate::page::limit(p.limit, crate::page::MAX_LIMIT)?;
    let start = p.after_id.map_or(Bound::Unbounded, Bound::Excluded);
    let incidents = st.incidents.lock().await;
    let items: Vec<Incident> = incidents
        .0
        .range((start, Bound::Unbounded))
        .map(|(_, i)| i)
        .filter(|i| p.status.as_deref().is_none_or(|s| s == i.status))
        .take(limit)
        .cloned()
        .collect();
    Ok(Page::new(items, limit, |i| i.id))
}
