//! `agentctl verify-ledger` against signed checkpoints (files written the way agentd writes
//! them), and `agentctl ledger keygen`.

use std::path::Path;
use std::process::{Command, Output};

use osmoda_ledger::{CheckpointFile, CheckpointSigner, Ledger, NewEvent};

fn ctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .args(args)
        .output()
        .expect("run agentctl")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A state dir as agentd leaves it: 30 events, checkpoints after 10, 20 and 30, the verifier
/// key beside them.
fn state(dir: &Path) {
    let key = dir.join("checkpoint.key");
    let o = ctl(&[
        "ledger",
        "keygen",
        "--name",
        "test.host/osmoda-ledger",
        "--out",
    ]
    .iter()
    .copied()
    .chain([key.to_str().expect("utf-8")])
    .collect::<Vec<_>>());
    assert!(o.status.success(), "{}", text(&o));
    let vkey = text(&o)
        .lines()
        .find_map(|l| l.strip_prefix("verifier key: ").map(str::to_owned))
        .expect("vkey printed");
    std::fs::write(dir.join("checkpoint.vkey"), format!("{vkey}\n")).expect("vkey");
    let signer = CheckpointSigner::from_file(&key).expect("key");
    assert_eq!(signer.vkey(), vkey);
    let file = CheckpointFile::new(dir.join("checkpoints.jsonl"));
    let ledger = Ledger::open(&dir.join("ledger.db")).expect("open");
    for i in 1..=30 {
        ledger
            .append_blocking(NewEvent::new("t.e", "a", format!(r#"{{"i":{i}}}"#)))
            .expect("append");
        if i % 10 == 0 {
            file.append(
                &signer
                    .sign(&ledger.tree_head().expect("head"))
                    .expect("sign"),
            )
            .expect("append checkpoint");
        }
    }
}

fn recompute_chain(db: &Path) {
    let conn = rusqlite::Connection::open(db).expect("sqlite");
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
}

#[test]
fn verify_ledger_checks_the_checkpoints_and_names_what_disagrees() {
    let dir = tempfile::tempdir().expect("tmp");
    state(dir.path());
    let db = dir.path().join("ledger.db");
    let db_arg = db.to_str().expect("utf-8");
    let o = ctl(&["verify-ledger", "--db", db_arg]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("consistent with 3 signed checkpoints (newest covers 30 events)"),
        "{}",
        text(&o)
    );

    // A rewritten event with the chain recomputed: the chain alone passes, the checkpoints name it.
    let conn = rusqlite::Connection::open(&db).expect("sqlite");
    conn.execute(
        "UPDATE events SET payload = '{\"i\":\"x\"}' WHERE id = 14",
        [],
    )
    .expect("tamper");
    recompute_chain(&db);
    let o = ctl(&["verify-ledger", "--db", db_arg]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(text(&o).contains("event 14 was changed"), "{}", text(&o));

    // The last 10 deleted, the rest recomputed: the first missing event is named.
    let dir2 = tempfile::tempdir().expect("tmp");
    state(dir2.path());
    let db2 = dir2.path().join("ledger.db");
    rusqlite::Connection::open(&db2)
        .expect("sqlite")
        .execute_batch("DELETE FROM events WHERE id > 20; UPDATE sqlite_sequence SET seq = 20 WHERE name = 'events';")
        .expect("truncate");
    recompute_chain(&db2);
    let o = ctl(&["verify-ledger", "--db", db2.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(text(&o).contains("event 21 is missing"), "{}", text(&o));

    // A verifier key that is not the signer's: the checkpoints do not verify (exit 6).
    let other = dir2.path().join("other.key");
    let o = ctl(&[
        "ledger",
        "keygen",
        "--name",
        "test.host/osmoda-ledger",
        "--out",
        other.to_str().expect("utf-8"),
    ]);
    let other_vkey = text(&o)
        .lines()
        .find_map(|l| l.strip_prefix("verifier key: ").map(str::to_owned))
        .expect("vkey");
    let o = ctl(&["verify-ledger", "--db", db_arg, "--vkey", &other_vkey]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(text(&o).contains("do NOT verify"), "{}", text(&o));
}

#[test]
fn without_checkpoints_only_the_chain_is_checked_and_it_says_so() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = dir.path().join("ledger.db");
    let ledger = Ledger::open(&db).expect("open");
    ledger
        .append_blocking(NewEvent::new("t.e", "a", "1"))
        .expect("append");
    drop(ledger);
    let o = ctl(&["verify-ledger", "--db", db.to_str().expect("utf-8")]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains("only the chain was checked"),
        "{}",
        text(&o)
    );
}

#[test]
fn keygen_writes_a_private_key_once_and_refuses_bad_names() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("k");
    let p = out.to_str().expect("utf-8");
    let o = ctl(&[
        "ledger",
        "keygen",
        "--name",
        "h.example/osmoda-ledger",
        "--out",
        p,
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&out).expect("key").permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600);
    let before = std::fs::read(&out).expect("key");
    let o = ctl(&[
        "ledger",
        "keygen",
        "--name",
        "h.example/osmoda-ledger",
        "--out",
        p,
    ]);
    assert!(!o.status.success(), "an existing key is never replaced");
    assert!(text(&o).contains("never replaced"), "{}", text(&o));
    assert_eq!(std::fs::read(&out).expect("key"), before);
    let o = ctl(&[
        "ledger",
        "keygen",
        "--name",
        "has space",
        "--out",
        &format!("{p}2"),
    ]);
    assert!(!o.status.success());
    assert!(text(&o).contains("cannot name a key"), "{}", text(&o));
    assert!(!dir.path().join("k2").exists());
}

#[test]
fn witnesses_n_needs_n_valid_cosignatures_on_the_newest_checkpoint() {
    use osmoda_ledger::witness::{Cosignature, Witness};
    let d = tempfile::tempdir().expect("tmp");
    let dir = d.path();
    state(dir);
    let db = dir.join("ledger.db");
    let db = db.to_str().expect("utf-8");
    let vkey = std::fs::read_to_string(dir.join("checkpoint.vkey")).expect("vkey");
    let newest = CheckpointFile::new(dir.join("checkpoints.jsonl"))
        .newest()
        .expect("read")
        .expect("a checkpoint");
    // Two witnesses; only the first cosigns.
    let mut w = Witness::open("beta/osmoda-witness", [7u8; 32], dir.join("w1.json")).expect("w1");
    let other = Witness::open("gamma/osmoda-witness", [9u8; 32], dir.join("w2.json")).expect("w2");
    w.add_log(vkey.trim()).expect("log");
    let line = w
        .add_checkpoint(0, &[], &newest.note, 1_700_000_000)
        .expect("cosigned");
    let entry = Cosignature {
        size: newest.size,
        root: newest.root.clone(),
        peer: "beta".into(),
        line,
    };
    std::fs::write(
        dir.join("cosignatures.jsonl"),
        format!("{}\n", serde_json::to_string(&entry).expect("json")),
    )
    .expect("write");
    std::fs::write(
        dir.join("witness-peers.keys"),
        format!("{}\n{}\n", w.vkey(), other.vkey()),
    )
    .expect("keys");
    let run = |extra: &[&str]| {
        let mut args = vec!["verify-ledger", "--db", db];
        args.extend_from_slice(extra);
        ctl(&args)
    };
    let o = run(&["--witnesses", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("1 valid cosignatures"), "{}", text(&o));
    for (extra, why) in [
        (vec!["--witnesses", "2"], "only one witness cosigned"),
        (
            vec!["--witnesses", "1", "--witness-key", &other.vkey()],
            "not by this key",
        ),
    ] {
        let o = run(&extra);
        assert_eq!(o.status.code(), Some(6), "{why}: {}", text(&o));
        assert!(text(&o).contains("NOT witnessed"), "{why}: {}", text(&o));
    }
    // A cosignature line whose signature was tampered with does not count.
    let mut bad = entry.clone();
    bad.line = bad.line.replacen('A', "B", 1);
    if bad.line == entry.line {
        bad.line = bad.line.replacen('a', "b", 1);
    }
    std::fs::write(
        dir.join("cosignatures.jsonl"),
        format!("{}\n", serde_json::to_string(&bad).expect("json")),
    )
    .expect("write");
    assert_eq!(run(&["--witnesses", "1"]).status.code(), Some(6));
}
