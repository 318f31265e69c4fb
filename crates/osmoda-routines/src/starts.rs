//! When each event routine came into force: the ledger's tip when the routine, with its
//! pattern, was first in the config in force. An event routine fires only on events after its
//! start, so a routine added at runtime — or by a config a restart brings — is not fired by
//! events from before it (its own `/routine/add` commit included), however far behind the
//! shared event cursor is (it stands still while no event routine exists).

use std::collections::HashMap;

use rusqlite::params;

use crate::error::Result;
use crate::history::History;

/// The `cursor` row saying starts have been recorded since this database had the table.
const INITIALISED: &str = "event_starts";

impl History {
    /// Every recorded start: routine → (pattern, ledger id).
    ///
    /// # Errors
    /// On a database failure.
    pub fn event_starts(&self) -> Result<HashMap<String, (String, i64)>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT routine, pattern, since FROM event_starts")?;
            let rows = st.query_map([], |r| Ok((r.get(0)?, (r.get(1)?, r.get(2)?))))?;
            rows.collect()
        })
    }

    /// Records the starts of `routines` (name, pattern) and returns each one's: a routine with
    /// no start, or with another pattern than recorded, starts at `tip` (the ledger's tip now).
    /// Routines no longer listed are forgotten, so one added again later starts again. The
    /// very first time (a database from before starts existed, holding an event cursor),
    /// routines start at that cursor instead: they were in force before, and keep every event
    /// they would have fired.
    ///
    /// # Errors
    /// On a database failure.
    pub fn set_event_starts(
        &self,
        routines: &[(String, String)],
        tip: i64,
    ) -> Result<HashMap<String, i64>> {
        self.with(|c| {
            let tx = c.transaction()?;
            let first: bool = tx.query_row(
                "SELECT count(*) = 0 FROM cursor WHERE name = ?1",
                params![INITIALISED],
                |r| r.get(0),
            )?;
            let cursor: Option<i64> = tx
                .query_row("SELECT value FROM cursor WHERE name = 'events'", [], |r| {
                    r.get(0)
                })
                .ok();
            let mut out = HashMap::new();
            {
                let mut get = tx
                    .prepare_cached("SELECT pattern, since FROM event_starts WHERE routine = ?1")?;
                let mut put = tx.prepare_cached(
                    "INSERT INTO event_starts (routine, pattern, since) VALUES (?1, ?2, ?3) \
                     ON CONFLICT(routine) DO UPDATE SET pattern = excluded.pattern, \
                     since = excluded.since",
                )?;
                for (name, pattern) in routines {
                    let known: Option<(String, i64)> = get
                        .query_row(params![name], |r| Ok((r.get(0)?, r.get(1)?)))
                        .ok();
                    let since = match known {
                        Some((p, since)) if p == *pattern => since,
                        _ => {
                            let start = if first { cursor.unwrap_or(tip) } else { tip };
                            put.execute(params![name, pattern, start])?;
                            start
                        }
                    };
                    out.insert(name.clone(), since);
                }
            }
            let keep: Vec<&str> = routines.iter().map(|(n, _)| n.as_str()).collect();
            let stored: Vec<String> = {
                let mut st = tx.prepare("SELECT routine FROM event_starts")?;
                let rows = st.query_map([], |r| r.get(0))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for gone in stored.iter().filter(|s| !keep.contains(&s.as_str())) {
                tx.execute("DELETE FROM event_starts WHERE routine = ?1", params![gone])?;
            }
            tx.execute(
                "INSERT OR IGNORE INTO cursor (name, value) VALUES (?1, 1)",
                params![INITIALISED],
            )?;
            tx.commit()?;
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lineage::Claim;

    fn r(name: &str, pattern: &str) -> (String, String) {
        (name.into(), pattern.into())
    }

    /// A new routine (or a changed pattern) starts at the tip; a known one keeps its start; a
    /// removed one is forgotten and starts again when it comes back. A database with a cursor
    /// from before starts existed starts its routines at that cursor, once.
    #[test]
    fn routines_start_where_they_came_into_force() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = History::open(&dir.path().join("r.db")).unwrap();
        h.claim_events(&[] as &[Claim], 40).unwrap();
        let got = h.set_event_starts(&[r("a", "x.*")], 50).unwrap();
        assert_eq!(got["a"], 40, "upgraded: in force since the cursor");
        let got = h
            .set_event_starts(&[r("a", "x.*"), r("b", "y")], 60)
            .unwrap();
        assert_eq!((got["a"], got["b"]), (40, 60));
        let got = h
            .set_event_starts(&[r("a", "x.y"), r("b", "y")], 70)
            .unwrap();
        assert_eq!((got["a"], got["b"]), (70, 60), "a changed its pattern");
        assert_eq!(h.set_event_starts(&[r("b", "y")], 80).unwrap()["b"], 60);
        assert_eq!(h.event_starts().unwrap().len(), 1, "a was forgotten");
        assert_eq!(h.set_event_starts(&[r("a", "x.y")], 90).unwrap()["a"], 90);
        assert_eq!(h.event_starts().unwrap().len(), 1);
    }
}
