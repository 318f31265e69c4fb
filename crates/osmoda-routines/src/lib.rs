//! osmoda-routines: cron, interval, event and webhook automation declared as NixOS options
//! (`services.osmoda.routines.<name>`, rendered into `/etc/osmoda/routines.json`).
//!
//! Entry points: [`AppState::open`] loads and validates the config, opens the history and the
//! ledger spool and resumes runs a previous process left queued; [`serve`] answers the API on a
//! Unix socket and runs the scheduler, the event subscription and the config reloader until
//! shutdown. A config that does not validate is refused loudly: at start the daemon exits
//! with the message; on reload it keeps the routines in force and records
//! `routine.config.refused`. It never falls back to defaults.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod actions;
pub mod api;
pub mod engine;
pub mod error;
pub mod events;
pub mod history;
pub mod lineage;
pub mod machine;
pub use osmoda_daemon::peer;
pub mod ring;
pub mod schedule;
pub mod scheduler;
pub mod starts;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osmoda_client::{Client, Reporter};
use osmoda_config::RoutinesConfig;
use tokio::sync::{mpsc, watch};

pub use error::{Result, RoutinesError};
pub use osmoda_daemon::shutdown;
pub use osmoda_daemon::Shutdown;

use crate::actions::ActionEnv;
use crate::engine::Engine;
use crate::history::History;
use crate::scheduler::Clock;

/// How often the config file is checked for a new generation.
const CONFIG_POLL: Duration = Duration::from_secs(2);
/// How long shutdown waits for running actions.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Everything the daemon needs to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// `routines.json`.
    pub config: PathBuf,
    /// History database and event spool.
    pub state_dir: PathBuf,
    /// agentd's socket (ledger, events, config API; default target of http actions).
    pub agentd_socket: PathBuf,
    /// osmoda-watch's socket (SafeSwitch for `/routine/add` and `/routine/remove`).
    pub watch_socket: PathBuf,
    /// This daemon's own socket (hidden from command actions, like the state dir).
    pub socket: PathBuf,
    /// Paths hidden from command actions besides `routines.json`'s `boundary.masked_paths` and
    /// this daemon's state dir.
    pub masks: Vec<PathBuf>,
    /// Where the scheduler reads the time.
    pub clock: Clock,
    /// Bearer token for the OpenClaw gateway (`OPENCLAW_GATEWAY_TOKEN`).
    pub gateway_token: Option<String>,
    /// The uid whose socket must hold the gateway's port before a prompt is sent to it
    /// (`--gateway-user`; the module names the gateway's user). `None`: this daemon's own uid
    /// (a gateway run by the same user, as in local mode).
    pub gateway_uid: Option<u32>,
}

/// Shared state of the running daemon.
pub struct AppState {
    /// The routines and their runs.
    pub engine: Arc<Engine>,
    /// The config in force (the scheduler and the event subscription follow it).
    pub config: watch::Sender<Arc<RoutinesConfig>>,
    /// Why the last config file on disk was refused, while it is.
    pub config_error: Mutex<Option<String>>,
    /// The bytes of the config file last looked at (the reloader compares against them).
    seen: Mutex<Option<Vec<u8>>>,
    /// agentd, for config edits.
    pub agentd: Client,
    /// osmoda-watch, for SafeSwitch.
    pub watch: Client,
    /// How the daemon was started.
    pub opts: Options,
    /// A switch of HEAD waiting for osmoda-watch (`/routine/add` while another switch ran).
    pub queued_switch: Mutex<api::QueuedSwitch>,
}

/// Reads and validates `routines.json`.
///
/// # Errors
/// `Config` with the file, position and field, or the validation message.
pub fn load_config(path: &std::path::Path) -> Result<RoutinesConfig> {
    osmoda_config::load::<RoutinesConfig>(path).map_err(|e| RoutinesError::Config(e.to_string()))
}

/// Everything command actions must not see under `cfg`: the boundary's masks, the daemon's
/// extra masks, its state dir and socket, and every webhook secret file. A path inside another
/// (a secret in the state dir) is left out: the outer mask hides it, and bubblewrap cannot
/// mount over a path inside a read-only mask.
pub fn hidden_paths(cfg: &RoutinesConfig, opts: &Options) -> Vec<PathBuf> {
    let all: Vec<PathBuf> = cfg
        .boundary
        .masked_paths
        .iter()
        .map(PathBuf::from)
        .chain(opts.masks.iter().cloned())
        .chain([opts.state_dir.clone(), opts.socket.clone()])
        .chain(machine::secret_files(cfg))
        .collect();
    let mut out: Vec<PathBuf> = Vec::new();
    for (i, p) in all.iter().enumerate() {
        let covered = all.iter().enumerate().any(|(j, q)| {
            j != i && q != p && q.is_dir() && machine::inside(p, q) && !machine::inside(q, p)
        });
        if !covered && !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

/// Where paths lie for [`machine::check`] of `cfg` on this daemon: what commands may not see,
/// and the places that hold other components' secrets (the boundary's masks, `--mask`, and the
/// state root: the parent of the state dir, where the other daemons keep theirs).
pub fn places(cfg: &RoutinesConfig, opts: &Options) -> machine::Places {
    machine::Places {
        hidden: hidden_paths(cfg, opts),
        foreign: cfg
            .boundary
            .masked_paths
            .iter()
            .map(PathBuf::from)
            .chain(opts.masks.iter().cloned())
            .chain(opts.state_dir.parent().map(std::path::Path::to_path_buf))
            .filter(|p| p.parent().is_some())
            .collect(),
        state_dir: opts.state_dir.clone(),
    }
}

impl Options {
    /// Refuses paths the command boundary would have to hide but cannot: the state dir, the
    /// socket and every `--mask` must be absolute, without `.` or `..` (bubblewrap refuses a
    /// relative mask, so every command run would fail).
    ///
    /// # Errors
    /// `Config` naming the flag and what to give instead.
    pub fn check(&self) -> Result<()> {
        let flags = [("--state-dir", &self.state_dir), ("--socket", &self.socket)];
        let masks = self.masks.iter().map(|m| ("--mask", m));
        for (flag, p) in flags.into_iter().chain(masks) {
            if !machine::absolute_and_normal(p) {
                return Err(RoutinesError::Config(format!(
                    "{flag} {} must be an absolute path without `.` or `..`: commands run with \
                     it hidden, and the sandbox cannot hide a relative path",
                    p.display()
                )));
            }
        }
        Ok(())
    }
}

/// Loads `routines.json` and checks it against this machine ([`machine::check`]): what the
/// daemon runs at start and on every reload.
///
/// # Errors
/// As [`load_config`], or `Config` with the machine check's message or [`Options::check`]'s.
pub fn load_checked(opts: &Options) -> Result<RoutinesConfig> {
    opts.check()?;
    let cfg = load_config(&opts.config)?;
    machine::check(&cfg, &places(&cfg, opts))
        .map_err(|e| RoutinesError::Config(format!("{}: {e}", opts.config.display())))?;
    Ok(cfg)
}

fn action_env(cfg: &RoutinesConfig, opts: &Options) -> ActionEnv {
    ActionEnv {
        boundary: osmoda_sandbox::Boundary::new(hidden_paths(cfg, opts)),
        agentd_socket: opts.agentd_socket.clone(),
        gateway_url: cfg.gateway_url.clone(),
        gateway_token: opts.gateway_token.clone(),
        gateway_uid: opts
            .gateway_uid
            .unwrap_or_else(|| nix::unistd::geteuid().as_raw()),
    }
}

impl AppState {
    /// Loads the config (refusing an invalid one), opens the history and the ledger spool, and
    /// starts the runs a previous process left queued.
    ///
    /// # Errors
    /// An invalid or unreadable config, an unusable state dir or history database.
    pub async fn open(opts: Options) -> Result<Arc<AppState>> {
        let bytes = std::fs::read(&opts.config).ok();
        let cfg = load_checked(&opts)?;
        std::fs::create_dir_all(&opts.state_dir)
            .map_err(RoutinesError::io("create", &opts.state_dir))?;
        let (history, interrupted) = History::open(&opts.state_dir.join("routines.db"))?;
        let history = Arc::new(history);
        let pruned = history.prune(cfg.history_days)?;
        let reporter = Reporter::open(
            &opts.agentd_socket,
            &opts.state_dir.join("spool"),
            "osmoda-routines",
        )
        .map_err(|e| RoutinesError::Agentd(format!("cannot open the event spool: {e}")))?;
        let env = action_env(&cfg, &opts);
        let engine = Engine::new(cfg.clone(), history, reporter, env);
        let resumed = engine.resume_queued()?;
        tracing::info!(
            routines = cfg.routines.len(),
            interrupted,
            resumed,
            pruned,
            "routines loaded from {}",
            opts.config.display()
        );
        Ok(Arc::new(AppState {
            engine,
            config: watch::Sender::new(Arc::new(cfg)),
            config_error: Mutex::new(None),
            seen: Mutex::new(bytes),
            agentd: Client::new(&opts.agentd_socket).as_daemon("osmoda-routines"),
            watch: Client::new(&opts.watch_socket)
                .as_daemon("osmoda-routines")
                .with_timeout(Duration::from_secs(600)),
            opts,
            queued_switch: Mutex::default(),
        }))
    }

    /// Re-reads the config file if its bytes changed (or the last one was refused); applies it
    /// when valid, else keeps the routines in force and records why. Returns whether a new
    /// config was applied.
    pub async fn reload(&self) -> bool {
        let bytes = std::fs::read(&self.opts.config).ok();
        {
            // A refused config is checked again on every poll: what it lacked on the machine
            // (a webhook's secret file) may have been put in place since.
            let refused = self
                .config_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some();
            let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
            if bytes == *seen && !refused {
                return false;
            }
            *seen = bytes;
        }
        match load_checked(&self.opts) {
            Ok(cfg) => {
                *self.config_error.lock().unwrap_or_else(|e| e.into_inner()) = None;
                if **self.config.borrow() == cfg {
                    return false;
                }
                tracing::info!(
                    "{} changed: {} routines",
                    self.opts.config.display(),
                    cfg.routines.len()
                );
                // An event routine comes into force now: its start is the ledger's tip now
                // (crate::starts), so no event from before it fires it. Should agentd not
                // answer, the event subscription records it once it does.
                let agentd = self.agentd.clone().with_timeout(Duration::from_secs(5));
                let routines = events::event_routines(&cfg);
                if let Err(e) = events::starts_of(&agentd, self.engine.history(), &routines).await {
                    tracing::warn!("{e}; the event subscription records the starts later");
                }
                self.engine
                    .set_config(cfg.clone(), action_env(&cfg, &self.opts));
                self.config.send_replace(Arc::new(cfg));
                true
            }
            Err(e) => {
                let msg = e.message();
                tracing::error!("keeping the routines in force: {msg}");
                let first = {
                    let mut err = self.config_error.lock().unwrap_or_else(|e| e.into_inner());
                    let first = err.as_deref() != Some(&msg);
                    *err = Some(msg.clone());
                    first
                };
                if first {
                    self.engine
                        .report(
                            "routine.config.refused",
                            serde_json::json!({ "error": msg }),
                        )
                        .await;
                }
                false
            }
        }
    }
}

/// Serves the API on `listener` and runs the scheduler, the event subscription, the config
/// reloader and history retention until `shutdown`; then waits (bounded) for running actions.
///
/// # Errors
/// When the listener fails.
pub async fn serve(
    listener: tokio::net::UnixListener,
    state: Arc<AppState>,
    shutdown: Shutdown,
) -> Result<()> {
    let (due_tx, mut due_rx) = mpsc::channel::<scheduler::Due>(1024);
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(scheduler::run(
        state.opts.clock,
        state.config.subscribe(),
        Arc::clone(state.engine.history()),
        due_tx,
        shutdown.clone(),
    ));
    let engine = Arc::clone(&state.engine);
    tasks.spawn(async move {
        while let Some((name, fired, mark)) = due_rx.recv().await {
            // The mark is recorded with the run; `mark` keeps the due time pending till then.
            if let Err(e) = engine.fire_scheduled(&name, fired, mark.ms).await {
                tracing::warn!("routine {name}: {}", e.message());
            }
            drop(mark);
        }
    });
    tasks.spawn(events::run(
        state.agentd.clone(),
        Arc::clone(&state.engine),
        state.config.subscribe(),
        shutdown.clone(),
    ));
    let reload_state = Arc::clone(&state);
    let mut stop = shutdown.clone();
    tasks.spawn(async move {
        let mut pruned = tokio::time::Instant::now();
        loop {
            tokio::select! {
                _ = stop.wait() => return,
                _ = tokio::time::sleep(CONFIG_POLL) => {}
            }
            reload_state.reload().await;
            if pruned.elapsed() > Duration::from_secs(3600) {
                pruned = tokio::time::Instant::now();
                let days = reload_state.config.borrow().history_days;
                if let Err(e) = reload_state.engine.history().prune(days) {
                    tracing::error!("history retention: {e}");
                }
            }
        }
    });
    let app = api::router(Arc::clone(&state));
    let limits = osmoda_daemon::server::Limits::main(osmoda_daemon::fd_limit());
    let res = osmoda_daemon::server::serve(
        listener,
        "routines",
        limits,
        app,
        osmoda_daemon::server::PeerCred::of,
        shutdown,
    )
    .await
    .map_err(|e| RoutinesError::Io {
        op: "serve",
        path: PathBuf::from("routines socket"),
        source: e,
    });
    tasks.abort_all();
    while tasks.join_next().await.is_some() {}
    state.engine.stop(STOP_GRACE).await;
    res
}
