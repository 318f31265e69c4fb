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

/// The routines `event` fires. A routine's own run events (`routine.*` naming it) never fire
/// it again, so `match = "routine.*"` cannot loop on itself.
fn fired_by<'a>(routines: &'a [(String, String)], event: &Value) -> Vec<&'a str> {
    let kind = event["type"].as_str().unwrap_or_default();
    let own = kind.starts_with("routine.").then(|| {
        serde_json::from_str::<Value>(event["payload"].as_str().unwrap_or("null"))
            .ok()
            .and_then(|p| p["routine"].as_str().map(str::to_string))
    });
    routines
        .iter()
        .filter(|(name, pat)| {
            matches(pat, kind) && own.as_ref().is_none_or(|o| o.as_deref() != Some(name))
        })
        .map(|(n, _)| n.as_str())
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
            let mut payloads = std::collections::HashMap::new();
            for ev in &events {
                let Some(id) = ev["id"].as_i64() else {
                    continue;
                };
                for name in fired_by(&routines, ev) {
                    pairs.push((name.to_string(), id));
                }
                payloads.insert(id, ev.clone());
            }
            match engine.history().claim_events(&pairs, next) {
                Ok(claimed) => {
                    for (run_id, name, id) in claimed {
                        let ev = payloads.get(&id);
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

    #[test]
    fn exact_prefix_and_no_self_loop() {
        let r = vec![
            ("a".to_string(), "watch.switch.*".to_string()),
            ("b".to_string(), "watch.switch.committed".to_string()),
            ("c".to_string(), "routine.*".to_string()),
        ];
        let ev = |t: &str, p: Value| json!({ "type": t, "payload": p.to_string() });
        assert_eq!(
            fired_by(&r, &ev("watch.switch.committed", json!({}))),
            ["a", "b"]
        );
        assert_eq!(
            fired_by(&r, &ev("watch.switch.rolled-back", json!({}))),
            ["a"]
        );
        assert!(fired_by(&r, &ev("watch.switchx", json!({}))).is_empty());
        assert_eq!(
            fired_by(&r, &ev("routine.run.finished", json!({"routine": "a"}))),
            ["c"]
        );
        assert!(fired_by(&r, &ev("routine.run.finished", json!({"routine": "c"}))).is_empty());
    }
}
