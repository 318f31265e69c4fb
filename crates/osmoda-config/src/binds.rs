//! The rule for what a routine's Ring 1 sandbox may bind: **never a path holding a secret of
//! an osModa daemon**. agentd binds each egress capability's `readOnlyPaths` and
//! `writablePaths` into every Ring 1 sandbox granted it; one that is, holds or lies inside a
//! webhook's `secretFile`, a daemon's key or credential file, or a masked path would show that
//! secret to the routine's command. [`RoutinesConfig::check_ring_binds`] refuses such a
//! routine: lexically in `validate` (build time, `check-config`), and with symlinks resolved
//! on the machine by osmoda-routines at load and on `/routine/add`.
//!
//! Messages name the routine, the capability, the bind path (from the egress options, not a
//! secret) and the option that names the secret; never the secret's path or contents.

use std::path::{Path, PathBuf};

use crate::routines::{RoutineAction, RoutinesConfig, Trigger};
use crate::sandbox::Sandbox;

/// A file or directory holding a secret, with the option that names it (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secret {
    /// Where the secret is named, e.g. `routines.hook.trigger.secret_file`,
    /// `agentd.capabilityKeyFile`, `boundary.masked_paths`.
    pub option: String,
    /// The file or directory.
    pub path: PathBuf,
}

/// Whether `a` is `b` or lies inside it, by path components (no file system access).
pub fn lexically_inside(a: &Path, b: &Path) -> bool {
    a.starts_with(b)
}

/// The first of `binds` that would show one of `secrets` in a sandbox (the secret itself, a
/// directory holding it, or a path inside a secret directory), with that secret.
/// `inside(a, b)` says whether `a` is `b` or lies inside it.
pub fn bind_over_secret<'a>(
    binds: &'a [PathBuf],
    secrets: &'a [Secret],
    inside: &dyn Fn(&Path, &Path) -> bool,
) -> Option<(&'a PathBuf, &'a Secret)> {
    binds.iter().find_map(|b| {
        secrets
            .iter()
            .find(|s| inside(&s.path, b) || inside(b, &s.path))
            .map(|s| (b, s))
    })
}

impl RoutinesConfig {
    /// Every secret this config knows of: the boundary's masked paths (the approval path,
    /// agentd's and keyd's state), every routine's webhook secret file (enabled or not), and
    /// the other daemons' secret files the module names (`daemon_secrets`).
    pub fn secrets(&self) -> Vec<Secret> {
        let masks = self.boundary.masked_paths.iter().map(|p| Secret {
            option: "boundary.masked_paths".into(),
            path: PathBuf::from(p),
        });
        let hooks = self
            .routines
            .iter()
            .filter_map(|(name, r)| match &r.trigger {
                Trigger::Webhook { secret_file, .. } => Some(Secret {
                    option: format!("routines.{name}.trigger.secret_file"),
                    path: secret_file.clone(),
                }),
                _ => None,
            });
        let daemons = self.daemon_secrets.iter().map(|(option, path)| Secret {
            option: option.clone(),
            path: path.clone(),
        });
        masks.chain(hooks).chain(daemons).collect()
    }

    /// Refuses an enabled routine whose Ring 1 sandbox would bind a path holding a secret:
    /// one of [`RoutinesConfig::secrets`] or of `extra` (what the machine adds: the daemon's
    /// state dir and socket, `--mask` paths), judged with `inside` (see [`bind_over_secret`]).
    ///
    /// # Errors
    /// `routines.<name>.action[.steps[i]].capabilities: …` naming the capability, the bind and
    /// the secret's option, and saying what to change.
    pub fn check_ring_binds(
        &self,
        extra: &[Secret],
        inside: &dyn Fn(&Path, &Path) -> bool,
    ) -> Result<(), String> {
        let mut secrets = self.secrets();
        secrets.extend_from_slice(extra);
        for (name, r) in self.routines.iter().filter(|(_, r)| r.enable) {
            let at = format!("routines.{name}.action");
            let steps: Vec<(String, &RoutineAction)> = match &r.action {
                RoutineAction::Chain { steps } => steps
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (format!("{at}.steps[{i}]"), s))
                    .collect(),
                a => vec![(at, a)],
            };
            for (at, a) in steps {
                let RoutineAction::Command {
                    sandbox: Sandbox::Ring1,
                    capabilities,
                    ..
                } = a
                else {
                    continue;
                };
                for cap in capabilities {
                    let binds = self
                        .capability_paths
                        .get(cap)
                        .map_or(&[][..], Vec::as_slice);
                    if let Some((bind, s)) = bind_over_secret(binds, &secrets, inside) {
                        return Err(format!(
                            "{at}.capabilities: {cap:?} binds {} into the ring1 sandbox, which \
                             would show a secret of an osModa daemon ({}) to the command; leave \
                             it out of services.osmoda.egress.capabilities.{cap}.readOnlyPaths \
                             and writablePaths, or keep the secret elsewhere",
                            bind.display(),
                            s.option
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(action: &str, paths: &[&str]) -> RoutinesConfig {
        let json = format!(
            r#"{{"routines":{{
                "r":{{"enable":true,"trigger":{{"type":"interval","seconds":60}},"action":{action}}},
                "hook":{{"enable":false,"trigger":{{"type":"webhook","path":"h","secret_file":"/etc/osmoda/hooks/h.secret"}},
                         "action":{{"type":"command","command":["true"],"timeout_secs":5}}}}}},
              "boundary":{{"masked_paths":["/run/osmoda-admin","/var/lib/osmoda/agentd"]}},
              "egress_capabilities":["web"],
              "capability_paths":{{"web":{}}},
              "daemon_secrets":{{"agentd.capabilityKeyFile":"/etc/keys/cap.key"}}}}"#,
            serde_json::to_string(paths).unwrap_or_default()
        );
        serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"))
    }

    const RING1: &str = r#"{"type":"command","command":["true"],"timeout_secs":5,"sandbox":"ring1","capabilities":["web"]}"#;

    /// A bind that is a secret, holds one or lies inside a secret directory is refused,
    /// naming the capability, the bind and the option, never the secret's path; a bind beside
    /// the secrets passes; a chain step is judged too, a boundary or ring2 command never binds.
    #[test]
    fn ring1_binds_never_cover_a_secret() {
        for (bind, option) in [
            ("/etc/osmoda", "routines.hook.trigger.secret_file"),
            (
                "/etc/osmoda/hooks/h.secret",
                "routines.hook.trigger.secret_file",
            ),
            ("/etc", "routines.hook.trigger.secret_file"),
            ("/etc/keys", "agentd.capabilityKeyFile"),
            ("/run/osmoda-admin/x", "boundary.masked_paths"),
            ("/var/lib/osmoda", "boundary.masked_paths"),
        ] {
            let e = cfg(RING1, &["/usr/share/data", bind])
                .validate()
                .unwrap_err();
            assert!(
                e.starts_with("routines.r.action.capabilities: \"web\" binds ")
                    && e.contains(&format!("binds {bind} into the ring1 sandbox"))
                    && e.contains(&format!("({option})"))
                    && e.contains("services.osmoda.egress.capabilities.web.readOnlyPaths"),
                "{bind}: {e}"
            );
            for secret in ["/etc/osmoda/hooks/h.secret", "/etc/keys/cap.key"] {
                assert!(!e.contains(secret) || bind == secret, "{e}");
            }
            let chain = format!(
                r#"{{"type":"chain","steps":[{{"type":"http","method":"GET","path":"/health"}},{RING1}]}}"#
            );
            let e = cfg(&chain, &[bind]).validate().unwrap_err();
            assert!(
                e.starts_with("routines.r.action.steps[1].capabilities: \"web\""),
                "{e}"
            );
        }
        for ok in [&["/usr/share/data", "/etc/osmoda-other"][..], &[]] {
            cfg(RING1, ok).validate().unwrap_or_else(|e| panic!("{e}"));
        }
        let ring2 = r#"{"type":"command","command":["true"],"timeout_secs":5,"sandbox":"ring2"}"#;
        cfg(ring2, &["/etc"])
            .validate()
            .unwrap_or_else(|e| panic!("{e}"));
        // A disabled ring1 routine never runs; its binds are not judged.
        let mut off = cfg(RING1, &["/etc"]);
        if let Some(r) = off.routines.get_mut("r") {
            r.enable = false;
        }
        off.validate().unwrap_or_else(|e| panic!("{e}"));
        // What the machine adds (a state dir, resolved) is judged the same way.
        let extra = [Secret {
            option: "osmoda-routines' state dir".into(),
            path: "/srv/state/routines".into(),
        }];
        let e = cfg(RING1, &["/srv"])
            .check_ring_binds(&extra, &lexically_inside)
            .unwrap_err();
        assert!(e.contains("(osmoda-routines' state dir)"), "{e}");
    }
}
