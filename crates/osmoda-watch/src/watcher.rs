//! Autopilot watchers from `watch.json`: each probes its check on its own interval and, while the
//! check fails, escalates deterministically through its `actions` (restart → rollback → notify),
//! each step at most once per incident and with exponential backoff between steps. Recovery
//! closes the incident. Escalation state is persisted so a restart does not repeat a step.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osmoda_config::{HealthCheck, WatchAction, WatchConfig, Watcher};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sha2::{Digest, Sha256};

use crate::agentd::Agentd;
use crate::checks::{probe_of, CheckEnv, Probe};
use crate::error::{Result, WatchError};
use crate::runner::{run_ok, Cmd, Runner};
use crate::scheduler::{Job, Scheduler};
use crate::switch::session::{now_ms, now_rfc3339};
use crate::switch::store::write_atomic;
use crate::switch::{BeginRequest, Engine};

/// Detail of a step that was decided and persisted but has not finished.
const IN_PROGRESS: &str = "in progress";

/// Longest pause between two escalation steps.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// One escalation step taken in an incident.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepTaken {
    /// The action.
    pub action: WatchAction,
    /// RFC 3339 time.
    pub at: String,
    /// Whether the action itself succeeded.
    pub ok: bool,
    /// What happened.
    pub detail: String,
}

/// A failure episode of one watcher.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchIncident {
    /// RFC 3339 time of the first failure.
    pub started_at: String,
    /// Steps taken so far, in order (each action at most once).
    pub steps: Vec<StepTaken>,
    /// Unix ms before which no further step is taken (backoff).
    pub next_step_ms: u64,
    /// agentd incident opened by `notify`.
    pub agentd_incident: Option<String>,
}

/// Persisted and reported state of one watcher.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatcherStatus {
    /// The definition this state belongs to (a changed definition starts fresh).
    pub definition: Option<Watcher>,
    /// `ok`, `failing` or `unknown` (not probed yet).
    pub health: String,
    /// RFC 3339 time of the last probe.
    pub last_check_at: Option<String>,
    /// Result of the last probe.
    pub last_detail: Option<String>,
    /// Open incident, if the check is failing.
    pub incident: Option<WatchIncident>,
    /// Incidents closed by recovery since the daemon started.
    pub recoveries: u64,
}

/// What `GET /watcher/list` returns per watcher.
#[derive(Debug, Clone, Serialize)]
pub struct WatcherView {
    /// Name (`services.osmoda.watch.watchers.<name>`); also the id for `/watcher/remove/{id}`.
    pub id: String,
    /// Same as `id`.
    pub name: String,
    /// The check.
    pub check: HealthCheck,
    /// Seconds between probes.
    pub interval_secs: u64,
    /// Escalation ladder.
    pub actions: Vec<WatchAction>,
    /// Runtime state.
    pub status: WatcherStatus,
}

/// Most probes (with the escalation step they trigger) running at once, over all watchers.
pub const MAX_CONCURRENT_PROBES: usize = 64;

/// One watcher as the scheduler runs it.
struct WatcherJob {
    ctx: Arc<Ctx>,
    name: String,
    def: Watcher,
    probe: Probe,
    status: Mutex<WatcherStatus>,
}

impl Job for WatcherJob {
    fn interval(&self) -> Duration {
        Duration::from_secs(self.def.interval_secs.max(1))
    }

    async fn run(self: Arc<Self>) {
        self.tick().await
    }
}

/// Shared by every watcher.
pub struct Ctx {
    /// SafeSwitch, for the rollback step.
    pub engine: Arc<Engine>,
    /// Ledger events and incidents.
    pub agentd: Arc<Agentd>,
    /// Runs `systemctl restart`.
    pub runner: Arc<dyn Runner>,
    /// Where checks find agentd.
    pub check_env: CheckEnv,
    /// `<state-dir>/watchers`.
    pub dir: PathBuf,
}

/// The set of watchers, probed by one [`Scheduler`] with at most [`MAX_CONCURRENT_PROBES`]
/// probes at once: memory grows by one definition and one status per watcher, not by a task.
pub struct Watchers {
    ctx: Arc<Ctx>,
    jobs: Scheduler<WatcherJob>,
}

impl Watchers {
    /// No watchers yet; call [`Watchers::apply`].
    ///
    /// # Errors
    /// When the state directory cannot be created.
    ///
    /// # Panics
    /// Outside a tokio runtime.
    pub fn new(ctx: Ctx) -> Result<Watchers> {
        std::fs::create_dir_all(&ctx.dir).map_err(WatchError::io("create", &ctx.dir))?;
        Ok(Watchers {
            ctx: Arc::new(ctx),
            jobs: Scheduler::new(MAX_CONCURRENT_PROBES),
        })
    }

    /// Makes the set match `cfg`: new watchers start (probed at once), removed ones stop,
    /// changed ones restart with fresh state; unchanged ones keep running untouched.
    pub fn apply(&self, cfg: &WatchConfig) {
        for name in self.jobs.keys() {
            let same = match (cfg.watchers.get(&*name), self.jobs.get(&name)) {
                (Some(def), Some(job)) => job.def == *def,
                _ => false,
            };
            if !same {
                self.jobs.remove(&name);
            }
        }
        for (name, def) in &cfg.watchers {
            if self.jobs.get(name).is_some() {
                continue;
            }
            // The definition is kept once, in the job; the status gets it when saved or listed.
            let (loaded, aside) = load_status_or_set_aside(&self.ctx.dir, name, def);
            if let (Some((kept_as, reason)), Ok(rt)) =
                (aside, tokio::runtime::Handle::try_current())
            {
                let agentd = Arc::clone(&self.ctx.agentd);
                let payload = json!({ "watcher": name, "kept_as": kept_as, "reason": reason,
                    "note": "the watcher's saved status could not be read; it was set aside and the watcher starts fresh" });
                rt.spawn(async move { agentd.event("watch.watcher.set-aside", payload).await });
            }
            let status = WatcherStatus {
                definition: None,
                ..loaded
            };
            let job = WatcherJob {
                ctx: Arc::clone(&self.ctx),
                name: name.clone(),
                def: def.clone(),
                probe: probe_of(&def.check),
                status: Mutex::new(status),
            };
            self.jobs.insert(name, Arc::new(job));
        }
    }

    /// Number of watchers.
    pub fn count(&self) -> usize {
        self.jobs.len()
    }

    /// Number of probes (or escalation steps) running right now.
    pub fn probing(&self) -> usize {
        self.jobs.running()
    }

    /// Is a watcher with this name configured?
    pub fn contains(&self, name: &str) -> bool {
        self.jobs.get(name).is_some()
    }

    /// At most `limit` watchers with their state, in name order, starting after the name
    /// `after` (paging: pass the last name of a page to get the next).
    pub fn list(&self, after: Option<&str>, limit: usize) -> Vec<WatcherView> {
        self.jobs
            .range(after, limit)
            .into_iter()
            .map(|(name, j)| WatcherView {
                id: name.to_string(),
                name: name.to_string(),
                check: j.def.check.clone(),
                interval_secs: j.def.interval_secs,
                actions: j.def.actions.clone(),
                status: WatcherStatus {
                    definition: Some(j.def.clone()),
                    ..j.status.lock().map(|s| s.clone()).unwrap_or_default()
                },
            })
            .collect()
    }

    /// Stops every watcher.
    pub fn stop(&self) {
        self.jobs.stop();
    }
}

/// The status file of watcher `name`: the name itself when it is short and made of
/// `[A-Za-z0-9_-]`, otherwise a readable prefix plus a SHA-256 of the name, so two names never
/// share a file (`a.b` and `a_b`) and a long name never exceeds a file name's 255 bytes.
fn file_name(name: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if !name.is_empty() && name.len() <= 64 && name.chars().all(plain) {
        return format!("{name}.json");
    }
    let safe: String = name
        .chars()
        .take(64)
        .map(|c| if plain(c) { c } else { '_' })
        .collect();
    let digest = Sha256::digest(name.as_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("{safe}~{hex}.json")
}

#[cfg(test)]
fn load_status(dir: &std::path::Path, name: &str, def: &Watcher) -> WatcherStatus {
    load_status_or_set_aside(dir, name, def).0
}

/// A watcher's saved status; a file that does not parse is moved to `set-aside/` (kept for a
/// person, its new place returned) and the watcher starts fresh.
fn load_status_or_set_aside(
    dir: &std::path::Path,
    name: &str,
    def: &Watcher,
) -> (WatcherStatus, Option<(PathBuf, String)>) {
    let fresh = WatcherStatus {
        definition: Some(def.clone()),
        health: "unknown".into(),
        ..Default::default()
    };
    let path = dir.join(file_name(name));
    let Ok(bytes) = std::fs::read(&path) else {
        return (fresh, None);
    };
    match serde_json::from_slice::<WatcherStatus>(&bytes) {
        Ok(mut s) if s.definition.as_ref() == Some(def) => {
            // A step persisted as started but never finished: the daemon died during it. It
            // counts as taken (never repeated in this incident); say what happened.
            for step in s.incident.iter_mut().flat_map(|i| i.steps.iter_mut()) {
                if step.detail == IN_PROGRESS {
                    step.detail = "interrupted: osmoda-watch restarted during this step".into();
                }
            }
            (s, None)
        }
        Ok(_) => (fresh, None),
        Err(e) => {
            let aside = dir.join("set-aside");
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis());
            let to = aside.join(format!("{}.{stamp}", file_name(name)));
            let moved = std::fs::create_dir_all(&aside).and_then(|()| std::fs::rename(&path, &to));
            let reason = format!("unreadable watcher status: {e}");
            tracing::warn!(watcher = name, kept_as = %to.display(), "{reason}");
            (fresh, moved.ok().map(|()| (to, reason)))
        }
    }
}

fn save_status(ctx: &Ctx, name: &str, def: &Watcher, status: &WatcherStatus) {
    let path = ctx.dir.join(file_name(name));
    let status = WatcherStatus {
        definition: Some(def.clone()),
        ..status.clone()
    };
    let bytes = serde_json::to_vec_pretty(&status).unwrap_or_default();
    if let Err(e) = write_atomic(&path, &bytes) {
        tracing::error!("cannot persist watcher {name}: {e}");
    }
}

fn backoff(interval_secs: u64, steps_taken: usize) -> Duration {
    let factor = 1u64 << steps_taken.saturating_sub(1).min(20);
    Duration::from_secs(interval_secs.saturating_mul(factor)).min(MAX_BACKOFF)
}

impl WatcherJob {
    /// One probe and, while it fails, at most one escalation step. The status file is written
    /// when the incident changes (opened, step taken, closed), not on every probe.
    async fn tick(&self) {
        let (ctx, name, def, status) = (&*self.ctx, &self.name, &self.def, &self.status);
        let outcome = self.probe.run(&ctx.check_env).await;
        osmoda_daemon::metrics::global().watcher_check(if outcome.ok { "ok" } else { "fail" });
        let mut st = status.lock().map(|s| s.clone()).unwrap_or_default();
        st.health = if outcome.ok {
            "ok".into()
        } else {
            "failing".into()
        };
        st.last_check_at = Some(now_rfc3339());
        st.last_detail = Some(outcome.detail.clone());
        let mut changed = false;
        if outcome.ok {
            if let Some(inc) = st.incident.take() {
                recovered(ctx, name, &inc, &outcome.detail).await;
                st.recoveries += 1;
                changed = true;
            }
        } else {
            if st.incident.is_none() {
                st.incident = Some(WatchIncident {
                    started_at: now_rfc3339(),
                    steps: Vec::new(),
                    next_step_ms: 0,
                    agentd_incident: None,
                });
                ctx.agentd
                    .event(
                        "watch.watcher.failing",
                        json!({ "watcher": name, "detail": outcome.detail }),
                    )
                    .await;
                changed = true;
            }
            if let Some(inc) = st.incident.as_mut() {
                let next = def
                    .actions
                    .iter()
                    .find(|a| !inc.steps.iter().any(|s| s.action == **a))
                    .copied();
                if let Some(action) = next.filter(|_| now_ms() >= inc.next_step_ms) {
                    // Persist the decision before acting, so a restart does not repeat the step.
                    inc.steps.push(StepTaken {
                        action,
                        at: now_rfc3339(),
                        ok: false,
                        detail: IN_PROGRESS.into(),
                    });
                    save_status(ctx, name, def, &st);
                    let (ok, detail, agentd_incident) =
                        take_step(ctx, name, def, action, &outcome.detail).await;
                    if let Some(inc) = st.incident.as_mut() {
                        if let Some(last) = inc.steps.last_mut() {
                            last.ok = ok;
                            last.detail = detail.clone();
                        }
                        if agentd_incident.is_some() {
                            inc.agentd_incident = agentd_incident;
                        }
                        inc.next_step_ms = now_ms()
                            + backoff(def.interval_secs, inc.steps.len()).as_millis() as u64;
                    }
                    ctx.agentd
                        .event(
                            "watch.watcher.action",
                            json!({ "watcher": name, "action": action, "ok": ok, "detail": detail }),
                        )
                        .await;
                    changed = true;
                }
            }
        }
        if changed {
            save_status(ctx, name, def, &st);
        }
        if let Ok(mut s) = status.lock() {
            *s = st;
        }
    }
}

async fn recovered(ctx: &Ctx, name: &str, inc: &WatchIncident, detail: &str) {
    let steps: Vec<_> = inc.steps.iter().map(|s| s.action).collect();
    ctx.agentd
        .event(
            "watch.watcher.recovered",
            json!({ "watcher": name, "detail": detail, "steps": steps }),
        )
        .await;
    if let Some(id) = &inc.agentd_incident {
        let summary = format!("watcher {name} recovered: {detail}");
        if let Err(e) = ctx.agentd.resolve_incident(id, &summary).await {
            tracing::error!("cannot resolve incident {id}: {e}");
        }
    }
}

/// Takes one escalation step; returns (ok, detail, agentd incident id).
async fn take_step(
    ctx: &Ctx,
    name: &str,
    def: &Watcher,
    action: WatchAction,
    failure: &str,
) -> (bool, String, Option<String>) {
    match action {
        WatchAction::Restart => match &def.check {
            HealthCheck::Systemd { unit, .. } => {
                match run_ok(
                    ctx.runner.as_ref(),
                    &Cmd::new(["systemctl", "restart", "--", unit]),
                )
                .await
                {
                    Ok(_) => (true, format!("restarted {unit}"), None),
                    Err(e) => (false, format!("restart of {unit} failed: {e}"), None),
                }
            }
            other => (
                false,
                format!(
                    "nothing to restart: a {} check names no systemd unit",
                    other.kind()
                ),
                None,
            ),
        },
        WatchAction::Rollback => {
            let deployed = match ctx.engine.tree().last_deployed() {
                Ok(Some(d)) => d,
                Ok(None) => {
                    return (
                        false,
                        "no generation has been deployed, so there is nothing to roll back to"
                            .into(),
                        None,
                    )
                }
                Err(e) => {
                    return (
                        false,
                        format!("cannot read the deployed generation: {e}"),
                        None,
                    )
                }
            };
            let req = BeginRequest {
                generation: Some(deployed.clone()),
                plan: Some(format!("watcher {name} is failing ({failure}); re-applying the last deployed generation")),
                origin: format!("watcher:{name}"),
                ..BeginRequest::default()
            };
            match ctx.engine.begin(req).await {
                Ok(s) => match ctx.engine.wait(s.id).await {
                    Ok(done) => (
                        done.state == crate::switch::SwitchState::Committed,
                        format!(
                            "SafeSwitch {} to deployed generation {deployed} ended {}",
                            done.id,
                            done.state.as_str()
                        ),
                        None,
                    ),
                    Err(e) => (
                        false,
                        format!("SafeSwitch {} status unknown: {e}", s.id),
                        None,
                    ),
                },
                Err(e) => (
                    false,
                    format!("cannot start the rollback switch: {e}"),
                    None,
                ),
            }
        }
        WatchAction::Notify => {
            let detail = format!(
                "watcher {name}: check {} is failing: {failure}",
                def.check.kind()
            );
            ctx.agentd
                .event("watch.alert", json!({ "watcher": name, "detail": detail }))
                .await;
            match ctx
                .agentd
                .incident(&format!("watcher {name} failing"), &detail, None)
                .await
            {
                Some(id) => (true, format!("incident {id} opened"), Some(id)),
                None => (
                    false,
                    "agentd unreachable: the alert is spooled, no incident opened".into(),
                    None,
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        assert_eq!(backoff(2, 1), Duration::from_secs(2));
        assert_eq!(backoff(2, 2), Duration::from_secs(4));
        assert_eq!(backoff(2, 3), Duration::from_secs(8));
        assert_eq!(backoff(1000, 30), MAX_BACKOFF);
    }

    #[test]
    fn an_interrupted_step_is_kept_and_marked() {
        let dir = tempfile::tempdir().unwrap();
        let def: Watcher = serde_json::from_value(json!({"check": {"type": "agentd"}, "interval_secs": 1, "actions": ["restart", "notify"]})).unwrap();
        let mut st = load_status(dir.path(), "w", &def);
        assert_eq!(st.health, "unknown");
        st.incident = Some(WatchIncident {
            started_at: now_rfc3339(),
            steps: vec![StepTaken {
                action: WatchAction::Restart,
                at: now_rfc3339(),
                ok: false,
                detail: IN_PROGRESS.into(),
            }],
            next_step_ms: 0,
            agentd_incident: None,
        });
        write_atomic(
            &dir.path().join(file_name("w")),
            &serde_json::to_vec(&st).unwrap(),
        )
        .unwrap();
        let back = load_status(dir.path(), "w", &def);
        let steps = &back.incident.unwrap().steps;
        assert_eq!(steps.len(), 1);
        assert!(steps[0].detail.starts_with("interrupted"), "{steps:?}");
        // A changed definition starts fresh.
        let other = Watcher {
            interval_secs: 2,
            ..def
        };
        assert!(load_status(dir.path(), "w", &other).incident.is_none());
    }

    #[test]
    fn an_unreadable_status_is_set_aside_and_the_watcher_starts_fresh() {
        let dir = tempfile::tempdir().unwrap();
        let def: Watcher = serde_json::from_value(
            json!({"check": {"type": "agentd"}, "interval_secs": 1, "actions": ["notify"]}),
        )
        .unwrap();
        std::fs::write(dir.path().join(file_name("w")), b"{\"health\": \"fa").unwrap();
        let (st, aside) = load_status_or_set_aside(dir.path(), "w", &def);
        assert_eq!(st.health, "unknown");
        let (kept, reason) = aside.expect("set aside");
        assert!(reason.contains("unreadable watcher status"), "{reason}");
        assert_eq!(std::fs::read(kept).unwrap(), b"{\"health\": \"fa");
        assert!(!dir.path().join(file_name("w")).exists());
    }

    #[test]
    fn status_file_names_are_safe_and_distinct() {
        assert_eq!(file_name("web-1"), "web-1.json");
        let odd = [
            "../etc",
            "a.b",
            "a_b",
            "a/b",
            "",
            "é",
            &"x".repeat(65),
            &"x".repeat(10_000),
        ];
        let names: Vec<String> = odd.iter().map(|n| file_name(n)).collect();
        for (n, f) in odd.iter().zip(&names) {
            assert!(f.len() <= 100, "{f}");
            assert!(!f.contains('/') && !f.starts_with('.'), "{f}");
            assert!(f.ends_with(".json"), "{n:?} -> {f}");
        }
        assert_eq!(names[2], "a_b.json");
        let mut uniq = names.clone();
        uniq.sort();
        uniq.dedup();
        assert_eq!(uniq.len(), names.len(), "{names:?}");
        assert!(names[0].starts_with("___etc~"), "{}", names[0]);
    }
}
