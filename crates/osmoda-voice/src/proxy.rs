//! The voice unit's way to the gateway (`osmoda-voice gateway-proxy`): osmoda-voice has no
//! network, so what `/voice/listen` hears goes to a Unix socket (`unix:` in `gateway_url`) and
//! this proxy, outside the daemon's network namespace, carries it to the gateway's loopback
//! port. Each request carries the gateway's owner token and the person's words, and any local
//! user may bind that port while the gateway is not on it (boot, a restart, the gateway off):
//! so a connection is passed on only once the socket that accepted it is known to be the
//! gateway user's ([`osmoda_daemon::peer`]), checked after connecting and before a byte is sent.
//! Otherwise the caller gets a 502 whose JSON error says who holds the port, and the squatter
//! gets nothing.

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpStream, UnixListener, UnixStream};

use crate::Shutdown;

/// How long connecting to the gateway may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections carried at once (the daemon sends one utterance at a time; more is a fault).
const MAX_CONNECTIONS: usize = 16;

/// Where the proxy forwards to and whom it trusts there.
#[derive(Debug, Clone)]
pub struct ProxyTarget {
    /// `127.0.0.1:<port>` (or `[::1]:<port>`): the gateway's loopback address.
    pub to: String,
    /// The uid whose socket must hold `to` (the gateway's user).
    pub gateway_uid: u32,
}

/// Accepts connections on `listener` and carries each to `target` once its holder is verified,
/// until `shutdown`.
///
/// # Errors
/// Only when the listener itself fails.
pub async fn serve_proxy(
    listener: UnixListener,
    target: ProxyTarget,
    mut shutdown: Shutdown,
) -> std::io::Result<()> {
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (conn, _) = tokio::select! {
            r = listener.accept() => r?,
            () = shutdown.wait() => return Ok(()),
        };
        let Ok(slot) = std::sync::Arc::clone(&slots).try_acquire_owned() else {
            tracing::warn!("{MAX_CONNECTIONS} gateway connections are open; one more refused");
            continue;
        };
        let target = target.clone();
        tokio::spawn(async move {
            let _slot = slot;
            if let Err(why) = carry(conn, &target).await {
                tracing::warn!(to = %target.to, "nothing sent to the gateway: {why}");
            }
        });
    }
}

/// One connection: verified, then copied both ways until either side closes.
async fn carry(mut conn: UnixStream, target: &ProxyTarget) -> Result<(), String> {
    let mut gateway = match verified(target).await {
        Ok(s) => s,
        Err(why) => {
            refuse(&mut conn, &why).await;
            return Err(why);
        }
    };
    tokio::io::copy_bidirectional(&mut conn, &mut gateway)
        .await
        .map(|_| ())
        .map_err(|e| format!("the connection broke: {e}"))
}

/// A connection to `target.to` whose accepting socket belongs to the gateway's user.
async fn verified(target: &ProxyTarget) -> Result<TcpStream, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target.to))
        .await
        .map_err(|_| {
            format!(
                "no connection to {} within {} s",
                target.to,
                CONNECT_TIMEOUT.as_secs()
            )
        })?
        .map_err(|e| format!("cannot connect to the gateway at {}: {e}", target.to))?;
    let holder = osmoda_daemon::peer::owner(&stream).await?;
    if holder != target.gateway_uid {
        return Err(format!(
            "{} is held by uid {}, not the gateway's user (uid {}): nothing was sent (the gateway's token and what was said go only to the gateway). Is the gateway down and another program on its port? (`ss -ltnp` names it)",
            target.to,
            osmoda_daemon::peer::who(holder),
            osmoda_daemon::peer::who(target.gateway_uid)
        ));
    }
    Ok(stream)
}

/// Answers the caller (osmoda-voice's gateway client) with a 502 whose OpenAI-style error says
/// why, without reading its request.
async fn refuse(conn: &mut UnixStream, why: &str) {
    let body = serde_json::json!({ "error": { "message": why, "type": "gateway_unverified" } })
        .to_string();
    let resp = format!(
        "HTTP/1.1 502 Bad Gateway\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(resp.as_bytes()).await;
    let _ = conn.shutdown().await;
}
