//! The SafeSwitch driver: walks one session through the persisted state machine. Every
//! transition is written to disk (and reported to the ledger) before the side effect of the
//! state it enters, so a restart knows exactly what may have happened.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;

use super::engine::{Control, Engine, PausePoint};
use super::session::{now_ms, now_rfc3339, CheckReport, SwitchSession, SwitchState, Transition};
use crate::checks::Probe;

/// Most checks of one round that run at once (each may be a process): a switch guarding many
/// watchers probes them a few at a time instead of starting hundreds of commands together.
const MAX_PARALLEL_CHECKS: usize = 16;

impl Engine {
    /// Persists a transition (retrying until the disk takes it), publishes and reports it, then
    /// honours the test pause point. Runs before the new state's side effect.
    pub(super) async fn enter(
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
        if matches!(
            to,
            SwitchState::Committed | SwitchState::RolledBack | SwitchState::Failed
        ) {
            osmoda_daemon::metrics::global().switch_finished(to.as_str());
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

    pub(super) async fn event(&self, s: &SwitchSession, note: Option<String>) {
        // Texts come from requests, checks and backends (a build's error output): each is
        // bounded so the event stays far below agentd's 1 MiB limit and is never refused.
        let warnings: Vec<String> = s
            .warnings
            .iter()
            .take(EVENT_WARNINGS)
            .map(|w| bounded(w))
            .collect();
        let payload = json!({
            "id": s.id, "generation": s.generation, "previous_generation": s.previous_generation,
            "state": s.state, "origin": bounded(&s.origin), "backend": s.backend,
            "note": note.as_deref().map(bounded), "reason": s.reason.as_deref().map(bounded),
            "revert_commit": s.revert_commit, "warnings": warnings,
            "warnings_left_out": s.warnings.len().saturating_sub(EVENT_WARNINGS),
        });
        self.agentd
            .event_for(
                &format!("watch.switch.{}", s.state.as_str()),
                payload,
                s.action.as_deref(),
            )
            .await;
    }

    pub(super) async fn drive(
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

    /// The reason of a requested rollback, after taking over its requester's action label.
    fn rollback_requested(
        s: &mut SwitchSession,
        control: &watch::Receiver<Control>,
    ) -> Option<String> {
        match &*control.borrow() {
            Control::Rollback(why, action) => {
                adopt(s, action.clone());
                Some(why.clone())
            }
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
                    self.refuse(s, format!("cannot record the running system: {e}"), tx)
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
                        match Self::rollback_requested(s, control) {
                            Some(why) => self.fail_to_rollback(s, why, tx).await,
                            None => self.enter(s, SwitchState::Activating, None, Some(tx)).await,
                        }
                    }
                    Err(e) => self.refuse(s, format!("build failed: {e}"), tx).await,
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

    /// Ends a switch that failed before anything was activated: nothing to roll back, the
    /// running system and the tree's deployed generation are untouched, so it ends `failed`
    /// (not `rolled-back`, which would claim a generation ran and was undone).
    async fn refuse(&self, s: &mut SwitchSession, why: String, tx: &watch::Sender<SwitchSession>) {
        tracing::warn!(id = s.id, "refused before activation: {why}");
        s.reason = Some(why.clone());
        self.enter(s, SwitchState::Failed, Some(why), Some(tx))
            .await;
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

    /// Probes until the TTL ends: rounds of every check, `probe_interval` apart. The TTL bounds
    /// everything: a round still running at the deadline is cut (its commands killed), and the
    /// switch commits only if a whole round passed and none failed; a commit or rollback request
    /// interrupts a round at once.
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
        // A resumed switch (daemon restarted inside the TTL) has no round of its own yet.
        let mut passed = 0u32;
        loop {
            let requested = control.borrow_and_update().clone();
            match requested {
                Control::Commit(action) => {
                    adopt(s, action);
                    return self
                        .enter(
                            s,
                            SwitchState::Committing,
                            Some("early commit requested".into()),
                            Some(tx),
                        )
                        .await;
                }
                Control::Rollback(why, action) => {
                    adopt(s, action);
                    return self.fail_to_rollback(s, why, tx).await;
                }
                Control::Run => {}
            }
            let left = deadline.saturating_sub(now_ms());
            if left == 0 {
                return if passed > 0 {
                    self.enter(
                        s,
                        SwitchState::Committing,
                        Some("all health checks passed until the TTL".into()),
                        Some(tx),
                    )
                    .await
                } else {
                    let why = format!(
                        "no round of health checks finished within the TTL ({} s){}",
                        s.ttl_secs,
                        in_flight(&probes)
                    );
                    self.fail_to_rollback(s, why, tx).await
                };
            }
            let mut set = tokio::task::JoinSet::new();
            let slots = Arc::new(tokio::sync::Semaphore::new(MAX_PARALLEL_CHECKS));
            for (i, p) in probes.iter().cloned().enumerate() {
                let env = opts.check_env.clone();
                let slots = Arc::clone(&slots);
                set.spawn(async move {
                    // The semaphore is never closed, so this waits for a slot and holds it.
                    let _slot = slots.acquire().await;
                    (i, p.label(), p.run(&env).await)
                });
            }
            let round = async {
                let mut reports: Vec<(usize, CheckReport)> = Vec::new();
                while let Some(r) = set.join_next().await {
                    if let Ok((i, check, outcome)) = r {
                        reports.push((i, CheckReport { check, outcome }));
                    }
                }
                reports.sort_by_key(|r| r.0);
                reports.into_iter().map(|r| r.1).collect::<Vec<_>>()
            };
            // Dropping the round (deadline or a request) aborts its tasks, which kills every
            // command they started.
            let reports = tokio::select! {
                r = round => r,
                _ = tokio::time::sleep(Duration::from_millis(left)) => continue,
                _ = control.changed() => continue,
            };
            s.checks = reports;
            tx.send_replace(s.clone());
            if let Some(bad) = s.checks.iter().find(|c| !c.outcome.ok) {
                let why = format!("health check {} failed: {}", bad.check, bad.outcome.detail);
                return self.fail_to_rollback(s, why, tx).await;
            }
            passed += 1;
            let now = now_ms();
            if now >= deadline {
                continue;
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
                    .incident(
                        &format!("SafeSwitch {} failed", s.id),
                        &reason,
                        s.action.as_deref(),
                    )
                    .await;
                self.enter(s, SwitchState::Failed, Some(reason), Some(tx))
                    .await;
                return;
            }
        }
        match &s.previous_generation {
            // Recorded through agentd's config API: a short subject, the details in the body.
            Some(prev) => match self.tree.head_tree_equals(prev) {
                Ok(true) => {}
                Ok(false) => {
                    let reason = format!(
                        "SafeSwitch {} rolled back generation {}\n\n{why}",
                        s.id,
                        short(&s.generation)
                    );
                    let restored = self
                        .agentd
                        .restore(prev, &reason, false, None, s.action.as_deref())
                        .await;
                    match restored {
                        Ok(rev) => s.revert_commit = Some(rev),
                        Err(e) => s.warnings.push(format!(
                            "the system was rolled back but the revert commit could not be recorded: {e}; record it with `agentctl config revert` or by restoring generation {prev}"
                        )),
                    }
                }
                Err(e) => s
                    .warnings
                    .push(format!("cannot compare the tree with {prev}: {e}")),
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
            s.incident_id = self.agentd.incident(&name, &why, s.action.as_deref()).await;
        }
        self.pause(SwitchState::RollingBack, true).await;
        self.enter(s, SwitchState::RolledBack, Some(why), Some(tx))
            .await;
    }
}

/// A request made for an action that commits or rolls back a switch causes what follows: its
/// label replaces the one the switch had. One made for no action (a person) leaves the label of
/// the action that began the switch, whose consequence the switch still is.
fn adopt(s: &mut SwitchSession, action: Option<String>) {
    if action.is_some() {
        s.action = action;
    }
}

/// Names the checks of a round cut by the TTL, for the rollback reason.
fn in_flight(probes: &[Probe]) -> String {
    if probes.is_empty() {
        return String::new();
    }
    let labels: Vec<String> = probes.iter().map(Probe::label).collect();
    format!("; still running: {}", labels.join(", "))
}

fn short(rev: &str) -> &str {
    rev.get(..12).unwrap_or(rev)
}

/// Longest text (in bytes) a `watch.switch.*` event carries per field.
const EVENT_TEXT: usize = 16 * 1024;
/// Most warnings a `watch.switch.*` event carries (the rest are counted).
const EVENT_WARNINGS: usize = 16;

/// `text` cut to [`EVENT_TEXT`] bytes at a character boundary, saying how much was left out.
pub(super) fn bounded(text: &str) -> String {
    if text.len() <= EVENT_TEXT {
        return text.to_string();
    }
    let mut end = EVENT_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!(
        "{}… ({} more bytes left out)",
        &text[..end],
        text.len() - end
    )
}

#[cfg(test)]
mod bounded_tests {
    use super::{bounded, EVENT_TEXT};

    #[test]
    fn texts_are_cut_at_a_character_boundary_and_say_so() {
        assert_eq!(bounded("short"), "short");
        let exact = "a".repeat(EVENT_TEXT);
        assert_eq!(bounded(&exact), exact);
        let long = format!("{}é{}", "a".repeat(EVENT_TEXT - 1), "b".repeat(100));
        let cut = bounded(&long);
        assert!(
            cut.starts_with(&"a".repeat(EVENT_TEXT - 1)),
            "{}",
            &cut[..10]
        );
        assert!(
            cut.ends_with("… (102 more bytes left out)"),
            "{}",
            &cut[cut.len() - 40..]
        );
        assert!(cut.len() < EVENT_TEXT + 64);
    }
}
