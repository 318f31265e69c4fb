//! Appending, reading back, searching, dedup and reopening a real ledger in a temp dir.

use osmoda_ledger::{event_hash, verify, Ledger, LedgerError, NewEvent, Query, GENESIS_HASH};

fn ev(kind: &str, payload: &str) -> NewEvent {
    NewEvent::new(kind, "agentd[uid=0,pid=1,exe=agentd]", payload)
}

#[tokio::test]
async fn append_links_and_hashes_rows() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ledger = Ledger::open(&dir.path().join("ledger.db"))?;
    let a = ledger
        .append(ev("config.edit", r#"{"file":"osmoda.nix"}"#))
        .await?;
    let b = ledger
        .append(ev("svc.restart", r#"{"unit":"nginx"}"#))
        .await?;
    assert_eq!((a.id, b.id), (1, 2));
    assert_eq!(a.prev_hash, GENESIS_HASH);
    assert_eq!(b.prev_hash, a.hash);
    assert_eq!(
        a.hash,
        event_hash(a.id, &a.ts, &a.kind, &a.actor, &a.payload, &a.prev_hash)
    );
    assert_eq!(ledger.get(2)?, Some(b.clone()));
    assert_eq!(ledger.get(3)?, None);
    let report = verify(ledger.path())?;
    assert_eq!((report.events, report.first_bad), (2, None));
    Ok(())
}

#[tokio::test]
async fn query_filters() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ledger = Ledger::open(&dir.path().join("ledger.db"))?;
    for i in 0..5 {
        ledger
            .append(ev("config.edit", &format!("{{\"n\":{i}}}")))
            .await?;
        ledger
            .append(NewEvent::new(
                "wallet.send",
                "keyd",
                format!("{{\"n\":{i}}}"),
            ))
            .await?;
    }
    let ids = |v: Vec<osmoda_ledger::Event>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let q = |kind: Option<&str>, actor: Option<&str>| Query {
        kind: kind.map(Into::into),
        actor: actor.map(Into::into),
        ..Query::default()
    };
    assert_eq!(
        ids(ledger.query(&q(Some("config.edit"), None))?),
        vec![1, 3, 5, 7, 9]
    );
    assert_eq!(
        ids(ledger.query(&q(Some("config.*"), None))?),
        vec![1, 3, 5, 7, 9]
    );
    assert_eq!(
        ids(ledger.query(&q(Some("config"), None))?),
        Vec::<i64>::new()
    );
    assert_eq!(
        ids(ledger.query(&q(None, Some("key*")))?),
        vec![2, 4, 6, 8, 10]
    );
    assert_eq!(ids(ledger.query(&q(Some("*"), None))?).len(), 10);
    let page = Query {
        after_id: Some(4),
        limit: Some(3),
        ..Query::default()
    };
    assert_eq!(ids(ledger.query(&page)?), vec![5, 6, 7]);
    let newest = Query {
        limit: Some(2),
        descending: true,
        ..Query::default()
    };
    assert_eq!(ids(ledger.query(&newest)?), vec![10, 9]);
    let older = Query {
        before_id: Some(9),
        limit: Some(2),
        descending: true,
        ..Query::default()
    };
    assert_eq!(ids(ledger.query(&older)?), vec![8, 7]);
    let future = Query {
        since: Some("2999-01-01".into()),
        ..Query::default()
    };
    assert!(ledger.query(&future)?.is_empty());
    let past = Query {
        since: Some("2000-01-01T00:00:00Z".into()),
        ..Query::default()
    };
    assert_eq!(ledger.query(&past)?.len(), 10);
    let bad = Query {
        limit: Some(0),
        ..Query::default()
    };
    assert!(matches!(
        ledger.query(&bad),
        Err(LedgerError::InvalidQuery(_))
    ));
    Ok(())
}

#[tokio::test]
async fn full_text_search_over_payloads() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ledger = Ledger::open(&dir.path().join("ledger.db"))?;
    ledger
        .append(ev(
            "svc.restart",
            r#"{"unit":"nginx.service","reason":"oom killer"}"#,
        ))
        .await?;
    ledger
        .append(ev("svc.restart", r#"{"unit":"postgresql.service"}"#))
        .await?;
    ledger
        .append(ev("note", r#"{"text":"nginx config reloaded"}"#))
        .await?;
    let ids = |v: Vec<osmoda_ledger::Event>| v.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(ids(ledger.search("nginx", 10)?), vec![3, 1]);
    assert_eq!(ids(ledger.search("nginx oom", 10)?), vec![1]);
    assert_eq!(ids(ledger.search("postgre*", 10)?), vec![2]);
    assert_eq!(ids(ledger.search("nginx", 1)?), vec![3]);
    assert_eq!(ids(ledger.search_before("nginx", 1, Some(3))?), vec![1]);
    assert!(ledger.search_before("nginx", 1, Some(1))?.is_empty());
    // FTS syntax in user text is taken literally instead of failing.
    assert!(ledger.search("nginx AND (", 10)?.is_empty());
    assert!(matches!(
        ledger.search("   ", 10),
        Err(LedgerError::InvalidQuery(_))
    ));
    Ok(())
}

#[tokio::test]
async fn dedup_returns_the_first_event_and_writes_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ledger = Ledger::open(&dir.path().join("ledger.db"))?;
    let first = ledger
        .append(ev("watch.alert", r#"{"n":1}"#).with_dedup("stream-a", 7))
        .await?;
    let again = ledger
        .append(ev("watch.alert", r#"{"n":1}"#).with_dedup("stream-a", 7))
        .await?;
    assert_eq!(first, again);
    let other_seq = ledger
        .append(ev("watch.alert", r#"{"n":2}"#).with_dedup("stream-a", 8))
        .await?;
    let other_stream = ledger
        .append(ev("watch.alert", r#"{"n":1}"#).with_dedup("stream-b", 7))
        .await?;
    assert_eq!((other_seq.id, other_stream.id), (2, 3));
    assert_eq!(ledger.head()?.events, 3);
    // The key can be looked up without appending: the event it belongs to, or none.
    assert_eq!(ledger.dedup_event("stream-a", 7)?, Some(first));
    assert_eq!(ledger.dedup_event("stream-b", 7)?, Some(other_stream));
    assert_eq!(ledger.dedup_event("stream-a", 9)?, None);
    assert_eq!(ledger.dedup_event("stream-c", 7)?, None);
    assert_eq!(ledger.dedup_event("stream-a", u64::MAX)?, None);
    assert_eq!(ledger.head()?.events, 3);
    Ok(())
}

#[tokio::test]
async fn a_reused_dedup_key_with_other_content_suppresses_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ledger = Ledger::open(&dir.path().join("ledger.db"))?;
    // Someone else got (stream-a, 1) in first, with their own content.
    let squatter = ledger
        .append(ev("watch.switch.begin", r#"{"forged":true}"#).with_dedup("stream-a", 1))
        .await?;
    let other_type = ledger
        .append(ev("other.type", r#"{"forged":true}"#).with_dedup("stream-a", 1))
        .await?;
    let real = ledger
        .append(ev("watch.switch.begin", r#"{"rev":"abc"}"#).with_dedup("stream-a", 1))
        .await?;
    assert_eq!((squatter.id, other_type.id, real.id), (1, 2, 3));
    // The key now belongs to the last event recorded with it: its own retry is a duplicate.
    let retry = ledger
        .append(ev("watch.switch.begin", r#"{"rev":"abc"}"#).with_dedup("stream-a", 1))
        .await?;
    assert_eq!(retry, real);
    assert_eq!(ledger.head()?.events, 3);
    Ok(())
}

#[test]
fn reopen_continues_the_chain() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("state/ledger.db");
    let first = {
        let ledger = Ledger::open(&path)?;
        ledger.append_blocking(ev("boot", "{}"))?;
        ledger.append_blocking(ev("boot", "{}").with_dedup("s", 1))?
    };
    let ledger = Ledger::open(&path)?;
    let next = ledger.append_blocking(ev("boot", "{}"))?;
    assert_eq!(next.id, first.id + 1);
    assert_eq!(next.prev_hash, first.hash);
    // The dedup table survives the reopen as well.
    assert_eq!(
        ledger.append_blocking(ev("boot", "{}").with_dedup("s", 1))?,
        first
    );
    assert!(verify(&path)?.is_ok());
    Ok(())
}

#[tokio::test]
async fn a_seed_schema_ledger_is_adopted_indexed_and_continued() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ledger.db");
    {
        // A ledger written by another implementation with only the seed's events table.
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute_batch(
            "CREATE TABLE events (id INTEGER PRIMARY KEY AUTOINCREMENT,
               ts TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')), type TEXT NOT NULL,
               actor TEXT NOT NULL, payload TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);",
        )?;
        let mut prev = GENESIS_HASH.to_owned();
        for (id, payload) in [(1, r#"{"unit":"sshd"}"#), (2, r#"{"unit":"nginx"}"#)] {
            let ts = "2026-01-01T00:00:00.000Z";
            let h = event_hash(id, ts, "svc.start", "seed", payload, &prev);
            conn.execute(
                "INSERT INTO events (id, ts, type, actor, payload, prev_hash, hash) VALUES (?1, ?2, 'svc.start', 'seed', ?3, ?4, ?5)",
                (id, ts, payload, &prev, &h),
            )?;
            prev = h;
        }
    }
    let ledger = Ledger::open(&path)?;
    assert_eq!(
        ledger
            .search("nginx", 10)?
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        vec![2]
    );
    let next = ledger
        .append(ev("svc.start", r#"{"unit":"nginx"}"#))
        .await?;
    assert_eq!(next.id, 3);
    assert_eq!(ledger.search("nginx", 10)?.len(), 2);
    assert!(verify(&path)?.is_ok());
    Ok(())
}

fn indexed_upto(path: &std::path::Path) -> anyhow::Result<i64> {
    let conn = rusqlite::Connection::open(path)?;
    Ok(conn.query_row("SELECT indexed_upto FROM fts_progress", [], |r| r.get(0))?)
}

#[tokio::test]
async fn the_search_index_catches_up_when_idle_and_after_a_crash() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(&path)?;
    for i in 0..10 {
        ledger
            .append(ev("note", &format!(r#"{{"text":"entry {i} marker{i}"}}"#)))
            .await?;
    }
    // Indexing happens off the append path: once the writer is idle, the index catches up by
    // itself (no search needed).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while indexed_upto(&path)? < 10 {
        assert!(
            std::time::Instant::now() < deadline,
            "index never caught up"
        );
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    drop(ledger);

    // As if the process died after appends but before indexing them: the watermark is behind
    // and the index is empty. Searches are still complete after reopening.
    {
        let conn = rusqlite::Connection::open(&path)?;
        conn.execute(
            "INSERT INTO events_fts (events_fts) VALUES ('delete-all')",
            [],
        )?;
        conn.execute("UPDATE fts_progress SET indexed_upto = 0", [])?;
    }
    let ledger = Ledger::open(&path)?;
    assert_eq!(ledger.search("marker7", 10)?.len(), 1);
    assert_eq!(ledger.search("entry", 100)?.len(), 10);
    let again = ledger
        .append(ev("note", r#"{"text":"fresh marker11"}"#))
        .await?;
    // A search right after an append sees it: search waits for the index.
    assert_eq!(ledger.search("marker11", 10)?, vec![again]);
    assert_eq!(indexed_upto(&path)?, 11);
    Ok(())
}
