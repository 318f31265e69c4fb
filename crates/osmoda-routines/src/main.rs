//! osmoda-routines daemon: parses flags, reads the config, binds the socket, calls `serve`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use osmoda_routines::scheduler::Clock;
use osmoda_routines::{serve, AppState, Options};

/// Cron, interval, event and webhook automation for osModa.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Unix socket to listen on.
    #[arg(long, default_value = "/run/osmoda/routines.sock")]
    socket: PathBuf,
    /// routines.json (rendered by the NixOS module).
    #[arg(long, default_value = "/etc/osmoda/routines.json")]
    config: PathBuf,
    /// State directory (run history, event cursor, spool).
    #[arg(long, default_value = "/var/lib/osmoda/routines")]
    state_dir: PathBuf,
    /// agentd's socket.
    #[arg(long, default_value = "/run/osmoda/agentd.sock")]
    agentd_socket: PathBuf,
    /// osmoda-watch's socket (SafeSwitch for /routine/add and /routine/remove).
    #[arg(long, default_value = "/run/osmoda/watch.sock")]
    watch_socket: PathBuf,
    /// A path command actions must not see, besides routines.json's `boundary.masked_paths`
    /// (repeatable).
    #[arg(long = "mask", value_name = "PATH")]
    masks: Vec<PathBuf>,
    /// The user (name or uid) that runs the OpenClaw gateway: a prompt action sends its token
    /// only when that user's socket holds the gateway's port. Default: this daemon's user.
    #[arg(long, value_name = "USER")]
    gateway_user: Option<String>,
    /// A file holding only the OpenClaw gateway's token, for prompt actions (the NixOS unit's
    /// credential `gateway-token`, from `services.osmoda.routines.gatewayTokenFile`); without
    /// it, `OPENCLAW_GATEWAY_TOKEN` from the environment (local mode).
    #[arg(long, value_name = "FILE")]
    gateway_token_file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Validate a routines.json file and exit (non-zero with the reason when invalid). Outside
    /// a Nix build it also checks the file against this machine as the daemon does at start
    /// (webhook secret files present, readable and not empty; users not root); inside one
    /// (`NIX_BUILD_TOP` set, as in the module's build-time check) secret files cannot be seen
    /// and are left to the daemon.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Cmd::CheckConfig { file }) = &cli.cmd {
        osmoda_config::check_config("routines", file)?;
        if std::env::var_os("NIX_BUILD_TOP").is_some() {
            println!(
                "{}: ok (in a Nix build: webhook secret files are checked when the daemon starts)",
                file.display()
            );
            return Ok(());
        }
        let mut opts = options(&cli)?;
        opts.config.clone_from(file);
        osmoda_routines::load_checked(&opts)?;
        println!("{}: ok", file.display());
        return Ok(());
    }
    // Taken out of the environment before any thread starts: no child inherits it (commands
    // get a cleared environment anyway).
    let env_token = std::env::var("OPENCLAW_GATEWAY_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    std::env::remove_var("OPENCLAW_GATEWAY_TOKEN");
    let token = match &cli.gateway_token_file {
        Some(f) => Some(read_token(f)?),
        None => env_token,
    };
    osmoda_daemon::init_tracing();
    tokio::runtime::Runtime::new()?.block_on(run(cli, token))
}

/// The gateway's token from `file` (trimmed; an empty file is refused).
fn read_token(file: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the gateway token file {}: {e} (services.osmoda.routines.gatewayTokenFile)",
            file.display()
        )
    })?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the gateway token file {} is empty (services.osmoda.routines.gatewayTokenFile)",
        file.display()
    );
    Ok(token.to_owned())
}

/// The uid of `user` (a name, or a number that names an existing user).
fn uid_of(user: &str) -> anyhow::Result<u32> {
    osmoda_daemon::peer::uid_of(user).map_err(|e| {
        anyhow::anyhow!("--gateway-user {e}; name the user that runs the OpenClaw gateway")
    })
}

fn options(cli: &Cli) -> anyhow::Result<Options> {
    Ok(Options {
        config: cli.config.clone(),
        state_dir: cli.state_dir.clone(),
        agentd_socket: cli.agentd_socket.clone(),
        watch_socket: cli.watch_socket.clone(),
        socket: cli.socket.clone(),
        masks: cli.masks.clone(),
        clock: Clock::System,
        gateway_token: None,
        gateway_uid: cli.gateway_user.as_deref().map(uid_of).transpose()?,
    })
}

async fn run(cli: Cli, token: Option<String>) -> anyhow::Result<()> {
    osmoda_daemon::raise_fd_limit()?;
    let mut opts = options(&cli)?;
    opts.gateway_token = token;
    let state = AppState::open(opts).await?;
    // Mode 0660: the agent (group osmoda) may call it, like agentd's agent socket.
    let (listener, shutdown) = osmoda_daemon::listen("osmoda-routines", &cli.socket, 0o660)?;
    serve(listener, state, shutdown).await?;
    Ok(())
}
