//! The Ring 1 and Ring 2 sandboxes (DESIGN.md §1) for untrusted tools: unlike
//! [`crate::Boundary::run`], which shows Ring 0 commands the whole (read-only) machine, a ring
//! sandbox starts from nothing.
//!
//! - an empty tmpfs root (read-only once built) holding only the software: `/nix/store` and
//!   `/run/current-system` on NixOS, `/usr` and its `/bin`, `/lib*` links elsewhere, and from
//!   `/etc` only [`ETC_ALLOWED`] (no `shadow`, no keys); a fresh `/dev`, `/proc`, `/tmp`,
//!   `/var/tmp`; nothing of `/run`, `/var/lib`, `/home` or `/root`, so no daemon socket and no
//!   daemon state;
//! - its own network namespace (only `lo`), PID, IPC, UTS and cgroup namespaces;
//! - the seccomp programs of [`crate::seccomp`]; no capabilities, `no_new_privs`; user `nobody`
//!   (a root daemon) or the daemon's own user in a user namespace (an unprivileged one);
//! - [`Limits`]: memory and tasks by cgroup or rlimit, a wall-clock budget after which the
//!   whole sandbox is killed, output captured up to a cap.
//!
//! Ring 1 adds the binds its capabilities declare and one way out: `osmoda-egress relay` runs
//! inside the namespace on `127.0.0.1:`[`RELAY_PORT`], passing bytes to the egress proxy's Unix
//! socket bound in, with `HTTPS_PROXY` (and `https_proxy`, `HTTP_PROXY`, `http_proxy`,
//! `ALL_PROXY`) pointing at it with the capability token as the proxy password. There is no
//! other route: the namespace has no interface but `lo`.

use std::ffi::OsString;
use std::io::Write as _;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::limits::{self, Enforcement, Group, Limits};
use crate::seccomp::{self, Sockets};
use crate::{
    check_path, find_tool, identity, Boundary, Output, Pinned, SandboxError, DEFAULT_USER,
};

/// The loopback port the Ring 1 relay listens on inside the sandbox.
pub const RELAY_PORT: u16 = 3128;

/// Where the egress binary and the proxy socket appear inside a Ring 1 sandbox.
pub const INSIDE_RELAY: &str = "/run/osmoda-sandbox/osmoda-egress";
/// See [`INSIDE_RELAY`].
pub const INSIDE_PROXY_SOCKET: &str = "/run/osmoda-sandbox/egress.sock";

/// What of `/etc` a ring sandbox sees (when present): user and group names, name service and
/// host tables, the time zone and the CA certificates. Never `shadow`, `gshadow`, `sudoers`,
/// `ssh`, or anything under `osmoda`.
pub const ETC_ALLOWED: &[&str] = &[
    "passwd",
    "group",
    "nsswitch.conf",
    "hosts",
    "localtime",
    "protocols",
    "services",
    "ssl",
    "ca-certificates",
    "pki",
    "alternatives",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "perl",
    "static",
];

/// What a ring sandbox never shows, even inside a declared bind: the daemons' sockets and
/// state, the system's and users' bus and systemd sockets, credentials, root's home. A bind
/// that contains one gets it masked (an empty directory, or an empty file); a bind of one or
/// inside one is refused ([`bind_refusal`]).
pub const RING_HIDDEN: &[&str] = &[
    "/run/osmoda",
    "/var/lib/osmoda",
    "/run/dbus",
    "/run/systemd",
    "/run/user",
    "/run/secrets",
    "/run/credentials",
    "/run/keys",
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/ssh",
    "/root",
];

/// Kernel interfaces, never bound from the host: the sandbox has its own `/proc` and `/dev`.
const KERNEL_TREES: &[&str] = &["/proc", "/sys", "/dev"];

/// Why `real` (a resolved absolute path) may not be bound into a ring sandbox, or `None`.
/// [`Boundary::run_ring`] refuses such a bind; agentd checks declared binds with it first so
/// that its refusal can name the capability.
pub fn bind_refusal(real: &Path) -> Option<&'static str> {
    if real.parent().is_none() {
        return Some("the whole file system is never bound into a sandbox");
    }
    if KERNEL_TREES.iter().any(|k| real.starts_with(k)) {
        return Some("kernel interfaces (/proc, /sys, /dev) are never bound into a sandbox; it has its own /proc and /dev");
    }
    if RING_HIDDEN.iter().any(|h| real.starts_with(h)) {
        return Some("daemon sockets and state, bus and systemd sockets, credentials and root's home are never shown in a sandbox");
    }
    None
}

/// The network of a ring sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Network {
    /// Ring 2: loopback only, and only `AF_UNIX` sockets.
    None,
    /// Ring 1: the egress proxy through the relay, with `token`.
    Egress {
        /// The `osmoda-egress` binary (its `relay` subcommand runs inside).
        relay_bin: PathBuf,
        /// The proxy's Unix socket on the host.
        proxy_socket: PathBuf,
        /// The capability token (a bearer credential: never logged here).
        token: String,
    },
}

/// A path bound into a Ring 1 sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// Absolute and resolved (no symlink on it), the same inside and out; bound by the
    /// descriptor it is opened as ([`Pinned`]).
    pub path: PathBuf,
    /// Writable (else read-only).
    pub writable: bool,
}

/// One command for a ring sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingSpec {
    /// Program and arguments (no shell).
    pub argv: Vec<String>,
    /// Ring 2 ([`Network::None`]) or Ring 1.
    pub network: Network,
    /// Declared binds (Ring 1); masks of the [`Boundary`] still apply inside them.
    pub binds: Vec<Bind>,
    /// Environment besides `PATH`, `HOME`, `USER`, `LOGNAME` and the proxy variables.
    pub env: Vec<(String, String)>,
    /// Working directory (default `/tmp`).
    pub cwd: Option<PathBuf>,
    /// Wall-clock budget; everything in the sandbox is killed when it ends.
    pub timeout: Duration,
    /// Bytes captured per stream.
    pub output_limit: usize,
    /// Standard input (`None`: `/dev/null`).
    pub stdin: Option<Vec<u8>>,
    /// Memory and tasks.
    pub limits: Limits,
}

impl RingSpec {
    /// A Ring 2 command with default limits, 60 s and 64 KiB of output per stream.
    pub fn new<I, S>(argv: I) -> RingSpec
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        RingSpec {
            argv: argv.into_iter().map(Into::into).collect(),
            network: Network::None,
            binds: Vec::new(),
            env: Vec::new(),
            cwd: None,
            timeout: crate::DEFAULT_TIMEOUT,
            output_limit: crate::DEFAULT_OUTPUT_LIMIT,
            stdin: None,
            limits: Limits::default(),
        }
    }
}

/// What a ring sandbox did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingOutput {
    /// Exit, output.
    pub output: Output,
    /// How the limits were enforced.
    pub enforced_by: Enforcement,
    /// The kernel killed a task for exceeding the memory limit (cgroups only).
    pub memory_exceeded: bool,
}

/// The proxy URL a Ring 1 command is given.
pub fn proxy_url(token: &str) -> String {
    format!("http://sandbox:{token}@127.0.0.1:{RELAY_PORT}")
}

fn push<S: Into<OsString>>(a: &mut Vec<OsString>, items: impl IntoIterator<Item = S>) {
    a.extend(items.into_iter().map(Into::into));
}

/// Creates `path`'s parent directories with mode 0755 (bwrap would make a file's parents
/// 0700, unreadable for the sandbox's user).
fn parents(a: &mut Vec<OsString>, path: &Path) {
    let mut up: Vec<&Path> = path.ancestors().skip(1).collect();
    up.pop(); // `/`
    for dir in up.into_iter().rev() {
        push(a, [OsString::from("--dir"), dir.into()]);
    }
}

/// Binds `path` as it is: a symlink is recreated (pointing where it points), a directory or a
/// file is bound read-only; a missing path is left out.
fn mirror(a: &mut Vec<OsString>, path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return;
    };
    parents(a, path);
    if meta.file_type().is_symlink() {
        if let Ok(target) = std::fs::read_link(path) {
            push(a, [OsString::from("--symlink"), target.into(), path.into()]);
        }
    } else {
        push(a, [OsString::from("--ro-bind"), path.into(), path.into()]);
    }
}

/// A pipe whose read end carries `bytes` (closed for writing) — how bwrap reads a seccomp
/// program. Close-on-exec until the child clears it.
fn program_fd(bytes: &[u8]) -> Result<OwnedFd, SandboxError> {
    let (r, w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| SandboxError::Io(e.into()))?;
    let mut w = std::fs::File::from(w);
    w.write_all(bytes)?;
    drop(w);
    Ok(r)
}

impl Boundary {
    /// The `bwrap` argv for `spec`, given the descriptors of the seccomp programs, and the
    /// declared binds opened once ([`Pinned`]): the argv binds their descriptors, so keep them
    /// open until bwrap has started.
    fn ring_argv(
        &self,
        spec: &RingSpec,
        caller_uid: u32,
        seccomp_fds: &[i32],
    ) -> Result<(Vec<OsString>, Vec<Pinned>), SandboxError> {
        if spec.argv.is_empty() || spec.argv[0].is_empty() {
            return Err(SandboxError::EmptyCommand);
        }
        let privileged = caller_uid == 0;
        let who = identity(&if privileged {
            DEFAULT_USER.to_string()
        } else {
            caller_uid.to_string()
        })?;
        let bwrap = find_tool("bwrap")?;
        let setpriv = find_tool("setpriv")?;
        for b in &spec.binds {
            check_path(&b.path)?;
        }
        let cwd = spec.cwd.clone().unwrap_or_else(|| PathBuf::from("/tmp"));
        if !cwd.is_absolute() {
            return Err(SandboxError::BadPath {
                path: cwd,
                why: "the working directory must be absolute",
            });
        }
        let mut a: Vec<OsString> = vec![bwrap.into()];
        if !privileged {
            push(&mut a, ["--unshare-user", "--disable-userns"]);
        }
        push(
            &mut a,
            [
                "--die-with-parent",
                "--new-session",
                "--unshare-pid",
                "--unshare-ipc",
                "--unshare-net",
                "--unshare-uts",
                "--unshare-cgroup-try",
                // No `--hostname`: systemd's ProtectHostname= (every osModa unit has it) refuses
                // sethostname in a seccomp filter bubblewrap inherits, and the ring failed to
                // start. Its own UTS namespace starts with the host's name and cannot change it.
            ],
        );
        for dir in ["/usr", "/nix/store"] {
            if Path::new(dir).is_dir() {
                push(&mut a, ["--ro-bind", dir, dir]);
            }
        }
        for p in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            mirror(&mut a, Path::new(p));
        }
        mirror(&mut a, Path::new("/run/current-system"));
        for f in ETC_ALLOWED {
            mirror(&mut a, &Path::new("/etc").join(f));
        }
        push(&mut a, ["--dev", "/dev", "--proc", "/proc"]);
        // Scratch space for the user, bounded like its memory (tmpfs pages are memory).
        let size = spec.limits.memory_bytes.to_string();
        for t in ["/tmp", "/var/tmp"] {
            push(&mut a, ["--perms", "1777", "--size", &size, "--tmpfs", t]);
        }
        let mut bound = Vec::new();
        let mut pinned = Vec::new();
        let hidden = crate::outermost(
            self.masked()
                .iter()
                .map(PathBuf::as_path)
                .chain(RING_HIDDEN.iter().map(Path::new)),
        );
        for b in &spec.binds {
            // Checked and bound as one object: the descriptor, not the name. The path is taken
            // as given, never resolved again here: the caller checked it resolved, and a
            // symlink on it now (a swap since) is refused, not followed somewhere unchecked.
            if let Some(why) = bind_refusal(&b.path) {
                return Err(SandboxError::BadPath {
                    path: b.path.clone(),
                    why,
                });
            }
            let p = Pinned::open(&b.path)?;
            let real = p.path().to_path_buf();
            if let Some(why) = bind_refusal(&real) {
                return Err(SandboxError::BadPath { path: real, why });
            }
            crate::refuse_over_masks(&p, &hidden)?;
            bound.push(real.clone());
            parents(&mut a, &real);
            push(&mut a, p.bwrap_args(b.writable));
            pinned.push(p);
        }
        let mut env: Vec<(String, String)> = Vec::new();
        let mut inner: Vec<String> = Vec::new();
        if let Network::Egress {
            relay_bin,
            proxy_socket,
            token,
        } = &spec.network
        {
            parents(&mut a, Path::new(INSIDE_RELAY));
            push(
                &mut a,
                [
                    OsString::from("--ro-bind"),
                    relay_bin.into(),
                    INSIDE_RELAY.into(),
                ],
            );
            push(
                &mut a,
                [
                    OsString::from("--ro-bind"),
                    proxy_socket.into(),
                    INSIDE_PROXY_SOCKET.into(),
                ],
            );
            let url = proxy_url(token);
            for k in [
                "HTTPS_PROXY",
                "https_proxy",
                "HTTP_PROXY",
                "http_proxy",
                "ALL_PROXY",
            ] {
                env.push((k.into(), url.clone()));
            }
            inner.extend(
                [
                    INSIDE_RELAY,
                    "relay",
                    "--listen",
                    &format!("127.0.0.1:{RELAY_PORT}"),
                    "--to",
                    INSIDE_PROXY_SOCKET,
                    "--",
                ]
                .map(String::from),
            );
        }
        inner.extend(spec.argv.iter().cloned());
        // Masks last, over any declared bind that contains a hidden path.
        let masks = self
            .masked()
            .iter()
            .map(PathBuf::as_path)
            .chain(RING_HIDDEN.iter().map(Path::new));
        for real in crate::outermost(masks) {
            if bound.iter().any(|b| real.starts_with(b)) {
                crate::push_mask(&mut a, real);
            }
        }
        push(&mut a, ["--remount-ro", "/", "--clearenv"]);
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
        push(&mut a, [OsString::from("--setenv"), "PATH".into(), path]);
        for (k, v) in [
            ("HOME", "/tmp"),
            ("USER", who.name.as_str()),
            ("LOGNAME", who.name.as_str()),
        ] {
            push(&mut a, ["--setenv", k, v]);
        }
        for (k, v) in env.iter().chain(&spec.env) {
            push(&mut a, ["--setenv", k.as_str(), v.as_str()]);
        }
        for fd in seccomp_fds {
            push(&mut a, ["--add-seccomp-fd".to_string(), fd.to_string()]);
        }
        push(&mut a, [OsString::from("--chdir"), cwd.into(), "--".into()]);
        if privileged {
            push(
                &mut a,
                [
                    setpriv.into(),
                    OsString::from(format!("--reuid={}", who.uid)),
                    format!("--regid={}", who.gid).into(),
                    "--clear-groups".into(),
                    "--bounding-set=-all".into(),
                    "--inh-caps=-all".into(),
                    "--ambient-caps=-all".into(),
                    "--no-new-privs".into(),
                    "--".into(),
                ],
            );
        }
        push(&mut a, inner);
        Ok((a, pinned))
    }

    /// Runs `spec` in a Ring 1 or Ring 2 sandbox to its exit or its timeout. Every process it
    /// started is gone when this returns.
    ///
    /// # Errors
    /// An empty argv, a missing `bwrap`/`setpriv`, a bad or missing bind path, an architecture
    /// without a seccomp filter, or a sandbox that cannot be spawned. A command that fails,
    /// times out or is refused by bwrap is an `Ok` with a non-success exit.
    pub async fn run_ring(&self, spec: &RingSpec) -> Result<RingOutput, SandboxError> {
        let sockets = match spec.network {
            Network::None => Sockets::UnixOnly,
            Network::Egress { .. } => Sockets::UnixAndInet,
        };
        let fds = seccomp::programs(sockets)?
            .iter()
            .map(|p| program_fd(&seccomp::to_bytes(p)))
            .collect::<Result<Vec<_>, _>>()?;
        let seccomp_fds: Vec<i32> = fds.iter().map(AsRawFd::as_raw_fd).collect();
        let (argv, pinned) = self.ring_argv(spec, nix::unistd::geteuid().as_raw(), &seccomp_fds)?;
        let raw: Vec<i32> = seccomp_fds
            .into_iter()
            .chain(pinned.iter().map(Pinned::raw_fd))
            .collect();
        let group = if nix::unistd::geteuid().is_root() {
            Group::create(&spec.limits)
        } else {
            None
        };
        let join = group.as_ref().map(Group::join_fds).unwrap_or_default();
        let rlimits = group.is_none().then_some(spec.limits);
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
        #[allow(unsafe_code)]
        // SAFETY: `in_child` makes only async-signal-safe calls on descriptors and values that
        // live until the spawn below returns.
        unsafe {
            c.pre_exec(move || limits::in_child(&join, &raw, rlimits));
        }
        let run = crate::run::run(c, spec.timeout, spec.output_limit, spec.stdin.clone()).await;
        drop(fds);
        drop(pinned);
        let (enforced_by, memory_exceeded) = match group {
            Some(g) => {
                let kind = g.kind;
                let oom = g.oom_killed();
                let _ = tokio::task::spawn_blocking(move || g.remove()).await;
                (kind, oom)
            }
            None => (Enforcement::Rlimit, false),
        };
        Ok(RingOutput {
            output: run?,
            enforced_by,
            memory_exceeded,
        })
    }

    /// [`Boundary::run_ring`]'s argv as a caller with uid `caller_uid` would build it (tests).
    ///
    /// # Errors
    /// As [`Boundary::run_ring`].
    #[doc(hidden)]
    pub fn ring_argv_for_test(
        &self,
        spec: &RingSpec,
        caller_uid: u32,
    ) -> Result<Vec<OsString>, SandboxError> {
        self.ring_argv(spec, caller_uid, &[10, 11, 12])
            .map(|(argv, _)| argv)
    }
}
