//! Caller identity from `SO_PEERCRED`: the only source of the `actor` agentd records.

use axum::extract::connect_info::Connected;
use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::serve::IncomingStream;
use serde_json::json;
use tokio::net::UnixListener;

use crate::error::ApiError;

/// Header in which a daemon names itself (see `osmoda_client::DAEMON_HEADER`).
pub const DAEMON_HEADER: &str = "x-osmoda-daemon";

/// The ledger actor of a request: the role the caller claims in [`DAEMON_HEADER`] (default
/// `agent`), always with the kernel's identity of the connection attached.
#[derive(Clone, Debug)]
pub struct Caller {
    /// Kernel identity of the connection.
    pub peer: Peer,
    /// `<role>[uid=..,pid=..,exe=..]`.
    pub actor: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<Peer>>()
            .map(|c| c.0.clone())
            .unwrap_or(Peer {
                uid: None,
                pid: None,
                exe: None,
                mnt_ns: None,
                action: None,
            });
        let role = match parts.headers.get(DAEMON_HEADER) {
            None => "agent",
            Some(v) => v.to_str().ok().filter(|r| valid_role(r)).ok_or_else(|| {
                ApiError::bad_request(format!("invalid {DAEMON_HEADER} header")).with_detail(
                    json!({ "hint": "1 to 40 characters of [a-z0-9._-], not `human` or `agentd`" }),
                )
            })?,
        };
        // A claim of one of osModa's daemon names must come from that daemon.
        crate::namespaces::check_claim(&peer, role)?;
        Ok(Caller {
            actor: peer.actor(role),
            peer,
        })
    }
}

/// The kernel-reported identity of the process on the other end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    /// Effective uid of the caller; `None` if the kernel did not report credentials.
    pub uid: Option<u32>,
    /// Process id of the caller.
    pub pid: Option<i32>,
    /// Basename of the caller's executable (from `/proc/<pid>/exe`), when readable.
    pub exe: Option<String>,
    /// The caller's mount namespace (`mnt:[<inode>]` from `/proc/<pid>/ns/mnt`), read when it
    /// connected; `None` when it could not be read.
    pub mnt_ns: Option<String>,
    /// The action this request is made for ([`ACTION_HEADER`], set by [`mark_action`]): the
    /// process is a daemon acting for something it runs (a routine's http action), so the
    /// request has none of the daemon's standing and its events name the action.
    pub action: Option<String>,
}

/// Header by which a daemon marks a request made for an action it runs
/// (`osmoda_client::ACTION_HEADER`).
pub const ACTION_HEADER: &str = "x-osmoda-action";

/// Router layer: a request with [`ACTION_HEADER`] gets the label on its [`Peer`], so no check
/// takes it for the daemon (or for a process outside the command sandbox) and every actor
/// recorded for it carries `action=<label>`. Anyone may mark a request (it only loses
/// standing); an invalid label is a 400.
///
/// # Errors
/// 400 when the label is not 1..=40 of `[a-z0-9._-]`.
pub async fn mark_action(
    mut req: axum::extract::Request,
) -> Result<axum::extract::Request, ApiError> {
    let Some(v) = req.headers().get(ACTION_HEADER) else {
        return Ok(req);
    };
    let label = v
        .to_str()
        .ok()
        .filter(|l| valid_role(l))
        .ok_or_else(|| {
            ApiError::bad_request(format!("invalid {ACTION_HEADER} header"))
                .with_detail(json!({ "hint": "1 to 40 characters of [a-z0-9._-]" }))
        })?
        .to_string();
    if let Some(ConnectInfo(peer)) = req.extensions_mut().get_mut::<ConnectInfo<Peer>>() {
        peer.action = Some(label);
    }
    Ok(req)
}

impl Peer {
    /// Identity of the peer of a connected Unix stream.
    pub fn of(stream: &tokio::net::UnixStream) -> Peer {
        let cred = stream.peer_cred().ok();
        let pid = cred.as_ref().and_then(|c| c.pid());
        let exe = pid
            .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
            .and_then(|p| {
                p.file_name().map(|n| {
                    n.to_string_lossy()
                        .trim_end_matches(" (deleted)")
                        .to_string()
                })
            });
        Peer {
            uid: cred.map(|c| c.uid()),
            pid,
            exe,
            mnt_ns: pid.and_then(|pid| mount_namespace(&pid.to_string())),
            action: None,
        }
    }

    /// Refuses a peer inside the command boundary (DESIGN.md §1): a process whose mount
    /// namespace is neither agentd's own nor the host's (pid 1's), as every command the agent
    /// can specify runs in a fresh one (`osmoda-sandbox`). Used where a decision is recorded as
    /// `human`: a person's `agentctl` runs in the host's namespace.
    ///
    /// # Errors
    /// 403 with the namespace found, when it is another one or cannot be read.
    pub fn require_outside_boundary(&self) -> Result<(), ApiError> {
        let ours = mount_namespace("self");
        let host = mount_namespace("1");
        match &self.mnt_ns {
            // A request made for an action (a routine's) counts as inside: the daemon only
            // carries it.
            _ if self.action.is_some() => Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "a human decision must come from outside the command sandbox: this request is made for an action a daemon runs",
            )
            .with_detail(json!({
                "caller": self.actor("caller"),
                "hint": "decide with `agentctl approvals approve|deny <ticket>` from a person's shell on the host, not from a command, check or routine",
            }))),
            Some(ns) if Some(ns) == ours.as_ref() || Some(ns) == host.as_ref() => Ok(()),
            found => Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "a human decision must come from outside the command sandbox: this caller runs in another mount namespace",
            )
            .with_detail(json!({
                "caller": self.actor("caller"),
                "mount_namespace": found,
                "expected": [ours, host],
                "hint": "decide with `agentctl approvals approve|deny <ticket>` from a person's shell on the host, not from a command, check or routine",
            }))),
        }
    }
    /// The ledger actor for this peer acting under `role` (a daemon name the caller claims, or
    /// `agent` / `human`). The claim is never recorded alone: the kernel's uid, pid and executable
    /// are always attached, so a caller cannot pass itself off as another process.
    pub fn actor(&self, role: &str) -> String {
        let uid = self.uid.map_or_else(|| "?".to_string(), |u| u.to_string());
        let pid = self.pid.map_or_else(|| "?".to_string(), |p| p.to_string());
        let exe: String = self
            .exe
            .as_deref()
            .unwrap_or("?")
            .chars()
            .map(|c| {
                if c == '|' || c.is_control() || c == ']' {
                    '_'
                } else {
                    c
                }
            })
            .take(40)
            .collect();
        match &self.action {
            // First in the brackets, where nothing a caller names can put it.
            Some(a) => format!("{role}[action={a},uid={uid},pid={pid},exe={exe}]"),
            None => format!("{role}[uid={uid},pid={pid},exe={exe}]"),
        }
    }
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        Peer::of(stream.io())
    }
}

/// Roles only agentd itself assigns: `human` (the approval socket) and `agentd`.
pub const RESERVED_ROLES: &[&str] = &["human", "agentd"];

/// Whether `name` is acceptable as a claimed daemon name: 1..=40 of `[a-z0-9._-]`, and not one
/// of the [`RESERVED_ROLES`] (an agent must never be recorded as the human who approves).
pub fn valid_role(name: &str) -> bool {
    !RESERVED_ROLES.contains(&name)
        && !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// `mnt:[<inode>]` of `/proc/<who>/ns/mnt` (`who` = a pid or `self`).
fn mount_namespace(who: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{who}/ns/mnt"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actor_sanitizes_the_executable_name() {
        let p = Peer {
            uid: Some(0),
            pid: Some(42),
            exe: Some("we|ird]\nname".into()),
            mnt_ns: None,
            action: None,
        };
        assert_eq!(
            p.actor("osmoda-watch"),
            "osmoda-watch[uid=0,pid=42,exe=we_ird__name]"
        );
    }

    #[test]
    fn roles_are_restricted() {
        assert!(valid_role("osmoda-watch"));
        assert!(!valid_role(""));
        assert!(!valid_role("Watch"));
        assert!(!valid_role("a|b"));
        assert!(!valid_role("human"), "nobody claims to be the human");
        assert!(!valid_role("agentd"));
        assert!(!valid_role(&"a".repeat(41)));
    }

    fn peer(mnt_ns: Option<String>) -> Peer {
        Peer {
            uid: Some(0),
            pid: Some(1),
            exe: Some("agentctl".into()),
            mnt_ns,
            action: None,
        }
    }

    #[test]
    fn only_agentd_s_or_the_host_s_mount_namespace_may_decide() {
        assert!(peer(mount_namespace("self"))
            .require_outside_boundary()
            .is_ok());
        let Err(e) = peer(Some("mnt:[1]".into())).require_outside_boundary() else {
            panic!("another mount namespace was accepted");
        };
        assert_eq!(e.status, axum::http::StatusCode::FORBIDDEN);
        assert!(
            e.error.contains("outside the command sandbox"),
            "{}",
            e.error
        );
        assert!(
            peer(None).require_outside_boundary().is_err(),
            "unknown is refused"
        );
    }
}
