//! Apply backends: how a generation is built, activated, made the default and rolled back.
//!
//! The SafeSwitch state machine (`switch`) drives a [`Backend`]; every method is idempotent so a
//! restarted daemon can repeat the step it was in when it died.

pub mod local;
pub mod nixos;

use crate::error::Result;
use crate::runner::BoxFut;

/// What was built for a generation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Built {
    /// The activatable artifact: a store path (`nixos`) or a generation directory (`local`).
    pub artifact: String,
    /// What this backend could not apply from the generation (shown to the user, recorded).
    pub warnings: Vec<String>,
}

/// A way of applying a generation of the config tree to this machine.
pub trait Backend: Send + Sync {
    /// `nixos` or `local`.
    fn name(&self) -> &'static str;

    /// The currently active system (what a rollback returns to); `None` if nothing is active.
    ///
    /// # Errors
    /// When the active system cannot be determined.
    fn current(&self) -> BoxFut<'_, Result<Option<String>>>;

    /// Builds generation `rev` for switch `id`.
    ///
    /// # Errors
    /// When evaluation or the build fails (the running system is untouched).
    fn build<'a>(&'a self, id: &'a str, rev: &'a str) -> BoxFut<'a, Result<Built>>;

    /// Activates `artifact` without making it the boot default.
    ///
    /// # Errors
    /// When activation fails (the caller rolls back).
    fn activate<'a>(&'a self, id: &'a str, artifact: &'a str) -> BoxFut<'a, Result<()>>;

    /// Makes `artifact` the default (system profile + boot entry on NixOS).
    ///
    /// # Errors
    /// When the profile or boot loader cannot be updated.
    fn make_default<'a>(&'a self, id: &'a str, artifact: &'a str) -> BoxFut<'a, Result<()>>;

    /// Re-activates the recorded previous system (`None`: nothing was active before).
    ///
    /// # Errors
    /// When the previous system cannot be re-activated (the switch ends `failed`).
    fn reactivate<'a>(&'a self, id: &'a str, previous: Option<&'a str>) -> BoxFut<'a, Result<()>>;

    /// Checks every switch on this backend gets (e.g. sshd on NixOS while it runs, so a switch
    /// that breaks SSH does not commit on agentd's health alone).
    fn default_checks(&self) -> BoxFut<'_, Vec<osmoda_config::HealthCheck>> {
        Box::pin(async { Vec::new() })
    }

    /// A backend-specific addition to the diff preview (the closure diff on NixOS).
    fn preview_extra<'a>(&'a self, _rev: &'a str) -> BoxFut<'a, Option<String>> {
        Box::pin(async { None })
    }
}
