//! Bad input is rejected with a clear error and writes nothing.

use osmoda_ledger::{Ledger, LedgerError, NewEvent, MAX_PAYLOAD_BYTES};

#[tokio::test]
async fn invalid_events_write_nothing() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let ledger = Ledger::open(&dir.path().join("ledger.db"))?;
    ledger.append(NewEvent::new("ok", "ok", "{}")).await?;
    let big = format!("\"{}\"", "x".repeat(MAX_PAYLOAD_BYTES));
    let cases: Vec<(NewEvent, &str)> = vec![
        (
            NewEvent::new("", "a", "{}"),
            "invalid type \"\": it is empty",
        ),
        (
            NewEvent::new("a|b", "a", "{}"),
            "invalid type \"a|b\": it contains '|'",
        ),
        (
            NewEvent::new("a", "x\ny", "{}"),
            "invalid actor \"x\\ny\": it contains a control character",
        ),
        (
            NewEvent::new("a", "x".repeat(129), "{}"),
            "it is longer than 128 bytes",
        ),
        (
            NewEvent::new("a", "b", "{not json"),
            "invalid payload: not valid JSON",
        ),
        (
            NewEvent::new("a", "b", ""),
            "invalid payload: not valid JSON",
        ),
        (NewEvent::new("a", "b", big), "the limit is 1048576"),
        (
            NewEvent::new("a", "b", "{}").with_dedup("s|t", 1),
            "invalid dedup.stream",
        ),
        (
            NewEvent::new("a", "b", "{}").with_dedup("s", u64::MAX),
            "invalid dedup key",
        ),
    ];
    for (ev, expected) in cases {
        let err = match ledger.append(ev.clone()).await {
            Ok(e) => anyhow::bail!("{ev:?} was accepted as {e:?}"),
            Err(e) => e,
        };
        assert!(
            matches!(
                err,
                LedgerError::InvalidLabel { .. }
                    | LedgerError::InvalidPayload(_)
                    | LedgerError::InvalidDedup(_)
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains(expected),
            "{err} should contain {expected}"
        );
        assert!(ledger.append_blocking(ev).is_err());
    }
    assert_eq!(ledger.head()?.events, 1, "nothing was written");
    assert_eq!(
        ledger.append(NewEvent::new("ok", "ok", "{}")).await?.id,
        2,
        "no id was consumed"
    );
    Ok(())
}

#[test]
fn open_reports_unusable_paths() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let not_db = dir.path().join("garbage.db");
    std::fs::write(&not_db, vec![0x42u8; 8192])?;
    assert!(matches!(Ledger::open(&not_db), Err(LedgerError::Sqlite(_))));
    let file = dir.path().join("file");
    std::fs::write(&file, "x")?;
    assert!(matches!(
        Ledger::open(&file.join("ledger.db")),
        Err(LedgerError::Io { .. })
    ));
    Ok(())
}

#[test]
fn a_rolled_back_event_fails_alone_and_the_chain_continues() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(&path)?;
    ledger.append_blocking(NewEvent::new("ok", "ok", "{}"))?;
    // A trigger makes SQLite refuse one specific payload inside the writer's transaction.
    rusqlite::Connection::open(&path)?.execute_batch(
        "CREATE TRIGGER refuse BEFORE INSERT ON events WHEN NEW.payload = '\"boom\"'
         BEGIN SELECT RAISE(ABORT, 'refused by test trigger'); END;",
    )?;
    let results: Vec<Result<osmoda_ledger::Event, LedgerError>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|t| {
                let ledger = ledger.clone();
                s.spawn(move || {
                    let payload = if t == 3 {
                        "\"boom\"".to_owned()
                    } else {
                        format!("{t}")
                    };
                    ledger.append_blocking(NewEvent::new("batch", "t", payload))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(LedgerError::Closed)))
            .collect()
    });
    for (t, r) in results.iter().enumerate() {
        match (t, r) {
            (3, Err(LedgerError::WriteFailed(msg))) => {
                assert!(msg.contains("refused by test trigger"), "{msg}")
            }
            (3, other) => anyhow::bail!("the refused event got {other:?}"),
            (_, Err(e)) => anyhow::bail!("event {t} failed with the refused one: {e}"),
            (_, Ok(_)) => {}
        }
    }
    let next = ledger.append_blocking(NewEvent::new("after", "ok", "{}"))?;
    assert_eq!(
        next.id, 9,
        "1 + 7 accepted events, no id burnt by the rollback"
    );
    assert!(osmoda_ledger::verify(&path)?.is_ok());
    Ok(())
}
