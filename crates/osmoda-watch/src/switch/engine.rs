//! The SafeSwitch driver: one task per switch walks the persisted state machine.

use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osmoda_config::HealthCheck;
use serde_json::json;
use tokio::sync::watch;

use super::session::{now_ms, now_rfc3339, SwitchSession, SwitchState, Transition};
use super::store::Store;
use crate::agentd::Agentd;
use crate::backend::Backend;
use crate::checks::CheckEnv;
use crate::error::{Result, WatchError};
use crate::tree::ConfigTree;

/// Longest TTL accepted (a day): a switch must end.
pub const MAX_TTL_SECS: u64 = 86_400;

/// Most health checks one request may add to a switch (the configured defaults and every
/// watcher's check run too): each is probed every round, so the list must stay small.
pub const MAX_REQUEST_CHECKS: usize = 64;

/// Longest `plan` (and rollback `reason`) a request may carry, in bytes: it becomes a commit
/// message and part of ledger events, which must stay far below agentd's 1 MiB body limit.
pub const MAX_TEXT_BYTES: usize = 4096;

/// A request to begin a switch.
#[derive(Debug, Clone, Default)]
pub struct BeginRequest {
    /// Commit to apply; the tree's HEAD when `None`.
    pub generation: Option<String>,
    /// Human-readable description.
    pub plan: Option<String>,
    /// Probing time; the configured default when `None`.
    pub ttl_secs: Option<u64>,
    /// Checks in addition to the configured defaults.
    pub health_checks: Vec<HealthCheck>,
    /// `api` or `watcher:<name>`.
    pub origin: String,
    /// Approval ticket for a destructive switch to an older generation (agentd's gate judges
    /// it against the running generation when the switch is recorded).
    pub approval: Option<String>,
    /// The request's action label (`X-Osmoda-Action`), carried into every event the switch
    /// causes ([`SwitchSession::action`]).
    pub action: Option<String>,
}

/// Test hook: block in a state (writing a marker file) so a test can `kill -9` there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PausePoint {
    /// State to pause in.
    pub state: SwitchState,
    /// Pause after the state's side effect instead of before it.
    pub after: bool,
}

impl PausePoint {
    /// Parses `<state>` or `<state>:after` (the `OSMODA_WATCH_PAUSE_IN` value).
    ///
    /// # Errors
    /// When the state name is unknown.
    pub fn parse(s: &str) -> Result<PausePoint> {
        let (name, after) = match s.strip_suffix(":after") {
            Some(n) => (n, true),
            None => (s, false),
        };
        let state = serde_json::from_value(json!(name)).map_err(|_| {
            WatchError::Config(format!(
                "unknown switch state {name:?} in pause point {s:?}"
            ))
        })?;
        Ok(PausePoint { state, after })
    }

    pub(super) fn marker(&self) -> String {
        format!(
            "paused-in-{}{}",
            self.state.as_str(),
            if self.after { "-after" } else { "" }
        )
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// State dir (switch records, markers).
    pub state_dir: PathBuf,
    /// Pause between probe rounds.
    pub probe_interval: Duration,
    /// TTL used when a request gives none.
    pub default_ttl_secs: u64,
    /// Checks added to every switch (`safe_switch.health_checks`).
    pub default_checks: Vec<HealthCheck>,
    /// The checks of every declared watcher, also added to every switch: a switch must not
    /// commit while something a watcher guards is broken.
    pub watcher_checks: Vec<HealthCheck>,
    /// Test hook.
    pub pause: Option<PausePoint>,
    /// Where checks find agentd.
    pub check_env: CheckEnv,
}

/// What a request asks of a running switch; commit and rollback carry the requester's action
/// label (`None`: not made for an action, the switch keeps the label it has).
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Control {
    Run,
    Commit(Option<String>),
    Rollback(String, Option<String>),
}

struct Active {
    id: u64,
    control: watch::Sender<Control>,
    session: watch::Receiver<SwitchSession>,
}

/// Runs SafeSwitch sessions, one at a time.
pub struct Engine {
    pub(super) store: Store,
    pub(super) backend: Arc<dyn Backend>,
    pub(super) tree: Arc<ConfigTree>,
    pub(super) agentd: Arc<Agentd>,
    pub(super) opts: Mutex<EngineOptions>,
    active: Mutex<Option<Active>>,
    /// Held while a switch is being started (its generation recorded, its session created), so
    /// two requests cannot both record a generation and only one of them start.
    starting: tokio::sync::Mutex<()>,
    pub(super) finished: watch::Sender<u64>,
}

impl Engine {
    /// An engine persisting under `opts.state_dir`.
    ///
    /// # Errors
    /// When the switch store cannot be opened.
    pub fn new(
        backend: Arc<dyn Backend>,
        tree: Arc<ConfigTree>,
        agentd: Arc<Agentd>,
        opts: EngineOptions,
    ) -> Result<Arc<Engine>> {
        let store = Store::open(&opts.state_dir)?;
        Ok(Arc::new(Engine {
            store,
            backend,
            tree,
            agentd,
            opts: Mutex::new(opts),
            active: Mutex::new(None),
            starting: tokio::sync::Mutex::new(()),
            finished: watch::channel(0).0,
        }))
    }

    pub(super) fn opts(&self) -> EngineOptions {
        self.opts
            .lock()
            .map(|o| o.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Replaces the configured defaults (after `watch.json` changed).
    pub fn set_defaults(
        &self,
        ttl_secs: u64,
        checks: Vec<HealthCheck>,
        watcher_checks: Vec<HealthCheck>,
    ) {
        if let Ok(mut o) = self.opts.lock() {
            o.default_ttl_secs = ttl_secs;
            o.default_checks = checks;
            o.watcher_checks = watcher_checks;
        }
    }

    /// The tree this engine applies.
    pub fn tree(&self) -> &Arc<ConfigTree> {
        &self.tree
    }

    /// The backend in use.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Counts finished switches; watchers reload their config when it changes.
    pub fn finished(&self) -> watch::Receiver<u64> {
        self.finished.subscribe()
    }

    /// Number of switches not yet finished (0 or 1).
    pub fn active_count(&self) -> usize {
        self.active
            .lock()
            .map(|a| {
                a.as_ref()
                    .map_or(0, |a| usize::from(!a.session.borrow().state.is_terminal()))
            })
            .unwrap_or(0)
    }

    /// Begins a switch and returns it in `pending`; the switch runs in the background.
    ///
    /// # Errors
    /// `BadRequest` for an invalid TTL, check or generation; `Conflict` while another switch runs.
    pub async fn begin(self: &Arc<Self>, req: BeginRequest) -> Result<SwitchSession> {
        self.begin_with(req, || async { Ok(((), None)) })
            .await
            .map(|(_, s)| s)
    }

    /// Begins a switch whose generation `prepare` records first (e.g. a watcher edit committed
    /// through agentd): `prepare` returns its own result and, optionally, the generation to
    /// apply instead of the request's. Everything that can be refused is checked before
    /// `prepare` runs — the request (TTL, checks, generation), no other switch running or being
    /// started — so a refused request records nothing.
    ///
    /// # Errors
    /// `BadRequest` for an invalid TTL, check or generation; `Conflict` while another switch
    /// runs or is being started; whatever `prepare` fails with.
    pub async fn begin_with<T, F, Fut>(
        self: &Arc<Self>,
        req: BeginRequest,
        prepare: F,
    ) -> Result<(T, SwitchSession)>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(T, Option<String>)>>,
    {
        let opts = self.opts();
        let ttl_secs = check_request(&req, opts.default_ttl_secs)?;
        let requested = match &req.generation {
            Some(g) => Some(self.tree.resolve(g)?),
            None => None,
        };
        // Never queue behind another start: answer at once, and hold no lock for long.
        let _starting = self.starting.try_lock().map_err(|_| {
            WatchError::Conflict(
                "another switch is being started right now; only one switch runs at a time: try again once it has begun (GET /switch/history)".into(),
            )
        })?;
        self.conflict()?;
        let (out, prepared) = prepare().await?;
        let mut generation = match prepared.or(requested) {
            Some(g) => g,
            None => self.tree.head()?,
        };
        // An older generation is applied as a new commit restoring its tree, so HEAD (and
        // `git log`) say what runs.
        if !self.tree.head_tree_equals(&generation)? {
            let why = req
                .plan
                .clone()
                .filter(|p| !p.trim().is_empty())
                .unwrap_or_else(|| format!("requested by {}", origin_name(&req.origin)));
            generation = self
                .agentd
                .restore(
                    &generation,
                    &why,
                    true,
                    req.approval.as_deref(),
                    req.action.as_deref(),
                )
                .await?;
        }
        let previous_generation = self.tree.last_deployed()?;
        let checks = switch_checks([
            opts.default_checks.clone(),
            opts.watcher_checks.clone(),
            self.backend.default_checks().await,
            req.health_checks,
        ]);

        let session = {
            let mut active = self
                .active
                .lock()
                .map_err(|_| WatchError::Backend("engine lock poisoned".into()))?;
            busy(active.as_ref())?;
            let mut session = self.new_session(
                generation,
                previous_generation,
                req.plan,
                req.origin,
                ttl_secs,
                checks,
            )?;
            session.action = req.action;
            self.store.save(&session)?;
            *active = Some(self.spawn(session.clone()));
            session
        };
        self.event(&session, None).await;
        Ok((out, session))
    }

    /// `Conflict` if a switch is running now.
    fn conflict(&self) -> Result<()> {
        let active = self
            .active
            .lock()
            .map_err(|_| WatchError::Backend("engine lock poisoned".into()))?;
        busy(active.as_ref())
    }

    fn new_session(
        &self,
        generation: String,
        previous_generation: Option<String>,
        plan: Option<String>,
        origin: String,
        ttl_secs: u64,
        checks: Vec<HealthCheck>,
    ) -> Result<SwitchSession> {
        let now = now_rfc3339();
        Ok(SwitchSession {
            id: self.store.next_id()?,
            generation,
            previous_generation,
            plan,
            origin: if origin.is_empty() {
                "api".into()
            } else {
                origin
            },
            action: None,
            ttl_secs,
            health_checks: checks,
            state: SwitchState::Pending,
            backend: self.backend.name().to_string(),
            previous_recorded: false,
            previous_system: None,
            built: None,
            warnings: Vec::new(),
            probe_deadline_ms: None,
            checks: Vec::new(),
            reason: None,
            revert_commit: None,
            incident_id: None,
            recoveries: 0,
            created_at: now.clone(),
            updated_at: now.clone(),
            history: vec![Transition {
                state: SwitchState::Pending,
                at: now,
                note: None,
            }],
        })
    }

    /// Like [`Engine::spawn`], but the driver starts only once a session arrives on the returned
    /// oneshot (recovery persists the recovery transition first).
    fn spawn_paused(
        self: &Arc<Self>,
        session: SwitchSession,
    ) -> (
        Active,
        watch::Sender<SwitchSession>,
        tokio::sync::oneshot::Sender<SwitchSession>,
    ) {
        let (control, control_rx) = watch::channel(Control::Run);
        let (tx, rx) = watch::channel(session.clone());
        let (start_tx, start_rx) = tokio::sync::oneshot::channel::<SwitchSession>();
        let engine = Arc::clone(self);
        let driver_tx = tx.clone();
        tokio::spawn(async move {
            if let Ok(s) = start_rx.await {
                engine.drive(s, control_rx, driver_tx).await;
            }
        });
        (
            Active {
                id: session.id,
                control,
                session: rx,
            },
            tx,
            start_tx,
        )
    }

    fn spawn(self: &Arc<Self>, session: SwitchSession) -> Active {
        let (control, control_rx) = watch::channel(Control::Run);
        let (tx, rx) = watch::channel(session.clone());
        let id = session.id;
        let engine = Arc::clone(self);
        tokio::spawn(async move { engine.drive(session, control_rx, tx).await });
        Active {
            id,
            control,
            session: rx,
        }
    }

    /// Finishes the switch a previous run of the daemon left unfinished: inside the TTL it resumes
    /// probing, a decided commit or rollback is completed, anything else is rolled back. Returns
    /// the resumed switch (it keeps running in the background). Call once at start, before serving.
    ///
    /// # Errors
    /// When the switch records cannot be read.
    pub async fn recover(self: &Arc<Self>) -> Result<Option<SwitchSession>> {
        // A record that cannot be read is kept for a person and recorded, never a reason not
        // to start: the daemon must stay able to answer and roll back the switches it can read.
        for bad in self.store.set_aside_unreadable()? {
            let payload = serde_json::json!({
                "id": bad.id,
                "file": bad.file,
                "kept_as": bad.kept_as,
                "reason": super::driver::bounded(&bad.reason),
                "note": "this switch record could not be read and was set aside at start; a person must check what the switch did",
            });
            self.agentd.event("watch.switch.set-aside", payload).await;
        }
        let mut unfinished: Vec<_> = self
            .store
            .all()?
            .into_iter()
            .filter(|s| !s.state.is_terminal())
            .collect();
        let Some(mut s) = unfinished.pop() else {
            return Ok(None);
        };
        // Only one switch runs at a time, so older unfinished records cannot be resumed safely.
        for mut old in unfinished {
            let note = format!(
                "found unfinished ({}) next to newer switch {}; a person must check it",
                old.state.as_str(),
                s.id
            );
            old.reason = Some(note.clone());
            self.enter(&mut old, SwitchState::Failed, Some(note), None)
                .await;
        }
        s.recoveries += 1;
        let was = s.state;
        let (to, note) = match was {
            SwitchState::Probing if s.probe_deadline_ms.is_some_and(|d| now_ms() < d) => (
                SwitchState::Probing,
                "daemon restarted inside the TTL; resuming probing".to_string(),
            ),
            SwitchState::Probing => (
                SwitchState::RollingBack,
                "daemon restarted after the TTL ended without a recorded result; rolling back"
                    .to_string(),
            ),
            SwitchState::Committing => (
                SwitchState::Committing,
                "daemon restarted while committing; finishing the commit".to_string(),
            ),
            SwitchState::RollingBack => (
                SwitchState::RollingBack,
                "daemon restarted while rolling back; finishing the rollback".to_string(),
            ),
            other => (
                SwitchState::RollingBack,
                format!(
                    "daemon restarted while the switch was {}; rolling back to be safe",
                    other.as_str()
                ),
            ),
        };
        tracing::warn!(id = s.id, from = was.as_str(), to = to.as_str(), "{note}");
        if to == SwitchState::RollingBack && s.reason.is_none() {
            s.reason = Some(note.clone());
        }
        // Claim the slot before anything else can begin a switch.
        let active = self.spawn_paused(s.clone());
        if let Ok(mut slot) = self.active.lock() {
            *slot = Some(active.0);
        }
        self.enter(&mut s, to, Some(note), Some(&active.1)).await;
        let _ = active.2.send(s.clone());
        Ok(Some(s))
    }

    /// The session with this id (live if running, else from disk).
    ///
    /// # Errors
    /// `NotFound` for an unknown id.
    pub fn status(&self, id: u64) -> Result<SwitchSession> {
        if let Ok(a) = self.active.lock() {
            if let Some(a) = a.as_ref().filter(|a| a.id == id) {
                return Ok(a.session.borrow().clone());
            }
        }
        self.store.load(id)
    }

    /// A page of switches, newest first: at most `limit`, with ids below `before` (the id of the
    /// previous page's last switch), all ids when `None`.
    ///
    /// # Errors
    /// When the records cannot be read.
    pub fn history(&self, before: Option<u64>, limit: usize) -> Result<Vec<SwitchSession>> {
        self.store.newest_before(before, limit)
    }

    /// Waits until switch `id` is finished and returns it.
    ///
    /// # Errors
    /// `NotFound` for an unknown id.
    pub async fn wait(&self, id: u64) -> Result<SwitchSession> {
        let rx = self
            .active
            .lock()
            .ok()
            .and_then(|a| a.as_ref().filter(|a| a.id == id).map(|a| a.session.clone()));
        match rx {
            Some(mut rx) => loop {
                let s = rx.borrow_and_update().clone();
                if s.state.is_terminal() || rx.changed().await.is_err() {
                    return Ok(s);
                }
            },
            None => self.store.load(id),
        }
    }

    /// Commits a probing switch now instead of at the end of its TTL; `action` is the
    /// request's action label, carried into the events the commit causes.
    ///
    /// # Errors
    /// `Conflict` unless the switch is probing (or already committed); `NotFound` for unknown ids.
    pub async fn commit(&self, id: u64, action: Option<String>) -> Result<SwitchSession> {
        let s = self.status(id)?;
        match s.state {
            SwitchState::Committed | SwitchState::Committing => return self.wait(id).await,
            SwitchState::Probing => {}
            other => {
                return Err(WatchError::Conflict(format!(
                    "switch {id} is {}; only a probing switch can be committed early",
                    other.as_str()
                )))
            }
        }
        self.send(id, Control::Commit(action));
        self.wait(id).await
    }

    /// Rolls back a switch that has not finished; `action` is the request's action label,
    /// carried into the events the rollback causes.
    ///
    /// # Errors
    /// `Conflict` if it already committed or failed; `NotFound` for unknown ids.
    pub async fn rollback(
        &self,
        id: u64,
        why: String,
        action: Option<String>,
    ) -> Result<SwitchSession> {
        let s = self.status(id)?;
        match s.state {
            SwitchState::RolledBack => return Ok(s),
            SwitchState::Committed | SwitchState::Committing | SwitchState::Failed => {
                let back = match s.previous_generation.as_deref() {
                    Some(prev) => format!("to go back, begin a new switch to generation {prev}"),
                    None => {
                        "nothing was deployed before it, so there is no generation to go back to"
                            .into()
                    }
                };
                return Err(WatchError::Conflict(format!(
                    "switch {id} is {}; only a switch that has not finished can be rolled back; {back}",
                    s.state.as_str()
                )));
            }
            _ => {}
        }
        self.send(id, Control::Rollback(why, action));
        self.wait(id).await
    }

    fn send(&self, id: u64, c: Control) {
        if let Ok(a) = self.active.lock() {
            if let Some(a) = a.as_ref().filter(|a| a.id == id) {
                let _ = a.control.send(c);
            }
        }
    }
}

/// The request's TTL (or `default_ttl`) once the TTL and the checks are valid.
fn check_request(req: &BeginRequest, default_ttl: u64) -> Result<u64> {
    let ttl_secs = req.ttl_secs.unwrap_or(default_ttl);
    if ttl_secs > MAX_TTL_SECS {
        return Err(WatchError::BadRequest(format!(
            "ttl_secs {ttl_secs} is above the maximum {MAX_TTL_SECS}"
        )));
    }
    if ttl_secs == 0 {
        return Err(WatchError::BadRequest(
            "ttl_secs must be at least 1: the TTL bounds every health check, so a switch needs time to probe".into(),
        ));
    }
    if let Some(plan) = &req.plan {
        check_text("plan", plan)?;
    }
    if req.health_checks.len() > MAX_REQUEST_CHECKS {
        return Err(WatchError::BadRequest(format!(
            "health_checks has {} checks; a switch request may add at most {MAX_REQUEST_CHECKS} (the configured checks and every watcher's check run too)",
            req.health_checks.len()
        )));
    }
    for (i, c) in req.health_checks.iter().enumerate() {
        crate::checks::validate(c)
            .map_err(|e| WatchError::BadRequest(format!("health_checks[{i}]: {e}")))?;
    }
    Ok(ttl_secs)
}

/// `BadRequest` when a free text of a request (`plan`, a rollback `reason`) is longer than
/// [`MAX_TEXT_BYTES`].
///
/// # Errors
/// [`WatchError::BadRequest`] naming the field, its size and the limit.
pub fn check_text(field: &str, text: &str) -> Result<()> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(WatchError::BadRequest(format!(
            "{field} is {} bytes; the limit is {MAX_TEXT_BYTES} (it becomes a commit message and part of ledger events): say it in fewer words",
            text.len()
        )));
    }
    Ok(())
}

/// `Conflict` while a switch runs: only one runs at a time.
fn busy(active: Option<&Active>) -> Result<()> {
    if let Some(a) = active {
        let s = a.session.borrow().clone();
        if !s.state.is_terminal() {
            return Err(WatchError::Conflict(format!(
                "switch {} is {}; only one switch runs at a time: wait for it, or roll it back with POST /switch/rollback/{}",
                s.id, s.state.as_str(), s.id
            )));
        }
    }
    Ok(())
}

fn origin_name(origin: &str) -> &str {
    if origin.is_empty() {
        "api"
    } else {
        origin
    }
}

/// The checks of a switch: the configured defaults, every watcher's check, the backend's
/// (sshd on NixOS when it runs), the request's; each once, judged with defaults applied
/// (`{"type":"agentd"}` and `{"type":"agentd","timeout_secs":10,"retries":0}` are one check).
fn switch_checks<const N: usize>(sources: [Vec<HealthCheck>; N]) -> Vec<HealthCheck> {
    let mut out: Vec<HealthCheck> = Vec::new();
    let mut seen: Vec<crate::checks::Probe> = Vec::new();
    for c in sources.into_iter().flatten() {
        let probe = crate::checks::probe_of(&c);
        if !seen.contains(&probe) {
            seen.push(probe);
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn switch_checks_keep_order_and_drop_repeats() {
        let c = |j: serde_json::Value| -> HealthCheck { serde_json::from_value(j).unwrap() };
        let agentd = c(json!({"type": "agentd"}));
        let sshd = c(json!({"type": "systemd", "unit": "sshd.service"}));
        let web = c(json!({"type": "tcp", "host": "127.0.0.1", "port": 80}));
        let rendered = c(json!({"type": "agentd", "timeout_secs": 10, "retries": 0}));
        let slower = c(json!({"type": "agentd", "timeout_secs": 11}));
        assert_eq!(
            switch_checks([
                vec![agentd.clone()],
                vec![web.clone(), sshd.clone(), rendered],
                vec![sshd.clone()],
                vec![agentd.clone(), slower.clone()]
            ]),
            [agentd, web, sshd, slower]
        );
    }

    #[test]
    fn pause_points_parse() {
        assert_eq!(
            PausePoint::parse("probing").unwrap(),
            PausePoint {
                state: SwitchState::Probing,
                after: false
            }
        );
        assert_eq!(
            PausePoint::parse("rolling-back:after").unwrap(),
            PausePoint {
                state: SwitchState::RollingBack,
                after: true
            }
        );
        assert_eq!(
            PausePoint::parse("rolling-back:after").unwrap().marker(),
            "paused-in-rolling-back-after"
        );
        let e = PausePoint::parse("sleeping").unwrap_err().to_string();
        assert!(e.contains("unknown switch state \"sleeping\""), "{e}");
    }
}
