//! osmoda-keyd daemon: parses flags, reads the config, binds the socket, calls `serve`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use osmoda_keyd::{serve, AppState, Options};

/// Ethereum and Solana wallets with policy-gated signing for osModa; never broadcasts.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Unix socket to listen on.
    #[arg(long, default_value = "/run/osmoda/keyd.sock")]
    socket: PathBuf,
    /// keyd.json (rendered by the NixOS module or the local backend).
    #[arg(long, default_value = "/etc/osmoda/keyd.json")]
    config: PathBuf,
    /// State directory (wallets, sealed keys, counters).
    #[arg(long, default_value = "/var/lib/osmoda/keyd")]
    state_dir: PathBuf,
    /// agentd's socket.
    #[arg(long, default_value = "/run/osmoda/agentd.sock")]
    agentd_socket: PathBuf,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Validate a keyd.json file and exit (non-zero with the reason when invalid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Cmd::CheckConfig { file }) = &cli.cmd {
        osmoda_config::check_config("keyd", file)?;
        println!("{}: ok", file.display());
        return Ok(());
    }
    osmoda_daemon::init_tracing();
    tokio::runtime::Runtime::new()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    osmoda_daemon::raise_fd_limit()?;
    let state = AppState::open(Options {
        config: cli.config,
        state_dir: cli.state_dir,
        agentd_socket: cli.agentd_socket,
        clock: osmoda_keyd::system_clock(),
    })?;
    // Mode 0660: the agent's gateway (group osmoda) calls it.
    let (listener, shutdown) = osmoda_daemon::listen("osmoda-keyd", &cli.socket, 0o660)?;
    serve(listener, state, shutdown).await?;
    Ok(())
}
