//! osmoda-mesh daemon: parses flags, reads the config, binds the socket and the TCP listener,
//! calls `serve`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use osmoda_mesh::{serve, AppState, Options, Tuning};

/// Post-quantum hybrid links between osModa hosts.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Unix socket to listen on.
    #[arg(long, default_value = "/run/osmoda/mesh.sock")]
    socket: PathBuf,
    /// mesh.json (rendered by the NixOS module or the local backend).
    #[arg(long, default_value = "/etc/osmoda/mesh.json")]
    config: PathBuf,
    /// State directory (sealed identity, invites, inbox).
    #[arg(long, default_value = "/var/lib/osmoda/mesh")]
    state_dir: PathBuf,
    /// agentd's socket.
    #[arg(long, default_value = "/run/osmoda/agentd.sock")]
    agentd_socket: PathBuf,
    /// osmoda-watch's socket (pairing applies its generation with SafeSwitch).
    #[arg(long, default_value = "/run/osmoda/watch.sock")]
    watch_socket: PathBuf,
    /// The name this host offers peers (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// File with the key-encryption secret of the identity at rest (else the systemd
    /// credential `secret`, else one generated in the state dir, mode 0600).
    #[arg(long)]
    key_file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Validate a mesh.json file and exit (non-zero with the reason when invalid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Cmd::CheckConfig { file }) = &cli.cmd {
        osmoda_config::check_config("mesh", file)?;
        osmoda_mesh::check_config_file(file).map_err(anyhow::Error::msg)?;
        println!("{}: ok", file.display());
        return Ok(());
    }
    osmoda_daemon::init_tracing();
    tokio::runtime::Runtime::new()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    osmoda_daemon::raise_fd_limit()?;
    let name = match cli.name {
        Some(n) => n,
        None => osmoda_mesh::default_name().map_err(anyhow::Error::msg)?,
    };
    anyhow::ensure!(
        osmoda_config::tree_edit::valid_attr_name(&name),
        "--name {name:?} must start with a letter and contain only letters, digits, '-' and '_'"
    );
    let state = AppState::open(Options {
        config: cli.config,
        state_dir: cli.state_dir,
        agentd_socket: cli.agentd_socket,
        watch_socket: cli.watch_socket,
        key_file: cli.key_file,
        name,
        tuning: Tuning::default(),
    })?;
    let listen = state
        .config()
        .map_err(|e| anyhow::anyhow!("mesh.json is invalid: {e}"))?
        .listen
        .clone();
    let tcp = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    tracing::info!("osmoda-mesh: peers connect to {listen}");
    // Mode 0660: the agent's gateway and agentd (group osmoda) call it.
    let (listener, shutdown) = osmoda_daemon::listen("osmoda-mesh", &cli.socket, 0o660)?;
    serve(listener, tcp, state, shutdown).await?;
    Ok(())
}
