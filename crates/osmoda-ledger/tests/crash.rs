//! Acknowledged appends survive a SIGKILL of the writing process: every event the library
//! returned is in the database afterwards, with the same hash, and the chain verifies.
//!
//! The test re-runs its own binary as the child process (selected by an environment variable).

use osmoda_ledger::{verify, Ledger, NewEvent};
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

const CHILD_ENV: &str = "OSMODA_LEDGER_CRASH_CHILD_DB";

/// Child mode: append from four threads until killed, printing each acknowledgement.
fn run_child(db: &str) -> ! {
    let ledger = match Ledger::open(std::path::Path::new(db)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("child cannot open ledger: {e}");
            std::process::exit(2);
        }
    };
    let out = std::sync::Mutex::new(std::io::stdout());
    std::thread::scope(|s| {
        for t in 0..4 {
            let (ledger, out) = (ledger.clone(), &out);
            s.spawn(move || {
                for i in 0.. {
                    match ledger.append_blocking(NewEvent::new(
                        "crash.test",
                        format!("t{t}"),
                        format!("[{t},{i}]"),
                    )) {
                        Ok(ev) => {
                            let mut o = out
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            let _ = writeln!(o, "acked {} {}", ev.id, ev.hash);
                            let _ = o.flush();
                        }
                        Err(e) => {
                            eprintln!("append failed: {e}");
                            std::process::exit(3);
                        }
                    }
                }
            });
        }
    });
    std::process::exit(0)
}

#[test]
fn acked_appends_survive_sigkill() -> anyhow::Result<()> {
    if let Ok(db) = std::env::var(CHILD_ENV) {
        run_child(&db);
    }
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("ledger.db");
    let mut child = Command::new(std::env::current_exe()?)
        .args([
            "--exact",
            "acked_appends_survive_sigkill",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &db)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no child stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let mut acked = Vec::new();
    while acked.len() < 300 {
        let Some(line) = lines.next() else {
            anyhow::bail!("child exited after {} acks", acked.len())
        };
        if let Some(rest) = line?.strip_prefix("acked ") {
            let (id, hash) = rest
                .split_once(' ')
                .ok_or_else(|| anyhow::anyhow!("bad line {rest}"))?;
            acked.push((id.parse::<i64>()?, hash.to_owned()));
        }
    }
    child.kill()?; // SIGKILL, mid-append
    child.wait()?;
    // Acks the child printed before it died count too.
    for line in lines {
        if let Some(rest) = line?.strip_prefix("acked ") {
            if let Some((id, hash)) = rest.split_once(' ') {
                acked.push((id.parse::<i64>()?, hash.to_owned()));
            }
        }
    }
    let report = verify(&db)?;
    assert!(report.is_ok(), "{report:?}");
    assert!(
        report.events >= acked.len() as u64,
        "{} stored < {} acknowledged",
        report.events,
        acked.len()
    );
    let ledger = Ledger::open(&db)?;
    for (id, hash) in &acked {
        let ev = ledger
            .get(*id)?
            .ok_or_else(|| anyhow::anyhow!("acknowledged event {id} is missing"))?;
        assert_eq!(&ev.hash, hash, "event {id}");
    }
    // The reopened ledger continues the chain after the crash.
    let next = ledger.append_blocking(NewEvent::new("crash.test", "parent", "{}"))?;
    assert_eq!(next.id as u64, report.events + 1);
    Ok(())
}
