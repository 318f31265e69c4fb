//! Who answers a loopback TCP connection. osmoda-routines' prompt actions and osmoda-voice's
//! gateway proxy send the gateway's owner token, and a TCP port above 1024 can be bound by any
//! local user while the gateway is not bound to it (a restart, boot, the gateway disabled); TCP
//! has no `SO_PEERCRED`. The kernel's socket table
//! (`/proc/net/tcp`, `/proc/net/tcp6`) names the uid that created each socket, and the socket
//! that accepted a connection carries its listener's uid: found by the connection's two
//! addresses, it says who holds the port this connection reached — checked after connecting
//! and before a byte is sent, so no later rebind can slip in between.

use std::net::SocketAddr;
use std::time::Duration;

/// How often the socket table is read before giving up (the accepting side's entry moves
/// from the listener's queue to an established socket while the handshake completes).
const TRIES: u32 = 5;

/// An address with IPv4-mapped IPv6 (`::ffff:127.0.0.1`) written as IPv4: a dual-stack
/// listener's side of an IPv4 connection is in `tcp6` with the mapped form.
fn canonical(a: SocketAddr) -> SocketAddr {
    SocketAddr::new(a.ip().to_canonical(), a.port())
}

/// The uid of the socket at `peer` whose other end is `local` (ours), from the entries of
/// the kernel's TCP tables.
fn owner_in<'a>(
    entries: impl IntoIterator<Item = &'a procfs::net::TcpNetEntry>,
    local: SocketAddr,
    peer: SocketAddr,
) -> Option<u32> {
    let (local, peer) = (canonical(local), canonical(peer));
    entries
        .into_iter()
        .find(|e| canonical(e.local_address) == peer && canonical(e.remote_address) == local)
        .map(|e| e.uid)
}

fn read_tables() -> Result<Vec<procfs::net::TcpNetEntry>, String> {
    let mut all = procfs::net::tcp().map_err(|e| format!("cannot read /proc/net/tcp: {e}"))?;
    // Without IPv6 there is no tcp6 table, and nothing to find there.
    if let Ok(v6) = procfs::net::tcp6() {
        all.extend(v6);
    }
    Ok(all)
}

/// The uid that holds the other end of `stream` (a connection on this machine).
///
/// # Errors
/// The socket tables cannot be read, or no local socket is the other end (the peer is on
/// another machine, or went away).
pub async fn owner(stream: &tokio::net::TcpStream) -> Result<u32, String> {
    let (local, peer) = (
        stream
            .local_addr()
            .map_err(|e| format!("this connection's address: {e}"))?,
        stream
            .peer_addr()
            .map_err(|e| format!("the gateway connection's address: {e}"))?,
    );
    for attempt in 0..TRIES {
        let tables = tokio::task::spawn_blocking(read_tables)
            .await
            .map_err(|e| format!("reading the socket tables: {e}"))??;
        if let Some(uid) = owner_in(&tables, local, peer) {
            return Ok(uid);
        }
        tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
    }
    Err(format!(
        "no socket on this machine answers the connection to {peer}, so who holds it cannot be verified (the gateway must listen on this machine's loopback)"
    ))
}

/// The uid of `user`: a name, or a number that names an existing user.
///
/// # Errors
/// No such user on this machine (or the user database cannot be read), in words.
pub fn uid_of(user: &str) -> Result<u32, String> {
    use nix::unistd::{Uid, User};
    let found = match user.parse::<u32>() {
        Ok(n) => User::from_uid(Uid::from_raw(n)),
        Err(_) => User::from_name(user),
    }
    .map_err(|e| format!("looking up user {user:?}: {e}"))?;
    found
        .map(|u| u.uid.as_raw())
        .ok_or_else(|| format!("{user:?}: no such user on this machine"))
}

/// A uid with its user name, for messages: `65534 (nobody)`.
pub fn who(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{uid} ({})", u.name),
        _ => uid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_compare_as_ipv4() {
        let a: SocketAddr = "[::ffff:127.0.0.1]:18789".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:18789".parse().unwrap();
        assert_eq!(canonical(a), b);
        let v6: SocketAddr = "[::1]:18789".parse().unwrap();
        assert_eq!(canonical(v6), v6);
    }

    /// Real listeners of this process, on IPv4, IPv6 and dual-stack (an IPv4 client whose
    /// peer is in `tcp6` as `::ffff:127.0.0.1`): each connection's owner is our uid.
    #[tokio::test]
    async fn the_owner_of_a_loopback_listener_is_found() {
        let me = nix::unistd::geteuid().as_raw();
        let v6 = std::net::TcpListener::bind("[::1]:0").is_ok();
        let mut cases = vec![("127.0.0.1:0", "127.0.0.1")];
        if v6 {
            cases.extend([("[::1]:0", "::1"), ("[::]:0", "127.0.0.1")]);
        }
        for (bind, dial) in cases {
            let l = tokio::net::TcpListener::bind(bind).await.unwrap();
            let port = l.local_addr().unwrap().port();
            let addr = SocketAddr::new(dial.parse().unwrap(), port);
            let c = tokio::net::TcpStream::connect(addr).await.unwrap();
            assert_eq!(owner(&c).await, Ok(me), "{bind} ← {dial}");
            // Accepted or not, the same answer.
            let _server = l.accept().await.unwrap();
            assert_eq!(owner(&c).await, Ok(me), "{bind} ← {dial}, accepted");
        }
        if !v6 {
            eprintln!("no IPv6 loopback here: the IPv6 and dual-stack cases were not run");
        }
    }
}
