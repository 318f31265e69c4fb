//! Running the sandbox process: judged by exit status, output captured up to a limit and read
//! only until the exit, the whole process group killed at the end.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

use crate::SandboxError;

/// How long output already written before the exit may take to arrive once every process of
/// the group is dead (the pipes then reach end-of-file at once; this only bounds a bug).
const DRAIN: Duration = Duration::from_millis(500);

/// How a command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this code (bwrap reports a command killed by signal `n` as `128 + n`).
    Code(i32),
    /// The sandbox itself was killed by this signal.
    Signal(i32),
    /// The time budget ended first; everything was killed.
    TimedOut,
}

/// What a sandboxed command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// How it ended.
    pub exit: Exit,
    /// Captured standard output (at most the spec's limit).
    pub stdout: Vec<u8>,
    /// Captured standard error (at most the spec's limit).
    pub stderr: Vec<u8>,
    /// Some output was dropped because of the limit.
    pub truncated: bool,
}

impl Output {
    /// Exited 0.
    pub fn success(&self) -> bool {
        self.exit == Exit::Code(0)
    }

    /// Standard output, lossily decoded.
    pub fn stdout_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    /// Standard error, lossily decoded.
    pub fn stderr_lossy(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    /// `exit code 3`, `timed out`, ... for messages.
    pub fn describe(&self) -> String {
        match self.exit {
            Exit::Code(c) => format!("exit code {c}"),
            Exit::Signal(s) => format!("signal {s}"),
            Exit::TimedOut => "timed out".to_string(),
        }
    }
}

/// Sends SIGKILL to process group `pgid` (a [`crate::Boundary::command`] child's id). Errors
/// (the group is already gone) are ignored.
pub fn kill_group(pgid: u32) {
    if let Ok(p) = i32::try_from(pgid) {
        if p > 1 {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(p),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

#[derive(Default)]
struct Capture {
    bytes: Vec<u8>,
    truncated: bool,
}

/// Reads `r` to its end into `into`, keeping at most `limit` bytes (the rest is read and
/// dropped so the writer never blocks on a full pipe).
async fn capture<R: AsyncRead + Unpin>(mut r: R, into: Arc<Mutex<Capture>>, limit: usize) {
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let Ok(mut c) = into.lock() else { return };
                let room = limit.saturating_sub(c.bytes.len());
                c.bytes.extend_from_slice(&buf[..n.min(room)]);
                if n > room {
                    c.truncated = true;
                }
            }
        }
    }
}

fn take(c: &Arc<Mutex<Capture>>) -> (Vec<u8>, bool) {
    c.lock()
        .map(|mut c| (std::mem::take(&mut c.bytes), c.truncated))
        .unwrap_or_default()
}

pub(crate) async fn run(
    mut cmd: tokio::process::Command,
    timeout: Duration,
    limit: usize,
    stdin: Option<Vec<u8>>,
) -> Result<Output, SandboxError> {
    cmd.stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn()?;
    let pgid = child.id();
    let out = Arc::new(Mutex::new(Capture::default()));
    let err = Arc::new(Mutex::new(Capture::default()));
    let mut readers = tokio::task::JoinSet::new();
    if let (Some(mut w), Some(bytes)) = (child.stdin.take(), stdin) {
        // Its own task: a command that never reads stdin must not block the wait below. A
        // command that exits first makes the write fail (EPIPE), which is not an error here.
        readers.spawn(async move {
            use tokio::io::AsyncWriteExt;
            let _ = w.write_all(&bytes).await;
            let _ = w.shutdown().await;
        });
    }
    if let Some(s) = child.stdout.take() {
        readers.spawn(capture(s, Arc::clone(&out), limit));
    }
    if let Some(s) = child.stderr.take() {
        readers.spawn(capture(s, Arc::clone(&err), limit));
    }
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    // Whatever the command left behind dies now, exit or timeout.
    if let Some(pgid) = pgid {
        kill_group(pgid);
    }
    let exit = match waited {
        Ok(Ok(st)) => {
            use std::os::unix::process::ExitStatusExt;
            match (st.code(), st.signal()) {
                (Some(c), _) => Exit::Code(c),
                (None, Some(s)) => Exit::Signal(s),
                (None, None) => Exit::Code(-1),
            }
        }
        Ok(Err(e)) => return Err(SandboxError::Io(e)),
        Err(_) => {
            let _ = child.kill().await;
            Exit::TimedOut
        }
    };
    let _ = tokio::time::timeout(DRAIN, async {
        while readers.join_next().await.is_some() {}
    })
    .await;
    readers.abort_all();
    let (stdout, t1) = take(&out);
    let (stderr, t2) = take(&err);
    Ok(Output {
        exit,
        stdout,
        stderr,
        truncated: t1 || t2,
    })
}
