//! The state files osmoda-watch reads at start, made unreadable, against the real binary: a
//! switch record, the event spool's counter or stream id that cannot be read is set aside (kept
//! byte for byte for a person, recorded in the ledger) and the daemon starts and answers; only
//! a broken `watch.json` (the configuration, where starting without it would silently drop the
//! health checks and watchers) stops the start, with a message naming the file.
#![allow(clippy::unwrap_used)]

mod common;

use common::Env;
use serde_json::json;

fn kept_under(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    (name, std::fs::read(e.path()).unwrap())
                })
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_switch_records_and_spool_state_are_set_aside_and_watch_serves() {
    let env = Env::new().await;
    let w = env.spawn(None);
    let s = env.begin(json!({"ttl_secs": 1})).await;
    let id = s["id"].as_u64().unwrap();
    assert_eq!(env.wait_terminal(id).await["state"], "committed");
    env.wait_events("watch.switch.committed", 1).await;
    w.stop();

    let sw = env.state_dir.join("switches");
    let good = std::fs::read(sw.join(format!("{id:010}.json"))).unwrap();
    let bad: [(u64, &[u8]); 4] = [
        (id + 1, &good[..good.len() / 2]), // truncated
        (id + 2, b"\x00\xff not json at all"),
        (id + 3, b"{}"),
        (id + 4, b""),
    ];
    for (n, bytes) in bad {
        std::fs::write(sw.join(format!("{n:010}.json")), bytes).unwrap();
    }
    let spool = env.state_dir.join("spool");
    let old_stream = std::fs::read_to_string(spool.join("stream")).unwrap();
    std::fs::write(spool.join("next_seq"), b"\xff\xfe").unwrap();

    // Before the fix the start failed at the first bad record (`corrupt switch record`).
    let w = env.spawn(None);
    let (status, health) = env.get("/health").await;
    assert_eq!(status, 200, "{health}");
    let (status, history) = env.get("/switch/history").await;
    assert_eq!(status, 200, "{history}");
    let ids: Vec<u64> = history
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [id]);

    // Each bad record is kept, byte for byte, and named in the ledger.
    let kept = kept_under(&sw.join("set-aside"));
    assert_eq!(
        kept.len(),
        bad.len(),
        "{:?}",
        kept.iter().map(|k| &k.0).collect::<Vec<_>>()
    );
    for ((name, bytes), (n, want)) in kept.iter().zip(bad) {
        assert!(name.starts_with(&format!("{n:010}.json.")), "{name}");
        assert_eq!(bytes, want, "{name}");
    }
    let evs = env.wait_events("watch.switch.set-aside", bad.len()).await;
    let mut recorded: Vec<u64> = evs
        .iter()
        .map(|e| {
            let p: serde_json::Value = serde_json::from_str(&e.payload).unwrap();
            assert!(
                p["reason"]
                    .as_str()
                    .unwrap()
                    .contains("corrupt switch record"),
                "{p}"
            );
            assert!(
                p["kept_as"].as_str().unwrap().contains("/set-aside/"),
                "{p}"
            );
            p["id"].as_u64().unwrap()
        })
        .collect();
    recorded.sort_unstable();
    assert_eq!(recorded, bad.map(|b| b.0));
    assert!(
        evs.iter().all(|e| e.actor.starts_with("osmoda-watch")),
        "{evs:?}"
    );

    // The spool's counter is kept too; a new stream began, so no key agentd holds repeats.
    let spooled = env.wait_events("watch.spool.set-aside", 1).await;
    assert!(
        spooled[0].payload.contains("next_seq is not text"),
        "{}",
        spooled[0].payload
    );
    let kept = kept_under(&spool.join(osmoda_client::REJECTED_DIR));
    assert!(
        kept.iter()
            .any(|(n, b)| n.starts_with("next_seq.") && b == b"\xff\xfe"),
        "{kept:?}"
    );
    assert!(kept
        .iter()
        .any(|(n, b)| n.starts_with("stream.") && *b == old_stream.as_bytes()));
    assert_ne!(
        std::fs::read_to_string(spool.join("stream")).unwrap(),
        old_stream
    );

    // Switching works, above every id the set-aside records had, and its events arrive.
    let s = env.begin(json!({"ttl_secs": 1})).await;
    assert_eq!(s["id"].as_u64().unwrap(), id + 5);
    assert_eq!(env.wait_terminal(id + 5).await["state"], "committed");
    env.wait_events("watch.switch.committed", 2).await;
    w.stop();

    // A clean restart sets nothing more aside.
    let w = env.spawn(None);
    assert_eq!(env.get("/health").await.0, 200);
    w.stop();
    assert_eq!(
        env.agentd.events("watch.switch.set-aside").await.len(),
        bad.len()
    );
    assert_eq!(env.agentd.events("watch.spool.set-aside").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_watch_json_stops_the_start_and_names_the_file() {
    let env = Env::new().await;
    let w = env.spawn(None);
    let s = env.begin(json!({"ttl_secs": 1})).await;
    env.wait_terminal(s["id"].as_u64().unwrap()).await;
    w.stop();
    // The rendered file is read-only (0444) inside a generation: replace the link with a copy.
    let cfg = env.etc_dir.join("osmoda/watch.json");
    let broken = env.dir.path().join("etc-broken");
    std::fs::create_dir_all(broken.join("osmoda")).unwrap();
    std::fs::write(
        broken.join("osmoda/watch.json"),
        b"{\"safe_switch\": {\"ttl_secs\": ",
    )
    .unwrap();
    std::fs::remove_file(env.etc_dir.join("osmoda")).unwrap();
    std::os::unix::fs::symlink(broken.join("osmoda"), env.etc_dir.join("osmoda")).unwrap();
    let out = env.command().output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&cfg.display().to_string()) || err.contains("watch.json"),
        "{err}"
    );
    assert!(err.contains("EOF") || err.contains("line 1"), "{err}");
    // Nothing was set aside or changed for it.
    assert!(!env.state_dir.join("switches/set-aside").exists());
}
