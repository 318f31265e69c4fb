//! The CONNECT proxy: token → target → policy → resolve once → classify every address → dial
//! exactly an address that was checked → tunnel.
//!
//! Order of checks for one connection (each refusal is answered, recorded and ends it):
//! the listener's budget of connections that are not tunnels yet, per peer and in total
//! ([`crate::admission`], 503 `peer-cap`/`pending-cap`) → head within the header timeout
//! (408/400/431) → `CONNECT` (405) →
//! token present (407), verified, not revoked (407) → target parses and normalises (400) →
//! the token's still-declared capabilities allow host and port (403) → per-token rate (429) →
//! one DNS resolution (502/504) → every resolved address allowed by its class or an allow
//! range, and none is the proxy itself (403) → TCP connect to those addresses only (502/504)
//! → the tunnel cap (503 `tunnel-cap`: only tunnels count, never heads in progress) → the
//! allow recorded (the first of its token, capability and target in the window durably
//! spooled; a repeat counted, [`crate::events`]) → `200` and bytes both ways until either side
//! closes or the tunnel is idle too long.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, NameServerConfigGroup, ResolverConfig, ResolverOpts,
};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::proto::xfer::Protocol;
use hickory_resolver::Resolver;
use osmoda_config::{EgressConfig, EgressLimits};
use osmoda_daemon::Shutdown;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::Semaphore;

use crate::admission::{PeerKey, Pending, MAX_PENDING, MAX_PENDING_PER_PEER};
use crate::classify::{classify, AllowRanges};
use crate::events::{Decision, Events};
use crate::head::{self, HeadError};
use crate::host::{clip, parse_target, Host};
use crate::keys::{Keys, Refusal};
use crate::policy::{authorize, parse_capabilities, Capabilities};
use crate::tunnel;

/// The proxy's state, shared by every connection.
pub struct Proxy {
    listen: SocketAddr,
    declared: Capabilities,
    allow: AllowRanges,
    keys: Keys,
    resolver: Resolver<TokioConnectionProvider>,
    limits: EgressLimits,
    tunnels: Arc<Semaphore>,
    pending_tcp: Arc<Pending>,
    pending_unix: Arc<Pending>,
    rate: Mutex<HashMap<String, (Instant, u32)>>,
    events: Events,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("listen", &self.listen)
            .finish_non_exhaustive()
    }
}

/// Seconds since the Unix epoch.
fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An answered refusal: status, stable reason, detail.
struct Refused(u16, &'static str, String);

impl Proxy {
    /// Builds the proxy for `cfg`, listening (already bound) on `listen`.
    ///
    /// # Errors
    /// A message for an invalid config (patterns, ranges, name servers, system resolver).
    pub fn new(cfg: &EgressConfig, listen: SocketAddr, events: Events) -> Result<Proxy, String> {
        cfg.validate()?;
        let declared = parse_capabilities(&cfg.capabilities)?;
        let allow = AllowRanges::parse(&cfg.allow_ranges)?;
        let connect = Duration::from_secs(cfg.limits.connect_timeout_secs);
        let (rc, mut opts) = if cfg.nameservers.is_empty() {
            hickory_resolver::system_conf::read_system_conf()
                .map_err(|e| format!("cannot read the system resolver configuration: {e}"))?
        } else {
            let mut group = NameServerConfigGroup::new();
            for n in &cfg.nameservers {
                let addr: SocketAddr = n
                    .parse()
                    .map_err(|_| format!("nameservers: {n:?} is not ip:port"))?;
                group.push(NameServerConfig::new(addr, Protocol::Udp));
                group.push(NameServerConfig::new(addr, Protocol::Tcp));
            }
            (
                ResolverConfig::from_parts(None, vec![], group),
                ResolverOpts::default(),
            )
        };
        // Both families: a name is refused when any of its addresses is, whichever family the
        // dial would have used.
        opts.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        opts.timeout = connect;
        opts.attempts = 2;
        opts.ndots = 0;
        let resolver = Resolver::builder_with_config(rc, TokioConnectionProvider::default())
            .with_options(opts)
            .build();
        Ok(Proxy {
            listen,
            declared,
            allow,
            keys: Keys::new(&cfg.public_key_file, &cfg.revocation_file),
            resolver,
            limits: cfg.limits.clone(),
            tunnels: Arc::new(Semaphore::new(cfg.limits.max_tunnels)),
            pending_tcp: Pending::new(MAX_PENDING, MAX_PENDING_PER_PEER),
            pending_unix: Pending::new(MAX_PENDING, MAX_PENDING_PER_PEER),
            rate: Mutex::new(HashMap::new()),
            events,
        })
    }

    /// The record keeper (for a final [`Events::flush`]).
    pub fn events(&self) -> &Events {
        &self.events
    }

    /// Accepts connections on `listener` (and `relay`, the Unix socket) until `shutdown`; then
    /// closes every tunnel and reports the count of suppressed denies.
    ///
    /// # Errors
    /// Only when accepting fails for a reason other than descriptor exhaustion.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        relay: Option<UnixListener>,
        shutdown: Shutdown,
    ) -> std::io::Result<()> {
        let mut conns = tokio::task::JoinSet::new();
        let mut stop = shutdown.clone();
        let mut flush = tokio::time::interval(self.events.allow_window());
        flush.tick().await;
        loop {
            let accepted = tokio::select! {
                _ = stop.wait() => break,
                Some(_) = conns.join_next(), if !conns.is_empty() => continue,
                _ = flush.tick() => { self.events.flush().await; continue; }
                a = listener.accept() => a.map(|(s, p)| Accepted::Tcp(s, p)),
                a = accept_unix(relay.as_ref()) => a.map(Accepted::Unix),
            };
            let accepted = match accepted {
                Ok(a) => a,
                // EMFILE/ENFILE: a descriptor frees when a tunnel closes.
                Err(e) if matches!(e.raw_os_error(), Some(23 | 24)) => {
                    tracing::warn!("out of file descriptors; waiting before accepting again");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
                Err(e) => return Err(e),
            };
            let me = Arc::clone(&self);
            let sd = shutdown.clone();
            match accepted {
                Accepted::Tcp(s, peer) => {
                    let key = PeerKey::tcp(peer.ip());
                    let admitted = self.pending_tcp.admit(key);
                    conns.spawn(
                        async move { me.connection(s, peer.to_string(), admitted, sd).await },
                    );
                }
                Accepted::Unix(s) => {
                    let cred = s.peer_cred().ok();
                    let peer = match cred {
                        Some(c) => format!("unix:uid={},pid={}", c.uid(), c.pid().unwrap_or(0)),
                        None => "unix".to_string(),
                    };
                    let admitted = self.pending_unix.admit(PeerKey::Uid(cred.map(|c| c.uid())));
                    conns.spawn(async move { me.connection(s, peer, admitted, sd).await });
                }
            }
        }
        conns.shutdown().await;
        self.events.flush().await;
        Ok(())
    }

    async fn connection<C: AsyncRead + AsyncWrite + Unpin>(
        self: Arc<Self>,
        mut client: C,
        peer: String,
        admitted: Result<crate::admission::Slot, crate::admission::Over>,
        sd: Shutdown,
    ) {
        let mut rec = Decision {
            peer,
            ..Decision::default()
        };
        let pending = match admitted {
            Ok(slot) => slot,
            Err((reason, detail)) => {
                self.refuse(&mut client, &mut rec, Refused(503, reason, detail))
                    .await;
                return;
            }
        };
        let (upstream, rest) = match self.decide(&mut client, &mut rec).await {
            Ok(tunnel) => tunnel,
            Err(r) => return self.refuse(&mut client, &mut rec, r).await,
        };
        // Only now, authorized and connected, is it a tunnel.
        let Ok(permit) = Arc::clone(&self.tunnels).try_acquire_owned() else {
            drop(upstream);
            let detail = format!("{} tunnels are open", self.limits.max_tunnels);
            return self
                .refuse(&mut client, &mut rec, Refused(503, "tunnel-cap", detail))
                .await;
        };
        drop(pending);
        // Before the client hears 200: a crash from here on loses no target a token reached.
        if let Err(e) = self.events.allow(&rec).await {
            return self
                .refuse(&mut client, &mut rec, Refused(503, "unrecorded", e))
                .await;
        }
        let idle = Duration::from_secs(self.limits.idle_timeout_secs);
        let m = osmoda_daemon::metrics::global();
        m.egress_tunnels(1);
        if client
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .is_ok()
        {
            tunnel::run(client, upstream, rest, idle, sd).await;
        }
        m.egress_tunnels(-1);
        drop(permit);
    }

    async fn refuse<C: AsyncWrite + Unpin>(&self, client: &mut C, rec: &mut Decision, r: Refused) {
        let Refused(status, reason, detail) = r;
        rec.reason = reason.to_string();
        rec.detail = detail;
        // Recorded before the answer: when the client sees the refusal, the event is durable.
        self.events.deny(rec).await;
        head::refuse(client, status, reason, &rec.detail).await;
    }

    /// Everything up to a connected upstream socket.
    async fn decide<C: AsyncRead + Unpin>(
        &self,
        client: &mut C,
        rec: &mut Decision,
    ) -> Result<(TcpStream, Vec<u8>), Refused> {
        let header = Duration::from_secs(self.limits.header_timeout_secs);
        let head = match tokio::time::timeout(header, head::read(client)).await {
            Err(_) => {
                return Err(Refused(
                    408,
                    "header-timeout",
                    format!("no whole request head within {} s", header.as_secs()),
                ))
            }
            Ok(Err(HeadError::TooLarge)) => {
                return Err(Refused(
                    431,
                    "head-too-large",
                    HeadError::TooLarge.to_string(),
                ))
            }
            Ok(Err(e @ HeadError::BadCredential)) => {
                return Err(Refused(407, "bad-credential", e.to_string()))
            }
            Ok(Err(e)) => return Err(Refused(400, "malformed-request", e.to_string())),
            Ok(Ok(h)) => h,
        };
        rec.target = clip(&head.target);
        if head.method != "CONNECT" {
            return Err(Refused(
                405,
                "not-connect",
                format!(
                    "{} is not proxied: only CONNECT tunnels (set HTTPS_PROXY; plain-HTTP forwarding is not offered)",
                    clip(&head.method)
                ),
            ));
        }
        let Some(token) = head.token.as_deref() else {
            return Err(Refused(
                407,
                "no-token",
                "a capability token is required in Proxy-Authorization (Bearer, or the password of Basic)".into(),
            ));
        };
        let claims = self.keys.check(token, now_unix()).map_err(|r| match r {
            Refusal::NoKey(e) => Refused(407, "no-public-key", e),
            Refusal::Token(e) => {
                let reason = match e {
                    crate::token::TokenError::Expired { .. } => "token-expired",
                    crate::token::TokenError::BadSignature => "token-forged",
                    _ => "token-invalid",
                };
                Refused(407, reason, e.to_string())
            }
            Refusal::Revoked(c) => {
                rec.token_id = Some(c.id.clone());
                rec.subject = Some(c.sub.clone());
                Refused(407, "token-revoked", format!("token {} is revoked", c.id))
            }
        })?;
        rec.token_id = Some(claims.id.clone());
        rec.subject = Some(claims.sub.clone());
        let target = parse_target(&head.target).map_err(|e| {
            let reason = match e {
                crate::host::HostError::NumericName(_) => "ip-literal",
                _ => "invalid-target",
            };
            Refused(400, reason, e.to_string())
        })?;
        rec.host = Some(target.host.to_string());
        rec.port = Some(target.port);
        let literal = match target.host {
            Host::Ip(ip) => Some(ip),
            Host::Name(_) => None,
        };
        let in_range = literal.is_some_and(|ip| self.allow.contains(ip));
        let cap = authorize(&claims, &self.declared, &target, in_range).map_err(|r| {
            let detail = format!(
                "{} is not allowed by this token: {}",
                head.target,
                r.as_str()
            );
            Refused(403, r.as_str(), detail)
        })?;
        rec.capability = Some(cap);
        self.rate_check(&claims.id)?;
        let connect = Duration::from_secs(self.limits.connect_timeout_secs);
        let deadline = Instant::now() + connect;
        let addrs: Vec<IpAddr> = match (&target.host, literal) {
            (_, Some(ip)) => vec![ip],
            (Host::Name(name), None) => {
                let fqdn = format!("{name}.");
                match tokio::time::timeout(connect, self.resolver.lookup_ip(fqdn)).await {
                    Err(_) => {
                        return Err(Refused(
                            504,
                            "resolve-timeout",
                            format!("resolving {name} took over {} s", connect.as_secs()),
                        ))
                    }
                    Ok(Err(e)) => {
                        return Err(Refused(502, "resolve-failed", format!("{name}: {e}")))
                    }
                    Ok(Ok(l)) => l.iter().collect(),
                }
            }
            (Host::Ip(_), None) => unreachable_addrs(),
        };
        if addrs.is_empty() {
            return Err(Refused(502, "resolve-failed", "no address".into()));
        }
        for ip in &addrs {
            let sa = SocketAddr::new(*ip, target.port);
            if self.is_self(sa) {
                rec.address = Some(sa.to_string());
                return Err(Refused(403, "loop", format!("{sa} is this proxy")));
            }
            if self.allow.contains(*ip) {
                continue;
            }
            if let Some(class) = classify(*ip) {
                rec.address = Some(sa.to_string());
                return Err(Refused(
                    403,
                    class.as_str(),
                    format!(
                        "{} resolves to {ip} ({}), which is never dialled",
                        target.host,
                        class.as_str()
                    ),
                ));
            }
        }
        // Dial exactly the addresses checked above, in the resolver's order; never a new lookup.
        let mut last = String::new();
        for ip in &addrs {
            let sa = SocketAddr::new(*ip, target.port);
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, TcpStream::connect(sa)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    rec.address = Some(sa.to_string());
                    return Ok((s, head.rest));
                }
                Ok(Err(e)) => last = format!("{sa}: {e}"),
                Err(_) => {
                    return Err(Refused(
                        504,
                        "connect-timeout",
                        format!("connecting to {sa} took over {} s", connect.as_secs()),
                    ))
                }
            }
        }
        Err(Refused(502, "connect-failed", last))
    }

    fn is_self(&self, sa: SocketAddr) -> bool {
        let ip = sa.ip().to_canonical();
        sa.port() == self.listen.port()
            && (ip == self.listen.ip() || ip.is_loopback() || ip.is_unspecified())
    }

    fn rate_check(&self, id: &str) -> Result<(), Refused> {
        let limit = self.limits.rate_per_minute;
        let mut m = self
            .rate
            .lock()
            .map_err(|_| Refused(503, "internal", "rate table poisoned".into()))?;
        let now = Instant::now();
        if m.len() > 10_000 {
            m.retain(|_, (t, _)| now.duration_since(*t) < Duration::from_secs(60));
        }
        let e = m.entry(id.to_string()).or_insert((now, 0));
        if now.duration_since(e.0) >= Duration::from_secs(60) {
            *e = (now, 0);
        }
        e.1 += 1;
        if e.1 > limit {
            return Err(Refused(
                429,
                "rate-limited",
                format!("token {id} is over {limit} CONNECTs a minute"),
            ));
        }
        Ok(())
    }
}

enum Accepted {
    Tcp(TcpStream, SocketAddr),
    Unix(tokio::net::UnixStream),
}

async fn accept_unix(l: Option<&UnixListener>) -> std::io::Result<tokio::net::UnixStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

/// A name target always takes the resolver branch; this arm cannot be reached but returning no
/// address (refused as `resolve-failed`) is the safe answer if it ever were.
fn unreachable_addrs() -> Vec<IpAddr> {
    Vec::new()
}
