//! Who may use a request topic. A topic reserved for a daemon (`ledger.cosign`: agentd's
//! witness) is sent, taken and answered only by that daemon, recognised by the kernel's
//! identity of the caller (`SO_PEERCRED`), never by anything the caller sends: otherwise any
//! caller of mesh.sock could take a peer's cosign requests and answer them in the witness's
//! place. Every other topic is free for any caller.

use std::path::Path;
use std::time::Duration;

use crate::error::MeshError;

/// Whom a reserved topic belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// agentd: the uid that serves agentd's socket (`--agentd-socket`), as the kernel reports
    /// it for a connection to that socket.
    Agentd,
}

/// Every reserved topic prefix and its owner.
pub const RESERVED: &[(&str, Owner)] = &[("ledger.", Owner::Agentd)];

/// The reserved prefix `topic` falls under, with its owner.
pub fn owner_of(topic: &str) -> Option<(&'static str, Owner)> {
    RESERVED.iter().find(|(p, _)| topic.starts_with(p)).copied()
}

/// The uid agentd runs as: the kernel's credentials of the process serving `socket`.
///
/// # Errors
/// When agentd's socket does not answer within 2 s (nobody can then be recognised as agentd).
pub async fn agentd_uid(socket: &Path) -> Result<u32, String> {
    let s = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::UnixStream::connect(socket),
    )
    .await
    .map_err(|_| "agentd's socket did not accept a connection within 2 s".to_string())?
    .map_err(|e| format!("agentd's socket cannot be reached ({e})"))?;
    s.peer_cred()
        .map(|c| c.uid())
        .map_err(|e| format!("the kernel reported no credentials for agentd's socket ({e})"))
}

/// Who a caller is, as far as topics go.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    /// The caller's uid (`SO_PEERCRED`); `None` when the kernel reported none.
    pub uid: Option<u32>,
    /// Whether the caller runs as agentd's uid.
    pub agentd: bool,
}

impl Caller {
    /// Recognises `uid` against agentd serving `agentd_socket`.
    pub async fn of(uid: Option<u32>, agentd_socket: &Path) -> (Caller, Option<String>) {
        match (uid, agentd_uid(agentd_socket).await) {
            (Some(u), Ok(a)) => (
                Caller {
                    uid,
                    agentd: u == a,
                },
                None,
            ),
            (_, Err(e)) => (Caller { uid, agentd: false }, Some(e)),
            (None, Ok(_)) => (Caller { uid, agentd: false }, None),
        }
    }

    /// Whether this caller may send, take or answer requests of `topic`.
    pub fn may(&self, topic: &str) -> bool {
        match owner_of(topic) {
            None => true,
            Some((_, Owner::Agentd)) => self.agentd,
        }
    }

    /// [`Caller::may`] as an API answer: a 403 naming the topic, its owner and the caller.
    ///
    /// # Errors
    /// `Forbidden` when the topic is reserved for another daemon.
    pub fn check(&self, topic: &str, why_unknown: Option<&str>) -> Result<(), MeshError> {
        if self.may(topic) {
            return Ok(());
        }
        let prefix = owner_of(topic).map_or("", |(p, _)| p);
        let uid = self
            .uid
            .map_or_else(|| "unknown".to_string(), |u| u.to_string());
        let unknown = why_unknown
            .map(|w| format!(" (agentd's uid is not known now: {w})"))
            .unwrap_or_default();
        Err(MeshError::Forbidden(format!(
            "topic {topic:?} belongs to agentd (every `{prefix}` topic is served only to the uid agentd runs as){unknown}; this caller runs as uid {uid}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_topics_belong_to_agentd_and_the_rest_to_anyone() {
        let agentd = Caller {
            uid: Some(0),
            agentd: true,
        };
        let other = Caller {
            uid: Some(65534),
            agentd: false,
        };
        assert!(agentd.may("ledger.cosign") && agentd.may("canary.verdict"));
        assert!(!other.may("ledger.cosign") && !other.may("ledger.anything"));
        assert!(other.may("canary.verdict") && other.may("ledgers"));
        let e = other.check("ledger.cosign", None).unwrap_err().to_string();
        assert!(
            e.contains("\"ledger.cosign\" belongs to agentd") && e.contains("uid 65534"),
            "{e}"
        );
    }

    /// agentd's uid is what the kernel says of the process serving its socket.
    #[tokio::test]
    async fn agentd_is_recognised_by_the_uid_serving_its_socket() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("agentd.sock");
        assert!(agentd_uid(&sock).await.is_err(), "no socket, no uid");
        let _l = tokio::net::UnixListener::bind(&sock).unwrap();
        // The test's own uid: the owner of what it creates.
        let me = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(d.path()).unwrap());
        assert_eq!(agentd_uid(&sock).await, Ok(me));
        let (c, why) = Caller::of(Some(me), &sock).await;
        assert!(c.agentd && why.is_none());
        let (c, _) = Caller::of(Some(me.wrapping_add(1)), &sock).await;
        assert!(!c.agentd);
    }
}
