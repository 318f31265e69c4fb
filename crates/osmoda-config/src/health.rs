//! Health checks shared by watchers (`watch.json`) and SafeSwitch (`/switch/begin`).

use serde::{Deserialize, Serialize};

/// Default time budget of one probe when `timeout_secs` is absent.
pub const DEFAULT_CHECK_TIMEOUT_SECS: u64 = 10;
/// Default number of extra attempts before a check counts as failed.
pub const DEFAULT_CHECK_RETRIES: u32 = 0;
/// Default HTTP status an `http` check expects.
pub const DEFAULT_EXPECT_STATUS: u16 = 200;
/// Largest `timeout_secs` (a day): a check must end, and a switch's TTL bounds it anyway.
pub const MAX_CHECK_TIMEOUT_SECS: u64 = 86_400;
/// User a `command` check runs as when it names none: never root by default.
pub const DEFAULT_COMMAND_USER: &str = "nobody";

/// One deterministic health probe, tagged by `"type"` in JSON.
///
/// Every variant also accepts the common optional fields `timeout_secs` (probe time budget,
/// default [`DEFAULT_CHECK_TIMEOUT_SECS`]) and `retries` (extra attempts, default
/// [`DEFAULT_CHECK_RETRIES`]). Use [`HealthCheck::timeout_secs`] and [`HealthCheck::retries`]
/// to read them with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum HealthCheck {
    /// The systemd unit is `active`.
    Systemd {
        /// Unit name, e.g. `nginx.service`.
        unit: String,
        /// Probe time budget in seconds.
        timeout_secs: Option<u64>,
        /// Extra attempts before failing.
        retries: Option<u32>,
    },
    /// An HTTP GET answers with the expected status (and body substring).
    Http {
        /// URL to fetch; only loopback targets are meaningful for local checks.
        url: String,
        /// Expected status code (default 200).
        expect_status: Option<u16>,
        /// Substring the response body must contain.
        body_contains: Option<String>,
        /// Follow redirects (at most 5, `http://` only); by default a 3xx is the answer
        /// judged, so a redirect to a login page is not "healthy".
        follow_redirects: Option<bool>,
        /// Probe time budget in seconds.
        timeout_secs: Option<u64>,
        /// Extra attempts before failing.
        retries: Option<u32>,
    },
    /// A TCP connect to `host:port` succeeds.
    Tcp {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
        /// Probe time budget in seconds.
        timeout_secs: Option<u64>,
        /// Extra attempts before failing.
        retries: Option<u32>,
    },
    /// A command (argv, no shell) exits 0 within the timeout. It runs behind the command
    /// boundary (osmoda-sandbox): no view of the approval path or the daemons' secrets.
    Command {
        /// Program and arguments; must not be empty.
        command: Vec<String>,
        /// User to run as (default [`DEFAULT_COMMAND_USER`]); `root` only for a command that
        /// needs root, and then still without the capabilities that could undo the boundary.
        user: Option<String>,
        /// Probe time budget in seconds.
        timeout_secs: Option<u64>,
        /// Extra attempts before failing.
        retries: Option<u32>,
    },
    /// The filesystem holding `path` has at least `min_free_percent` free.
    Disk {
        /// Any path on the filesystem to measure.
        path: String,
        /// Minimum free space, 0..=100.
        min_free_percent: u8,
        /// Probe time budget in seconds.
        timeout_secs: Option<u64>,
        /// Extra attempts before failing.
        retries: Option<u32>,
    },
    /// A process with this exact name (comm) is running.
    Process {
        /// Process name as in `/proc/<pid>/comm`.
        name: String,
        /// Probe time budget in seconds.
        timeout_secs: Option<u64>,
        /// Extra attempts before failing.
        retries: Option<u32>,
    },
    /// agentd answers `GET /health`.
    Agentd {
        /// Probe time budget in seconds.
        timeout_secs: Option<u64>,
        /// Extra attempts before failing.
        retries: Option<u32>,
    },
}

impl HealthCheck {
    /// The `type` tag of this check, e.g. `"http"`.
    pub fn kind(&self) -> &'static str {
        match self {
            HealthCheck::Systemd { .. } => "systemd",
            HealthCheck::Http { .. } => "http",
            HealthCheck::Tcp { .. } => "tcp",
            HealthCheck::Command { .. } => "command",
            HealthCheck::Disk { .. } => "disk",
            HealthCheck::Process { .. } => "process",
            HealthCheck::Agentd { .. } => "agentd",
        }
    }

    fn common(&self) -> (Option<u64>, Option<u32>) {
        match self {
            HealthCheck::Systemd {
                timeout_secs,
                retries,
                ..
            }
            | HealthCheck::Http {
                timeout_secs,
                retries,
                ..
            }
            | HealthCheck::Tcp {
                timeout_secs,
                retries,
                ..
            }
            | HealthCheck::Command {
                timeout_secs,
                retries,
                ..
            }
            | HealthCheck::Disk {
                timeout_secs,
                retries,
                ..
            }
            | HealthCheck::Process {
                timeout_secs,
                retries,
                ..
            }
            | HealthCheck::Agentd {
                timeout_secs,
                retries,
            } => (*timeout_secs, *retries),
        }
    }

    /// Probe time budget with the default applied.
    pub fn timeout_secs(&self) -> u64 {
        self.common().0.unwrap_or(DEFAULT_CHECK_TIMEOUT_SECS)
    }

    /// Extra attempts with the default applied.
    pub fn retries(&self) -> u32 {
        self.common().1.unwrap_or(DEFAULT_CHECK_RETRIES)
    }

    /// The user a `command` check runs as, with the default applied (`None` for other kinds).
    pub fn command_user(&self) -> Option<&str> {
        match self {
            HealthCheck::Command { user, .. } => {
                Some(user.as_deref().unwrap_or(DEFAULT_COMMAND_USER))
            }
            _ => None,
        }
    }

    /// Semantic checks serde cannot express (non-empty argv, percent range, ...).
    ///
    /// # Errors
    /// Returns a message naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        match self.common().0 {
            Some(0) => return Err("timeout_secs must be at least 1".into()),
            Some(t) if t > MAX_CHECK_TIMEOUT_SECS => {
                return Err(format!(
                    "timeout_secs {t} is above the maximum {MAX_CHECK_TIMEOUT_SECS} (a day)"
                ))
            }
            _ => {}
        }
        match self {
            HealthCheck::Systemd { unit, .. } if unit.trim().is_empty() => {
                Err("unit must not be empty".into())
            }
            HealthCheck::Http {
                url, expect_status, ..
            } => {
                if !url.starts_with("http://") {
                    return Err(format!("url {url:?} must start with http:// (the check speaks plain HTTP; for https use a command check running curl)"));
                }
                match expect_status {
                    Some(s) if !(100..=599).contains(s) => Err(format!(
                        "expect_status {s} is not an HTTP status (100..=599)"
                    )),
                    _ => Ok(()),
                }
            }
            HealthCheck::Tcp { host, port, .. } if host.is_empty() || *port == 0 => {
                Err("tcp check needs a non-empty host and a port in 1..=65535".into())
            }
            HealthCheck::Command { command, .. } if command.is_empty() => {
                Err("command must contain at least the program name".into())
            }
            HealthCheck::Command {
                user: Some(user), ..
            } if !valid_user(user) => Err(format!(
                "user {user:?} is not a user name (1 to 32 of [a-z0-9_-], or a numeric uid)"
            )),
            HealthCheck::Disk {
                min_free_percent, ..
            } if *min_free_percent > 100 => Err(format!(
                "min_free_percent {min_free_percent} is not a percentage (0..=100)"
            )),
            HealthCheck::Process { name, .. } if name.is_empty() => {
                Err("process name must not be empty".into())
            }
            _ => Ok(()),
        }
    }
}

/// A POSIX-ish user name (`[a-z_][a-z0-9_-]*`, with `$` allowed last) or a numeric uid.
fn valid_user(u: &str) -> bool {
    let name = u.strip_suffix('$').unwrap_or(u);
    !u.is_empty()
        && u.len() <= 32
        && (u.bytes().all(|b| b.is_ascii_digit())
            || (name
                .bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<HealthCheck, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }

    #[test]
    fn parses_every_variant_from_interface_examples() {
        let cases = [
            (r#"{"type":"systemd","unit":"nginx.service"}"#, "systemd"),
            (
                r#"{"type":"http","url":"http://127.0.0.1/","expect_status":204,"body_contains":"ok"}"#,
                "http",
            ),
            (r#"{"type":"tcp","host":"127.0.0.1","port":80}"#, "tcp"),
            (
                r#"{"type":"command","command":["true"],"timeout_secs":3}"#,
                "command",
            ),
            (
                r#"{"type":"disk","path":"/","min_free_percent":10}"#,
                "disk",
            ),
            (r#"{"type":"process","name":"sshd"}"#, "process"),
            (r#"{"type":"agentd","retries":2}"#, "agentd"),
        ];
        for (json, kind) in cases {
            let c = parse(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert_eq!(c.kind(), kind);
            assert_eq!(c.validate(), Ok(()));
        }
    }

    #[test]
    fn defaults_apply_when_absent() {
        let c = parse(r#"{"type":"agentd","retries":2}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.timeout_secs(), DEFAULT_CHECK_TIMEOUT_SECS);
        assert_eq!(c.retries(), 2);
    }

    #[test]
    fn rejects_unknown_fields_and_types() {
        let e = parse(r#"{"type":"systemd","unit":"a","expectStatus":200}"#).unwrap_err();
        assert!(e.contains("unknown field `expectStatus`"), "{e}");
        let e = parse(r#"{"type":"ping","host":"x"}"#).unwrap_err();
        assert!(e.contains("unknown variant `ping`"), "{e}");
        let e = parse(r#"{"type":"tcp","host":"x"}"#).unwrap_err();
        assert!(e.contains("missing field `port`"), "{e}");
    }

    #[test]
    fn validate_catches_semantic_errors() {
        let bad = [
            r#"{"type":"command","command":[]}"#,
            r#"{"type":"disk","path":"/","min_free_percent":101}"#,
            r#"{"type":"http","url":"ftp://x"}"#,
            r#"{"type":"http","url":"http://x","expect_status":42}"#,
            r#"{"type":"tcp","host":"h","port":0}"#,
            r#"{"type":"agentd","timeout_secs":0}"#,
            r#"{"type":"agentd","timeout_secs":18446744073709551615}"#,
            r#"{"type":"command","command":["true"],"timeout_secs":86401}"#,
            r#"{"type":"command","command":["true"],"user":""}"#,
            r#"{"type":"command","command":["true"],"user":"Root"}"#,
            r#"{"type":"command","command":["true"],"user":"a b"}"#,
        ];
        for json in bad {
            let c = parse(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            assert!(c.validate().is_err(), "{json} should be invalid");
        }
    }

    #[test]
    fn command_user_defaults_to_nobody() {
        let c = parse(r#"{"type":"command","command":["true"]}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.command_user(), Some(DEFAULT_COMMAND_USER));
        let c = parse(r#"{"type":"command","command":["true"],"user":"root"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.command_user(), Some("root"));
        assert_eq!(c.validate(), Ok(()));
        let c = parse(r#"{"type":"agentd"}"#).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.command_user(), None);
        for ok in ["osmoda-check", "_svc", "1000", "machine$"] {
            assert!(valid_user(ok), "{ok}");
        }
    }

    #[test]
    fn serializes_snake_case_tag() {
        let c = HealthCheck::Process {
            name: "x".into(),
            timeout_secs: None,
            retries: None,
        };
        let v = serde_json::to_value(&c).unwrap_or_default();
        assert_eq!(v["type"], "process");
    }
}
