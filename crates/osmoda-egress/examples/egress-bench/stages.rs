//! Where a CONNECT's added microseconds go: each stage the proxy runs for one CONNECT, timed
//! alone in this process with the proxy's own code (the library the binary is built from),
//! `N` times each, median and p99. Stages, in the proxy's order:
//!
//! - `head`: read and parse the request head (httparse) from memory;
//! - `stat x2`: the two `stat`s that notice a new key or revocation list;
//! - `token (kept)`: [`Keys::check`] for bytes verified before (stats, LRU lookup, time window,
//!   revocation);
//! - `token (verify)`: the same token's full verification (base64, Ed25519, JSON), what a
//!   token seen for the first time (or after a key/list change) costs;
//! - `target + policy`: parse and normalise the target, match the token's grants;
//! - `upstream connect`: a loopback TCP connect to the sink (the proxy's dial);
//! - `allow (first)`: [`Events::allow`] of a new key — one `egress.allow` fsync'ed in a spool
//!   on the state directory's file system;
//! - `allow (repeat)`: the same key again in its window (counted in memory).

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use osmoda_egress::events::{Decision, Events};
use osmoda_egress::keys::Keys;
use osmoda_egress::token;

/// Times `f` `n` times; (median, p99) in µs.
async fn time<F, Fut>(n: usize, mut f: F) -> anyhow::Result<(f64, f64)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut t = Vec::with_capacity(n);
    for i in 0..n {
        let start = Instant::now();
        f(i).await?;
        t.push(start.elapsed().as_secs_f64() * 1e6);
    }
    t.sort_by(f64::total_cmp);
    Ok((t[t.len() / 2], t[t.len() * 99 / 100]))
}

/// Runs every stage `n` times (the first-allow stage at most 50 a second, the proxy's budget
/// for itemised allow events) and prints one line each.
pub async fn run(
    dir: &Path,
    sink: SocketAddr,
    tok: &str,
    cfg: &serde_json::Value,
    n: usize,
) -> anyhow::Result<()> {
    let cfg: osmoda_config::EgressConfig = serde_json::from_value(cfg.clone())?;
    let keys = Keys::new(&cfg.public_key_file, &cfg.revocation_file);
    let declared =
        osmoda_egress::policy::parse_capabilities(&cfg.capabilities).map_err(anyhow::Error::msg)?;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    };
    let target = sink.to_string();
    let raw = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Bearer {tok}\r\n\r\n"
    );
    let key = keys.public_key().map_err(anyhow::Error::msg)?;
    let claims = keys
        .check(tok, now())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let spool = dir.join("stages-spool");
    let reporter = osmoda_client::Reporter::open(dir.join("no-agentd.sock"), &spool, "bench")?;
    let events = Events::new(Some(reporter));
    let decision = |i: usize| Decision {
        reason: "allowed".into(),
        target: target.clone(),
        token_id: Some(claims.id.clone()),
        subject: Some(claims.sub.clone()),
        capability: Some("bench".into()),
        host: Some(format!("h{i}.bench.test")),
        port: Some(sink.port()),
        ..Decision::default()
    };

    let mut rows: Vec<(&str, (f64, f64))> = Vec::new();
    rows.push((
        "head",
        time(n, |_| async {
            let mut r = raw.as_bytes();
            osmoda_egress::head::read(&mut r)
                .await
                .map_err(anyhow::Error::msg)?;
            Ok(())
        })
        .await?,
    ));
    rows.push((
        "stat x2",
        time(n, |_| async {
            let _ = std::fs::metadata(&cfg.public_key_file);
            let _ = std::fs::metadata(&cfg.revocation_file);
            Ok(())
        })
        .await?,
    ));
    rows.push((
        "token (kept)",
        time(n, |_| async {
            keys.check(tok, now())
                .map_err(|e| anyhow::anyhow!("{e:?}"))?;
            Ok(())
        })
        .await?,
    ));
    rows.push((
        "token (verify)",
        time(n, |_| async {
            token::verify(&key, tok, now())?;
            Ok(())
        })
        .await?,
    ));
    rows.push((
        "target + policy",
        time(n, |_| async {
            let t = osmoda_egress::host::parse_target(&target)?;
            osmoda_egress::policy::authorize(&claims, &declared, &t, true)
                .map_err(|r| anyhow::anyhow!("{}", r.as_str()))?;
            Ok(())
        })
        .await?,
    ));
    rows.push((
        "upstream connect",
        time(n, |_| async {
            let s = tokio::net::TcpStream::connect(sink).await?;
            s.set_nodelay(true)?;
            Ok(())
        })
        .await?,
    ));
    // Paced within the itemised budget (50 a second), the pause untimed: what a first costs
    // when the proxy is not being flooded with new targets.
    let firsts = n.min(300);
    let mut t = Vec::with_capacity(firsts);
    for i in 0..firsts {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let d = decision(i);
        let start = Instant::now();
        events.allow(&d).await.map_err(anyhow::Error::msg)?;
        t.push(start.elapsed().as_secs_f64() * 1e6);
    }
    t.sort_by(f64::total_cmp);
    rows.push(("allow (first)", (t[t.len() / 2], t[t.len() * 99 / 100])));
    let d = decision(0);
    rows.push((
        "allow (repeat)",
        time(n, |_| async {
            events.allow(&d).await.map_err(anyhow::Error::msg)
        })
        .await?,
    ));
    events.flush().await;
    drop(events);
    std::fs::remove_dir_all(&spool).context("removing the stages' spool")?;

    println!("\nstages of one CONNECT, timed alone in-process ({n} each; allow (first): {firsts}, 20 ms apart)");
    for (name, (p50, p99)) in rows {
        println!("  {name:<18} p50 {p50:>8.1} µs  p99 {p99:>9.1} µs");
    }
    Ok(())
}
