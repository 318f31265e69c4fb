//! agentd binary: parse flags, set up tracing, bind the two sockets and call `agentd::serve`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "agentd", about = "osModa kernel bridge daemon", version)]
struct Cli {
    /// Agent-facing API socket (mode 0660).
    #[arg(long, default_value = "/run/osmoda/agentd.sock")]
    socket: PathBuf,
    /// Human-only approval socket (mode 0600); approve/deny are served only here.
    #[arg(long, default_value = osmoda_config::DEFAULT_APPROVAL_SOCKET)]
    approval_socket: PathBuf,
    /// State directory; the ledger is `<state-dir>/ledger.db`.
    #[arg(long, default_value = "/var/lib/osmoda/agentd")]
    state_dir: PathBuf,
    /// Generated configuration (`/etc/osmoda/agentd.json`); defaults apply when it is absent.
    #[arg(long, default_value = "/etc/osmoda/agentd.json")]
    config: PathBuf,
    /// The approval relay's socket (mode 0660; its directory gives it the gateway's group): where the OpenClaw
    /// gateway passes on decisions people make in the chat. Served only with `--relay-user`.
    #[arg(long, default_value = agentd::api::relay::DEFAULT_RELAY_SOCKET)]
    relay_socket: PathBuf,
    /// The gateway's user (name or uid): the only peer the relay socket admits.
    #[arg(long)]
    relay_user: Option<String>,
    /// The git-tracked Nix tree agentd edits (config API); without it the config routes answer 503.
    #[arg(long)]
    config_tree: Option<PathBuf>,
    /// Validation of config edits before commit: `parse` (rnix only), `eval` (the Nix evaluator
    /// on each changed file) or `build` (also a full NixOS evaluation; needs `<nixpkgs>`).
    #[arg(long, default_value = "eval")]
    validate: osmoda_generations::Validate,
    /// osModa's NixOS module, evaluated with the tree by `--validate build`.
    #[arg(long)]
    nixos_module: Option<PathBuf>,
    /// The user (name or uid) osmoda-keyd runs as: only its connections may open and consume
    /// wallet approval tickets.
    #[arg(long, default_value = "osmoda-keyd")]
    keyd_user: String,
    /// A directory `/fs/write` writes without a person's approval (repeatable; replaces
    /// agentd.json's `files.writable_roots`, whose default is /tmp, /var/tmp, /srv, /opt, /home,
    /// /var/lib, /var/cache, /var/www).
    #[arg(long)]
    writable_root: Vec<PathBuf>,
    /// egress.json: the declared capabilities tokens are minted from.
    #[arg(long, default_value = agentd::api::capability::DEFAULT_EGRESS_CONFIG)]
    egress_config: PathBuf,
    /// The capability-token signing key (32 raw bytes or 64 hex); default: generated once in
    /// the state directory.
    #[arg(long)]
    capability_key: Option<PathBuf>,
    /// osmoda-egress's CONNECT Unix socket, bound into Ring 1 sandboxes (`/sandbox/exec`).
    #[arg(long, default_value = agentd::api::sandbox::DEFAULT_PROXY_SOCKET)]
    egress_proxy_socket: PathBuf,
    /// The osmoda-egress binary whose relay runs inside Ring 1 (default: beside agentd, or PATH).
    #[arg(long)]
    egress_bin: Option<PathBuf>,
    /// Memory notes (MEMORY.md, memory/YYYY-MM-DD.md); default `<state-dir>/memory`.
    #[arg(long)]
    memory_dir: Option<PathBuf>,
    /// The in-process embedding model's files (all-MiniLM-L6-v2, see crates/osmoda-memory);
    /// without it (and without `memory.embedding_endpoint`) recall is keyword-only.
    #[arg(long, env = "OSMODA_MEMORY_MODEL_DIR")]
    memory_model: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check a generated agentd.json and exit (used by the NixOS module at build time).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::CheckConfig { file }) = &cli.command {
        let settings = agentd::config::load(file)?;
        // Outside a Nix build (where secrets cannot be seen) the checkpoint key must be there.
        let key = settings
            .checkpoint
            .as_ref()
            .and_then(|c| c.key_file.as_ref());
        if let (Some(k), None) = (key, std::env::var_os("NIX_BUILD_TOP")) {
            agentd::checkpoints::check_key_file(k)?;
        }
        // The witness key by the same rule (whoever reads it cosigns as this machine).
        let witness_key = settings.witness.as_ref().and_then(|w| w.key_file.as_ref());
        if let (Some(k), None) = (witness_key, std::env::var_os("NIX_BUILD_TOP")) {
            agentd::witness::check_key_file(k)?;
        }
        // And the capability key (`--capability-key`, given before `check-config`).
        if let (Some(k), None) = (&cli.capability_key, std::env::var_os("NIX_BUILD_TOP")) {
            agentd::api::capability::check_key_file(k)?;
        }
        println!("{}: ok ({settings:?})", file.display());
        return Ok(());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();

    let mut settings = if cli.config.exists() {
        agentd::config::load(&cli.config)?
    } else {
        tracing::info!(config = %cli.config.display(), "no config file; using defaults");
        agentd::Settings {
            checkpoint: agentd::config::checkpoint_settings(&Default::default()),
            ..agentd::Settings::default()
        }
    };
    settings.validate = cli.validate;
    settings.nixos_module = cli.nixos_module.clone();
    (settings.memory.dir, settings.memory.model_dir) =
        (cli.memory_dir.clone(), cli.memory_model.clone());
    if cli.approval_socket != std::path::Path::new(agentd::DEFAULT_APPROVAL_SOCKET) {
        settings.approval_socket = Some(cli.approval_socket.clone());
    }
    if let Some(user) = &cli.relay_user {
        settings.relay_uid = Some(agentd::api::relay::resolve_user(user)?);
        if cli.relay_socket != std::path::Path::new(agentd::api::relay::DEFAULT_RELAY_SOCKET) {
            settings.relay_socket = Some(cli.relay_socket.clone());
        }
    }
    settings.egress_config = Some(cli.egress_config.clone());
    settings.capability_key = cli.capability_key.clone();
    settings.egress_proxy_socket = Some(cli.egress_proxy_socket.clone());
    settings.egress_bin = cli.egress_bin.clone();
    settings.keyd_uid = match cli.keyd_user.parse::<u32>() {
        Ok(uid) => Some(uid),
        Err(_) => nix::unistd::User::from_name(&cli.keyd_user)
            .ok()
            .flatten()
            .map(|u| u.uid.as_raw()),
    };
    if !cli.writable_root.is_empty() {
        settings.writable_roots = cli.writable_root.clone();
    }
    let fds = osmoda_daemon::raise_fd_limit()?;
    let limits = agentd::ServeLimits {
        agent: agentd::Limits::main(fds),
        approval: agentd::Limits::small(),
    };
    tracing::info!(
        open_files = fds,
        agent_connections = limits.agent.max_connections,
        "connection budget"
    );
    let settings_relay_uid = settings.relay_uid;
    let state =
        agentd::AppState::open(cli.state_dir.clone(), settings, cli.config_tree.as_deref())?;
    agentd::backup::restore::recover(&state).await?;
    agentd::api::config::recover(&state)?;
    let _drift = agentd::api::config::watch_drift(&state)?;
    let bind = |path: &std::path::Path, mode| {
        osmoda_daemon::bind_unix(path, mode).with_context(|| format!("binding {}", path.display()))
    };
    let agent = bind(&cli.socket, 0o660)?;
    let approval = bind(&cli.approval_socket, 0o600)?;
    let relay = match settings_relay_uid {
        Some(_) => Some(
            agentd::api::relay::bind(&cli.relay_socket)
                .with_context(|| format!("binding {}", cli.relay_socket.display()))?,
        ),
        None => None,
    };
    let (trigger, shutdown) = agentd::shutdown_channel();
    osmoda_daemon::fire_on_signals(trigger)?;
    let relay = relay.map(|l| {
        tracing::info!(relay = %cli.relay_socket.display(), "approval relay");
        tokio::spawn(agentd::api::relay::serve(
            l,
            state.clone(),
            shutdown.clone(),
        ))
    });
    tracing::info!(socket = %cli.socket.display(), approval = %cli.approval_socket.display(), "agentd ready");
    osmoda_daemon::notify_ready();
    agentd::serve_with(agent, approval, state, shutdown, limits).await?;
    if let Some(r) = relay {
        r.await??;
    }
    Ok(())
}
