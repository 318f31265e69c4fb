//! A note and its ledger event are two writes (issue 17 review finding 6): `kill -9` of the
//! real agentd binary between them must not leave a note the ledger never hears of. Each write
//! is journaled first; at the next start the event of every journaled section its note holds
//! is recorded (once: the journal entry's dedup key), and entries of sections never written
//! are dropped.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::Process as Agentd;
use serde_json::{json, Value};

fn agent(a: &Agentd) -> osmoda_client::Client {
    osmoda_client::Client::new(&a.socket)
}

/// The `memory.stored` events: (summary, recovered).
async fn stored_events(a: &Agentd) -> Vec<(String, bool)> {
    let r = agent(a)
        .get("/events/log?type=memory.stored&limit=1000")
        .await
        .expect("log");
    let events = r.body.as_array().cloned().unwrap_or_default();
    events
        .iter()
        .map(|e| {
            let p: Value = match &e["payload"] {
                Value::String(s) => serde_json::from_str(s).expect("payload"),
                other => other.clone(),
            };
            (
                p["summary"].as_str().unwrap_or("").to_string(),
                p["recovered"] == json!(true),
            )
        })
        .collect()
}

/// The summaries of the sections the daily notes hold.
fn stored_sections(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir.join("state/memory/memory"))
        .map(|rd| rd.flatten().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let text = std::fs::read_to_string(e.path()).expect("note");
        out.extend(
            text.lines()
                .filter_map(|l| l.strip_prefix("## "))
                .map(str::to_string),
        );
    }
    out.sort();
    out
}

fn journal(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir.join("state/memory-journal"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// A crash after the note and before its event, set up by hand: the journal entry agentd
/// writes first, and the section in its note. The next start records the event (marked
/// `recovered`), once, and drops an entry whose section never reached its note.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_note_written_before_a_crash_gets_its_event_at_the_next_start() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let section = "## written before the crash\nat: 2026-11-30T10:00:00Z\n\nthe note's body";
    std::fs::create_dir_all(dir.join("state/memory/memory")).expect("mkdir");
    std::fs::write(
        dir.join("state/memory/memory/2026-11-30.md"),
        format!("# 2026-11-30\n\n{section}\n"),
    )
    .expect("note");
    std::fs::create_dir_all(dir.join("state/memory-journal")).expect("mkdir");
    for (seq, section, summary) in [
        (41u64, section, "written before the crash"),
        (42, "## never written\nat: 2026-11-30T10:00:01Z\n\nx", "never written"),
    ] {
        let entry = json!({
            "note": {"path": "memory/2026-11-30.md", "title": "2026-11-30", "at": "2026-11-30T10:00:00Z", "section": section},
            "kind": "memory.stored", "actor": "uid=0,pid=1",
            "payload": {"path": "memory/2026-11-30.md", "at": "2026-11-30T10:00:00Z", "summary": summary, "category": null},
            "seq": seq,
        });
        std::fs::write(
            dir.join(format!("state/memory-journal/{seq}.json")),
            entry.to_string(),
        )
        .expect("entry");
    }
    let a = Agentd::spawn(dir);
    assert_eq!(
        stored_events(&a).await,
        [("written before the crash".to_string(), true)]
    );
    assert!(journal(dir).is_empty(), "{:?}", journal(dir));
    drop(a);
    // A second start finds nothing left to do.
    let a = Agentd::spawn(dir);
    assert_eq!(stored_events(&a).await.len(), 1);
}

/// `kill -9` at varied moments of a store, six times: after each restart every section of
/// the notes has exactly one `memory.stored` event and every event its section.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_stores_leaves_no_note_without_its_event() {
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let mut recovered = 0;
    for run in 0..6u64 {
        let mut a = Agentd::spawn(dir);
        let client = agent(&a);
        let writer = tokio::spawn(async move {
            for i in 0.. {
                let body = json!({"summary": format!("run {run} note {i}"), "detail": "x".repeat(4000)});
                if client.post("/memory/store", &body).await.is_err() {
                    break;
                }
            }
        });
        // Kill as soon as a journal entry is on disk in even runs, after a few ms in odd ones.
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        if run % 2 == 0 {
            while journal(dir).is_empty() {
                assert!(std::time::Instant::now() < deadline, "no journal entry");
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(20 + run * 7)).await;
        }
        a.kill9();
        let _ = writer.await;
        drop(a);
        let a = Agentd::spawn(dir);
        let events = stored_events(&a).await;
        recovered += events.iter().filter(|e| e.1).count();
        let mut summaries: Vec<String> = events.into_iter().map(|e| e.0).collect();
        summaries.sort();
        assert_eq!(summaries, stored_sections(dir), "run {run}");
        assert!(journal(dir).is_empty(), "run {run}: {:?}", journal(dir));
    }
    println!("events recorded at a restart (a kill between note and event): {recovered}");
}
