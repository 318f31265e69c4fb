//! The scheduler: one task and one heap of due times for every cron and interval routine, so
//! 10,000 routines cost one timer. It sends `(routine, Fired, Mark)` to the engine's queue;
//! jitter delays a send, the missed-run policy decides what happens at start.
//!
//! A schedule's mark (when it last fired, what the missed-run policy reads at start) is written
//! in the transaction that records the run it fired ([`crate::engine::Engine::fire_scheduled`]),
//! never before: a stop inside the jitter delay leaves the old mark, so `runOnce` brings the run
//! back at the next start, and a run recorded has moved the mark, so no start runs it twice.
//! Until then the due time is *pending* in memory, so a config reload inside the delay does
//! not count it as missed.
//!
//! Time comes from a [`Clock`]: wall-clock time in the daemon, a fixed start plus tokio's
//! (pausable) clock in tests, so a test can live through a DST change in milliseconds.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use osmoda_config::{Routine, RoutinesConfig, Trigger};
use tokio::sync::{mpsc, watch};

use crate::actions::Fired;
use crate::history::History;
use crate::schedule::{jitter, Schedule};
use crate::Shutdown;

/// Longest single sleep: the wall clock is re-read at least this often (NTP steps, suspend).
const MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(60);

/// Where the scheduler reads the time.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system's wall clock.
    System,
    /// `start` plus the time tokio's clock has moved since `base` (pausable in tests).
    Tokio {
        /// Wall time at `base`.
        start: DateTime<Utc>,
        /// tokio instant at `start`.
        base: tokio::time::Instant,
    },
}

impl Clock {
    /// A clock reading `start` now and moving with tokio's clock.
    pub fn starting_at(start: DateTime<Utc>) -> Clock {
        Clock::Tokio {
            start,
            base: tokio::time::Instant::now(),
        }
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Clock::System => Utc::now(),
            Clock::Tokio { start, base } => {
                let d = chrono::Duration::from_std(base.elapsed()).unwrap_or_default();
                *start + d
            }
        }
    }
}

/// A fired schedule, as sent to the engine: the routine, what fired it, and the mark to
/// record with its run.
pub type Due = (String, Fired, Mark);

/// Due times sent but whose run is not recorded yet (routine → Unix ms).
type Pending = Arc<Mutex<HashMap<String, i64>>>;

/// A schedule mark (Unix ms) to record with the run it fired ([`History::record`] writes it in
/// the run's transaction). While it lives the due time counts as handled for the scheduler's
/// reloads; dropped (recorded, refused, or lost with the process) it no longer does.
#[derive(Debug)]
pub struct Mark {
    /// The due time (Unix ms).
    pub ms: i64,
    routine: String,
    pending: Pending,
}

impl Mark {
    fn new(pending: &Pending, routine: &str, ms: i64) -> Mark {
        let mut p = pending.lock().unwrap_or_else(|e| e.into_inner());
        let at = p.entry(routine.to_string()).or_insert(ms);
        *at = (*at).max(ms);
        Mark {
            ms,
            routine: routine.to_string(),
            pending: Arc::clone(pending),
        }
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if p.get(&self.routine) == Some(&self.ms) {
            p.remove(&self.routine);
        }
    }
}

struct Entry {
    schedule: Schedule,
    routine: Routine,
}

/// Runs until `shutdown`: keeps one due time per enabled cron/interval routine of the config
/// in `config` (re-read when it changes) and sends each due run to `out`.
pub async fn run(
    clock: Clock,
    mut config: watch::Receiver<Arc<RoutinesConfig>>,
    history: Arc<History>,
    out: mpsc::Sender<Due>,
    mut shutdown: Shutdown,
) {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut heap: BinaryHeap<Reverse<(DateTime<Utc>, String)>> = BinaryHeap::new();
    let pending: Pending = Arc::default();
    let mut reload = true;
    loop {
        if reload {
            reload = false;
            let cfg = Arc::clone(&config.borrow_and_update());
            (entries, heap) = plan(&cfg, &history, clock.now(), &out, &pending).await;
        }
        let now = clock.now();
        while let Some(Reverse((due, name))) = heap.peek().cloned() {
            if due > now {
                break;
            }
            heap.pop();
            let Some(e) = entries.get(&name) else {
                continue;
            };
            let kind = match e.routine.trigger {
                Trigger::Cron { .. } => "cron",
                _ => "interval",
            };
            let fired = Fired {
                kind: kind.into(),
                reference: due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                payload: None,
                chain: Vec::new(),
                origin: None,
            };
            let mark = Mark::new(&pending, &name, due.timestamp_millis());
            send_later(&out, (name.clone(), fired, mark), e.routine.jitter_secs);
            // Late (suspend, a stepped clock): continue from now rather than replaying.
            let from = if due < now { now } else { due };
            if let Some(next) = e.schedule.next_after(from, due) {
                heap.push(Reverse((next, name)));
            }
        }
        // The wall clock can jump (NTP, suspend): re-read it at least every minute. A tokio
        // clock cannot, so a test can sleep straight to a date months away.
        let max = match clock {
            Clock::System => MAX_SLEEP,
            Clock::Tokio { .. } => MAX_SLEEP * 60 * 24 * 366,
        };
        let sleep = heap
            .peek()
            .map(|Reverse((due, _))| (*due - now).to_std().unwrap_or_default())
            .unwrap_or(max)
            .min(max);
        tokio::select! {
            _ = shutdown.wait() => return,
            changed = config.changed() => {
                if changed.is_err() { return; }
                reload = true;
            }
            _ = tokio::time::sleep(sleep) => {}
        }
    }
}

fn send_later(out: &mpsc::Sender<Due>, due: Due, jitter_secs: u64) {
    let delay = jitter(jitter_secs);
    let out = out.clone();
    let due = if delay.is_zero() {
        match out.try_send(due) {
            Ok(()) => return,
            Err(mpsc::error::TrySendError::Full(d) | mpsc::error::TrySendError::Closed(d)) => d,
        }
    } else {
        due
    };
    tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        let _ = out.send(due).await;
    });
}

/// The due times of every enabled time-based routine at `now`, applying the missed-run policy
/// (a `runOnce` routine that missed a run is sent at once).
async fn plan(
    cfg: &RoutinesConfig,
    history: &History,
    now: DateTime<Utc>,
    out: &mpsc::Sender<Due>,
    pending: &Pending,
) -> (
    BTreeMap<String, Entry>,
    BinaryHeap<Reverse<(DateTime<Utc>, String)>>,
) {
    let mut entries = BTreeMap::new();
    let mut heap = BinaryHeap::new();
    // A due time waiting out its jitter has fired: not missed, whatever the database says yet.
    // The pending times are read before the database: the engine records a run with its mark
    // and only then drops the pending time, so a run recorded between the two reads is seen in
    // one of them (read the other way round, it was in neither and ran again as missed).
    let waiting = pending.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut known = history.marks().unwrap_or_else(|e| {
        tracing::error!("schedule marks: {e}");
        Default::default()
    });
    for (name, ms) in waiting {
        let at = known.entry(name).or_insert(ms);
        *at = (*at).max(ms);
    }
    let mut marks = Vec::new();
    for (name, r) in &cfg.routines {
        if !r.enable {
            continue;
        }
        let schedule = match Schedule::of(&r.trigger) {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) => {
                tracing::error!("routine {name}: {e}");
                continue;
            }
        };
        let last = known
            .get(name)
            .copied()
            .and_then(DateTime::from_timestamp_millis);
        let (run_now, next) = schedule.resume(r.missed, last, now);
        if run_now {
            let fired = Fired {
                kind: "missed".into(),
                reference: now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                payload: None,
                chain: Vec::new(),
                origin: None,
            };
            let mark = Mark::new(pending, name, now.timestamp_millis());
            let _ = out.send((name.clone(), fired, mark)).await;
        } else if last.is_none() {
            // First sight: remember it, so a later downtime can tell what was missed.
            marks.push((name.clone(), now.timestamp_millis()));
        }
        if let Some(next) = next {
            heap.push(Reverse((next, name.clone())));
        }
        entries.insert(
            name.clone(),
            Entry {
                schedule,
                routine: r.clone(),
            },
        );
    }
    if let Err(e) = history.set_marks(&marks) {
        tracing::error!("schedule marks: {e}");
    }
    (entries, heap)
}
