//! Resource limits of a Ring 1/2 sandbox: memory and the number of tasks (processes and
//! threads), through a cgroup of its own where the daemon may create one under its own cgroup
//! (cgroup v1 `memory` + `pids` hierarchies, or cgroup v2 with both controllers delegated), and
//! through `setrlimit` otherwise (`RLIMIT_AS` and `RLIMIT_NPROC`, which counts every task of
//! the sandbox's user, so it is a coarser bound).
//!
//! The sandbox process joins its cgroup itself, between `fork` and `exec`, so not one of its
//! descendants is ever created outside it.

use std::io::Write as _;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// What a sandbox may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory in bytes (cgroup: resident + swap; rlimit: address space).
    pub memory_bytes: u64,
    /// Tasks (processes and threads) at once.
    pub tasks: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            memory_bytes: 512 << 20,
            tasks: 128,
        }
    }
}

/// How [`Limits`] were enforced for one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enforcement {
    /// A cgroup v1 pair (memory, pids) made for the run.
    CgroupV1,
    /// A cgroup v2 group made for the run.
    CgroupV2,
    /// `RLIMIT_AS` and `RLIMIT_NPROC` (no cgroup could be made here).
    Rlimit,
}

impl Enforcement {
    /// `cgroup-v1`, `cgroup-v2`, `rlimit`.
    pub fn as_str(self) -> &'static str {
        match self {
            Enforcement::CgroupV1 => "cgroup-v1",
            Enforcement::CgroupV2 => "cgroup-v2",
            Enforcement::Rlimit => "rlimit",
        }
    }
}

/// The cgroup(s) of one run, removed (with anything left in them killed) by [`Group::remove`].
#[derive(Debug)]
pub(crate) struct Group {
    dirs: Vec<PathBuf>,
    /// `cgroup.procs` of each dir, opened for writing before the fork.
    procs: Vec<OwnedFd>,
    /// Where the out-of-memory kill count is read.
    events: Option<(PathBuf, &'static str)>,
    pub(crate) kind: Enforcement,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn own_paths() -> Vec<(String, String)> {
    std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let (_, ctl, path) = (it.next()?, it.next()?, it.next()?);
            Some((ctl.to_string(), path.to_string()))
        })
        .collect()
}

fn write(path: &Path, value: &str) -> std::io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .write_all(value.as_bytes())
}

fn open_procs(dir: &Path) -> std::io::Result<OwnedFd> {
    Ok(std::fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.procs"))?
        .into())
}

impl Group {
    /// A fresh cgroup with `limits`, or `None` when none can be made here (not root, no
    /// controllers, v2 without delegation): the caller then falls back to rlimits.
    pub(crate) fn create(limits: &Limits) -> Option<Group> {
        let name = format!(
            "osmoda-sandbox-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let own = own_paths();
        let find = |ctl: &str| {
            own.iter()
                .find(|(c, _)| c.split(',').any(|c| c == ctl))
                .map(|(_, p)| p.trim_start_matches('/').to_string())
        };
        let root = Path::new("/sys/fs/cgroup");
        if let (Some(mem), Some(pids)) = (find("memory"), find("pids")) {
            let mem_dir = root.join("memory").join(mem).join(&name);
            let pids_dir = root.join("pids").join(pids).join(&name);
            let mut g = Group {
                dirs: Vec::new(),
                procs: Vec::new(),
                events: Some((mem_dir.join("memory.oom_control"), "oom_kill ")),
                kind: Enforcement::CgroupV1,
            };
            let made = (|| -> std::io::Result<()> {
                for d in [&mem_dir, &pids_dir] {
                    std::fs::create_dir(d)?;
                    g.dirs.push(d.clone());
                }
                write(
                    &mem_dir.join("memory.limit_in_bytes"),
                    &limits.memory_bytes.to_string(),
                )?;
                let memsw = mem_dir.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &limits.memory_bytes.to_string())?;
                }
                write(&pids_dir.join("pids.max"), &limits.tasks.to_string())?;
                for d in [&mem_dir, &pids_dir] {
                    g.procs.push(open_procs(d)?);
                }
                Ok(())
            })();
            return match made {
                Ok(()) => Some(g),
                Err(_) => {
                    g.remove();
                    None
                }
            };
        }
        let (_, v2) = own.iter().find(|(c, _)| c.is_empty())?;
        let parent = root.join(v2.trim_start_matches('/'));
        let controllers = std::fs::read_to_string(parent.join("cgroup.subtree_control")).ok()?;
        let has = |c: &str| controllers.split_whitespace().any(|x| x == c);
        if !(has("memory") && has("pids")) {
            return None;
        }
        let dir = parent.join(&name);
        let mut g = Group {
            dirs: Vec::new(),
            procs: Vec::new(),
            events: Some((dir.join("memory.events"), "oom_kill ")),
            kind: Enforcement::CgroupV2,
        };
        let made = (|| -> std::io::Result<()> {
            std::fs::create_dir(&dir)?;
            g.dirs.push(dir.clone());
            write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
            let _ = write(&dir.join("memory.swap.max"), "0");
            write(&dir.join("pids.max"), &limits.tasks.to_string())?;
            g.procs.push(open_procs(&dir)?);
            Ok(())
        })();
        match made {
            Ok(()) => Some(g),
            Err(_) => {
                g.remove();
                None
            }
        }
    }

    /// The `cgroup.procs` descriptors the child writes `0` to before `exec`.
    pub(crate) fn join_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// Whether the kernel killed a task of the group for memory.
    pub(crate) fn oom_killed(&self) -> bool {
        let Some((file, key)) = &self.events else {
            return false;
        };
        std::fs::read_to_string(file).is_ok_and(|t| {
            t.lines().any(|l| {
                l.strip_prefix(key)
                    .is_some_and(|n| n.trim().parse::<u64>().is_ok_and(|n| n > 0))
            })
        })
    }

    /// Kills whatever is left in the group and removes it. The sandbox's PID namespace has
    /// normally ended already; this bounds a bug, it does not wait for long.
    pub(crate) fn remove(self) {
        for _ in 0..200 {
            let mut left = false;
            for d in &self.dirs {
                let procs = std::fs::read_to_string(d.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
                    left = true;
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
            if !left
                && self
                    .dirs
                    .iter()
                    .all(|d| std::fs::remove_dir(d).is_ok() || !d.exists())
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// The nice value every sandboxed command runs at: the daemon that started it (agentd's approval
/// thread, its workers, osmoda-watch's prober) keeps about nine times a command process's share
/// of the CPU they share (CFS weights 1024 and 110).
pub const COMMAND_NICE: i32 = 10;

/// Makes `cmd`'s child run at [`COMMAND_NICE`] (or nicer, if the daemon already is) with `RLIMIT_NICE` 0, so that neither it nor
/// anything it starts can raise its priority again (root commands lack `CAP_SYS_NICE` and
/// `CAP_SYS_RESOURCE`, see [`crate::DROPPED_CAPS`]).
pub(crate) fn deprioritise(cmd: &mut tokio::process::Command) {
    #[allow(unsafe_code)]
    // SAFETY: only `setpriority` and `setrlimit`, async-signal-safe, on stack values.
    unsafe {
        cmd.pre_exec(|| {
            // Never raised: a daemon already running nicer than this keeps its value.
            let now = libc::getpriority(libc::PRIO_PROCESS, 0);
            if now < COMMAND_NICE && libc::setpriority(libc::PRIO_PROCESS, 0, COMMAND_NICE) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let none = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            if libc::setrlimit(libc::RLIMIT_NICE, &none) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// In the forked child, before `exec`: joins the cgroups, or sets the rlimits when there are
/// none, clears close-on-exec on the descriptors bwrap must inherit, and turns off core dumps.
///
/// # Safety
/// Runs between `fork` and `exec`: only async-signal-safe calls (`write`, `fcntl`,
/// `setrlimit`), no allocation.
pub(crate) fn in_child(
    join: &[RawFd],
    inherit: &[RawFd],
    rlimits: Option<Limits>,
) -> std::io::Result<()> {
    #[allow(unsafe_code)]
    // SAFETY: plain system calls on descriptors this process owns and on stack values.
    unsafe {
        for fd in join {
            if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
        }
        for fd in inherit {
            if libc::fcntl(*fd, libc::F_SETFD, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        let set = |res, v: u64| {
            let l = libc::rlimit {
                rlim_cur: v,
                rlim_max: v,
            };
            if libc::setrlimit(res, &l) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        set(libc::RLIMIT_CORE, 0)?;
        if let Some(l) = rlimits {
            set(libc::RLIMIT_AS, l.memory_bytes)?;
            set(libc::RLIMIT_NPROC, l.tasks)?;
        }
    }
    Ok(())
}
