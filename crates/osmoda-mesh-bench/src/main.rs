//! mesh-bench: what a mesh link costs, on loopback, in one run (a benchmark, not a test).
//!
//! - Handshake CPU: `--handshakes N` (default 200) full hybrid handshakes (Noise XXpsk3 +
//!   ML-KEM-768 + Ed25519) between two threads; each side's thread CPU time per handshake.
//! - The cipher alone: seal + open of `--bytes B` (default 1 GiB) in memory on one thread, in
//!   65,519-byte messages through snow's transport, ChaCha20-Poly1305 (the mesh's only cipher,
//!   `Noise_XXpsk3_25519_ChaChaPoly_BLAKE2s`) from RustCrypto (snow's default resolver) and
//!   from ring (what the daemon uses).
//! - Bulk: the same bytes through a mesh link's transport (framing and snow with 65,519-byte
//!   plaintexts, what `link.rs` sends) over one TCP connection on 127.0.0.1 between two
//!   threads: before the frame-path change (old framing, RustCrypto), then one change at a time
//!   (framing, then ring's cipher through the daemon's own hybrid handshake: the daemon's link,
//!   also without the read buffer); and in the same run rustls TLS 1.3 (ring) with AES-256-GCM
//!   and with ChaCha20-Poly1305.
//!
//! `cargo run --release -p osmoda-mesh-bench [-- --bytes 1073741824 --handshakes 200]`; the load
//! average is printed at the start and the end (the figures mean little on a busy machine).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use osmoda_mesh::frame::{read_frame, write_frame, MAX_FRAME};
use osmoda_mesh::handshake::{self, Extra};
use osmoda_mesh::identity::Identity;
use osmoda_mesh::message::MAX_PLAINTEXT;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

fn thread_cpu() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(Duration::ZERO, Duration::from)
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

fn arg(name: &str, default: u64) -> u64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn handshakes(n: u64) -> Result<()> {
    let i = Arc::new(Identity::generate().map_err(anyhow::Error::msg)?);
    let r = Arc::new(Identity::generate().map_err(anyhow::Error::msg)?);
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let ikeys = i.keys();
    let r2 = r.clone();
    let server = std::thread::spawn(move || -> Result<Duration> {
        rt().block_on(async move {
            l.set_nonblocking(true)?;
            let l = TcpListener::from_std(l)?;
            let mut cpu = Duration::ZERO;
            for _ in 0..n {
                let (mut s, _) = l.accept().await?;
                let t = thread_cpu();
                handshake::respond(&mut s, &r2, |k, _| {
                    if *k == ikeys {
                        Ok(())
                    } else {
                        Err("?".into())
                    }
                })
                .await?;
                cpu += thread_cpu() - t;
            }
            Ok(cpu)
        })
    });
    let rkeys = r.keys();
    let client = rt().block_on(async {
        let mut cpu = Duration::ZERO;
        let start = Instant::now();
        for _ in 0..n {
            let mut s = TcpStream::connect(addr).await?;
            let t = thread_cpu();
            handshake::initiate(&mut s, &i, &rkeys, Extra::default()).await?;
            cpu += thread_cpu() - t;
        }
        anyhow::Ok((cpu, start.elapsed()))
    })?;
    let scpu = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    let per = |d: Duration| d.as_secs_f64() * 1e3 / n as f64;
    println!(
        "handshake: {n} in {:.2} s wall; CPU per handshake: initiator {:.2} ms, responder {:.2} ms",
        client.1.as_secs_f64(),
        per(client.0),
        per(scpu)
    );
    Ok(())
}

/// How a link frames and sends its messages.
#[derive(Clone, Copy, PartialEq)]
enum Framing {
    /// `link.rs` before the frame-path change (kept here as the baseline): a zeroed 64 KiB
    /// buffer per sealed message, the frame copied behind its prefix, one write per frame on
    /// the socket; the reader takes the 4-byte header and the body with two reads on the bare
    /// socket into a zeroed buffer, and decrypts into another zeroed 64 KiB buffer per frame.
    Before,
    /// `link.rs` now: one sealing buffer and one decryption buffer for the link's life,
    /// [`write_frame`] (prefix and body in one vectored write), [`read_frame`] behind a
    /// 256 KiB `BufReader`.
    Now,
    /// As `Now` without the `BufReader` (two reads per frame on the bare socket, no copy out of
    /// a read buffer): what the buffer buys or costs.
    NowUnbuffered,
}

/// Whose cipher code snow uses: its default resolver's (RustCrypto) or ring's (what the
/// daemon's `snow` is built with: the `ring-accelerated` feature).
#[derive(Clone, Copy, PartialEq)]
enum Impl {
    RustCrypto,
    Ring,
}

fn resolver(i: Impl) -> snow::resolvers::BoxedCryptoResolver {
    use snow::resolvers::{DefaultResolver, FallbackResolver, RingResolver};
    match i {
        Impl::RustCrypto => Box::new(DefaultResolver),
        Impl::Ring => Box::new(FallbackResolver::new(
            Box::new(RingResolver),
            Box::new(DefaultResolver),
        )),
    }
}

/// A pair of ChaCha20-Poly1305 transports from `imp`, from an in-memory `Noise_NN` handshake
/// (the transport phase is the same as after the daemon's XXpsk3 one; only the keys differ).
fn transports(imp: Impl) -> Result<(snow::TransportState, snow::TransportState)> {
    let p: snow::params::NoiseParams = "Noise_NN_25519_ChaChaPoly_BLAKE2s".parse()?;
    let mut i = snow::Builder::with_resolver(p.clone(), resolver(imp)).build_initiator()?;
    let mut r = snow::Builder::with_resolver(p, resolver(imp)).build_responder()?;
    let (mut a, mut b) = (vec![0u8; 1024], vec![0u8; 1024]);
    let n = i.write_message(&[], &mut a)?;
    r.read_message(&a[..n], &mut b)?;
    let n = r.write_message(&[], &mut a)?;
    i.read_message(&a[..n], &mut b)?;
    Ok((i.into_transport_mode()?, r.into_transport_mode()?))
}

/// Seal then open `bytes` in 65,519-byte messages on one thread: the cipher's own cost.
fn cipher_alone(bytes: u64, imp: Impl) -> Result<f64> {
    let (mut i, mut r) = transports(imp)?;
    let chunk = vec![0x5au8; MAX_PLAINTEXT];
    let (mut sealed, mut plain) = (vec![0u8; MAX_FRAME], vec![0u8; MAX_FRAME]);
    let start = Instant::now();
    let mut done = 0u64;
    while done < bytes {
        let n = (bytes - done).min(MAX_PLAINTEXT as u64) as usize;
        let len = i.write_message(&chunk[..n], &mut sealed)?;
        done += r.read_message(&sealed[..len], &mut plain)? as u64;
    }
    Ok(bytes as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// The frame functions as `frame.rs` had them before (the baseline's framing).
mod before {
    use osmoda_mesh::frame::{encode, MAX_FRAME};
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
        let mut head = [0u8; 4];
        r.read_exact(&mut head).await?;
        let len = u32::from_be_bytes(head) as usize;
        assert!((1..=MAX_FRAME).contains(&len));
        let mut body = vec![0u8; len];
        r.read_exact(&mut body).await?;
        Ok(body)
    }

    pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, data: &[u8]) -> std::io::Result<()> {
        w.write_all(&encode(data)).await?;
        w.flush().await
    }
}

/// Receives `bytes` of plaintext on `s` as a link does with `framing`.
async fn receive(
    s: TcpStream,
    t: &mut snow::TransportState,
    framing: Framing,
    bytes: u64,
) -> Result<(u64, TcpStream)> {
    let mut got = 0u64;
    match framing {
        Framing::Before => {
            let mut s = s;
            while got < bytes {
                let f = before::read_frame(&mut s).await?;
                let mut out = vec![0u8; MAX_FRAME];
                got += t.read_message(&f, &mut out)? as u64;
            }
            Ok((got, s))
        }
        Framing::Now => {
            let mut s = tokio::io::BufReader::with_capacity(4 * MAX_FRAME, s);
            let mut out = vec![0u8; MAX_FRAME];
            while got < bytes {
                let f = read_frame(&mut s).await?;
                got += t.read_message(&f, &mut out)? as u64;
            }
            Ok((got, s.into_inner()))
        }
        Framing::NowUnbuffered => {
            let mut s = s;
            let mut out = vec![0u8; MAX_FRAME];
            while got < bytes {
                let f = read_frame(&mut s).await?;
                got += t.read_message(&f, &mut out)? as u64;
            }
            Ok((got, s))
        }
    }
}

/// Sends `bytes` of plaintext on `s` as a link does with `framing`.
async fn send(
    s: &mut TcpStream,
    t: &mut snow::TransportState,
    framing: Framing,
    bytes: u64,
) -> Result<()> {
    let chunk = vec![0x5au8; MAX_PLAINTEXT];
    let mut sealed = vec![0u8; MAX_FRAME];
    let mut sent = 0u64;
    while sent < bytes {
        let n = (bytes - sent).min(MAX_PLAINTEXT as u64) as usize;
        match framing {
            Framing::Before => {
                let mut buf = vec![0u8; MAX_FRAME];
                let len = t.write_message(&chunk[..n], &mut buf)?;
                buf.truncate(len);
                before::write_frame(s, &buf).await?;
            }
            Framing::Now | Framing::NowUnbuffered => {
                let len = t.write_message(&chunk[..n], &mut sealed)?;
                write_frame(s, &sealed[..len]).await?;
            }
        }
        sent += n as u64;
    }
    Ok(())
}

/// How the two ends of a bulk run get their transports.
#[derive(Clone, Copy, PartialEq)]
enum Keys {
    /// An in-memory pair with this cipher code.
    Pair(Impl),
    /// The daemon's own handshake (XXpsk3 + ML-KEM-768 + Ed25519 on the connection, snow as
    /// the daemon builds it).
    Hybrid,
}

/// `bytes` over one loopback TCP connection (Nagle off, as the daemon sets it) between two
/// threads.
fn link_bulk(bytes: u64, framing: Framing, keys: Keys) -> Result<f64> {
    let i = Arc::new(Identity::generate().map_err(anyhow::Error::msg)?);
    let r = Arc::new(Identity::generate().map_err(anyhow::Error::msg)?);
    let (ti, tr) = match keys {
        Keys::Pair(imp) => transports(imp)?,
        Keys::Hybrid => transports(Impl::Ring)?,
    };
    let hybrid = keys == Keys::Hybrid;
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let ikeys = i.keys();
    let rkeys = r.keys();
    let server = std::thread::spawn(move || -> Result<u64> {
        rt().block_on(async move {
            l.set_nonblocking(true)?;
            let l = TcpListener::from_std(l)?;
            let (mut s, _) = l.accept().await?;
            s.set_nodelay(true)?;
            let mut t = if hybrid {
                let (est, _, ()) = handshake::respond(&mut s, &r, |k, _| {
                    if *k == ikeys {
                        Ok(())
                    } else {
                        Err("?".into())
                    }
                })
                .await?;
                est.transport
            } else {
                tr
            };
            let (got, mut s) = receive(s, &mut t, framing, bytes).await?;
            s.write_all(b"k").await?;
            Ok(got)
        })
    });
    let secs = rt().block_on(async {
        let mut s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut t = if hybrid {
            handshake::initiate(&mut s, &i, &rkeys, Extra::default())
                .await?
                .transport
        } else {
            ti
        };
        let start = Instant::now();
        send(&mut s, &mut t, framing, bytes).await?;
        let mut k = [0u8; 1];
        s.read_exact(&mut k).await?;
        anyhow::Ok(start.elapsed().as_secs_f64())
    })?;
    let got = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    anyhow::ensure!(got == bytes, "received {got} of {bytes}");
    Ok(bytes as f64 / secs / 1e6)
}

fn tls_bulk(bytes: u64, suite: rustls::SupportedCipherSuite) -> Result<f64> {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()])?;
    let der = cert.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::CryptoProvider {
        cipher_suites: vec![suite],
        ..rustls::crypto::ring::default_provider()
    });
    let sconf = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![der.clone()], key)?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(der)?;
    let cconf = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let server = std::thread::spawn(move || -> Result<u64> {
        rt().block_on(async move {
            l.set_nonblocking(true)?;
            let l = TcpListener::from_std(l)?;
            let (s, _) = l.accept().await?;
            let mut s = tokio_rustls::TlsAcceptor::from(Arc::new(sconf))
                .accept(s)
                .await?;
            let mut got = 0u64;
            let mut buf = vec![0u8; 1 << 16];
            while got < bytes {
                let n = s.read(&mut buf).await?;
                anyhow::ensure!(n > 0, "TLS stream ended early");
                got += n as u64;
            }
            s.write_all(b"k").await?;
            s.flush().await?;
            Ok(got)
        })
    });
    let secs = rt().block_on(async {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let name = rustls::pki_types::ServerName::try_from("localhost")?;
        let mut s = tokio_rustls::TlsConnector::from(Arc::new(cconf))
            .connect(name, s)
            .await?;
        let chunk = vec![0x5au8; 1 << 16];
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < bytes {
            let n = (bytes - sent).min(chunk.len() as u64) as usize;
            s.write_all(&chunk[..n]).await?;
            sent += n as u64;
        }
        s.flush().await?;
        let mut k = [0u8; 1];
        s.read_exact(&mut k).await?;
        anyhow::Ok(start.elapsed().as_secs_f64())
    })?;
    let got = server
        .join()
        .map_err(|_| anyhow::anyhow!("server panicked"))??;
    anyhow::ensure!(got == bytes, "received {got} of {bytes}");
    Ok(bytes as f64 / secs / 1e6)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() -> Result<()> {
    let n = arg("--handshakes", 200);
    let bytes = arg("--bytes", 1 << 30);
    println!(
        "load average at the start: {} ({} CPUs); the mesh speaks {}",
        loadavg(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        handshake::PATTERN
    );
    handshakes(n).context("handshakes")?;
    println!("the cipher alone, seal + open on one thread, 65,519-byte messages:");
    for (imp, iname) in [(Impl::RustCrypto, "RustCrypto"), (Impl::Ring, "ring")] {
        let mbs = cipher_alone(bytes, imp).context("cipher alone")?;
        println!("  ChaChaPoly {iname:<10} {mbs:>6.0} MB/s");
    }
    let runs = [
        (
            "before: old framing, RustCrypto ChaChaPoly",
            Framing::Before,
            Keys::Pair(Impl::RustCrypto),
        ),
        (
            "new framing, RustCrypto ChaChaPoly",
            Framing::Now,
            Keys::Pair(Impl::RustCrypto),
        ),
        (
            "the daemon's link: ring ChaChaPoly (hybrid hs)",
            Framing::Now,
            Keys::Hybrid,
        ),
        (
            "the daemon's link unbuffered",
            Framing::NowUnbuffered,
            Keys::Hybrid,
        ),
    ];
    let mut link = Vec::new();
    for (name, framing, keys) in runs {
        link.push((name, link_bulk(bytes, framing, keys).context(name)?));
    }
    let aes = tls_bulk(
        bytes,
        rustls::crypto::ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
    )
    .context("TLS AES")?;
    let chacha = tls_bulk(
        bytes,
        rustls::crypto::ring::cipher_suite::TLS13_CHACHA20_POLY1305_SHA256,
    )
    .context("TLS ChaCha")?;
    println!("bulk {bytes} bytes over loopback, one connection (% of TLS 1.3 AES-256-GCM, % of TLS 1.3 ChaCha20-Poly1305):");
    for (name, mbs) in link {
        println!(
            "  mesh, {name:<48} {mbs:>6.0} MB/s ({:>3.0} %, {:>3.0} %)",
            mbs / aes * 100.0,
            mbs / chacha * 100.0
        );
    }
    println!("  {:<54} {aes:>6.0} MB/s", "rustls TLS 1.3 AES-256-GCM");
    println!(
        "  {:<54} {chacha:>6.0} MB/s",
        "rustls TLS 1.3 ChaCha20-Poly1305"
    );
    println!("load average at the end: {}", loadavg());
    Ok(())
}
