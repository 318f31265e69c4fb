//! Event triggers: one long poll on agentd's `GET /events/subscribe` from the persisted
//! cursor. Each batch is claimed in one SQLite transaction (one queued run per matching
//! (routine, event) pair, cursor moved past the batch) before any action starts, so every
//! matching event fires exactly once across restarts of either side.

use std::sync::Arc;
use std::time::Duration;

use osmoda_client::Client;
use osmoda_config::{RoutinesConfig, Trigger};
use serde_json::Value;
use tokio::sync::watch;

use crate::actions::Fired;
use crate::engine::Engine;
use crate::Shutdown;

/// Seconds agentd may hold one subscription request.
const WAIT_SECS: u64 = 25;
/// Pause after a failed request (agentd down, restarting).
const RETRY: Duration = Duration::from_millis(500);

/// Event routines of `cfg`: `(name, pattern)` of every enabled event trigger.
pub fn event_routines(cfg: &RoutinesConfig) -> Vec<(String, String)> {
    cfg.routines
        .iter()
        .filter(|(_, r)| r.enable)
        .filter_map(|(n, r)| match &r.trigger {
            Trigger::Event { pattern } => Some((n.clone(), pattern.clone())),
            _ => None,
        })
        .collect()
}

fn matches(pattern: &str, kind: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => pattern == kind,
    }
}

/// Longest origin chain: a run `MAX_CHAIN` hops from its first cause is cut even without a
/// repeated routine (a long chain of distinct routines is a mistake too).
pub const MAX_CHAIN: usize = 16;

/// The ledger event recording a cut cycle.
pub const LOOP_CUT: &str = "routine.loop.cut";

/// The origin chain an event carries: for a routine's own events (`routine.*` from this
/// daemon), the routines whose runs led to it, itself last (`payload.chain`, or just
/// `payload.routine` for events written before chains existed); none for any other event.
fn origin(event: &Value) -> Vec<String> {
    let kind = event["type"].as_str().unwrap_or_default();
    if !kind.starts_with("routine.") {
        return Vec::new();
    }
    let p = serde_json::from_str::<Value>(event["payload"].as_str().unwrap_or("null"))
        .unwrap_or(Value::Null);
    match p["chain"].as_array() {
        Some(c) => c
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        None => p["routine"]
            .as_str()
            .map(|r| vec![r.to_string()])
            .unwrap_or_default(),
    }
}

/// What `event` does to one matching routine.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Fire the routine; its run inherits this origin chain.
    Fire(&'a str, Vec<String>),
    /// The routine is already in the chain (or the chain is [`MAX_CHAIN`] long): firing it
    /// would close a cycle, so it does not fire.
    Cut(&'a str, Vec<String>),
}

/// The routines `event` matches and whether each fires or is cut. A routine never fires from
/// an event its own run caused, directly (its `routine.run.*` events) or through any number
/// of other event routines (A fires B fires A): the origin chain names every routine on the
/// way, so a cycle of any length ends where it would close.
pub fn fired_by<'a>(routines: &'a [(String, String)], event: &Value) -> Vec<Verdict<'a>> {
    let kind = event["type"].as_str().unwrap_or_default();
    let chain = origin(event);
    routines
        .iter()
        .filter(|(_, pat)| matches(pat, kind))
        .map(|(name, _)| {
            if chain.len() >= MAX_CHAIN || chain.iter().any(|c| c == name) {
                Verdict::Cut(name, chain.clone())
            } else {
                Verdict::Fire(name, chain.clone())
            }
        })
        .collect()
}

/// Runs until `shutdown`: subscribes for the patterns of the current event routines (again
/// when the config changes), claims and launches runs.
pub async fn run(
    agentd: Client,
    engine: Arc<Engine>,
    mut config: watch::Receiver<Arc<RoutinesConfig>>,
    mut shutdown: Shutdown,
) {
    loop {
        let routines = event_routines(&config.borrow_and_update());
        if routines.is_empty() {
            tokio::select! {
                _ = shutdown.wait() => return,
                c = config.changed() => if c.is_err() { return } else { continue },
            }
        }
        let mut types: Vec<&str> = routines.iter().map(|(_, p)| p.as_str()).collect();
        types.sort_unstable();
        types.dedup();
        // agentd takes at most 16 patterns; past that, filter here.
        let filter = if types.len() <= 16 {
            format!("&types={}", types.join(","))
        } else {
            String::new()
        };
        let step = async {
            let cursor = match engine.history().cursor() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("event cursor: {e}");
                    tokio::time::sleep(RETRY).await;
                    return;
                }
            };
            // The first start has no cursor: take agentd's tip at once (events from before
            // the routines existed do not fire them), then wait from there.
            let (after, wait) = match cursor {
                Some(c) => (format!("after={c}&"), WAIT_SECS),
                None => (String::new(), 0),
            };
            let url = format!("/events/subscribe?{after}wait_secs={wait}{filter}");
            let batch = match agentd.get(&url).await.and_then(|r| r.ok_json()) {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!("event subscription: {e}");
                    tokio::time::sleep(RETRY).await;
                    return;
                }
            };
            let Some(next) = batch["cursor"].as_i64() else {
                tracing::error!("agentd answered a subscription without a cursor: {batch}");
                tokio::time::sleep(RETRY).await;
                return;
            };
            let events = batch["events"].as_array().cloned().unwrap_or_default();
            let mut pairs = Vec::new();
            let mut chains = std::collections::HashMap::new();
            let mut cuts = Vec::new();
            let mut payloads = std::collections::HashMap::new();
            for ev in &events {
                let Some(id) = ev["id"].as_i64() else {
                    continue;
                };
                for v in fired_by(&routines, ev) {
                    match v {
                        Verdict::Fire(name, chain) => {
                            pairs.push((name.to_string(), id));
                            chains.insert((name.to_string(), id), chain);
                        }
                        Verdict::Cut(name, chain) => cuts.push((name, id, ev, chain)),
                    }
                }
                payloads.insert(id, ev.clone());
            }
            match engine.history().claim_events(&pairs, next) {
                Ok(claimed) => {
                    for (routine, id, ev, chain) in cuts {
                        let kind = ev["type"].as_str().unwrap_or_default();
                        tracing::warn!(
                            "routine {routine} not fired by event {id} ({kind}): it would close \
                             the cycle {}",
                            chain.join(" → ")
                        );
                        // A cut caused by a cut is only logged: recording it would be an event
                        // with the same chain again, and so on without end.
                        if kind != LOOP_CUT {
                            engine
                                .report(
                                    LOOP_CUT,
                                    serde_json::json!({
                                        "routine": routine, "event_id": id,
                                        "event_type": kind, "chain": chain,
                                        "why": if chain.len() >= MAX_CHAIN {
                                            format!("the origin chain is {MAX_CHAIN} runs long")
                                        } else {
                                            format!("{routine} is already in the origin chain")
                                        },
                                    }),
                                )
                                .await;
                        }
                    }
                    for (run_id, name, id) in claimed {
                        let ev = payloads.get(&id);
                        let chain = chains.remove(&(name.clone(), id)).unwrap_or_default();
                        engine.launch(
                            run_id,
                            name,
                            Fired {
                                kind: "event".into(),
                                reference: id.to_string(),
                                payload: ev.map(|e| {
                                    serde_json::json!({
                                        "id": id,
                                        "type": e["type"],
                                        "actor": e["actor"],
                                        "payload": serde_json::from_str::<Value>(
                                            e["payload"].as_str().unwrap_or("null")
                                        ).unwrap_or(Value::Null),
                                    })
                                }),
                                chain,
                            },
                        );
                    }
                }
                Err(e) => {
                    tracing::error!("claiming event runs: {e}");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        tokio::select! {
            _ = shutdown.wait() => return,
            c = config.changed() => if c.is_err() { return },
            () = step => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names<'a>(v: &[Verdict<'a>]) -> Vec<String> {
        v.iter()
            .map(|v| match v {
                Verdict::Fire(n, _) => n.to_string(),
                Verdict::Cut(n, _) => format!("cut:{n}"),
            })
            .collect()
    }

    fn ev(t: &str, p: Value) -> Value {
        json!({ "type": t, "payload": p.to_string() })
    }

    #[test]
    fn exact_prefix_and_no_self_loop() {
        let r = vec![
            ("a".to_string(), "watch.switch.*".to_string()),
            ("b".to_string(), "watch.switch.committed".to_string()),
            ("c".to_string(), "routine.*".to_string()),
        ];
        assert_eq!(
            names(&fired_by(&r, &ev("watch.switch.committed", json!({})))),
            ["a", "b"]
        );
        assert_eq!(
            names(&fired_by(&r, &ev("watch.switch.rolled-back", json!({})))),
            ["a"]
        );
        assert!(fired_by(&r, &ev("watch.switchx", json!({}))).is_empty());
        assert_eq!(
            fired_by(&r, &ev("routine.run.finished", json!({"routine": "a"}))),
            [Verdict::Fire("c", vec!["a".into()])]
        );
        // Its own event, from before chains (only `routine`) and with one.
        assert_eq!(
            names(&fired_by(
                &r,
                &ev("routine.run.finished", json!({"routine": "c"}))
            )),
            ["cut:c"]
        );
        assert_eq!(
            names(&fired_by(
                &r,
                &ev(
                    "routine.run.skipped",
                    json!({"routine": "c", "chain": ["c"]})
                )
            )),
            ["cut:c"]
        );
        // Events of other daemons carry no chain, whatever their payload says.
        assert_eq!(
            fired_by(
                &r,
                &ev("watch.switch.committed", json!({"chain": ["a", "b"]}))
            )[0],
            Verdict::Fire("a", vec![])
        );
    }

    /// A → B → A, A → B → C → A, and a chain at the length bound are cut where they would
    /// close; the routines not in the chain still fire.
    #[test]
    fn cycles_of_any_length_are_cut() {
        let r = vec![
            ("a".to_string(), "routine.run.finished".to_string()),
            ("b".to_string(), "routine.run.*".to_string()),
            ("c".to_string(), "routine.*".to_string()),
        ];
        let fin = |chain: &[&str]| {
            ev(
                "routine.run.finished",
                json!({"routine": chain.last(), "chain": chain}),
            )
        };
        assert_eq!(names(&fired_by(&r, &fin(&["a"]))), ["cut:a", "b", "c"]);
        assert_eq!(
            names(&fired_by(&r, &fin(&["a", "b"]))),
            ["cut:a", "cut:b", "c"]
        );
        assert_eq!(
            names(&fired_by(&r, &fin(&["a", "b", "c"]))),
            ["cut:a", "cut:b", "cut:c"]
        );
        assert_eq!(
            fired_by(&r, &fin(&["x", "b"]))[0],
            Verdict::Fire("a", vec!["x".into(), "b".into()])
        );
        let long: Vec<String> = (0..MAX_CHAIN).map(|i| format!("r{i}")).collect();
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        assert_eq!(
            names(&fired_by(&r, &fin(&long))),
            ["cut:a", "cut:b", "cut:c"]
        );
        assert_eq!(
            names(&fired_by(&r, &fin(&long[1..]))),
            ["a", "b", "c"],
            "one below the bound still fires"
        );
        // The cut record itself carries the chain: a routine in it is cut again (and, the
        // cause being a cut, only logged), one outside it fires.
        let cut = ev(LOOP_CUT, json!({"routine": "a", "chain": ["a", "b"]}));
        assert_eq!(names(&fired_by(&r, &cut)), ["c"]);
    }
}
