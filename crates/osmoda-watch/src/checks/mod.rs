//! Health checks shared by SafeSwitch probing and autopilot watchers.
//!
//! A check is described by the tagged JSON of `interfaces.md` ("Health check JSON"); it is
//! normalized into a [`Probe`] (kind + timeout + retries) and run against the real thing: a TCP
//! connect, an HTTP request, a child process, `statvfs`, `/proc`, systemd, agentd's socket.

mod http;
mod system;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use osmoda_sandbox::Boundary;

use serde::{Deserialize, Serialize};

pub use http::http_get;

use crate::runner::{ProcessRunner, Runner};

/// Default per-attempt timeout when a check does not set `timeout_secs`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What a check looks at; the variants mirror the `"type"` tag of the health check JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ProbeKind {
    /// A systemd unit is `active` or `reloading` (`activating` is waited for).
    Systemd {
        /// Unit name, e.g. `nginx.service`.
        unit: String,
    },
    /// An HTTP GET answers with the expected status (and body substring).
    Http {
        /// `http://host[:port]/path` URL.
        url: String,
        /// Status expected; any 2xx when unset.
        expect_status: Option<u16>,
        /// Substring the body must contain.
        body_contains: Option<String>,
        /// Follow up to 5 `http://` redirects; otherwise a 3xx is the answer judged.
        #[serde(default)]
        follow_redirects: bool,
    },
    /// A TCP connection can be established.
    Tcp {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A command exits 0 within the timeout, run behind the command boundary.
    Command {
        /// Program and arguments (no shell).
        command: Vec<String>,
        /// User it runs as (`root` keeps root without the boundary-breaking capabilities).
        user: String,
    },
    /// The file system holding `path` has at least `min_free_percent` free.
    Disk {
        /// Any path on the file system to measure.
        path: PathBuf,
        /// Minimum free space, percent of the file system size.
        min_free_percent: f64,
    },
    /// A process with this name is running.
    Process {
        /// Process name (`comm`, or the basename of `argv[0]`).
        name: String,
    },
    /// agentd answers `GET /health` on its socket.
    Agentd,
}

/// A normalized, runnable health check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Probe {
    /// What is checked.
    #[serde(flatten)]
    pub kind: ProbeKind,
    /// Per-attempt timeout.
    #[serde(with = "secs")]
    pub timeout: Duration,
    /// Extra attempts after a failed one.
    pub retries: u32,
}

mod secs {
    //! Serializes a `Duration` as fractional seconds.
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// Where checks find the things that are not part of the check itself.
#[derive(Clone, Default)]
pub struct CheckEnv {
    /// agentd's socket, for `{"type":"agentd"}`.
    pub agentd_socket: Option<PathBuf>,
    /// Pause between a failed attempt and the next retry.
    pub retry_delay: Duration,
    /// What `command` checks must not see (they only ever run behind it); shared by every
    /// clone, so a reloaded `watch.json` reaches running watchers.
    pub boundary: SharedBoundary,
    /// Runs `systemctl` for `systemd` checks; real processes when `None`.
    pub systemctl: Option<Arc<dyn Runner>>,
}

/// A [`Boundary`] replaced as a whole when the configuration changes.
#[derive(Debug, Clone, Default)]
pub struct SharedBoundary(Arc<std::sync::RwLock<Boundary>>);

impl SharedBoundary {
    /// Shares `b`.
    pub fn new(b: Boundary) -> SharedBoundary {
        SharedBoundary(Arc::new(std::sync::RwLock::new(b)))
    }

    /// The boundary now.
    pub fn get(&self) -> Boundary {
        self.0
            .read()
            .map(|b| b.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Replaces it for every holder.
    pub fn set(&self, b: Boundary) {
        match self.0.write() {
            Ok(mut g) => *g = b,
            Err(p) => *p.into_inner() = b,
        }
    }
}

impl std::fmt::Debug for CheckEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckEnv")
            .field("agentd_socket", &self.agentd_socket)
            .field("retry_delay", &self.retry_delay)
            .field("boundary", &self.boundary)
            .field("systemctl", &self.systemctl.as_ref().map(|_| "runner"))
            .finish()
    }
}

/// The result of running one check (all attempts).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckOutcome {
    /// Did the last attempt pass?
    pub ok: bool,
    /// Human-readable result of the last attempt.
    pub detail: String,
    /// Attempts made (1 + retries used).
    pub attempts: u32,
}

impl Probe {
    /// A short human label, e.g. `tcp 127.0.0.1:80`.
    pub fn label(&self) -> String {
        match &self.kind {
            ProbeKind::Systemd { unit } => format!("systemd {unit}"),
            ProbeKind::Http { url, .. } => format!("http {url}"),
            ProbeKind::Tcp { host, port } => format!("tcp {host}:{port}"),
            ProbeKind::Command { command, user }
                if user == osmoda_config::health::DEFAULT_COMMAND_USER =>
            {
                format!("command {}", command.join(" "))
            }
            ProbeKind::Command { command, user } => {
                format!("command {} (as {user})", command.join(" "))
            }
            ProbeKind::Disk {
                path,
                min_free_percent,
            } => {
                format!("disk {} >= {min_free_percent}% free", path.display())
            }
            ProbeKind::Process { name } => format!("process {name}"),
            ProbeKind::Agentd => "agentd health".to_string(),
        }
    }

    /// Runs the check, retrying up to `retries` times; each attempt is bounded by `timeout`.
    pub async fn run(&self, env: &CheckEnv) -> CheckOutcome {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let res = match tokio::time::timeout(self.timeout, self.attempt(env)).await {
                Ok(r) => r,
                Err(_) => Err(format!("timed out after {:?}", self.timeout)),
            };
            match res {
                Ok(detail) => {
                    return CheckOutcome {
                        ok: true,
                        detail,
                        attempts,
                    }
                }
                Err(detail) if attempts > self.retries => {
                    return CheckOutcome {
                        ok: false,
                        detail,
                        attempts,
                    }
                }
                Err(_) => tokio::time::sleep(env.retry_delay).await,
            }
        }
    }

    async fn attempt(&self, env: &CheckEnv) -> Result<String, String> {
        match &self.kind {
            ProbeKind::Systemd { unit } => match &env.systemctl {
                Some(r) => system::systemd_active(r.as_ref(), unit).await,
                None => system::systemd_active(&ProcessRunner, unit).await,
            },
            ProbeKind::Http {
                url,
                expect_status,
                body_contains,
                follow_redirects,
            } => {
                http::check_url(
                    url,
                    *expect_status,
                    body_contains.as_deref(),
                    *follow_redirects,
                )
                .await
            }
            ProbeKind::Tcp { host, port } => tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map(|_| format!("connected to {host}:{port}"))
                .map_err(|e| format!("cannot connect to {host}:{port}: {e}")),
            ProbeKind::Command { command, user } => {
                system::run_command(&env.boundary.get(), command, user, self.timeout).await
            }
            ProbeKind::Disk {
                path,
                min_free_percent,
            } => system::disk_free(path, *min_free_percent),
            ProbeKind::Process { name } => system::process_running(name),
            ProbeKind::Agentd => match &env.agentd_socket {
                None => Err("no agentd socket configured (--agentd-socket)".to_string()),
                Some(sock) => {
                    let stream = tokio::net::UnixStream::connect(sock).await.map_err(|e| {
                        format!("cannot connect to agentd at {}: {e}", sock.display())
                    })?;
                    let (status, _) = http_get(stream, "localhost", "/health").await?;
                    if (200..300).contains(&status) {
                        Ok(format!("agentd /health answered {status}"))
                    } else {
                        Err(format!("agentd /health answered {status}"))
                    }
                }
            },
        }
    }
}

#[cfg(test)]
mod tests;

/// Whether `c` is a check that can run here: [`osmoda_config::HealthCheck::validate`], plus
/// what the probe itself needs (an `http` URL the check can fetch: `http://host[:port]/path`).
/// A check that could never pass is refused up front instead of rolling back a healthy switch.
///
/// # Errors
/// A message naming the offending field.
pub fn validate(c: &osmoda_config::HealthCheck) -> Result<(), String> {
    c.validate()?;
    if let osmoda_config::HealthCheck::Http { url, .. } = c {
        let (_, port, path) = http::parse_http_url(url)?;
        if port == 0 {
            return Err(format!("url {url:?} has port 0; give a port in 1..=65535"));
        }
        path.parse::<hyper::Uri>()
            .map_err(|e| format!("url {url:?} has a path no HTTP request can carry: {e}"))?;
    }
    Ok(())
}

/// Normalizes a configured check into a runnable [`Probe`].
pub fn probe_of(c: &osmoda_config::HealthCheck) -> Probe {
    use osmoda_config::HealthCheck as H;
    let kind = match c {
        H::Systemd { unit, .. } => ProbeKind::Systemd { unit: unit.clone() },
        H::Http {
            url,
            expect_status,
            body_contains,
            follow_redirects,
            ..
        } => ProbeKind::Http {
            url: url.clone(),
            expect_status: *expect_status,
            body_contains: body_contains.clone(),
            follow_redirects: follow_redirects.unwrap_or(false),
        },
        H::Tcp { host, port, .. } => ProbeKind::Tcp {
            host: host.clone(),
            port: *port,
        },
        H::Command { command, .. } => ProbeKind::Command {
            command: command.clone(),
            user: c.command_user().unwrap_or_default().to_string(),
        },
        H::Disk {
            path,
            min_free_percent,
            ..
        } => ProbeKind::Disk {
            path: PathBuf::from(path),
            min_free_percent: f64::from(*min_free_percent),
        },
        H::Process { name, .. } => ProbeKind::Process { name: name.clone() },
        H::Agentd { .. } => ProbeKind::Agentd,
    };
    Probe {
        kind,
        timeout: Duration::from_secs(c.timeout_secs()),
        retries: c.retries(),
    }
}
