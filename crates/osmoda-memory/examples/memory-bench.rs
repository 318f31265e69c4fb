//! memory-bench: indexing and ingest throughput, recall latency and RSS of the memory at
//! 10k and 100k chunks, with the real in-process model (all-MiniLM-L6-v2).
//!
//! Per size N: (1) N − 1,000 synthetic operations events are written as daily notes in the
//! markdown osModa writes and indexed by opening the memory (chunking, FTS5, embedding in
//! batches: "bulk" chunks/s); (2) 1,000 more go through [`Memory::ingest`] one by one, each an
//! atomic append + index + embedding ("ingest" chunks/s at that size); (3) 200 queries are
//! recalled twice: first with the query embedding computed, then from the query cache (the
//! search alone); p50/p99 of each. RSS is this process's VmRSS (model loaded, index open).
//!
//! `--synthetic` replaces the model by a stand-in that hashes each text to a random unit
//! vector (no model cost): the index, FTS5, fsyncs and the exact search at sizes the real model
//! cannot embed in a session on a shared 2-core machine (about 10 chunks/s there). Figures from
//! it say nothing about embedding speed or retrieval quality.
//!
//! `--endpoint URL` embeds through the HTTP backend ([`HttpEmbedder`], an OpenAI-compatible
//! `/v1/embeddings`, as `services.osmoda.memory.embeddingEndpoint` selects) instead of the
//! in-process model: with `bench/st-server.py` it serves the same model from
//! sentence-transformers, fast enough for 100k real chunks here. Its figures include the HTTP
//! round trip and that server's speed, not candle's.
//!
//! `--export DIR` also writes the N vectors and the 200 query vectors (little-endian f32,
//! `vectors.f32`, `queries.f32`, 384 per row) for `bench/vector-stores.py`, which compares
//! vector stores on them.
//!
//! Built with `--no-default-features` it has no in-process model (only `--synthetic` and
//! `--endpoint`), and a release build skips candle.
//!
//! ```sh
//! cargo run --release -p osmoda-memory --example memory-bench -- [--sizes 10000,100000]
//!     [--model DIR | --endpoint URL | --synthetic] [--keep DIR] [--export DIR] [--ingest N]
//! ```
//! Without `--model`, `$OSMODA_MEMORY_MODEL_DIR` or `scripts/fetch-memory-model`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use osmoda_memory::{Embedder, HttpEmbedder, IngestEvent, Memory, Options, RecallRequest};

/// Events ingested one by one per size (`--ingest N`).
const INGESTED: usize = 1_000;

/// The stand-in of `--synthetic`: SHA-256 of the text seeds 384 pseudo-random values.
struct Synthetic;

impl Embedder for Synthetic {
    fn id(&self) -> String {
        "synthetic-sha256-384".into()
    }
    fn embed(&self, texts: &[String]) -> osmoda_memory::Result<Vec<Vec<f32>>> {
        use sha2::{Digest, Sha256};
        Ok(texts
            .iter()
            .map(|t| {
                let seed = Sha256::digest(t.as_bytes());
                let mut r = Rng(u64::from_le_bytes(seed[..8].try_into().unwrap_or([1; 8])) | 1);
                let mut v: Vec<f32> = (0..384)
                    .map(|_| (r.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
                    .collect();
                osmoda_memory::embed::normalize(&mut v);
                v
            })
            .collect())
    }
}
const QUERIES: usize = 200;

/// xorshift64*: deterministic data without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[self.below(xs.len())]
    }
}

const SERVICES: &[&str] = &[
    "nginx",
    "postgresql",
    "redis",
    "sshd",
    "grafana",
    "prometheus",
    "caddy",
    "mysql",
    "docker",
    "containerd",
    "openclaw-gateway",
    "osmoda-agentd",
    "nextcloud",
    "gitea",
    "minio",
    "rabbitmq",
    "elasticsearch",
    "haproxy",
    "bind",
    "dovecot",
    "postfix",
    "cron",
];
const REASONS: &[&str] = &[
    "the TLS certificate had expired",
    "the disk was full",
    "out of memory, the kernel killed it",
    "a syntax error in the configuration",
    "port 443 was already in use",
    "the database connection pool was exhausted",
    "permission denied on its state directory",
    "a dependency did not start in time",
    "segmentation fault after the last upgrade",
    "DNS resolution of the upstream failed",
];
const MOUNTS: &[&str] = &[
    "/", "/var", "/var/lib", "/home", "/srv", "/nix", "/tmp", "/boot",
];
const OPTIONS: &[&str] = &[
    "services.nginx.recommendedTlsSettings",
    "services.postgresql.settings.max_connections",
    "networking.firewall.allowedTCPPorts",
    "services.openssh.settings.PasswordAuthentication",
    "nix.gc.automatic",
    "boot.kernel.sysctl.\"vm.swappiness\"",
    "time.timeZone",
    "services.redis.servers.main.maxmemory",
];
const PREFS: &[&str] = &[
    "prefers short answers",
    "wants metric units",
    "does not want restarts during office hours",
    "wants a daily summary at 08:00",
    "prefers Caddy over nginx for new sites",
    "asks to keep at least 20 percent free disk",
    "wants to approve every package removal",
    "reads reports in German",
];
const USERS: &[&str] = &["alice", "bob", "carol", "deploy", "backup", "root"];

fn host(r: &mut Rng) -> String {
    let kinds = ["web", "db", "cache", "mail", "build", "edge"];
    format!("{}-{}", kinds[r.below(kinds.len())], 1 + r.below(40))
}

/// One synthetic event: (type, unit, text).
fn event(r: &mut Rng) -> (String, Option<String>, String) {
    let h = host(r);
    let svc = r.pick(SERVICES);
    let n = 1 + r.below(500);
    match r.below(10) {
        0 => (
            "service.failed".into(),
            Some(format!("{svc}.service")),
            format!(
                "{svc} failed on {h}: {}. Restarted after {n} s.",
                r.pick(REASONS)
            ),
        ),
        1 => (
            "disk.usage".into(),
            None,
            format!(
                "{} on {h} at {}% used; the largest directory is {}/{}.",
                r.pick(MOUNTS),
                70 + r.below(30),
                r.pick(MOUNTS),
                svc
            ),
        ),
        2 => (
            "config.changed".into(),
            None,
            format!(
                "Set {} on {h} to {n} because {}.",
                r.pick(OPTIONS),
                r.pick(REASONS)
            ),
        ),
        3 => (
            "backup.finished".into(),
            Some("restic-backups.service".into()),
            format!(
                "Backup of /var/lib/{svc} on {h} finished in {} min, {} GB.",
                1 + r.below(90),
                1 + r.below(400)
            ),
        ),
        4 => (
            "cert.renewed".into(),
            Some("acme.service".into()),
            format!(
                "TLS certificate for {svc}.example{}.org renewed on {h}; it expires in 90 days.",
                r.below(50)
            ),
        ),
        5 => (
            "switch.committed".into(),
            None,
            format!("Generation {n} deployed to {h}: {svc} updated and its health checks passed."),
        ),
        6 => (
            "login".into(),
            Some("sshd.service".into()),
            format!(
                "{} logged in over ssh from 10.0.{}.{} on {h}.",
                r.pick(USERS),
                r.below(255),
                r.below(255)
            ),
        ),
        7 => (
            "package.updated".into(),
            None,
            format!(
                "Updated {svc} from {}.{} to {}.{} on {h}.",
                r.below(20),
                r.below(10),
                r.below(20),
                10 + r.below(10)
            ),
        ),
        8 => (
            "conversation".into(),
            None,
            format!("The owner {}.", r.pick(PREFS)),
        ),
        _ => (
            "alert".into(),
            Some(format!("{svc}.service")),
            format!(
                "CPU load of {svc} on {h} above {}% for {} min.",
                80 + r.below(20),
                1 + r.below(60)
            ),
        ),
    }
}

fn query(r: &mut Rng) -> String {
    let h = host(r);
    let svc = r.pick(SERVICES);
    match r.below(8) {
        0 => format!("why did {svc} crash on {h}"),
        1 => format!("which disk was almost full on {h}"),
        2 => format!("when was the certificate for {svc} renewed"),
        3 => format!("what changed in the configuration of {h}"),
        4 => format!("how long does the backup of {svc} take"),
        5 => format!("who logged in to {h}"),
        6 => "what does the owner prefer".to_string(),
        _ => format!("{svc} high CPU"),
    }
}

/// Day `d` (0-based) of the synthetic year as (Unix seconds at midnight, `YYYY-MM-DD`). The
/// year is the 365 days before today: ingest refuses events more than a day ahead, and a
/// fixed year ran into the future (session 11: the bench stopped at its first ingest).
fn day(d: usize) -> (i64, String) {
    let first = time::OffsetDateTime::now_utc().date() - time::Duration::days(365);
    let date = first + time::Duration::days(d as i64);
    let ts = date.midnight().assume_utc().unix_timestamp();
    (ts, format!("{date}"))
}

fn rfc3339(ts: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ts).expect("time");
    t.format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

/// Write `n` events as daily notes over 365 days, in the format `Memory::ingest` writes.
fn write_notes(dir: &Path, n: usize, r: &mut Rng) -> anyhow::Result<()> {
    let daily = dir.join("memory");
    std::fs::create_dir_all(&daily)?;
    let per_day = n.div_ceil(365);
    let mut written = 0;
    for d in 0..365 {
        let (ts0, name) = day(d);
        let mut s = format!("# {name}\n");
        for i in 0..per_day.min(n - written) {
            let (kind, unit, text) = event(r);
            let ts = ts0 + (i as i64 * 86_400) / per_day as i64;
            let heading = match &unit {
                Some(u) => format!("{kind} ({u})"),
                None => kind.clone(),
            };
            let mut meta = format!("at: {} · source: ledger · host: {}", rfc3339(ts), host(r));
            if let Some(u) = &unit {
                meta.push_str(&format!(" · unit: {u}"));
            }
            s.push_str(&format!("\n## {heading}\n{meta}\n\n{text}\n"));
            written += 1;
        }
        std::fs::write(daily.join(format!("{name}.md")), s)?;
        if written == n {
            break;
        }
    }
    Ok(())
}

/// The 1/5/15-minute load averages (the machine is shared: figures depend on them).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn rss_mib() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[cfg(feature = "candle")]
fn model_dir(arg: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(d) = arg.or_else(|| std::env::var_os("OSMODA_MEMORY_MODEL_DIR").map(PathBuf::from))
    {
        return Ok(d);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch-memory-model");
    let out = std::process::Command::new(&script)
        .output()
        .context("fetch-memory-model")?;
    if !out.status.success() {
        bail!(
            "fetch-memory-model: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()))
}

#[cfg(feature = "candle")]
fn local_model(dir: Option<PathBuf>) -> anyhow::Result<Arc<dyn Embedder>> {
    Ok(Arc::new(osmoda_memory::LocalModel::load(&model_dir(dir)?)?))
}

#[cfg(not(feature = "candle"))]
fn local_model(_: Option<PathBuf>) -> anyhow::Result<Arc<dyn Embedder>> {
    bail!("built without the candle feature: use --synthetic or --endpoint URL")
}

fn write_f32(path: &Path, rows: &[Vec<f32>]) -> anyhow::Result<()> {
    let bytes: Vec<u8> = rows
        .iter()
        .flatten()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    std::fs::write(path, bytes).with_context(|| path.display().to_string())
}

fn main() -> anyhow::Result<()> {
    let mut sizes = vec![10_000usize, 100_000];
    let (mut model, mut keep, mut export, mut synthetic) = (None, None, None, false);
    let mut endpoint: Option<String> = None;
    let mut ingested = INGESTED;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--sizes" => {
                sizes = val()?
                    .split(',')
                    .map(|s| s.trim().parse())
                    .collect::<Result<_, _>>()
                    .context("--sizes: numbers separated by commas")?
            }
            "--model" => model = Some(PathBuf::from(val()?)),
            "--keep" => keep = Some(PathBuf::from(val()?)),
            "--export" => export = Some(PathBuf::from(val()?)),
            "--endpoint" => endpoint = Some(val()?),
            "--synthetic" => synthetic = true,
            "--ingest" => ingested = val()?.parse().context("--ingest: a number")?,
            _ => bail!("unknown argument {a:?}; see the example's doc comment"),
        }
    }
    if ingested == 0 || sizes.iter().any(|&n| n <= ingested) {
        bail!("each size must exceed the {ingested} ingested events (at least 1)");
    }
    println!("load average at start: {}", loadavg());
    let rss0 = rss_mib();
    let t = Instant::now();
    let emb: Arc<dyn Embedder> = if synthetic {
        println!("synthetic embedder (no model): figures are of the index and search only");
        Arc::new(Synthetic)
    } else if let Some(url) = &endpoint {
        println!("embedding through {url} (the HTTP backend)");
        Arc::new(HttpEmbedder::new(url, "all-MiniLM-L6-v2")?)
    } else {
        local_model(model)?
    };
    println!(
        "embedder ready in {:.2} s; RSS {rss0:.1} MiB before, {:.1} MiB after",
        t.elapsed().as_secs_f64(),
        rss_mib()
    );
    let tmp = tempfile::tempdir()?;
    for &n in &sizes {
        let dir = keep
            .clone()
            .unwrap_or_else(|| tmp.path().to_path_buf())
            .join(n.to_string());
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        let mut r = Rng(0x9E37_79B9_7F4A_7C15 ^ n as u64);
        write_notes(&dir, n - ingested, &mut r)?;
        let t = Instant::now();
        let mem = Memory::open(Options::new(&dir), Some(emb.clone()), None)?;
        let bulk = t.elapsed().as_secs_f64();
        let h = mem.health()?;
        println!(
            "[{n}] bulk index: {} chunks in {bulk:.1} s = {:.0} chunks/s (chunk + FTS5 + embed, batches of 64)",
            h.collection_size,
            h.collection_size as f64 / bulk
        );
        let t = Instant::now();
        let mut each = Vec::with_capacity(ingested);
        for i in 0..ingested {
            let (kind, unit, text) = event(&mut r);
            let (ts0, _) = day(300 + i % 60);
            let ev: IngestEvent = serde_json::from_value(serde_json::json!({
                "type": kind, "unit": unit, "text": text, "source": "ledger",
                "host": host(&mut r), "ts": ts0 + (i as i64 * 37) % 86_400,
            }))?;
            let t = Instant::now();
            mem.ingest(&ev)?;
            each.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        let ing = t.elapsed().as_secs_f64();
        each.sort_by(f64::total_cmp);
        let h = mem.health()?;
        println!(
            "[{n}] ingest one by one: {ingested} events in {ing:.1} s = {:.1} chunks/s ({:.1} ms each, p50 {:.1} ms, p99 {:.1} ms: atomic append + fsync, index, embed); index now {} chunks, {} pending",
            ingested as f64 / ing,
            ing * 1000.0 / ingested as f64,
            pct(&each, 0.5),
            pct(&each, 0.99),
            h.collection_size,
            h.pending_vectors
        );
        let qs: Vec<String> = (0..QUERIES).map(|_| query(&mut r)).collect();
        // Unique queries so the first pass embeds each one.
        let qs: Vec<String> = qs
            .iter()
            .enumerate()
            .map(|(i, q)| format!("{q} ({i})"))
            .collect();
        for pass in ["cold (query embedded)", "cached query vector"] {
            let mut ms = Vec::new();
            for q in &qs {
                let t = Instant::now();
                let res = mem.recall(&RecallRequest {
                    query: q.clone(),
                    max_results: Some(8),
                    timeframe: None,
                })?;
                ms.push(t.elapsed().as_secs_f64() * 1000.0);
                assert_eq!(res.mode, "hybrid");
            }
            ms.sort_by(f64::total_cmp);
            println!(
                "[{n}] recall, {pass}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                pct(&ms, 0.5),
                pct(&ms, 0.99),
                ms[ms.len() - 1]
            );
        }
        println!(
            "[{n}] RSS {:.1} MiB (model loaded, index open); load average {}",
            rss_mib(),
            loadavg()
        );
        if let Some(out) = &export {
            std::fs::create_dir_all(out)?;
            let conn = rusqlite::Connection::open(dir.join(".index.sqlite"))?;
            let mut stmt =
                conn.prepare("SELECT vec FROM chunks WHERE vec IS NOT NULL ORDER BY id")?;
            let rows: Vec<Vec<f32>> = stmt
                .query_map([], |r| r.get::<_, Vec<u8>>(0))?
                .map(|b| {
                    b.map(|b| {
                        b.chunks_exact(4)
                            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                            .collect()
                    })
                })
                .collect::<Result<_, _>>()?;
            let qv = emb.embed(&qs)?;
            write_f32(&out.join(format!("vectors-{n}.f32")), &rows)?;
            write_f32(&out.join(format!("queries-{n}.f32")), &qv)?;
            println!(
                "[{n}] exported {} vectors and {} queries to {}",
                rows.len(),
                qv.len(),
                out.display()
            );
        }
        drop(mem);
    }
    Ok(())
}
