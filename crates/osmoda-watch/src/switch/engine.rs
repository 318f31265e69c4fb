//! The SafeSwitch driver: one task per switch walks the persisted state machine.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osmoda_config::HealthCheck;
use serde_json::json;
use tokio::sync::watch;

use super::session::{now_ms, now_rfc3339, CheckReport, SwitchSession, SwitchState, Transition};
use super::store::Store;
use crate::agentd::Agentd;
use crate::backend::Backend;
use crate::checks::{CheckEnv, Probe};
use crate::error::{Result, WatchError};
use crate::tree::ConfigTree;

/// Longest TTL accepted (a day): a switch must end.
pub const MAX_TTL_SECS: u64 = 86_400;

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

    fn marker(&self) -> String {
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
    /// Checks added to every switch.
    pub default_checks: Vec<HealthCheck>,
    /// Test hook.
    pub pause: Option<PausePoint>,
    /// Where checks find agentd.
    pub check_env: CheckEnv,
}

#[derive(Debug, Clone, PartialEq)]
enum Control {
    Run,
    Commit,
    Rollback(String),
}

struct Active {
    id: u64,
    control: watch::Sender<Control>,
    session: watch::Receiver<SwitchSession>,
}

/// Runs SafeSwitch sessions, one at a time.
pub struct Engine {
    store: Store,
    backend: Arc<dyn Backend>,
    tree: Arc<ConfigTree>,
    agentd: Arc<Agentd>,
    opts: Mutex<EngineOptions>,
    active: Mutex<Option<Active>>,
    finished: watch::Sender<u64>,
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
            finished: watch::channel(0).0,
        }))
    }

    fn opts(&self) -> EngineOptions {
        self.opts
            .lock()
            .map(|o| o.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }

    /// Replaces the configured defaults (after `watch.json` changed).
    pub fn set_defaults(&self, ttl_secs: u64, checks: Vec<HealthCheck>) {
        if let Ok(mut o) = self.opts.lock() {
            o.default_ttl_secs = ttl_secs;
            o.default_checks = checks;
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
        let opts = self.opts();
        let ttl_secs = req.ttl_secs.unwrap_or(opts.default_ttl_secs);
        if ttl_secs > MAX_TTL_SECS {
            return Err(WatchError::BadRequest(format!(
                "ttl_secs {ttl_secs} is above the maximum {MAX_TTL_SECS}"
            )));
        }
        for (i, c) in req.health_checks.iter().enumerate() {
            c.validate()
                .map_err(|e| WatchError::BadRequest(format!("health_checks[{i}]: {e}")))?;
        }
        let generation = match &req.generation {
            Some(g) => self.tree.resolve(g)?,
            None => self.tree.head()?,
        };
        let previous_generation = self.tree.last_deployed()?;
        let mut checks = opts.default_checks.clone();
        checks.extend(req.health_checks);

        let session = {
            let mut active = self
                .active
                .lock()
                .map_err(|_| WatchError::Backend("engine lock poisoned".into()))?;
            if let Some(a) = active.as_ref() {
                let s = a.session.borrow().clone();
                if !s.state.is_terminal() {
                    return Err(WatchError::Conflict(format!(
                        "switch {} is {}; only one switch runs at a time: wait for it, or roll it back with POST /switch/rollback/{}",
                        s.id, s.state.as_str(), s.id
                    )));
                }
            }
            let session = self.new_session(
                generation,
                previous_generation,
                req.plan,
                req.origin,
                ttl_secs,
                checks,
            )?;
            self.store.save(&session)?;
            *active = Some(self.spawn(session.clone()));
            session
        };
        self.event(&session, None).await;
        Ok(session)
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

    /// Every switch, newest first.
    ///
    /// # Errors
    /// When the records cannot be read.
    pub fn history(&self) -> Result<Vec<SwitchSession>> {
        let mut all = self.store.all()?;
        all.reverse();
        Ok(all)
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

    /// Commits a probing switch now instead of at the end of its TTL.
    ///
    /// # Errors
    /// `Conflict` unless the switch is probing (or already committed); `NotFound` for unknown ids.
    pub async fn commit(&self, id: u64) -> Result<SwitchSession> {
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
        self.send(id, Control::Commit);
        self.wait(id).await
    }

    /// Rolls back a switch that has not finished.
    ///
    /// # Errors
    /// `Conflict` if it already committed or failed; `NotFound` for unknown ids.
    pub async fn rollback(&self, id: u64, why: String) -> Result<SwitchSession> {
        let s = self.status(id)?;
        match s.state {
            SwitchState::RolledBack => return Ok(s),
            SwitchState::Committed | SwitchState::Committing | SwitchState::Failed => {
                return Err(WatchError::Conflict(format!(
                    "switch {id} is {}; to go back, begin a new switch to generation {}",
                    s.state.as_str(),
                    s.previous_generation
                        .as_deref()
                        .unwrap_or("<none deployed>")
                )))
            }
            _ => {}
        }
        self.send(id, Control::Rollback(why));
        self.wait(id).await
    }

    fn send(&self, id: u64, c: Control) {
        if let Ok(a) = self.active.lock() {
            if let Some(a) = a.as_ref().filter(|a| a.id == id) {
                let _ = a.control.send(c);
            }
        }
    }

    /// Persists a transition (retrying until the disk takes it), publishes and reports it, then
    /// honours the test pause point. Runs before the new state's side effect.
    async fn enter(
        &self,
        s: &mut SwitchSession,
        to: SwitchState,
        note: Option<String>,
        tx: Option<&watch::Sender<SwitchSession>>,
    ) {
        let at = now_rfc3339();
        s.state = to;
        s.updated_at = at.clone();
        s.history.push(Transition {
            state: to,
            at,
            note: note.clone(),
        });
        let mut delay = Duration::from_millis(50);
        while let Err(e) = self.store.save(s) {
            tracing::error!(
                id = s.id,
                "cannot persist switch state {}: {e}; retrying",
                to.as_str()
            );
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
        if let Some(tx) = tx {
            tx.send_replace(s.clone());
        }
        self.event(s, note).await;
        self.pause(to, false).await;
    }

    async fn pause(&self, state: SwitchState, after: bool) {
        let opts = self.opts();
        if opts.pause.as_ref() == Some(&PausePoint { state, after }) {
            if let Some(p) = &opts.pause {
                let marker = opts.state_dir.join(p.marker());
                if let Err(e) = std::fs::write(&marker, std::process::id().to_string()) {
                    tracing::error!("cannot write pause marker {}: {e}", marker.display());
                }
                tracing::warn!("pausing in {} (OSMODA_WATCH_PAUSE_IN)", p.marker());
                let status = format!("STATUS={}", p.marker());
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Custom(&status)]);
            }
            std::future::pending::<()>().await;
        }
    }

    async fn event(&self, s: &SwitchSession, note: Option<String>) {
        let payload = json!({
            "id": s.id, "generation": s.generation, "previous_generation": s.previous_generation,
            "state": s.state, "origin": s.origin, "backend": s.backend, "note": note,
            "reason": s.reason, "revert_commit": s.revert_commit, "warnings": s.warnings,
        });
        self.agentd
            .event(&format!("watch.switch.{}", s.state.as_str()), payload)
            .await;
    }

    async fn drive(
        self: Arc<Self>,
        mut s: SwitchSession,
        mut control: watch::Receiver<Control>,
        tx: watch::Sender<SwitchSession>,
    ) {
        tx.send_replace(s.clone());
        while !s.state.is_terminal() {
            self.step(&mut s, &mut control, &tx).await;
        }
        self.finished.send_modify(|n| *n += 1);
    }

    fn rollback_requested(control: &watch::Receiver<Control>) -> Option<String> {
        match &*control.borrow() {
            Control::Rollback(why) => Some(why.clone()),
            _ => None,
        }
    }

    async fn step(
        &self,
        s: &mut SwitchSession,
        control: &mut watch::Receiver<Control>,
        tx: &watch::Sender<SwitchSession>,
    ) {
        let id = s.id.to_string();
        match s.state {
            SwitchState::Pending => match self.backend.current().await {
                Ok(prev) => {
                    s.previous_system = prev;
                    s.previous_recorded = true;
                    self.enter(s, SwitchState::Building, None, Some(tx)).await;
                }
                Err(e) => {
                    self.fail_to_rollback(s, format!("cannot record the running system: {e}"), tx)
                        .await
                }
            },
            SwitchState::Building => {
                let gen = s.generation.clone();
                match self.backend.build(&id, &gen).await {
                    Ok(built) => {
                        s.built = Some(built.artifact);
                        s.warnings.extend(built.warnings);
                        self.pause(SwitchState::Building, true).await;
                        match Self::rollback_requested(control) {
                            Some(why) => self.fail_to_rollback(s, why, tx).await,
                            None => self.enter(s, SwitchState::Activating, None, Some(tx)).await,
                        }
                    }
                    Err(e) => {
                        self.fail_to_rollback(s, format!("build failed: {e}"), tx)
                            .await
                    }
                }
            }
            SwitchState::Activating => {
                let built = s.built.clone().unwrap_or_default();
                match self.backend.activate(&id, &built).await {
                    Ok(()) => {
                        self.pause(SwitchState::Activating, true).await;
                        s.probe_deadline_ms = Some(now_ms() + s.ttl_secs * 1000);
                        self.enter(s, SwitchState::Probing, None, Some(tx)).await;
                    }
                    Err(e) => {
                        self.fail_to_rollback(s, format!("activation failed: {e}"), tx)
                            .await
                    }
                }
            }
            SwitchState::Probing => self.probe(s, control, tx).await,
            SwitchState::Committing => {
                let built = s.built.clone().unwrap_or_default();
                let res = match self.backend.make_default(&id, &built).await {
                    Ok(()) => self.tree.tag_deployed(&s.generation),
                    Err(e) => Err(e),
                };
                match res {
                    Ok(()) => {
                        self.pause(SwitchState::Committing, true).await;
                        self.enter(s, SwitchState::Committed, None, Some(tx)).await;
                    }
                    Err(e) => {
                        self.fail_to_rollback(s, format!("commit failed: {e}"), tx)
                            .await
                    }
                }
            }
            SwitchState::RollingBack => self.roll_back(s, tx).await,
            SwitchState::Committed | SwitchState::RolledBack | SwitchState::Failed => {}
        }
    }

    async fn fail_to_rollback(
        &self,
        s: &mut SwitchSession,
        why: String,
        tx: &watch::Sender<SwitchSession>,
    ) {
        tracing::warn!(id = s.id, "rolling back: {why}");
        s.reason = Some(why.clone());
        self.enter(s, SwitchState::RollingBack, Some(why), Some(tx))
            .await;
    }

    async fn probe(
        &self,
        s: &mut SwitchSession,
        control: &mut watch::Receiver<Control>,
        tx: &watch::Sender<SwitchSession>,
    ) {
        let opts = self.opts();
        let probes: Vec<Probe> = s
            .health_checks
            .iter()
            .map(crate::checks::probe_of)
            .collect();
        let deadline = s.probe_deadline_ms.unwrap_or_else(now_ms);
        loop {
            let requested = control.borrow_and_update().clone();
            match requested {
                Control::Commit => {
                    return self
                        .enter(
                            s,
                            SwitchState::Committing,
                            Some("early commit requested".into()),
                            Some(tx),
                        )
                        .await
                }
                Control::Rollback(why) => return self.fail_to_rollback(s, why, tx).await,
                Control::Run => {}
            }
            let mut set = tokio::task::JoinSet::new();
            for (i, p) in probes.iter().cloned().enumerate() {
                let env = opts.check_env.clone();
                set.spawn(async move { (i, p.label(), p.run(&env).await) });
            }
            let mut reports: Vec<(usize, CheckReport)> = Vec::new();
            while let Some(r) = set.join_next().await {
                if let Ok((i, check, outcome)) = r {
                    reports.push((i, CheckReport { check, outcome }));
                }
            }
            reports.sort_by_key(|r| r.0);
            s.checks = reports.into_iter().map(|r| r.1).collect();
            tx.send_replace(s.clone());
            if let Some(bad) = s.checks.iter().find(|c| !c.outcome.ok) {
                let why = format!("health check {} failed: {}", bad.check, bad.outcome.detail);
                return self.fail_to_rollback(s, why, tx).await;
            }
            let now = now_ms();
            if now >= deadline {
                return self
                    .enter(
                        s,
                        SwitchState::Committing,
                        Some("all health checks passed until the TTL".into()),
                        Some(tx),
                    )
                    .await;
            }
            let wait = Duration::from_millis(deadline - now).min(opts.probe_interval);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = control.changed() => {}
            }
        }
    }

    async fn roll_back(&self, s: &mut SwitchSession, tx: &watch::Sender<SwitchSession>) {
        let id = s.id.to_string();
        let why = s
            .reason
            .clone()
            .unwrap_or_else(|| "rollback requested".into());
        if s.previous_recorded {
            if let Err(e) = self
                .backend
                .reactivate(&id, s.previous_system.as_deref())
                .await
            {
                let reason = format!("{why}; then re-activating the previous system failed: {e}");
                s.reason = Some(reason.clone());
                s.incident_id = self
                    .agentd
                    .incident(&format!("SafeSwitch {} failed", s.id), &reason)
                    .await;
                self.enter(s, SwitchState::Failed, Some(reason), Some(tx))
                    .await;
                return;
            }
        }
        match &s.previous_generation {
            Some(prev) => match self.tree.restore(prev, &why) {
                Ok(rev) => s.revert_commit = rev.or(s.revert_commit.take()),
                Err(e) => s.warnings.push(format!(
                    "the system was rolled back but the revert commit failed: {e}"
                )),
            },
            None => s
                .warnings
                .push("no generation was deployed before, so the tree was not reverted".into()),
        }
        if !why.starts_with("manual rollback") && s.incident_id.is_none() {
            let name = format!(
                "SafeSwitch {} rolled back generation {}",
                s.id,
                short(&s.generation)
            );
            s.incident_id = self.agentd.incident(&name, &why).await;
        }
        self.pause(SwitchState::RollingBack, true).await;
        self.enter(s, SwitchState::RolledBack, Some(why), Some(tx))
            .await;
    }
}

fn short(rev: &str) -> &str {
    rev.get(..12).unwrap_or(rev)
}

#[cfg(test)]
mod tests {
    use super::*;

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
