//! Bounds for every Nix evaluator process osModa starts on input it was handed (validation's
//! `nix-instantiate` and `nix repl`, agentd's raw-value evaluation, osmoda-watch's render): a
//! CPU-time and address-space limit set in the child before `exec` (`setrlimit`), a wall-clock
//! deadline, at most [`MAX_CONCURRENT`] such processes at once per daemon, and standard output
//! and error read while the child runs (a long trace never fills a pipe and stalls it).
//!
//! A value that needs more than its caps is refused with [`Exceeded`] saying which cap and
//! what to do, never waited for.

use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Evaluator processes one daemon runs at once; more wait for a slot (on a 2-core machine,
/// more would only make each slower and every request behind them later).
pub const MAX_CONCURRENT: usize = 2;

/// Most bytes kept of each of standard output and standard error (the rest is read and dropped).
pub const MAX_OUTPUT: usize = 4 * 1024 * 1024;

/// Limits for one evaluator process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// CPU time (user + system), seconds: `RLIMIT_CPU`.
    pub cpu_secs: u64,
    /// Address space, bytes: `RLIMIT_AS` (Nix reports `out of memory` past it).
    pub memory_bytes: u64,
    /// Wall-clock time before the process is killed.
    pub wall: Duration,
}

impl Caps {
    /// Validation of a changed file (`nix-instantiate --parse` or a strict evaluation of a
    /// data-only file).
    pub const VALIDATE: Caps = Caps {
        cpu_secs: 20,
        memory_bytes: 2 << 30,
        wall: Duration::from_secs(40),
    };
    /// The long-lived `nix repl` of a tree: CPU time adds up over its checks (each check has
    /// its own 20 s deadline); when spent, the process ends and a fresh one takes over.
    pub const REPL: Caps = Caps {
        cpu_secs: 300,
        memory_bytes: 2 << 30,
        wall: Duration::MAX,
    };
    /// A raw value before it is committed. Small on purpose: every later evaluation of the tree
    /// (the gate's, the render's, NixOS's) pays for the value again.
    pub const RAW_VALUE: Caps = Caps {
        cpu_secs: 2,
        memory_bytes: 1 << 30,
        wall: Duration::from_secs(10),
    };
    /// osmoda-watch's render of `osmoda.nix` with `lib/`.
    pub const RENDER: Caps = Caps {
        cpu_secs: 30,
        memory_bytes: 2 << 30,
        wall: Duration::from_secs(60),
    };

    /// Sets the CPU-time and address-space limits in `cmd`'s child before it runs the program
    /// (they are inherited across `exec`, so a `sh -c 'exec nix …'` wrapper passes them on).
    pub fn apply(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        let caps = *self;
        // SAFETY: the closure runs in the forked child before exec; it only calls setrlimit(2),
        // which is async-signal-safe, and allocates nothing.
        #[allow(unsafe_code)]
        unsafe {
            cmd.pre_exec(move || caps.set_limits());
        }
    }

    fn set_limits(&self) -> std::io::Result<()> {
        use nix::sys::resource::{setrlimit, Resource};
        // SIGXCPU at the soft limit; SIGKILL one second later if it is ignored.
        setrlimit(
            Resource::RLIMIT_CPU,
            self.cpu_secs,
            self.cpu_secs.saturating_add(1),
        )?;
        setrlimit(Resource::RLIMIT_AS, self.memory_bytes, self.memory_bytes)?;
        Ok(())
    }

    /// Which cap ended a process that finished with `status` and `stderr` (`None`: it ran to
    /// its own end, successful or not).
    pub fn exceeded(&self, status: ExitStatus, stderr: &str) -> Option<Exceeded> {
        use std::os::unix::process::ExitStatusExt;
        // SIGXCPU at the soft limit, or SIGKILL at the hard one (Nix does not die of SIGXCPU).
        // `run` reports its own wall-clock kill before asking; with the address space capped,
        // the kernel's OOM killer is not what ends an evaluator.
        use nix::sys::signal::Signal;
        if matches!(status.signal(), Some(s) if s == Signal::SIGXCPU as i32 || s == Signal::SIGKILL as i32)
        {
            return Some(Exceeded::Cpu(self.cpu_secs));
        }
        let lower = stderr.to_ascii_lowercase();
        if lower.contains("out of memory") || lower.contains("std::bad_alloc") {
            return Some(Exceeded::Memory(self.memory_bytes));
        }
        None
    }
}

/// A cap an evaluation ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Exceeded {
    /// `RLIMIT_CPU`, seconds.
    #[error("it needed more than {0} s of CPU time; make the expression cheaper (e.g. no large `foldl'` or `genList`)")]
    Cpu(u64),
    /// `RLIMIT_AS`, bytes.
    #[error("it needed more than {} MiB of memory; make the expression smaller", .0 / (1024 * 1024))]
    Memory(u64),
    /// The wall-clock deadline.
    #[error("it did not finish within {} s (the machine may be busy; try again, or make the expression cheaper)", .0.as_secs())]
    Wall(Duration),
}

/// What a bounded evaluator process produced.
#[derive(Debug)]
pub struct Output {
    /// How it ended; `None` when it was killed at the wall-clock deadline.
    pub status: Option<ExitStatus>,
    /// Standard output (at most [`MAX_OUTPUT`] bytes).
    pub stdout: Vec<u8>,
    /// Standard error, lossily decoded (at most [`MAX_OUTPUT`] bytes).
    pub stderr: String,
    /// The cap that ended it, if one did.
    pub exceeded: Option<Exceeded>,
}

impl Output {
    /// It exited 0.
    pub fn success(&self) -> bool {
        self.status.is_some_and(|s| s.success())
    }
}

struct Slots {
    used: Mutex<usize>,
    freed: Condvar,
}

static SLOTS: Slots = Slots {
    used: Mutex::new(0),
    freed: Condvar::new(),
};

/// One of the [`MAX_CONCURRENT`] evaluator slots, released when dropped.
#[derive(Debug)]
pub struct Slot(());

impl Drop for Slot {
    fn drop(&mut self) {
        let mut used = SLOTS.used.lock().unwrap_or_else(|p| p.into_inner());
        *used = used.saturating_sub(1);
        SLOTS.freed.notify_one();
    }
}

/// Waits (blocking) for an evaluator slot.
pub fn slot() -> Slot {
    let mut used = SLOTS.used.lock().unwrap_or_else(|p| p.into_inner());
    while *used >= MAX_CONCURRENT {
        used = SLOTS.freed.wait(used).unwrap_or_else(|p| p.into_inner());
    }
    *used += 1;
    Slot(())
}

/// Evaluator processes running now (for tests and metrics).
pub fn in_use() -> usize {
    *SLOTS.used.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `cmd` within `caps` in an evaluator slot: stdin closed, stdout and stderr read while it
/// runs, killed at the wall-clock deadline.
///
/// # Errors
/// When the program cannot be started.
pub fn run(mut cmd: Command, caps: &Caps) -> std::io::Result<Output> {
    let _slot = slot();
    caps.apply(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        pipe.map(|mut p| {
            std::thread::spawn(move || {
                let mut kept = Vec::new();
                let _ = (&mut p).take(MAX_OUTPUT as u64).read_to_end(&mut kept);
                // Keep reading so the child never blocks on a full pipe.
                let _ = std::io::copy(&mut p, &mut std::io::sink());
                kept
            })
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now().checked_add(caps.wall);
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out.and_then(|t| t.join().ok()).unwrap_or_default();
    let stderr = err.and_then(|t| t.join().ok()).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr).into_owned();
    let exceeded = match status {
        None => Some(Exceeded::Wall(caps.wall)),
        Some(s) => caps.exceeded(s, &stderr),
    };
    Ok(Output {
        status,
        stdout,
        stderr,
        exceeded,
    })
}

#[cfg(test)]
mod tests;
