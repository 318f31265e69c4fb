//! agentd signs ledger checkpoints every N events and at shutdown, writes them outside the
//! database and records them in the ledger; the database is checked against them and the event
//! a recomputed chain hides is named (agentctl's side: `agentctl/tests/verify_ledger.rs`).

mod common;

use std::time::Duration;

use common::{ClientExt, Daemon};
use osmoda_ledger::{verify_checkpoints, CheckpointFile};
use serde_json::json;

fn settings(every: u64) -> agentd::Settings {
    agentd::Settings {
        checkpoint: Some(agentd::checkpoints::CheckpointSettings {
            every_events: every,
            interval: Duration::from_secs(3600),
            key_file: None,
        }),
        ..agentd::Settings::default()
    }
}

/// Waits (bounded, on the ledger's commit signal) until `n` checkpoint events are recorded.
async fn checkpoint_events(d: &Daemon, n: usize) -> Vec<osmoda_ledger::Event> {
    let mut commits = d.state.commits.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let q = osmoda_ledger::Query {
            kind: Some("agentd.checkpoint".into()),
            ..Default::default()
        };
        let found = d.state.ledger.query(&q).expect("query");
        if found.len() >= n {
            return found;
        }
        tokio::time::timeout_at(deadline, commits.changed())
            .await
            .expect("checkpoints in time")
            .expect("ledger open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_every_n_events_and_at_shutdown_anchor_the_ledger() {
    let d = Daemon::start_with(settings(5)).await;
    let c = d.agent();
    for i in 0..12 {
        c.post_ok(
            "/events/append",
            &json!({ "type": "test.note", "daemon": "tester", "payload": { "i": i } }),
        )
        .await;
    }
    let events = checkpoint_events(&d, 2).await;
    let payload: serde_json::Value = serde_json::from_str(&events[0].payload).expect("json");
    assert!(payload["note"]
        .as_str()
        .expect("note")
        .contains("/osmoda-ledger\n"));
    assert_eq!(events[0].actor, "agentd");
    let newest = c.get_ok("/ledger/checkpoint").await;
    let vkey_api = newest["vkey"].as_str().expect("vkey").to_owned();
    let cp: osmoda_ledger::SignedCheckpoint =
        serde_json::from_value(newest["checkpoint"].clone()).expect("checkpoint");
    osmoda_ledger::verify_signed(&cp, &vkey_api).expect("the served checkpoint verifies");
    let state = d.state.state_dir.clone();
    let file = CheckpointFile::new(state.join("checkpoints.jsonl"));
    let vkey = std::fs::read_to_string(state.join("checkpoint.vkey")).expect("vkey");
    let mode = std::fs::metadata(state.join("checkpoint.key"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("key");
    assert_eq!(mode, 0o600, "the generated key is private");
    // One more event, then a clean stop (and a start without checkpoints, which keeps the
    // directory): the last checkpoint covers it.
    c.post_ok(
        "/events/append",
        &json!({ "type": "test.note", "daemon": "tester", "payload": { "last": true } }),
    )
    .await;
    let d = d.restart().await;
    let cps = file.read().expect("checkpoints");
    let db = state.join("ledger.db");
    let events = osmoda_ledger::verify(&db).expect("chain").events;
    let newest = cps.last().expect("a checkpoint");
    assert_eq!(
        newest.size + 1,
        events,
        "the shutdown checkpoint covers all but its own record"
    );
    let report = verify_checkpoints(&db, &cps, vkey.trim()).expect("verify");
    assert!(report.is_ok(), "{report:?}");

    // Rewrite event 3 and recompute the whole chain: the chain check passes, the checkpoints
    // do not, and event 3 is named.
    let conn = rusqlite::Connection::open(&db).expect("sqlite");
    conn.execute("UPDATE events SET payload = '{\"i\":99}' WHERE id = 3", [])
        .expect("tamper");
    let rows: Vec<(i64, String, String, String, String)> = conn
        .prepare("SELECT id, ts, type, actor, payload FROM events ORDER BY id")
        .expect("prepare")
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    let mut prev = osmoda_ledger::GENESIS_HASH.to_owned();
    for (id, ts, kind, actor, payload) in rows {
        let h = osmoda_ledger::event_hash(id, &ts, &kind, &actor, &payload, &prev);
        conn.execute(
            "UPDATE events SET prev_hash = ?1, hash = ?2 WHERE id = ?3",
            (&prev, &h, id),
        )
        .expect("recompute");
        prev = h;
    }
    assert!(osmoda_ledger::verify(&db).expect("chain").is_ok());
    let bad = verify_checkpoints(&db, &cps, vkey.trim())
        .expect("verify")
        .first_bad
        .expect("detected");
    assert!(bad.to_string().contains("event 3 was changed"), "{bad}");
    d.stop().await;
}

#[tokio::test]
async fn a_configured_key_file_that_is_not_a_key_stops_agentd_with_the_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("bad.key");
    std::fs::write(&key, "not a key\n").expect("write");
    let mut s = settings(5);
    if let Some(c) = s.checkpoint.as_mut() {
        c.key_file = Some(key);
    }
    let err = agentd::AppState::open(dir.path().join("state"), s, None)
        .err()
        .expect("refused");
    assert!(
        format!("{err:#}").contains("agentctl ledger keygen"),
        "{err:#}"
    );
}
