//! `/etc/osmoda/routines.json`: scheduled, event-driven and webhook automation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole `routines.json` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutinesConfig {
    /// Routines by name (`services.osmoda.routines.routines.<name>`).
    pub routines: BTreeMap<String, Routine>,
}

/// One routine: when `trigger` fires, run `action` and record the outcome in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Routine {
    /// Disabled routines are listed but never fire.
    pub enable: bool,
    /// What starts the routine.
    pub trigger: Trigger,
    /// What the routine does.
    pub action: RoutineAction,
}

/// What starts a routine, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// Five-field cron expression in UTC, e.g. `"0 8 * * *"`.
    Cron {
        /// `minute hour day-of-month month day-of-week`.
        schedule: String,
    },
    /// Fixed period.
    Interval {
        /// Seconds between runs (at least 1).
        seconds: u64,
    },
    /// A ledger event whose type matches.
    Event {
        /// Event type, exact or prefix with a trailing `*` (`"watch.*"`).
        #[serde(rename = "match")]
        pattern: String,
    },
    /// `POST /webhook/<path>` on the routines socket, authenticated with the secret.
    Webhook {
        /// Path segment after `/webhook/`.
        path: String,
        /// File holding the HMAC secret (never in the Nix store).
        secret_file: Option<PathBuf>,
    },
}

/// What a routine does, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RoutineAction {
    /// Run a program (argv, no shell).
    Command {
        /// Program and arguments.
        command: Vec<String>,
        /// Kill the program after this many seconds.
        timeout_secs: u64,
    },
    /// Call agentd's API on its socket and record the response.
    Agentd {
        /// HTTP method.
        method: HttpMethod,
        /// Path and query, e.g. `/health`.
        path: String,
        /// JSON body for POST.
        body: Option<serde_json::Value>,
    },
}

/// HTTP methods a routine may use against agentd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
}

impl RoutinesConfig {
    /// Semantic checks: cron syntax shape, intervals, argv, paths.
    ///
    /// # Errors
    /// Returns a message with the JSON path of the first bad value.
    pub fn validate(&self) -> Result<(), String> {
        for (name, r) in &self.routines {
            let at = format!("routines.{name}");
            match &r.trigger {
                Trigger::Cron { schedule } if schedule.split_whitespace().count() != 5 => {
                    return Err(format!(
                        "{at}.trigger.schedule {schedule:?} must have 5 fields \
                         (minute hour day-of-month month day-of-week)"
                    ));
                }
                Trigger::Interval { seconds: 0 } => {
                    return Err(format!("{at}.trigger.seconds must be at least 1"))
                }
                Trigger::Webhook { path, .. }
                    if path.is_empty() || path.contains('/') || path.contains("..") =>
                {
                    return Err(format!(
                        "{at}.trigger.path {path:?} must be one non-empty path segment"
                    ))
                }
                _ => {}
            }
            match &r.action {
                RoutineAction::Command {
                    command,
                    timeout_secs,
                } => {
                    if command.is_empty() {
                        return Err(format!("{at}.action.command must not be empty"));
                    }
                    if *timeout_secs == 0 {
                        return Err(format!("{at}.action.timeout_secs must be at least 1"));
                    }
                }
                RoutineAction::Agentd { path, .. } if !path.starts_with('/') => {
                    return Err(format!("{at}.action.path {path:?} must start with '/'"))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_trigger_uses_match_key() {
        let t: Trigger = serde_json::from_str(r#"{"type":"event","match":"watch.*"}"#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            t,
            Trigger::Event {
                pattern: "watch.*".into()
            }
        );
        let e = serde_json::from_str::<Trigger>(r#"{"type":"event","pattern":"x"}"#).unwrap_err();
        assert!(e.to_string().contains("unknown field `pattern`"), "{e}");
    }

    #[test]
    fn validate_cron_fields() {
        let json = r#"{"routines":{"r":{"enable":true,"trigger":{"type":"cron","schedule":"0 8 * *"},
            "action":{"type":"command","command":["true"],"timeout_secs":5}}}}"#;
        let c: RoutinesConfig = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        let e = c.validate().unwrap_err();
        assert!(e.starts_with("routines.r.trigger.schedule"), "{e}");
    }
}
