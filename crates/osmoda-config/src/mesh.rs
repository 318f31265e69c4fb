//! `/etc/osmoda/mesh.json`: the P2P listener and the known peers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The whole `mesh.json` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MeshConfig {
    /// TCP listen address for peer connections, `host:port` (default `0.0.0.0:18800`).
    pub listen: String,
    /// Known peers by name (`services.osmoda.mesh.peers.<name>`); accepting an invite adds one.
    pub peers: BTreeMap<String, Peer>,
}

/// A known peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// Where to dial the peer, `host:port`.
    pub endpoint: String,
    /// The peer's public keys; a handshake presenting other keys is refused.
    pub public_keys: PeerKeys,
}

/// Public keys of a peer, base64 (standard alphabet, padded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerKeys {
    /// Ed25519 identity (signing) key.
    pub ed25519: String,
    /// X25519 static key for Noise_XX.
    pub x25519: String,
    /// ML-KEM-768 encapsulation key for the hybrid post-quantum exchange.
    pub ml_kem_768: String,
}

/// Checks that `s` looks like `host:port` with a non-zero port.
pub(crate) fn check_host_port(s: &str, what: &str) -> Result<(), String> {
    let Some((host, port)) = s.rsplit_once(':') else {
        return Err(format!("{what} {s:?} must be host:port"));
    };
    match port.parse::<u16>() {
        Ok(p) if p != 0 && !host.is_empty() => Ok(()),
        _ => Err(format!(
            "{what} {s:?} must be host:port with a port in 1..=65535"
        )),
    }
}

/// Longest `host:port` accepted: a DNS name (253) or a bracketed IPv6 literal, and a port.
const MAX_HOST_PORT: usize = 261;

/// [`check_host_port`], and the host is an IPv4 literal, a bracketed IPv6 literal or a DNS
/// name (labels of letters, digits and `-`, 1–63 characters each): nothing else (spaces,
/// quotes, line breaks, `/`) can reach a peer record, a commit message or a dial.
fn check_dialable(s: &str, what: &str) -> Result<(), String> {
    if s.len() > MAX_HOST_PORT {
        return Err(format!(
            "{what} is {} characters; a host:port has at most {MAX_HOST_PORT}",
            s.len()
        ));
    }
    check_host_port(s, what)?;
    let host = s.rsplit_once(':').map_or("", |(h, _)| h);
    let ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else if host.parse::<std::net::Ipv4Addr>().is_ok() {
        true
    } else {
        host.len() <= 253
            && host.split('.').all(|l| {
                (1..=63).contains(&l.len())
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            })
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{what} {s:?}: the host must be an IPv4 address, a bracketed IPv6 address or a DNS name"
        ))
    }
}

/// Checks that `s` is a dialable `host:port` (an endpoint in an invite or a peer record).
///
/// # Errors
/// A message saying what is wrong.
pub fn check_endpoint(s: &str) -> Result<(), String> {
    check_dialable(s, "endpoint")
}

impl MeshConfig {
    /// Semantic checks: addresses (dialable host:port), peer names (Nix attribute names, as
    /// the API takes them), non-empty keys. What the keys are (sizes, points, one key per peer)
    /// osmoda-mesh checks itself when it loads the file and in its `check-config`.
    ///
    /// # Errors
    /// Returns a message with the JSON path of the first bad value.
    pub fn validate(&self) -> Result<(), String> {
        check_dialable(&self.listen, "listen")?;
        for (name, p) in &self.peers {
            if !crate::tree_edit::valid_attr_name(name) {
                return Err(format!(
                    "peers.{name:?}: a peer name starts with a letter or '_' and holds only letters, digits, '-' and '_' (at most 64)"
                ));
            }
            check_dialable(&p.endpoint, &format!("peers.{name}.endpoint"))?;
            let k = &p.public_keys;
            for (field, v) in [
                ("ed25519", &k.ed25519),
                ("x25519", &k.x25519),
                ("ml_kem_768", &k.ml_kem_768),
            ] {
                if v.is_empty() {
                    return Err(format!(
                        "peers.{name}.public_keys.{field} must not be empty"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(check_host_port("127.0.0.1:18800", "x"), Ok(()));
        assert_eq!(check_host_port("[::1]:1", "x"), Ok(()));
        for bad in ["nohost", ":80", "h:0", "h:99999"] {
            assert!(check_host_port(bad, "x").is_err(), "{bad}");
        }
    }

    #[test]
    fn peer_names_are_attribute_names() {
        let cfg: MeshConfig = serde_json::from_value(serde_json::json!({"listen": "0.0.0.0:18800", "peers": {"two words": {"endpoint": "192.0.2.7:18800", "public_keys": {"ed25519": "a", "x25519": "b", "ml_kem_768": "c"}}}})).unwrap();
        assert!(cfg.validate().unwrap_err().contains("peer name"));
    }

    #[test]
    fn endpoints_are_addresses_or_dns_names() {
        for good in [
            "127.0.0.1:18800",
            "[::1]:1",
            "[2001:db8::7]:18800",
            "host-1.example.org:443",
            "nixos:18800",
            "0.0.0.0:18800",
        ] {
            assert_eq!(check_endpoint(good), Ok(()), "{good}");
        }
        let long = format!("{}:80", "a.".repeat(140));
        for bad in [
            "127.0.0.1:1)\n\nOsmoda-Actor: human\nx:9",
            "a b:80",
            "x\"y:80",
            "h/1:80",
            "::1:80",
            "[nothex]:80",
            "-a.b:80",
            "a..b:80",
            long.as_str(),
        ] {
            assert!(check_endpoint(bad).is_err(), "{bad}");
        }
    }
}
