//! Test fixtures: a network namespace with only loopback, a DNS server on loopback, keys and
//! tokens, a proxy on loopback, a raw CONNECT client.

#![allow(dead_code, clippy::unwrap_used)]

pub mod dns;
pub mod procs;

/// The daemon binary cargo built for these tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_osmoda-egress");

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use ed25519_dalek::SigningKey;
use osmoda_config::{Capability, EgressConfig, EgressLimits};
use osmoda_egress::events::Events;
use osmoda_egress::token::{self, Claims, Grant};
use osmoda_egress::Proxy;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Runs `f` on a thread of its own inside a new network namespace with only `lo` (up), so no
/// packet the code under test sends can leave the machine. Returns false (after printing
/// `skipped: …`) when not root.
pub fn in_netns<F: FnOnce() + Send + 'static>(test: &str, f: F) -> bool {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: {test} needs root to create a network namespace");
        return false;
    }
    let joined = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip");
        assert!(up.success());
        let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
        let links = String::from_utf8_lossy(&links.stdout).to_string();
        assert_eq!(links.lines().count(), 1, "only loopback expected: {links}");
        assert!(links.contains(": lo:"), "{links}");
        f();
    })
    .join();
    if let Err(p) = joined {
        std::panic::resume_unwind(p);
    }
    true
}

/// The runtime the real-binary tests drive their fixtures (DNS server) on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A DNS zone of `(name, IPv4/IPv6 address)` records.
pub fn zone_of(records: &[(&str, &str)]) -> dns::Zone {
    records
        .iter()
        .map(|(n, ip)| (n.to_string(), vec![dns::Rec::Ip(ip.parse().unwrap())]))
        .collect()
}

/// A signing key, its public key file and a revocation file in a temp dir.
pub struct Keys {
    pub dir: tempfile::TempDir,
    pub sk: SigningKey,
}

impl Keys {
    pub fn new() -> Keys {
        let dir = tempfile::tempdir().unwrap();
        let sk = SigningKey::from_bytes(&[42; 32]);
        std::fs::write(
            dir.path().join("public.key"),
            token::encode_public_key(&sk.verifying_key()),
        )
        .unwrap();
        Keys { dir, sk }
    }

    pub fn public(&self) -> PathBuf {
        self.dir.path().join("public.key")
    }

    pub fn revoked(&self) -> PathBuf {
        self.dir.path().join("revoked")
    }

    pub fn spool(&self) -> PathBuf {
        self.dir.path().join("spool")
    }

    /// A token for `caps` (name, domains, ports) valid for an hour.
    pub fn token(&self, caps: &[(&str, &[&str], &[u16])]) -> String {
        self.token_at(caps, now() - 10, now() + 3600)
    }

    pub fn token_at(&self, caps: &[(&str, &[&str], &[u16])], iat: u64, exp: u64) -> String {
        token::mint(&self.sk, &claims(caps, iat, exp)).unwrap()
    }
}

pub fn claims(caps: &[(&str, &[&str], &[u16])], iat: u64, exp: u64) -> Claims {
    Claims {
        v: 1,
        id: token::new_id().unwrap(),
        sub: "test-agent".into(),
        iat,
        exp,
        caps: caps
            .iter()
            .map(|(n, d, p)| {
                (
                    n.to_string(),
                    Grant {
                        domains: d.iter().map(|s| s.to_string()).collect(),
                        ports: p.to_vec(),
                    },
                )
            })
            .collect(),
    }
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An egress.json value.
pub fn config(
    keys: &Keys,
    listen: SocketAddr,
    caps: &[(&str, &[&str], &[u16])],
    allow: &[&str],
    dns: SocketAddr,
) -> EgressConfig {
    let capabilities: BTreeMap<String, Capability> = caps
        .iter()
        .map(|(n, d, p)| {
            (
                n.to_string(),
                Capability {
                    domains: d.iter().map(|s| s.to_string()).collect(),
                    ports: p.to_vec(),
                    read_only_paths: Vec::new(),
                    writable_paths: Vec::new(),
                },
            )
        })
        .collect();
    EgressConfig {
        listen: listen.to_string(),
        capabilities,
        public_key_file: keys.public().display().to_string(),
        revocation_file: keys.revoked().display().to_string(),
        allow_ranges: allow.iter().map(|s| s.to_string()).collect(),
        nameservers: vec![dns.to_string()],
        limits: EgressLimits {
            header_timeout_secs: 2,
            ..EgressLimits::default()
        },
    }
}

/// A running proxy.
pub struct Running {
    pub addr: SocketAddr,
    pub proxy: Arc<Proxy>,
    pub trigger: osmoda_daemon::Trigger,
    pub task: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Starts a proxy on an already bound listener, recording to a spool under `keys`.
pub async fn start(
    listener: tokio::net::TcpListener,
    relay: Option<tokio::net::UnixListener>,
    cfg: &EgressConfig,
    spool: &Path,
) -> Running {
    start_with_budgets(listener, relay, cfg, spool, 10_000, 50).await
}

/// Like [`start`], recording at most `deny_per_sec` denies and `allow_per_sec` allow events a
/// second one by one.
pub async fn start_with_budgets(
    listener: tokio::net::TcpListener,
    relay: Option<tokio::net::UnixListener>,
    cfg: &EgressConfig,
    spool: &Path,
    deny_per_sec: u32,
    allow_per_sec: u32,
) -> Running {
    // No agentd: events stay in the spool, where the tests read them.
    let reporter =
        osmoda_client::Reporter::open(spool.join("no-agentd.sock"), spool, "egress").unwrap();
    let events = Events::with_budgets(Some(reporter), deny_per_sec, allow_per_sec);
    start_with_events(listener, relay, cfg, events).await
}

/// Like [`start`], recording through `events`.
pub async fn start_with_events(
    listener: tokio::net::TcpListener,
    relay: Option<tokio::net::UnixListener>,
    cfg: &EgressConfig,
    events: Events,
) -> Running {
    let addr = listener.local_addr().unwrap();
    let proxy = Arc::new(Proxy::new(cfg, addr, events).unwrap());
    let (trigger, shutdown) = osmoda_daemon::shutdown_channel();
    let task = tokio::spawn(Arc::clone(&proxy).serve(listener, relay, shutdown));
    Running {
        addr,
        proxy,
        trigger,
        task,
    }
}

/// A proxy's answer to one request.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub reason: String,
    pub text: String,
    pub stream: TcpStream,
}

/// Sends `raw` (a whole head) and reads the answer's head (and body, for refusals).
pub async fn send(proxy: SocketAddr, raw: &[u8]) -> Answer {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(raw).await.unwrap();
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        if s.read(&mut byte).await.unwrap() == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let reason = head
        .lines()
        .find_map(|l| l.strip_prefix("x-osmoda-egress-reason: "))
        .unwrap_or("")
        .to_string();
    let mut text = head;
    if status != 200 {
        let mut rest = String::new();
        let _ = s.read_to_string(&mut rest).await;
        text.push_str(&rest);
    }
    Answer {
        status,
        reason,
        text,
        stream: s,
    }
}

/// A CONNECT head with `token` as Bearer (or none).
pub fn connect(target: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token
        .map(|t| format!("Proxy-Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}\r\n").into_bytes()
}

/// The events spooled so far: (type, payload).
pub fn spooled(spool: &Path) -> Vec<(String, serde_json::Value)> {
    let mut files: Vec<_> = std::fs::read_dir(spool)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let v: serde_json::Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            (
                v["type"].as_str().unwrap_or("").to_string(),
                v["payload"].clone(),
            )
        })
        .collect()
}
