//! HTTP API areas of agentd, one module per area.

pub mod agent_card;
pub mod approvals;
pub mod backup;
pub mod capability;
pub mod config;
pub mod daemon_tickets;
pub mod events;
pub mod exec;
pub mod fs;
mod fs_gate;
pub mod health;
pub mod incidents;
pub mod ledger;
pub mod memory;
pub mod relay;
pub mod sandbox;
pub(crate) mod secrets;
pub mod subscribe;
pub mod system;
pub mod units;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;

use crate::AppState;

/// Ledger reads of requests running at once; more wait (asynchronously) for their turn.
pub const MAX_LEDGER_READS: usize = 4;

/// Runs a ledger read on the blocking pool: SQLite work never runs on the async workers, which
/// serve both sockets (a long search there once froze the approval socket too), and at most
/// [`MAX_LEDGER_READS`] run at once, so however many requests the agent sends, SQLite keeps a
/// bounded number of threads busy (each read is bounded too: limits, and the search budget).
///
/// # Errors
/// The read's own error, or 500 when the task panicked.
pub(crate) async fn read_ledger<T: Send + 'static>(
    st: &AppState,
    f: impl FnOnce(&osmoda_ledger::Ledger) -> Result<T, osmoda_ledger::LedgerError> + Send + 'static,
) -> Result<T, crate::error::ApiError> {
    // The permit moves into the read: a caller that goes away does not free it early.
    let turn = Arc::clone(&st.ledger_reads)
        .acquire_owned()
        .await
        .map_err(crate::error::ApiError::internal)?;
    let ledger = st.ledger.clone();
    Ok(tokio::task::spawn_blocking(move || {
        let _turn = turn;
        f(&ledger)
    })
    .await
    .map_err(crate::error::ApiError::internal)??)
}

/// Every route served on the agent-facing socket.
pub fn agent_routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/health", get(health::health))
        .route("/system/query", post(system::query))
        .route("/events/log", get(events::log))
        .route("/events/search", get(events::search))
        .route("/events/append", post(events::append))
        .route("/events/subscribe", get(subscribe::subscribe))
        .route("/receipts", get(events::receipts))
        .route("/ledger/head", get(ledger::head))
        .route("/ledger/checkpoint", get(ledger::checkpoint))
        .route("/ledger/proof/inclusion", get(ledger::inclusion))
        .route("/ledger/proof/consistency", get(ledger::consistency))
        .route("/incident/create", post(incidents::create))
        .route("/incident/{id}/step", post(incidents::step))
        .route("/incident/{id}/resolve", post(incidents::resolve))
        .route("/incident/{id}", get(incidents::get_one))
        .route("/incidents", get(incidents::list))
        .route("/approval/request", post(approvals::request))
        .route("/approval/check", post(approvals::check))
        .route("/approvals", get(approvals::list))
        .route("/daemon/ticket/open", post(daemon_tickets::open))
        .route("/daemon/ticket/consume", post(daemon_tickets::consume))
        .route("/config/get", get(config::get))
        .route("/config/set", post(config::set))
        .route("/config/unset", post(config::unset))
        .route("/config/append", post(config::append))
        .route("/config/remove", post(config::remove))
        .route("/config/generations", get(config::generations))
        .route("/config/generation/{rev}", get(config::generation))
        .route("/config/diff", get(config::diff))
        .route("/config/status", get(config::status))
        .route("/config/revert", post(config::revert))
        .route("/config/restore", post(config::restore))
        .route("/config/commit", post(config::commit))
        .route("/system/exec", post(exec::exec))
        .route("/capability/mint", post(capability::mint))
        .route("/capability/revoke", post(capability::revoke))
        .route("/sandbox/exec", post(sandbox::exec))
        .route("/fs/read", get(fs::read))
        .route("/fs/write", post(fs::write))
        .route("/fs/list", get(fs::list))
        .route("/backup/create", post(backup::create))
        .route("/backup/list", get(backup::list))
        .route("/backup/restore", post(backup::restore))
        .merge(memory::routes())
        .merge(agent_card::routes())
}
