//! The voice unit's way to the gateway (`osmoda-voice gateway-proxy`): osmoda-voice has no
//! network, so what `/voice/listen` hears goes to a Unix socket (`unix:` in `gateway_url`) and
//! this proxy, outside the daemon's network namespace, carries it to the gateway's loopback
//! port. Each request carries the gateway's owner token and the person's words, and any local
//! user may bind that port while the gateway is not on it (boot, a restart, the gateway off):
//! so a connection is passed on only once the socket that accepted it is known to be the
//! gateway user's ([`osmoda_daemon::peer`]), checked after connecting and before a byte is sent.
//! Otherwise the caller gets a 502 whose JSON error says who holds the port, and the squatter
//! gets nothing. Every connection ends within [`ProxyTarget::deadline`] (a gateway that keeps
//! its side open would otherwise hold one of the [`MAX_CONNECTIONS`] slots for ever), and one
//! past the slots is answered with a 503 saying so, not closed in silence.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UnixListener, UnixStream};

use crate::Shutdown;

/// How long connecting to the gateway may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections carried at once (the daemon sends one utterance at a time; more is a fault).
pub const MAX_CONNECTIONS: usize = 16;

/// The longest a connection is carried by the binary: the daemon's client gives up on a turn
/// after [`TURN_TIMEOUT`](crate::gateway::TURN_TIMEOUT), so a connection older than that plus a
/// margin has nobody waiting for it.
pub const CONNECTION_DEADLINE: Duration =
    Duration::from_secs(crate::gateway::TURN_TIMEOUT.as_secs() + 30);

/// Where the proxy forwards to and whom it trusts there.
#[derive(Debug, Clone)]
pub struct ProxyTarget {
    /// `127.0.0.1:<port>` (or `[::1]:<port>`): the gateway's loopback address.
    pub to: String,
    /// The uid whose socket must hold `to` (the gateway's user).
    pub gateway_uid: u32,
    /// How long one connection may last, verification included ([`CONNECTION_DEADLINE`] in
    /// the binary); then both sides are closed and its slot is free.
    pub deadline: Duration,
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
            let why = format!(
                "the gateway proxy carries {MAX_CONNECTIONS} connections at once and all are open (each ends within {} s): nothing was sent",
                target.deadline.as_secs()
            );
            tracing::warn!("{why}");
            // Answered on its own task: a caller that does not read must not stop the accepts.
            tokio::spawn(async move {
                let mut conn = conn;
                refuse(&mut conn, "503 Service Unavailable", "gateway_busy", &why).await;
            });
            continue;
        };
        let target = target.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(target.deadline, carry(conn, &target)).await {
                Ok(Ok(())) => {}
                Ok(Err(why)) => tracing::warn!(to = %target.to, "gateway connection: {why}"),
                Err(_) => tracing::warn!(
                    to = %target.to,
                    "gateway connection closed after {} s (its deadline)",
                    target.deadline.as_secs()
                ),
            }
        });
    }
}

/// One connection: verified, then copied both ways until either side closes.
async fn carry(mut conn: UnixStream, target: &ProxyTarget) -> Result<(), String> {
    let mut gateway = match verified(target).await {
        Ok(s) => s,
        Err(why) => {
            refuse(&mut conn, "502 Bad Gateway", "gateway_unverified", &why).await;
            return Err(format!("nothing sent to the gateway: {why}"));
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

/// Answers the caller (osmoda-voice's gateway client) with `status` and an OpenAI-style error
/// of `kind` saying why, once its request has begun to arrive (2 s at most: an HTTP client
/// takes an answer before its request for a broken connection), and reads the rest of it
/// away (never passed on).
async fn refuse(conn: &mut UnixStream, status: &str, kind: &str, why: &str) {
    let mut sink = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.read(&mut sink)).await;
    let body = serde_json::json!({ "error": { "message": why, "type": kind } }).to_string();
    let resp = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = conn.write_all(resp.as_bytes()).await;
    let _ = conn.shutdown().await;
    // Read what the caller sends until it closes, 2 s at most: a Unix socket closed with
    // unread data resets its peer, which would lose the answer above.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while matches!(conn.read(&mut sink).await, Ok(n) if n > 0) {}
    })
    .await;
}
