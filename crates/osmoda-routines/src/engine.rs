//! The engine: owns the routines of the current `routines.json`, starts runs under each
//! routine's concurrency policy, records every run in the history and in the ledger
//! (`routine.run.started` / `routine.run.finished` / `routine.run.skipped`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use osmoda_client::Reporter;
use osmoda_config::{Concurrency, Routine, RoutinesConfig};
use serde_json::json;
use tokio::sync::{broadcast, Notify};

use crate::actions::{self, ActionEnv, Fired, RunInfo};
use crate::error::{Result, RoutinesError};
use crate::history::{History, NewRun, Outcome, Replay};

/// A webhook request whose replay key is already in the history.
fn replayed() -> RoutinesError {
    RoutinesError::Conflict(
        "this signed request was already accepted (a replay); sign a new timestamp".into(),
    )
}

/// Runs that may wait behind a busy routine with `concurrency = "queue"`; beyond it a new run
/// is recorded as skipped.
pub const MAX_QUEUED: usize = 10_000;

/// What `fire` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Fire {
    /// History id of the run.
    pub run_id: i64,
    /// `queued` (it starts as soon as its turn comes) or `skipped`.
    pub status: &'static str,
}

/// A run's action started (for tests and the benchmark: a readiness signal, not a log).
#[derive(Debug, Clone)]
pub struct Started {
    /// Routine name.
    pub routine: String,
    /// History id.
    pub run_id: i64,
    /// What fired it.
    pub fired: Fired,
    /// When the action started.
    pub at: std::time::Instant,
}

struct Slot {
    lock: Arc<tokio::sync::Mutex<()>>,
    waiting: AtomicUsize,
}

/// The running routines. Cheap to share (`Arc`).
pub struct Engine {
    history: Arc<History>,
    reporter: Reporter,
    env: RwLock<ActionEnv>,
    config: RwLock<Arc<RoutinesConfig>>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    active: AtomicUsize,
    tasks: AtomicUsize,
    idle: Notify,
    stopping: AtomicBool,
    started: broadcast::Sender<Started>,
    subscription: Mutex<Option<String>>,
}

/// The payload of a run's ledger events; `chain` is the run's origin chain with the routine
/// itself last and `origin` its seed: what an event routine fired by this event inherits.
fn routine_payload(name: &str, run_id: i64, fired: &Fired) -> serde_json::Value {
    let chain: Vec<&str> = fired
        .chain
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(name))
        .collect();
    let origin = fired
        .origin
        .clone()
        .unwrap_or_else(|| format!("run:{run_id}"));
    json!({ "routine": name, "run_id": run_id, "trigger": fired.kind, "ref": fired.reference,
            "chain": chain, "origin": origin })
}

impl Engine {
    /// An engine over `config`, recording into `history` and the ledger through `reporter`.
    pub fn new(
        config: RoutinesConfig,
        history: Arc<History>,
        reporter: Reporter,
        env: ActionEnv,
    ) -> Arc<Engine> {
        Arc::new(Engine {
            history,
            reporter,
            env: RwLock::new(env),
            config: RwLock::new(Arc::new(config)),
            slots: Mutex::new(HashMap::new()),
            active: AtomicUsize::new(0),
            tasks: AtomicUsize::new(0),
            idle: Notify::new(),
            stopping: AtomicBool::new(false),
            started: broadcast::channel(4096).0,
            subscription: Mutex::new(None),
        })
    }

    /// Records why agentd's event subscription fails (`None`: it answers); returns whether
    /// this is a new problem (the caller logs it loudly once).
    pub fn set_subscription_problem(&self, problem: Option<String>) -> bool {
        let mut p = self.subscription.lock().unwrap_or_else(|e| e.into_inner());
        let new = problem.is_some() && p.is_none();
        *p = problem;
        new
    }

    /// Why event triggers are not being received now, if they are not.
    pub fn subscription_problem(&self) -> Option<String> {
        self.subscription
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<RoutinesConfig> {
        Arc::clone(&self.config.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Replaces the configuration (already validated) and the action environment.
    pub fn set_config(&self, config: RoutinesConfig, env: ActionEnv) {
        *self.config.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        *self.env.write().unwrap_or_else(|e| e.into_inner()) = env;
    }

    /// The history database.
    pub fn history(&self) -> &Arc<History> {
        &self.history
    }

    /// Subscribes to "an action started" notices.
    pub fn started(&self) -> broadcast::Receiver<Started> {
        self.started.subscribe()
    }

    /// Runs going on now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    fn slot(&self, name: &str) -> Arc<Slot> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(slots.entry(name.to_string()).or_insert_with(|| {
            Arc::new(Slot {
                lock: Arc::new(tokio::sync::Mutex::new(())),
                waiting: AtomicUsize::new(0),
            })
        }))
    }

    /// Fires routine `name` now: records a run and starts it under the routine's concurrency
    /// policy (a busy routine with `skip` records the run as skipped).
    ///
    /// # Errors
    /// `NotFound` for an unknown routine, `Conflict` for a disabled one (nothing recorded);
    /// `History` when the run cannot be recorded.
    pub async fn fire(self: &Arc<Self>, name: &str, fired: Fired) -> Result<Fire> {
        self.fire_once(name, fired, None).await
    }

    /// As [`Engine::fire`], recording `replay` (a webhook request's key) in the transaction
    /// that records the run: when anything fails before, the request can be sent again.
    ///
    /// # Errors
    /// As [`Engine::fire`]; `Conflict` when `replay` was already seen (nothing recorded).
    pub async fn fire_once(
        self: &Arc<Self>,
        name: &str,
        fired: Fired,
        replay: Option<Replay>,
    ) -> Result<Fire> {
        self.fire_with(name, fired, replay, None).await
    }

    /// As [`Engine::fire`] for a schedule's due time `mark_ms` (Unix ms): the routine's
    /// schedule mark moves to it in the transaction that records the run (queued or skipped),
    /// so a stop before leaves the run missed (`runOnce` brings it back) and one after has it
    /// recorded (never run twice).
    ///
    /// # Errors
    /// As [`Engine::fire`]; nothing recorded, the mark unmoved.
    pub async fn fire_scheduled(
        self: &Arc<Self>,
        name: &str,
        fired: Fired,
        mark_ms: i64,
    ) -> Result<Fire> {
        self.fire_with(name, fired, None, Some(mark_ms)).await
    }

    async fn fire_with(
        self: &Arc<Self>,
        name: &str,
        fired: Fired,
        replay: Option<Replay>,
        mark: Option<i64>,
    ) -> Result<Fire> {
        let cfg = self.config();
        let routine = cfg.routines.get(name).ok_or_else(|| {
            RoutinesError::NotFound(format!(
                "no routine named {name:?}; GET /routine/list lists the routines in force"
            ))
        })?;
        if !routine.enable {
            return Err(RoutinesError::Conflict(format!(
                "routine {name:?} is disabled: set services.osmoda.routines.{name}.enable = true to run it; nothing ran"
            )));
        }
        let slot = self.slot(name);
        if routine.concurrency == Concurrency::Skip && slot.lock.try_lock().is_err() {
            return self
                .record_skip(
                    name,
                    &fired,
                    "the previous run is still going",
                    replay,
                    mark,
                )
                .await;
        }
        if slot.waiting.load(Ordering::SeqCst) >= MAX_QUEUED {
            return self
                .record_skip(name, &fired, "too many runs queued", replay, mark)
                .await;
        }
        // The payload goes to the history with the run (a restart keeps it) and is read
        // back when the run's turn comes: nothing of it waits in memory.
        let payload = fired.payload.as_ref().map(actions::handed_payload);
        let lineage = fired.lineage();
        let run = NewRun {
            payload: payload.as_deref(),
            replay: replay.as_ref(),
            mark,
            ..NewRun::new(name, &fired.kind, &fired.reference, &lineage)
        };
        let run_id = self.history.record(&run, None)?.ok_or_else(replayed)?;
        let mut fired = fired;
        fired.payload = None;
        fired.origin.get_or_insert_with(|| format!("run:{run_id}"));
        self.launch(run_id, name.to_string(), fired);
        Ok(Fire {
            run_id,
            status: "queued",
        })
    }

    async fn record_skip(
        &self,
        name: &str,
        fired: &Fired,
        why: &str,
        replay: Option<Replay>,
        mark: Option<i64>,
    ) -> Result<Fire> {
        let lineage = fired.lineage();
        let run = NewRun {
            replay: replay.as_ref(),
            mark,
            ..NewRun::new(name, &fired.kind, &fired.reference, &lineage)
        };
        let run_id = self.history.record(&run, Some(why))?.ok_or_else(replayed)?;
        let mut p = routine_payload(name, run_id, fired);
        p["why"] = json!(why);
        self.report("routine.run.skipped", p).await;
        Ok(Fire {
            run_id,
            status: "skipped",
        })
    }

    /// Records one event in the ledger (spooled durably; never fails the caller).
    pub async fn report(&self, kind: &str, payload: serde_json::Value) {
        if kind == "routine.run.skipped" {
            osmoda_daemon::metrics::global().routine_run("skipped");
        }
        if let Err(e) = self.reporter.report(kind, payload).await {
            tracing::error!("cannot spool ledger event {kind}: {e}");
        }
    }

    /// Starts the queued run `run_id` of `name` in the background: waits for the routine's
    /// turn (or records it skipped when the routine is busy and `skip`), then runs the action.
    pub fn launch(self: &Arc<Self>, run_id: i64, name: String, fired: Fired) {
        let this = Arc::clone(self);
        let slot = self.slot(&name);
        slot.waiting.fetch_add(1, Ordering::SeqCst);
        self.tasks.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(async move {
            this.run_queued(run_id, name, fired, slot).await;
            if this.tasks.fetch_sub(1, Ordering::SeqCst) == 1 {
                this.idle.notify_waiters();
            }
        });
    }

    async fn run_queued(
        self: &Arc<Self>,
        run_id: i64,
        name: String,
        fired: Fired,
        slot: Arc<Slot>,
    ) {
        let this = self;
        {
            let queued_as = this.config().routines.get(&name).cloned();
            let guard = match &queued_as {
                Some(r) if r.concurrency == Concurrency::Skip => {
                    Arc::clone(&slot.lock).try_lock_owned().ok()
                }
                Some(_) => Some(Arc::clone(&slot.lock).lock_owned().await),
                None => None,
            };
            slot.waiting.fetch_sub(1, Ordering::SeqCst);
            // Judged again when its turn has come (a queued run may wait for hours): a routine
            // removed or disabled meanwhile does not run, and a changed one runs as it is now.
            let routine = this.config().routines.get(&name).cloned();
            let why = match (&routine, &guard) {
                (None, _) => Some("the routine was removed before this run's turn came"),
                (Some(r), _) if !r.enable => {
                    Some("the routine was disabled before this run's turn came")
                }
                (Some(_), None) => Some("the previous run is still going"),
                (Some(_), Some(_)) => None,
            };
            let (Some(routine), Some(_guard), None) = (routine, guard, why) else {
                let why = why.unwrap_or("the previous run is still going");
                if let Err(e) = this.history.skip(run_id, why) {
                    tracing::error!("run {run_id}: {e}");
                }
                let mut p = routine_payload(&name, run_id, &fired);
                p["why"] = json!(why);
                this.report("routine.run.skipped", p).await;
                return;
            };
            if this.stopping.load(Ordering::SeqCst) {
                return; // stays queued; started after the restart
            }
            this.active.fetch_add(1, Ordering::SeqCst);
            this.execute(run_id, &name, &routine, fired).await;
            this.active.fetch_sub(1, Ordering::SeqCst);
        }
    }

    async fn execute(&self, run_id: i64, name: &str, routine: &Routine, mut fired: Fired) {
        match self.history.begin(run_id) {
            // The payload recorded with the run (by this process or one before a restart).
            Ok(Some(payload)) => {
                fired.payload = payload.and_then(|p| serde_json::from_str(&p).ok());
            }
            Ok(None) => return, // already started by someone else: never twice
            Err(e) => {
                tracing::error!("run {run_id} of {name}: {e}");
                return;
            }
        }
        let _ = self.started.send(Started {
            routine: name.to_string(),
            run_id,
            fired: fired.clone(),
            at: std::time::Instant::now(),
        });
        self.report("routine.run.started", routine_payload(name, run_id, &fired))
            .await;
        let env = self.env.read().unwrap_or_else(|e| e.into_inner()).clone();
        let t0 = std::time::Instant::now();
        let info = RunInfo {
            routine: name.to_string(),
            run_id,
            fired: fired.clone(),
        };
        let out: Outcome = actions::run(&routine.action, &env, &info).await;
        if let Err(e) = self.history.finish(run_id, &out) {
            tracing::error!("run {run_id} of {name}: {e}");
        }
        osmoda_daemon::metrics::global().routine_run(if out.ok { "ok" } else { "failed" });
        let mut p = routine_payload(name, run_id, &fired);
        p["status"] = json!(if out.ok { "ok" } else { "failed" });
        p["exit"] = json!(out.exit);
        p["duration_ms"] = json!(u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX));
        p["output_sha256"] = json!(out.output_sha256);
        p["output_bytes"] = json!(out.output.len());
        p["output_truncated"] = json!(out.truncated);
        p["error"] = json!(out.error);
        self.report("routine.run.finished", p).await;
    }

    /// Starts every run a previous process left queued (never started), oldest first.
    ///
    /// # Errors
    /// When the history cannot be read.
    pub fn resume_queued(self: &Arc<Self>) -> Result<usize> {
        let queued = self.history.queued()?;
        let n = queued.len();
        for q in queued {
            self.launch(
                q.id,
                q.routine,
                Fired {
                    kind: q.trigger,
                    reference: q.trigger_ref,
                    payload: None,
                    // As recorded: a resumed run keeps its place in its lineage.
                    chain: q.lineage.chain,
                    origin: q.lineage.origin,
                },
            );
        }
        Ok(n)
    }

    /// Stops starting runs and waits up to `grace` for the running ones to end (and for the
    /// waiting ones to give up their turn). Runs not started stay queued for the next start.
    pub async fn stop(&self, grace: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let wait = async {
            loop {
                let idle = self.idle.notified();
                if self.tasks.load(Ordering::SeqCst) == 0 {
                    return;
                }
                idle.await;
            }
        };
        if tokio::time::timeout(grace, wait).await.is_err() {
            tracing::warn!(
                "{} runs still going after {grace:?}; they will be marked interrupted",
                self.active()
            );
        }
    }
}
