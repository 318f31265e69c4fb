//! Event triggers: one long poll on agentd's `GET /events/subscribe` from the persisted
//! cursor. Each batch is claimed in one SQLite transaction (one queued run per matching
//! (routine, event) pair, cursor moved past the batch) before any action starts, so every
//! matching event fires exactly once across restarts of either side.
//!
//! Loops are bounded by lineage ([`crate::lineage`]): every event is traced to the run that
//! caused it — this daemon's own `routine.*` events name their run's origin and chain, and an
//! event an http action wrote carries agentd's `action=routine-run.<id>` in its actor — so a
//! routine fired by it inherits that run's seed. A routine runs at most once per seed and never
//! from an event its own run caused; what is not fired is recorded as `routine.loop.cut`.
//! A routine fires only on events after it came into force ([`crate::starts`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use osmoda_client::Client;
use osmoda_config::{RoutinesConfig, Trigger};
use serde_json::Value;
use tokio::sync::watch;

use crate::actions::Fired;
use crate::engine::Engine;
use crate::history::History;
use crate::lineage::{Claim, Claimed, Lineage};
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

/// What a run fired by ledger event `ev` (id `id`) is handed: `{id, type, actor, payload}`.
fn handed_event(ev: &Value, id: i64) -> Value {
    serde_json::json!({
        "id": id,
        "type": ev["type"],
        "actor": ev["actor"],
        "payload": serde_json::from_str::<Value>(ev["payload"].as_str().unwrap_or("null"))
            .unwrap_or(Value::Null),
    })
}

/// Longest origin chain: a run `MAX_CHAIN` hops from its first cause is cut even without a
/// repeated routine (a long chain of distinct routines is a mistake too).
pub const MAX_CHAIN: usize = 16;

/// The ledger event recording the routines an event did not fire.
pub const LOOP_CUT: &str = "routine.loop.cut";

/// Who wrote an event, as far as routines are concerned (from what agentd recorded, never from
/// a claim the writer makes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// This daemon itself (`routine.*`: agentd takes that namespace only from osmoda-routines'
    /// own process, never from a request made for an action): the lineage its payload names.
    Daemon {
        /// `payload.origin` (absent in events from before origins existed).
        origin: Option<String>,
        /// `payload.chain`, or `[payload.routine]` in events from before chains existed.
        chain: Vec<String>,
    },
    /// A request made for an action of this run (agentd's actor `<role>[action=routine-run.<id>,…]`).
    Run(i64),
    /// Anything else: a seed of its own.
    Outside,
}

/// Where `event` comes from.
pub fn source(event: &Value) -> Source {
    let kind = event["type"].as_str().unwrap_or_default();
    let actor = event["actor"].as_str().unwrap_or_default();
    if kind.starts_with("routine.") && actor.starts_with("osmoda-routines[") {
        let p = serde_json::from_str::<Value>(event["payload"].as_str().unwrap_or("null"))
            .unwrap_or(Value::Null);
        let chain = match p["chain"].as_array() {
            Some(c) => c
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            None => p["routine"]
                .as_str()
                .map(|r| vec![r.to_string()])
                .unwrap_or_default(),
        };
        let origin = p["origin"].as_str().map(str::to_string);
        return Source::Daemon { origin, chain };
    }
    // The role before `[` is `[a-z0-9._-]`, so the first `[` opens agentd's brackets, and
    // `action=` right after it can only be agentd's.
    let run = actor
        .split_once('[')
        .and_then(|(_, rest)| rest.strip_prefix("action="))
        .and_then(|rest| rest.strip_prefix(crate::actions::ACTION_LABEL_PREFIX))
        .and_then(|rest| rest.split(',').next())
        .and_then(|id| id.parse::<i64>().ok());
    match run {
        Some(id) => Source::Run(id),
        None => Source::Outside,
    }
}

/// The lineage a run fired by `event` (ledger id `id`) inherits: the event's seed and the
/// routines that led to it. An event an action of run R wrote descends from R (R's origin,
/// R's chain plus R); one no run caused is its own seed (`event:<id>`).
pub fn lineage_of(event: &Value, id: i64, history: &History) -> Lineage {
    let own = || Lineage {
        origin: Some(format!("event:{id}")),
        chain: Vec::new(),
    };
    match source(event) {
        Source::Daemon { origin, chain } => Lineage {
            origin: origin.or_else(|| Some(format!("event:{id}"))),
            chain,
        },
        Source::Run(run) => match history.lineage(run) {
            Ok(Some((routine, origin, mut chain))) => {
                chain.push(routine);
                Lineage {
                    origin: Some(origin),
                    chain,
                }
            }
            // Pruned from the history (or unreadable): a seed of its own.
            Ok(None) => own(),
            Err(e) => {
                tracing::error!("lineage of run {run}: {e}");
                own()
            }
        },
        Source::Outside => own(),
    }
}

/// What `event` does to one matching routine, before the history is asked.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    /// Fire the routine (unless it already ran for the origin); its run inherits the chain.
    Fire(&'a str),
    /// The routine is in the chain already (or the chain is [`MAX_CHAIN`] long): firing it
    /// would close a cycle.
    Cut(&'a str, String),
}

/// The routines `event` of type `kind` matches and whether each may fire, by the chain alone:
/// a routine never fires from an event its own run caused, directly or through other routines
/// (A fires B fires A). The once-per-origin rule is applied when the runs are claimed
/// ([`History::claim_events`]).
pub fn fired_by<'a>(
    routines: &'a [(String, String)],
    kind: &str,
    chain: &[String],
) -> Vec<Verdict<'a>> {
    routines
        .iter()
        .filter(|(_, pat)| matches(pat, kind))
        .map(|(name, _)| {
            if chain.len() >= MAX_CHAIN {
                Verdict::Cut(name, format!("the origin chain is {MAX_CHAIN} runs long"))
            } else if chain.iter().any(|c| c == name) {
                Verdict::Cut(name, format!("{name} is already in the origin chain"))
            } else {
                Verdict::Fire(name)
            }
        })
        .collect()
}

/// One event of a batch: its id, the event, its lineage, and the routines it did not fire
/// with why.
type Seen<'a> = (i64, &'a Value, Lineage, Vec<(String, String)>);

/// The `&types=` part of the subscription URL for `routines`' patterns: each pattern
/// percent-encoded (a pattern may hold `&`, `+`, `%`, `#`, `=`, which would otherwise change
/// the query), joined by agentd's `,`. No filter at all (every event comes, `fired_by` filters
/// here) when a pattern holds `,` itself, which agentd would split, or past agentd's 16.
pub fn type_filter(routines: &[(String, String)]) -> String {
    let mut types: Vec<&str> = routines.iter().map(|(_, p)| p.as_str()).collect();
    types.sort_unstable();
    types.dedup();
    if types.len() > 16 || types.iter().any(|t| t.contains(',')) {
        return String::new();
    }
    let enc = |t: &str| -> String {
        t.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~*".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    let all: Vec<String> = types.iter().map(|t| enc(t)).collect();
    format!("&types={}", all.join(","))
}

/// The start of each of `routines` (`crate::starts`): the ledger's tip for a routine new
/// to the config.
///
/// # Errors
/// When agentd does not answer with its tip, or the history fails: what to log.
pub async fn starts_of(
    agentd: &Client,
    history: &History,
    routines: &[(String, String)],
) -> Result<HashMap<String, i64>, String> {
    if routines.is_empty() {
        // Nothing to start; every start recorded is forgotten.
        return history
            .set_event_starts(routines, 0)
            .map_err(|e| format!("event routines' starts: {e}"));
    }
    let tip = agentd
        .get("/events/subscribe?wait_secs=0&limit=1")
        .await
        .and_then(|r| r.ok_json())
        .map_err(|e| format!("agentd's ledger tip: {e}"))?;
    let tip = tip["cursor"]
        .as_i64()
        .ok_or_else(|| format!("agentd answered without a cursor: {tip}"))?;
    history
        .set_event_starts(routines, tip)
        .map_err(|e| format!("event routines' starts: {e}"))
}

/// Runs until `shutdown`: subscribes for the patterns of the current event routines (again
/// when the config changes), claims and launches runs.
pub async fn run(
    agentd: Client,
    engine: Arc<Engine>,
    mut config: watch::Receiver<Arc<RoutinesConfig>>,
    mut shutdown: Shutdown,
) {
    // The routines whose starts are known, and those starts.
    let mut known: (Vec<(String, String)>, HashMap<String, i64>) = Default::default();
    loop {
        let routines = event_routines(&config.borrow_and_update());
        if routines.is_empty() {
            // Once per config: the starts of removed routines are forgotten.
            known = Default::default();
            if let Err(e) = starts_of(&agentd, engine.history(), &routines).await {
                tracing::warn!("{e}");
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                c = config.changed() => if c.is_err() { return } else { continue },
            }
        }
        let filter = type_filter(&routines);
        let step = async {
            if known.0 != routines {
                match starts_of(&agentd, engine.history(), &routines).await {
                    Ok(s) => known = (routines.clone(), s),
                    Err(e) => {
                        tracing::warn!("{e}");
                        tokio::time::sleep(RETRY).await;
                        return Vec::new();
                    }
                }
            }
            let starts = &known.1;
            let cursor = match engine.history().cursor() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("event cursor: {e}");
                    tokio::time::sleep(RETRY).await;
                    return Vec::new();
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
                Ok(b) => {
                    engine.set_subscription_problem(None);
                    b
                }
                Err(e) => {
                    // Loud: while this fails no event routine fires (`/health` says so).
                    let first = engine.set_subscription_problem(Some(
                        "event triggers are not being received: agentd's event subscription \
                         fails (osmoda-routines' log says why); no event is lost, they fire \
                         once it answers again"
                            .to_string(),
                    ));
                    if first {
                        tracing::warn!("event subscription: {e}");
                    } else {
                        tracing::debug!("event subscription: {e}");
                    }
                    tokio::time::sleep(RETRY).await;
                    return Vec::new();
                }
            };
            let Some(next) = batch["cursor"].as_i64() else {
                tracing::error!("agentd answered a subscription without a cursor: {batch}");
                tokio::time::sleep(RETRY).await;
                return Vec::new();
            };
            let events = batch["events"].as_array().cloned().unwrap_or_default();
            let mut claims = Vec::new();
            // Per event: (id, event, lineage, routines cut and why).
            let mut seen: Vec<Seen<'_>> = Vec::new();
            for ev in &events {
                let Some(id) = ev["id"].as_i64() else {
                    continue;
                };
                let kind = ev["type"].as_str().unwrap_or_default();
                let lineage = lineage_of(ev, id, engine.history());
                let mut cut = Vec::new();
                for v in fired_by(&routines, kind, &lineage.chain) {
                    match v {
                        // From before the routine came into force: not its to fire.
                        Verdict::Fire(name) if starts.get(name).is_none_or(|s| id <= *s) => {}
                        Verdict::Fire(name) => claims.push((
                            seen.len(),
                            Claim {
                                routine: name.to_string(),
                                event: id,
                                lineage: lineage.clone(),
                                // Stored with the run, as its action will be handed it.
                                payload: Some(crate::actions::handed_payload(&handed_event(
                                    ev, id,
                                ))),
                            },
                        )),
                        Verdict::Cut(name, why) => cut.push((name.to_string(), why)),
                    }
                }
                seen.push((id, ev, lineage, cut));
            }
            let just: Vec<Claim> = claims.iter().map(|(_, c)| c.clone()).collect();
            match engine.history().claim_events(&just, next) {
                Ok(claimed) => {
                    let mut launch = Vec::new();
                    for ((at, claim), got) in claims.into_iter().zip(claimed) {
                        match got {
                            Claimed::Run(run_id) => launch.push((run_id, claim, at)),
                            Claimed::Seen => {}
                            Claimed::AlreadyRan => seen[at].3.push((
                                claim.routine.clone(),
                                format!(
                                    "{} already ran for this origin ({})",
                                    claim.routine,
                                    claim.lineage.origin.as_deref().unwrap_or("?")
                                ),
                            )),
                        }
                    }
                    // Launched before anything awaits: a config change drops this step
                    // at an await, and a claimed run must not wait for the next start.
                    for (run_id, claim, at) in launch {
                        let (id, _, _, _) = &seen[at];
                        engine.launch(
                            run_id,
                            claim.routine,
                            Fired {
                                kind: "event".into(),
                                reference: id.to_string(),
                                // In the history with the run; read when its turn comes.
                                payload: None,
                                chain: claim.lineage.chain,
                                origin: claim.lineage.origin,
                            },
                        );
                    }
                    // The cursor has moved past these events: their cut records are handed
                    // out of the step (which a config change drops at any await) and
                    // recorded below whatever the config does.
                    let mut records = Vec::new();
                    for (id, ev, lineage, cut) in &seen {
                        if cut.is_empty() {
                            continue;
                        }
                        let kind = ev["type"].as_str().unwrap_or_default();
                        let names: Vec<&str> = cut.iter().map(|(n, _)| n.as_str()).collect();
                        tracing::warn!(
                            "event {id} ({kind}) did not fire {}: {}",
                            names.join(", "),
                            cut[0].1
                        );
                        // A cut caused by a cut is only logged: recording it would be an event
                        // of the same lineage again, and so on.
                        if kind != LOOP_CUT {
                            records.push(serde_json::json!({
                                "event_id": id, "event_type": kind,
                                "origin": lineage.origin, "chain": lineage.chain,
                                "cut": cut.iter().map(|(routine, why)| serde_json::json!({
                                    "routine": routine, "why": why,
                                })).collect::<Vec<_>>(),
                            }));
                        }
                    }
                    records
                }
                Err(e) => {
                    tracing::error!("claiming event runs: {e}");
                    tokio::time::sleep(RETRY).await;
                    Vec::new()
                }
            }
        };
        let cuts = tokio::select! {
            _ = shutdown.wait() => return,
            c = config.changed() => if c.is_err() { return } else { Vec::new() },
            cuts = step => cuts,
        };
        // Not droppable: a claimed batch's cuts are all recorded (spooled durably).
        for record in cuts {
            engine.report(LOOP_CUT, record).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_type_filter_encodes_each_pattern_and_gives_up_on_commas() {
        let r = |ps: &[&str]| -> Vec<(String, String)> {
            ps.iter()
                .map(|p| ("r".to_string(), p.to_string()))
                .collect()
        };
        assert_eq!(
            type_filter(&r(&["watch.*", "zz&foo=1", "p%41", "x+y", "h#t"])),
            "&types=h%23t,p%2541,watch.*,x%2By,zz%26foo%3D1"
        );
        assert_eq!(type_filter(&r(&["a,b", "c"])), "");
        let many: Vec<String> = (0..17).map(|i| format!("t{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert_eq!(type_filter(&r(&many)), "");
        assert_eq!(type_filter(&r(&many[..16])).matches(',').count(), 15);
    }
    use serde_json::json;

    fn names(v: &[Verdict<'_>]) -> Vec<String> {
        v.iter()
            .map(|v| match v {
                Verdict::Fire(n) => n.to_string(),
                Verdict::Cut(n, _) => format!("cut:{n}"),
            })
            .collect()
    }

    fn ev(t: &str, actor: &str, p: Value) -> Value {
        json!({ "type": t, "actor": actor, "payload": p.to_string() })
    }

    const DAEMON: &str = "osmoda-routines[uid=990,pid=7,exe=osmoda-routines]";

    fn chain(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    /// Who wrote an event is read from agentd's actor: this daemon's `routine.*` events give
    /// their payload's lineage, an action's request names its run, and anything else —
    /// including a payload claiming a chain, or a role or executable that spells `action=` —
    /// is a seed of its own.
    #[test]
    fn sources_come_from_the_actor_not_the_payload() {
        let p = json!({"routine": "a", "chain": ["x", "a"], "origin": "run:3"});
        assert_eq!(
            source(&ev("routine.run.finished", DAEMON, p.clone())),
            Source::Daemon {
                origin: Some("run:3".into()),
                chain: chain(&["x", "a"])
            }
        );
        // Before chains and origins: `routine` alone.
        assert_eq!(
            source(&ev("routine.run.finished", DAEMON, json!({"routine": "c"}))),
            Source::Daemon {
                origin: None,
                chain: chain(&["c"])
            }
        );
        // Anyone else's events carry no lineage, whatever their payload says.
        for actor in [
            "test[uid=0,pid=1,exe=curl]",
            "agent[uid=65534,pid=9,exe=action=routine-run.5]",
            "osmoda-routines-x[uid=0,pid=1,exe=y]",
        ] {
            assert_eq!(
                source(&ev("watch.switch.committed", actor, p.clone())),
                Source::Outside,
                "{actor}"
            );
        }
        assert_eq!(
            source(&ev(
                "routine.run.finished",
                "test[uid=0,pid=1,exe=x]",
                p.clone()
            )),
            Source::Outside
        );
        // A request made for run 42's action.
        assert_eq!(
            source(&ev(
                "ping.x",
                "pinger[action=routine-run.42,uid=990,pid=7,exe=osmoda-routines]",
                json!({})
            )),
            Source::Run(42)
        );
        assert_eq!(
            source(&ev(
                "ping.x",
                "pinger[action=other-label.42,uid=990,pid=7,exe=x]",
                json!({})
            )),
            Source::Outside
        );
    }

    #[test]
    fn exact_prefix_and_no_self_loop() {
        let r = vec![
            ("a".to_string(), "watch.switch.*".to_string()),
            ("b".to_string(), "watch.switch.committed".to_string()),
            ("c".to_string(), "routine.*".to_string()),
        ];
        assert_eq!(
            names(&fired_by(&r, "watch.switch.committed", &[])),
            ["a", "b"]
        );
        assert_eq!(names(&fired_by(&r, "watch.switch.rolled-back", &[])), ["a"]);
        assert!(fired_by(&r, "watch.switchx", &[]).is_empty());
        assert_eq!(
            names(&fired_by(&r, "routine.run.finished", &chain(&["a"]))),
            ["c"]
        );
        assert_eq!(
            names(&fired_by(&r, "routine.run.finished", &chain(&["c"]))),
            ["cut:c"]
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
        let fin = |c: &[&str]| names(&fired_by(&r, "routine.run.finished", &chain(c)));
        assert_eq!(fin(&["a"]), ["cut:a", "b", "c"]);
        assert_eq!(fin(&["a", "b"]), ["cut:a", "cut:b", "c"]);
        assert_eq!(fin(&["a", "b", "c"]), ["cut:a", "cut:b", "cut:c"]);
        assert_eq!(fin(&["x", "b"]), ["a", "cut:b", "c"]);
        let long: Vec<String> = (0..MAX_CHAIN).map(|i| format!("r{i}")).collect();
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        assert_eq!(fin(&long), ["cut:a", "cut:b", "cut:c"]);
        assert_eq!(
            fin(&long[1..]),
            ["a", "b", "c"],
            "one below the bound still fires"
        );
    }

    /// An event an action wrote inherits its run's lineage (origin, chain plus the routine);
    /// an event of a run no longer in the history, or of no run, is its own seed.
    #[test]
    fn lineage_follows_the_run_that_wrote_the_event() {
        let dir = tempfile::tempdir().unwrap();
        let (h, _) = History::open(&dir.path().join("r.db")).unwrap();
        let seed = h.queue("kick", "manual", "x", &Lineage::default()).unwrap();
        let by_action = ev(
            "ping.x",
            &format!("pinger[action=routine-run.{seed},uid=0,pid=1,exe=osmoda-routines]"),
            json!({}),
        );
        assert_eq!(
            lineage_of(&by_action, 50, &h),
            Lineage {
                origin: Some(format!("run:{seed}")),
                chain: chain(&["kick"])
            }
        );
        let gone = ev(
            "ping.x",
            "pinger[action=routine-run.999,uid=0,pid=1,exe=x]",
            json!({}),
        );
        assert_eq!(
            lineage_of(&gone, 51, &h).origin.as_deref(),
            Some("event:51")
        );
        let outside = ev("ping.x", "test[uid=0,pid=1,exe=x]", json!({}));
        assert_eq!(
            lineage_of(&outside, 52, &h),
            Lineage {
                origin: Some("event:52".into()),
                chain: Vec::new()
            }
        );
    }
}
