//! When time-based routines are due: cron expressions (croner, in a named time zone, correct
//! across DST changes), intervals, jitter, and the missed-run policy after downtime.
//!
//! Everything here is pure: times in, times out. The scheduler ([`crate::scheduler`]) feeds it
//! the clock, so tests can run any day of any year with `tokio::time::pause`.

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use osmoda_config::{Missed, Trigger};

/// A parsed time-based trigger.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A cron expression read in `tz`.
    Cron {
        /// The parsed expression.
        cron: Box<croner::Cron>,
        /// Time zone of its fields.
        tz: Tz,
    },
    /// Every `period`, counted from the routine's first start (or last run).
    Interval {
        /// Time between runs.
        period: Duration,
    },
}

impl Schedule {
    /// The schedule of a cron or interval trigger; `Ok(None)` for event and webhook triggers.
    ///
    /// # Errors
    /// A cron expression or time zone that does not parse (already refused by
    /// `RoutinesConfig::validate`, so only reachable with an unvalidated config).
    pub fn of(trigger: &Trigger) -> Result<Option<Schedule>, String> {
        match trigger {
            Trigger::Cron { schedule, timezone } => Ok(Some(Schedule::Cron {
                cron: Box::new(osmoda_config::routines::parse_cron(schedule)?),
                tz: osmoda_config::routines::parse_timezone(timezone)?,
            })),
            Trigger::Interval { seconds } => Ok(Some(Schedule::Interval {
                period: Duration::seconds(i64::try_from(*seconds).unwrap_or(i64::MAX / 1000)),
            })),
            Trigger::Event { .. } | Trigger::Webhook { .. } => Ok(None),
        }
    }

    /// The first run strictly after `after`. An interval's runs are `anchor + k·period`
    /// (`anchor` = the last run, or when the routine was first scheduled).
    ///
    /// `None` when a cron expression never matches again (e.g. `0 0 30 2 *`).
    pub fn next_after(&self, after: DateTime<Utc>, anchor: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { cron, tz } => {
                if let Some(t) = walk_fall_back(cron, tz, after) {
                    return Some(t);
                }
                let find = |t: DateTime<Utc>| {
                    cron.find_next_occurrence(&t.with_timezone(tz), false)
                        .ok()
                        .map(|n| n.with_timezone(&Utc))
                };
                // Inside a repeated hour croner answers the first occurrence of a wall time,
                // which can lie before `after`: ask again from later on.
                let mut from = after;
                let mut next = find(from)?;
                while next <= after {
                    from += Duration::hours(1);
                    next = find(from)?;
                }
                Some(next)
            }
            Schedule::Interval { period } => {
                if after < anchor {
                    return Some(anchor);
                }
                let period_ms = period.num_milliseconds().max(1);
                let since = (after - anchor).num_milliseconds();
                let k = since / period_ms + 1;
                anchor.checked_add_signed(Duration::milliseconds(k.saturating_mul(period_ms)))
            }
        }
    }

    /// The last run at or before `at` (`anchor` as in [`Schedule::next_after`]); `None` when
    /// there is none.
    pub fn last_at_or_before(
        &self,
        at: DateTime<Utc>,
        anchor: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Cron { cron, tz } => cron
                .find_previous_occurrence(&at.with_timezone(tz), true)
                .ok()
                .map(|t| t.with_timezone(&Utc)),
            Schedule::Interval { period } => {
                if at < anchor {
                    return None;
                }
                let period_ms = period.num_milliseconds().max(1);
                let k = (at - anchor).num_milliseconds() / period_ms;
                anchor.checked_add_signed(Duration::milliseconds(k.saturating_mul(period_ms)))
            }
        }
    }

    /// Where the scheduler starts after a (re)start at `now`, given the last run it recorded:
    /// `(run_now, next)`. With [`Missed::RunOnce`], one run is due at once when at least one
    /// scheduled time passed between `last` and `now` — unless the next scheduled time is
    /// nearer than the last missed one: then that run, moments away, is the catch-up (a daily
    /// 08:00 routine back at 07:59 runs once, at 08:00, not twice in a minute). With
    /// [`Missed::Skip`] missed times are dropped. `next` is the first scheduled time after `now`.
    pub fn resume(
        &self,
        missed: Missed,
        last: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> (bool, Option<DateTime<Utc>>) {
        let anchor = last.unwrap_or(now);
        let next = self.next_after(now, anchor);
        let run_now = match (missed, last) {
            (Missed::RunOnce, Some(last)) => self
                .last_at_or_before(now, last)
                .filter(|missed| *missed > last)
                .is_some_and(|missed| next.is_none_or(|next| now - missed <= next - now)),
            _ => false,
        };
        (run_now, next)
    }
}

/// On a fall-back day the wall clock repeats an hour. croner runs a fixed-time job (`30 2 * * *`)
/// once, at the first of the two 02:30s, which is right; but for an interval or wildcard job
/// (`0 * * * *`, `*/15 * * * *`) it returns only the first occurrence of a repeated wall time,
/// so an hourly job would lose a real hour. For such a job, when the UTC offset drops within a
/// day of `after`, this walks the real seconds after `after` and returns the first that
/// matches (twice a year per routine; a minutely job matches within 60 steps).
fn walk_fall_back(cron: &croner::Cron, tz: &Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    use chrono::{Offset, Timelike};
    if cron.determine_job_type() != croner::JobType::IntervalWildcard {
        return None;
    }
    let offset = |t: DateTime<Utc>| t.with_timezone(tz).offset().fix().local_minus_utc();
    // A drop within a day before or after: `after` may sit in (or just past) the doubled hour.
    let drops = (-26..26)
        .any(|h| offset(after + Duration::hours(h + 1)) < offset(after + Duration::hours(h)));
    if !drops {
        return None;
    }
    let end = after + Duration::hours(26);
    let mut t = after.with_nanosecond(0)? + Duration::seconds(1);
    while t <= end {
        if cron.is_time_matching(&t.with_timezone(tz)).unwrap_or(false) {
            return Some(t);
        }
        t += Duration::seconds(1);
    }
    None
}

/// A random delay of 0..=`jitter_secs` seconds (millisecond resolution), from the OS's
/// random source.
pub fn jitter(jitter_secs: u64) -> std::time::Duration {
    if jitter_secs == 0 {
        return std::time::Duration::ZERO;
    }
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        return std::time::Duration::ZERO;
    }
    let span = jitter_secs.saturating_mul(1000).saturating_add(1);
    std::time::Duration::from_millis(u64::from_le_bytes(b) % span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use osmoda_config::Trigger;

    fn cron(schedule: &str, tz: &str) -> Schedule {
        Schedule::of(&Trigger::Cron {
            schedule: schedule.into(),
            timezone: tz.into(),
        })
        .unwrap()
        .unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// The next `n` runs after `from`, as RFC 3339 UTC.
    fn runs(s: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut t = utc(from);
        let mut out = Vec::new();
        for _ in 0..n {
            t = s.next_after(t, t).unwrap();
            out.push(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        out
    }

    #[test]
    fn five_and_six_fields() {
        assert_eq!(
            runs(&cron("0 8 * * *", "UTC"), "2026-03-01T09:00:00Z", 2),
            ["2026-03-02T08:00:00Z", "2026-03-03T08:00:00Z"]
        );
        assert_eq!(
            runs(&cron("*/20 * * * * *", "UTC"), "2026-03-01T09:00:05Z", 3),
            [
                "2026-03-01T09:00:20Z",
                "2026-03-01T09:00:40Z",
                "2026-03-01T09:01:00Z"
            ]
        );
    }

    /// Day-of-month and day-of-week both restricted: either matches (Vixie cron); one of them
    /// `*`: only the other counts.
    #[test]
    fn day_of_month_or_day_of_week() {
        // 2026-03-13 is a Friday; the 15th a Sunday.
        assert_eq!(
            runs(&cron("0 12 15 * FRI", "UTC"), "2026-03-12T00:00:00Z", 3),
            [
                "2026-03-13T12:00:00Z",
                "2026-03-15T12:00:00Z",
                "2026-03-20T12:00:00Z"
            ]
        );
        assert_eq!(
            runs(&cron("0 12 * * MON-FRI", "UTC"), "2026-03-13T13:00:00Z", 1),
            ["2026-03-16T12:00:00Z"]
        );
        assert_eq!(
            runs(&cron("0 12 15 * *", "UTC"), "2026-03-13T13:00:00Z", 2),
            ["2026-03-15T12:00:00Z", "2026-04-15T12:00:00Z"]
        );
    }

    #[test]
    fn twenty_ninth_of_february_runs_in_leap_years_only() {
        assert_eq!(
            runs(&cron("0 0 29 2 *", "UTC"), "2026-01-01T00:00:00Z", 2),
            ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]
        );
    }

    /// Europe/Berlin springs forward on 2026-03-29 (02:00 → 03:00 CET → CEST) and falls back on
    /// 2026-10-25 (03:00 → 02:00). A daily 02:30 run happens once on both days: at 03:00 CEST
    /// (the first valid time after the gap) and at the first 02:30 (CEST) of the doubled hour.
    #[test]
    fn dst_spring_forward_and_fall_back() {
        let daily = cron("30 2 * * *", "Europe/Berlin");
        assert_eq!(
            runs(&daily, "2026-03-27T12:00:00Z", 3),
            [
                "2026-03-28T01:30:00Z", // 02:30 CET
                "2026-03-29T01:00:00Z", // 03:00 CEST, the gap's end
                "2026-03-30T00:30:00Z", // 02:30 CEST
            ]
        );
        assert_eq!(
            runs(&daily, "2026-10-24T12:00:00Z", 3),
            [
                "2026-10-25T00:30:00Z", // 02:30 CEST, first of the doubled hour
                "2026-10-26T01:30:00Z", // 02:30 CET
                "2026-10-27T01:30:00Z",
            ]
        );
        // From inside the second 02:xx (CET) the fixed job's next run is the next day.
        let t = utc("2026-10-25T01:10:00Z");
        assert_eq!(daily.next_after(t, t), Some(utc("2026-10-26T01:30:00Z")));
        // An hourly job keeps real hours on the fall-back day: 02:00 CEST, 02:00 CET (croner
        // alone skips this one), 03:00 CET.
        let hourly = cron("0 * * * *", "Europe/Berlin");
        let got = runs(&hourly, "2026-10-24T23:30:00Z", 4);
        assert_eq!(
            got,
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T02:00:00Z",
                "2026-10-25T03:00:00Z"
            ]
        );
        // ... and on the spring-forward day it loses only the hour that does not exist.
        assert_eq!(
            runs(&hourly, "2026-03-28T23:30:00Z", 3),
            [
                "2026-03-29T00:00:00Z",
                "2026-03-29T01:00:00Z",
                "2026-03-29T02:00:00Z"
            ]
        );
        // Every 20 minutes across the doubled hour: 6 runs in those 2 real hours.
        let every20 = cron("*/20 * * * *", "Europe/Berlin");
        let got = runs(&every20, "2026-10-24T23:50:00Z", 7);
        assert_eq!(
            got,
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:20:00Z",
                "2026-10-25T00:40:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:20:00Z",
                "2026-10-25T01:40:00Z",
                "2026-10-25T02:00:00Z"
            ]
        );
    }

    #[test]
    fn interval_counts_from_its_anchor() {
        let s = Schedule::of(&Trigger::Interval { seconds: 300 })
            .unwrap()
            .unwrap();
        let anchor = utc("2026-03-01T00:00:00Z");
        assert_eq!(
            s.next_after(anchor, anchor),
            Some(utc("2026-03-01T00:05:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-03-01T00:12:00Z"), anchor),
            Some(utc("2026-03-01T00:15:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-02-28T00:00:00Z"), anchor),
            Some(anchor)
        );
    }

    #[test]
    fn missed_runs_after_downtime() {
        let s = cron("0 8 * * *", "UTC");
        let last = Some(utc("2026-03-01T08:00:00Z"));
        let now = utc("2026-03-04T12:00:00Z"); // three 08:00 runs missed
        let next = Some(utc("2026-03-05T08:00:00Z"));
        assert_eq!(s.resume(Missed::Skip, last, now), (false, next));
        assert_eq!(s.resume(Missed::RunOnce, last, now), (true, next));
        // Nothing missed: nothing to catch up.
        let recent = Some(utc("2026-03-04T08:00:00Z"));
        assert_eq!(s.resume(Missed::RunOnce, recent, now), (false, next));
        // Never ran: nothing was missed.
        assert_eq!(s.resume(Missed::RunOnce, None, now), (false, next));
        // Back a minute before the next run: that run is the catch-up, not a second one.
        let early = utc("2026-03-05T07:59:00Z");
        assert_eq!(s.resume(Missed::RunOnce, last, early), (false, next));
        // Back just past a missed run: caught up at once.
        let late = utc("2026-03-04T08:01:00Z");
        assert_eq!(s.resume(Missed::RunOnce, last, late), (true, next));
        // The same rule for an interval: every 10 minutes from 00:00, down from 00:00 to 00:38
        // (00:30 missed, 00:40 nearer): no run now; down to 00:33: one now.
        let every = Schedule::Interval {
            period: Duration::minutes(10),
        };
        let from = Some(utc("2026-03-01T00:00:00Z"));
        assert_eq!(
            every.resume(Missed::RunOnce, from, utc("2026-03-01T00:38:00Z")),
            (false, Some(utc("2026-03-01T00:40:00Z")))
        );
        assert_eq!(
            every.resume(Missed::RunOnce, from, utc("2026-03-01T00:33:00Z")),
            (true, Some(utc("2026-03-01T00:40:00Z")))
        );
        // The last run before a date is found however far back it lies (29 February).
        let last_leap = cron("0 0 29 2 *", "UTC");
        assert_eq!(
            last_leap.last_at_or_before(utc("2028-03-01T00:00:00Z"), utc("2024-01-01T00:00:00Z")),
            Some(utc("2028-02-29T00:00:00Z"))
        );
    }

    #[test]
    fn jitter_stays_in_bounds() {
        assert_eq!(jitter(0), std::time::Duration::ZERO);
        let mut seen_nonzero = false;
        for _ in 0..200 {
            let j = jitter(3);
            assert!(j <= std::time::Duration::from_secs(3), "{j:?}");
            seen_nonzero |= j > std::time::Duration::ZERO;
        }
        assert!(seen_nonzero, "200 draws of 0..=3000 ms were all zero");
    }
}
