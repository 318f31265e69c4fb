//! The ledger's Merkle tree over HTTP: its head, inclusion proofs for events and consistency
//! proofs between two sizes, so a client can check that what it saw earlier is still there.

use std::sync::Arc;

use axum::extract::State;
use osmoda_ledger::{ConsistencyProof, InclusionProof, TreeHead};
use serde::Deserialize;

use crate::error::{ApiError, Query};
use crate::AppState;
use axum::Json;

/// `GET /ledger/head`: the tree's size and RFC 6962 root (hex).
///
/// # Errors
/// 500 when the ledger cannot be read.
pub async fn head(State(st): State<Arc<AppState>>) -> Result<Json<TreeHead>, ApiError> {
    Ok(Json(super::read_ledger(&st, |l| l.tree_head()).await?))
}

/// `GET /ledger/checkpoint`: the newest signed checkpoint (null when none was made yet or
/// checkpoints are off) and the verifier key (null when off).
///
/// # Errors
/// 500 when the checkpoint file cannot be read.
pub async fn checkpoint(
    State(st): State<Arc<AppState>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(cp) = st.checkpoints.as_ref() else {
        return Ok(Json(
            serde_json::json!({ "checkpoint": null, "vkey": null }),
        ));
    };
    let newest = cp.file.newest()?;
    Ok(Json(
        serde_json::json!({ "checkpoint": newest, "vkey": cp.vkey() }),
    ))
}

/// Query of `GET /ledger/proof/inclusion`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InclusionParams {
    /// Event id (1-based).
    pub id: i64,
    /// Tree size to prove against (default: the current tree); at least `id`.
    pub size: Option<u64>,
}

/// `GET /ledger/proof/inclusion?id=&size=`: the audit path of event `id` in the tree of `size`
/// leaves.
///
/// # Errors
/// 400 for an id outside `1..=size` or a size beyond the tree; 404 when the event row is gone;
/// 500 when the row no longer matches its leaf (it was edited after it was written).
pub async fn inclusion(
    State(st): State<Arc<AppState>>,
    Query(p): Query<InclusionParams>,
) -> Result<Json<InclusionProof>, ApiError> {
    Ok(Json(
        super::read_ledger(&st, move |l| l.inclusion_proof(p.id, p.size)).await?,
    ))
}

/// Query of `GET /ledger/proof/consistency`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyParams {
    /// The smaller tree size (0 allowed).
    pub from: u64,
    /// The larger tree size (default: the current tree).
    pub to: Option<u64>,
}

/// `GET /ledger/proof/consistency?from=&to=`: proof that the tree of `from` leaves is a prefix
/// of the tree of `to` leaves.
///
/// # Errors
/// 400 unless `from <= to <=` the tree's size.
pub async fn consistency(
    State(st): State<Arc<AppState>>,
    Query(p): Query<ConsistencyParams>,
) -> Result<Json<ConsistencyProof>, ApiError> {
    let to = match p.to {
        Some(to) => to,
        None => super::read_ledger(&st, |l| l.tree_head()).await?.size,
    };
    Ok(Json(
        super::read_ledger(&st, move |l| l.consistency_proof(p.from, to)).await?,
    ))
}
