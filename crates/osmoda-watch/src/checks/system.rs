//! Checks that look at the local system: systemd units, commands, disk space, processes.

use std::path::Path;
use std::time::Duration;

use osmoda_sandbox::{Boundary, Exit, Spec};

use crate::runner::{Cmd, Runner};

/// Where systemd says it is running as PID 1 (sd_booted(3)).
const SYSTEMD_RUN_DIR: &str = "/run/systemd/system";

/// How often an `activating` unit is asked again (within the check's timeout).
const ACTIVATING_POLL: Duration = Duration::from_millis(250);

/// `systemd`: the unit is `active` or `reloading` (as `systemctl is-active` counts them);
/// `activating` is asked again until it settles or the check's timeout ends; anything else
/// (`failed`, `inactive`, `deactivating`, ...) fails.
pub(super) async fn systemd_active(runner: &dyn Runner, unit: &str) -> Result<String, String> {
    let cmd = Cmd::new(["systemctl", "is-active", "--", unit]);
    loop {
        let out = runner.run(&cmd).await?;
        let state = out.stdout.lines().next().unwrap_or("").trim().to_string();
        match state.as_str() {
            "active" | "reloading" | "refreshing" => return Ok(format!("{unit} is {state}")),
            "activating" => tokio::time::sleep(ACTIVATING_POLL).await,
            "" if !Path::new(SYSTEMD_RUN_DIR).is_dir() => {
                return Err(format!(
                    "systemd not available: {SYSTEMD_RUN_DIR} does not exist, so unit {unit} cannot be checked here"
                ))
            }
            "" => {
                return Err(format!(
                    "systemctl is-active {unit} gave no state: {}",
                    crate::runner::tail_chars(out.stderr.trim(), 200)
                ))
            }
            other => return Err(format!("{unit} is {other}")),
        }
    }
}

/// `command`: exits 0, run behind `boundary` as `user`. The process group is gone when this
/// returns, and a background child that keeps stdout open does not delay the verdict.
pub(super) async fn run_command(
    boundary: &Boundary,
    argv: &[String],
    user: &str,
    timeout: Duration,
) -> Result<String, String> {
    let prog = argv
        .first()
        .ok_or("empty command: give at least the program")?;
    let spec = Spec::new(argv.iter().cloned())
        .user(user)
        .timeout(timeout)
        .output_limit(4096);
    let out = boundary
        .run(&spec)
        .await
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    match out.exit {
        Exit::Code(0) => Ok(format!("{prog} exited 0")),
        Exit::TimedOut => Err(format!("{prog} timed out after {timeout:?}")),
        _ => {
            let stderr = out.stderr_lossy();
            let tail = crate::runner::tail_chars(stderr.trim(), 200);
            Err(format!(
                "{prog} failed ({}){}",
                out.describe(),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!(": {tail}")
                }
            ))
        }
    }
}

/// `disk`: the file system holding `path` has at least `min_free_percent` available.
pub(super) fn disk_free(path: &Path, min_free_percent: f64) -> Result<String, String> {
    let free = free_percent(path)?;
    if free >= min_free_percent {
        Ok(format!("{} has {free:.1}% free", path.display()))
    } else {
        Err(format!(
            "{} has {free:.1}% free, below {min_free_percent}%",
            path.display()
        ))
    }
}

/// Percent of the file system holding `path` available to unprivileged users.
pub(crate) fn free_percent(path: &Path) -> Result<f64, String> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| format!("cannot statvfs {}: {e}", path.display()))?;
    let total = st.blocks() as f64;
    if total == 0.0 {
        return Err(format!("{} reports a size of 0 blocks", path.display()));
    }
    Ok(st.blocks_available() as f64 * 100.0 / total)
}

/// `process`: some process has `comm` equal to `name` (truncated like the kernel does) or an
/// `argv[0]` whose basename is `name`.
pub(super) fn process_running(name: &str) -> Result<String, String> {
    let comm_name: String = name.chars().take(15).collect();
    let dir = std::fs::read_dir("/proc").map_err(|e| format!("cannot read /proc: {e}"))?;
    for entry in dir.flatten() {
        let file_name = entry.file_name();
        let Some(pid) = file_name
            .to_str()
            .filter(|s| s.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let base = entry.path();
        if let Ok(comm) = std::fs::read_to_string(base.join("comm")) {
            if comm.trim_end_matches('\n') == comm_name {
                return Ok(format!("{name} is running (pid {pid})"));
            }
        }
        if let Ok(cmdline) = std::fs::read(base.join("cmdline")) {
            let argv0 = cmdline.split(|b| *b == 0).next().unwrap_or_default();
            let argv0 = String::from_utf8_lossy(argv0);
            if Path::new(argv0.as_ref())
                .file_name()
                .and_then(|f| f.to_str())
                == Some(name)
            {
                return Ok(format!("{name} is running (pid {pid})"));
            }
        }
    }
    Err(format!("no process named {name} is running"))
}
