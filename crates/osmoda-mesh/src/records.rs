//! Peer records in flight, and the rule that decides which links may stay up.
//!
//! A pairing or an identity hand-over writes a peer record into the config tree (a commit)
//! and applies it with SafeSwitch; until mesh.json shows it, the record is *pending* here:
//! its name is held for its keys (so a second pairing cannot take the name and overwrite the
//! first record), and the link admitted for it may stay up although mesh.json does not (yet)
//! declare those keys. Once mesh.json shows the record, or after [`GRACE`], or when the
//! record failed, the exemption ends: from then on a link stays up only while mesh.json
//! declares its peer with exactly the keys the link has now ([`keep_link`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use osmoda_config::MeshConfig;

use crate::identity::Keys;

/// Longest a record may stay pending (a switch queued behind another one waits for it, then
/// its own TTL runs; an owed record or switch is retried longer, but its link is not kept).
pub const GRACE: Duration = Duration::from_secs(35 * 60);

/// Longest peer name (a Nix attribute of `services.osmoda.mesh.peers`; the API's rule).
pub const MAX_NAME: usize = 64;

#[derive(Debug, Clone)]
struct Record {
    x25519: [u8; 32],
    endpoint: Option<String>,
    since: Instant,
}

/// Names held by records on their way into mesh.json.
#[derive(Debug, Default)]
pub struct Pending {
    inner: Mutex<HashMap<String, Record>>,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Record>> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Holds `name` for the record of `x25519` (a new pairing, or a hand-over's new keys),
    /// replacing what it held before.
    pub fn hold(&self, name: &str, x25519: [u8; 32], endpoint: Option<String>) {
        self.lock().insert(
            name.to_string(),
            Record {
                x25519,
                endpoint,
                since: Instant::now(),
            },
        );
    }

    /// Holds `name` for `x25519` unless it is `taken` (declared, linked, …) or held for
    /// another key: atomically, so two pairings cannot both get one name. False when taken.
    pub fn try_hold(
        &self,
        name: &str,
        x25519: [u8; 32],
        endpoint: Option<String>,
        taken: impl Fn(&str) -> bool,
    ) -> bool {
        let mut g = self.lock();
        let other = g
            .get(name)
            .is_some_and(|r| r.x25519 != x25519 && r.since.elapsed() < GRACE);
        if other || taken(name) {
            return false;
        }
        g.insert(
            name.to_string(),
            Record {
                x25519,
                endpoint,
                since: Instant::now(),
            },
        );
        true
    }

    /// Holds the first free name of [`unique_name`]`(base, ..)` for `x25519`, atomically.
    pub fn hold_unique(
        &self,
        base: &str,
        x25519: [u8; 32],
        taken: impl Fn(&str) -> bool,
    ) -> String {
        let mut g = self.lock();
        let name = unique_name(base, |n| {
            g.get(n).is_some_and(|r| r.since.elapsed() < GRACE) || taken(n)
        });
        g.insert(
            name.clone(),
            Record {
                x25519,
                endpoint: None,
                since: Instant::now(),
            },
        );
        name
    }

    /// Ends `name`'s hold if it is for `x25519` (its record failed or is no longer wanted).
    pub fn release(&self, name: &str, x25519: &[u8; 32]) {
        let mut g = self.lock();
        if g.get(name).is_some_and(|r| &r.x25519 == x25519) {
            g.remove(name);
        }
    }

    /// Whether `name` is held for a key other than `x25519`.
    pub fn held_by_other(&self, name: &str, x25519: &[u8; 32]) -> bool {
        self.lock()
            .get(name)
            .is_some_and(|r| &r.x25519 != x25519 && r.since.elapsed() < GRACE)
    }

    /// Whether `name` is held for exactly `x25519`, within [`GRACE`].
    pub fn holds(&self, name: &str, x25519: &[u8; 32]) -> bool {
        self.lock()
            .get(name)
            .is_some_and(|r| &r.x25519 == x25519 && r.since.elapsed() < GRACE)
    }

    /// The X25519 key `name` is held for, within [`GRACE`].
    pub fn held(&self, name: &str) -> Option<[u8; 32]> {
        self.lock()
            .get(name)
            .filter(|r| r.since.elapsed() < GRACE)
            .map(|r| r.x25519)
    }

    /// The endpoint a pending record of `name` carries.
    pub fn endpoint(&self, name: &str) -> Option<String> {
        self.lock().get(name).and_then(|r| r.endpoint.clone())
    }

    /// Drops the records mesh.json now shows (same name, same X25519 key) and those older
    /// than [`GRACE`].
    pub fn settle(&self, cfg: &MeshConfig) {
        self.lock().retain(|name, r| {
            let applied = cfg
                .peers
                .get(name)
                .and_then(|p| Keys::decode(&p.public_keys).ok())
                .is_some_and(|k| k.x25519 == r.x25519);
            !applied && r.since.elapsed() < GRACE
        });
    }
}

/// Whether a link to `peer` whose peer holds `current` keys may stay up: mesh.json declares
/// `peer` with exactly these keys, or a pending record holds the name for them. `Err` says why
/// it must close.
///
/// # Errors
/// The reason to close the link.
pub fn keep_link(
    cfg: &MeshConfig,
    pending: &Pending,
    peer: &str,
    current: &Keys,
) -> Result<(), &'static str> {
    if pending.holds(peer, &current.x25519) {
        return Ok(());
    }
    match cfg.peers.get(peer) {
        None => Err("the peer is no longer declared"),
        Some(p) => match Keys::decode(&p.public_keys) {
            Ok(k) if &k == current => Ok(()),
            _ => Err("the peer's declared keys are not the ones this link authenticated"),
        },
    }
}

/// A name for a new peer offered as `base`: `base`, else `base-2`, `base-3`, … (the base cut
/// so the result keeps [`MAX_NAME`]), the first one `taken` says is free.
pub fn unique_name(base: &str, taken: impl Fn(&str) -> bool) -> String {
    if !taken(base) {
        return base.to_string();
    }
    (2u32..)
        .map(|k| {
            let suffix = format!("-{k}");
            let keep = base
                .char_indices()
                .map(|(i, c)| i + c.len_utf8())
                .take_while(|end| end + suffix.len() <= MAX_NAME)
                .last()
                .unwrap_or(0);
            format!("{}{suffix}", &base[..keep])
        })
        .find(|n| !taken(n))
        .unwrap_or_else(|| unreachable!("the integers are not all taken"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn cfg_with(name: &str, keys: &Keys) -> MeshConfig {
        serde_json::from_value(serde_json::json!({
            "listen": "127.0.0.1:1",
            "peers": { name: { "endpoint": "127.0.0.1:2", "public_keys": keys.encode() } },
        }))
        .unwrap()
    }

    #[test]
    fn a_link_stays_only_while_declared_with_its_keys_or_pending_for_them() {
        let (a, b) = (
            Identity::generate().unwrap().keys(),
            Identity::generate().unwrap().keys(),
        );
        let empty: MeshConfig =
            serde_json::from_value(serde_json::json!({"listen": "127.0.0.1:1", "peers": {}}))
                .unwrap();
        let p = Pending::default();
        // Undeclared: closes, unless its pairing's record is pending for exactly its keys.
        assert!(keep_link(&empty, &p, "x", &a).is_err());
        p.hold("x", a.x25519, None);
        assert!(keep_link(&empty, &p, "x", &a).is_ok());
        assert!(keep_link(&empty, &p, "x", &b).is_err());
        assert!(p.held_by_other("x", &b.x25519) && !p.held_by_other("x", &a.x25519));
        // Applied: the hold ends; the declared keys decide. Removed later: it closes.
        let cfg = cfg_with("x", &a);
        p.settle(&cfg);
        assert!(!p.holds("x", &a.x25519));
        assert!(keep_link(&cfg, &p, "x", &a).is_ok());
        assert!(keep_link(&empty, &p, "x", &a).is_err());
        // Declared with other keys (re-keyed in the tree): closes; a hand-over's pending
        // record for the link's new keys keeps it until mesh.json follows.
        assert!(keep_link(&cfg, &p, "x", &b).is_err());
        p.hold("x", b.x25519, Some("127.0.0.1:2".into()));
        assert!(keep_link(&cfg, &p, "x", &b).is_ok());
        assert_eq!(p.endpoint("x").as_deref(), Some("127.0.0.1:2"));
        p.release("x", &b.x25519);
        assert!(keep_link(&cfg, &p, "x", &b).is_err());
    }

    #[test]
    fn one_key_names_one_peer_in_mesh_json() {
        let k = Identity::generate().unwrap().keys().encode();
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("mesh.json");
        let peer = serde_json::json!({ "endpoint": "192.0.2.7:18800", "public_keys": k });
        std::fs::write(
            &f,
            serde_json::json!({ "listen": "0.0.0.0:1", "peers": { "a": peer } }).to_string(),
        )
        .unwrap();
        assert_eq!(crate::check_config_file(&f), Ok(()));
        std::fs::write(
            &f,
            serde_json::json!({ "listen": "0.0.0.0:1", "peers": { "a": peer, "b": peer } })
                .to_string(),
        )
        .unwrap();
        let e = crate::check_config_file(&f).unwrap_err();
        assert!(
            e.contains("peers.b.public_keys.x25519 is also peer a's"),
            "{e}"
        );
        assert!(!e.contains(&d.path().display().to_string()), "{e}");
    }

    #[test]
    fn host_names_become_peer_names() {
        assert_eq!(crate::peer_name_of("nixos").unwrap(), "nixos");
        assert_eq!(
            crate::peer_name_of("web.example.org").unwrap(),
            "web-example-org"
        );
        assert_eq!(crate::peer_name_of("7box").unwrap(), "host-7box");
        assert!(crate::peer_name_of(" ").is_err());
        // This machine has a name, read without /proc.
        let n = crate::default_name().unwrap();
        assert!(osmoda_config::tree_edit::valid_attr_name(&n), "{n}");
    }

    #[test]
    fn unique_names_keep_the_name_rule() {
        let taken = ["peer", "peer-2"];
        assert_eq!(unique_name("peer", |n| taken.contains(&n)), "peer-3");
        assert_eq!(unique_name("free", |n| taken.contains(&n)), "free");
        let long = format!("L{}", "x".repeat(63));
        let n = unique_name(&long, |n| n == long);
        assert_eq!(n.len(), MAX_NAME);
        assert!(
            n.ends_with("-2") && osmoda_config::tree_edit::valid_attr_name(&n),
            "{n}"
        );
    }
}
