//! `POST /config/restore`: a new generation whose tree equals an earlier one's. SafeSwitch
//! records through it the revert after a rollback ("Revert to generation …") and the commit it
//! makes before applying an older generation ("Switch to generation …"), so `git log` says what
//! runs and every such commit carries `Osmoda-Event`/`Osmoda-Actor` like any other generation.

use std::sync::Arc;

use axum::extract::State;
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::{agent_actor, blocking, land, tree, Landed};
use crate::error::{ApiError, Json};
use crate::peer::Caller;
use crate::AppState;

/// Which commit message a restore gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// "Revert to generation <rev>: <reason>" (after a rollback).
    #[default]
    Restore,
    /// "Switch to generation <rev>: <reason>" (before applying an older generation).
    Switch,
}

/// Body of `POST /config/restore`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RestoreBody {
    /// The generation whose tree to bring back.
    pub rev: String,
    /// Why: the first line is the subject, the rest the commit body.
    pub reason: String,
    /// `restore` (default) or `switch`.
    #[serde(default)]
    pub purpose: Purpose,
    /// An approved ticket, when the gate judges bringing that tree back destructive.
    pub approval: Option<String>,
}

/// `POST /config/restore` → the new generation; 404 unknown `rev`, 403 when the gate judges the
/// change destructive and no approved ticket is given, 409 when the tree already equals it
/// (nothing to record) or has uncommitted hand edits.
pub async fn restore(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(b): Json<RestoreBody>,
) -> Result<axum::Json<Landed>, ApiError> {
    if b.reason.trim().is_empty() {
        return Err(ApiError::bad_request(
            "`reason` is required: it becomes the commit message",
        ));
    }
    let t = tree(&st)?;
    let rev = b.rev.clone();
    blocking(move || {
        t.show(&rev)?;
        Ok(())
    })
    .await?;
    let judged =
        crate::gate::check_restore(&st, &caller.actor, &b.rev, b.approval.as_deref()).await?;
    let request =
        json!({ "op": "config.restore", "rev": b.rev, "purpose": b.purpose, "reason": b.reason });
    let (rev, purpose) = (b.rev, b.purpose);
    let landed = land(
        &st,
        &caller.actor,
        agent_actor(&caller),
        request,
        b.reason,
        move |tree, actor, reason, rid| match purpose {
            Purpose::Restore => tree.restore(&rev, actor, reason, Some(rid)),
            Purpose::Switch => tree.switch_to(&rev, actor, reason, Some(rid)),
        },
    )
    .await?;
    judged.landed(&st).await;
    Ok(axum::Json(landed))
}
