//! `/etc/osmoda/routines.json`: scheduled, event-driven and webhook automation.
//!
//! Rendered by `lib/` from `services.osmoda.routines.<name>`; read by osmoda-routines.
//! [`RoutinesConfig::validate`] is what `check-config` runs at build time and what the daemon
//! runs before it accepts a new file: a cron expression croner cannot parse, an unknown time
//! zone, a webhook without a secret file or a prompt without a gateway fail loudly there.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::sandbox::Sandbox;
use crate::watch::BoundaryConfig;

/// Default retention of run history, in days.
pub const DEFAULT_HISTORY_DAYS: u32 = 30;
/// Default webhook replay window, in seconds: a request whose timestamp is further from now is
/// refused, and a signature already seen inside it is a replay.
pub const DEFAULT_REPLAY_WINDOW_SECS: u64 = 300;
/// Default captured output per stream of a command action, in bytes.
pub const DEFAULT_OUTPUT_LIMIT: u64 = 64 * 1024;
/// Largest output cap a command action may ask for (16 MiB).
pub const MAX_OUTPUT_LIMIT: u64 = 16 * 1024 * 1024;
/// Default time budget of an HTTP action, in seconds.
pub const DEFAULT_HTTP_TIMEOUT_SECS: u64 = 30;
/// Default time budget of a prompt action, in seconds.
pub const DEFAULT_PROMPT_TIMEOUT_SECS: u64 = 300;
/// Longest time budget of any action (one day), and the longest jitter.
pub const MAX_SECS: u64 = 86_400;
/// Longest interval between runs of an interval trigger (366 days); a longer period is a
/// schedule that in practice never fires: use a cron expression for yearly jobs.
pub const MAX_INTERVAL_SECS: u64 = 366 * 86_400;

/// The whole `routines.json` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutinesConfig {
    /// Routines by name (`services.osmoda.routines.<name>`).
    pub routines: BTreeMap<String, Routine>,
    /// Paths no command action may see (as osmoda-watch's checks).
    #[serde(default)]
    pub boundary: BoundaryConfig,
    /// Runs older than this many days are deleted from the history (at least 1).
    #[serde(default = "default_history_days")]
    pub history_days: u32,
    /// The OpenClaw gateway that `prompt` actions talk to (`http://127.0.0.1:<port>`), present
    /// when `services.osmoda.gateway.enable`; its token comes from the unit's credential
    /// `gateway-token` (`services.osmoda.routines.gatewayTokenFile`, `--gateway-token-file`)
    /// or `OPENCLAW_GATEWAY_TOKEN` in local mode, never from this file.
    #[serde(default)]
    pub gateway_url: Option<String>,
    /// Names of `services.osmoda.egress.capabilities` when osmoda-egress is enabled: what a
    /// ring1 routine may name (agentd mints its tokens from egress.json).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub egress_capabilities: Vec<String>,
    /// The paths each of those capabilities binds into a Ring 1 sandbox (its `readOnlyPaths`
    /// and `writablePaths`), by name, for those that bind any: none may hold a secret
    /// (`crate::binds`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub capability_paths: BTreeMap<String, Vec<PathBuf>>,
    /// Names of the routines the module defines by default (the HEARTBEAT ones). Unsetting
    /// an operator's definition of one brings the default back, so `/routine/remove` refuses
    /// them and says to set `enable = false`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub default_routines: Vec<String>,
    /// Files holding other osModa daemons' secrets, by the option that names them
    /// (`agentd.capabilityKeyFile`, `keyd.secretFile`, `gateway.environmentFile`, ...): no
    /// routine's sandbox may bind them (`crate::binds`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub daemon_secrets: BTreeMap<String, PathBuf>,
}

fn default_history_days() -> u32 {
    DEFAULT_HISTORY_DAYS
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
    /// What happens to scheduled runs missed while the daemon was down.
    #[serde(default)]
    pub missed: Missed,
    /// Each scheduled run starts a random 0..=`jitter_secs` seconds late.
    #[serde(default)]
    pub jitter_secs: u64,
    /// What happens when the routine fires while its previous run is still going.
    #[serde(default)]
    pub concurrency: Concurrency,
}

/// Policy for runs a schedule missed while the daemon was not running.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Missed {
    /// Missed runs are dropped; the next run is the next one due from now.
    #[default]
    Skip,
    /// If at least one run was missed, run once at start, then keep to the schedule.
    RunOnce,
}

/// Policy when a routine fires while its previous run is still going.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Concurrency {
    /// The new run is recorded as skipped and does not start.
    #[default]
    Skip,
    /// The new run waits for the previous one and starts after it.
    Queue,
}

/// What starts a routine, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// A cron expression (croner): 5 fields, or 6 with seconds first; day-of-month and
    /// day-of-week both restricted means either matches (Vixie cron).
    Cron {
        /// `[second] minute hour day-of-month month day-of-week`, e.g. `"0 8 * * MON-FRI"`.
        schedule: String,
        /// IANA time zone the schedule is read in (`"Europe/Berlin"`); default `UTC`.
        #[serde(default = "utc")]
        timezone: String,
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
    /// `POST /webhook/<path>` on the routines socket, signed with the secret.
    Webhook {
        /// Path segment after `/webhook/`.
        path: String,
        /// File holding the HMAC-SHA256 secret (never in the Nix store).
        secret_file: PathBuf,
        /// Accepted distance between the request's timestamp and now, in seconds.
        #[serde(default = "default_replay_window")]
        replay_window_secs: u64,
    },
}

fn utc() -> String {
    "UTC".to_string()
}

fn default_replay_window() -> u64 {
    DEFAULT_REPLAY_WINDOW_SECS
}

/// What a routine does, tagged by `"type"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum RoutineAction {
    /// Run a program (argv, no shell) behind the command boundary (osmoda-sandbox), or in the
    /// ring sandbox it declares.
    Command {
        /// Program and arguments.
        command: Vec<String>,
        /// Kill the program (and everything it started) after this many seconds.
        timeout_secs: u64,
        /// Environment besides `PATH`, `HOME`, `USER`, `LOGNAME` and the `OSMODA_*` variables
        /// describing the run.
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        env: BTreeMap<String, String>,
        /// User to run as; `None` = `nobody` (or the daemon's own user when it is not root).
        #[serde(default)]
        user: Option<String>,
        /// Bytes of stdout and of stderr kept (the rest is read and dropped).
        #[serde(default = "default_output_limit")]
        output_limit_bytes: u64,
        /// Where it runs: the boundary (default), or a Ring 2 / Ring 1 sandbox run by agentd
        /// (`crate::sandbox`).
        #[serde(default, skip_serializing_if = "Sandbox::is_boundary")]
        sandbox: Sandbox,
        /// Ring 1: the egress capabilities it may use (names of
        /// `services.osmoda.egress.capabilities`; a token for exactly these is minted per run).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        capabilities: Vec<String>,
        /// Ring 1/2: memory budget in MiB (default 512).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        memory_mb: Option<u64>,
        /// Ring 1/2: tasks (processes and threads) at once (default 128).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_tasks: Option<u64>,
    },
    /// Call a daemon's HTTP API on its Unix socket and record the answer.
    Http {
        /// The daemon's socket; `None` = agentd's.
        #[serde(default)]
        socket: Option<PathBuf>,
        /// HTTP method.
        method: HttpMethod,
        /// Path and query, e.g. `/health`.
        path: String,
        /// JSON body (POST).
        #[serde(default)]
        body: Option<serde_json::Value>,
        /// Time budget in seconds.
        #[serde(default = "default_http_timeout")]
        timeout_secs: u64,
    },
    /// Send `message` to the OpenClaw gateway as a user turn, so the agent acts on it.
    Prompt {
        /// What the agent is asked, e.g. "Write the morning briefing".
        message: String,
        /// Time budget of the whole turn, in seconds.
        #[serde(default = "default_prompt_timeout")]
        timeout_secs: u64,
    },
    /// Run `steps` in order, stopping at the first that fails.
    Chain {
        /// The steps (none of them a chain).
        steps: Vec<RoutineAction>,
    },
}

fn default_output_limit() -> u64 {
    DEFAULT_OUTPUT_LIMIT
}

fn default_http_timeout() -> u64 {
    DEFAULT_HTTP_TIMEOUT_SECS
}

fn default_prompt_timeout() -> u64 {
    DEFAULT_PROMPT_TIMEOUT_SECS
}

/// HTTP methods an `http` action may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum HttpMethod {
    /// `GET`.
    Get,
    /// `POST`.
    Post,
    /// `DELETE`.
    Delete,
}

impl HttpMethod {
    /// `"GET"`, `"POST"` or `"DELETE"`.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpMethod::Get => "GET",
            HttpMethod::Post => "POST",
            HttpMethod::Delete => "DELETE",
        }
    }
}

/// Whether `name` can be a routine name (it becomes an option path segment:
/// [`crate::tree_edit::valid_attr_name`]).
pub fn valid_name(name: &str) -> bool {
    crate::tree_edit::valid_attr_name(name)
}

/// Whether `pattern` is a valid event match: printable ASCII without spaces or `|`, with `*`
/// only as the last character (a prefix match).
pub fn valid_event_pattern(pattern: &str) -> bool {
    let body = pattern.strip_suffix('*').unwrap_or(pattern);
    !pattern.is_empty()
        && pattern.len() <= 128
        && body
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'*' && b != b'|')
}

/// Parses a cron schedule as osmoda-routines runs it: croner with an optional seconds field,
/// Vixie-cron day-of-month/day-of-week semantics (either matches when both are restricted).
///
/// # Errors
/// croner's message, e.g. for a wrong field count or a value out of range.
pub fn parse_cron(schedule: &str) -> Result<croner::Cron, String> {
    let fields = schedule.split_whitespace().count();
    if !(5..=6).contains(&fields) {
        return Err(format!(
            "has {fields} fields; give 5 (minute hour day-of-month month day-of-week) \
             or 6 (with seconds first)"
        ));
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .year(croner::parser::Year::Disallowed)
        .dom_and_dow(false)
        .build()
        .parse(schedule)
        .map_err(|e| e.to_string())
}

/// Parses an IANA time zone name (`UTC`, `Europe/Berlin`).
///
/// # Errors
/// When the name is not in the tz database.
pub fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, String> {
    name.parse::<chrono_tz::Tz>()
        .map_err(|_| format!("{name:?} is not an IANA time zone (e.g. UTC, Europe/Berlin)"))
}

/// User names that are root by definition; osmoda-routines also refuses any other name that
/// resolves to uid 0 on the machine when it loads the config.
pub const ROOT_NAMES: &[&str] = &["root", "0"];

/// Whether a cron expression has a next occurrence from now, by croner's own search (bounded
/// by its year limit). A schedule with no date at all (`0 0 30 2 *`) has none. Since a
/// schedule without a year field repeats within the 400-year Gregorian cycle, one that fires
/// once from now fires forever.
pub fn fires(cron: &croner::Cron, tz: chrono_tz::Tz) -> bool {
    cron.find_next_occurrence(&chrono::Utc::now().with_timezone(&tz), false)
        .is_ok()
}

fn valid_env_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_secs(at: &str, field: &str, v: u64) -> Result<(), String> {
    if v == 0 || v > MAX_SECS {
        return Err(format!("{at}.{field} is {v}; give 1..={MAX_SECS} seconds"));
    }
    Ok(())
}

impl RoutinesConfig {
    /// Semantic checks of every routine (schedule, time zone, secrets, argv, paths, ...).
    ///
    /// # Errors
    /// A message starting with the JSON path of the first bad value and saying what to do.
    pub fn validate(&self) -> Result<(), String> {
        if self.history_days == 0 {
            return Err("history_days must be at least 1".into());
        }
        if let Some(url) = &self.gateway_url {
            let ok = ["http://127.0.0.1:", "http://localhost:", "http://[::1]:"]
                .iter()
                .any(|p| url.starts_with(p));
            if !ok {
                return Err(format!(
                    "gateway_url {url:?} must be a loopback http URL such as http://127.0.0.1:18789"
                ));
            }
        }
        for p in &self.boundary.masked_paths {
            if !p.starts_with('/') {
                return Err(format!("boundary.masked_paths: {p:?} must be absolute"));
            }
        }
        let mut hooks = BTreeSet::new();
        for (name, r) in &self.routines {
            let at = format!("routines.{name}");
            if !valid_name(name) {
                return Err(format!(
                    "{at}: the name must start with a letter or '_' and contain only letters, \
                     digits, '-' and '_' (at most 64)"
                ));
            }
            if r.jitter_secs > MAX_SECS {
                return Err(format!("{at}.jitter_secs must be at most {MAX_SECS}"));
            }
            self.check_trigger(&at, &r.trigger, &mut hooks)?;
            self.check_action(&format!("{at}.action"), &r.action, true)?;
        }
        for (option, p) in self
            .capability_paths
            .iter()
            .flat_map(|(c, ps)| ps.iter().map(move |p| (format!("capability_paths.{c}"), p)))
            .chain(
                self.daemon_secrets
                    .iter()
                    .map(|(o, p)| (format!("daemon_secrets.{o}"), p)),
            )
        {
            if !p.is_absolute() {
                return Err(format!("{option}: {} must be absolute", p.display()));
            }
        }
        self.check_ring_binds(&[], &crate::binds::lexically_inside)
    }

    fn check_trigger(
        &self,
        at: &str,
        t: &Trigger,
        hooks: &mut BTreeSet<String>,
    ) -> Result<(), String> {
        match t {
            Trigger::Cron { schedule, timezone } => {
                let cron = parse_cron(schedule).map_err(|e| {
                    format!(
                        "{at}.trigger.schedule {schedule:?}: {e} (give `[second] minute hour \
                             day-of-month month day-of-week`, e.g. \"0 8 * * MON-FRI\")"
                    )
                })?;
                let tz =
                    parse_timezone(timezone).map_err(|e| format!("{at}.trigger.timezone: {e}"))?;
                if !fires(&cron, tz) {
                    return Err(format!(
                        "{at}.trigger.schedule {schedule:?} never fires (no date matches it, \
                         e.g. 30 February); fix the day-of-month and month fields"
                    ));
                }
            }
            Trigger::Interval { seconds } if !(1..=MAX_INTERVAL_SECS).contains(seconds) => {
                return Err(format!(
                    "{at}.trigger.seconds is {seconds}; give 1..={MAX_INTERVAL_SECS} seconds \
                     (366 days; use a cron schedule for rarer runs)"
                ))
            }
            Trigger::Interval { .. } => {}
            Trigger::Event { pattern } if !valid_event_pattern(pattern) => {
                return Err(format!(
                    "{at}.trigger.match {pattern:?} must be an event type (printable ASCII, no \
                     spaces or '|'), optionally ending in '*' for a prefix"
                ))
            }
            Trigger::Event { .. } => {}
            Trigger::Webhook {
                path,
                secret_file,
                replay_window_secs,
            } => {
                let ok = !path.is_empty()
                    && path.len() <= 64
                    && path
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
                    && path != "."
                    && path != "..";
                if !ok {
                    return Err(format!(
                        "{at}.trigger.path {path:?} must be one path segment of [A-Za-z0-9._-] \
                         (at most 64)"
                    ));
                }
                if !hooks.insert(path.clone()) {
                    return Err(format!(
                        "{at}.trigger.path {path:?} is used by another routine's webhook"
                    ));
                }
                if !secret_file.is_absolute() || secret_file.starts_with("/nix/store") {
                    return Err(format!(
                        "{at}.trigger.secret_file {} must be an absolute path outside the Nix \
                         store (the store is world-readable)",
                        secret_file.display()
                    ));
                }
                check_secs(at, "trigger.replay_window_secs", *replay_window_secs)?;
            }
        }
        Ok(())
    }

    fn check_action(&self, at: &str, a: &RoutineAction, top: bool) -> Result<(), String> {
        match a {
            RoutineAction::Command {
                command,
                timeout_secs,
                env,
                user,
                output_limit_bytes,
                sandbox,
                capabilities,
                memory_mb,
                max_tasks,
            } => {
                if command.is_empty() || command[0].is_empty() {
                    return Err(format!("{at}.command must name a program (argv, no shell)"));
                }
                if command.iter().any(|s| s.contains('\0')) {
                    return Err(format!("{at}.command contains a NUL byte"));
                }
                check_secs(at, "timeout_secs", *timeout_secs)?;
                if let Some(bad) = env.keys().find(|k| !valid_env_name(k)) {
                    return Err(format!(
                        "{at}.env: {bad:?} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)"
                    ));
                }
                if let Some(bad) = env.keys().find(|k| k.starts_with("OSMODA_")) {
                    return Err(format!(
                        "{at}.env: {bad:?} is reserved (OSMODA_* describe the run)"
                    ));
                }
                if env.values().any(|v| v.contains('\0')) {
                    return Err(format!("{at}.env: a value contains a NUL byte"));
                }
                if user.as_deref() == Some("") {
                    return Err(format!("{at}.user is empty; leave it unset for nobody"));
                }
                if user.as_deref().is_some_and(|u| ROOT_NAMES.contains(&u)) {
                    return Err(format!(
                        "{at}.user is root: a routine's command never runs as root (it is \
                         scheduled by the agent and runs unattended); leave it unset for \
                         nobody, or name an unprivileged user"
                    ));
                }
                if *output_limit_bytes == 0 || *output_limit_bytes > MAX_OUTPUT_LIMIT {
                    return Err(format!(
                        "{at}.output_limit_bytes must be 1..={MAX_OUTPUT_LIMIT}"
                    ));
                }
                let declared = crate::sandbox::Declared {
                    sandbox: *sandbox,
                    capabilities,
                    memory_mb: *memory_mb,
                    max_tasks: *max_tasks,
                    user: user.as_deref(),
                    timeout_secs: *timeout_secs,
                    output_limit_bytes: *output_limit_bytes,
                    env,
                };
                crate::sandbox::check(at, &declared, &self.egress_capabilities)?;
            }
            RoutineAction::Http {
                socket,
                path,
                timeout_secs,
                ..
            } => {
                if !path.starts_with('/') || path.chars().any(char::is_control) {
                    return Err(format!(
                        "{at}.path {path:?} must start with '/' and have no control characters"
                    ));
                }
                if let Some(s) = socket {
                    if !s.is_absolute() {
                        return Err(format!("{at}.socket {} must be absolute", s.display()));
                    }
                }
                check_secs(at, "timeout_secs", *timeout_secs)?;
            }
            RoutineAction::Prompt {
                message,
                timeout_secs,
            } => {
                if message.trim().is_empty() {
                    return Err(format!("{at}.message is empty"));
                }
                if self.gateway_url.is_none() {
                    return Err(format!(
                        "{at} is a prompt, but no OpenClaw gateway is configured: enable \
                         services.osmoda.gateway, or use a command or http action"
                    ));
                }
                check_secs(at, "timeout_secs", *timeout_secs)?;
            }
            RoutineAction::Chain { steps } => {
                if !top {
                    return Err(format!("{at}: a chain step cannot itself be a chain"));
                }
                if steps.is_empty() {
                    return Err(format!("{at}.steps is empty; give at least one action"));
                }
                for (i, s) in steps.iter().enumerate() {
                    self.check_action(&format!("{at}.steps[{i}]"), s, false)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> RoutinesConfig {
        serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"))
    }

    fn routine(trigger: &str, action: &str) -> String {
        format!(r#"{{"routines":{{"r":{{"enable":true,"trigger":{trigger},"action":{action}}}}}}}"#)
    }

    const CMD: &str = r#"{"type":"command","command":["true"],"timeout_secs":5}"#;

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
    fn defaults_fill_policy_and_timezone() {
        let c = parse(&routine(r#"{"type":"cron","schedule":"0 8 * * *"}"#, CMD));
        let r = &c.routines["r"];
        assert_eq!(r.missed, Missed::Skip);
        assert_eq!(r.concurrency, Concurrency::Skip);
        assert!(matches!(&r.trigger, Trigger::Cron { timezone, .. } if timezone == "UTC"));
        assert_eq!(c.history_days, DEFAULT_HISTORY_DAYS);
        let back = serde_json::to_value(&c).unwrap_or_default();
        assert_eq!(back["routines"]["r"]["missed"], "skip");
        let p: Missed = serde_json::from_str("\"runOnce\"").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p, Missed::RunOnce);
    }

    /// Each bad value fails validation with its path; the good siblings pass.
    #[test]
    fn validation_names_the_bad_value() {
        let good = [
            routine(r#"{"type":"cron","schedule":"0 8 * * *"}"#, CMD),
            routine(
                r#"{"type":"cron","schedule":"*/10 0 8 * * MON-FRI","timezone":"Europe/Berlin"}"#,
                CMD,
            ),
            routine(r#"{"type":"cron","schedule":"0 0 29 2 *"}"#, CMD),
            // 31 April never comes, but day-of-week is restricted too: either matches.
            routine(r#"{"type":"cron","schedule":"0 0 31 4 MON"}"#, CMD),
            routine(r#"{"type":"interval","seconds":31622400}"#, CMD),
            routine(
                r#"{"type":"interval","seconds":5}"#,
                r#"{"type":"command","command":["x"],"timeout_secs":5,"user":"nobody"}"#,
            ),
            routine(r#"{"type":"event","match":"watch.*"}"#, CMD),
            routine(
                r#"{"type":"webhook","path":"deploy","secret_file":"/run/s"}"#,
                CMD,
            ),
            routine(
                r#"{"type":"interval","seconds":1}"#,
                r#"{"type":"chain","steps":[{"type":"http","method":"GET","path":"/health"}]}"#,
            ),
        ];
        for g in &good {
            parse(g).validate().unwrap_or_else(|e| panic!("{g}: {e}"));
        }
        let bad = [
            (
                routine(r#"{"type":"cron","schedule":"0 8 * *"}"#, CMD),
                "routines.r.trigger.schedule",
            ),
            (
                routine(r#"{"type":"cron","schedule":"0 25 * * *"}"#, CMD),
                "routines.r.trigger.schedule",
            ),
            (
                routine(
                    r#"{"type":"cron","schedule":"0 8 * * *","timezone":"Mars/Base"}"#,
                    CMD,
                ),
                "routines.r.trigger.timezone",
            ),
            (
                routine(r#"{"type":"interval","seconds":0}"#, CMD),
                "routines.r.trigger.seconds",
            ),
            // Schedules that never fire: no such date, or a period past any sane bound
            // (u64::MAX seconds overflowed the scheduler's time arithmetic).
            (
                routine(r#"{"type":"cron","schedule":"0 0 30 2 *"}"#, CMD),
                "routines.r.trigger.schedule \"0 0 30 2 *\" never fires",
            ),
            (
                routine(r#"{"type":"cron","schedule":"0 0 0 31 4,6,9,11 *"}"#, CMD),
                "routines.r.trigger.schedule \"0 0 0 31 4,6,9,11 *\" never fires",
            ),
            (
                routine(r#"{"type":"interval","seconds":18446744073709551615}"#, CMD),
                "routines.r.trigger.seconds is 18446744073709551615",
            ),
            (
                routine(r#"{"type":"interval","seconds":31622401}"#, CMD),
                "routines.r.trigger.seconds",
            ),
            (
                routine(
                    r#"{"type":"interval","seconds":5}"#,
                    r#"{"type":"command","command":["x"],"timeout_secs":5,"user":"root"}"#,
                ),
                "routines.r.action.user is root",
            ),
            (
                routine(
                    r#"{"type":"interval","seconds":5}"#,
                    r#"{"type":"chain","steps":[{"type":"command","command":["x"],"timeout_secs":5,"user":"0"}]}"#,
                ),
                "routines.r.action.steps[0].user is root",
            ),
            (
                routine(r#"{"type":"event","match":"a*b"}"#, CMD),
                "routines.r.trigger.match",
            ),
            (
                routine(r#"{"type":"event","match":""}"#, CMD),
                "routines.r.trigger.match",
            ),
            (
                routine(r#"{"type":"webhook","path":"a/b","secret_file":"/s"}"#, CMD),
                "routines.r.trigger.path",
            ),
            (
                routine(
                    r#"{"type":"webhook","path":"x","secret_file":"/nix/store/abc-s"}"#,
                    CMD,
                ),
                "routines.r.trigger.secret_file",
            ),
            (
                routine(r#"{"type":"webhook","path":"x","secret_file":"rel"}"#, CMD),
                "routines.r.trigger.secret_file",
            ),
            (
                routine(
                    r#"{"type":"interval","seconds":5}"#,
                    r#"{"type":"command","command":[],"timeout_secs":5}"#,
                ),
                "routines.r.action.command",
            ),
            (
                routine(
                    r#"{"type":"interval","seconds":5}"#,
                    r#"{"type":"command","command":["x"],"timeout_secs":0}"#,
                ),
                "routines.r.action.timeout_secs",
            ),
            (
                routine(
                    r#"{"type":"interval","seconds":5}"#,
                    r#"{"type":"command","command":["x"],"timeout_secs":5,"env":{"A=B":"c"}}"#,
                ),
                "routines.r.action.env",
            ),
            (
                routine(
                    r#"{"type":"interval","seconds":5}"#,
                    r#"{"type":"command","command":["x"],"timeout_secs":5,"env":{"OSMODA_RUN":"c"}}"#,
                ),
                "routines.r.action.env",
            ),
            (
                routine(
                    r#"{"type":"interval","seconds":5}"#,
                    r#"{"type":"http","method":"GET","path":"health"}"#,
                ),
                "routines.r.action.path",
            ),
            (
                routine(
                    r#"{"type":"interval","seconds":5}"#,
                    r#"{"type":"prompt","message":"hi"}"#,
                ),
                "routines.r.action is a prompt",
            ),
            (
                routine(
                    r#"{"type":"interval","seconds":5}"#,
                    r#"{"type":"chain","steps":[]}"#,
                ),
                "routines.r.action.steps",
            ),
            (
                routine(
                    r#"{"type":"interval","seconds":5}"#,
                    r#"{"type":"chain","steps":[{"type":"chain","steps":[]}]}"#,
                ),
                "routines.r.action.steps[0]",
            ),
        ];
        for (json, want) in &bad {
            let e = parse(json).validate().unwrap_err();
            assert!(e.starts_with(want), "{json}: {e}");
        }
        let mut c = parse(&routine(
            r#"{"type":"interval","seconds":5}"#,
            r#"{"type":"prompt","message":"hi"}"#,
        ));
        c.gateway_url = Some("http://127.0.0.1:18789".into());
        c.validate().unwrap_or_else(|e| panic!("{e}"));
        c.gateway_url = Some("http://example.com".into());
        assert!(c.validate().unwrap_err().starts_with("gateway_url"));
    }

    /// A ring declaration parses from the rendered JSON, is judged against the capabilities
    /// egress declares (in a chain step too), and a boundary command writes none of its keys.
    #[test]
    fn ring_declarations_are_judged_against_egress_capabilities() {
        let ring1 = r#"{"type":"command","command":["curl","https://x"],"timeout_secs":60,"sandbox":"ring1","capabilities":["web"],"memory_mb":64}"#;
        let mut c = parse(&routine(r#"{"type":"interval","seconds":5}"#, ring1));
        let e = c.validate().unwrap_err();
        assert!(
            e.starts_with("routines.r.action.capabilities: \"web\" is not declared"),
            "{e}"
        );
        c.egress_capabilities = vec!["web".into()];
        c.validate().unwrap_or_else(|e| panic!("{e}"));
        let back = serde_json::to_value(&c.routines["r"].action).unwrap_or_default();
        assert_eq!(back["sandbox"], "ring1");
        assert_eq!(back["capabilities"], serde_json::json!(["web"]));
        let chain = format!(
            r#"{{"type":"chain","steps":[{{"type":"http","method":"GET","path":"/health"}},{}]}}"#,
            ring1.replace("web", "npm")
        );
        let mut c = parse(&routine(r#"{"type":"interval","seconds":5}"#, &chain));
        c.egress_capabilities = vec!["web".into()];
        let e = c.validate().unwrap_err();
        assert!(
            e.starts_with("routines.r.action.steps[1].capabilities: \"npm\" is not declared"),
            "{e}"
        );
        let e = serde_json::from_str::<RoutinesConfig>(&routine(
            r#"{"type":"interval","seconds":5}"#,
            r#"{"type":"command","command":["true"],"timeout_secs":5,"sandbox":"ring3"}"#,
        ))
        .unwrap_err();
        assert!(e.to_string().contains("unknown variant `ring3`"), "{e}");
        let plain = parse(&routine(r#"{"type":"interval","seconds":5}"#, CMD));
        let back = serde_json::to_value(&plain).unwrap_or_default();
        for key in ["sandbox", "capabilities", "memory_mb", "max_tasks"] {
            assert!(back["routines"]["r"]["action"].get(key).is_none(), "{back}");
        }
        assert!(back.get("egress_capabilities").is_none(), "{back}");
    }

    #[test]
    fn two_webhooks_cannot_share_a_path() {
        let json = r#"{"routines":{
            "a":{"enable":true,"trigger":{"type":"webhook","path":"x","secret_file":"/s"},"action":{"type":"command","command":["true"],"timeout_secs":5}},
            "b":{"enable":true,"trigger":{"type":"webhook","path":"x","secret_file":"/s"},"action":{"type":"command","command":["true"],"timeout_secs":5}}}}"#;
        let e = parse(json).validate().unwrap_err();
        assert!(e.contains("used by another routine"), "{e}");
    }
}
