//! `/etc/osmoda/watch.json`: autopilot watchers and SafeSwitch defaults.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::health::HealthCheck;

/// The whole `watch.json` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Watchers by name (`services.osmoda.watch.watchers.<name>`).
    pub watchers: BTreeMap<String, Watcher>,
    /// Defaults for SafeSwitch sessions (`services.osmoda.watch.safeSwitch`).
    pub safe_switch: SafeSwitchDefaults,
    /// What `command` checks must not see; absent: the paths of a default NixOS install.
    #[serde(default)]
    pub boundary: BoundaryConfig,
}

/// The command boundary (DESIGN.md §1): paths hidden from every command a check runs,
/// rendered by `lib/` from `services.osmoda.agentd.approvalSocket` and `stateDir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BoundaryConfig {
    /// Absolute paths (directories or files) masked in the command's mount namespace.
    pub masked_paths: Vec<String>,
}

impl Default for BoundaryConfig {
    /// The approval socket's directory and agentd's and keyd's state of the module's defaults.
    fn default() -> Self {
        BoundaryConfig {
            masked_paths: [
                "/run/osmoda-admin",
                "/var/lib/osmoda/agentd",
                "/var/lib/osmoda/keyd",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

/// One autopilot watcher: probe `check` every `interval_secs`; on failure escalate through
/// `actions` in order (e.g. restart, then rollback, then notify).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Watcher {
    /// The probe.
    pub check: HealthCheck,
    /// Seconds between probes (at least 1).
    pub interval_secs: u64,
    /// Escalation ladder, applied one step per consecutive failure.
    pub actions: Vec<WatchAction>,
}

/// One escalation step of a watcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchAction {
    /// Restart the unit the check names (systemd checks) or the watched service.
    Restart,
    /// Roll back to the last deployed generation through SafeSwitch.
    Rollback,
    /// Record a `watch.alert` event in the ledger for the agent / the human.
    Notify,
}

/// Defaults applied to a SafeSwitch session that does not specify its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SafeSwitchDefaults {
    /// Seconds a switch is probed before it may be committed (at least 1).
    pub ttl_secs: u64,
    /// Checks every switch must pass in addition to the ones its request lists.
    pub health_checks: Vec<HealthCheck>,
}

impl WatchConfig {
    /// Semantic checks: intervals, TTL, each health check.
    ///
    /// # Errors
    /// Returns a message with the JSON path of the first bad value.
    pub fn validate(&self) -> Result<(), String> {
        for (name, w) in &self.watchers {
            if name.is_empty() {
                return Err("watchers: a watcher name must not be empty".into());
            }
            if w.interval_secs == 0 {
                return Err(format!("watchers.{name}.interval_secs must be at least 1"));
            }
            w.check
                .validate()
                .map_err(|e| format!("watchers.{name}.check: {e}"))?;
        }
        for (i, p) in self.boundary.masked_paths.iter().enumerate() {
            let path = std::path::Path::new(p);
            if !path.is_absolute()
                || path.parent().is_none()
                || path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                return Err(format!(
                    "boundary.masked_paths[{i}]: {p:?} must be an absolute path below / without `..`"
                ));
            }
        }
        if self.safe_switch.ttl_secs == 0 {
            return Err("safe_switch.ttl_secs must be at least 1".into());
        }
        for (i, c) in self.safe_switch.health_checks.iter().enumerate() {
            c.validate()
                .map_err(|e| format!("safe_switch.health_checks[{i}]: {e}"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_validates() {
        let json = r#"{"watchers":{"web":{"check":{"type":"systemd","unit":"nginx.service"},
            "interval_secs":30,"actions":["restart","rollback","notify"]}},
            "safe_switch":{"ttl_secs":120,"health_checks":[{"type":"agentd"}]}}"#;
        let c: WatchConfig = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.watchers["web"].actions.len(), 3);
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.boundary, BoundaryConfig::default());
    }

    #[test]
    fn boundary_paths_must_be_absolute() {
        for bad in ["relative", "/", "/a/../b"] {
            let json = format!(
                r#"{{"watchers":{{}},"safe_switch":{{"ttl_secs":1,"health_checks":[]}},
                "boundary":{{"masked_paths":["{bad}"]}}}}"#
            );
            let c: WatchConfig = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
            let e = c.validate().unwrap_err();
            assert!(e.contains("boundary.masked_paths[0]"), "{e}");
        }
    }

    #[test]
    fn bad_action_and_zero_interval() {
        let json = r#"{"watchers":{"w":{"check":{"type":"agentd"},"interval_secs":1,"actions":["reboot"]}},
            "safe_switch":{"ttl_secs":1,"health_checks":[]}}"#;
        let e = serde_json::from_str::<WatchConfig>(json)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `reboot`"), "{e}");
        let json = r#"{"watchers":{"w":{"check":{"type":"agentd"},"interval_secs":0,"actions":[]}},
            "safe_switch":{"ttl_secs":1,"health_checks":[]}}"#;
        let c: WatchConfig = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.validate(),
            Err("watchers.w.interval_secs must be at least 1".into())
        );
    }
}
