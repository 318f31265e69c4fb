//! Reading `/etc/osmoda/agentd.json` into [`Settings`].

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::Settings;

/// The subset of agentd.json agentd reads today.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    approval_ttl_secs: Option<u64>,
}

/// Load and check agentd.json.
///
/// # Errors
/// Unreadable file, invalid JSON, or an unknown field (a typo in a NixOS option fails loudly).
pub fn load(path: &Path) -> anyhow::Result<Settings> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    let f: File = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let mut s = Settings::default();
    if let Some(t) = f.approval_ttl_secs {
        anyhow::ensure!(t > 0, "{}: approval_ttl_secs must be positive", path.display());
        s.approval_ttl = Duration::from_secs(t);
    }
    Ok(s)
}
