//! Checks that look at the local system: systemd units, commands, disk space, processes.

use std::path::Path;
use std::process::Stdio;

/// Where systemd says it is running as PID 1 (sd_booted(3)).
const SYSTEMD_RUN_DIR: &str = "/run/systemd/system";

/// `systemd`: the unit is active.
pub(super) async fn systemd_active(unit: &str) -> Result<String, String> {
    if !Path::new(SYSTEMD_RUN_DIR).is_dir() {
        return Err(format!(
            "systemd not available: {SYSTEMD_RUN_DIR} does not exist, so unit {unit} cannot be checked here"
        ));
    }
    let out = tokio::process::Command::new("systemctl")
        .args(["is-active", "--", unit])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if state == "active" {
        Ok(format!("{unit} is active"))
    } else {
        Err(format!("{unit} is {state}"))
    }
}

/// `command`: exits 0. The caller bounds it with the check's timeout; the child is killed on drop.
pub(super) async fn run_command(argv: &[String]) -> Result<String, String> {
    let (prog, args) = argv
        .split_first()
        .ok_or("empty command: give at least the program")?;
    let out = tokio::process::Command::new(prog)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("cannot run {prog}: {e}"))?;
    if out.status.success() {
        Ok(format!("{prog} exited 0"))
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let tail = crate::runner::tail_chars(stderr.trim(), 200);
        Err(format!(
            "{prog} failed ({}){}",
            out.status,
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        ))
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
