//! The scheduler's timing rule, pool bound and removal, on tokio's paused clock.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;

/// Records each run's start (ms since `t0`) and how many runs overlap.
struct Rec {
    name: &'static str,
    interval: Duration,
    work: Duration,
    t0: Instant,
    log: Arc<Mutex<Vec<(&'static str, u64)>>>,
    live: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Job for Rec {
    fn interval(&self) -> Duration {
        self.interval
    }
    async fn run(self: Arc<Self>) {
        let ms = self.t0.elapsed().as_millis() as u64;
        self.log.lock().unwrap().push((self.name, ms));
        let n = self.live.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        // Decrement even when the run is aborted mid-sleep.
        struct Done(Arc<AtomicUsize>);
        impl Drop for Done {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let _done = Done(Arc::clone(&self.live));
        tokio::time::sleep(self.work).await;
    }
}

struct Fixture {
    t0: Instant,
    log: Arc<Mutex<Vec<(&'static str, u64)>>>,
    live: Arc<AtomicUsize>,
    peak: Arc<AtomicUsize>,
}

impl Fixture {
    fn new() -> Fixture {
        Fixture {
            t0: Instant::now(),
            log: Arc::default(),
            live: Arc::default(),
            peak: Arc::default(),
        }
    }
    fn job(&self, name: &'static str, interval_ms: u64, work_ms: u64) -> Arc<Rec> {
        Arc::new(Rec {
            name,
            interval: Duration::from_millis(interval_ms),
            work: Duration::from_millis(work_ms),
            t0: self.t0,
            log: Arc::clone(&self.log),
            live: Arc::clone(&self.live),
            peak: Arc::clone(&self.peak),
        })
    }
    fn starts(&self, name: &str) -> Vec<u64> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .collect()
    }
}

async fn until(ms: u64, f: &Fixture) {
    tokio::time::sleep_until(f.t0 + Duration::from_millis(ms)).await;
}

#[tokio::test(start_paused = true)]
async fn runs_at_once_then_every_interval() {
    let f = Fixture::new();
    let s = Scheduler::new(4);
    s.insert("a", f.job("a", 1000, 10));
    until(3500, &f).await;
    assert_eq!(f.starts("a"), vec![0, 1000, 2000, 3000]);
}

#[tokio::test(start_paused = true)]
async fn a_slow_run_skips_missed_ticks() {
    let f = Fixture::new();
    let s = Scheduler::new(4);
    // Each run takes 2.5 intervals: the next starts one interval after the previous finished.
    s.insert("slow", f.job("slow", 1000, 2500));
    until(7200, &f).await;
    assert_eq!(f.starts("slow"), vec![0, 3500, 7000]);
    assert_eq!(f.peak.load(Ordering::SeqCst), 1, "never twice at once");
}

#[tokio::test(start_paused = true)]
async fn the_pool_bounds_concurrent_runs_and_nothing_starves() {
    let f = Fixture::new();
    let s = Scheduler::new(3);
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    for n in names {
        s.insert(n, f.job(n, 100, 1000));
    }
    until(1, &f).await;
    assert_eq!(s.running(), 3);
    until(9_500, &f).await;
    assert_eq!(f.peak.load(Ordering::SeqCst), 3);
    // 3 slots x 10 rounds of 1 s (starting at 0..9 s) = 30 runs, shared evenly (due-time order).
    for n in names {
        let runs = f.starts(n).len();
        assert!((2..=4).contains(&runs), "{n} ran {runs} times");
    }
    assert_eq!(f.log.lock().unwrap().len(), 30);
}

#[tokio::test(start_paused = true)]
async fn remove_stops_a_running_job_and_frees_its_slot() {
    let f = Fixture::new();
    let s = Scheduler::new(1);
    s.insert("a", f.job("a", 100, 60_000));
    s.insert("b", f.job("b", 100, 10));
    until(500, &f).await;
    assert_eq!(f.starts("a"), vec![0]);
    assert!(f.starts("b").is_empty(), "the only slot is held by a");
    assert!(s.remove("a"));
    assert!(!s.remove("a"));
    until(700, &f).await;
    assert_eq!(f.live.load(Ordering::SeqCst), 0, "a's run was dropped");
    assert_eq!(f.starts("b").first(), Some(&500), "b got the slot at once");
    assert_eq!(f.starts("a"), vec![0], "a never runs again");
    assert_eq!(s.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn insert_under_a_used_key_replaces_the_job() {
    let f = Fixture::new();
    let s = Scheduler::new(2);
    s.insert("w", f.job("old", 1000, 5000));
    until(100, &f).await;
    s.insert("w", f.job("new", 1000, 10));
    until(2500, &f).await;
    assert_eq!(f.starts("old"), vec![0]);
    assert_eq!(f.starts("new"), vec![100, 1100, 2100]);
    assert_eq!(f.live.load(Ordering::SeqCst), 0, "the old run was stopped");
    assert_eq!(s.len(), 1);
    assert_eq!(s.get("w").map(|j| j.name), Some("new"));
}

#[tokio::test(start_paused = true)]
async fn stop_ends_everything() {
    let f = Fixture::new();
    let s = Scheduler::new(2);
    s.insert("a", f.job("a", 100, 1000));
    s.insert("b", f.job("b", 100, 1000));
    until(10, &f).await;
    s.stop();
    s.insert("c", f.job("c", 100, 10));
    until(5000, &f).await;
    assert_eq!(f.log.lock().unwrap().len(), 2);
    assert_eq!(f.live.load(Ordering::SeqCst), 0);
    assert!(s.is_empty());
}

#[tokio::test(start_paused = true)]
async fn range_pages_in_key_order() {
    let f = Fixture::new();
    let s = Scheduler::new(1);
    for n in ["c", "a", "b", "d"] {
        s.insert(n, f.job(n, 60_000, 1));
    }
    let keys = |v: Vec<(Arc<str>, Arc<Rec>)>| {
        v.into_iter()
            .map(|(k, _)| k.to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(keys(s.range(None, 2)), ["a", "b"]);
    assert_eq!(keys(s.range(Some("b"), 2)), ["c", "d"]);
    assert_eq!(keys(s.range(Some("d"), 2)), Vec::<String>::new());
    assert_eq!(s.keys().len(), 4);
}
