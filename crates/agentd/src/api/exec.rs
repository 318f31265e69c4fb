//! `POST /system/exec`: run a command the agent names, inside osModa's boundary
//! (`osmoda-sandbox`: a read-only root, the approval path and the daemons' state masked, a
//! reduced capability bounding set, user `nobody` unless the caller asks for root).
//!
//! Every call is one ledger event `system.exec` (argv, user, cwd, writable paths, exit, duration,
//! stdin and output sizes and SHA-256), recorded after the command ended. Writable paths are judged like
//! `/fs/write` targets: the configuration tree and `/etc/nixos` are refused with a pointer to
//! `config_set`, agentd's state and the boundary paths are never bound, and a path holding login
//! files or credentials or outside the writable roots takes the gate's ticket for exactly this
//! call (used before the command starts, so it runs once).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use osmoda_sandbox::{Boundary, Exit, Pinned, Spec};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::fs::{checked_path, resolve_lexically, Fence};
use crate::error::{ApiError, Json};
use crate::peer::Caller;
use crate::AppState;

/// The accounts a command may run as ([`ExecBody::user`]).
const RUN_AS: &[&str] = &["nobody", "root"];

/// Longest time budget a command may ask for.
pub const MAX_TIMEOUT_SECS: u64 = 600;
/// Bytes of stdout and of stderr returned (the rest is read and dropped; `truncated` says so).
pub const OUTPUT_LIMIT: usize = 64 * 1024;
/// Largest `stdin` a command is given (the request body itself is capped at 1 MiB).
pub const STDIN_LIMIT: usize = 512 * 1024;

/// Body of `POST /system/exec`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecBody {
    /// Program and arguments, no shell.
    pub argv: Option<Vec<String>>,
    /// A shell command line, run as `/bin/sh -c <command>`.
    pub command: Option<String>,
    /// Working directory (absolute; default `/`).
    pub cwd: Option<String>,
    /// Environment besides `PATH`, `HOME`, `USER`, `LOGNAME` (the rest is cleared).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Time budget in seconds (1..=600); the whole process group is killed when it ends.
    pub timeout_secs: u64,
    /// User to run as: `nobody` (the default) or `root` for a command that needs root; no
    /// other account (400).
    pub user: Option<String>,
    /// Existing paths the command may write (the rest of the file system is read-only).
    #[serde(default)]
    pub writable: Vec<String>,
    /// Text fed to the command's standard input, then closed (at most [`STDIN_LIMIT`] bytes);
    /// without it stdin is `/dev/null`.
    pub stdin: Option<String>,
    /// Approval ticket for a command the gate refused (a writable path holding login files or
    /// credentials, or outside the writable roots): the same request with the approved ticket
    /// runs once.
    pub approval: Option<String>,
}

/// `w` as a path a command may write: existing, resolved, inside the fence, not hidden or
/// containing a hidden path (the command could replace the mask), not the configuration tree.
/// Login files and credentials are the caller's to judge (`/system/exec` gates them behind a
/// ticket, `/sandbox/exec` refuses them). Shared with `/sandbox/exec`'s declared binds.
///
/// The resolved path is opened once ([`Pinned`]: no symlink on it, its descriptor where the
/// name says) and the checks judge that object, which is what the sandbox binds: a command
/// racing a symlink into the path (review of issue 11, finding 4) gets a 409, never a bind of
/// what the symlink points to.
pub(crate) fn writable_path(fence: &Fence, w: &str) -> Result<Pinned, ApiError> {
    let p = checked_path(w)?;
    let real = p.canonicalize().map_err(|e| {
        let why = match e.raw_os_error() {
            Some(n) => nix::errno::Errno::from_raw(n).desc().to_string(),
            None => e.to_string(),
        };
        ApiError::bad_request(format!(
            "writable path {w}: {why} (a writable path must exist; create it first)"
        ))
    })?;
    let pinned = Pinned::open(&real).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::CONFLICT,
            format!("writable path {w} changed while it was checked: {e}"),
        )
        .with_detail(json!({ "hint": "retry once nothing is renaming that path" }))
    })?;
    fence.check(&real, true)?;
    // Binding a parent of a hidden path writable would let the command replace the mask; by
    // inode too, so a second name of a hidden directory is no way around it.
    if let Some(h) = fence
        .hidden()
        .find(|h| h.starts_with(&real) || pinned.holds(h) || pinned.inside(h))
    {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            format!(
                "writable path {w} contains {}, which commands may not touch",
                h.display()
            ),
        ));
    }
    if let Some(t) = fence.read_only().find(|t| t.starts_with(&real)) {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            format!("writable path {w} contains the configuration tree {}: change configuration with config_set", t.display()),
        )
        .with_detail(json!({ "use": "config_set" })));
    }
    Ok(pinned)
}

fn sha256_hex(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

/// A command line for a sentence: its first 200 characters.
fn shorten(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// `POST /system/exec` → `{exit_code, signal, timed_out, stdout, stderr, truncated, duration_ms,
/// user, event_id}`. `exit_code` is null when the command was killed (by its timeout or a signal).
pub async fn exec(
    State(st): State<Arc<AppState>>,
    caller: Caller,
    Json(b): Json<ExecBody>,
) -> Result<axum::Json<Value>, ApiError> {
    let argv = match (b.argv, b.command) {
        (Some(argv), None) if !argv.is_empty() => argv,
        (None, Some(cmd)) if !cmd.trim().is_empty() => vec!["/bin/sh".into(), "-c".into(), cmd],
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of `argv` (a non-empty list, no shell) or `command` (a shell command line)",
            ))
        }
    };
    if b.timeout_secs == 0 || b.timeout_secs > MAX_TIMEOUT_SECS {
        return Err(ApiError::bad_request(format!(
            "timeout_secs must be 1..={MAX_TIMEOUT_SECS}"
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
    if argv.iter().chain(b.env.values()).any(|s| s.contains('\0')) {
        return Err(ApiError::bad_request(
            "argv, command and env values may not contain NUL",
        ));
    }
    // Only the two identities a command may need: another account (a daemon's, the gateway's)
    // would act with that account's files and standing on osModa's sockets.
    if let Some(u) = b.user.as_deref().filter(|u| !RUN_AS.contains(u)) {
        return Err(ApiError::bad_request(format!(
            "user {:?} is not one a command may run as: leave it unset (`nobody`) or give `root` for a command that needs root; commands never run as another account, whose files and standing they would have",
            u.chars().take(64).collect::<String>()
        )));
    }
    if b.stdin.as_ref().is_some_and(|s| s.len() > STDIN_LIMIT) {
        return Err(ApiError::bad_request(format!(
            "stdin is {} bytes; at most {STDIN_LIMIT} are passed to a command (write larger input to a file first)",
            b.stdin.as_ref().map_or(0, String::len)
        )));
    }
    let fence = Fence::of(&st).with_tree_homes(&st).await;
    let mut spec = Spec::new(argv.clone())
        .user(
            b.user
                .clone()
                .unwrap_or_else(|| osmoda_sandbox::DEFAULT_USER.into()),
        )
        .timeout(Duration::from_secs(b.timeout_secs))
        .output_limit(OUTPUT_LIMIT);
    if let Some(cwd) = &b.cwd {
        let cwd = checked_path(cwd)?;
        fence.check(&resolve_lexically(&cwd), false)?;
        spec = spec.cwd(cwd);
    }
    let mut writable = Vec::new();
    // Writable paths a person must approve, with the kind and why.
    let mut gated: Vec<(&'static str, std::path::PathBuf, String)> = Vec::new();
    for w in &b.writable {
        let pinned = writable_path(&fence, w)?;
        let real = pinned.path().to_path_buf();
        // The same rules as `/fs/write`: a command that may write login files, credentials or
        // outside the writable roots runs only with a person's ticket for exactly this call.
        if let Some(why) = super::secrets::contains_login_path(&real, fence.homes()) {
            gated.push(("fs.login", real.clone(), why.to_string()));
        } else if let Some((kind, why)) = fence.gated(&real) {
            gated.push((kind, real.clone(), why));
        }
        writable.push(real.display().to_string());
        spec = spec.writable(pinned);
    }
    for (k, v) in &b.env {
        spec = spec.env(k.clone(), v.clone());
    }
    if let Some(input) = &b.stdin {
        spec = spec.stdin(input.as_bytes());
    }
    let approval = if gated.is_empty() {
        None
    } else {
        let call = json!({
            "argv": argv, "user": spec.user, "cwd": b.cwd, "writable": writable,
            "timeout_secs": b.timeout_secs,
            // Values may be secrets: bound by their SHA-256, never shown.
            "env_sha256": b.env.iter().map(|(k, v)| (k.clone(), sha256_hex(v.as_bytes()))).collect::<BTreeMap<_, _>>(),
            "stdin_sha256": b.stdin.as_ref().map(|s| sha256_hex(s.as_bytes())),
        });
        let shown = shorten(&argv.join(" "));
        let findings = gated
            .iter()
            .map(|(kind, real, why)| crate::gate::rules::Finding {
                kind,
                words: format!(
                    "runs `{shown}` as {} with {} writable: {why}",
                    spec.user,
                    real.display()
                ),
                path: real.display().to_string(),
                was: json!("<read-only>"),
                now: call.clone(),
            })
            .collect();
        crate::gate::consume_exec(&st, &caller.actor, findings, b.approval.as_deref()).await?
    };
    let boundary = fence
        .hidden()
        .chain(crate::api::secrets::key_files(&st))
        .fold(Boundary::osmoda_default(), |b, p| b.with(p));
    let started = Instant::now();
    let out = boundary.run(&spec).await.map_err(|e| match e {
        osmoda_sandbox::SandboxError::Io(_) | osmoda_sandbox::SandboxError::ToolMissing(_) => {
            ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        other => ApiError::bad_request(other.to_string()),
    })?;
    let duration_ms = started.elapsed().as_millis() as u64;
    let (exit_code, signal, timed_out) = match out.exit {
        Exit::Code(c) => (Some(c), None, false),
        Exit::Signal(s) => (None, Some(s), false),
        Exit::TimedOut => (None, None, true),
    };
    let ev = st
        .record(
            "system.exec",
            &caller.actor,
            &json!({
                "argv": argv, "user": spec.user, "cwd": b.cwd, "writable": writable,
                "env": b.env.keys().collect::<Vec<_>>(),
                "exit_code": exit_code, "signal": signal, "timed_out": timed_out,
                "duration_ms": duration_ms,
                "stdin_bytes": b.stdin.as_ref().map(String::len),
                "stdin_sha256": b.stdin.as_ref().map(|s| sha256_hex(s.as_bytes())),
                "stdout_bytes": out.stdout.len(), "stdout_sha256": sha256_hex(&out.stdout),
                "stderr_bytes": out.stderr.len(), "stderr_sha256": sha256_hex(&out.stderr),
                "approval": approval,
            }),
        )
        .await?;
    Ok(axum::Json(json!({
        "exit_code": exit_code, "signal": signal, "timed_out": timed_out,
        "stdout": out.stdout_lossy(), "stderr": out.stderr_lossy(), "truncated": out.truncated,
        "duration_ms": duration_ms, "user": spec.user, "event_id": ev.id,
    })))
}
