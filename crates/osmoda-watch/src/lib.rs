//! osmoda-watch: SafeSwitch (apply a generation of the config tree with health gates and a
//! rollback that always happens, crash-safe) and autopilot watchers.
//!
//! Entry points: [`AppState::open`] wires the tree, the backend, agentd and the engine from
//! [`Options`]; [`serve`] answers the API on a Unix socket and keeps watchers in line with the
//! config file until shutdown.

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod agentd;
pub mod api;
pub mod backend;
pub mod checks;
pub mod error;
pub mod runner;
pub use osmoda_daemon::shutdown;
pub mod scheduler;
pub mod switch;
pub mod tree;
pub mod watcher;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use osmoda_config::WatchConfig;

pub use error::{Result, WatchError};
pub use shutdown::Shutdown;

use crate::backend::local::LocalBackend;
use crate::backend::nixos::NixosBackend;
use crate::backend::Backend;
use crate::checks::CheckEnv;
use crate::runner::{ProcessRunner, Runner};
use crate::switch::{Engine, EngineOptions, PausePoint};
use crate::watcher::{Ctx, Watchers};

/// How often the config file is re-read to pick up a new generation's watchers.
const CONFIG_POLL: Duration = Duration::from_secs(2);

/// Which apply backend to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendKind {
    /// nixos-rebuild + switch-to-configuration.
    Nixos,
    /// Rendered etc dir with an atomic symlink swap.
    Local,
}

/// Everything the daemon needs to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// `watch.json` (watchers and SafeSwitch defaults); missing means no watchers.
    pub config: PathBuf,
    /// Runtime state (switch records, generations, spool).
    pub state_dir: PathBuf,
    /// agentd's socket.
    pub agentd_socket: PathBuf,
    /// The apply backend.
    pub backend: BackendKind,
    /// The git-tracked config tree.
    pub config_tree: PathBuf,
    /// Local backend: directory receiving the `osmoda` symlink.
    pub etc_dir: PathBuf,
    /// Local backend: the osModa `lib/` directory.
    pub lib_dir: PathBuf,
    /// NixOS backend: the flake's `nixosConfigurations` attribute.
    pub host: String,
    /// Pause between probe rounds of a switch.
    pub probe_interval: Duration,
    /// Pause between retries of a failed check.
    pub retry_delay: Duration,
    /// Test hook (`OSMODA_WATCH_PAUSE_IN`).
    pub pause: Option<PausePoint>,
    /// Paths hidden from `command` checks besides `watch.json`'s `boundary.masked_paths` and
    /// this daemon's state dir (`--mask`; for layouts other than the module's, e.g. local mode).
    pub masks: Vec<PathBuf>,
}

/// Shared state of the running daemon.
pub struct AppState {
    /// SafeSwitch.
    pub engine: Arc<Engine>,
    /// Autopilot watchers.
    pub watchers: Watchers,
    /// agentd.
    pub agentd: Arc<agentd::Agentd>,
    /// Where watchers come from.
    pub config_path: PathBuf,
    /// What checks run with (its boundary follows `watch.json`).
    pub check_env: CheckEnv,
    /// How the daemon was started.
    pub opts: Options,
}

/// The command boundary: `watch.json`'s masked paths (the module's defaults when there is no
/// file yet), the `--mask` paths, and this daemon's own state (switch records, event spool).
fn boundary_of(cfg: Option<&WatchConfig>, opts: &Options) -> osmoda_sandbox::Boundary {
    let paths = cfg.map_or_else(
        || osmoda_config::BoundaryConfig::default().masked_paths,
        |c| c.boundary.masked_paths.clone(),
    );
    opts.masks
        .iter()
        .chain(std::iter::once(&opts.state_dir))
        .fold(osmoda_sandbox::Boundary::new(paths), |b, p| b.with(p))
}

/// SafeSwitch's TTL while there is no `watch.json`.
const DEFAULT_TTL_SECS: u64 = 60;

/// The configuration in force while there is no `watch.json`: no watchers, no default checks.
fn unconfigured() -> WatchConfig {
    WatchConfig {
        watchers: Default::default(),
        safe_switch: osmoda_config::SafeSwitchDefaults {
            ttl_secs: DEFAULT_TTL_SECS,
            health_checks: Vec::new(),
        },
        boundary: Default::default(),
    }
}

/// The check of every declared watcher.
fn watcher_checks(cfg: &WatchConfig) -> Vec<osmoda_config::HealthCheck> {
    cfg.watchers.values().map(|w| w.check.clone()).collect()
}

/// Reads `watch.json`; a missing file is an empty configuration.
///
/// # Errors
/// `Config` with the file position and field when it does not parse or validate.
pub fn load_config(path: &std::path::Path) -> Result<Option<WatchConfig>> {
    if !path.exists() {
        return Ok(None);
    }
    osmoda_config::load::<WatchConfig>(path)
        .map(Some)
        .map_err(|e| WatchError::Config(e.to_string()))
}

impl AppState {
    /// Opens the tree, the backend, agentd's spool and the engine, and finishes any switch a
    /// previous run left unfinished (in the background).
    ///
    /// # Errors
    /// When the tree, a directory or the config file is unusable.
    pub async fn open(opts: Options) -> Result<Arc<AppState>> {
        std::fs::create_dir_all(&opts.state_dir)
            .map_err(WatchError::io("create", &opts.state_dir))?;
        let tree = Arc::new(tree::ConfigTree::open(&opts.config_tree)?);
        let runner: Arc<dyn Runner> = Arc::new(ProcessRunner);
        let backend: Arc<dyn Backend> = match opts.backend {
            BackendKind::Local => Arc::new(LocalBackend::new(
                Arc::clone(&tree),
                Arc::clone(&runner),
                &opts.state_dir,
                opts.etc_dir.clone(),
                opts.lib_dir.clone(),
            )?),
            BackendKind::Nixos => Arc::new(NixosBackend::new(
                Arc::clone(&runner),
                tree.dir(),
                opts.host.clone(),
                opts.state_dir.clone(),
            )),
        };
        let agentd = Arc::new(agentd::Agentd::open(
            &opts.agentd_socket,
            &opts.state_dir.join("spool"),
        )?);
        agentd.record_spool_set_aside().await;
        let cfg = load_config(&opts.config)?;
        let check_env = CheckEnv {
            agentd_socket: Some(opts.agentd_socket.clone()),
            retry_delay: opts.retry_delay,
            boundary: checks::SharedBoundary::new(boundary_of(cfg.as_ref(), &opts)),
            systemctl: Some(Arc::clone(&runner)),
        };
        let (ttl, checks) = cfg.as_ref().map_or_else(
            || (DEFAULT_TTL_SECS, Vec::new()),
            |c| (c.safe_switch.ttl_secs, c.safe_switch.health_checks.clone()),
        );
        let watcher_checks = cfg.as_ref().map(watcher_checks).unwrap_or_default();
        let engine = Engine::new(
            backend,
            Arc::clone(&tree),
            Arc::clone(&agentd),
            EngineOptions {
                state_dir: opts.state_dir.clone(),
                probe_interval: opts.probe_interval,
                default_ttl_secs: ttl,
                default_checks: checks,
                watcher_checks,
                pause: opts.pause.clone(),
                check_env: check_env.clone(),
            },
        )?;
        engine.recover().await?;
        let watchers = Watchers::new(Ctx {
            engine: Arc::clone(&engine),
            agentd: Arc::clone(&agentd),
            runner,
            check_env: check_env.clone(),
            dir: opts.state_dir.join("watchers"),
        })?;
        if let Some(cfg) = &cfg {
            watchers.apply(cfg);
        }
        Ok(Arc::new(AppState {
            engine,
            watchers,
            agentd,
            check_env,
            config_path: opts.config.clone(),
            opts,
        }))
    }

    /// Re-reads the config file and applies watchers and SafeSwitch defaults if it changed.
    fn reload(&self, last: &mut Option<Vec<u8>>) {
        let bytes = std::fs::read(&self.config_path).ok();
        if bytes == *last {
            return;
        }
        *last = bytes;
        match load_config(&self.config_path) {
            Ok(Some(cfg)) => {
                tracing::info!(
                    "config {} changed: {} watchers",
                    self.config_path.display(),
                    cfg.watchers.len()
                );
                self.engine.set_defaults(
                    cfg.safe_switch.ttl_secs,
                    cfg.safe_switch.health_checks.clone(),
                    watcher_checks(&cfg),
                );
                self.check_env
                    .boundary
                    .set(boundary_of(Some(&cfg), &self.opts));
                self.watchers.apply(&cfg);
            }
            // No file (a rollback to before the first deployment removed it): nothing is
            // configured any more, so neither the watchers nor the SafeSwitch defaults and
            // watcher checks of the generation that was undone stay in force.
            Ok(None) => {
                tracing::info!(
                    "config {} is gone: no watchers, default SafeSwitch settings",
                    self.config_path.display()
                );
                let cfg = unconfigured();
                self.engine.set_defaults(
                    cfg.safe_switch.ttl_secs,
                    cfg.safe_switch.health_checks.clone(),
                    watcher_checks(&cfg),
                );
                self.check_env.boundary.set(boundary_of(None, &self.opts));
                self.watchers.apply(&cfg);
            }
            Err(e) => tracing::error!("keeping the previous watchers: {e}"),
        }
    }
}

/// Serves the API on `listener` until `shutdown`, reloading watchers when the config changes
/// (after every finished switch, and by polling for changes made by NixOS activation).
///
/// # Errors
/// When the server fails.
pub async fn serve(
    listener: tokio::net::UnixListener,
    state: Arc<AppState>,
    shutdown: Shutdown,
) -> Result<()> {
    let reload_state = Arc::clone(&state);
    let mut stop = shutdown.clone();
    let reloader = tokio::spawn(async move {
        let mut last = std::fs::read(&reload_state.config_path).ok();
        let mut finished = reload_state.engine.finished();
        loop {
            tokio::select! {
                _ = stop.wait() => return,
                _ = finished.changed() => {}
                _ = tokio::time::sleep(CONFIG_POLL) => {}
            }
            reload_state.reload(&mut last);
        }
    });
    let stop = shutdown;
    let app = api::router(Arc::clone(&state));
    let limits = osmoda_daemon::server::Limits::main(osmoda_daemon::fd_limit());
    let res = osmoda_daemon::server::serve(
        listener,
        "watch",
        limits,
        app,
        osmoda_daemon::server::PeerCred::of,
        stop,
    )
    .await
    .map_err(|e| WatchError::Backend(format!("server error: {e}")));
    reloader.abort();
    state.watchers.stop();
    res
}
