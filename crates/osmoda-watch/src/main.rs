//! osmoda-watch daemon: parses flags, reads the config, binds the socket, calls `serve`.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use osmoda_watch::switch::PausePoint;
use osmoda_watch::{serve, AppState, BackendKind, Options};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Backend {
    Nixos,
    Local,
}

/// SafeSwitch and autopilot watchers for osModa.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Unix socket to listen on.
    #[arg(long, default_value = "/run/osmoda/watch.sock")]
    socket: PathBuf,
    /// watch.json (rendered by the NixOS module or the local backend).
    #[arg(long, default_value = "/etc/osmoda/watch.json")]
    config: PathBuf,
    /// State directory.
    #[arg(long, default_value = "/var/lib/osmoda/watch")]
    state_dir: PathBuf,
    /// agentd's socket.
    #[arg(long, default_value = "/run/osmoda/agentd.sock")]
    agentd_socket: PathBuf,
    /// Apply backend.
    #[arg(long, value_enum, default_value = "nixos")]
    backend: Backend,
    /// The git-tracked config tree.
    #[arg(long, default_value = "/var/lib/osmoda/config")]
    config_tree: PathBuf,
    /// Local backend: directory that receives the `osmoda` symlink to the active generation.
    #[arg(long, default_value = "/etc")]
    etc_dir: PathBuf,
    /// Local backend: osModa's lib/ directory (pure Nix renderer).
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/../../lib"))]
    lib_dir: PathBuf,
    /// NixOS backend: nixosConfigurations attribute to build (default: the host name).
    #[arg(long)]
    host: Option<String>,
    /// Milliseconds between probe rounds of a switch.
    #[arg(long, default_value_t = 1000)]
    probe_interval_ms: u64,
    /// A path `command` checks must not see, besides watch.json's `boundary.masked_paths`
    /// (repeatable; for local mode, where agentd's approval socket and state live elsewhere).
    #[arg(long = "mask", value_name = "PATH")]
    masks: Vec<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Validate a watch.json file and exit (non-zero with the reason when invalid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Cmd::CheckConfig { file }) = &cli.cmd {
        osmoda_config::check_config("watch", file)?;
        println!("{}: ok", file.display());
        return Ok(());
    }
    osmoda_daemon::init_tracing();
    tokio::runtime::Runtime::new()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let fds = osmoda_daemon::raise_fd_limit()?;
    tracing::debug!(open_files = fds, "open-file limit");
    let pause = match std::env::var("OSMODA_WATCH_PAUSE_IN") {
        Ok(v) if !v.is_empty() => Some(PausePoint::parse(&v)?),
        _ => None,
    };
    let host = match cli.host {
        Some(h) => h,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_default(),
    };
    let opts = Options {
        config: cli.config,
        state_dir: cli.state_dir,
        agentd_socket: cli.agentd_socket,
        backend: match cli.backend {
            Backend::Nixos => BackendKind::Nixos,
            Backend::Local => BackendKind::Local,
        },
        config_tree: cli.config_tree,
        etc_dir: cli.etc_dir,
        lib_dir: cli.lib_dir,
        host,
        probe_interval: Duration::from_millis(cli.probe_interval_ms),
        retry_delay: Duration::from_millis(500),
        pause,
        masks: cli.masks,
    };
    let state = AppState::open(opts).await?;
    // Mode 0660: the agent (group osmoda) may call it, like agentd's agent socket.
    let (listener, shutdown) = osmoda_daemon::listen("osmoda-watch", &cli.socket, 0o660)?;
    serve(listener, state, shutdown).await?;
    Ok(())
}
