//! Running external programs behind a trait, so the `nixos` backend's exact command sequence can
//! be asserted in unit tests (it cannot run without NixOS) while production runs real processes.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::Stdio;
use std::sync::Mutex;

use osmoda_generations::evaluator::{self, Caps, Exceeded};

/// One program invocation: argv and an optional working directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cmd {
    /// Program followed by its arguments.
    pub argv: Vec<String>,
    /// Working directory; the daemon's when `None`.
    pub cwd: Option<PathBuf>,
    /// Resource caps (a Nix evaluator on input from the tree); none when `None`.
    pub caps: Option<Caps>,
}

impl Cmd {
    /// A command from anything string-like.
    pub fn new<I, S>(argv: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            argv: argv.into_iter().map(Into::into).collect(),
            cwd: None,
            caps: None,
        }
    }

    /// Runs as a bounded evaluator: CPU time, address space and wall clock capped, in one of
    /// the daemon's evaluator slots (`osmoda_generations::evaluator`).
    pub fn capped(mut self, caps: Caps) -> Cmd {
        self.caps = Some(caps);
        self
    }

    /// Runs in `dir`.
    pub fn in_dir(mut self, dir: impl Into<PathBuf>) -> Cmd {
        self.cwd = Some(dir.into());
        self
    }

    /// The command line, for messages.
    pub fn display(&self) -> String {
        self.argv.join(" ")
    }
}

/// What a finished program produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CmdOutput {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl CmdOutput {
    /// Exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A boxed future, so the trait stays object safe.
pub type BoxFut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Runs commands. [`ProcessRunner`] is the real one; [`RecordingRunner`] records argv for tests.
pub trait Runner: Send + Sync {
    /// Runs `cmd` to completion.
    ///
    /// # Errors
    /// A readable reason when the program cannot be started.
    fn run<'a>(&'a self, cmd: &'a Cmd) -> BoxFut<'a, Result<CmdOutput, String>>;
}

/// Runs real child processes (stdin closed, output captured).
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcessRunner;

impl Runner for ProcessRunner {
    fn run<'a>(&'a self, cmd: &'a Cmd) -> BoxFut<'a, Result<CmdOutput, String>> {
        Box::pin(async move {
            let (prog, args) = cmd.argv.split_first().ok_or("empty command")?;
            let mut c = tokio::process::Command::new(prog);
            c.args(args).stdin(Stdio::null()).kill_on_drop(true);
            if let Some(dir) = &cmd.cwd {
                c.current_dir(dir);
            }
            let Some(caps) = cmd.caps else {
                let out = c
                    .output()
                    .await
                    .map_err(|e| format!("cannot run {prog}: {e}"))?;
                return Ok(CmdOutput {
                    code: out.status.code(),
                    stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                    stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
                });
            };
            // A slot first (waiting on a blocking thread), then the capped process; output is
            // read while it runs, and it is killed (on drop) at the wall-clock deadline.
            let slot = tokio::task::spawn_blocking(evaluator::slot)
                .await
                .map_err(|e| format!("cannot wait for an evaluator slot: {e}"))?;
            caps.apply(c.as_std_mut());
            let out = tokio::time::timeout(caps.wall, c.output()).await;
            drop(slot);
            let out = match out {
                Err(_) => {
                    return Err(format!(
                        "`{}` was stopped: {}",
                        cmd.display(),
                        Exceeded::Wall(caps.wall)
                    ))
                }
                Ok(out) => out.map_err(|e| format!("cannot run {prog}: {e}"))?,
            };
            let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
            if let Some(cap) = caps.exceeded(out.status, &stderr) {
                return Err(format!("`{}` was stopped: {cap}", cmd.display()));
            }
            Ok(CmdOutput {
                code: out.status.code(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr,
            })
        })
    }
}

/// Records every command and answers from a script of canned outputs (in order); a command
/// without a scripted answer succeeds with empty output. Test support for the `nixos` backend.
#[derive(Debug, Default)]
pub struct RecordingRunner {
    /// Commands run so far.
    pub calls: Mutex<Vec<Cmd>>,
    answers: Mutex<Vec<(String, CmdOutput)>>,
}

impl RecordingRunner {
    /// Answers the next command whose argv starts with `prefix` with `out`.
    pub fn answer(&self, prefix: &str, out: CmdOutput) {
        if let Ok(mut a) = self.answers.lock() {
            a.push((prefix.to_string(), out));
        }
    }

    /// The argv of every command run so far.
    pub fn argvs(&self) -> Vec<Vec<String>> {
        self.calls
            .lock()
            .map(|c| c.iter().map(|c| c.argv.clone()).collect())
            .unwrap_or_default()
    }
}

impl Runner for RecordingRunner {
    fn run<'a>(&'a self, cmd: &'a Cmd) -> BoxFut<'a, Result<CmdOutput, String>> {
        Box::pin(async move {
            if let Ok(mut c) = self.calls.lock() {
                c.push(cmd.clone());
            }
            let line = cmd.display();
            let mut answers = self.answers.lock().map_err(|_| "poisoned")?;
            let out = match answers
                .iter()
                .position(|(p, _)| line.starts_with(p.as_str()))
            {
                Some(i) => answers.remove(i).1,
                None => CmdOutput {
                    code: Some(0),
                    ..CmdOutput::default()
                },
            };
            Ok(out)
        })
    }
}

/// Runs `cmd` and turns a non-zero exit into an error that shows the command and its stderr.
///
/// # Errors
/// When the program cannot start or exits non-zero.
pub async fn run_ok(runner: &dyn Runner, cmd: &Cmd) -> Result<CmdOutput, String> {
    let out = runner.run(cmd).await?;
    if out.success() {
        Ok(out)
    } else {
        let err = out.stderr.trim();
        let tail = tail_chars(err, 2000);
        Err(format!(
            "`{}` failed with {}: {tail}",
            cmd.display(),
            out.code
                .map_or("a signal".to_string(), |c| format!("exit code {c}"))
        ))
    }
}

/// The last `n` characters of `s` (never splits a character).
pub fn tail_chars(s: &str, n: usize) -> String {
    let count = s.chars().count();
    s.chars().skip(count.saturating_sub(n)).collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn caps(cpu_secs: u64, wall_ms: u64) -> Caps {
        Caps {
            cpu_secs,
            memory_bytes: 1 << 30,
            wall: Duration::from_millis(wall_ms),
        }
    }

    #[tokio::test]
    async fn a_capped_command_is_stopped_at_its_cpu_cap() {
        let cmd = Cmd::new(["sh", "-c", "while :; do :; done"]).capped(caps(1, 120_000));
        let e = ProcessRunner.run(&cmd).await.unwrap_err();
        assert!(e.contains("CPU time"), "{e}");
    }

    #[tokio::test]
    async fn a_capped_command_is_stopped_at_its_wall_clock() {
        let cmd = Cmd::new(["sleep", "30"]).capped(caps(10, 200));
        let e = ProcessRunner.run(&cmd).await.unwrap_err();
        assert!(e.contains("did not finish within"), "{e}");
    }

    #[tokio::test]
    async fn a_capped_command_s_large_stderr_is_read_while_it_runs() {
        let cmd = Cmd::new([
            "sh",
            "-c",
            "head -c 300000 /dev/zero | tr '\\0' x >&2; echo done",
        ])
        .capped(caps(10, 60_000));
        let out = ProcessRunner.run(&cmd).await.unwrap();
        assert!(out.success());
        assert_eq!(out.stdout.trim(), "done");
        assert_eq!(out.stderr.len(), 300_000);
    }
}
