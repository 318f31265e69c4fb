//! Where a routine's command runs (`services.osmoda.routines.<name>.action.sandbox`): behind
//! the command boundary (the default: the whole machine read-only with the approval path and
//! the daemons' secrets masked), or in a Ring 2 or Ring 1 sandbox (DESIGN.md §1) that agentd
//! runs for the routine through `POST /sandbox/exec`: an empty root holding only the software,
//! no daemon socket, no network (Ring 2) or only the egress capabilities the routine names
//! (Ring 1, through osmoda-egress with a token agentd mints for each run).
//!
//! [`check`] holds a declaration to `/sandbox/exec`'s own limits, so a routine agentd would
//! refuse at run time fails `check-config` at build time, the daemon's load and `/routine/add`
//! instead.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Where a command action runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Sandbox {
    /// osmoda-sandbox's boundary, run by osmoda-routines itself.
    #[default]
    Boundary,
    /// Ring 1: Ring 2 plus the network of the named egress capabilities.
    Ring1,
    /// Ring 2: an empty root with the software only, no network, no daemon socket.
    Ring2,
}

impl Sandbox {
    /// The default (serde skips it when writing).
    pub fn is_boundary(&self) -> bool {
        *self == Sandbox::Boundary
    }

    /// `"boundary"`, `"ring1"` or `"ring2"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Sandbox::Boundary => "boundary",
            Sandbox::Ring1 => "ring1",
            Sandbox::Ring2 => "ring2",
        }
    }
}

/// Longest run of a ring sandbox, seconds (`/sandbox/exec`'s `timeout_sec`).
pub const RING_MAX_TIMEOUT_SECS: u64 = 600;
/// Bytes of stdout and of stderr a ring sandbox returns (`/sandbox/exec`'s output cap).
pub const RING_OUTPUT_LIMIT: u64 = 64 * 1024;
/// Environment variables a ring routine may set: `/sandbox/exec` takes 64, and the run's four
/// `OSMODA_*` variables (routine, run id, trigger, payload) are among them.
pub const RING_MAX_ENV: usize = 60;
/// Memory budget of a ring sandbox, MiB (`/sandbox/exec`'s `memory_mb`; default 512).
pub const RING_MEMORY_MB: std::ops::RangeInclusive<u64> = 16..=8192;
/// Tasks at once in a ring sandbox (`/sandbox/exec`'s `max_tasks`; default 128).
pub const RING_TASKS: std::ops::RangeInclusive<u64> = 8..=4096;

/// The parts of a command action [`check`] judges.
#[derive(Debug)]
pub struct Declared<'a> {
    /// `sandbox`.
    pub sandbox: Sandbox,
    /// `capabilities`.
    pub capabilities: &'a [String],
    /// `memory_mb`.
    pub memory_mb: Option<u64>,
    /// `max_tasks`.
    pub max_tasks: Option<u64>,
    /// `user`.
    pub user: Option<&'a str>,
    /// `timeout_secs`.
    pub timeout_secs: u64,
    /// `output_limit_bytes`.
    pub output_limit_bytes: u64,
    /// `env`.
    pub env: &'a BTreeMap<String, String>,
}

/// Checks a command action's sandbox declaration at `at` (`routines.<name>.action`), given
/// the capability names `services.osmoda.egress.capabilities` declares (empty when egress is
/// off).
///
/// # Errors
/// A message starting with the JSON path of the bad value and saying what to do.
pub fn check(at: &str, d: &Declared<'_>, declared: &[String]) -> Result<(), String> {
    let ring = d.sandbox.as_str();
    if d.sandbox == Sandbox::Boundary {
        if !d.capabilities.is_empty() {
            return Err(format!(
                "{at}.capabilities: only a ring1 sandbox uses egress capabilities; set \
                 sandbox = \"ring1\", or remove them"
            ));
        }
        if d.memory_mb.is_some() || d.max_tasks.is_some() {
            let which = if d.memory_mb.is_some() {
                "memory_mb"
            } else {
                "max_tasks"
            };
            return Err(format!(
                "{at}.{which}: limits apply to a ring1 or ring2 sandbox, not to the boundary; \
                 set sandbox = \"ring2\" (or \"ring1\"), or remove it"
            ));
        }
        return Ok(());
    }
    if d.user.is_some() {
        return Err(format!(
            "{at}.user: a {ring} sandbox runs its command as nobody (agentd's /sandbox/exec); \
             leave user unset"
        ));
    }
    if d.timeout_secs > RING_MAX_TIMEOUT_SECS {
        return Err(format!(
            "{at}.timeout_secs is {}; a {ring} sandbox runs at most {RING_MAX_TIMEOUT_SECS} \
             seconds (agentd's /sandbox/exec)",
            d.timeout_secs
        ));
    }
    if d.output_limit_bytes > RING_OUTPUT_LIMIT {
        return Err(format!(
            "{at}.output_limit_bytes is {}; a {ring} sandbox returns at most {RING_OUTPUT_LIMIT} \
             bytes of each stream",
            d.output_limit_bytes
        ));
    }
    if d.env.len() > RING_MAX_ENV {
        return Err(format!(
            "{at}.env has {} variables; a {ring} sandbox takes at most {RING_MAX_ENV} (besides \
             the run's OSMODA_* variables)",
            d.env.len()
        ));
    }
    if let Some(k) = d.env.keys().find(|k| {
        ["https_proxy", "http_proxy", "all_proxy"]
            .iter()
            .any(|p| k.eq_ignore_ascii_case(p))
    }) {
        return Err(format!(
            "{at}.env: {k} is set by the sandbox (ring1: the egress relay; ring2: there is no \
             network); remove it"
        ));
    }
    if let Some(m) = d.memory_mb.filter(|m| !RING_MEMORY_MB.contains(m)) {
        return Err(format!(
            "{at}.memory_mb is {m}; give {}..={} MiB",
            RING_MEMORY_MB.start(),
            RING_MEMORY_MB.end()
        ));
    }
    if let Some(t) = d.max_tasks.filter(|t| !RING_TASKS.contains(t)) {
        return Err(format!(
            "{at}.max_tasks is {t}; give {}..={}",
            RING_TASKS.start(),
            RING_TASKS.end()
        ));
    }
    match d.sandbox {
        Sandbox::Ring2 if !d.capabilities.is_empty() => Err(format!(
            "{at}.capabilities: a ring2 sandbox has no network; use sandbox = \"ring1\" to \
             reach the network through these egress capabilities, or remove them"
        )),
        Sandbox::Ring1 if d.capabilities.is_empty() => Err(format!(
            "{at}.capabilities is empty: a ring1 sandbox reaches the network only through the \
             egress capabilities it names; name at least one of \
             services.osmoda.egress.capabilities, or use sandbox = \"ring2\" for no network"
        )),
        Sandbox::Ring1 => match d.capabilities.iter().find(|c| !declared.contains(c)) {
            Some(c) if declared.is_empty() => Err(format!(
                "{at}.capabilities: {c:?} is not declared: osmoda-egress is not enabled or \
                     declares no capabilities (services.osmoda.egress.enable, \
                     services.osmoda.egress.capabilities.{c})"
            )),
            Some(c) => Err(format!(
                "{at}.capabilities: {c:?} is not declared in \
                     services.osmoda.egress.capabilities (declared: {})",
                declared.join(", ")
            )),
            None => Ok(()),
        },
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn declared<'a>(
        sandbox: Sandbox,
        caps: &'a [String],
        env: &'a BTreeMap<String, String>,
    ) -> Declared<'a> {
        Declared {
            sandbox,
            capabilities: caps,
            memory_mb: None,
            max_tasks: None,
            user: None,
            timeout_secs: 60,
            output_limit_bytes: 4096,
            env,
        }
    }

    fn ok(d: Declared<'_>, declared: &[String]) -> Result<(), String> {
        check("r", &d, declared)
    }

    fn err(d: Declared<'_>, declared: &[String]) -> String {
        check("r", &d, declared).unwrap_err()
    }

    /// Each rule with its small case, and the siblings that pass.
    #[test]
    fn a_declaration_is_held_to_sandbox_execs_limits() {
        let env = BTreeMap::new();
        let web = vec!["web".to_string()];
        let none: Vec<String> = Vec::new();
        ok(declared(Sandbox::Boundary, &none, &env), &none).unwrap();
        ok(declared(Sandbox::Ring2, &none, &env), &none).unwrap();
        ok(declared(Sandbox::Ring1, &web, &env), &web).unwrap();
        let mut d = declared(Sandbox::Ring2, &none, &env);
        (d.timeout_secs, d.output_limit_bytes) = (600, 65536);
        (d.memory_mb, d.max_tasks) = (Some(16), Some(4096));
        ok(d, &none).unwrap();

        let e = err(declared(Sandbox::Boundary, &web, &env), &web);
        assert!(e.starts_with("r.capabilities: only a ring1"), "{e}");
        let mut d = declared(Sandbox::Boundary, &none, &env);
        d.memory_mb = Some(64);
        assert!(err(d, &none).starts_with("r.memory_mb: limits apply"));
        let e = err(declared(Sandbox::Ring2, &web, &env), &web);
        assert!(
            e.starts_with("r.capabilities: a ring2 sandbox has no network"),
            "{e}"
        );
        let e = err(declared(Sandbox::Ring1, &none, &env), &web);
        assert!(e.starts_with("r.capabilities is empty"), "{e}");
        let npm = vec!["npm".to_string()];
        let e = err(declared(Sandbox::Ring1, &npm, &env), &web);
        assert!(
            e.contains("\"npm\" is not declared") && e.ends_with("(declared: web)"),
            "{e}"
        );
        let e = err(declared(Sandbox::Ring1, &npm, &env), &none);
        assert!(e.contains("osmoda-egress is not enabled"), "{e}");
        for sandbox in [Sandbox::Ring1, Sandbox::Ring2] {
            let caps: &[String] = if sandbox == Sandbox::Ring1 {
                &web
            } else {
                &none
            };
            let mut d = declared(sandbox, caps, &env);
            d.user = Some("alice");
            assert!(err(d, &web).contains(".user: a ring"));
            let mut d = declared(sandbox, caps, &env);
            d.timeout_secs = 601;
            assert!(err(d, &web).starts_with("r.timeout_secs is 601"));
            let mut d = declared(sandbox, caps, &env);
            d.output_limit_bytes = 65537;
            assert!(err(d, &web).starts_with("r.output_limit_bytes is 65537"));
            let mut d = declared(sandbox, caps, &env);
            d.memory_mb = Some(15);
            assert!(err(d, &web).starts_with("r.memory_mb is 15"));
            let mut d = declared(sandbox, caps, &env);
            d.max_tasks = Some(4097);
            assert!(err(d, &web).starts_with("r.max_tasks is 4097"));
            let proxy = BTreeMap::from([("Https_Proxy".to_string(), "x".to_string())]);
            let e = err(declared(sandbox, caps, &proxy), &web);
            assert!(
                e.starts_with("r.env: Https_Proxy is set by the sandbox"),
                "{e}"
            );
            let many: BTreeMap<String, String> = (0..=RING_MAX_ENV)
                .map(|i| (format!("V{i}"), String::new()))
                .collect();
            assert!(err(declared(sandbox, caps, &many), &web).starts_with("r.env has 61"));
            let fine: BTreeMap<String, String> = (0..RING_MAX_ENV)
                .map(|i| (format!("V{i}"), String::new()))
                .collect();
            ok(declared(sandbox, caps, &fine), &web).unwrap();
        }
    }

    #[test]
    fn names_are_lowercase_and_boundary_is_the_default() {
        assert_eq!(Sandbox::default(), Sandbox::Boundary);
        for s in [Sandbox::Boundary, Sandbox::Ring1, Sandbox::Ring2] {
            let j = serde_json::to_string(&s).unwrap();
            assert_eq!(j, format!("\"{}\"", s.as_str()));
            assert_eq!(serde_json::from_str::<Sandbox>(&j).unwrap(), s);
        }
        assert!(serde_json::from_str::<Sandbox>("\"ring3\"").is_err());
        assert!(serde_json::from_str::<Sandbox>("\"Ring1\"").is_err());
    }
}
