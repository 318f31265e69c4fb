//! Durability under `kill -9`: every acknowledged event survives and the chain verifies.

mod common;

use std::sync::{Arc, Mutex};

use common::Process;
use serde_json::json;

#[test]
fn kill_dash_nine_mid_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut agentd = Process::spawn(dir.path());
    let acked: Arc<Mutex<Vec<(i64, String)>>> = Arc::default();

    // 8 concurrent writers append until agentd dies under them.
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let client = osmoda_client::Client::new(&agentd.socket);
            let acked = acked.clone();
            rt.spawn(async move {
                for i in 0.. {
                    let body = json!({"type": "load.test", "daemon": "crash-test", "payload": {"w": w, "i": i}});
                    match client.post("/events/append", &body).await {
                        Ok(r) if r.status == 200 => {
                            let id = r.body["id"].as_i64().expect("id");
                            let hash = r.body["hash"].as_str().expect("hash").to_string();
                            acked.lock().expect("lock").push((id, hash));
                        }
                        _ => break,
                    }
                }
            })
        })
        .collect();
    // Kill once a good number of events has been acknowledged (and more are in flight).
    while acked.lock().expect("lock").len() < 1500 {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    agentd.kill9();
    for w in writers {
        rt.block_on(w).expect("writer");
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(acked.len() >= 1500);

    // Restart on the same state: every acknowledged event is there, byte for byte.
    let agentd = Process::spawn(dir.path());
    let db = dir.path().join("state/ledger.db");
    let conn = rusqlite::Connection::open(&db).expect("open");
    let mut stmt = conn
        .prepare("SELECT hash FROM events WHERE id = ?1")
        .expect("prepare");
    for (id, hash) in &acked {
        let stored: String = stmt
            .query_row([id], |r| r.get(0))
            .expect("acknowledged event present");
        assert_eq!(&stored, hash, "event {id}");
    }
    // The chain continues after the restart and verifies end to end.
    let client = osmoda_client::Client::new(&agentd.socket);
    let r = rt
        .block_on(client.post(
            "/events/append",
            &json!({"type": "after.restart", "daemon": "crash-test", "payload": {}}),
        ))
        .expect("append");
    assert_eq!(r.status, 200);
    let report = osmoda_ledger::verify(&db).expect("verify");
    assert!(
        report.first_bad.is_none(),
        "chain broken: {:?}",
        report.first_bad
    );
    assert!(report.events > acked.len() as u64);
}
