//! `POST /sandbox/exec`: run an untrusted tool in a Ring 2 or Ring 1 sandbox
//! (`osmoda_sandbox::ring`, DESIGN.md §1).
//!
//! Without `capabilities` the command runs in Ring 2: an empty root with only the software, no
//! network but its own loopback (and no inet socket at all), no secrets, seccomp, no
//! capabilities, limits. With `capabilities` (names or narrowings of
//! `services.osmoda.egress.capabilities`, as for `/capability/mint`) it runs in Ring 1: agentd
//! mints a token for exactly those grants that lives as long as the command may, and the
//! command reaches the network only through osmoda-egress (its relay inside the sandbox,
//! `HTTPS_PROXY` set), which allows only the granted domains and ports.
//!
//! Every call is one ledger event `sandbox.exec` (argv, ring, grants and token id, limits and
//! how they were enforced, exit, duration, output sizes and SHA-256), recorded after the
//! command ended; never the token, never environment values.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use osmoda_sandbox::{Bind, Boundary, Exit, Limits, Network, RingSpec};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::capability::{egress_config, grants, mint_checked, Permissions};
use crate::error::{ApiError, Json};
use crate::peer::Caller;
use crate::AppState;

/// Longest time budget, seconds.
pub const MAX_TIMEOUT_SECS: u64 = 600;
/// Default and largest memory budget, MiB.
pub const DEFAULT_MEMORY_MB: u64 = 512;
/// See [`DEFAULT_MEMORY_MB`].
pub const MAX_MEMORY_MB: u64 = 8192;
/// Default and largest number of tasks (processes and threads) at once.
pub const DEFAULT_MAX_TASKS: u64 = 128;
/// See [`DEFAULT_MAX_TASKS`].
pub const MAX_TASKS: u64 = 4096;
/// Bytes of stdout and of stderr returned (the rest is read and dropped; `truncated` says so).
pub const OUTPUT_LIMIT: usize = 64 * 1024;
/// Largest `stdin`, bytes.
pub const STDIN_LIMIT: usize = 512 * 1024;
/// Where osmoda-egress accepts CONNECT on a Unix socket by default (its `--proxy-socket`).
pub const DEFAULT_PROXY_SOCKET: &str = "/run/osmoda/egress-proxy.sock";

/// Body of `POST /sandbox/exec`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxBody {
    /// Program and arguments, no shell.
    pub argv: Option<Vec<String>>,
    /// A shell command line, run as `/bin/sh -c <command>`.
    pub command: Option<String>,
    /// Egress capabilities (as `/capability/mint`'s `permissions`); absent or empty: Ring 2.
    pub capabilities: Option<Permissions>,
    /// Time budget in seconds (1..=600); the whole sandbox is killed when it ends.
    pub timeout_sec: u64,
    /// Memory budget in MiB (16..=8192, default 512).
    pub memory_mb: Option<u64>,
    /// Tasks (processes and threads) at once (8..=4096, default 128).
    pub max_tasks: Option<u64>,
    /// Environment besides `PATH`, `HOME`, `USER`, `LOGNAME` and the proxy variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory inside the sandbox (absolute; default `/tmp`, which is empty).
    pub cwd: Option<String>,
    /// Text fed to standard input, then closed (at most [`STDIN_LIMIT`] bytes).
    pub stdin: Option<String>,
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn is_empty(p: &Permissions) -> bool {
    match p {
        Permissions::Names(n) => n.is_empty(),
        Permissions::Map(m) => m.is_empty(),
    }
}

/// The `osmoda-egress` binary whose `relay` runs inside Ring 1: `--egress-bin`, else next to
/// agentd's own binary, else the first on `PATH`.
fn relay_bin(st: &AppState) -> Option<PathBuf> {
    if let Some(p) = &st.settings.egress_bin {
        return Some(p.clone());
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("osmoda-egress")));
    let path = std::env::var_os("PATH").unwrap_or_default();
    beside
        .into_iter()
        .chain(std::env::split_paths(&path).map(|d| d.join("osmoda-egress")))
        .find(|p| p.is_file())
}

/// The filesystem binds the granted capabilities declare (`readOnlyPaths`, `writablePaths`),
/// judged like `/system/exec`'s paths: existing, resolved, never agentd's state or a hidden
/// path, nothing a ring sandbox never shows; writable ones never the configuration tree or
/// login files. A bad declaration is the operator's to fix: 403 naming the capability,
/// nothing runs.
async fn declared_binds<'a>(
    st: &AppState,
    cfg: &osmoda_config::EgressConfig,
    names: impl Iterator<Item = &'a String>,
) -> Result<Vec<Bind>, ApiError> {
    let fence = super::fs::Fence::of(st).with_tree_homes(st).await;
    let mut binds = Vec::new();
    for name in names {
        let Some(c) = cfg.capabilities.get(name) else {
            continue;
        };
        let named = |e: ApiError| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                format!("services.osmoda.egress.capabilities.{name}: {}", e.error),
            )
        };
        for p in &c.read_only_paths {
            let real = super::fs::checked_path(p)
                .and_then(|p| {
                    p.canonicalize()
                        .map_err(|e| ApiError::bad_request(format!("{}: {e}", p.display())))
                })
                .map_err(named)?;
            fence.check(&real, false).map_err(named)?;
            ring_bindable(&real).map_err(named)?;
            binds.push(Bind {
                path: real,
                writable: false,
            });
        }
        for p in &c.writable_paths {
            // The sandbox opens the resolved path again, refusing a symlink on it, and binds
            // that descriptor (`osmoda_sandbox::Pinned`).
            let real = super::exec::writable_path(&fence, p)
                .map_err(named)?
                .path()
                .to_path_buf();
            ring_bindable(&real).map_err(named)?;
            // A declared bind is never a path to login files or credentials: no ticket is asked
            // for a capability's binds, so these are refused outright.
            if let Some(why) = super::secrets::contains_login_path(&real, fence.homes()) {
                return Err(named(ApiError::new(
                    axum::http::StatusCode::FORBIDDEN,
                    format!("writable path {p}: {why}"),
                )));
            }
            binds.push(Bind {
                path: real,
                writable: true,
            });
        }
    }
    Ok(binds)
}

/// What no ring sandbox is shown, whatever a capability declares (`ring::bind_refusal`:
/// daemon sockets and state, bus and systemd sockets, credentials, root's home, `/proc`,
/// `/sys`, `/dev`).
fn ring_bindable(real: &std::path::Path) -> Result<(), ApiError> {
    match osmoda_sandbox::ring::bind_refusal(real) {
        Some(why) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("{}: {why}", real.display()),
        )),
        None => Ok(()),
    }
}

fn checked(b: &SandboxBody) -> Result<(Vec<String>, Limits), ApiError> {
    let argv = match (&b.argv, &b.command) {
        (Some(argv), None) if !argv.is_empty() && !argv[0].is_empty() => argv.clone(),
        (None, Some(cmd)) if !cmd.trim().is_empty() => {
            vec!["/bin/sh".into(), "-c".into(), cmd.clone()]
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `argv` (a non-empty list, no shell) or `command` (a shell command line)",
            ))
        }
    };
    if b.timeout_sec == 0 || b.timeout_sec > MAX_TIMEOUT_SECS {
        return Err(ApiError::bad_request(format!(
            "timeout_sec must be 1..={MAX_TIMEOUT_SECS}"
        )));
    }
    let memory_mb = b.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
    if !(16..=MAX_MEMORY_MB).contains(&memory_mb) {
        return Err(ApiError::bad_request(format!(
            "memory_mb must be 16..={MAX_MEMORY_MB}"
        )));
    }
    let tasks = b.max_tasks.unwrap_or(DEFAULT_MAX_TASKS);
    if !(8..=MAX_TASKS).contains(&tasks) {
        return Err(ApiError::bad_request(format!(
            "max_tasks must be 8..={MAX_TASKS}"
        )));
    }
    if b.env.len() > 64
        || !b.env.keys().all(|k| {
            !k.is_empty()
                && k.len() <= 128
                && !k.starts_with(|c: char| c.is_ascii_digit())
                && k.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'_')
        })
    {
        return Err(ApiError::bad_request(
            "env: at most 64 variables named [A-Za-z_][A-Za-z0-9_]*",
        ));
    }
    if let Some(k) = b.env.keys().find(|k| {
        k.eq_ignore_ascii_case("https_proxy")
            || k.eq_ignore_ascii_case("http_proxy")
            || k.eq_ignore_ascii_case("all_proxy")
    }) {
        return Err(ApiError::bad_request(format!(
            "env: {k} is set by the sandbox (Ring 1: the egress relay; Ring 2: there is no network)"
        )));
    }
    if argv.iter().chain(b.env.values()).any(|s| s.contains('\0')) {
        return Err(ApiError::bad_request(
            "argv, command and env values may not contain NUL",
        ));
    }
    if let Some(cwd) = &b.cwd {
        if !cwd.starts_with('/') || cwd.contains('\0') || cwd.split('/').any(|c| c == "..") {
            return Err(ApiError::bad_request(
                "cwd must be an absolute path inside the sandbox without `..`",
            ));
        }
    }
    if b.stdin.as_ref().is_some_and(|s| s.len() > STDIN_LIMIT) {
        return Err(ApiError::bad_request(format!(
            "stdin may be at most {STDIN_LIMIT} bytes (write larger input to a file first)"
        )));
    }
    Ok((
        argv,
        Limits {
            memory_bytes: memory_mb << 20,
            tasks,
        },
    ))
}

/// `POST /sandbox/exec` → `{ring, exit_code, signal, timed_out, memory_exceeded, stdout,
/// stderr, truncated, duration_ms, limits: {memory_bytes, max_tasks, enforced_by},
/// capabilities, token_id, event_id}`. `exit_code` is null when the command was killed.
///
/// Errors: 400 bad input; 403 a capability not declared or a widening; 503 egress not
/// configured or not running (Ring 1), bubblewrap missing. Nothing runs and nothing is
/// recorded on an error.
pub async fn exec(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(b): Json<SandboxBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let (argv, limits) = checked(&b)?;
    let mut spec = RingSpec::new(argv.clone());
    spec.timeout = Duration::from_secs(b.timeout_sec);
    spec.output_limit = OUTPUT_LIMIT;
    spec.limits = limits;
    spec.env = b.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    spec.cwd = b.cwd.as_ref().map(PathBuf::from);
    spec.stdin = b.stdin.as_ref().map(|s| s.as_bytes().to_vec());
    let mut granted = Value::Null;
    let mut token_id = Value::Null;
    if let Some(wanted) = b.capabilities.filter(|p| !is_empty(p)) {
        let cfg = egress_config(&st)?;
        let declared = osmoda_egress::policy::parse_capabilities(&cfg.capabilities)
            .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e))?;
        let caps = grants(&declared, wanted)?;
        spec.binds = declared_binds(&st, &cfg, caps.keys()).await?;
        let proxy_socket = st
            .settings
            .egress_proxy_socket
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PROXY_SOCKET));
        // Its presence, not a connection: an empty connection would be a deny in egress's log.
        use std::os::unix::fs::FileTypeExt as _;
        if !std::fs::metadata(&proxy_socket).is_ok_and(|m| m.file_type().is_socket()) {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "osmoda-egress has no proxy socket at {}: start it (services.osmoda.egress.enable) before running a Ring 1 sandbox",
                    proxy_socket.display()
                ),
            ));
        }
        let relay_bin = relay_bin(&st).ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the osmoda-egress binary (its relay runs inside Ring 1) is neither beside agentd nor on PATH: give agentd --egress-bin",
            )
        })?;
        // The token lives exactly as long as the command may, plus the start-up.
        let subject = format!("sandbox:{}", caller.actor);
        let (token, claims) = mint_checked(&st, &cfg, &subject, caps, b.timeout_sec + 5)?;
        granted = json!(claims.caps);
        token_id = json!(claims.id);
        spec.network = Network::Egress {
            relay_bin,
            proxy_socket,
            token,
        };
    }
    let ring = if matches!(spec.network, Network::None) {
        2
    } else {
        1
    };
    let boundary = super::fs::Fence::of(&st)
        .hidden()
        .fold(Boundary::osmoda_default(), |b, p| b.with(p));
    let started = Instant::now();
    let out = boundary.run_ring(&spec).await.map_err(|e| match e {
        osmoda_sandbox::SandboxError::Io(_)
        | osmoda_sandbox::SandboxError::ToolMissing(_)
        | osmoda_sandbox::SandboxError::Seccomp(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        other => ApiError::bad_request(other.to_string()),
    })?;
    let duration_ms = started.elapsed().as_millis() as u64;
    let (exit_code, signal, timed_out) = match out.output.exit {
        Exit::Code(c) => (Some(c), None, false),
        Exit::Signal(s) => (None, Some(s), false),
        Exit::TimedOut => (None, None, true),
    };
    let o = &out.output;
    let limits = json!({
        "memory_bytes": spec.limits.memory_bytes, "max_tasks": spec.limits.tasks,
        "enforced_by": out.enforced_by.as_str(),
    });
    let ev = st
        .record(
            "sandbox.exec",
            &caller.actor,
            &json!({
                "argv": argv, "ring": ring, "capabilities": granted, "token_id": token_id,
                "cwd": b.cwd, "env": b.env.keys().collect::<Vec<_>>(), "limits": limits,
                "exit_code": exit_code, "signal": signal, "timed_out": timed_out,
                "memory_exceeded": out.memory_exceeded, "duration_ms": duration_ms,
                "stdin_bytes": b.stdin.as_ref().map(String::len),
                "stdout_bytes": o.stdout.len(), "stdout_sha256": sha256_hex(&o.stdout),
                "stderr_bytes": o.stderr.len(), "stderr_sha256": sha256_hex(&o.stderr),
            }),
        )
        .await?;
    Ok(axum::Json(json!({
        "ring": ring, "exit_code": exit_code, "signal": signal, "timed_out": timed_out,
        "memory_exceeded": out.memory_exceeded,
        "stdout": o.stdout_lossy(), "stderr": o.stderr_lossy(), "truncated": o.truncated,
        "duration_ms": duration_ms, "limits": limits, "capabilities": granted,
        "token_id": token_id, "event_id": ev.id,
    })))
}
