//! The Ring 1 relay: runs inside a sandbox's network namespace (which has only loopback),
//! listens on `127.0.0.1:<port>` and passes every connection's bytes to the proxy's Unix
//! socket, bound into the sandbox. It understands nothing: the proxy behind it decides.

use std::path::PathBuf;

use tokio::net::{TcpListener, UnixStream};

/// Serves until the listener fails; each connection is copied both ways to `proxy_socket`.
///
/// # Errors
/// When accepting fails.
pub async fn run(listener: TcpListener, proxy_socket: PathBuf) -> std::io::Result<()> {
    loop {
        let (mut client, _) = listener.accept().await?;
        let path = proxy_socket.clone();
        tokio::spawn(async move {
            match UnixStream::connect(&path).await {
                Ok(mut up) => {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                }
                Err(e) => tracing::warn!(error = %e, "relay: cannot reach {}", path.display()),
            }
        });
    }
}
