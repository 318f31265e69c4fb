//! osmoda-egress benchmark (issue 14), a separate command, never part of the test suite:
//!
//! ```text
//! cargo build --release -p osmoda-egress --bins --examples
//! target/release/examples/egress-bench [MIB] [CONNECTS] [IDLE]
//! ```
//!
//! - throughput: `MIB` (default 1024) through one CONNECT tunnel on loopback, client → sink,
//!   for a direct loopback copy (no proxy), the real `osmoda-egress` binary (beside this
//!   example), squid and tinyproxy (Debian packages, when installed), interleaved over three
//!   rounds; the median of each;
//! - connect latency: `CONNECTS` (default 300) rounds, each one tunnel through every path in
//!   turn (interleaved, so a change in the machine's load hits them alike), until a one-byte
//!   echo comes back through it (an IP-literal target inside `allowRanges`: no DNS), p50/p99
//!   and the p50 added over the direct connect. osmoda-egress twice: `repeat` (one token and
//!   target throughout: its allow is a repeat in the window, its token verified before) and
//!   `first` (a token never seen, minted beforehand: Ed25519 verification and the allow's
//!   fsync on every connect); rounds 20 ms apart so the firsts stay within the proxy's budget
//!   of 50 itemised allow events a second;
//! - the stages of one CONNECT timed alone (`stages.rs`), to show where the added time goes;
//! - `IDLE` (default 10,000) idle tunnels held open through osmoda-egress: its RSS before and
//!   with them.
//!
//! As root it runs in a network namespace of its own with only `lo`; otherwise on the host's
//! loopback (every address it uses is 127.0.0.x).

mod stages;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use osmoda_egress::token::{self, Claims, Grant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const SINK: &str = "127.0.0.2";
const CHUNK: usize = 256 * 1024;

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The `Proxy-Authorization` a proxy under test needs.
#[derive(Clone)]
enum Auth {
    None,
    /// The same token every time.
    Token(String),
    /// A token never used before, every time (taken from these, minted beforehand).
    Fresh(Arc<Mutex<Vec<String>>>),
}

/// A proxy under test: where it listens and the `Proxy-Authorization` it needs.
#[derive(Clone)]
struct Proxy {
    name: &'static str,
    addr: Option<SocketAddr>,
    auth: Auth,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split(' ').take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> anyhow::Result<()> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().context("arguments: [MIB] [CONNECTS] [IDLE]"))
        .collect::<anyhow::Result<_>>()?;
    let mib = args.first().copied().unwrap_or(1024);
    let connects = args.get(1).copied().unwrap_or(300) as usize;
    let idle = args.get(2).copied().unwrap_or(10_000) as usize;
    if nix::unistd::geteuid().is_root() {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare")?;
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()?;
        if !up.success() {
            bail!("ip link set lo up failed");
        }
        println!("network namespace of its own, only lo");
    }
    // 10,000 tunnels are 20,000 sockets here (client and sink side) and 20,000 in the proxy,
    // which inherits this limit (the module gives the egress unit LimitNOFILE=65536). Without
    // CAP_SYS_RESOURCE the hard limit cannot be raised: then as many tunnels as fit are held.
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let want = 2 * idle as u64 + 256;
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let hard = if setrlimit(Resource::RLIMIT_NOFILE, want.max(hard), want.max(hard)).is_ok() {
        want.max(hard)
    } else {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).context("RLIMIT_NOFILE")?;
        hard
    };
    let fit = (hard.saturating_sub(256) / 2) as usize;
    let idle = if idle > fit {
        println!(
            "RLIMIT_NOFILE hard limit {hard} (not raisable here): {fit} idle tunnels, not {idle}"
        );
        fit
    } else {
        idle
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(run(mib, connects, idle))
}

async fn run(mib: u64, connects: usize, idle: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )?;
    let sink = TcpListener::bind((SINK, 0)).await?;
    let sink_addr = sink.local_addr()?;
    tokio::spawn(serve_sink(sink));

    println!("load average at start: {}", loadavg());
    let (egress, egress_proxy, fresh, cfg) = start_egress(dir.path(), sink_addr.port(), connects)?;
    let mut proxies = vec![
        Proxy {
            name: "direct",
            addr: None,
            auth: Auth::None,
        },
        egress_proxy.clone(),
    ];
    let mut others = Vec::new();
    for (name, start) in [
        (
            "squid",
            start_squid as fn(&Path, u16) -> anyhow::Result<Child>,
        ),
        ("tinyproxy", start_tinyproxy),
    ] {
        let port = free_port().await?;
        match start(dir.path(), port) {
            Ok(child) => {
                let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                others.push(Kill(child));
                wait_listening(addr, name).await?;
                proxies.push(Proxy {
                    name,
                    addr: Some(addr),
                    auth: Auth::None,
                });
            }
            Err(e) => println!("{name}: not measured ({e:#})"),
        }
    }
    wait_listening(egress_proxy.addr.expect("addr"), "osmoda-egress").await?;

    println!("\nthroughput: {mib} MiB through one tunnel, client -> sink, 3 interleaved rounds");
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); proxies.len()];
    for _ in 0..3 {
        for (i, p) in proxies.iter().enumerate() {
            rates[i].push(throughput(p, sink_addr, mib << 20).await?);
        }
    }
    let direct = median(&rates[0]);
    for (p, r) in proxies.iter().zip(&rates) {
        println!(
            "  {:<14} median {:>7.0} MiB/s  ({})  = {:>5.1} % of direct",
            p.name,
            median(r),
            r.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(" / "),
            100.0 * median(r) / direct
        );
    }
    if let Some(squid) = proxies.iter().position(|p| p.name == "squid") {
        println!(
            "  osmoda-egress / squid: {:.2}x",
            median(&rates[1]) / median(&rates[squid])
        );
    }

    let mut paths = proxies.clone();
    paths.insert(
        2,
        Proxy {
            name: "egress first",
            addr: egress_proxy.addr,
            auth: Auth::Fresh(fresh),
        },
    );
    paths[1].name = "egress repeat";
    println!(
        "\nconnect latency: {connects} rounds 20 ms apart, one tunnel per path each, until a 1-byte echo"
    );
    // The repeat path's key (token, capability, target) has had its first.
    echo_once(&paths[1], sink_addr).await?;
    let mut t: Vec<Vec<f64>> = vec![Vec::with_capacity(connects); paths.len()];
    for _ in 0..connects {
        for (i, p) in paths.iter().enumerate() {
            t[i].push(echo_once(p, sink_addr).await?);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut direct_p50 = 0.0;
    for (p, t) in paths.iter().zip(&mut t) {
        t.sort_by(f64::total_cmp);
        let (p50, p99) = (t[t.len() / 2], t[t.len() * 99 / 100]);
        if p.name == "direct" {
            direct_p50 = p50;
        }
        println!(
            "  {:<14} p50 {:>7.1} µs  p99 {:>8.1} µs  added p50 {:>7.1} µs",
            p.name,
            p50,
            p99,
            p50 - direct_p50
        );
    }

    let Auth::Token(tok) = &egress_proxy.auth else {
        bail!("osmoda-egress has a token");
    };
    stages::run(dir.path(), sink_addr, tok, &cfg, connects.max(1000)).await?;

    println!("\nRSS of osmoda-egress with {idle} idle tunnels");
    let before = rss_kib(egress.0.id())?;
    let mut held = Vec::with_capacity(idle);
    for i in 0..idle {
        let s = open_tunnel(&egress_proxy, sink_addr)
            .await
            .with_context(|| format!("idle tunnel {i}"))?;
        held.push(s);
    }
    let after = rss_kib(egress.0.id())?;
    println!(
        "  before {:.1} MiB, with {idle} tunnels {:.1} MiB: +{:.1} MiB, {:.2} KiB per tunnel",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after - before) as f64 / 1024.0,
        (after - before) as f64 / idle as f64
    );
    drop(held);
    drop(others);
    println!("\nload average at the end: {}", loadavg());
    Ok(())
}

/// The sink: each connection's first byte says what it wants. `e`: echo one byte back.
/// `t` + a big-endian u64 N: read N bytes, then answer the count (8 bytes; no half-close, which
/// squid and tinyproxy end the whole tunnel on). `h`: hold the connection open.
async fn serve_sink(l: TcpListener) {
    loop {
        let Ok((mut s, _)) = l.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let mut kind = [0u8; 1];
            if s.read_exact(&mut kind).await.is_err() {
                return;
            }
            match kind[0] {
                b'e' => {
                    let _ = s.write_all(b"e").await;
                }
                b't' => {
                    let mut len = [0u8; 8];
                    if s.read_exact(&mut len).await.is_err() {
                        return;
                    }
                    let want = u64::from_be_bytes(len);
                    let mut buf = vec![0u8; CHUNK];
                    let mut n = 0u64;
                    while n < want {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(k) => n += k as u64,
                        }
                    }
                    let _ = s.write_all(&n.to_be_bytes()).await;
                }
                _ => {
                    let mut buf = [0u8; 64];
                    while matches!(s.read(&mut buf).await, Ok(k) if k > 0) {}
                }
            }
        });
    }
}

/// A stream to the sink, through `p` unless it is the direct path.
async fn open(p: &Proxy, sink: SocketAddr) -> anyhow::Result<TcpStream> {
    let Some(addr) = p.addr else {
        let s = TcpStream::connect(sink).await?;
        s.set_nodelay(true)?;
        return Ok(s);
    };
    let mut s = TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    let token = match &p.auth {
        Auth::None => None,
        Auth::Token(t) => Some(t.clone()),
        Auth::Fresh(left) => Some(
            left.lock()
                .map_err(|_| anyhow::anyhow!("poisoned"))?
                .pop()
                .context("out of fresh tokens")?,
        ),
    };
    let auth = token
        .map(|t| format!("Proxy-Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    s.write_all(format!("CONNECT {sink} HTTP/1.1\r\nHost: {sink}\r\n{auth}\r\n").as_bytes())
        .await?;
    // The answer's head. The sink never speaks first, so nothing may follow it yet.
    let mut head = Vec::new();
    let mut b = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).await?;
        if n == 0 || head.len() > 8192 {
            bail!(
                "{}: no CONNECT answer: {}",
                p.name,
                String::from_utf8_lossy(&head)
            );
        }
        head.extend_from_slice(&b[..n]);
    }
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
        bail!("{}: {}", p.name, String::from_utf8_lossy(&head));
    }
    Ok(s)
}

async fn open_tunnel(p: &Proxy, sink: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut s = open(p, sink).await?;
    s.write_all(b"h").await?;
    Ok(s)
}

/// MiB/s of `bytes` from the client to the sink (until the sink has counted them all).
async fn throughput(p: &Proxy, sink: SocketAddr, bytes: u64) -> anyhow::Result<f64> {
    let mut s = open(p, sink).await?;
    let buf = vec![0x5au8; CHUNK];
    let start = Instant::now();
    s.write_all(b"t").await?;
    s.write_all(&bytes.to_be_bytes()).await?;
    let mut left = bytes;
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        s.write_all(&buf[..k]).await?;
        left -= k as u64;
    }
    let mut n = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(300), s.read_exact(&mut n))
        .await
        .with_context(|| format!("{}: no count from the sink in 300 s", p.name))?
        .with_context(|| format!("{}: the sink's count", p.name))?;
    let secs = start.elapsed().as_secs_f64();
    if u64::from_be_bytes(n) != bytes {
        bail!(
            "{}: the sink counted {} of {bytes} bytes",
            p.name,
            u64::from_be_bytes(n)
        );
    }
    Ok(bytes as f64 / (1 << 20) as f64 / secs)
}

/// Microseconds from the first connect to a one-byte echo through the tunnel.
async fn echo_once(p: &Proxy, sink: SocketAddr) -> anyhow::Result<f64> {
    let start = Instant::now();
    let mut s = open(p, sink).await?;
    s.write_all(b"e").await?;
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await?;
    Ok(start.elapsed().as_secs_f64() * 1e6)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS")
}

async fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0").await?.local_addr()?.port())
}

async fn wait_listening(addr: SocketAddr, name: &str) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).await.is_err() {
        if Instant::now() > until {
            bail!("{name} is not listening on {addr} after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// What [`start_egress`] gives: the daemon, the proxy with one token, `fresh` more tokens
/// (each used once), and its egress.json.
type Egress = (Kill, Proxy, Arc<Mutex<Vec<String>>>, serde_json::Value);

/// The release `osmoda-egress` beside this example, with tokens for the sink's port.
fn start_egress(dir: &Path, sink_port: u16, fresh: usize) -> anyhow::Result<Egress> {
    let bin: PathBuf = std::env::current_exe()?
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("osmoda-egress"))
        .filter(|b| b.is_file())
        .context("osmoda-egress is not beside this example: cargo build --release -p osmoda-egress --bins --examples")?;
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
    let sk = ed25519_dalek::SigningKey::from_bytes(&seed);
    std::fs::write(
        dir.join("public.key"),
        token::encode_public_key(&sk.verifying_key()),
    )?;
    let listen = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let cfg = serde_json::json!({
        "listen": listen.to_string(),
        "capabilities": { "bench": { "domains": ["bench.test"], "ports": [sink_port] } },
        "public_key_file": dir.join("public.key"),
        "revocation_file": dir.join("revoked"),
        "allow_ranges": [format!("{SINK}/32")],
        "nameservers": ["127.0.0.1:53"],
        "limits": { "header_timeout_secs": 10, "connect_timeout_secs": 10,
                    "idle_timeout_secs": 600, "max_tunnels": 1_000_000,
                    "rate_per_minute": 4_000_000_000u32 },
    });
    std::fs::write(dir.join("egress.json"), serde_json::to_vec(&cfg)?)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let mut claims = Claims {
        v: 1,
        id: token::new_id()?,
        sub: "egress-bench".into(),
        iat: now - 10,
        exp: now + 3600,
        caps: [(
            "bench".to_string(),
            Grant {
                domains: vec!["bench.test".into()],
                ports: vec![sink_port],
            },
        )]
        .into_iter()
        .collect(),
    };
    let tok = token::mint(&sk, &claims)?;
    let mut others = Vec::with_capacity(fresh);
    for _ in 0..fresh {
        claims.id = token::new_id()?;
        others.push(token::mint(&sk, &claims)?);
    }
    let child = Command::new(&bin)
        .arg("--socket")
        .arg(dir.join("egress.sock"))
        .arg("--proxy-socket")
        .arg(dir.join("egress-proxy.sock"))
        .arg("--config")
        .arg(dir.join("egress.json"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--agentd-socket")
        .arg(dir.join("no-agentd.sock"))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok((
        Kill(child),
        Proxy {
            name: "osmoda-egress",
            addr: Some(listen),
            auth: Auth::Token(tok),
        },
        Arc::new(Mutex::new(others)),
        cfg,
    ))
}

fn start_squid(dir: &Path, port: u16) -> anyhow::Result<Child> {
    let d = dir.join("squid");
    std::fs::create_dir_all(&d)?;
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    let conf = d.join("squid.conf");
    std::fs::write(
        &conf,
        format!(
            "http_port 127.0.0.1:{port}\nhttp_access allow all\ncache deny all\ncache_mem 8 MB\n\
             access_log none\ncache_store_log none\ncache_log {d}/cache.log\npid_filename {d}/squid.pid\n\
             coredump_dir {d}\nshutdown_lifetime 0 seconds\nmax_filedescriptors 65536\n",
            d = d.display()
        ),
    )?;
    Ok(Command::new("squid")
        .arg("-N")
        .arg("-f")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}

fn start_tinyproxy(dir: &Path, port: u16) -> anyhow::Result<Child> {
    let d = dir.join("tinyproxy");
    std::fs::create_dir_all(&d)?;
    std::fs::set_permissions(&d, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
    let conf = d.join("tinyproxy.conf");
    std::fs::write(
        &conf,
        format!(
            "User nobody\nGroup nogroup\nPort {port}\nListen 127.0.0.1\nTimeout 600\nMaxClients 1000\n\
             Allow 127.0.0.1\nDisableViaHeader Yes\nLogLevel Critical\nLogFile \"{d}/tinyproxy.log\"\n\
             PidFile \"{d}/tinyproxy.pid\"\n",
            d = d.display()
        ),
    )?;
    Ok(Command::new("tinyproxy")
        .arg("-d")
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?)
}
