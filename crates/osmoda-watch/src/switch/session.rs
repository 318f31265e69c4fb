//! A SafeSwitch session: its states, what was recorded at each step, and when.

use osmoda_config::HealthCheck;
use serde::{Deserialize, Serialize};

use crate::checks::CheckOutcome;

/// The states of a switch. `committed`, `rolled-back` and `failed` are terminal.
///
/// `committing` is the persisted decision to commit, written before the system profile and the
/// deployed tag are changed, so a restart finishes the commit instead of guessing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SwitchState {
    /// Accepted, nothing done yet.
    Pending,
    /// Building (NixOS) or rendering (local) the generation; the running system is untouched.
    Building,
    /// Activating the built generation (not the boot default).
    Activating,
    /// Active; health checks run until the TTL.
    Probing,
    /// Health checks passed (or early commit); making it the default and tagging it deployed.
    Committing,
    /// Done: the generation is the default and tagged deployed.
    Committed,
    /// Re-activating the recorded previous system and recording a revert commit.
    RollingBack,
    /// Done: the previous system is active again.
    RolledBack,
    /// Done without success: refused before anything was activated (the build or recording
    /// the running system failed; the system is untouched), or rolling back failed (a person
    /// must look; an incident is open).
    Failed,
}

impl SwitchState {
    /// No further transitions happen.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            SwitchState::Committed | SwitchState::RolledBack | SwitchState::Failed
        )
    }

    /// The kebab-case name used in JSON, events and the pause hook.
    pub fn as_str(self) -> &'static str {
        match self {
            SwitchState::Pending => "pending",
            SwitchState::Building => "building",
            SwitchState::Activating => "activating",
            SwitchState::Probing => "probing",
            SwitchState::Committing => "committing",
            SwitchState::Committed => "committed",
            SwitchState::RollingBack => "rolling-back",
            SwitchState::RolledBack => "rolled-back",
            SwitchState::Failed => "failed",
        }
    }
}

/// One entry of a session's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    /// State entered.
    pub state: SwitchState,
    /// RFC 3339 time it was entered.
    pub at: String,
    /// Why, when there is something to say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The result of one health check during probing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// `tcp 127.0.0.1:80`, ...
    pub check: String,
    /// What happened.
    #[serde(flatten)]
    pub outcome: CheckOutcome,
}

/// A SafeSwitch session as persisted under `<state-dir>/switches/<id>.json` and returned by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwitchSession {
    /// Sequential id.
    pub id: u64,
    /// Commit (generation) being applied.
    pub generation: String,
    /// Generation deployed when the switch began (what a rollback returns the tree to).
    pub previous_generation: Option<String>,
    /// Human-readable description of the change.
    pub plan: Option<String>,
    /// Who started it: `api` or `watcher:<name>`.
    pub origin: String,
    /// The action label (`X-Osmoda-Action`) of the request that began the switch — or of the
    /// last labelled request that committed or rolled it back — carried into every event the
    /// switch causes (its `watch.switch.*` events, the revert commit, its incident), so that
    /// osmoda-routines traces them to the run that asked for it. `None`: not asked for by an action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Probing time.
    pub ttl_secs: u64,
    /// Checks probed (request's plus the configured defaults).
    pub health_checks: Vec<HealthCheck>,
    /// Current state.
    pub state: SwitchState,
    /// `local` or `nixos`.
    pub backend: String,
    /// True once the running system was recorded in `previous_system`.
    pub previous_recorded: bool,
    /// The system that was active before (store path or generation dir); `None`: nothing was.
    pub previous_system: Option<String>,
    /// What was built for `generation`.
    pub built: Option<String>,
    /// What the backend could not apply.
    pub warnings: Vec<String>,
    /// Unix milliseconds when probing ends.
    pub probe_deadline_ms: Option<u64>,
    /// Latest probe round.
    pub checks: Vec<CheckReport>,
    /// Why the switch rolled back or failed.
    pub reason: Option<String>,
    /// The revert commit recorded in the tree after a rollback.
    pub revert_commit: Option<String>,
    /// agentd incident opened for a rollback or failure.
    pub incident_id: Option<String>,
    /// Times the daemon resumed this switch after a restart.
    pub recoveries: u32,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// RFC 3339 time of the last change.
    pub updated_at: String,
    /// Every state entered, in order.
    pub history: Vec<Transition>,
}

/// Now as RFC 3339 UTC.
pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// Now as Unix milliseconds.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default()
}
