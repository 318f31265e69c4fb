//! `/etc/osmoda/egress.json`: the egress proxy's listener and capability allowlists.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::mesh::check_host_port;

/// The whole `egress.json` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    /// Listen address of the HTTP CONNECT proxy; loopback only (default `127.0.0.1:19999`).
    pub listen: String,
    /// Capabilities by name; a capability token names one of these.
    pub capabilities: BTreeMap<String, Capability>,
}

/// What a holder of this capability may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capability {
    /// Allowed host names; `*.example.com` matches any subdomain (not the apex).
    pub domains: Vec<String>,
    /// Allowed destination ports.
    pub ports: Vec<u16>,
}

impl EgressConfig {
    /// Semantic checks: loopback listener, domain patterns, ports.
    ///
    /// # Errors
    /// Returns a message with the JSON path of the first bad value.
    pub fn validate(&self) -> Result<(), String> {
        check_host_port(&self.listen, "listen")?;
        let host = self
            .listen
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or_default();
        if !(host.starts_with("127.") || host == "[::1]" || host == "localhost") {
            return Err(format!(
                "listen {:?} must be a loopback address",
                self.listen
            ));
        }
        for (name, cap) in &self.capabilities {
            for d in &cap.domains {
                let bare = d.strip_prefix("*.").unwrap_or(d);
                let ok = !bare.is_empty()
                    && !bare.contains('*')
                    && bare
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
                if !ok {
                    return Err(format!(
                        "capabilities.{name}.domains: {d:?} is not a host name or *.wildcard"
                    ));
                }
            }
            if cap.ports.contains(&0) {
                return Err(format!("capabilities.{name}.ports: 0 is not a port"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(listen: &str, domain: &str) -> EgressConfig {
        let mut capabilities = BTreeMap::new();
        capabilities.insert(
            "c".into(),
            Capability {
                domains: vec![domain.into()],
                ports: vec![443],
            },
        );
        EgressConfig {
            listen: listen.into(),
            capabilities,
        }
    }

    #[test]
    fn domains_and_listener() {
        assert_eq!(cfg("127.0.0.1:19999", "*.github.com").validate(), Ok(()));
        assert!(cfg("0.0.0.0:19999", "a.b").validate().is_err());
        assert!(cfg("127.0.0.1:19999", "a.*.b").validate().is_err());
        assert!(cfg("127.0.0.1:19999", "*").validate().is_err());
    }
}
