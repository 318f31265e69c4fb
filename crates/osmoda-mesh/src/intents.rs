//! What mesh owes agentd and osmoda-watch, made durable: a peer record (pairing, a peer's
//! identity hand-over) or a removal is written into `mesh.db` (`intents`) **before** agentd is
//! asked to commit it, becomes an owed switch of `HEAD` in the same transaction that drops the
//! record once the commit landed, and is forgotten only when osmoda-watch has taken a switch
//! that covers it. A crash or restart at any point, a switch queued behind a running one, or
//! agentd or watch not answering leaves the intent in `mesh.db`; [`run`] finishes it (at
//! start-up and whenever there is work), the way `osmoda-generations` finishes a mutation's
//! intent. Retrying a record is safe: agentd answers that a tree already holding it is
//! unchanged.
//!
//! `OSMODA_MESH_PAUSE_IN=<point>` (tests): the daemon stops at one of [`PAUSE_POINTS`], writes
//! `<state_dir>/paused-in-<point>` and waits there, so a test can `kill -9` it at that point.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use osmoda_daemon::shutdown::Shutdown;
use serde_json::{json, Value};

use crate::error::MeshError;
use crate::identity::Keys;
use crate::store::Owed;
use crate::AppState;

/// Where `OSMODA_MESH_PAUSE_IN` may stop the daemon: the record's intent saved (nothing asked
/// yet); agentd unreachable, the record owed; the record committed, its switch owed, not begun;
/// watch busy, the switch queued; a rotation's new identity and hand-overs sealed, none sent.
pub const PAUSE_POINTS: [&str; 5] = [
    "record-intent",
    "record-owed",
    "record-committed",
    "switch-queued",
    "rotate-sealed",
];

/// Longest wait between two attempts while agentd or watch does not answer.
const MAX_RETRY: Duration = Duration::from_secs(30);

/// The in-memory side of the intents: which ones a request is working on, and the wake-up of
/// the task that finishes the others.
#[derive(Default)]
pub struct Intents {
    claimed: Mutex<HashSet<i64>>,
    wake: tokio::sync::Notify,
    /// One "read the owed switches, begin one, forget them" at a time.
    switching: tokio::sync::Mutex<()>,
}

/// Holds intent `seq` for the request working on it; [`run`] leaves it alone meanwhile.
struct Claim<'a>(&'a Intents, i64);

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

impl Intents {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<i64>> {
        self.claimed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn claim(&self, seq: i64) -> Option<Claim<'_>> {
        self.lock().insert(seq).then_some(Claim(self, seq))
    }

    /// Asks [`run`] to look at the intents now.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

/// Records peer `name` as a generation: intent, commit, owed switch, switch (or queued).
/// Returns (agentd's answer, watch's answer).
///
/// # Errors
/// `Unavailable` when agentd did not answer: the record stays owed and [`run`] writes it when
/// agentd answers (the caller keeps its hold on the name). Any other error: agentd or watch
/// refused; nothing is owed any more.
pub async fn record(
    st: &AppState,
    name: &str,
    endpoint: &str,
    keys: &Keys,
    reason: &str,
) -> Result<(Value, Value), MeshError> {
    let pk = keys.encode();
    let seq = st.store.intend_record(name, endpoint, &pk, reason)?;
    let claim = st.intents.claim(seq);
    st.pause("record-intent").await;
    let edit = match st.agentd.set_peer(name, endpoint, &pk, reason).await {
        Ok(edit) => edit,
        Err(MeshError::Unavailable(why)) => {
            drop(claim);
            st.intents.wake();
            st.pause("record-owed").await;
            return Err(MeshError::Unavailable(format!(
                "{why}; the record of peer {name} is kept and written as soon as agentd answers"
            )));
        }
        Err(e) => {
            st.store.drop_intent(seq)?;
            return Err(e);
        }
    };
    st.store.owe_switch(reason, Some(seq))?;
    drop(claim);
    st.pause("record-committed").await;
    Ok((edit, apply(st, reason).await?))
}

/// Removes peer `name` from the tree (agentd's gate may ask for a person's approval) and
/// switches. The switch is owed before the commit is asked for, so a crash after the commit
/// still applies it.
///
/// # Errors
/// As [`crate::agentd::Agentd::unset_peer`]; nothing is owed when it failed.
pub async fn remove(
    st: &AppState,
    name: &str,
    reason: &str,
    approval: Option<&str>,
) -> Result<(Value, Value), MeshError> {
    let seq = st.store.owe_switch(reason, None)?;
    let claim = st.intents.claim(seq);
    let edit = match st.agentd.unset_peer(name, reason, approval).await {
        Ok(edit) => edit,
        Err(e) => {
            st.store.drop_intent(seq)?;
            return Err(e);
        }
    };
    drop(claim);
    Ok((edit, apply(st, reason).await?))
}

/// Begins the owed switch now, or answers that it is queued (another switch runs, or watch
/// does not answer): [`run`] begins it as soon as watch takes one.
///
/// # Errors
/// Watch refused the switch for good (its answer); the owed switches are then forgotten.
async fn apply(st: &AppState, plan: &str) -> Result<Value, MeshError> {
    let _one = st.intents.switching.lock().await;
    let upto = owed_switches(st)?.map_or(0, |(upto, _)| upto);
    match st.agentd.begin_switch(plan).await {
        Ok(s) => {
            st.store.switches_begun(upto)?;
            Ok(s)
        }
        Err(e @ (MeshError::Conflict(_) | MeshError::Unavailable(_))) => {
            st.intents.wake();
            st.pause("switch-queued").await;
            let now = match e {
                MeshError::Conflict(why) => format!("another switch is running ({why})"),
                other => format!("osmoda-watch cannot begin it now ({other})"),
            };
            Ok(json!({
                "state": "queued",
                "id": null,
                "detail": format!("{now}; this change is committed, and mesh keeps the switch it owes and begins a switch of HEAD as soon as osmoda-watch takes one"),
            }))
        }
        Err(e) => {
            st.store.switches_begun(upto)?;
            Err(e)
        }
    }
}

/// The owed switches a switch begun now covers: those before the first one a request is still
/// committing (its switch must not begin before its commit). Returns the largest of them and
/// how many they are; `None` when there are none.
fn owed_switches(st: &AppState) -> Result<Option<(i64, usize)>, MeshError> {
    let claimed = st.intents.lock().clone();
    let ready: Vec<i64> = st
        .store
        .intents()?
        .into_iter()
        .filter(|i| matches!(i.what, Owed::Switch { .. }))
        .map(|i| i.seq)
        .take_while(|s| !claimed.contains(s))
        .collect();
    Ok(ready.last().map(|m| (*m, ready.len())))
}

/// Holds the names of owed records for their keys (after a restart), so no other pairing
/// takes them while they are on their way into mesh.json.
///
/// # Errors
/// Database errors.
pub fn hold_names(st: &AppState) -> Result<(), MeshError> {
    for i in st.store.intents()? {
        let (name, keys, endpoint) = match i.what {
            Owed::Record {
                name,
                keys,
                endpoint,
            } => (name, keys, Some(endpoint)),
            Owed::Switch {
                name: Some(name),
                keys: Some(keys),
            } => (name, keys, None),
            Owed::Switch { .. } => continue,
        };
        if let Ok(k) = Keys::decode(&keys) {
            st.pending.hold(&name, k.x25519, endpoint);
        }
    }
    Ok(())
}

/// What one pass of [`run`] left.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Left {
    Nothing,
    /// A switch is running: look again in a second.
    Busy,
    /// agentd or watch did not answer: back off.
    Unanswered,
}

/// Finishes the owed intents: at start-up (what a crash left) and whenever woken, until
/// shutdown. Records are written (a tree that holds them already is fine), then one switch of
/// `HEAD` covers every owed switch.
pub async fn run(st: Arc<AppState>, mut shutdown: Shutdown) {
    let mut backoff = Duration::from_secs(1);
    loop {
        let left = match pass(&st).await {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("owed peer records and switches: {e}");
                Left::Unanswered
            }
        };
        let wait = match left {
            Left::Nothing => Duration::from_secs(3600),
            Left::Busy => Duration::from_secs(1),
            Left::Unanswered => backoff,
        };
        backoff = if left == Left::Unanswered {
            (backoff * 2).min(MAX_RETRY)
        } else {
            Duration::from_secs(1)
        };
        tokio::select! {
            _ = shutdown.wait() => return,
            () = st.intents.wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

async fn pass(st: &AppState) -> Result<Left, MeshError> {
    let mut left = Left::Nothing;
    for i in st.store.intents()? {
        let Owed::Record {
            name,
            endpoint,
            keys,
        } = i.what
        else {
            continue;
        };
        // After a live pairing's own attempt (it holds the pairing lock while it works).
        let _g = st.pairing.lock().await;
        let Some(_claim) = st.intents.claim(i.seq) else {
            continue;
        };
        if !st.store.intents()?.iter().any(|x| x.seq == i.seq) {
            continue;
        }
        match st.agentd.set_peer(&name, &endpoint, &keys, &i.reason).await {
            Ok(edit) => {
                st.store.owe_switch(&i.reason, Some(i.seq))?;
                st.agentd
                    .event(
                        "peer.recorded",
                        json!({ "peer": name, "rev": osmoda_config::tree_edit::landed_rev(&edit), "owed": true }),
                    )
                    .await;
            }
            Err(MeshError::Unavailable(why)) => {
                tracing::info!(peer = %name, "the owed record waits for agentd: {why}");
                left = left.max(Left::Unanswered);
            }
            Err(e) => {
                st.store.drop_intent(i.seq)?;
                if let Ok(k) = Keys::decode(&keys) {
                    st.pending.release(&name, &k.x25519);
                }
                tracing::error!(peer = %name, "the owed record was refused: {e}");
                st.agentd
                    .event(
                        "peer.record_failed",
                        json!({ "peer": name, "error": e.to_string(), "owed": true }),
                    )
                    .await;
            }
        }
    }
    let _one = st.intents.switching.lock().await;
    let Some((upto, owed)) = owed_switches(st)? else {
        let busy = st
            .store
            .intents()?
            .iter()
            .any(|i| matches!(i.what, Owed::Switch { .. }));
        return Ok(if busy { left.max(Left::Busy) } else { left });
    };
    let plan = format!("mesh: apply {owed} peer change(s) committed but not yet switched");
    match st.agentd.begin_switch(&plan).await {
        Ok(s) => {
            st.store.switches_begun(upto)?;
            st.agentd
                .event("switch.begun", json!({ "id": s.get("id"), "owed": owed }))
                .await;
        }
        Err(MeshError::Conflict(_)) => left = left.max(Left::Busy),
        Err(MeshError::Unavailable(_)) => left = left.max(Left::Unanswered),
        Err(e) => {
            st.store.switches_begun(upto)?;
            tracing::error!("osmoda-watch refused the owed switch: {e}");
            st.agentd
                .event(
                    "switch.refused",
                    json!({ "owed": owed, "error": e.to_string() }),
                )
                .await;
        }
    }
    Ok(left)
}

/// `OSMODA_MESH_PAUSE_IN` read once per process.
pub(crate) fn pause_point() -> Option<String> {
    std::env::var("OSMODA_MESH_PAUSE_IN")
        .ok()
        .filter(|p| PAUSE_POINTS.contains(&p.as_str()))
}
