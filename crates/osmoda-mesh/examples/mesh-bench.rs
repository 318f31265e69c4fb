//! mesh-bench: what a mesh link costs, on loopback, in one run (a benchmark, not a test).
//!
//! - Handshake CPU: `--handshakes N` (default 200) full hybrid handshakes (Noise XXpsk3 +
//!   ML-KEM-768 + Ed25519) between two threads; each side's thread CPU time per handshake.
//! - Bulk: `--bytes B` (default 1 GiB) through a mesh link's transport (the daemon's framing
//!   and snow's ChaCha20-Poly1305 with 65,519-byte plaintexts, what `link.rs` sends) and, in
//!   the same run, through rustls TLS 1.3 (ring) with AES-256-GCM and with ChaCha20-Poly1305,
//!   each one TCP connection on 127.0.0.1 between two threads.
//!
//! `cargo run --release -p osmoda-mesh --example mesh-bench [-- --bytes 1073741824]`

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

fn mesh_bulk(bytes: u64) -> Result<f64> {
    let i = Arc::new(Identity::generate().map_err(anyhow::Error::msg)?);
    let r = Arc::new(Identity::generate().map_err(anyhow::Error::msg)?);
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let ikeys = i.keys();
    let rkeys = r.keys();
    let server = std::thread::spawn(move || -> Result<u64> {
        rt().block_on(async move {
            l.set_nonblocking(true)?;
            let l = TcpListener::from_std(l)?;
            let (s, _) = l.accept().await?;
            let mut s = tokio::io::BufReader::with_capacity(1 << 20, s);
            let (mut est, _, ()) = handshake::respond(&mut s, &r, |k, _| {
                if *k == ikeys {
                    Ok(())
                } else {
                    Err("?".into())
                }
            })
            .await?;
            let mut got = 0u64;
            let mut out = vec![0u8; MAX_FRAME];
            while got < bytes {
                let f = read_frame(&mut s).await?;
                got += est
                    .transport
                    .read_message(&f, &mut out)
                    .map_err(|e| anyhow::anyhow!("{e}"))? as u64;
            }
            s.get_mut().write_all(b"k").await?;
            Ok(got)
        })
    });
    let secs = rt().block_on(async {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        let mut s = tokio::io::BufWriter::with_capacity(1 << 20, s);
        let mut est = handshake::initiate(s.get_mut(), &i, &rkeys, Extra::default()).await?;
        let chunk = vec![0x5au8; MAX_PLAINTEXT];
        let mut buf = vec![0u8; MAX_FRAME];
        let start = Instant::now();
        let mut sent = 0u64;
        while sent < bytes {
            let n = (bytes - sent).min(MAX_PLAINTEXT as u64) as usize;
            let len = est
                .transport
                .write_message(&chunk[..n], &mut buf)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            write_frame(&mut s, &buf[..len]).await?;
            sent += n as u64;
        }
        s.flush().await?;
        let mut k = [0u8; 1];
        s.get_mut().read_exact(&mut k).await?;
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

fn main() -> Result<()> {
    let n = arg("--handshakes", 200);
    let bytes = arg("--bytes", 1 << 30);
    handshakes(n).context("handshakes")?;
    let mesh = mesh_bulk(bytes).context("mesh bulk")?;
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
    println!("bulk {bytes} bytes over loopback, one connection:");
    println!("  mesh link (Noise ChaCha20-Poly1305, 65,519-byte frames): {mesh:.0} MB/s");
    println!(
        "  rustls TLS 1.3 AES-256-GCM:                            {aes:.0} MB/s ({:.0} % of it)",
        mesh / aes * 100.0
    );
    println!(
        "  rustls TLS 1.3 ChaCha20-Poly1305:                      {chacha:.0} MB/s ({:.0} % of it)",
        mesh / chacha * 100.0
    );
    Ok(())
}
