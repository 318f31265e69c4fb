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

/// Checks that `s` is a dialable `host:port` (an endpoint in an invite or a peer record).
///
/// # Errors
/// A message saying what is wrong.
pub fn check_endpoint(s: &str) -> Result<(), String> {
    check_host_port(s, "endpoint")
}

impl MeshConfig {
    /// Semantic checks: addresses and non-empty keys.
    ///
    /// # Errors
    /// Returns a message with the JSON path of the first bad value.
    pub fn validate(&self) -> Result<(), String> {
        check_host_port(&self.listen, "listen")?;
        for (name, p) in &self.peers {
            check_host_port(&p.endpoint, &format!("peers.{name}.endpoint"))?;
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
}
