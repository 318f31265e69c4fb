//! One timer heap for many periodic jobs: a single dispatcher task keeps every job's next due time
//! in a binary heap and runs at most `pool` jobs at once, so memory grows with the number of jobs
//! (one map entry and one heap entry each) and tasks exist only for jobs that are running.
//!
//! Timing rule: a job first runs as soon as a pool slot is free after [`Scheduler::insert`]; then
//! it is due `interval` after its previous due time, or `interval` after it finished when that
//! time has already passed (a slow or delayed run skips the missed ticks instead of catching up).
//! A job never runs twice at once; when the pool is saturated, due jobs run in due-time order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::future::Future;
use std::ops::Bound;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;

/// A periodic job.
pub trait Job: Send + Sync + 'static {
    /// Time between two runs (at least 1 ms is used).
    fn interval(&self) -> Duration;
    /// One run. Dropped unfinished when the job is removed or replaced.
    fn run(self: Arc<Self>) -> impl Future<Output = ()> + Send + 'static;
}

struct Entry<J> {
    job: Arc<J>,
    /// Distinguishes this insertion from earlier ones under the same key, so a stale heap entry
    /// or a run that finishes after its job was replaced is ignored.
    epoch: u64,
    running: Option<AbortHandle>,
}

struct State<J> {
    jobs: BTreeMap<Arc<str>, Entry<J>>,
    due: BinaryHeap<Reverse<(Instant, u64, Arc<str>)>>,
    next_epoch: u64,
    stopped: bool,
}

struct Inner<J> {
    state: Mutex<State<J>>,
    wake: Notify,
    pool: Arc<Semaphore>,
}

/// Runs [`Job`]s on their intervals; see the module docs for the timing rule.
pub struct Scheduler<J: Job> {
    inner: Arc<Inner<J>>,
    dispatcher: AbortHandle,
}

impl<J: Job> Scheduler<J> {
    /// An empty scheduler whose dispatcher runs at most `pool` (≥ 1) jobs at once.
    ///
    /// # Panics
    /// Outside a tokio runtime (the dispatcher is spawned here).
    pub fn new(pool: usize) -> Scheduler<J> {
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                jobs: BTreeMap::new(),
                due: BinaryHeap::new(),
                next_epoch: 0,
                stopped: false,
            }),
            wake: Notify::new(),
            pool: Arc::new(Semaphore::new(pool.max(1))),
        });
        let dispatcher = tokio::spawn(dispatch(Arc::clone(&inner))).abort_handle();
        Scheduler { inner, dispatcher }
    }

    fn state(&self) -> MutexGuard<'_, State<J>> {
        lock(&self.inner)
    }

    /// Adds `job` under `key`, replacing (and stopping a run of) any job with that key; it is due
    /// at once.
    pub fn insert(&self, key: &str, job: Arc<J>) {
        let mut st = self.state();
        if st.stopped {
            return;
        }
        st.next_epoch += 1;
        let epoch = st.next_epoch;
        let key: Arc<str> = Arc::from(key);
        let old = st.jobs.insert(
            Arc::clone(&key),
            Entry {
                job,
                epoch,
                running: None,
            },
        );
        if let Some(h) = old.and_then(|o| o.running) {
            h.abort();
        }
        st.due.push(Reverse((Instant::now(), epoch, key)));
        drop(st);
        self.inner.wake.notify_one();
    }

    /// Removes the job under `key` and stops its run, if any. Returns whether it existed.
    pub fn remove(&self, key: &str) -> bool {
        let old = self.state().jobs.remove(key);
        match old {
            Some(e) => {
                if let Some(h) = e.running {
                    h.abort();
                }
                true
            }
            None => false,
        }
    }

    /// The job under `key`.
    pub fn get(&self, key: &str) -> Option<Arc<J>> {
        self.state().jobs.get(key).map(|e| Arc::clone(&e.job))
    }

    /// Number of jobs.
    pub fn len(&self) -> usize {
        self.state().jobs.len()
    }

    /// Whether there are no jobs.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of jobs running right now (at most the pool size).
    pub fn running(&self) -> usize {
        self.state()
            .jobs
            .values()
            .filter(|e| e.running.is_some())
            .count()
    }

    /// At most `limit` jobs in key order, starting after `after`.
    pub fn range(&self, after: Option<&str>, limit: usize) -> Vec<(Arc<str>, Arc<J>)> {
        let st = self.state();
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        st.jobs
            .range::<str, _>((start, Bound::Unbounded))
            .take(limit)
            .map(|(k, e)| (Arc::clone(k), Arc::clone(&e.job)))
            .collect()
    }

    /// Every key, in order.
    pub fn keys(&self) -> Vec<Arc<str>> {
        self.state().jobs.keys().cloned().collect()
    }

    /// Stops every run and the dispatcher; later inserts are ignored.
    pub fn stop(&self) {
        let mut st = self.state();
        st.stopped = true;
        for e in st.jobs.values() {
            if let Some(h) = &e.running {
                h.abort();
            }
        }
        st.jobs.clear();
        st.due.clear();
        drop(st);
        self.dispatcher.abort();
    }
}

impl<J: Job> Drop for Scheduler<J> {
    fn drop(&mut self) {
        self.stop();
    }
}

fn lock<J>(inner: &Inner<J>) -> MutexGuard<'_, State<J>> {
    // No code panics while holding the lock; recover the data if it ever did.
    inner.state.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the dispatcher found at the top of the heap.
enum Next<J> {
    Idle,
    At(Instant),
    Run(Arc<str>, u64, Instant, Arc<J>),
}

fn next_job<J>(st: &mut State<J>, now: Instant) -> Next<J> {
    while let Some(Reverse((at, epoch, key))) = st.due.peek() {
        let live = st
            .jobs
            .get(key)
            .is_some_and(|e| e.epoch == *epoch && e.running.is_none());
        if !live {
            st.due.pop();
            continue;
        }
        if *at > now {
            return Next::At(*at);
        }
        let Some(Reverse((at, epoch, key))) = st.due.pop() else {
            break;
        };
        let job = st
            .jobs
            .get(&key)
            .map(|e| Arc::clone(&e.job))
            .expect("checked live above");
        return Next::Run(key, epoch, at, job);
    }
    Next::Idle
}

async fn dispatch<J: Job>(inner: Arc<Inner<J>>) {
    loop {
        let Ok(permit) = Arc::clone(&inner.pool).acquire_owned().await else {
            return;
        };
        let (key, epoch, due, job) = loop {
            let next = next_job(&mut lock(&inner), Instant::now());
            match next {
                Next::Idle => inner.wake.notified().await,
                Next::At(t) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(t) => {}
                        _ = inner.wake.notified() => {}
                    }
                }
                Next::Run(k, e, d, j) => break (k, e, d, j),
            }
        };
        let interval = job.interval().max(Duration::from_millis(1));
        // Holding the lock while spawning means the run cannot finish (and look for its entry)
        // before `running` is set.
        let mut st = lock(&inner);
        let done = Arc::clone(&inner);
        let run_key = Arc::clone(&key);
        let handle = tokio::spawn(async move {
            job.run().await;
            let finished = Instant::now();
            let mut st = lock(&done);
            let State {
                jobs, due: heap, ..
            } = &mut *st;
            if let Some(e) = jobs.get_mut(&run_key).filter(|e| e.epoch == epoch) {
                e.running = None;
                let next = due + interval;
                let next = if next > finished {
                    next
                } else {
                    finished + interval
                };
                heap.push(Reverse((next, epoch, run_key)));
            }
            drop(st);
            // The slot is given back only after the run no longer counts as running, so
            // `running()` never sees more than the pool size at once.
            drop(permit);
            done.wake.notify_one();
        });
        match st.jobs.get_mut(&key).filter(|e| e.epoch == epoch) {
            Some(e) => e.running = Some(handle.abort_handle()),
            // Removed between the pick and here: stop the run at once.
            None => handle.abort(),
        }
    }
}

#[cfg(test)]
mod tests;
