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
    /// The PipeWire node (`node.name`) to record and listen to (`services.osmoda.voice.source`);
    /// without it, the server's default source.
    #[arg(long, value_parser = source_name)]
    source: Option<String>,
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
    /// Carry connections from a Unix socket (systemd's socket activation, or `--listen`) to the
    /// gateway's loopback port, only once that port is known to be held by the gateway's user.
    GatewayProxy {
        /// The gateway's address: `127.0.0.1:<port>` or `[::1]:<port>`.
        #[arg(long)]
        to: String,
        /// The user that runs the OpenClaw gateway (a name, or a uid).
        #[arg(long)]
        gateway_user: String,
        /// Bind this Unix socket (mode 0600) instead of taking the one systemd passes.
        #[arg(long)]
        listen: Option<PathBuf>,
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
    if let Some(Cmd::GatewayProxy {
        to,
        gateway_user,
        listen,
    }) = &cli.cmd
    {
        let target = osmoda_voice::proxy::ProxyTarget {
            to: osmoda_voice::gateway::loopback_authority(to)
                .map_err(|e| anyhow::anyhow!("--to: {e}"))?,
            gateway_uid: osmoda_daemon::peer::uid_of(gateway_user).map_err(|e| {
                anyhow::anyhow!("--gateway-user {e}; name the user that runs the OpenClaw gateway")
            })?,
            deadline: osmoda_voice::proxy::CONNECTION_DEADLINE,
        };
        osmoda_daemon::init_tracing();
        return tokio::runtime::Runtime::new()?.block_on(proxy(target, listen.clone()));
    }
    // Taken out of the environment before any thread starts: no child inherits it, and its
    // bytes are wiped where the kernel shows the initial environment (/proc/<pid>/environ).
    let env_token = std::env::var("OPENCLAW_GATEWAY_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    wipe_env_value(TOKEN_VAR);
    std::env::remove_var(TOKEN_VAR);
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
            source: cli.source,
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

const TOKEN_VAR: &str = "OPENCLAW_GATEWAY_TOKEN";

extern "C" {
    /// The C library's environment: `NAME=value` strings, null-terminated.
    static mut environ: *mut *mut libc::c_char;
}

/// Overwrites the value of `name` in place with zero bytes. `std::env::remove_var` only unlinks
/// the entry; the string itself stays in the memory the kernel reads for
/// `/proc/<pid>/environ` (the process's initial environment) for the life of the process.
/// Call before any thread starts.
fn wipe_env_value(name: &str) {
    let prefix = format!("{name}=");
    // SAFETY: runs in `main` before any other thread exists, so nothing reads or changes the
    // environment meanwhile. `environ` is the C library's null-terminated array of
    // null-terminated strings; each entry is read up to its terminator and only the bytes
    // before that terminator are overwritten, so every string stays terminated and in bounds.
    #[allow(unsafe_code)]
    unsafe {
        let mut entry = environ;
        if entry.is_null() {
            return;
        }
        while !(*entry).is_null() {
            let s = *entry;
            let len = libc::strlen(s);
            let bytes = std::slice::from_raw_parts_mut(s.cast::<u8>(), len);
            if bytes.starts_with(prefix.as_bytes()) {
                for b in &mut bytes[prefix.len()..] {
                    std::ptr::write_volatile(b, 0);
                }
            }
            entry = entry.add(1);
        }
    }
}

async fn proxy(
    target: osmoda_voice::proxy::ProxyTarget,
    listen: Option<PathBuf>,
) -> anyhow::Result<()> {
    use std::os::fd::FromRawFd;
    let listener = match listen {
        Some(path) => osmoda_daemon::bind_unix(&path, 0o600)?,
        None => {
            let fd = sd_notify::listen_fds()?.next().ok_or_else(|| {
                anyhow::anyhow!("no socket from systemd (LISTEN_FDS) and no --listen: start it from its .socket unit")
            })?;
            // SAFETY: systemd passes the listening socket as this descriptor (LISTEN_FDS, for
            // this process: LISTEN_PID was checked), and nothing else in the process owns it.
            #[allow(unsafe_code)]
            let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(fd) };
            std_listener.set_nonblocking(true)?;
            tokio::net::UnixListener::from_std(std_listener)?
        }
    };
    let (trigger, shutdown) = osmoda_voice::shutdown::channel();
    osmoda_daemon::fire_on_signals(trigger)?;
    osmoda_daemon::notify_ready();
    osmoda_voice::proxy::serve_proxy(listener, target, shutdown).await?;
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

/// `--source`, checked by [`osmoda_voice::device::check_source`] before anything starts.
fn source_name(s: &str) -> Result<String, String> {
    osmoda_voice::device::check_source(s).map(|()| s.to_owned())
}
