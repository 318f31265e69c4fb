//! The scheduler on tokio's paused clock: cron days (DST in a named time zone, 29 February),
//! intervals, jitter bounds and the missed-run policies after a simulated downtime. No test
//! sleeps: time jumps to each due run.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use osmoda_config::RoutinesConfig;
use osmoda_routines::history::History;
use osmoda_routines::scheduler::{self, Clock, Due};
use tokio::sync::{mpsc, watch};

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s)
        .expect("time")
        .with_timezone(&Utc)
}

fn config(routines: serde_json::Value) -> RoutinesConfig {
    let c: RoutinesConfig =
        serde_json::from_value(serde_json::json!({ "routines": routines })).expect("config");
    c.validate().expect("valid");
    c
}

fn routine(trigger: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let mut r = serde_json::json!({
        "enable": true, "trigger": trigger,
        "action": { "type": "command", "command": ["true"], "timeout_secs": 5 },
    });
    if let (Some(r), Some(e)) = (r.as_object_mut(), extra.as_object()) {
        r.extend(e.clone());
    }
    r
}

struct Run {
    clock: Clock,
    rx: mpsc::Receiver<Due>,
    _trigger: osmoda_routines::shutdown::Trigger,
    cfg: watch::Sender<Arc<RoutinesConfig>>,
    history: Arc<History>,
    _dir: tempfile::TempDir,
}

/// Starts the scheduler at wall time `start` on `cfg`, with `history` (a fresh one if `None`).
fn start(
    start: &str,
    cfg: RoutinesConfig,
    history: Option<(tempfile::TempDir, Arc<History>)>,
) -> Run {
    let (dir, history) = history.unwrap_or_else(|| {
        let dir = tempfile::tempdir().expect("tempdir");
        let (h, _) = History::open(&dir.path().join("r.db")).expect("history");
        (dir, Arc::new(h))
    });
    let clock = Clock::starting_at(utc(start));
    let (tx, rx) = mpsc::channel(64);
    let (cfg_tx, cfg_rx) = watch::channel(Arc::new(cfg));
    let (trigger, shutdown) = osmoda_routines::shutdown::channel();
    tokio::spawn(scheduler::run(
        clock,
        cfg_rx,
        Arc::clone(&history),
        tx,
        shutdown,
    ));
    Run {
        clock,
        rx,
        _trigger: trigger,
        cfg: cfg_tx,
        history,
        _dir: dir,
    }
}

impl Run {
    /// The next `n` fires: (routine, kind, reference, clock time when it arrived).
    async fn next(&mut self, n: usize) -> Vec<(String, String, String, DateTime<Utc>)> {
        let mut out = Vec::new();
        for _ in 0..n {
            let (name, fired, _mark) = self.rx.recv().await.expect("scheduler alive");
            out.push((name, fired.kind, fired.reference, self.clock.now()));
        }
        out
    }
}

fn refs(v: &[(String, String, String, DateTime<Utc>)]) -> Vec<&str> {
    v.iter().map(|x| x.2.as_str()).collect()
}

#[tokio::test(start_paused = true)]
async fn cron_in_berlin_across_spring_forward_and_fall_back() {
    let cfg = config(serde_json::json!({
        "nightly": routine(serde_json::json!({"type": "cron", "schedule": "30 2 * * *", "timezone": "Europe/Berlin"}), serde_json::json!({})),
    }));
    let mut r = start("2026-03-28T12:00:00Z", cfg.clone(), None);
    let got = r.next(2).await;
    assert_eq!(refs(&got), ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]);
    for (_, kind, reference, at) in &got {
        assert_eq!(kind, "cron");
        assert_eq!(
            at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            *reference,
            "fired on time"
        );
    }
    let mut r = start("2026-10-24T12:00:00Z", cfg, None);
    assert_eq!(
        refs(&r.next(2).await),
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
}

#[tokio::test(start_paused = true)]
async fn day_of_week_day_of_month_and_the_29th_of_february() {
    let cfg = config(serde_json::json!({
        "leap": routine(serde_json::json!({"type": "cron", "schedule": "0 0 29 2 *"}), serde_json::json!({})),
        "fri-or-15th": routine(serde_json::json!({"type": "cron", "schedule": "0 12 15 * FRI"}), serde_json::json!({})),
    }));
    let mut r = start("2026-03-12T00:00:00Z", cfg, None);
    let got = r.next(3).await;
    assert!(got.iter().all(|g| g.0 == "fri-or-15th"));
    assert_eq!(
        refs(&got),
        [
            "2026-03-13T12:00:00Z",
            "2026-03-15T12:00:00Z",
            "2026-03-20T12:00:00Z"
        ]
    );
    // Skip ahead: the leap-day routine's first run is in 2028.
    let mut leap = None;
    while leap.is_none() {
        let (name, fired, _mark) = r.rx.recv().await.expect("alive");
        if name == "leap" {
            leap = Some(fired.reference);
        }
    }
    assert_eq!(leap.as_deref(), Some("2028-02-29T00:00:00Z"));
}

#[tokio::test(start_paused = true)]
async fn intervals_and_jitter_bounds() {
    let cfg = config(serde_json::json!({
        "every5m": routine(serde_json::json!({"type": "interval", "seconds": 300}), serde_json::json!({})),
    }));
    let mut r = start("2026-05-01T00:00:00Z", cfg, None);
    assert_eq!(
        refs(&r.next(3).await),
        [
            "2026-05-01T00:05:00Z",
            "2026-05-01T00:10:00Z",
            "2026-05-01T00:15:00Z"
        ]
    );

    let cfg = config(serde_json::json!({
        "jittery": routine(serde_json::json!({"type": "interval", "seconds": 60}), serde_json::json!({"jitter_secs": 20})),
    }));
    let mut r = start("2026-05-01T00:00:00Z", cfg, None);
    let got = r.next(30).await;
    let mut late = Vec::new();
    for (_, _, reference, at) in &got {
        let delay = *at - utc(reference);
        assert!(
            delay >= chrono::Duration::zero() && delay <= chrono::Duration::seconds(20),
            "{reference} fired at {at}"
        );
        late.push(delay);
    }
    assert!(
        late.iter().any(|d| *d > chrono::Duration::zero()),
        "30 runs, none jittered"
    );
    // Jitter delays a run; it does not move the schedule.
    assert_eq!(got[29].2, "2026-05-01T00:30:00Z");
}

#[tokio::test(start_paused = true)]
async fn missed_runs_after_a_downtime_skip_or_run_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (h, _) = History::open(&dir.path().join("r.db")).expect("history");
    let h = Arc::new(h);
    // The daemon last ran both at 08:00 on the 1st and was down until the 4th at noon.
    for name in ["catch-up", "skipper"] {
        h.set_mark(name, utc("2026-03-01T08:00:00Z").timestamp_millis())
            .expect("mark");
    }
    let cfg = config(serde_json::json!({
        "catch-up": routine(serde_json::json!({"type": "cron", "schedule": "0 8 * * *"}), serde_json::json!({"missed": "runOnce"})),
        "skipper": routine(serde_json::json!({"type": "cron", "schedule": "0 8 * * *"}), serde_json::json!({"missed": "skip"})),
    }));
    let mut r = start("2026-03-04T12:00:00Z", cfg, Some((dir, h)));
    let got = r.next(3).await;
    // One catch-up run at start (not three), then both at the next 08:00.
    assert_eq!(got[0].0, "catch-up");
    assert_eq!(got[0].1, "missed");
    assert_eq!(got[0].3, utc("2026-03-04T12:00:00Z"));
    let mut rest: Vec<(&str, &str)> = got[1..]
        .iter()
        .map(|g| (g.0.as_str(), g.2.as_str()))
        .collect();
    rest.sort_unstable();
    assert_eq!(
        rest,
        [
            ("catch-up", "2026-03-05T08:00:00Z"),
            ("skipper", "2026-03-05T08:00:00Z")
        ]
    );
    tokio::time::timeout(Duration::from_secs(3600), r.rx.recv())
        .await
        .expect_err("nothing else is due within the hour");
}

/// A schedule's mark moves only with the run it fired (the engine records both in one
/// transaction), never when the due time is handed to the jitter delay: a stop inside the delay
/// leaves the old mark, and `runOnce` brings the run back at the next start (the real daemon
/// killed inside the delay: `kill9.rs`). A config reload inside the delay does not count the
/// pending due time as missed: no second, "missed" run.
#[tokio::test(start_paused = true)]
async fn a_due_time_in_its_jitter_delay_is_pending_not_marked_and_not_missed() {
    let cfg = config(serde_json::json!({
        "slow": routine(serde_json::json!({"type": "interval", "seconds": 60}),
                        serde_json::json!({"jitter_secs": 86400, "missed": "runOnce"})),
    }));
    let mut r = start("2026-05-01T00:00:00Z", cfg.clone(), None);
    // First sight: marked at the start.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let first = utc("2026-05-01T00:00:00Z").timestamp_millis();
    assert_eq!(r.history.mark("slow").expect("mark"), Some(first));
    // 00:01:00 is due and waits out its jitter (up to a day); the mark has not moved.
    tokio::time::sleep(Duration::from_secs(61)).await;
    let arrived = r.rx.try_recv().ok();
    let fired = match &arrived {
        // The delay happened to be under a second: the run is in the engine's hands.
        Some((_, f, mark)) => {
            assert_eq!(f.kind, "interval");
            assert_eq!(mark.ms, utc("2026-05-01T00:01:00Z").timestamp_millis());
            true
        }
        None => false,
    };
    assert_eq!(
        r.history.mark("slow").expect("mark"),
        Some(first),
        "the mark moves with the recorded run, not before"
    );
    // A reload inside the delay: the pending 00:01:00 is not a missed run.
    r.cfg.send(Arc::new(cfg)).expect("config");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(50);
    while let Ok(Some((name, f, _))) = tokio::time::timeout_at(deadline, r.rx.recv()).await {
        assert_ne!(
            f.kind, "missed",
            "{name}: a due time in its jitter delay was run again as missed (fired early: {fired})"
        );
    }
    drop(arrived);
}
