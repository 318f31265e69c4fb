//! The state file agentd refuses to start without, against the real binary: a ledger it cannot
//! read stops the start with a message naming the file and what to do, and the file is left
//! byte for byte as it was (a new ledger in its place would lose the history). Moved aside, the
//! next start begins a new ledger.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn agentd(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_agentd"));
    cmd.arg("--socket")
        .arg(dir.join("agentd.sock"))
        .arg("--approval-socket")
        .arg(dir.join("approval.sock"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--config")
        .arg(dir.join("absent.json"))
        .env("RUST_LOG", "error")
        .stdin(Stdio::null());
    cmd
}

/// A real ledger with events, cut to its first half (its WAL folded in first).
fn truncated_ledger(dir: &std::path::Path) -> Vec<u8> {
    let path = dir.join("whole.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    {
        let ledger = osmoda_ledger::Ledger::open(&path).expect("ledger");
        for i in 0..400 {
            let ev = osmoda_ledger::NewEvent::new(
                "test.filler",
                "t",
                format!("{{\"i\":{i},\"pad\":\"{}\"}}", "x".repeat(200)),
            );
            rt.block_on(ledger.append(ev)).expect("append");
        }
    }
    let conn = rusqlite::Connection::open(&path).expect("open");
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA journal_mode=DELETE;")
        .expect("checkpoint");
    drop(conn);
    let bytes = std::fs::read(&path).expect("read");
    bytes[..bytes.len() / 2].to_vec()
}

#[test]
fn an_unreadable_ledger_stops_the_start_and_is_left_as_it_was() {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    let ledger = state.join("ledger.db");
    let mut garbage = b"not a database ".repeat(300);
    garbage.extend_from_slice(&[0xff, 0x00, 0xfe]);
    for (what, bytes) in [
        ("garbage", garbage),
        ("a truncated ledger", truncated_ledger(dir.path())),
    ] {
        std::fs::create_dir_all(&state).expect("state dir");
        std::fs::write(&ledger, &bytes).expect("write");
        let start = Instant::now();
        let out = agentd(dir.path()).output().expect("run agentd");
        assert!(!out.status.success(), "{what}: agentd started on it");
        assert!(start.elapsed() < Duration::from_secs(30), "{what}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&ledger.display().to_string()), "{what}: {err}");
        assert!(
            err.contains("does not start on a ledger it cannot read"),
            "{what}: {err}"
        );
        assert!(err.contains("move it aside"), "{what}: {err}");
        assert_eq!(
            std::fs::read(&ledger).expect("read"),
            bytes,
            "{what}: the file was changed"
        );
        assert!(
            !dir.path().join("agentd.sock").exists(),
            "{what}: it bound its socket"
        );
        std::fs::remove_dir_all(&state).expect("clean");
    }

    // Moved aside as the message says, the next start begins a new ledger and serves.
    std::fs::create_dir_all(&state).expect("state dir");
    std::fs::write(state.join("ledger.db.bad"), b"kept for a person").expect("write");
    let notify = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&notify).expect("bind");
    sock.set_read_timeout(Some(Duration::from_secs(60)))
        .expect("timeout");
    let mut child = agentd(dir.path())
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn agentd");
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1");
    assert_eq!(&buf[..n], b"READY=1\n");
    assert!(ledger.is_file());
    let _ = child.kill();
    let _ = child.wait();
}
