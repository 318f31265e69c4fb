//! Run history, the event cursor, schedule marks and seen webhook signatures, in one SQLite
//! database (`<state-dir>/routines.db`, WAL, `synchronous=FULL`).
//!
//! Exactly-once event triggers rest on one transaction: [`History::claim_events`] inserts the
//! run of every (routine, event) pair as `queued` — unique, so a pair can never get a second
//! run — and moves the cursor past those events, before any action starts. A run becomes
//! `running` just before its action starts ([`History::begin`]). After a restart, `queued` runs
//! (never started) are started; a run left `running` by a crash is marked `interrupted`, never
//! run again: an action starts at most once, and every matching event gets exactly one run.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use crate::error::{Result, RoutinesError};
use crate::lineage::{parse_chain, Lineage, Queued};

/// Most runs one `GET /routine/history` page holds.
pub const MAX_PAGE: usize = 1000;

/// One run as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    /// Run id (increasing).
    pub id: i64,
    /// Routine name.
    pub routine: String,
    /// `cron`, `interval`, `event`, `webhook`, `manual` or `missed`.
    pub trigger: String,
    /// What fired it: the ledger event id, the scheduled time, the webhook signature's hash.
    pub trigger_ref: String,
    /// RFC 3339 start (or when it was refused).
    pub started_at: String,
    /// RFC 3339 end, once finished.
    pub ended_at: Option<String>,
    /// `queued`, `running`, `ok`, `failed`, `skipped` or `interrupted`.
    pub status: String,
    /// Exit code of a command (the last step's for a chain), HTTP status of an http/prompt.
    pub exit: Option<i64>,
    /// SHA-256 (hex) of the output kept (up to the cap, without the truncation line).
    pub output_sha256: Option<String>,
    /// The captured output, up to the action's cap (ending in [`TRUNCATED_MARK`]'s line when
    /// the action produced more).
    pub output: Option<String>,
    /// Whether the action produced more output than was kept.
    pub output_truncated: bool,
    /// Why it failed or was skipped.
    pub error: Option<String>,
    /// Milliseconds from start to end.
    pub duration_ms: Option<i64>,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// `ok` or `failed`.
    pub ok: bool,
    /// Exit code or HTTP status.
    pub exit: Option<i64>,
    /// Captured output (capped; then ending in a [`TRUNCATED_MARK`] line).
    pub output: String,
    /// Whether the action produced more output than `output` keeps.
    pub truncated: bool,
    /// SHA-256 of `output` as kept (stdout then stderr for a command, up to the cap, bytes that
    /// are not UTF-8 as U+FFFD; without the truncation line). With `truncated`, the action
    /// produced more than this covers.
    pub output_sha256: String,
    /// Why it failed.
    pub error: Option<String>,
}

/// Start of the line that ends a capped output: `[osmoda: output truncated …]`.
pub const TRUNCATED_MARK: &str = "[osmoda: output truncated";

/// The history database. All calls are short; it is locked per call.
pub struct History {
    conn: Mutex<Connection>,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    routine TEXT NOT NULL,
    trigger TEXT NOT NULL,
    trigger_ref TEXT NOT NULL,
    started_at TEXT NOT NULL,
    started_ms INTEGER NOT NULL,
    ended_at TEXT,
    status TEXT NOT NULL,
    exit INTEGER,
    output_sha256 TEXT,
    output TEXT,
    error TEXT,
    duration_ms INTEGER,
    output_truncated INTEGER NOT NULL DEFAULT 0,
    origin TEXT,
    chain TEXT,
    payload TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS runs_event_once ON runs (routine, trigger_ref) WHERE trigger = 'event';
CREATE INDEX IF NOT EXISTS runs_routine ON runs (routine, id);
CREATE TABLE IF NOT EXISTS cursor (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS marks (routine TEXT PRIMARY KEY, last_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS event_starts (routine TEXT PRIMARY KEY, pattern TEXT NOT NULL, since INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS webhook_seen (mac TEXT PRIMARY KEY, at_ms INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS webhook_seen_at ON webhook_seen (at_ms);
";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn db(e: rusqlite::Error) -> RoutinesError {
    RoutinesError::History(e.to_string())
}

/// A run to record ([`History::record`]).
#[derive(Debug, Clone, Copy)]
pub struct NewRun<'a> {
    /// Routine name.
    pub routine: &'a str,
    /// `cron`, `interval`, `webhook`, `manual`, `missed`.
    pub trigger: &'a str,
    /// What fired it.
    pub trigger_ref: &'a str,
    /// Its lineage.
    pub lineage: &'a Lineage,
    /// What its action will be handed (already reduced: [`crate::actions::handed_payload`]).
    pub payload: Option<&'a str>,
    /// A webhook request's replay record, written with the run or not at all.
    pub replay: Option<&'a Replay>,
    /// A schedule's due time (Unix ms): the routine's mark moves to it (never back) with the
    /// run, in its transaction, so the missed-run policy sees it fired exactly when a run of
    /// it is recorded.
    pub mark: Option<i64>,
}

impl<'a> NewRun<'a> {
    /// A run of `routine` fired by `trigger` (`trigger_ref`) with `lineage`, no payload, no
    /// replay record.
    pub fn new(
        routine: &'a str,
        trigger: &'a str,
        trigger_ref: &'a str,
        lineage: &'a Lineage,
    ) -> NewRun<'a> {
        NewRun {
            routine,
            trigger,
            trigger_ref,
            lineage,
            payload: None,
            replay: None,
            mark: None,
        }
    }
}

/// A webhook request's replay key (its path and MAC, hashed) and when it was accepted (ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// The key: one replay store per webhook.
    pub key: String,
    /// When it was accepted (Unix ms).
    pub at_ms: i64,
}

/// Remembers webhook MAC `mac` accepted at `now` (ms) on `c` (a connection or a transaction);
/// `false` when it was already seen. See [`History::webhook_first_seen`] for how long.
fn seen_first(c: &Connection, mac: &str, now: i64) -> rusqlite::Result<bool> {
    let keep_ms =
        i64::try_from(osmoda_config::routines::MAX_SECS.saturating_mul(2000)).unwrap_or(i64::MAX);
    c.execute(
        "DELETE FROM webhook_seen WHERE at_ms < ?1",
        params![now.saturating_sub(keep_ms)],
    )?;
    let n = c.execute(
        "INSERT OR IGNORE INTO webhook_seen (mac, at_ms) VALUES (?1, ?2)",
        params![mac, now],
    )?;
    Ok(n == 1)
}

impl History {
    /// Opens (creating) the database and marks runs a previous process left `running` as
    /// `interrupted`. Returns the number of such runs too.
    ///
    /// # Errors
    /// When the file cannot be opened or is not this schema.
    pub fn open(path: &Path) -> Result<(History, usize)> {
        let conn = Connection::open(path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        // Databases from before these columns existed (their runs: not truncated, no
        // recorded lineage).
        for (column, add) in [
            (
                "output_truncated",
                "ALTER TABLE runs ADD COLUMN output_truncated INTEGER NOT NULL DEFAULT 0",
            ),
            ("origin", "ALTER TABLE runs ADD COLUMN origin TEXT"),
            ("chain", "ALTER TABLE runs ADD COLUMN chain TEXT"),
            ("payload", "ALTER TABLE runs ADD COLUMN payload TEXT"),
        ] {
            let has: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM pragma_table_info('runs') WHERE name = ?1",
                    [column],
                    |r| r.get(0),
                )
                .map_err(db)?;
            if has == 0 {
                conn.execute_batch(add).map_err(db)?;
            }
        }
        conn.execute_batch("CREATE INDEX IF NOT EXISTS runs_origin ON runs (origin, routine)")
            .map_err(db)?;
        let n = conn
            .execute(
                "UPDATE runs SET status = 'interrupted', ended_at = ?1, \
                 error = 'osmoda-routines stopped while this run was going: a boundary command \
                 was killed with it, but a ring command or an http call runs on in agentd and \
                 may have completed (its ledger events carry action=routine-run.' || id || ')' \
                 WHERE status = 'running'",
                params![rfc3339(now_ms())],
            )
            .map_err(db)?;
        Ok((
            History {
                conn: Mutex::new(conn),
            },
            n,
        ))
    }

    pub(crate) fn with<T>(
        &self,
        f: impl FnOnce(&mut Connection) -> rusqlite::Result<T>,
    ) -> Result<T> {
        let mut c = self
            .conn
            .lock()
            .map_err(|_| RoutinesError::History("history lock poisoned".into()))?;
        f(&mut c).map_err(db)
    }

    /// Records a run that is due and waits for its turn (`queued`) with its lineage (`origin`
    /// `None`: the run is its own seed, `run:<id>`); returns its id.
    ///
    /// # Errors
    /// On a database failure.
    pub fn queue(
        &self,
        routine: &str,
        trigger: &str,
        trigger_ref: &str,
        lineage: &Lineage,
    ) -> Result<i64> {
        self.record(&NewRun::new(routine, trigger, trigger_ref, lineage), None)?
            .ok_or_else(|| RoutinesError::History("no run recorded".into()))
    }

    /// Records `run` — `queued`, or `skipped` with `skipped`'s reason — with its payload and,
    /// for a webhook, its replay record, all in one transaction: a request that recorded no
    /// run recorded no replay, and a queued run's payload survives a restart. `Ok(None)`: the
    /// replay key was already seen (nothing recorded).
    ///
    /// # Errors
    /// On a database failure (nothing is recorded).
    pub fn record(&self, run: &NewRun<'_>, skipped: Option<&str>) -> Result<Option<i64>> {
        let status = if skipped.is_some() {
            "skipped"
        } else {
            "queued"
        };
        self.insert(run, status, skipped)
    }

    /// Marks a queued run `running` as its action starts and hands over its stored payload
    /// (cleared from the row: the run has it now); `None` when it was not queued.
    ///
    /// # Errors
    /// On a database failure.
    pub fn begin(&self, id: i64) -> Result<Option<Option<String>>> {
        let ms = now_ms();
        self.with(|c| {
            let tx = c.transaction()?;
            // RETURNING gives the row as updated, so the payload is read first.
            let payload: Option<Option<String>> = tx
                .query_row(
                    "SELECT payload FROM runs WHERE id = ?1 AND status = 'queued'",
                    params![id],
                    |r| r.get(0),
                )
                .optional()?;
            if payload.is_some() {
                tx.execute(
                    "UPDATE runs SET status = 'running', started_at = ?2, started_ms = ?3, \
                     payload = NULL WHERE id = ?1 AND status = 'queued'",
                    params![id, rfc3339(ms), ms],
                )?;
            }
            tx.commit()?;
            Ok(payload)
        })
    }

    /// Marks a queued run `skipped` (its routine was busy or removed).
    ///
    /// # Errors
    /// On a database failure.
    pub fn skip(&self, id: i64, why: &str) -> Result<()> {
        self.with(|c| {
            c.execute(
                "UPDATE runs SET status = 'skipped', ended_at = ?2, error = ?3, duration_ms = 0, \
                 payload = NULL WHERE id = ?1 AND status = 'queued'",
                params![id, rfc3339(now_ms()), why],
            )
            .map(drop)
        })
    }

    /// Runs still `queued` (never started), oldest first, with their lineage.
    ///
    /// # Errors
    /// On a database failure.
    pub fn queued(&self) -> Result<Vec<Queued>> {
        self.with(|c| {
            let mut s = c.prepare(
                "SELECT id, routine, trigger, trigger_ref, coalesce(origin, 'run:' || id), chain \
                 FROM runs WHERE status = 'queued' ORDER BY id",
            )?;
            let rows = s.query_map([], |r| {
                Ok(Queued {
                    id: r.get(0)?,
                    routine: r.get(1)?,
                    trigger: r.get(2)?,
                    trigger_ref: r.get(3)?,
                    lineage: Lineage {
                        origin: Some(r.get(4)?),
                        chain: parse_chain(r.get(5)?),
                    },
                })
            })?;
            rows.collect()
        })
    }

    /// Records a run that was refused (concurrency `skip`, queue full) without starting.
    ///
    /// # Errors
    /// On a database failure.
    pub fn skipped(
        &self,
        routine: &str,
        trigger: &str,
        trigger_ref: &str,
        why: &str,
        lineage: &Lineage,
    ) -> Result<i64> {
        self.record(
            &NewRun::new(routine, trigger, trigger_ref, lineage),
            Some(why),
        )?
        .ok_or_else(|| RoutinesError::History("no run recorded".into()))
    }

    fn insert(&self, run: &NewRun<'_>, status: &str, skipped: Option<&str>) -> Result<Option<i64>> {
        let ms = now_ms();
        let chain = serde_json::to_string(&run.lineage.chain).unwrap_or_else(|_| "[]".into());
        // A skipped run never starts: it keeps no payload.
        let payload = if skipped.is_none() { run.payload } else { None };
        self.with(|c| {
            let tx = c.transaction()?;
            if let Some(r) = &run.replay {
                if !seen_first(&tx, &r.key, r.at_ms)? {
                    return Ok(None);
                }
            }
            tx.execute(
                "INSERT INTO runs (routine, trigger, trigger_ref, started_at, started_ms, status, \
                 ended_at, error, duration_ms, origin, chain, payload) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, CASE WHEN ?7 IS NULL THEN NULL ELSE ?4 END, ?7, \
                 CASE WHEN ?7 IS NULL THEN NULL ELSE 0 END, ?8, ?9, ?10)",
                params![
                    run.routine,
                    run.trigger,
                    run.trigger_ref,
                    rfc3339(ms),
                    ms,
                    status,
                    skipped,
                    run.lineage.origin,
                    chain,
                    payload
                ],
            )?;
            let id = tx.last_insert_rowid();
            if let Some(ms) = run.mark {
                tx.execute(
                    "INSERT INTO marks (routine, last_ms) VALUES (?1, ?2) \
                     ON CONFLICT(routine) DO UPDATE SET last_ms = MAX(last_ms, excluded.last_ms)",
                    params![run.routine, ms],
                )?;
            }
            if run.lineage.origin.is_none() {
                tx.execute(
                    "UPDATE runs SET origin = 'run:' || id WHERE id = ?1",
                    params![id],
                )?;
            }
            tx.commit()?;
            Ok(Some(id))
        })
    }

    /// The last ledger event id the event triggers have consumed, if any.
    ///
    /// # Errors
    /// On a database failure.
    pub fn cursor(&self) -> Result<Option<i64>> {
        self.with(|c| {
            c.query_row("SELECT value FROM cursor WHERE name = 'events'", [], |r| {
                r.get(0)
            })
            .optional()
        })
    }

    /// Records how a run ended.
    ///
    /// # Errors
    /// On a database failure.
    pub fn finish(&self, id: i64, o: &Outcome) -> Result<()> {
        let ms = now_ms();
        self.with(|c| {
            c.execute(
                "UPDATE runs SET ended_at = ?2, status = ?3, exit = ?4, output_sha256 = ?5, \
                 output = ?6, error = ?7, duration_ms = ?8 - started_ms, output_truncated = ?9 \
                 WHERE id = ?1",
                params![
                    id,
                    rfc3339(ms),
                    if o.ok { "ok" } else { "failed" },
                    o.exit,
                    o.output_sha256,
                    o.output,
                    o.error,
                    ms,
                    o.truncated
                ],
            )
            .map(drop)
        })
    }

    /// When a scheduled routine last ran (Unix ms), for the missed-run policy.
    ///
    /// # Errors
    /// On a database failure.
    pub fn mark(&self, routine: &str) -> Result<Option<i64>> {
        self.with(|c| {
            c.query_row(
                "SELECT last_ms FROM marks WHERE routine = ?1",
                [routine],
                |r| r.get(0),
            )
            .optional()
        })
    }

    /// Records that a scheduled routine ran at `ms`.
    ///
    /// # Errors
    /// On a database failure.
    pub fn set_mark(&self, routine: &str, ms: i64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO marks (routine, last_ms) VALUES (?1, ?2) \
                 ON CONFLICT(routine) DO UPDATE SET last_ms = excluded.last_ms",
                params![routine, ms],
            )
            .map(drop)
        })
    }

    /// Records many schedule marks in one transaction (one fsync for a whole tick).
    ///
    /// # Errors
    /// On a database failure (none is recorded).
    pub fn set_marks(&self, marks: &[(String, i64)]) -> Result<()> {
        if marks.is_empty() {
            return Ok(());
        }
        self.with(|c| {
            let tx = c.transaction()?;
            {
                let mut st = tx.prepare_cached(
                    "INSERT INTO marks (routine, last_ms) VALUES (?1, ?2) \
                     ON CONFLICT(routine) DO UPDATE SET last_ms = excluded.last_ms",
                )?;
                for (r, ms) in marks {
                    st.execute(params![r, ms])?;
                }
            }
            tx.commit()
        })
    }

    /// Every schedule mark (routine → Unix ms).
    ///
    /// # Errors
    /// On a database failure.
    pub fn marks(&self) -> Result<std::collections::HashMap<String, i64>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT routine, last_ms FROM marks")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            rows.collect()
        })
    }

    /// Remembers a webhook MAC accepted at `now` (ms); `false` when it was already seen (a
    /// replay). A record is kept until its request can pass no webhook's window any more, whatever
    /// window a webhook has or gets at a reload: a request accepted at `A` has a timestamp
    /// within `MAX_SECS` of `A`, so it cannot pass after `A + 2 × MAX_SECS`. (Pruning by the
    /// calling webhook's own window let a webhook with a short window forget what one with a
    /// long window had accepted.)
    ///
    /// # Errors
    /// On a database failure.
    pub fn webhook_first_seen(&self, mac: &str, now: i64) -> Result<bool> {
        self.with(|c| seen_first(c, mac, now))
    }

    /// Runs newest first, optionally of one routine, with ids below `before_id`.
    ///
    /// # Errors
    /// On a database failure.
    pub fn list(
        &self,
        routine: Option<&str>,
        before_id: Option<i64>,
        limit: usize,
    ) -> Result<Vec<Run>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, routine, trigger, trigger_ref, started_at, ended_at, status, exit, \
                 output_sha256, output, error, duration_ms, output_truncated FROM runs \
                 WHERE (?1 IS NULL OR routine = ?1) AND id < ?2 ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![routine, before_id.unwrap_or(i64::MAX), limit as i64],
                |r| {
                    Ok(Run {
                        id: r.get(0)?,
                        routine: r.get(1)?,
                        trigger: r.get(2)?,
                        trigger_ref: r.get(3)?,
                        started_at: r.get(4)?,
                        ended_at: r.get(5)?,
                        status: r.get(6)?,
                        exit: r.get(7)?,
                        output_sha256: r.get(8)?,
                        output: r.get(9)?,
                        error: r.get(10)?,
                        duration_ms: r.get(11)?,
                        output_truncated: r.get(12)?,
                    })
                },
            )?;
            rows.collect()
        })
    }

    /// As [`History::list`] for an API answer, with each run's output cut to its first
    /// `max_output` bytes (the cut ending in a line that says how much more there is and how to
    /// get it: `GET /routine/history?id=<id>`), so a page costs at most `limit × max_output`
    /// bytes of output whatever the runs kept (a command may keep 2 × 16 MiB). The database is
    /// asked for the prefix only.
    ///
    /// # Errors
    /// On a database failure.
    pub fn list_page(
        &self,
        routine: Option<&str>,
        before_id: Option<i64>,
        limit: usize,
        max_output: usize,
    ) -> Result<Vec<Run>> {
        self.with(|c| {
            let mut stmt = c.prepare_cached(
                "SELECT id, routine, trigger, trigger_ref, started_at, ended_at, status, exit, \
                 output_sha256, substr(CAST(output AS BLOB), 1, ?4), \
                 length(CAST(output AS BLOB)), error, duration_ms, output_truncated FROM runs \
                 WHERE (?1 IS NULL OR routine = ?1) AND id < ?2 ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = stmt.query_map(
                params![
                    routine,
                    before_id.unwrap_or(i64::MAX),
                    limit as i64,
                    max_output as i64
                ],
                |r| {
                    let id: i64 = r.get(0)?;
                    let head: Option<Vec<u8>> = r.get(9)?;
                    let bytes: Option<i64> = r.get(10)?;
                    let output = head.map(|h| {
                        let mut text = String::from_utf8_lossy(&h).into_owned();
                        let more = bytes
                            .unwrap_or(0)
                            .saturating_sub(i64::try_from(h.len()).unwrap_or(i64::MAX));
                        if more > 0 {
                            text.push_str(&format!(
                                "\n[osmoda: {more} more bytes of this run's output: GET \
                                 /routine/history?id={id}]"
                            ));
                        }
                        text
                    });
                    Ok(Run {
                        id,
                        routine: r.get(1)?,
                        trigger: r.get(2)?,
                        trigger_ref: r.get(3)?,
                        started_at: r.get(4)?,
                        ended_at: r.get(5)?,
                        status: r.get(6)?,
                        exit: r.get(7)?,
                        output_sha256: r.get(8)?,
                        output,
                        error: r.get(11)?,
                        duration_ms: r.get(12)?,
                        output_truncated: r.get(13)?,
                    })
                },
            )?;
            rows.collect()
        })
    }

    /// One run with its whole output, if it exists.
    ///
    /// # Errors
    /// On a database failure.
    pub fn run(&self, id: i64) -> Result<Option<Run>> {
        Ok(self
            .list(None, Some(id.saturating_add(1)), 1)?
            .into_iter()
            .find(|r| r.id == id))
    }

    /// Deletes runs that ended and started more than `days` days ago; returns how many. A run
    /// that has not ended (`queued`, waiting for its turn however long; `running`) is never
    /// deleted: it would never run, and an event claimed for it would have fired nothing.
    ///
    /// # Errors
    /// On a database failure.
    pub fn prune(&self, days: u32) -> Result<usize> {
        let cutoff = now_ms() - i64::from(days) * 86_400_000;
        self.with(|c| {
            c.execute(
                "DELETE FROM runs WHERE started_ms < ?1 AND status NOT IN ('running', 'queued')",
                params![cutoff],
            )
        })
    }

    /// Number of runs by status (for tests and `/health`).
    ///
    /// # Errors
    /// On a database failure.
    pub fn count(&self, status: &str) -> Result<i64> {
        self.with(|c| {
            c.query_row(
                "SELECT count(*) FROM runs WHERE status = ?1",
                [status],
                |r| r.get(0),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_each_event_once_and_keeps_the_cursor() {
        use crate::lineage::{Claim, Claimed};
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = History::open(&dir.path().join("r.db")).unwrap();
        assert_eq!(h.cursor().unwrap(), None);
        let claim = |r: &str| Claim {
            routine: r.into(),
            event: 5,
            lineage: Lineage {
                origin: Some("event:5".into()),
                chain: Vec::new(),
            },
            payload: Some(format!("{{\"for\":\"{r}\"}}")),
        };
        let pairs = vec![claim("a"), claim("b")];
        let runs = |v: Vec<Claimed>| v.iter().filter(|c| matches!(c, Claimed::Run(_))).count();
        assert_eq!(runs(h.claim_events(&pairs, 5).unwrap()), 2);
        // The same events again (a redelivery after a crash): nothing new, cursor unchanged.
        assert_eq!(
            h.claim_events(&pairs, 4).unwrap(),
            [Claimed::Seen, Claimed::Seen]
        );
        assert_eq!(h.cursor().unwrap(), Some(5));
        // One started, one still queued when the process dies.
        let first = h.queued().unwrap()[0].id;
        assert!(h.begin(first).unwrap().is_some());
        assert!(h.begin(first).unwrap().is_none(), "a run starts once");
        drop(h);
        let (h, interrupted) = History::open(&dir.path().join("r.db")).unwrap();
        assert_eq!(interrupted, 1);
        assert_eq!(h.count("interrupted").unwrap(), 1);
        let queued = h.queued().unwrap();
        assert_eq!(queued.len(), 1, "the unstarted run is still due");
        assert_eq!(queued[0].lineage.origin.as_deref(), Some("event:5"));
        // With the payload its event was claimed with: a restart loses nothing of it.
        assert_eq!(
            h.begin(queued[0].id).unwrap(),
            Some(Some("{\"for\":\"b\"}".to_string()))
        );
        assert_eq!(runs(h.claim_events(&pairs, 5).unwrap()), 0);
    }

    /// A database written before `output_truncated`, `origin` and `chain` existed opens, keeps
    /// its runs and gains the columns (not truncated, each run its own seed).
    #[test]
    fn old_database_gains_the_new_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.db");
        let old = SCHEMA.replace(
            ",\n    output_truncated INTEGER NOT NULL DEFAULT 0,\n    origin TEXT,\n    chain TEXT",
            "",
        );
        assert_ne!(old, SCHEMA);
        let c = Connection::open(&path).unwrap();
        c.execute_batch(&old).unwrap();
        c.execute(
            "INSERT INTO runs (routine, trigger, trigger_ref, started_at, started_ms, status) \
             VALUES ('r', 'manual', 'x', 't', 0, 'ok')",
            [],
        )
        .unwrap();
        drop(c);
        let (h, _) = History::open(&path).unwrap();
        let runs = h.list(None, None, 10).unwrap();
        assert_eq!(runs.len(), 1);
        assert!(!runs[0].output_truncated);
        // An old run's lineage: its own seed, no chain.
        assert_eq!(h.lineage(1).unwrap().unwrap().1, "run:1");
        drop(h);
        History::open(&path).unwrap();
    }

    #[test]
    fn webhook_macs_are_seen_once_and_forgotten_after_the_longest_window() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = History::open(&dir.path().join("r.db")).unwrap();
        let day = 86_400_000;
        assert!(h.webhook_first_seen("a", 1_000_000).unwrap());
        assert!(!h.webhook_first_seen("a", 1_000_001).unwrap());
        // Another webhook's request much later (whatever its window) forgets nothing that
        // could still pass a window of up to a day.
        assert!(h.webhook_first_seen("b", 1_000_000 + 300_000).unwrap());
        assert!(!h.webhook_first_seen("a", 1_000_000 + day).unwrap());
        assert!(!h.webhook_first_seen("a", 1_000_000 + 2 * day).unwrap());
        assert!(h.webhook_first_seen("c", 1_000_001 + 2 * day).unwrap());
        assert!(h.webhook_first_seen("a", 1_000_002 + 2 * day).unwrap());
    }

    #[test]
    fn history_pages_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = History::open(&dir.path().join("r.db")).unwrap();
        for i in 0..5 {
            let id = h
                .queue("r", "manual", &i.to_string(), &Lineage::default())
                .unwrap();
            assert!(h.begin(id).unwrap().is_some());
            let o = Outcome {
                ok: i % 2 == 0,
                exit: Some(i),
                output: "x".into(),
                output_sha256: "s".into(),
                truncated: i == 3,
                error: None,
            };
            h.finish(id, &o).unwrap();
        }
        let page = h.list(Some("r"), None, 2).unwrap();
        assert_eq!(page.iter().map(|r| r.id).collect::<Vec<_>>(), [5, 4]);
        assert_eq!(
            page.iter().map(|r| r.output_truncated).collect::<Vec<_>>(),
            [false, true]
        );
        let next = h.list(Some("r"), Some(4), 10).unwrap();
        assert_eq!(next.len(), 3);
        assert_eq!(next[0].status, "ok");
        assert!(h.list(Some("other"), None, 10).unwrap().is_empty());
        assert_eq!(h.prune(1).unwrap(), 0);
        // Runs that have not ended, however old: one waiting for its turn (a claimed event's
        // run), one going. Retention never deletes them.
        let waiting = h.queue("r", "event", "77", &Lineage::default()).unwrap();
        let going = h.queue("r", "manual", "x", &Lineage::default()).unwrap();
        assert!(h.begin(going).unwrap().is_some());
        h.with(|c| c.execute("UPDATE runs SET started_ms = 0", []))
            .unwrap();
        assert_eq!(h.prune(1).unwrap(), 5);
        assert_eq!(
            h.queued().unwrap().iter().map(|q| q.id).collect::<Vec<_>>(),
            [waiting]
        );
        assert_eq!(h.count("running").unwrap(), 1);
    }
}
