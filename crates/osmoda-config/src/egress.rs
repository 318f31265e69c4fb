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
    /// agentd's capability-token public key (64 hex characters), re-read when it changes.
    #[serde(default = "default_public_key_file")]
    pub public_key_file: String,
    /// Revoked token ids, one per line (`#` comments), re-read when it changes; a missing file
    /// revokes nothing.
    #[serde(default = "default_revocation_file")]
    pub revocation_file: String,
    /// CIDR ranges that may be dialled although their class is denied (and IP-literal targets
    /// in them); for tests and LANs. Empty by default.
    #[serde(default)]
    pub allow_ranges: Vec<String>,
    /// DNS servers (`ip:port`, UDP) instead of `/etc/resolv.conf`.
    #[serde(default)]
    pub nameservers: Vec<String>,
    /// Timeouts, the tunnel cap and the per-token rate.
    #[serde(default)]
    pub limits: EgressLimits,
}

/// Where agentd publishes its capability public key by default.
pub const DEFAULT_PUBLIC_KEY_FILE: &str = "/var/lib/osmoda/capability/public.key";
/// Where agentd publishes revoked token ids by default.
pub const DEFAULT_REVOCATION_FILE: &str = "/var/lib/osmoda/capability/revoked";

fn default_public_key_file() -> String {
    DEFAULT_PUBLIC_KEY_FILE.to_string()
}

fn default_revocation_file() -> String {
    DEFAULT_REVOCATION_FILE.to_string()
}

/// The proxy's budgets. Times in seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EgressLimits {
    /// Time for a client to send its whole CONNECT head.
    pub header_timeout_secs: u64,
    /// Time for DNS resolution plus the TCP connect to the destination.
    pub connect_timeout_secs: u64,
    /// A tunnel with no bytes in either direction for this long is closed.
    pub idle_timeout_secs: u64,
    /// Tunnels open at once (all tokens); more are answered 503.
    pub max_tunnels: usize,
    /// CONNECT requests per token per minute; more are answered 429.
    pub rate_per_minute: u32,
}

impl Default for EgressLimits {
    fn default() -> Self {
        EgressLimits {
            header_timeout_secs: 10,
            connect_timeout_secs: 10,
            idle_timeout_secs: 300,
            max_tunnels: 4096,
            rate_per_minute: 600,
        }
    }
}

/// What a holder of this capability may reach.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capability {
    /// Allowed host names; `*.example.com` matches any subdomain (not the apex).
    pub domains: Vec<String>,
    /// Allowed destination ports.
    pub ports: Vec<u16>,
    /// Paths a Ring 1 sandbox granted this capability sees read-only (absolute; agentd binds
    /// them at the same place, masks still apply inside them). The proxy ignores them.
    #[serde(default)]
    pub read_only_paths: Vec<String>,
    /// Paths a Ring 1 sandbox granted this capability may write (absolute, existing).
    #[serde(default)]
    pub writable_paths: Vec<String>,
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
            for (field, paths) in [
                ("read_only_paths", &cap.read_only_paths),
                ("writable_paths", &cap.writable_paths),
            ] {
                if let Some(p) = paths.iter().find(|p| {
                    !p.starts_with('/')
                        || p.len() < 2
                        || p.split('/').any(|c| c == ".." || c == ".")
                }) {
                    return Err(format!(
                        "capabilities.{name}.{field}: {p:?} must be an absolute path without `.` or `..`, not `/`"
                    ));
                }
            }
        }
        for (i, r) in self.allow_ranges.iter().enumerate() {
            let ok = r.split_once('/').is_some_and(|(ip, len)| {
                ip.parse::<std::net::IpAddr>().is_ok_and(|ip| {
                    len.parse::<u8>()
                        .is_ok_and(|l| l <= if ip.is_ipv4() { 32 } else { 128 })
                })
            });
            if !ok {
                return Err(format!(
                    "allow_ranges[{i}]: {r:?} is not a CIDR range like 10.1.0.0/16"
                ));
            }
        }
        for (i, n) in self.nameservers.iter().enumerate() {
            if n.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!(
                    "nameservers[{i}]: {n:?} is not ip:port (127.0.0.53:53, [::1]:53)"
                ));
            }
        }
        for (field, v) in [
            ("public_key_file", &self.public_key_file),
            ("revocation_file", &self.revocation_file),
        ] {
            if !v.starts_with('/') {
                return Err(format!("{field} {v:?} must be an absolute path"));
            }
        }
        let l = &self.limits;
        if l.header_timeout_secs == 0
            || l.connect_timeout_secs == 0
            || l.idle_timeout_secs == 0
            || l.max_tunnels == 0
            || l.rate_per_minute == 0
        {
            return Err(
                "limits: every timeout, max_tunnels and rate_per_minute must be at least 1".into(),
            );
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
                read_only_paths: Vec::new(),
                writable_paths: Vec::new(),
            },
        );
        EgressConfig {
            listen: listen.into(),
            capabilities,
            public_key_file: default_public_key_file(),
            revocation_file: default_revocation_file(),
            allow_ranges: Vec::new(),
            nameservers: Vec::new(),
            limits: EgressLimits::default(),
        }
    }

    #[test]
    fn domains_and_listener() {
        assert_eq!(cfg("127.0.0.1:19999", "*.github.com").validate(), Ok(()));
        assert!(cfg("0.0.0.0:19999", "a.b").validate().is_err());
        assert!(cfg("127.0.0.1:19999", "a.*.b").validate().is_err());
        assert!(cfg("127.0.0.1:19999", "*").validate().is_err());
        let mut c = cfg("127.0.0.1:19999", "a.b");
        c.allow_ranges = vec!["127.0.0.2/32".into()];
        assert_eq!(c.validate(), Ok(()));
        c.allow_ranges = vec!["127.0.0.2".into()];
        assert!(c.validate().unwrap_err().contains("allow_ranges[0]"));
        c.allow_ranges = vec!["10.0.0.0/33".into()];
        assert!(c.validate().is_err());
        c.allow_ranges.clear();
        c.nameservers = vec!["127.0.0.1".into()];
        assert!(c.validate().unwrap_err().contains("nameservers[0]"));
        c.nameservers.clear();
        c.limits.max_tunnels = 0;
        assert!(c.validate().is_err());
    }
}
