//! Who may write which events: the one table of reserved event-type namespaces, and how agentd
//! recognises an osModa daemon by its kernel identity rather than by the name it claims.
//!
//! agentd's own namespaces (`approval.`, `config.`, ...) are written only by its handlers; a
//! daemon's (`watch.` for osmoda-watch, `receipt.` for osmoda-keyd, ...) only by that daemon.
//! Everything else is free for any caller under the name it gives (recorded with its uid, pid
//! and executable).

use axum::http::StatusCode;
use serde_json::json;

use crate::error::ApiError;
use crate::peer::Peer;

/// Who writes the events of a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// agentd's own handlers; `/events/append` never accepts the namespace.
    Agentd,
    /// One osModa daemon, appending through `/events/append`.
    Daemon(&'static Daemon),
    /// The OpenClaw gateway ([`GATEWAY`]): its user (`--relay-user`), outside the command
    /// sandbox. The bridge records OpenClaw's built-in file tools there as `gateway.<tool>`.
    Gateway,
}

/// The name the bridge appends under for the OpenClaw gateway.
pub const GATEWAY: &str = "openclaw-gateway";

/// An osModa daemon as the NixOS module runs it.
#[derive(Debug, PartialEq, Eq)]
pub struct Daemon {
    /// The name it gives (`daemon` in an append, the `x-osmoda-daemon` header) and the file name
    /// of its executable.
    pub name: &'static str,
    /// The user its unit runs as (`modules/osmoda.nix`).
    pub user: &'static str,
}

/// osmoda-watch.
pub const WATCH: Daemon = Daemon {
    name: "osmoda-watch",
    user: "root",
};
/// osmoda-keyd.
pub const KEYD: Daemon = Daemon {
    name: "osmoda-keyd",
    user: "osmoda-keyd",
};
/// osmoda-routines.
pub const ROUTINES: Daemon = Daemon {
    name: "osmoda-routines",
    user: "osmoda-routines",
};
/// osmoda-egress.
pub const EGRESS: Daemon = Daemon {
    name: "osmoda-egress",
    user: "osmoda-egress",
};
/// osmoda-mesh.
pub const MESH: Daemon = Daemon {
    name: "osmoda-mesh",
    user: "osmoda-mesh",
};
/// osmoda-voice.
pub const VOICE: Daemon = Daemon {
    name: "osmoda-voice",
    user: "osmoda-voice",
};

/// Every reserved event-type prefix and its owner, matched case-insensitively (appended types
/// are ASCII only, see `api::events::check_appended_type`).
pub const NAMESPACES: &[(&str, Owner)] = &[
    ("approval.", Owner::Agentd),
    ("incident.", Owner::Agentd),
    ("config.", Owner::Agentd),
    ("fs.", Owner::Agentd),
    ("system.", Owner::Agentd),
    ("gate.", Owner::Agentd),
    ("agentd.", Owner::Agentd),
    ("capability.", Owner::Agentd),
    ("sandbox.", Owner::Agentd),
    ("backup.", Owner::Agentd),
    ("watch.", Owner::Daemon(&WATCH)),
    ("receipt.", Owner::Daemon(&KEYD)),
    ("keyd.", Owner::Daemon(&KEYD)),
    ("routine.", Owner::Daemon(&ROUTINES)),
    ("routines.", Owner::Daemon(&ROUTINES)),
    ("egress.", Owner::Daemon(&EGRESS)),
    ("mesh.", Owner::Daemon(&MESH)),
    ("voice.", Owner::Daemon(&VOICE)),
    ("gateway.", Owner::Gateway),
];

/// The daemons named in [`NAMESPACES`].
pub const DAEMONS: &[&Daemon] = &[&WATCH, &KEYD, &ROUTINES, &EGRESS, &MESH, &VOICE];

/// The reserved prefix `kind` falls under, with its owner.
pub fn owner_of(kind: &str) -> Option<(&'static str, Owner)> {
    let folded = kind.to_ascii_lowercase();
    NAMESPACES
        .iter()
        .find(|(p, _)| folded.starts_with(p))
        .copied()
}

/// The daemon called `name`, if it is one of osModa's.
pub fn daemon_named(name: &str) -> Option<&'static Daemon> {
    DAEMONS.iter().copied().find(|d| d.name == name)
}

/// Why `peer` is not `daemon`, or `None` when it is: a process of agentd itself (a daemon
/// served in-process, as tests and benchmarks do), or a process outside the command sandbox
/// whose executable is named like the daemon and which runs as the daemon's user (or as
/// agentd's own user, as everything does in `scripts/dev`).
pub fn not_the_daemon(peer: &Peer, daemon: &Daemon) -> Option<String> {
    // Before the in-process test below: a daemon served in agentd's process acts for its
    // routines' actions too.
    if let Some(a) = &peer.action {
        return Some(format!(
            "the request is made for {a}, an action the daemon runs, not by the daemon itself"
        ));
    }
    if peer
        .pid
        .is_some_and(|p| u32::try_from(p).ok() == Some(std::process::id()))
    {
        return None;
    }
    let Some(uid) = peer.uid else {
        return Some("the kernel reported no credentials for this connection".into());
    };
    let own = nix::unistd::geteuid().as_raw();
    let users = nix::unistd::User::from_name(daemon.user).ok().flatten();
    if uid != own && users.as_ref().map(|u| u.uid.as_raw()) != Some(uid) {
        return Some(format!(
            "it runs as uid {uid}, and {} runs as {} (or as agentd's own uid {own})",
            daemon.name, daemon.user
        ));
    }
    if peer.exe.as_deref() != Some(daemon.name) {
        return Some(format!(
            "its executable is {}, not {}",
            peer.exe.as_deref().unwrap_or("unknown"),
            daemon.name
        ));
    }
    if peer.require_outside_boundary().is_err() {
        return Some("it runs inside the command sandbox".into());
    }
    None
}

/// Checks that `peer`, claiming to be `claimed`, may do so: a claim of one of osModa's daemon
/// names must come from that daemon.
///
/// # Errors
/// 403 saying why the caller is not that daemon.
pub fn check_claim(peer: &Peer, claimed: &str) -> Result<(), ApiError> {
    match daemon_named(claimed) {
        Some(d) => match not_the_daemon(peer, d) {
            None => Ok(()),
            Some(why) => Err(forbidden(
                format!("this caller is not {}: {why}", d.name),
                peer,
                format!(
                    "only {} itself may use that name; name your process after what it is",
                    d.name
                ),
            )),
        },
        None => Ok(()),
    }
}

/// Checks that a caller claiming `claimed` may append an event of type `kind`.
///
/// # Errors
/// 400 for agentd's own namespaces (no caller may append them); 403 for a daemon's namespace
/// when the caller is not that daemon.
pub fn check_append(peer: &Peer, claimed: &str, kind: &str) -> Result<(), ApiError> {
    check_append_as(peer, claimed, kind, None)
}

/// [`check_append`], knowing the gateway's uid (`Settings::relay_uid`; `None`: no gateway, so
/// nobody may append its namespace).
///
/// # Errors
/// As [`check_append`]; 403 for `gateway.` unless the caller is the gateway's user outside the
/// command sandbox and names itself [`GATEWAY`].
pub fn check_append_as(
    peer: &Peer,
    claimed: &str,
    kind: &str,
    gateway_uid: Option<u32>,
) -> Result<(), ApiError> {
    match owner_of(kind) {
        Some((prefix, Owner::Gateway)) => {
            let why = if claimed != GATEWAY {
                Some(format!("the caller names itself {claimed:?}, not {GATEWAY}"))
            } else if let Some(uid) = gateway_uid {
                match peer.uid {
                    Some(u) if u == uid => peer
                        .require_outside_boundary()
                        .err()
                        .map(|_| "it runs inside the command sandbox".to_string()),
                    u => Some(format!(
                        "it runs as uid {}, and the gateway as uid {uid}",
                        u.map_or("?".into(), |u| u.to_string())
                    )),
                }
            } else {
                Some("no gateway user is configured (agentd --relay-user)".into())
            };
            match why {
                None => Ok(()),
                Some(why) => Err(forbidden(
                    format!("event types starting with `{prefix}` are written only by the OpenClaw gateway: {why}"),
                    peer,
                    "your own events go under a prefix nobody reserved, e.g. `<your name>.`".into(),
                )),
            }
        }
        None => check_claim(peer, claimed),
        Some((prefix, Owner::Agentd)) => Err(ApiError::bad_request(format!(
            "event types starting with `{prefix}` (in any letter case) are written only by agentd's own endpoints"
        ))
        .with_detail(json!({
            "reserved": reserved_list(),
            "hint": "use the incident, approval, config, fs or system API; your own events go under a prefix nobody reserved, e.g. `<your name>.`",
        }))),
        Some((prefix, Owner::Daemon(d))) => {
            if claimed != d.name {
                return Err(forbidden(
                    format!("event types starting with `{prefix}` are written only by {}", d.name),
                    peer,
                    "your own events go under a prefix nobody reserved, e.g. `<your name>.`".into(),
                ));
            }
            check_claim(peer, claimed)
        }
    }
}

fn reserved_list() -> serde_json::Value {
    NAMESPACES
        .iter()
        .map(|(p, o)| {
            let owner = match o {
                Owner::Agentd => "agentd",
                Owner::Daemon(d) => d.name,
                Owner::Gateway => GATEWAY,
            };
            ((*p).to_string(), json!(owner))
        })
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn forbidden(error: String, peer: &Peer, hint: String) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, error).with_detail(json!({
        "caller": peer.actor("caller"),
        "reserved": reserved_list(),
        "hint": hint,
    }))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn peer(uid: u32, pid: i32, exe: &str) -> Peer {
        Peer {
            uid: Some(uid),
            pid: Some(pid),
            exe: Some(exe.into()),
            mnt_ns: std::fs::read_link("/proc/self/ns/mnt")
                .ok()
                .map(|p| p.to_string_lossy().into_owned()),
            action: None,
        }
    }

    fn own_uid() -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    #[test]
    fn every_prefix_has_one_owner_and_every_daemon_a_namespace() {
        for (i, (p, _)) in NAMESPACES.iter().enumerate() {
            assert!(p.ends_with('.') && *p == p.to_ascii_lowercase(), "{p}");
            for (q, _) in &NAMESPACES[i + 1..] {
                assert!(!q.starts_with(p) && !p.starts_with(q), "{p} overlaps {q}");
            }
        }
        for d in DAEMONS {
            assert!(
                NAMESPACES.iter().any(|(_, o)| *o == Owner::Daemon(d)),
                "{}",
                d.name
            );
        }
    }

    #[test]
    fn owners_are_found_in_any_case() {
        for (kind, owner) in [
            ("watch.switch.committed", Some("watch.")),
            ("WATCH.switch.committed", Some("watch.")),
            ("Receipt.wallet.sign", Some("receipt.")),
            ("fs.write", Some("fs.")),
            ("System.exec", Some("system.")),
            ("watcher.x", None),
            ("switch.committed", None),
            ("receipts.x", None),
        ] {
            assert_eq!(owner_of(kind).map(|(p, _)| p), owner, "{kind}");
        }
    }

    #[test]
    fn a_daemon_is_recognised_by_its_process_not_its_claim() {
        let other_pid = i32::MAX;
        let me = own_uid();
        // agentd's own process (an in-process daemon).
        let pid = i32::try_from(std::process::id()).unwrap();
        assert_eq!(not_the_daemon(&peer(me, pid, "whatever"), &WATCH), None);
        // The real binary, as agentd's user or as the daemon's (root).
        assert_eq!(
            not_the_daemon(&peer(me, other_pid, "osmoda-watch"), &WATCH),
            None
        );
        assert_eq!(
            not_the_daemon(&peer(0, other_pid, "osmoda-watch"), &WATCH),
            None
        );
        // Another executable, another user, another mount namespace, no credentials.
        let why = not_the_daemon(&peer(me, other_pid, "curl"), &WATCH).unwrap();
        assert!(why.contains("executable is curl"), "{why}");
        let stranger = if me == 4242 { 4243 } else { 4242 };
        let why = not_the_daemon(&peer(stranger, other_pid, "osmoda-watch"), &WATCH).unwrap();
        assert!(
            why.contains("uid 4242") || why.contains("uid 4243"),
            "{why}"
        );
        let mut boxed = peer(me, other_pid, "osmoda-watch");
        boxed.mnt_ns = Some("mnt:[1]".into());
        let why = not_the_daemon(&boxed, &WATCH).unwrap();
        assert!(why.contains("sandbox"), "{why}");
        let anonymous = Peer {
            uid: None,
            pid: None,
            exe: None,
            mnt_ns: None,
            action: None,
        };
        assert!(not_the_daemon(&anonymous, &WATCH).is_some());
        // The daemon itself (here: agentd's own process), acting for an action it runs.
        let mut acting = peer(
            me,
            i32::try_from(std::process::id()).unwrap(),
            "osmoda-routines",
        );
        assert!(not_the_daemon(&acting, &ROUTINES).is_none());
        acting.action = Some("routine-run.7".into());
        let why = not_the_daemon(&acting, &ROUTINES).unwrap();
        assert!(why.contains("routine-run.7"), "{why}");
        assert!(acting.require_outside_boundary().is_err());
        assert!(acting.actor("x").starts_with("x[action=routine-run.7,uid="));
    }

    #[test]
    fn the_gateway_namespace_is_the_gateway_users_alone() {
        let me = own_uid();
        let other = if me == 4242 { 4243 } else { 4242 };
        let node = peer(me, i32::MAX, "node");
        let status = |r: Result<(), ApiError>| r.err().map(|e| e.status.as_u16());
        // Its user, outside the sandbox, under its name (the executable is Node's, any name).
        assert_eq!(
            status(check_append_as(&node, GATEWAY, "gateway.write", Some(me))),
            None
        );
        assert_eq!(
            status(check_append_as(&node, GATEWAY, "Gateway.edit", Some(me))),
            None
        );
        // Another uid, another name, no gateway configured, inside the sandbox: refused.
        for (p, claimed, uid) in [
            (node.clone(), GATEWAY, Some(other)),
            (node.clone(), "agent", Some(me)),
            (node.clone(), GATEWAY, None),
        ] {
            assert_eq!(
                status(check_append_as(&p, claimed, "gateway.write", uid)),
                Some(403),
                "{claimed} {uid:?}"
            );
        }
        let mut boxed = node.clone();
        boxed.mnt_ns = Some("mnt:[1]".into());
        let e = check_append_as(&boxed, GATEWAY, "gateway.write", Some(me)).unwrap_err();
        assert_eq!(e.status.as_u16(), 403);
        // The old entry point knows no gateway: nobody appends there.
        assert_eq!(
            status(check_append(&node, GATEWAY, "gateway.write")),
            Some(403)
        );
        // Other namespaces are unaffected by being the gateway's user.
        assert_eq!(
            status(check_append_as(&node, GATEWAY, "gatewayish.x", Some(me))),
            None
        );
    }

    #[test]
    fn appends_are_checked_against_the_table() {
        let curl = peer(own_uid(), i32::MAX, "curl");
        let watch = peer(own_uid(), i32::MAX, "osmoda-watch");
        let status = |r: Result<(), ApiError>| r.err().map(|e| e.status.as_u16());
        assert_eq!(status(check_append(&curl, "agent", "agent.note")), None);
        assert_eq!(
            status(check_append(&curl, "agent", "switch.committed")),
            None
        );
        for kind in ["approval.approved", "backup.restored", "Backup.created"] {
            assert_eq!(
                status(check_append(&curl, "agent", kind)),
                Some(400),
                "{kind}"
            );
        }
        assert_eq!(
            status(check_append(&watch, "osmoda-watch", "config.x")),
            Some(400)
        );
        for kind in [
            "watch.switch.committed",
            "Watch.alert",
            "receipt.wallet.sign",
            "routine.run",
        ] {
            assert_eq!(
                status(check_append(&curl, "agent", kind)),
                Some(403),
                "{kind}"
            );
        }
        // Claiming the owner's name does not make the caller the owner.
        assert_eq!(
            status(check_append(
                &curl,
                "osmoda-watch",
                "watch.switch.committed"
            )),
            Some(403)
        );
        assert_eq!(
            status(check_append(&curl, "osmoda-watch", "note")),
            Some(403)
        );
        // The owner itself, and only in its own namespaces.
        assert_eq!(
            status(check_append(
                &watch,
                "osmoda-watch",
                "watch.switch.committed"
            )),
            None
        );
        assert_eq!(
            status(check_append(&watch, "osmoda-watch", "receipt.x")),
            Some(403)
        );
    }
}
