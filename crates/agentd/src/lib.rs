//! agentd: the kernel bridge daemon. It serves the agent-facing API and the human-only approval
//! API on two Unix sockets, and is the only writer of the hash-chained ledger.

pub mod api;
pub mod backup;
pub mod checkpoints;
pub mod config;
pub mod error;
pub mod fuzz;
pub mod gate;
pub mod namespaces;
pub mod page;
pub mod peer;
pub mod witness;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use osmoda_ledger::{Ledger, NewEvent};
use tokio::net::UnixListener;
use tokio::sync::Mutex;

pub use osmoda_daemon::server::Limits;
pub use osmoda_daemon::{shutdown_channel, Shutdown, Trigger};

/// Largest request body agentd accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Settings that do not come from the command line.
#[derive(Clone, Debug)]
pub struct Settings {
    /// How long an approval ticket stays valid after it is requested.
    pub approval_ttl: Duration,
    /// Operation kinds that need a human approval ticket in addition to
    /// [`gate::DEFAULT_REQUIRED`] (`"service.remove"`, `"user.*"`).
    pub approval_required: Vec<String>,
    /// Package names whose removal needs approval: [`gate::DEFAULT_CRITICAL_PACKAGES`] plus
    /// `approval.critical_packages`.
    pub critical_packages: Vec<String>,
    /// The approval socket agentd serves (`--approval-socket`); `None` for the default
    /// [`DEFAULT_APPROVAL_SOCKET`]. The gate's 403 names it in its approve command.
    pub approval_socket: Option<std::path::PathBuf>,
    /// Validation of config edits before commit (`--validate parse|eval|build`).
    pub validate: osmoda_generations::Validate,
    /// osModa's NixOS module, evaluated with the tree by `validate = build` (`--nixos-module`).
    pub nixos_module: Option<std::path::PathBuf>,
    /// The uid allowed on the approval relay (`--relay-user`, the gateway's user); `None`:
    /// no relay is served (`api::relay`).
    pub relay_uid: Option<u32>,
    /// The relay socket when it is not [`api::relay::DEFAULT_RELAY_SOCKET`]: its directory is
    /// hidden from files calls and masked from commands like the default one.
    pub relay_socket: Option<std::path::PathBuf>,
    /// The uid osmoda-keyd runs as (`--keyd-user`); only its connections may open and consume
    /// keyd's approval tickets (`api::daemon_tickets`). `None`: nobody may.
    pub keyd_uid: Option<u32>,
    /// Signed ledger checkpoints (`ledger.checkpoint` in agentd.json); `None`: none are made
    /// (the library default, so in-process tests opt in; the binary and the module turn them on).
    pub checkpoint: Option<checkpoints::CheckpointSettings>,
    /// Backups (`backup` in agentd.json): archive dir, retention, source directories.
    pub backup: backup::BackupSettings,
    /// Directories `/fs/write` (and `/system/exec`'s `writable` paths) write without a ticket
    /// (`files.writable_roots` in agentd.json, overridden by `--writable-root`; default
    /// [`DEFAULT_WRITABLE_ROOTS`]); a write anywhere else needs a person's approval.
    pub writable_roots: Vec<std::path::PathBuf>,
    /// egress.json, where declared capabilities are read (`--egress-config`); `None`:
    /// [`api::capability::DEFAULT_EGRESS_CONFIG`].
    pub egress_config: Option<std::path::PathBuf>,
    /// The capability-token signing key (`--capability-key`, 32 raw bytes or 64 hex); `None`:
    /// `<state dir>/capability.key`, generated on first use.
    pub capability_key: Option<std::path::PathBuf>,
    /// osmoda-egress's Unix socket bound into Ring 1 sandboxes (`--egress-proxy-socket`);
    /// `None`: [`api::sandbox::DEFAULT_PROXY_SOCKET`].
    pub egress_proxy_socket: Option<std::path::PathBuf>,
    /// The `osmoda-egress` binary run as Ring 1's relay (`--egress-bin`); `None`: beside
    /// agentd's binary, else on `PATH`.
    pub egress_bin: Option<std::path::PathBuf>,
    /// Memory (`memory` in agentd.json, `--memory-dir`, `--memory-model`).
    pub memory: api::memory::MemorySettings,
    /// Identities for the agent card (`daemons.keyd`, `daemons.mesh` in agentd.json).
    pub agent_card: api::agent_card::CardSettings,
    /// Witnesses over the mesh (`ledger.witness`); `None`: none.
    pub witness: Option<witness::WitnessSettings>,
    /// The account database whose homes hold login files for `/fs/write` and `/system/exec`
    /// (default `/etc/passwd`; tests point it elsewhere).
    pub accounts_file: std::path::PathBuf,
    /// How long one full-text search may run before SQLite interrupts it
    /// ([`osmoda_ledger::SEARCH_BUDGET`], 5 s; not configurable: only tests lower it, to show
    /// the interrupt on a ledger they can build quickly).
    pub search_budget: Duration,
}

/// Where the agent writes files freely (`services.osmoda.agentd.writableRoots`' default).
pub use osmoda_config::DEFAULT_WRITABLE_ROOTS;

/// The approval socket of the NixOS module (lib/default.nix `approvalSocket`) and agentctl.
pub const DEFAULT_APPROVAL_SOCKET: &str = osmoda_config::DEFAULT_APPROVAL_SOCKET;

impl Settings {
    /// Whether an operation of `kind` needs a human approval ticket: the gate's defaults always
    /// do, configuration can only add kinds.
    pub fn needs_approval(&self, kind: &str) -> bool {
        gate::DEFAULT_REQUIRED.contains(&kind)
            || self
                .approval_required
                .iter()
                .any(|rule| match rule.strip_suffix('*') {
                    Some(prefix) => kind.starts_with(prefix),
                    None => rule == kind,
                })
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            approval_ttl: Duration::from_secs(15 * 60),
            approval_required: Vec::new(),
            critical_packages: gate::DEFAULT_CRITICAL_PACKAGES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            approval_socket: None,
            validate: osmoda_generations::Validate::default(),
            nixos_module: None,
            relay_uid: None,
            relay_socket: None,
            keyd_uid: None,
            checkpoint: None,
            backup: backup::BackupSettings::default(),
            writable_roots: DEFAULT_WRITABLE_ROOTS
                .iter()
                .map(std::path::PathBuf::from)
                .collect(),
            egress_config: None,
            capability_key: None,
            egress_proxy_socket: None,
            egress_bin: None,
            memory: Default::default(),
            agent_card: Default::default(),
            witness: None,
            accounts_file: std::path::PathBuf::from("/etc/passwd"),
            search_budget: osmoda_ledger::SEARCH_BUDGET,
        }
    }
}

/// Shared state of the daemon. Projections (incidents, approvals) are rebuilt from the ledger
/// at start, so the ledger is the only store.
pub struct AppState {
    /// The event ledger (only agentd writes it).
    pub ledger: Ledger,
    /// Non-flag settings.
    pub settings: Settings,
    /// Incident workspaces, folded from `incident.*` events.
    pub incidents: Mutex<api::incidents::Incidents>,
    /// Approval tickets, folded from `approval.*` events. A plain mutex, held only for short
    /// synchronous work and never across an `.await` (use [`AppState::approvals`]): a person's
    /// request on the approval socket's own runtime never waits for a task of the agent
    /// socket's runtime to be scheduled, as a fair async mutex hands it on in turn.
    pub approvals: std::sync::Mutex<api::approvals::Approvals>,
    /// Serialises the changes to tickets (check, record the event, apply), held across the
    /// ledger write; listing and verifying take only [`AppState::approvals`].
    pub approvals_write: Mutex<()>,
    /// Previous CPU sample, for `/health`'s utilisation figure.
    pub cpu: std::sync::Mutex<Option<api::health::CpuSample>>,
    /// State directory (ledger lives at `<state_dir>/ledger.db`).
    pub state_dir: PathBuf,
    /// The git-tracked Nix tree agentd edits, when started with `--config-tree`.
    pub config_tree: Option<Arc<osmoda_generations::Tree>>,
    /// Bumped after every ledger commit; `/events/subscribe` waits on it.
    pub commits: Arc<tokio::sync::watch::Sender<u64>>,
    /// Signs ledger checkpoints, when `settings.checkpoint` is set.
    pub checkpoints: Option<Arc<checkpoints::Checkpointer>>,
    /// Why the configured witness could not start (`agentd.witness.off`; `/health` degraded).
    pub witness_off: std::sync::Mutex<Option<String>>,
    /// The agent's memory (`api::memory`), opened on first use.
    pub memory: Arc<api::memory::MemoryService>,
    /// Ledger reads requests may run at once ([`api::MAX_LEDGER_READS`]): each is a blocking
    /// thread inside SQLite, so their number bounds the CPU the agent socket can take.
    pub ledger_reads: Arc<tokio::sync::Semaphore>,
    /// Long polls (`/events/subscribe`) open per uid (`api::subscribe`).
    pub long_polls: std::sync::Mutex<std::collections::HashMap<Option<u32>, usize>>,
}

impl AppState {
    /// Open the ledger under `state_dir` and rebuild the projections from it.
    ///
    /// # Errors
    /// Fails when the state directory or the ledger cannot be opened or read.
    pub fn open(
        state_dir: PathBuf,
        settings: Settings,
        config_tree: Option<&std::path::Path>,
    ) -> anyhow::Result<Arc<AppState>> {
        let config_tree = match config_tree {
            Some(dir) => Some(Arc::new(
                osmoda_generations::Tree::open(dir)?
                    .with_validate(settings.validate, settings.nixos_module.clone()),
            )),
            None => None,
        };
        std::fs::create_dir_all(&state_dir)?;
        // The ledger is the one state file agentd refuses to start without: a new, empty
        // ledger in its place would lose the history and the hash chain its checkpoints anchor.
        let ledger_path = state_dir.join("ledger.db");
        let options = osmoda_ledger::OpenOptions {
            search_budget: settings.search_budget,
            ..Default::default()
        };
        let ledger = Ledger::open_with(&ledger_path, options).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the ledger {}: {e}. agentd does not start on a ledger it cannot \
                 read, because starting a new one would lose its history; the file was left as \
                 it is. Put a good copy in its place (the `agentd/ledger.db` of a backup \
                 archive), or move it aside to begin a new ledger and keep it for inspection",
                ledger_path.display()
            )
        })?;
        let commits = Arc::new(tokio::sync::watch::Sender::new(0u64));
        let notify = Arc::clone(&commits);
        ledger.on_commit(move |events| {
            osmoda_daemon::metrics::global().ledger_commit(events);
            notify.send_modify(|n| *n = n.wrapping_add(1));
        });
        let checkpoints = match &settings.checkpoint {
            Some(c) => Some(Arc::new(checkpoints::Checkpointer::open(
                &state_dir,
                c.clone(),
                ledger.tree_head()?.size,
            )?)),
            None => None,
        };
        // The witness key by the checkpoint key's rule: refused at start, not just left unused.
        if let Some(k) = settings.witness.as_ref().and_then(|w| w.key_file.as_ref()) {
            witness::check_key_file(k)?;
        }
        // And the capability key (`--capability-key`): whoever reads it mints egress tokens.
        if let Some(k) = &settings.capability_key {
            api::capability::check_key_file(k)?;
        }
        let incidents = api::incidents::Incidents::load(&ledger)?;
        let approvals = api::approvals::Approvals::load(&ledger)?;
        let memory = Arc::new(api::memory::MemoryService::new(
            settings.memory.clone(),
            state_dir.clone(),
        ));
        Ok(Arc::new(AppState {
            memory,
            ledger,
            settings,
            incidents: Mutex::new(incidents),
            approvals: std::sync::Mutex::new(approvals),
            approvals_write: Mutex::new(()),
            cpu: std::sync::Mutex::new(None),
            state_dir,
            config_tree,
            commits,
            checkpoints,
            witness_off: std::sync::Mutex::new(None),
            ledger_reads: Arc::new(tokio::sync::Semaphore::new(api::MAX_LEDGER_READS)),
            long_polls: std::sync::Mutex::default(),
        }))
    }

    /// The approval tickets, for short synchronous work (never held across an `.await`).
    pub fn approvals(&self) -> std::sync::MutexGuard<'_, api::approvals::Approvals> {
        self.approvals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Append one event to the ledger, durable when this returns.
    ///
    /// # Errors
    /// Fails on an invalid label or payload, or when the ledger cannot be written.
    pub async fn record(
        &self,
        kind: &str,
        actor: &str,
        payload: &serde_json::Value,
    ) -> Result<osmoda_ledger::Event, error::ApiError> {
        let ev = NewEvent {
            kind: kind.to_string(),
            actor: actor.to_string(),
            payload: payload.to_string(),
            dedup: None,
        };
        let ev = self.ledger.append(ev).await?;
        // The config API records every edit's end as one of these: count them here, once.
        match kind {
            "config.committed" => osmoda_daemon::metrics::global().edit("committed"),
            "config.failed" => osmoda_daemon::metrics::global().edit("failed"),
            _ => {}
        }
        Ok(ev)
    }
}

impl AppState {
    /// [`AppState::record`] with an exactly-once key: a second call with the same
    /// `(stream, seq)` returns the first event and writes nothing.
    ///
    /// # Errors
    /// As [`AppState::record`].
    pub async fn record_dedup(
        &self,
        kind: &str,
        actor: &str,
        payload: &serde_json::Value,
        stream: &str,
        seq: u64,
    ) -> Result<osmoda_ledger::Event, error::ApiError> {
        let ev = NewEvent::new(kind, actor, payload.to_string()).with_dedup(stream, seq);
        Ok(self.ledger.append(ev).await?)
    }
}

/// Feed every event whose type starts with `prefix` to `apply`, in ledger order, paging through
/// the ledger (used to rebuild projections at start).
///
/// # Errors
/// Fails when the ledger cannot be read.
pub fn fold_events(
    ledger: &Ledger,
    prefix: &str,
    mut apply: impl FnMut(&osmoda_ledger::Event),
) -> Result<(), osmoda_ledger::LedgerError> {
    let mut after = 0;
    loop {
        let q = osmoda_ledger::Query {
            kind: Some(format!("{prefix}*")),
            after_id: Some(after),
            limit: Some(osmoda_ledger::MAX_LIMIT),
            ..Default::default()
        };
        let batch = ledger.query(&q)?;
        let Some(last) = batch.last() else {
            return Ok(());
        };
        after = last.id;
        batch.iter().for_each(&mut apply);
    }
}

fn with_common(router: Router<Arc<AppState>>, state: Arc<AppState>) -> Router {
    router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(axum::middleware::map_response(error::json_errors_only))
        .layer(axum::middleware::map_request(peer::mark_action))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The agent-facing API (everything except approval decisions).
pub fn agent_router(state: Arc<AppState>) -> Router {
    with_common(api::agent_routes(), state)
}

/// The human-only API: approval decisions (served only on the approval socket), and `/health`,
/// so a person can tell that this socket answers whatever load the agent socket is under.
pub fn approval_router(state: Arc<AppState>) -> Router {
    with_common(
        api::approvals::human_routes().route("/health", axum::routing::get(api::health::health)),
        state,
    )
}

/// Budgets of agentd's two listeners.
#[derive(Debug, Clone, Copy)]
pub struct ServeLimits {
    /// The agent socket: most of the process's file descriptors.
    pub agent: Limits,
    /// The approval socket: a small budget of its own, so it answers whatever the agent socket
    /// is going through.
    pub approval: Limits,
}

impl ServeLimits {
    /// Budgets sized from the process's current open-file limit.
    pub fn from_fd_limit() -> ServeLimits {
        ServeLimits {
            agent: Limits::main(osmoda_daemon::fd_limit()),
            approval: Limits::small(),
        }
    }
}

/// Serves the approval socket on a thread and runtime of its own, so that nothing the agent
/// socket's requests do on the main runtime's workers (however long they keep them) delays a
/// person's `/health`, `/approvals` or decision.
async fn serve_approval(
    listener: UnixListener,
    state: Arc<AppState>,
    limits: Limits,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let listener = listener.into_std()?;
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("agentd-approval".into())
        .spawn(move || {
            let served = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .and_then(|rt| {
                    rt.block_on(async move {
                        let listener = UnixListener::from_std(listener)?;
                        osmoda_daemon::server::serve(
                            listener,
                            "approval",
                            limits,
                            approval_router(state),
                            peer::Peer::of,
                            shutdown,
                        )
                        .await
                    })
                });
            let _ = done.send(served);
        })?;
    result
        .await
        .unwrap_or_else(|_| Err(std::io::Error::other("the approval socket's thread ended")))
}

/// Serve both sockets with budgets sized from the open-file limit (see [`serve_with`]).
///
/// # Errors
/// Fails when a listener stops with an I/O error.
pub async fn serve(
    agent: UnixListener,
    approval: UnixListener,
    state: Arc<AppState>,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    serve_with(
        agent,
        approval,
        state,
        shutdown,
        ServeLimits::from_fd_limit(),
    )
    .await
}

/// Serve both sockets until `shutdown` fires, then finish in-flight requests and return. Each
/// socket gets its own connection budget and the shared timeouts ([`osmoda_daemon::server`]).
///
/// # Errors
/// Fails when a listener stops with an I/O error.
pub async fn serve_with(
    agent: UnixListener,
    approval: UnixListener,
    state: Arc<AppState>,
    shutdown: Shutdown,
    limits: ServeLimits,
) -> std::io::Result<()> {
    use osmoda_daemon::server::serve as serve_one;
    // Notes written just before a crash get their ledger events before anything is served.
    api::memory::recover(&state).await;
    let signer = tokio::spawn(checkpoints::run(state.clone(), shutdown.clone()));
    let witness = tokio::spawn(witness::run(state.clone(), shutdown.clone()));
    let a = serve_one(
        agent,
        "agent",
        limits.agent,
        agent_router(state.clone()),
        peer::Peer::of,
        shutdown.clone(),
    );
    let h = serve_approval(approval, state, limits.approval, shutdown);
    let (ra, rh) = tokio::join!(a, h);
    // The signer makes a last checkpoint on shutdown; wait for it so the tail is anchored.
    if let Err(e) = signer.await {
        tracing::error!(error = %e, "the checkpoint task failed");
    }
    if let Err(e) = witness.await {
        tracing::error!(error = %e, "the witness task failed");
    }
    ra.and(rh)
}
