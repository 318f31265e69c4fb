//! `GET /health`: CPU, memory, disk, load and uptime from /proc and statvfs.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use serde::Serialize;

use crate::error::ApiError;
use crate::AppState;

/// Cumulative CPU jiffies from the first line of /proc/stat.
#[derive(Clone, Copy, Debug)]
pub struct CpuSample {
    busy: u64,
    total: u64,
}

/// Parse the aggregate `cpu` line of /proc/stat.
pub fn parse_cpu(stat: &str) -> Option<CpuSample> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 4 {
        return None;
    }
    let total: u64 = v.iter().take(8).sum();
    let idle = v[3] + v.get(4).copied().unwrap_or(0);
    Some(CpuSample {
        busy: total - idle,
        total,
    })
}

fn read_cpu() -> Result<CpuSample, ApiError> {
    let s = std::fs::read_to_string("/proc/stat").map_err(ApiError::internal)?;
    parse_cpu(&s).ok_or_else(|| ApiError::internal("unexpected /proc/stat format"))
}

/// Parse `Key: value kB` lines of /proc/meminfo into bytes.
pub fn meminfo(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.split(':').next() == Some(key))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU utilisation since the previous sample.
#[derive(Debug, Serialize)]
pub struct Cpu {
    /// Busy share of all cores, 0–100.
    pub usage_percent: f64,
    /// Online cores.
    pub cores: usize,
}

/// Memory figures.
#[derive(Debug, Serialize)]
pub struct Ram {
    /// MemTotal.
    pub total_bytes: u64,
    /// MemAvailable.
    pub available_bytes: u64,
    /// Share in use, 0–100.
    pub used_percent: f64,
}

/// Usage of one filesystem.
#[derive(Debug, Serialize)]
pub struct Disk {
    /// Mount point measured.
    pub path: String,
    /// Size.
    pub total_bytes: u64,
    /// Available to unprivileged users.
    pub available_bytes: u64,
    /// Share in use, 0–100.
    pub used_percent: f64,
}

/// Response of `GET /health`.
#[derive(Debug, Serialize)]
pub struct Health {
    /// CPU.
    pub cpu: Cpu,
    /// Memory.
    pub ram: Ram,
    /// Root filesystem.
    pub disk: Disk,
    /// 1, 5 and 15 minute load averages.
    pub load: [f64; 3],
    /// Seconds since boot.
    pub uptime: f64,
    /// What is wrong with osModa itself (absent when nothing): e.g. a ledger that disagrees
    /// with its newest signed checkpoint.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<String>,
}

/// Usage of the filesystem holding `path`.
///
/// # Errors
/// Fails when statvfs fails (e.g. the path does not exist).
pub fn disk_usage(path: &str) -> Result<Disk, ApiError> {
    let s = nix::sys::statvfs::statvfs(path)
        .map_err(|e| ApiError::bad_request(format!("cannot stat filesystem at {path}: {e}")))?;
    let frag = s.fragment_size();
    let total = s.blocks() * frag;
    let avail = s.blocks_available() * frag;
    let free = s.blocks_free() * frag;
    let used = total.saturating_sub(free);
    // Same formula as df: used / (used + available to users).
    let pct = if used + avail == 0 {
        0.0
    } else {
        100.0 * used as f64 / (used + avail) as f64
    };
    Ok(Disk {
        path: path.to_string(),
        total_bytes: total,
        available_bytes: avail,
        used_percent: round(pct),
    })
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

/// `GET /health`
pub async fn health(State(st): State<Arc<AppState>>) -> Result<axum::Json<Health>, ApiError> {
    let prev = st.cpu.lock().map_err(ApiError::internal)?.take();
    let prev = match prev {
        Some(p) => p,
        None => {
            let first = read_cpu()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
            first
        }
    };
    let now = read_cpu()?;
    *st.cpu.lock().map_err(ApiError::internal)? = Some(now);
    let dt = now.total.saturating_sub(prev.total);
    let usage = if dt == 0 {
        0.0
    } else {
        100.0 * now.busy.saturating_sub(prev.busy) as f64 / dt as f64
    };

    let mem = std::fs::read_to_string("/proc/meminfo").map_err(ApiError::internal)?;
    let total = meminfo(&mem, "MemTotal").unwrap_or(0);
    let avail = meminfo(&mem, "MemAvailable").unwrap_or(0);
    let loadavg = std::fs::read_to_string("/proc/loadavg").map_err(ApiError::internal)?;
    let l: Vec<f64> = loadavg
        .split_whitespace()
        .take(3)
        .filter_map(|x| x.parse().ok())
        .collect();
    let uptime = std::fs::read_to_string("/proc/uptime").map_err(ApiError::internal)?;
    Ok(axum::Json(Health {
        cpu: Cpu {
            usage_percent: round(usage),
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        },
        ram: Ram {
            total_bytes: total,
            available_bytes: avail,
            used_percent: if total == 0 {
                0.0
            } else {
                round(100.0 * (total - avail) as f64 / total as f64)
            },
        },
        disk: disk_usage("/")?,
        load: [
            l.first().copied().unwrap_or(0.0),
            l.get(1).copied().unwrap_or(0.0),
            l.get(2).copied().unwrap_or(0.0),
        ],
        uptime: uptime
            .split_whitespace()
            .next()
            .and_then(|x| x.parse().ok())
            .unwrap_or(0.0),
        degraded: st
            .checkpoints
            .as_ref()
            .and_then(|c| c.tampered())
            .map(|t| format!("ledger: {t}; agentd does not sign checkpoints"))
            .into_iter()
            .chain(crate::backup::restore::pending(&st.state_dir).map(|p| format!("backup: {p}")))
            .chain(
                st.witness_off
                    .lock()
                    .ok()
                    .and_then(|w| w.clone())
                    .map(|w| format!("witness: {w}; this machine's checkpoints are not cosigned and it cosigns no peer")),
            )
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_stat_and_meminfo() {
        let s = parse_cpu("cpu  10 0 10 70 10 0 0 0 0 0\ncpu0 1 2 3 4\n").expect("cpu line");
        assert_eq!((s.busy, s.total), (20, 100));
        assert!(parse_cpu("intr 1 2 3").is_none());
        let m = "MemTotal:       1000 kB\nMemAvailable:    250 kB\n";
        assert_eq!(meminfo(m, "MemTotal"), Some(1_024_000));
        assert_eq!(meminfo(m, "MemAvailable"), Some(256_000));
        assert_eq!(meminfo(m, "Mem"), None);
    }
}
