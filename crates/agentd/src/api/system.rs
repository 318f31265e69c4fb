//! `POST /system/query`: structured, read-only views of the running system.

use std::path::Path;

use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::error::{ApiError, Json};

/// The queries `/system/query` understands.
pub const QUERIES: &[&str] = &[
    "processes",
    "services",
    "network",
    "disk",
    "users",
    "kernel",
    "generations",
    "service",
    "journal",
];

/// Body of `POST /system/query`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryBody {
    /// One of [`QUERIES`].
    pub query: String,
    /// Query-specific arguments.
    #[serde(default)]
    pub args: Value,
}

fn args<T: DeserializeOwned + Default>(query: &str, v: Value) -> Result<T, ApiError> {
    if v.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(v).map_err(|e| {
        ApiError::bad_request(format!("invalid args for `{query}`: {e}"))
            .with_detail(json!({ "hint": "see docs/api.md for each query's args" }))
    })
}

fn unavailable(msg: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, msg)
}

/// `POST /system/query`
pub async fn query(Json(body): Json<QueryBody>) -> Result<axum::Json<Value>, ApiError> {
    let q = body.query.as_str();
    let out = match q {
        "processes" => to_value(processes(args(q, body.args)?)?),
        "services" => services(args(q, body.args)?).await?,
        "network" => {
            args::<Empty>(q, body.args)?;
            network()?
        }
        "disk" => {
            args::<Empty>(q, body.args)?;
            to_value(disks()?)
        }
        "users" => {
            args::<Empty>(q, body.args)?;
            to_value(users()?)
        }
        "kernel" => kernel(args(q, body.args)?)?,
        "service" => super::units::service(args(q, body.args)?).await?,
        "journal" => super::units::journal(args(q, body.args)?).await?,
        "generations" => {
            args::<Empty>(q, body.args)?;
            generations(Path::new("/nix/var/nix/profiles"))?
        }
        other => {
            return Err(ApiError::bad_request(format!("unknown query `{other}`"))
                .with_detail(json!({ "valid": QUERIES })))
        }
    };
    Ok(axum::Json(out))
}

fn to_value<T: Serialize>(v: T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// No arguments accepted.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Empty {}

/// Arguments of `processes`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessArgs {
    /// `cpu` (default) or `memory`.
    pub sort: Option<String>,
    /// How many (default 10, at most 500).
    pub limit: Option<usize>,
}

/// One process.
#[derive(Debug, Serialize)]
pub struct Process {
    /// Process id.
    pub pid: i32,
    /// Command name.
    pub name: String,
    /// Full command line.
    pub cmdline: String,
    /// Real uid.
    pub uid: u32,
    /// Average CPU share since the process started, percent of one core.
    pub cpu_percent: f64,
    /// Resident memory.
    pub rss_bytes: u64,
}

fn sysconf(var: nix::unistd::SysconfVar, fallback: i64) -> u64 {
    nix::unistd::sysconf(var)
        .ok()
        .flatten()
        .unwrap_or(fallback)
        .max(1) as u64
}

fn read_process(pid: i32, hz: f64, page: u64, uptime: f64) -> Option<Process> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: split at the last ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1.to_string();
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime=14, stime=15, starttime=22, rss=24 (1-based).
    let num = |i: usize| {
        f.get(i - 3)
            .and_then(|x| x.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let cpu_secs = (num(14) + num(15)) as f64 / hz;
    let elapsed = (uptime - num(22) as f64 / hz).max(0.01);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|u| u.parse().ok())
        .unwrap_or(u32::MAX);
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default();
    Some(Process {
        pid,
        name,
        cmdline,
        uid,
        cpu_percent: (1000.0 * cpu_secs / elapsed).round() / 10.0,
        rss_bytes: num(24) * page,
    })
}

/// Top processes by CPU or memory.
///
/// # Errors
/// Bad `sort`/`limit`, or /proc unreadable.
pub fn processes(a: ProcessArgs) -> Result<Vec<Process>, ApiError> {
    let limit = a.limit.unwrap_or(10);
    if limit == 0 || limit > 500 {
        return Err(ApiError::bad_request("`limit` must be between 1 and 500"));
    }
    let by_mem = match a.sort.as_deref() {
        None | Some("cpu") => false,
        Some("memory") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "`sort` must be `cpu` or `memory`, not `{other}`"
            )))
        }
    };
    let hz = sysconf(nix::unistd::SysconfVar::CLK_TCK, 100) as f64;
    let page = sysconf(nix::unistd::SysconfVar::PAGE_SIZE, 4096);
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .map_err(ApiError::internal)?
        .split_whitespace()
        .next()
        .and_then(|x| x.parse().ok())
        .unwrap_or(0.0);
    let mut out: Vec<Process> = std::fs::read_dir("/proc")
        .map_err(ApiError::internal)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| read_process(pid, hz, page, uptime))
        .collect();
    if by_mem {
        out.sort_by_key(|p| std::cmp::Reverse(p.rss_bytes));
    } else {
        out.sort_by(|a, b| b.cpu_percent.total_cmp(&a.cpu_percent));
    }
    out.truncate(limit);
    Ok(out)
}

/// Arguments of `services`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceArgs {
    /// Only units in this state (`active`, `failed`, ...).
    pub state: Option<String>,
}

async fn services(a: ServiceArgs) -> Result<Value, ApiError> {
    if !Path::new("/run/systemd/system").exists() {
        return Err(unavailable(
            "services are unavailable here: systemd is not running on this machine",
        )
        .with_detail(json!({ "hint": "on NixOS this lists systemd units" })));
    }
    let mut cmd = tokio::process::Command::new("systemctl");
    cmd.args([
        "list-units",
        "--type=service",
        "--all",
        "--output=json",
        "--no-pager",
    ]);
    if let Some(s) = &a.state {
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            return Err(ApiError::bad_request(
                "`state` must be a systemd unit state such as `failed`",
            ));
        }
        cmd.arg(format!("--state={s}"));
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| unavailable(format!("cannot run systemctl: {e}")))?;
    if !out.status.success() {
        return Err(unavailable(format!(
            "systemctl failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    serde_json::from_slice(&out.stdout).map_err(ApiError::internal)
}

/// A listening socket from /proc/net.
#[derive(Debug, Serialize, PartialEq)]
pub struct Listener {
    /// `tcp`, `tcp6`, `udp` or `udp6`.
    pub proto: &'static str,
    /// Local address.
    pub address: String,
    /// Local port.
    pub port: u16,
}

/// Parse a /proc/net/{tcp,udp}[6] table, keeping sockets in `state` (hex, e.g. `0A` = LISTEN).
pub fn parse_proc_net(text: &str, proto: &'static str, state: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.get(3)? != &state {
                return None;
            }
            let (addr, port) = f.get(1)?.split_once(':')?;
            let port = u16::from_str_radix(port, 16).ok()?;
            let address = match addr.len() {
                8 => std::net::Ipv4Addr::from(u32::from_str_radix(addr, 16).ok()?.swap_bytes())
                    .to_string(),
                32 => {
                    let mut b = [0u8; 16];
                    for (i, chunk) in b.chunks_mut(4).enumerate() {
                        let word = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
                        chunk.copy_from_slice(&word.swap_bytes().to_be_bytes());
                    }
                    std::net::Ipv6Addr::from(b).to_string()
                }
                _ => return None,
            };
            Some(Listener {
                proto,
                address,
                port,
            })
        })
        .collect()
}

fn network() -> Result<Value, ApiError> {
    let mut ifaces: std::collections::BTreeMap<String, Value> = Default::default();
    for ifa in nix::ifaddrs::getifaddrs().map_err(ApiError::internal)? {
        let entry = ifaces.entry(ifa.interface_name.clone()).or_insert_with(|| {
            json!({ "name": ifa.interface_name, "up": ifa.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP), "addresses": [] })
        });
        let addr = ifa.address.as_ref().and_then(|a| {
            a.as_sockaddr_in()
                .map(|s| s.ip().to_string())
                .or_else(|| a.as_sockaddr_in6().map(|s| s.ip().to_string()))
        });
        if let (Some(addr), Some(list)) = (
            addr,
            entry.get_mut("addresses").and_then(Value::as_array_mut),
        ) {
            list.push(Value::String(addr));
        }
    }
    let mut listening = Vec::new();
    for (file, proto, state) in [
        ("tcp", "tcp", "0A"),
        ("tcp6", "tcp6", "0A"),
        ("udp", "udp", "07"),
        ("udp6", "udp6", "07"),
    ] {
        if let Ok(text) = std::fs::read_to_string(format!("/proc/net/{file}")) {
            listening.extend(parse_proc_net(&text, proto, state));
        }
    }
    Ok(json!({ "interfaces": ifaces.into_values().collect::<Vec<_>>(), "listening": listening }))
}

fn disks() -> Result<Vec<Value>, ApiError> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").map_err(ApiError::internal)?;
    let mut out = Vec::new();
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let (Some(dev), Some(mnt), Some(fstype)) = (f.first(), f.get(1), f.get(2)) else {
            continue;
        };
        let mnt = mnt.replace("\\040", " ");
        if let Ok(d) = super::health::disk_usage(&mnt) {
            if d.total_bytes > 0 {
                out.push(json!({ "device": dev, "mount": mnt, "fstype": fstype,
                    "total_bytes": d.total_bytes, "available_bytes": d.available_bytes, "used_percent": d.used_percent }));
            }
        }
    }
    Ok(out)
}

fn users() -> Result<Vec<Value>, ApiError> {
    let passwd = std::fs::read_to_string("/etc/passwd").map_err(ApiError::internal)?;
    Ok(passwd
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            let uid: u32 = f.get(2)?.parse().ok()?;
            Some(
                json!({ "name": f[0], "uid": uid, "gid": f.get(3)?.parse::<u32>().ok()?,
                "home": f.get(5)?, "shell": f.get(6)?, "system": !(1000..65534).contains(&uid) }),
            )
        })
        .collect())
}

/// Arguments of `kernel`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelArgs {
    /// sysctl keys such as `net.ipv4.ip_forward`; a default set when absent.
    pub keys: Option<Vec<String>>,
}

const DEFAULT_SYSCTLS: &[&str] = &[
    "kernel.osrelease",
    "kernel.hostname",
    "net.ipv4.ip_forward",
    "vm.swappiness",
    "fs.file-max",
];

/// Map a sysctl key to its /proc/sys path, refusing anything that could escape it.
pub fn sysctl_path(key: &str) -> Result<String, ApiError> {
    let ok = !key.is_empty()
        && key.len() <= 200
        && key.split('.').all(|p| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b))
        });
    if !ok {
        return Err(ApiError::bad_request(format!("invalid sysctl key `{key}`"))
            .with_detail(json!({ "hint": "dotted names such as net.ipv4.ip_forward" })));
    }
    Ok(format!("/proc/sys/{}", key.replace('.', "/")))
}

fn kernel(a: KernelArgs) -> Result<Value, ApiError> {
    let keys: Vec<String> = a
        .keys
        .unwrap_or_else(|| DEFAULT_SYSCTLS.iter().map(|s| s.to_string()).collect());
    let mut values = serde_json::Map::new();
    for key in keys {
        let path = sysctl_path(&key)?;
        let v = match std::fs::read_to_string(&path) {
            Ok(s) => Value::String(s.trim().to_string()),
            Err(e) => json!({ "error": format!("cannot read {path}: {e}") }),
        };
        values.insert(key, v);
    }
    Ok(json!({ "sysctl": values }))
}

/// NixOS system generations from `<profiles>/system-<n>-link`.
///
/// # Errors
/// 503 when there is no NixOS system profile (not NixOS).
pub fn generations(profiles: &Path) -> Result<Value, ApiError> {
    let entries = std::fs::read_dir(profiles).map_err(|_| {
        unavailable("NixOS system generations are unavailable here: no /nix/var/nix/profiles")
            .with_detail(json!({ "hint": "config generations: GET /config/generations" }))
    })?;
    let current = std::fs::read_link(profiles.join("system")).ok();
    let mut out: Vec<Value> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let name = e.file_name().to_string_lossy().to_string();
            let n: u64 = name
                .strip_prefix("system-")?
                .strip_suffix("-link")?
                .parse()
                .ok()?;
            let target = std::fs::read_link(e.path()).ok()?;
            let created = e.path().symlink_metadata().ok()?.modified().ok()?;
            let created = time::OffsetDateTime::from(created)
                .format(&time::format_description::well_known::Rfc3339)
                .ok()?;
            Some(
                json!({ "generation": n, "store_path": target, "created": created,
                "current": current.as_deref() == Some(Path::new(&name)) }),
            )
        })
        .collect();
    out.sort_by_key(|g| g["generation"].as_u64());
    Ok(Value::Array(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_net_tables() {
        let tcp = "  sl  local_address rem_address   st\n   0: 0100007F:1F90 00000000:0000 0A 0\n   1: 0100007F:0050 0200007F:1234 01 0\n";
        assert_eq!(
            parse_proc_net(tcp, "tcp", "0A"),
            vec![Listener {
                proto: "tcp",
                address: "127.0.0.1".into(),
                port: 8080
            }]
        );
        let tcp6 = "hdr\n 0: 00000000000000000000000001000000:0016 00000000000000000000000000000000:0000 0A\n";
        assert_eq!(parse_proc_net(tcp6, "tcp6", "0A")[0].address, "::1");
    }

    #[test]
    fn sysctl_keys_cannot_escape_proc_sys() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").ok().as_deref(),
            Some("/proc/sys/net/ipv4/ip_forward")
        );
        for bad in [
            "",
            "../etc/shadow",
            "net..x",
            "a/b",
            "net.ipv4.ip_forward/..",
            ".x",
        ] {
            assert!(sysctl_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn generations_lists_profile_links() {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in [1, 2] {
            std::os::unix::fs::symlink(
                format!("/nix/store/x-system-{n}"),
                dir.path().join(format!("system-{n}-link")),
            )
            .expect("link");
        }
        std::os::unix::fs::symlink("system-2-link", dir.path().join("system")).expect("link");
        let g = generations(dir.path()).expect("generations");
        assert_eq!(g.as_array().map(Vec::len), Some(2));
        assert_eq!(g[1]["current"], json!(true));
        assert_eq!(g[0]["current"], json!(false));
        assert!(generations(&dir.path().join("missing")).is_err());
    }
}
