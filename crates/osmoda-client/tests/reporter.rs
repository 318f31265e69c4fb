//! The spooling Reporter against a real HTTP server on a Unix socket in a temp dir.

mod support;

use osmoda_client::{Client, ClientError, Reporter, RetryPolicy, REJECTED_DIR};
use serde_json::json;
use std::path::Path;
use std::time::Duration;
use support::serve_append;

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(10),
        max: Duration::from_millis(100),
    }
}

fn open(socket: &Path, spool: &Path) -> Result<Reporter, ClientError> {
    Reporter::open_with(Client::new(socket), spool, "osmoda-watch", fast_retry())
}

fn spooled_files(spool: &Path) -> anyhow::Result<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(spool)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    Ok(names)
}

#[tokio::test]
async fn spool_survives_reopen_and_is_delivered_in_order() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (socket, spool) = (dir.path().join("agentd.sock"), dir.path().join("spool"));
    let stream = {
        let reporter = open(&socket, &spool)?;
        for i in 1..=5 {
            reporter.report("watch.check", json!({"i": i})).await?;
        }
        assert_eq!(reporter.pending()?, 5);
        assert!(matches!(
            reporter.flush().await,
            Err(ClientError::Connect { .. })
        ));
        reporter.stream().to_owned()
    };
    assert_eq!(
        spooled_files(&spool)?.len(),
        5,
        "events are on disk after the reporter is gone"
    );
    assert_eq!(spooled_files(&spool)?[0], "00000000000000000001.json");

    let mut server = serve_append(&socket, 0)?;
    let reporter = open(&socket, &spool)?;
    assert_eq!(reporter.stream(), stream, "the stream id is persisted");
    for i in 1..=5u64 {
        let ev = server.next_arrival().await?;
        assert_eq!(ev["dedup"], json!({"stream": stream, "seq": i}));
        assert_eq!(ev["payload"], json!({"i": i}));
        assert_eq!(
            (ev["type"].as_str(), ev["daemon"].as_str()),
            (Some("watch.check"), Some("osmoda-watch"))
        );
    }
    reporter.flush().await?;
    assert_eq!(reporter.pending()?, 0);
    // Sequence numbers continue after every file was delivered and deleted.
    reporter.report("watch.check", json!({"i": 6})).await?;
    assert_eq!(server.next_arrival().await?["dedup"]["seq"], json!(6));
    Ok(())
}

#[tokio::test]
async fn delivery_resumes_when_the_server_appears() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (socket, spool) = (dir.path().join("agentd.sock"), dir.path().join("spool"));
    let reporter = open(&socket, &spool)?;
    for i in 0..3 {
        reporter.report("mesh.peer", json!(i)).await?;
    }
    // No flush: the background task must keep retrying on its own.
    let mut server = serve_append(&socket, 0)?;
    for i in 0..3 {
        assert_eq!(server.next_arrival().await?["payload"], json!(i));
    }
    // Stop the server, report more, bring a new one up on the same path.
    drop(server);
    reporter.report("mesh.peer", json!(3)).await?;
    assert!(reporter.flush().await.is_err());
    let mut server = serve_append(&socket, 0)?;
    assert_eq!(server.next_arrival().await?["payload"], json!(3));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_acks_cause_retries_but_no_duplicates_and_order_holds() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (socket, spool) = (dir.path().join("agentd.sock"), dir.path().join("spool"));
    // Every 4th new event is recorded but answered 500: the reporter must resend it.
    let mut server = serve_append(&socket, 4)?;
    let reporter = std::sync::Arc::new(open(&socket, &spool)?);
    let n = 40u64;
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let r = std::sync::Arc::clone(&reporter);
        set.spawn(async move { r.report("routine.run", json!({"task": i})).await });
    }
    while let Some(res) = set.join_next().await {
        res??;
    }
    for _ in 0..n {
        server.next_arrival().await?;
    }
    // A flush after every arrival settles the last acks (and the resends of lost ones).
    reporter.flush().await?;
    assert_eq!(reporter.pending()?, 0);
    server.with(|rec| {
        let seqs: Vec<u64> = rec
            .events
            .iter()
            .filter_map(|e| e["dedup"]["seq"].as_u64())
            .collect();
        assert_eq!(
            seqs,
            (1..=n).collect::<Vec<_>>(),
            "each seq recorded once, in order"
        );
        let mut tasks: Vec<u64> = rec
            .events
            .iter()
            .filter_map(|e| e["payload"]["task"].as_u64())
            .collect();
        tasks.sort_unstable();
        assert_eq!(
            tasks,
            (0..n).collect::<Vec<_>>(),
            "every reported event arrived"
        );
        assert_eq!(rec.dropped_acks, 10);
        assert!(
            rec.duplicates >= rec.dropped_acks,
            "each lost ack was retried: {}",
            rec.duplicates
        );
    });
    Ok(())
}

#[tokio::test]
async fn a_malformed_event_is_set_aside_and_does_not_block_the_queue() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (socket, spool) = (dir.path().join("agentd.sock"), dir.path().join("spool"));
    let mut server = serve_append(&socket, 0)?;
    let reporter = open(&socket, &spool)?;
    reporter.report("x", json!({"malformed": true})).await?;
    reporter.report("x", json!({"ok": 1})).await?;
    assert_eq!(server.next_arrival().await?["payload"], json!({"ok": 1}));
    reporter.flush().await?;
    assert_eq!(reporter.pending()?, 0);
    let rejected = spool.join(REJECTED_DIR);
    assert!(rejected.join("00000000000000000001.json").exists());
    let reason = std::fs::read_to_string(rejected.join("00000000000000000001.json.reason"))?;
    assert!(
        reason.contains("HTTP 400") && reason.contains("payload is malformed"),
        "{reason}"
    );
    Ok(())
}

#[tokio::test]
async fn invalid_events_are_refused_and_not_spooled() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let spool = dir.path().join("spool");
    let reporter = open(&dir.path().join("agentd.sock"), &spool)?;
    let huge = json!("x".repeat(osmoda_client::MAX_PAYLOAD_BYTES));
    for (kind, payload) in [
        ("", json!(1)),
        ("a|b", json!(1)),
        ("a\nb", json!(1)),
        ("ok", huge),
    ] {
        let err = reporter.report(kind, payload).await.err();
        assert!(
            matches!(err, Some(ClientError::InvalidEvent(_))),
            "{kind:?}: {err:?}"
        );
    }
    assert_eq!(reporter.pending()?, 0);
    assert!(spooled_files(&spool)?.is_empty());
    assert!(matches!(
        Reporter::open("/x.sock", &dir.path().join("s2"), "bad|name"),
        Err(ClientError::InvalidEvent(_))
    ));
    Ok(())
}

#[tokio::test]
async fn one_spool_dir_one_reporter() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (socket, spool) = (dir.path().join("agentd.sock"), dir.path().join("spool"));
    let first = open(&socket, &spool)?;
    let second = open(&socket, &spool);
    assert!(
        matches!(second, Err(ClientError::SpoolLocked { .. })),
        "{second:?}"
    );
    drop(first);
    open(&socket, &spool)?;
    Ok(())
}
