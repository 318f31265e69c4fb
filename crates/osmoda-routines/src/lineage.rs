//! Where a run comes from, stored with it: the seed it descends from (`origin`) and the
//! routines whose runs led to it (`chain`). The rule that bounds what one seed can cause is
//! applied here, inside the transaction that claims event runs: **a routine runs at most once
//! per origin**. N event routines reacting to each other's events therefore run at most N
//! times from one seed, whatever order their events arrive in, and a routine whose own action
//! writes the event it listens to runs once (see `crate::events` for how an event is traced
//! back to the run that caused it).

use rusqlite::{params, OptionalExtension};

use crate::error::Result;
use crate::history::{rfc3339, History};

/// A run's lineage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lineage {
    /// The seed: `event:<id>` for a ledger event no run of this daemon caused, `run:<id>` for
    /// a run a schedule, a webhook or a person started. `None` when recording a run that is
    /// its own seed: it becomes `run:<its id>`.
    pub origin: Option<String>,
    /// The routines whose runs led to this one, outermost first (itself not included).
    pub chain: Vec<String>,
}

/// A run recorded `queued` that has not started (to resume after a restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// History id.
    pub id: i64,
    /// Routine name.
    pub routine: String,
    /// `cron`, `event`, ...
    pub trigger: String,
    /// The event id, scheduled time, ...
    pub trigger_ref: String,
    /// Its lineage as recorded (`origin` always set).
    pub lineage: Lineage,
}

/// One (routine, event) pair to claim, with the lineage its run would have.
#[derive(Debug, Clone)]
pub struct Claim {
    /// The routine the event matches.
    pub routine: String,
    /// The ledger event id.
    pub event: i64,
    /// The run's lineage (`origin` set: the event's seed).
    pub lineage: Lineage,
    /// What the run's action will be handed (the event, reduced as
    /// [`crate::actions::handed_payload`] does), stored with the run.
    pub payload: Option<String>,
}

/// What claiming a pair did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// A run was recorded `queued` with this id.
    Run(i64),
    /// The pair already has a run (a redelivered event): nothing to do.
    Seen,
    /// The routine already ran for this origin: cut, nothing recorded.
    AlreadyRan,
}

/// A chain as stored (a JSON array of names); anything else reads as empty.
pub(crate) fn parse_chain(text: Option<String>) -> Vec<String> {
    text.and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

impl History {
    /// Claims the runs of a batch of events in one transaction and moves the cursor to
    /// `cursor`. Each pair gets one run `queued`, unless it already has one ([`Claimed::Seen`])
    /// or its routine already has a run with the same origin ([`Claimed::AlreadyRan`]; pairs
    /// earlier in `claims` count). Returns one answer per claim, in order.
    ///
    /// # Errors
    /// On a database failure (nothing is claimed, the cursor stays).
    pub fn claim_events(&self, claims: &[Claim], cursor: i64) -> Result<Vec<Claimed>> {
        let ms = chrono::Utc::now().timestamp_millis();
        self.with(|c| {
            let tx = c.transaction()?;
            let mut out = Vec::with_capacity(claims.len());
            {
                let mut seen = tx.prepare_cached(
                    "SELECT 1 FROM runs WHERE trigger = 'event' AND routine = ?1 AND trigger_ref = ?2",
                )?;
                let mut ran =
                    tx.prepare_cached("SELECT 1 FROM runs WHERE origin = ?1 AND routine = ?2")?;
                let mut ins = tx.prepare_cached(
                    "INSERT INTO runs (routine, trigger, trigger_ref, started_at, started_ms, \
                     status, origin, chain, payload) \
                     VALUES (?1, 'event', ?2, ?3, ?4, 'queued', ?5, ?6, ?7)",
                )?;
                for cl in claims {
                    let event = cl.event.to_string();
                    let origin = cl
                        .lineage
                        .origin
                        .clone()
                        .unwrap_or_else(|| format!("event:{}", cl.event));
                    if seen
                        .query_row(params![cl.routine, event], |_| Ok(()))
                        .optional()?
                        .is_some()
                    {
                        out.push(Claimed::Seen);
                    } else if ran
                        .query_row(params![origin, cl.routine], |_| Ok(()))
                        .optional()?
                        .is_some()
                    {
                        out.push(Claimed::AlreadyRan);
                    } else {
                        let chain = serde_json::to_string(&cl.lineage.chain)
                            .unwrap_or_else(|_| "[]".into());
                        ins.execute(params![
                            cl.routine,
                            event,
                            rfc3339(ms),
                            ms,
                            origin,
                            chain,
                            cl.payload
                        ])?;
                        out.push(Claimed::Run(tx.last_insert_rowid()));
                    }
                }
            }
            tx.execute(
                "INSERT INTO cursor (name, value) VALUES ('events', ?1) \
                 ON CONFLICT(name) DO UPDATE SET value = max(value, excluded.value)",
                params![cursor],
            )?;
            tx.commit()?;
            Ok(out)
        })
    }

    /// The routine, origin and chain of run `id`, if it is in the history.
    ///
    /// # Errors
    /// On a database failure.
    pub fn lineage(&self, id: i64) -> Result<Option<(String, String, Vec<String>)>> {
        self.with(|c| {
            c.query_row(
                "SELECT routine, coalesce(origin, 'run:' || id), chain FROM runs WHERE id = ?1",
                params![id],
                |r| Ok((r.get(0)?, r.get(1)?, parse_chain(r.get(2)?))),
            )
            .optional()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(routine: &str, event: i64, origin: &str) -> Claim {
        Claim {
            routine: routine.into(),
            event,
            lineage: Lineage {
                origin: Some(origin.into()),
                chain: vec!["seed".into()],
            },
            payload: None,
        }
    }

    /// Once per origin: the second event of the same seed is cut for a routine that ran,
    /// within one batch and across batches; another seed runs again; a redelivered pair is
    /// only seen.
    #[test]
    fn a_routine_runs_once_per_origin() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = History::open(&dir.path().join("r.db")).unwrap();
        let seed = h.queue("seed", "manual", "x", &Lineage::default()).unwrap();
        let origin = format!("run:{seed}");
        assert_eq!(h.lineage(seed).unwrap().unwrap().1, origin);
        let got = h
            .claim_events(
                &[
                    claim("a", 10, &origin),
                    claim("b", 10, &origin),
                    claim("a", 11, &origin),
                    claim("seed", 11, &origin),
                ],
                11,
            )
            .unwrap();
        assert!(matches!(got[0], Claimed::Run(_)));
        assert!(matches!(got[1], Claimed::Run(_)));
        assert_eq!(got[2..], [Claimed::AlreadyRan, Claimed::AlreadyRan]);
        let Claimed::Run(a) = got[0] else { panic!() };
        assert_eq!(
            h.lineage(a).unwrap().unwrap(),
            ("a".to_string(), origin.clone(), vec!["seed".to_string()])
        );
        let got = h
            .claim_events(&[claim("a", 12, &origin), claim("a", 12, "event:12")], 12)
            .unwrap();
        assert_eq!(got[0], Claimed::AlreadyRan);
        assert!(matches!(got[1], Claimed::Run(_)));
        assert_eq!(
            h.claim_events(&[claim("a", 10, "event:99")], 12).unwrap(),
            [Claimed::Seen]
        );
        assert_eq!(h.cursor().unwrap(), Some(12));
    }
}
