//! osmoda-voice daemon: parses flags, reads the config, loads the models, binds the socket,
//! calls `serve`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use osmoda_voice::device::AudioDevice;
use osmoda_voice::{serve, AppState, Options};

/// Local speech in (whisper.cpp) and out (piper) for osModa, over PipeWire.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Unix socket to listen on.
    #[arg(long, default_value = "/run/osmoda/voice.sock")]
    socket: PathBuf,
    /// voice.json (rendered by the NixOS module).
    #[arg(long, default_value = "/etc/osmoda/voice.json")]
    config: PathBuf,
    /// State directory (speech, recordings, ledger spool).
    #[arg(long, default_value = "/var/lib/osmoda/voice")]
    state_dir: PathBuf,
    /// agentd's socket.
    #[arg(long, default_value = "/run/osmoda/agentd.sock")]
    agentd_socket: PathBuf,
    /// The piper executable.
    #[arg(long, default_value = "piper")]
    piper: PathBuf,
    /// PipeWire's player.
    #[arg(long, default_value = "pw-play")]
    player: PathBuf,
    /// PipeWire's recorder.
    #[arg(long, default_value = "pw-record")]
    recorder: PathBuf,
    /// A file holding only the OpenClaw gateway's token (the NixOS unit's credential
    /// `gateway-token`); without it, `OPENCLAW_GATEWAY_TOKEN` from the environment.
    #[arg(long)]
    gateway_token_file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Validate a voice.json file and exit (non-zero with the reason when invalid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Cmd::CheckConfig { file }) = &cli.cmd {
        osmoda_config::check_config("voice", file)?;
        osmoda_voice::load_config(file).map_err(|e| anyhow::anyhow!(e.to_string()))?;
        println!("{}: ok", file.display());
        return Ok(());
    }
    // Taken out of the environment before any thread starts: no child inherits it.
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

async fn run(cli: Cli, token: Option<String>) -> anyhow::Result<()> {
    osmoda_daemon::raise_fd_limit()?;
    let opts = Options {
        config: cli.config,
        state_dir: cli.state_dir,
        agentd_socket: cli.agentd_socket,
        piper: cli.piper,
        audio: AudioDevice {
            player: cli.player,
            recorder: cli.recorder,
            // From the environment: the unit sets PIPEWIRE_RUNTIME_DIR.
            runtime_dir: None,
        },
        gateway_token: token,
    };
    let state = AppState::open(opts)
        .await
        .map_err(|e| anyhow::anyhow!(e.to_string()))?;
    // Mode 0660: the agent (group osmoda) may call it, like the other daemons' sockets.
    let (listener, shutdown) = osmoda_daemon::listen("osmoda-voice", &cli.socket, 0o660)?;
    serve(listener, state, shutdown).await?;
    Ok(())
}

/// The token in `file`: its content without surrounding white space, refused when empty (a
/// token the gateway would refuse, found out only at the first utterance).
fn read_token(file: &std::path::Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        anyhow::anyhow!(
            "cannot read the gateway token file {}: {e} (services.osmoda.voice.gatewayTokenFile)",
            file.display()
        )
    })?;
    let token = text.trim();
    anyhow::ensure!(
        !token.is_empty(),
        "the gateway token file {} is empty (services.osmoda.voice.gatewayTokenFile)",
        file.display()
    );
    Ok(token.to_owned())
}
