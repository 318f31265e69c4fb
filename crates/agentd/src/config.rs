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
    Ok(Settings {
        approval_ttl: Duration::from_secs(cfg.approval.ttl_secs),
        approval_required: cfg.approval.required,
    })
}
