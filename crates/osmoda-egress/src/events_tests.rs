//! The allow window with a real spool (osmoda-client's `Reporter`, fsync'ed files, no agentd):
//! a first is in the spool when `allow` returns, repeats only at the window's end.

use super::*;

fn spooled(dir: &std::path::Path) -> Vec<(String, Value)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "json")
                && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        })
        .collect();
    files.sort();
    files
        .iter()
        .map(|p| {
            let v: Value = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            (
                v["type"].as_str().unwrap().to_string(),
                v["payload"].clone(),
            )
        })
        .collect()
}

fn allows(dir: &std::path::Path) -> Vec<Value> {
    spooled(dir)
        .into_iter()
        .filter(|(t, _)| t == "egress.allow")
        .map(|(_, p)| p)
        .collect()
}

fn decision(token: &str, target: &str, host: &str, port: u16) -> Decision {
    Decision {
        reason: "allowed".into(),
        target: target.into(),
        token_id: Some(token.into()),
        subject: Some("agent".into()),
        capability: Some("web".into()),
        host: Some(host.into()),
        port: Some(port),
        ..Decision::default()
    }
}

async fn allow(ev: &Events, token: &str, target: &str, host: &str, port: u16) {
    ev.allow(&decision(token, target, host, port))
        .await
        .unwrap();
}

fn events(dir: &std::path::Path, max_keys: usize) -> Events {
    let reporter = Reporter::open(dir.join("no-agentd.sock"), dir, "egress").unwrap();
    Events::with_budgets(Some(reporter), 50, 50)
        .with_allow_window(Duration::from_secs(3600), max_keys)
}

#[tokio::test]
async fn a_first_is_durable_at_once_and_repeats_at_the_windows_end() {
    let dir = tempfile::tempdir().unwrap();
    let ev = events(dir.path(), MAX_WINDOW_KEYS);
    allow(&ev, "t1", "API.example.org.:443", "api.example.org", 443).await;
    let a = allows(dir.path());
    assert_eq!(a.len(), 1, "{a:#?}");
    assert_eq!(a[0]["first"], true);
    assert_eq!(a[0]["count"], 1);
    assert_eq!(a[0]["target"], "API.example.org.:443");
    assert_eq!(a[0]["host"], "api.example.org");
    assert_eq!(a[0]["port"], 443);
    // The same key however it was spelled: repeats, nothing written yet.
    for _ in 0..4 {
        allow(&ev, "t1", "api.example.org:443", "api.example.org", 443).await;
    }
    assert_eq!(allows(dir.path()).len(), 1);
    // Another port, another host, another token: each a first of its own.
    allow(&ev, "t1", "api.example.org:8443", "api.example.org", 8443).await;
    allow(&ev, "t1", "www.example.org:443", "www.example.org", 443).await;
    allow(&ev, "t2", "api.example.org:443", "api.example.org", 443).await;
    let a = allows(dir.path());
    assert_eq!(a.len(), 4, "{a:#?}");
    assert!(a.iter().all(|p| p["first"] == true && p["count"] == 1));
    // The window's end: one event with the four repeats, for the first's key.
    ev.flush().await;
    let a = allows(dir.path());
    assert_eq!(a.len(), 5, "{a:#?}");
    let rep = &a[4];
    assert_eq!(
        (&rep["first"], &rep["count"], &rep["token_id"], &rep["port"]),
        (&json!(false), &json!(4), &json!("t1"), &json!(443)),
        "{rep:#?}"
    );
    assert_eq!(rep["window_secs"], 3600);
    // A new window: the key's next allow is a first again; a flush with no repeats writes
    // nothing.
    ev.flush().await;
    assert_eq!(allows(dir.path()).len(), 5);
    allow(&ev, "t1", "api.example.org:443", "api.example.org", 443).await;
    let a = allows(dir.path());
    assert_eq!((a.len(), &a[5]["first"]), (6, &json!(true)));
    let total: u64 = a.iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert_eq!(total, 9);
}

#[tokio::test]
async fn concurrent_firsts_of_one_key_are_one_first_and_repeats() {
    let dir = tempfile::tempdir().unwrap();
    let ev = std::sync::Arc::new(events(dir.path(), MAX_WINDOW_KEYS));
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let ev = std::sync::Arc::clone(&ev);
            let spool = dir.path().to_path_buf();
            tokio::spawn(async move {
                allow(&ev, "t1", "a.test:443", "a.test", 443).await;
                // Whoever returned, the first is durable by now.
                assert!(allows(&spool).iter().any(|p| p["first"] == true));
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    ev.flush().await;
    let a = allows(dir.path());
    assert_eq!(a.len(), 2, "{a:#?}");
    assert_eq!(a[0]["first"], true);
    assert_eq!(a[1]["count"], 19);
}

#[tokio::test]
async fn a_full_window_writes_its_repeats_early_and_drops_none() {
    let dir = tempfile::tempdir().unwrap();
    let ev = events(dir.path(), 3);
    let mut sent = 0u64;
    for _ in 0..3 {
        for host in ["a.test", "b.test", "c.test", "d.test", "e.test"] {
            for _ in 0..2 {
                ev.allow(&decision("t1", &format!("{host}:443"), host, 443))
                    .await
                    .unwrap();
                sent += 1;
            }
        }
        // Never more than the cap (plus the first that found it full) remembered.
        assert!(ev.allows.lock().unwrap().seen.len() <= 4);
    }
    // Repeats were written before the window's end, when the fourth key came.
    assert!(allows(dir.path()).iter().any(|p| p["first"] == false));
    ev.flush().await;
    let a = allows(dir.path());
    let total: u64 = a.iter().map(|p| p["count"].as_u64().unwrap()).sum();
    assert_eq!(total, sent, "{a:#?}");
}
