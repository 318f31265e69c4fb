//! Reading `/etc/osmoda/agentd.json` (schema: `osmoda_config::AgentdConfig`) into [`Settings`].

use std::path::Path;
use std::time::Duration;

use osmoda_config::{AgentdConfig, ConfigError};

use crate::Settings;

/// Load and check agentd.json.
///
/// # Errors
/// Unreadable file, invalid JSON, or an unknown field (a typo in a NixOS option fails loudly).
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    let cfg: AgentdConfig = osmoda_config::load(path)?;
    Ok(settings(&cfg))
}

/// The settings `cfg` gives: the gate's default rules and critical packages extended (never
/// reduced) by `approval.required` and `approval.critical_packages`.
pub fn settings(cfg: &AgentdConfig) -> Settings {
    let mut critical = Settings::default().critical_packages;
    for p in &cfg.approval.critical_packages {
        if !critical.contains(p) {
            critical.push(p.clone());
        }
    }
    Settings {
        approval_ttl: Duration::from_secs(cfg.approval.ttl_secs),
        approval_required: cfg.approval.required.clone(),
        critical_packages: critical,
        approval_socket: None,
        checkpoint: checkpoint_settings(&cfg.ledger.checkpoint),
        backup: crate::backup::BackupSettings {
            dir: cfg.backup.dir.clone(),
            keep: cfg
                .backup
                .keep
                .map(|k| usize::try_from(k).unwrap_or(usize::MAX)),
            sources: cfg.backup.sources.clone(),
        },
        writable_roots: cfg.files.writable_roots.clone(),
        memory: crate::api::memory::MemorySettings::from_config(&cfg.memory),
        agent_card: crate::api::agent_card::CardSettings {
            keyd: cfg.daemons.keyd.clone(),
            mesh: cfg.daemons.mesh.clone(),
        },
        witness: witness_settings(cfg),
        ..Settings::default()
    }
}

/// What `ledger.witness` asks for; `None` when no peers and no logs are configured.
pub fn witness_settings(cfg: &AgentdConfig) -> Option<crate::witness::WitnessSettings> {
    let w = &cfg.ledger.witness;
    let mesh = cfg.daemons.mesh.clone()?;
    (!w.peers.is_empty() || !w.logs.is_empty()).then(|| crate::witness::WitnessSettings {
        mesh_socket: mesh,
        peers: w.peers.clone(),
        logs: w.logs.clone(),
        key_file: w.key_file.clone(),
    })
}

/// What `ledger.checkpoint` asks for; `None` when checkpoints are off.
pub fn checkpoint_settings(
    c: &osmoda_config::CheckpointConfig,
) -> Option<crate::checkpoints::CheckpointSettings> {
    c.enable.then(|| crate::checkpoints::CheckpointSettings {
        every_events: c.every_events.max(1),
        interval: Duration::from_secs(c.interval_secs.max(1)),
        key_file: c.key_file.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(required: &[&str], critical: &[&str]) -> AgentdConfig {
        serde_json::from_value(serde_json::json!({
            "approval": { "required": required, "ttl_secs": 60, "critical_packages": critical },
            "memory": { "embedding_endpoint": null, "embedding_model": "m", "max_injected_tokens": 1 },
            "daemons": { "watch": null, "routines": null, "keyd": null, "mesh": null, "voice": null, "egress": null },
        }))
        .expect("agentd.json")
    }

    #[test]
    fn configuration_extends_the_gate_and_never_drops_a_default() {
        // An empty list does not turn the gate off.
        let s = settings(&cfg(&[], &[]));
        for kind in crate::gate::DEFAULT_REQUIRED {
            assert!(s.needs_approval(kind), "{kind}");
        }
        assert!(!s.needs_approval("routine.remove"));
        assert_eq!(s.approval_ttl, Duration::from_secs(60));
        // Extra kinds and prefixes add to it.
        let s = settings(&cfg(&["routine.remove", "watcher.*"], &["htop", "openssh"]));
        assert!(s.needs_approval("routine.remove") && s.needs_approval("watcher.remove"));
        assert!(s.needs_approval("service.disable"));
        // Critical packages: the defaults plus the configured ones, once each.
        assert!(s.critical_packages.iter().any(|p| p == "htop"));
        assert_eq!(
            s.critical_packages
                .iter()
                .filter(|p| *p == "openssh")
                .count(),
            1
        );
        for p in crate::gate::DEFAULT_CRITICAL_PACKAGES {
            assert!(s.critical_packages.iter().any(|c| c == p), "{p}");
        }
    }

    #[test]
    fn writable_roots_come_from_the_file_and_default_to_the_code_list() {
        let s = settings(&cfg(&[], &[]));
        let defaults: Vec<std::path::PathBuf> = crate::DEFAULT_WRITABLE_ROOTS
            .iter()
            .map(std::path::PathBuf::from)
            .collect();
        assert_eq!(s.writable_roots, defaults);
        let mut c = cfg(&[], &[]);
        c.files.writable_roots = vec!["/srv/data".into()];
        assert_eq!(
            settings(&c).writable_roots,
            [std::path::PathBuf::from("/srv/data")]
        );
        c.files.writable_roots = vec![];
        assert!(settings(&c).writable_roots.is_empty());
        for bad in ["srv", "/srv/../etc"] {
            c.files.writable_roots = vec![bad.into()];
            let e = c.validate().expect_err(bad);
            assert!(e.contains("files.writable_roots") && e.contains(bad), "{e}");
        }
    }
}
