//! Runs a command the agent can specify behind osModa's boundary (DESIGN.md §1, Ring 0).
//!
//! The agent may name commands (SafeSwitch and watcher `command` checks, routines,
//! `/system/exec`); nothing it names may reach the approval path (the approval socket and its
//! directory), agentd's state or keyd's secrets. [`Boundary::run`] starts the command under
//! bubblewrap (`bwrap`) in a new mount namespace where:
//!
//! - the root file system is bound read-only, with a fresh `/dev`, `/proc` (a new PID
//!   namespace, so no other process's `/proc/<pid>/root` is visible) and `/tmp`;
//! - every [`Boundary`] path is hidden: a directory under an empty read-only tmpfs, a file
//!   under `/dev/null`. The masks are mounted last, over any writable bind;
//! - a writable path is bound by the descriptor it was checked through ([`Pinned`], `bwrap
//!   --bind-fd`), never by name, so a symlink swapped in after the check binds nothing else;
//! - the capability bounding set cannot undo that: a non-root command runs with no
//!   capabilities at all, a root command without [`DROPPED_CAPS`] (no `CAP_SYS_ADMIN` to
//!   unmount, no `CAP_SYS_PTRACE`, no `CAP_SYS_MODULE`, no `CAP_DAC_READ_SEARCH` for
//!   `open_by_handle_at`, no `CAP_MKNOD`/`CAP_SYS_RAWIO` for raw disks, ...), and a root command
//!   also cannot reach systemd's D-Bus or private socket (through which it could start a process
//!   outside the namespace);
//! - it runs as a non-root user unless [`Spec::user`] is `root` (default [`DEFAULT_USER`]),
//!   with `no_new_privs`, a cleared environment, its own session and process group, and it dies
//!   with its parent.
//!
//! The command is judged by its exit status: when it exits, every process it left behind (a
//! background child holding stdout, say) is killed with it, because its PID namespace ends, and
//! output is read only until then. A timeout kills the whole group.
//!
//! ```no_run
//! # async fn f() -> Result<(), osmoda_sandbox::SandboxError> {
//! use std::time::Duration;
//! use osmoda_sandbox::{Boundary, Spec};
//! let boundary = Boundary::osmoda_default();
//! let out = boundary
//!     .run(&Spec::new(["curl", "-fsS", "http://127.0.0.1:8080/"]).timeout(Duration::from_secs(5)))
//!     .await?;
//! println!("{} {}", out.success(), out.stdout_lossy());
//! # Ok(()) }
//! ```

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod limits;
mod pin;
pub mod ring;
mod run;
pub mod seccomp;

use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

pub use limits::{Enforcement, Limits, COMMAND_NICE};
pub use pin::Pinned;
pub use ring::{Bind, Network, RingOutput, RingSpec};
pub use run::{kill_group, Exit, Output};

/// User a command runs as when it does not ask for another one.
pub const DEFAULT_USER: &str = "nobody";

/// Default time budget of a command.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// Default cap on captured bytes, per stream; the rest is read and dropped.
pub const DEFAULT_OUTPUT_LIMIT: usize = 64 * 1024;

/// What a command run behind the boundary may use unless its [`Spec::limits`] says otherwise:
/// room for a real command (a `nix` evaluation, a compiler), never the machine. A fork bomb or
/// a memory hog inside it stays in its own group, away from the daemon that started it.
pub const COMMAND_LIMITS: Limits = Limits {
    memory_bytes: 2 << 30,
    tasks: 512,
};

/// Capabilities a root command never has (removed from its bounding set, so nothing it runs can
/// gain them back). A non-root command has none at all.
pub const DROPPED_CAPS: &[&str] = &[
    "sys_admin",
    "sys_ptrace",
    "sys_module",
    "dac_read_search",
    "mknod",
    "sys_rawio",
    "sys_boot",
    "bpf",
    "perfmon",
    // Its priority stays lowered (`COMMAND_NICE`, `RLIMIT_NICE` 0): no way back up.
    "sys_nice",
    "sys_resource",
];

/// The osModa paths hidden from every command by [`Boundary::osmoda_default`]: the approval
/// socket's and the approval relay's directories, and every daemon's state under the module's
/// default `services.osmoda.stateDir` ([`DAEMON_STATE_DIRS`]).
pub const OSMODA_MASKED: &[&str] = &[
    "/run/osmoda-admin",
    "/run/osmoda-relay",
    "/var/lib/osmoda/agentd",
    "/var/lib/osmoda/keyd",
    "/var/lib/osmoda/watch",
    "/var/lib/osmoda/routines",
    "/var/lib/osmoda/mesh",
    "/var/lib/osmoda/voice",
    "/var/lib/osmoda/egress",
];

/// Credentials hidden from every command, whoever it runs as (root could read them otherwise;
/// agentd's `/fs/read` refuses the same paths): password hashes, systemd credentials and other
/// secret directories, root's keys. A daemon's own key files elsewhere are added by the daemon
/// that knows them ([`Boundary::with`]).
pub const CREDENTIALS: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/run/secrets",
    "/run/credentials",
    "/run/keys",
    "/root/.ssh",
    "/root/.gnupg",
];

/// The daemons whose state lies at `<stateDir>/<name>` (the module's layout, and scripts/dev's).
/// A daemon acts on its state with its own identity — osmoda-watch delivers its spool's files
/// as its events and re-activates what its switch records name — so no command and no `/fs/*`
/// call of the agent's may read or write any of it. The agent's own places beside them
/// (`gateway/`, the memory notes) are not daemon state.
pub const DAEMON_STATE_DIRS: &[&str] = &[
    "agentd", "keyd", "watch", "routines", "mesh", "voice", "egress",
];

/// Paths hidden from root commands only: systemd's D-Bus and private sockets, and the users'
/// service managers under `/run/user` (`XDG_RUNTIME_DIR=/run/user/0 systemd-run --user` as
/// root: a process in the host's namespace, no `no_new_privs`, every capability, which the
/// approval socket would take for a person — the fresh review of issue 8, thirteenth session,
/// H3), would let root start a process outside the namespace. Unprivileged users are refused
/// there by polkit and by the managers' own uid check.
pub const ROOT_MASKED: &[&str] = &["/run/dbus", "/run/systemd/private", "/run/user"];

/// Why a command could not be started. A command that started and failed is an [`Output`].
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The argv was empty.
    #[error("empty command: give at least the program")]
    EmptyCommand,
    /// The user does not exist on this machine.
    #[error("unknown user {0:?}: name an existing user, or `root` for a command that needs root")]
    UnknownUser(String),
    /// The caller is not root, so it cannot run a command as another user.
    #[error("cannot run a command as {user:?}: this daemon runs as uid {uid}, not root, so commands run as uid {uid} (leave `user` unset), or run the daemon as root")]
    NotRoot {
        /// The user asked for.
        user: String,
        /// The caller's uid.
        uid: u32,
    },
    /// `bwrap` or `setpriv` is not installed.
    #[error("{0} not found in PATH: install it (bubblewrap, util-linux); commands never run outside the sandbox")]
    ToolMissing(&'static str),
    /// A mask, writable or working-directory path is not absolute and normal.
    #[error("invalid path {path:?}: {why}")]
    BadPath {
        /// The path given.
        path: PathBuf,
        /// What is wrong with it.
        why: &'static str,
    },
    /// No seccomp filter can be built here (Ring 1/2 only).
    #[error(transparent)]
    Seccomp(#[from] seccomp::FilterError),
    /// The sandbox process could not be spawned or waited for.
    #[error("cannot run the sandbox: {0}")]
    Io(#[from] std::io::Error),
}

/// The paths no sandboxed command may see. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Boundary {
    masked: Vec<PathBuf>,
}

/// One command to run behind a [`Boundary`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec {
    /// Program and arguments (no shell).
    pub argv: Vec<String>,
    /// User name (or numeric uid) to run as; `root` keeps root without [`DROPPED_CAPS`].
    pub user: String,
    /// Working directory inside the sandbox (default `/`).
    pub cwd: Option<PathBuf>,
    /// Environment besides `PATH`, `HOME`, `USER` and `LOGNAME` (everything else is cleared).
    pub env: Vec<(String, String)>,
    /// Paths bound writable (the rest of the file system is read-only), each by the
    /// descriptor it was opened and checked through; never over, inside or holding a mask
    /// under another name.
    pub writable: Vec<Pinned>,
    /// Time budget; the whole process group is killed when it ends.
    pub timeout: Duration,
    /// Bytes captured per stream.
    pub output_limit: usize,
    /// Bytes written to the command's standard input, which is then closed; `None`: stdin is
    /// `/dev/null`.
    pub stdin: Option<Vec<u8>>,
    /// Memory and tasks, by a cgroup of the run's own where the daemon can make one, else by
    /// `RLIMIT_AS`/`RLIMIT_NPROC` (see [`Boundary::run`]).
    pub limits: Limits,
}

impl Spec {
    /// A command with the defaults: [`DEFAULT_USER`], [`DEFAULT_TIMEOUT`], cwd `/`.
    pub fn new<I, S>(argv: I) -> Spec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Spec {
            argv: argv.into_iter().map(Into::into).collect(),
            user: DEFAULT_USER.to_string(),
            cwd: None,
            env: Vec::new(),
            writable: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            output_limit: DEFAULT_OUTPUT_LIMIT,
            stdin: None,
            limits: COMMAND_LIMITS,
        }
    }

    /// Feeds `bytes` to the command's standard input, then closes it. A command that does not
    /// read it is not held up: the bytes are written by a task of their own.
    pub fn stdin(mut self, bytes: impl Into<Vec<u8>>) -> Spec {
        self.stdin = Some(bytes.into());
        self
    }

    /// Runs as `user` (`root` for a command that needs root).
    pub fn user(mut self, user: impl Into<String>) -> Spec {
        self.user = user.into();
        self
    }

    /// Sets the time budget.
    pub fn timeout(mut self, timeout: Duration) -> Spec {
        self.timeout = timeout;
        self
    }

    /// Runs in `dir`.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Spec {
        self.cwd = Some(dir.into());
        self
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Spec {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Binds `path` writable: the object it was opened as, whatever its name points to later.
    pub fn writable(mut self, path: Pinned) -> Spec {
        self.writable.push(path);
        self
    }

    /// Bounds its memory and tasks by `limits` instead of [`COMMAND_LIMITS`].
    pub fn limits(mut self, limits: Limits) -> Spec {
        self.limits = limits;
        self
    }

    /// Captures at most `bytes` per stream.
    pub fn output_limit(mut self, bytes: usize) -> Spec {
        self.output_limit = bytes;
        self
    }
}

/// The identity a command runs under.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    uid: u32,
    gid: u32,
    name: String,
    home: PathBuf,
}

fn identity(user: &str) -> Result<Identity, SandboxError> {
    let found = match user.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)),
        Err(_) => nix::unistd::User::from_name(user),
    };
    let u = found
        .ok()
        .flatten()
        .ok_or_else(|| SandboxError::UnknownUser(user.to_string()))?;
    Ok(Identity {
        uid: u.uid.as_raw(),
        gid: u.gid.as_raw(),
        name: u.name,
        home: u.dir,
    })
}

/// `paths` resolved (so `/var/run/x` hides `/run/x`; a missing path hides nothing and is left
/// out), each once, and none inside another: a mask inside a masked directory hides nothing
/// more, and bwrap could not make its mount point in the outer one's read-only tmpfs.
pub(crate) fn outermost<'a>(paths: impl IntoIterator<Item = &'a Path>) -> Vec<PathBuf> {
    let mut real: Vec<PathBuf> = paths
        .into_iter()
        .filter_map(|p| std::fs::canonicalize(p).ok())
        .collect();
    real.sort();
    real.dedup();
    let all = real.clone();
    real.retain(|p| !all.iter().any(|o| o != p && p.starts_with(o)));
    real
}

/// The bwrap arguments hiding `real`: an empty read-only tmpfs over a directory, `/dev/null`
/// over anything else.
pub(crate) fn push_mask(a: &mut Vec<OsString>, real: PathBuf) {
    if real.is_dir() {
        a.extend([
            "--tmpfs".into(),
            real.clone().into(),
            "--remount-ro".into(),
            real.into(),
        ]);
    } else {
        a.extend(["--ro-bind".into(), "/dev/null".into(), real.into()]);
    }
}

/// Refuses a writable bind that is a hidden path, lies inside one, or holds one under another
/// name (by inode): the masks are mounted by name after the binds, so they cover a hidden path
/// only where it lies under the bind's own name.
fn refuse_over_masks(w: &Pinned, masks: &[PathBuf]) -> Result<(), SandboxError> {
    let bad = |why| {
        Err(SandboxError::BadPath {
            path: w.path().to_path_buf(),
            why,
        })
    };
    for m in masks {
        if w.inside(m) {
            return bad("it is a path the boundary hides, or inside one");
        }
        if w.holds(m) && !m.starts_with(w.path()) {
            return bad("it holds a path the boundary hides under another name");
        }
    }
    Ok(())
}

fn check_path(path: &Path) -> Result<(), SandboxError> {
    let bad = |why| {
        Err(SandboxError::BadPath {
            path: path.to_path_buf(),
            why,
        })
    };
    if !path.is_absolute() {
        return bad("must be absolute");
    }
    if path
        .components()
        .any(|c| !matches!(c, Component::RootDir | Component::Normal(_)))
    {
        return bad("must not contain `.` or `..`");
    }
    if path.parent().is_none() {
        return bad("must not be `/`");
    }
    Ok(())
}

fn find_tool(name: &'static str) -> Result<PathBuf, SandboxError> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or(SandboxError::ToolMissing(name))
}

impl Default for Boundary {
    fn default() -> Boundary {
        Boundary::osmoda_default()
    }
}

impl Boundary {
    /// A boundary hiding exactly `masked` (plus [`ROOT_MASKED`] from root commands).
    pub fn new<I, P>(masked: I) -> Boundary
    where
        I: IntoIterator<Item = P>,
        P: Into<PathBuf>,
    {
        Boundary {
            masked: masked.into_iter().map(Into::into).collect(),
        }
    }

    /// The boundary of a machine configured with the module's defaults ([`OSMODA_MASKED`]), and
    /// the machine's credentials ([`CREDENTIALS`], and the SSH host keys `/etc/ssh/ssh_host_*_key`).
    pub fn osmoda_default() -> Boundary {
        let host_keys = std::fs::read_dir("/etc/ssh")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("ssh_host_") && n.ends_with("_key"))
            });
        Boundary::new(
            OSMODA_MASKED
                .iter()
                .chain(CREDENTIALS)
                .map(PathBuf::from)
                .chain(host_keys),
        )
    }

    /// Also hides `path`.
    pub fn with(mut self, path: impl Into<PathBuf>) -> Boundary {
        let path = path.into();
        if !self.masked.contains(&path) {
            self.masked.push(path);
        }
        self
    }

    /// The paths this boundary hides (as given).
    pub fn masked(&self) -> &[PathBuf] {
        &self.masked
    }

    /// The full `bwrap … -- setpriv … -- argv` command line for `spec`, as it would run now
    /// (masks of paths that do not exist are left out: there is nothing to hide and bwrap
    /// cannot create a mount point on a read-only root).
    ///
    /// # Errors
    /// An empty argv, an unknown user, a missing `bwrap`/`setpriv`, a relative or `..` path.
    pub fn argv(&self, spec: &Spec) -> Result<Vec<OsString>, SandboxError> {
        self.argv_as(spec, nix::unistd::geteuid().as_raw())
    }

    /// [`Boundary::argv`] for a caller running as `caller_uid`. Root builds the namespace with
    /// its privileges and switches to the command's user with `setpriv`. Any other caller (a
    /// daemon run unprivileged, as `scripts/dev` does) uses an unprivileged user namespace:
    /// the command runs as the caller itself, with no capabilities and no nested user
    /// namespaces, so `user` may only be the caller's own user or the default.
    fn argv_as(&self, spec: &Spec, caller_uid: u32) -> Result<Vec<OsString>, SandboxError> {
        if spec.argv.is_empty() || spec.argv[0].is_empty() {
            return Err(SandboxError::EmptyCommand);
        }
        let mut who = identity(&spec.user)?;
        let privileged = caller_uid == 0;
        if !privileged {
            if who.uid != caller_uid && spec.user != DEFAULT_USER {
                return Err(SandboxError::NotRoot {
                    user: spec.user.clone(),
                    uid: caller_uid,
                });
            }
            who = identity(&caller_uid.to_string())?;
        }
        let bwrap = find_tool("bwrap")?;
        let setpriv = find_tool("setpriv")?;
        for p in self
            .masked
            .iter()
            .map(PathBuf::as_path)
            .chain(spec.writable.iter().map(Pinned::path))
        {
            check_path(p)?;
        }
        if let Some(cwd) = &spec.cwd {
            if !cwd.is_absolute() {
                return Err(SandboxError::BadPath {
                    path: cwd.clone(),
                    why: "the working directory must be absolute",
                });
            }
        }
        let root = who.uid == 0;
        let mut a: Vec<OsString> = Vec::new();
        let mut push = |items: &[&str]| a.extend(items.iter().map(OsString::from));
        if !privileged {
            push(&["--unshare-user", "--disable-userns"]);
        }
        push(&[
            "--die-with-parent",
            "--new-session",
            "--unshare-pid",
            "--unshare-ipc",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
        ]);
        let extra: &[&str] = if root { ROOT_MASKED } else { &[] };
        let masks = outermost(
            self.masked
                .iter()
                .map(PathBuf::as_path)
                .chain(extra.iter().map(Path::new)),
        );
        for w in &spec.writable {
            refuse_over_masks(w, &masks)?;
            a.extend(w.bwrap_args(true));
        }
        for real in masks {
            push_mask(&mut a, real);
        }
        a.push("--clearenv".into());
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        a.extend(["--setenv".into(), "PATH".into(), path]);
        for (k, v) in [
            ("HOME", who.home.as_os_str()),
            ("USER", who.name.as_ref()),
            ("LOGNAME", who.name.as_ref()),
        ] {
            a.extend(["--setenv".into(), k.into(), v.into()]);
        }
        for (k, v) in &spec.env {
            a.extend(["--setenv".into(), k.into(), v.into()]);
        }
        a.extend([
            "--chdir".into(),
            spec.cwd.clone().unwrap_or_else(|| "/".into()).into(),
            "--".into(),
        ]);
        if !privileged {
            // bwrap already gave it no capabilities, an empty bounding set and no_new_privs.
            a.extend(spec.argv.iter().map(OsString::from));
            a.insert(0, bwrap.into());
            return Ok(a);
        }
        a.push(setpriv.into());
        if root {
            let drop = DROPPED_CAPS
                .iter()
                .map(|c| format!("-{c}"))
                .collect::<Vec<_>>()
                .join(",");
            a.extend([
                format!("--bounding-set={drop}").into(),
                format!("--inh-caps={drop}").into(),
                "--ambient-caps=-all".into(),
            ]);
        } else {
            a.extend([
                format!("--reuid={}", who.uid).into(),
                format!("--regid={}", who.gid).into(),
                "--init-groups".into(),
                "--bounding-set=-all".into(),
                "--inh-caps=-all".into(),
                "--ambient-caps=-all".into(),
            ]);
        }
        a.extend(["--no-new-privs".into(), "--".into()]);
        a.extend(spec.argv.iter().map(OsString::from));
        a.insert(0, bwrap.into());
        Ok(a)
    }

    /// [`Boundary::argv`] as a caller with uid `caller_uid` would build it (for tests of the
    /// unprivileged mode; not part of the stable API).
    ///
    /// # Errors
    /// As [`Boundary::argv`].
    #[doc(hidden)]
    pub fn argv_for_test(
        &self,
        spec: &Spec,
        caller_uid: u32,
    ) -> Result<Vec<OsString>, SandboxError> {
        self.argv_as(spec, caller_uid)
    }

    /// A ready [`tokio::process::Command`] for `spec`: stdin closed (a pipe when `spec.stdin` is
    /// set; [`Boundary::run`] feeds it), its own process group,
    /// killed (with everything it started) when dropped. For callers that stream output
    /// themselves; most callers want [`Boundary::run`]. Kill the group with [`kill_group`].
    ///
    /// # Errors
    /// As [`Boundary::argv`].
    ///
    /// The command is given the descriptors of `spec`'s writable paths: spawn it while `spec`
    /// is alive.
    pub fn command(&self, spec: &Spec) -> Result<tokio::process::Command, SandboxError> {
        let argv = self.argv(spec)?;
        let mut c = tokio::process::Command::new(&argv[0]);
        c.args(&argv[1..])
            .env_clear()
            .stdin(if spec.stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .process_group(0)
            .kill_on_drop(true);
        limits::deprioritise(&mut c);
        pin::inherit(&mut c, spec.writable.iter().map(Pinned::raw_fd).collect());
        Ok(c)
    }

    /// Runs `spec` to its exit (or timeout) and returns its status and captured output. Every
    /// process it started is gone when this returns (or when the future is dropped).
    ///
    /// # Errors
    /// As [`Boundary::argv`], or when the sandbox cannot be spawned. A command that fails,
    /// times out, or that the sandbox itself refuses (bwrap prints `bwrap: …`) is an `Ok`
    /// [`Output`] with a non-success [`Exit`].
    ///
    /// The command is bounded by [`Spec::limits`]: when the daemon runs as root and may make a
    /// cgroup under its own (cgroup v1 `memory` + `pids`, or v2 with both controllers
    /// delegated), the sandbox joins a fresh group before `exec` and anything left in it is
    /// killed when the run ends; otherwise `RLIMIT_AS` (memory) and `RLIMIT_NPROC` (tasks of the
    /// command's user; the kernel never applies it to uid 0, so a root command is then bounded
    /// in memory only).
    pub async fn run(&self, spec: &Spec) -> Result<Output, SandboxError> {
        let mut cmd = self.command(spec)?;
        let group = if nix::unistd::geteuid().is_root() {
            limits::Group::create(&spec.limits)
        } else {
            None
        };
        let join = group
            .as_ref()
            .map(limits::Group::join_fds)
            .unwrap_or_default();
        let rlimits = group.is_none().then_some(spec.limits);
        #[allow(unsafe_code)]
        // SAFETY: `in_child` makes only async-signal-safe calls on descriptors that live (in
        // `group`) until the spawn inside `run::run` has returned, and on stack values.
        unsafe {
            cmd.pre_exec(move || limits::in_child(&join, &[], rlimits));
        }
        let out = run::run(cmd, spec.timeout, spec.output_limit, spec.stdin.clone()).await;
        if let Some(g) = group {
            let _ = tokio::task::spawn_blocking(move || g.remove()).await;
        }
        out
    }
}

#[cfg(test)]
mod tests;
