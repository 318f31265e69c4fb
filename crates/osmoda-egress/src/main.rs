//! osmoda-egress daemon: parses flags, reads egress.json, binds the proxy's listeners and the
//! status socket, calls [`osmoda_egress::Proxy::serve`]. `relay` is the Ring 1 helper that runs
//! inside a sandbox.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use osmoda_egress::events::Events;
use osmoda_egress::Proxy;

/// The loopback CONNECT proxy that is a sandboxed tool's only path out.
#[derive(Debug, Parser)]
#[command(version)]
struct Cli {
    /// Unix socket serving `/health` and `/metrics`.
    #[arg(long, default_value = "/run/osmoda/egress.sock")]
    socket: PathBuf,
    /// Unix socket that also accepts CONNECT (bound into Ring 1 sandboxes, behind the relay).
    #[arg(long, default_value = "/run/osmoda/egress-proxy.sock")]
    proxy_socket: PathBuf,
    /// egress.json (rendered by the NixOS module or the local backend).
    #[arg(long, default_value = "/etc/osmoda/egress.json")]
    config: PathBuf,
    /// State directory (the ledger event spool).
    #[arg(long, default_value = "/var/lib/osmoda/egress")]
    state_dir: PathBuf,
    /// agentd's socket, where events go.
    #[arg(long, default_value = "/run/osmoda/agentd.sock")]
    agentd_socket: PathBuf,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Validate an egress.json file and exit (non-zero with the reason when invalid).
    CheckConfig {
        /// The file to check.
        file: PathBuf,
    },
    /// Inside a sandbox: listen on a loopback TCP address and pass every connection to the
    /// proxy's Unix socket. Without a command, prints `listening <addr>` on stdout once ready
    /// and serves until killed; with `-- COMMAND…`, runs it once listening and exits with its
    /// status (128 + n when a signal ended it), which is how agentd's Ring 1 sandbox starts.
    Relay {
        /// Loopback address to listen on (`127.0.0.1:3128`; port 0 picks one).
        #[arg(long)]
        listen: SocketAddr,
        /// The proxy's Unix socket as seen inside the sandbox.
        #[arg(long)]
        to: PathBuf,
        /// The command to run behind the relay.
        #[arg(last = true)]
        command: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Cmd::CheckConfig { file }) = &cli.cmd {
        osmoda_config::check_config("egress", file)?;
        let cfg: osmoda_config::EgressConfig = osmoda_config::load(file)?;
        osmoda_egress::policy::parse_capabilities(&cfg.capabilities).map_err(anyhow::Error::msg)?;
        println!("{}: ok", file.display());
        return Ok(());
    }
    osmoda_daemon::init_tracing();
    let rt = tokio::runtime::Runtime::new()?;
    if let Some(Cmd::Relay {
        listen,
        to,
        command,
    }) = cli.cmd
    {
        let code = rt.block_on(async move {
            anyhow::ensure!(
                listen.ip().is_loopback(),
                "the relay listens on loopback only"
            );
            let l = tokio::net::TcpListener::bind(listen).await?;
            if command.is_empty() {
                println!("listening {}", l.local_addr()?);
                osmoda_egress::relay::run(l, to).await?;
                return Ok(0);
            }
            let mut child = tokio::process::Command::new(&command[0])
                .args(&command[1..])
                .spawn()
                .with_context(|| format!("starting {:?}", command[0]))?;
            tokio::select! {
                st = child.wait() => {
                    use std::os::unix::process::ExitStatusExt;
                    let st = st?;
                    Ok(st.code().or(st.signal().map(|s| 128 + s)).unwrap_or(1))
                }
                r = osmoda_egress::relay::run(l, to) => {
                    r?;
                    anyhow::bail!("the relay stopped")
                }
            }
        })?;
        std::process::exit(code);
    }
    rt.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    osmoda_daemon::raise_fd_limit()?;
    let cfg: osmoda_config::EgressConfig = osmoda_config::load(&cli.config)
        .with_context(|| format!("loading {}", cli.config.display()))?;
    let listen: SocketAddr = cfg
        .listen
        .parse()
        .with_context(|| format!("listen {:?} must be ip:port", cfg.listen))?;
    let tcp = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    // Mode 0666: a sandbox's relay runs as the sandbox's user; the token is the credential.
    let relay = osmoda_daemon::bind_unix(&cli.proxy_socket, 0o666)
        .with_context(|| format!("bind {}", cli.proxy_socket.display()))?;
    let reporter =
        osmoda_client::Reporter::open(&cli.agentd_socket, &cli.state_dir.join("spool"), "egress")?;
    let proxy = Arc::new(
        Proxy::new(&cfg, tcp.local_addr()?, Events::new(Some(reporter)))
            .map_err(anyhow::Error::msg)?,
    );
    let bound = tcp.local_addr()?;
    // Last: binding the status socket also signals readiness.
    let (status, shutdown) = osmoda_daemon::listen("osmoda-egress", &cli.socket, 0o660)?;
    let app = axum::Router::new()
        .route(
            "/health",
            axum::routing::get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }),
        )
        .fallback(move |uri: axum::http::Uri| async move {
            osmoda_daemon::api::error_response(
                axum::http::StatusCode::NOT_FOUND,
                &format!(
                    "no such route {}; the status socket serves GET /health and GET /metrics (the proxy itself is CONNECT on {bound})",
                    uri.path()
                ),
                serde_json::json!({ "kind": "not_found", "hint": "docs/api.md (osmoda-egress)" }),
            )
        })
        .method_not_allowed_fallback(osmoda_daemon::api::method_not_allowed);
    let limits = osmoda_daemon::server::Limits::small();
    let sd = shutdown.clone();
    let status_task = tokio::spawn(async move {
        osmoda_daemon::server::serve(status, "egress", limits, app, |_| (), sd).await
    });
    osmoda_daemon::notify_ready();
    tracing::info!(
        "osmoda-egress proxying on {listen} and {}",
        cli.proxy_socket.display()
    );
    Arc::clone(&proxy).serve(tcp, Some(relay), shutdown).await?;
    osmoda_daemon::notify_stopping();
    let _ = status_task.await;
    Ok(())
}
