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

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Signs the ledger's head, appends it to the file and records it in the ledger, as agentd does.
fn checkpoint(ledger: &Ledger, signer: &CheckpointSigner, file: &CheckpointFile) {
    let cp = signer
        .sign(&ledger.tree_head().expect("head"))
        .expect("sign");
    file.append(&cp).expect("append checkpoint");
    let payload = serde_json::json!({ "origin": cp.origin, "size": cp.size, "root": cp.root, "note": cp.note });
    ledger
        .append_blocking(NewEvent::new(
            "agentd.checkpoint",
            "agentd",
            payload.to_string(),
        ))
        .expect("record");
}

/// A state dir as agentd leaves it: 30 events with checkpoints after the 10th, 20th and 30th
/// (sizes 10, 21, 32; each recorded as an event), the verifier key beside them.
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
            checkpoint(&ledger, &signer, &file);
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
        text(&o).contains("consistent with 3 signed checkpoints (newest covers 32 events)"),
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
    // A malformed key is the operator's typo, not a broken ledger.
    let o = ctl(&["verify-ledger", "--db", db_arg, "--vkey", "garbage"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
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
    // Review 18-11 finding 8: every pass ends with a `trust:` line, this one too.
    assert!(
        text(&o)
            .lines()
            .any(|l| l.starts_with("trust: the hash chain only")),
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
        .add_checkpoint(0, &[], &newest.note, now())
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
    // Keys found only in the state dir are not trusted (whoever rolls back rewrites them).
    let o = run(&["--witnesses", "1", "--config", "/nonexistent/agentd.json"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = run(&["--witnesses", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("no witness keys"), "{}", text(&o));
    // The configuration's peers are (and so is --witness-key).
    let config = dir.join("agentd.json");
    std::fs::write(
        &config,
        serde_json::json!({ "ledger": { "witness": { "peers": { "beta": w.vkey(), "gamma": other.vkey() } } } }).to_string(),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8").to_owned();
    let o = run(&["--witnesses", "1", "--config", &config]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("1 valid cosignatures"), "{}", text(&o));
    let o = run(&["--witnesses", "1", "--witness-key", &w.vkey()]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    for (extra, why) in [
        (
            vec!["--witnesses", "2", "--config", &config],
            "only one witness cosigned",
        ),
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
    assert_eq!(
        run(&["--witnesses", "1", "--config", &config])
            .status
            .code(),
        Some(6)
    );

    // A torn last line (a write cut short) is left out like the checkpoint file's: the whole
    // cosignature before it still counts, and the next append (agentd's) goes on a new line.
    let whole = format!("{}\n", serde_json::to_string(&entry).expect("json"));
    std::fs::write(
        dir.join("cosignatures.jsonl"),
        format!("{whole}{{\"size\":3,\"root\":\"ab"),
    )
    .expect("torn");
    let o = run(&["--witnesses", "1", "--config", &config]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let file = osmoda_ledger::witness::CosignatureFile::new(dir.join("cosignatures.jsonl"));
    file.append(&entry).expect("append after a torn line");
    assert_eq!(file.read().expect("readable").len(), 2);
    assert_eq!(
        std::fs::read_to_string(dir.join("cosignatures.jsonl.torn")).expect("kept aside"),
        "{\"size\":3,\"root\":\"ab\n"
    );
    // A broken line in the middle is a changed record: exit 6, naming the file, not "the
    // database is malformed".
    std::fs::write(
        dir.join("cosignatures.jsonl"),
        format!("{{\"broken\":\n{whole}"),
    )
    .expect("write");
    let o = run(&["--witnesses", "1", "--config", &config]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(
        text(&o).contains("cosignatures.jsonl line 1: not a cosignature"),
        "{}",
        text(&o)
    );
}

/// Evidence that does not parse is tamper evidence (exit 6), not an error (exit 1): an
/// `agentd.checkpoint` event rewritten into a non-checkpoint with the chain recomputed (the
/// newest, which no checkpoint covers, and a covered one), and a broken middle line of the
/// checkpoint file.
#[test]
fn a_checkpoint_record_that_is_not_a_checkpoint_is_broken_evidence() {
    for case in ["newest record", "covered record", "file line"] {
        let d = tempfile::tempdir().expect("tmp");
        state(d.path());
        let db = d.path().join("ledger.db");
        let vkey = std::fs::read_to_string(d.path().join("checkpoint.vkey")).expect("vkey");
        let want = match case {
            "file line" => {
                let path = d.path().join("checkpoints.jsonl");
                let text = std::fs::read_to_string(&path).expect("read");
                let mut lines: Vec<&str> = text.lines().collect();
                lines[1] = "{\"broken\":";
                std::fs::write(&path, format!("{}\n", lines.join("\n"))).expect("write");
                "checkpoints.jsonl line 2: not a checkpoint".to_owned()
            }
            _ => {
                let conn = rusqlite::Connection::open(&db).expect("sqlite");
                let ids: Vec<i64> = conn
                    .prepare("SELECT id FROM events WHERE type = 'agentd.checkpoint' ORDER BY id")
                    .expect("prepare")
                    .query_map([], |r| r.get(0))
                    .expect("rows")
                    .collect::<Result<_, _>>()
                    .expect("rows");
                let id = if case == "newest record" {
                    ids[2]
                } else {
                    ids[0]
                };
                conn.execute(
                    "UPDATE events SET payload = '{\"x\":1}' WHERE id = ?1",
                    [id],
                )
                .expect("edit");
                drop(conn);
                recompute_chain(&db);
                format!("event {id} (agentd.checkpoint) does not hold a checkpoint")
            }
        };
        let o = verify(d.path(), &["--vkey", vkey.trim()]);
        assert_eq!(o.status.code(), Some(6), "{case}: {}", text(&o));
        assert!(text(&o).contains("ledger BROKEN"), "{case}: {}", text(&o));
        assert!(text(&o).contains(&want), "{case}: {}", text(&o));
        assert!(
            !text(&o).contains("database is malformed"),
            "{case}: {}",
            text(&o)
        );
    }
}

fn verify(dir: &Path, extra: &[&str]) -> Output {
    let db = dir.join("ledger.db");
    let mut args = vec!["verify-ledger", "--db", db.to_str().expect("utf-8")];
    args.extend_from_slice(extra);
    ctl(&args)
}

#[test]
fn the_file_and_the_ledgers_own_checkpoint_events_must_agree() {
    // The file removed or emptied: the ledger still records its checkpoints, so an edit is
    // named through them, and even an untouched ledger says the file is gone.
    for how in ["removed", "emptied"] {
        let d = tempfile::tempdir().expect("tmp");
        state(d.path());
        let cps = d.path().join("checkpoints.jsonl");
        match how {
            "removed" => std::fs::remove_file(&cps).expect("rm"),
            _ => std::fs::write(&cps, "").expect("empty"),
        }
        let o = verify(d.path(), &[]);
        assert_eq!(o.status.code(), Some(6), "{how}: {}", text(&o));
        assert!(text(&o).contains("not in"), "{how}: {}", text(&o));
        let conn = rusqlite::Connection::open(d.path().join("ledger.db")).expect("sqlite");
        conn.execute(
            "UPDATE events SET payload = '{\"i\":\"x\"}' WHERE id = 7",
            [],
        )
        .expect("tamper");
        recompute_chain(&d.path().join("ledger.db"));
        let o = verify(d.path(), &[]);
        assert_eq!(o.status.code(), Some(6), "{how}: {}", text(&o));
        assert!(
            text(&o).contains("event 7 was changed"),
            "{how}: {}",
            text(&o)
        );
    }
    // A checkpoint in the file whose recording event was removed (the chain recomputed).
    let d = tempfile::tempdir().expect("tmp");
    state(d.path());
    let db = d.path().join("ledger.db");
    rusqlite::Connection::open(&db)
        .expect("sqlite")
        .execute_batch("DELETE FROM events WHERE id = 33; UPDATE sqlite_sequence SET seq = 32 WHERE name = 'events';")
        .expect("cut");
    recompute_chain(&db);
    let o = verify(d.path(), &[]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(
        text(&o).contains("not recorded in the ledger"),
        "{}",
        text(&o)
    );
    // No checkpoint anywhere and only agentd's key beside the ledger: a young ledger (agentd
    // writes the key at start and signs after N events or T seconds) passes on its chain with a
    // note; with the key passed by the operator, the absence (file and events removed, chain
    // recomputed) is no pass.
    let d = tempfile::tempdir().expect("tmp");
    let ledger = Ledger::open(&d.path().join("ledger.db")).expect("open");
    for i in 0..3 {
        ledger
            .append_blocking(NewEvent::new("t.e", "a", format!("{i}")))
            .expect("append");
    }
    drop(ledger);
    let (_, vkey) = osmoda_ledger::generate_key("test.host/osmoda-ledger").expect("key");
    std::fs::write(d.path().join("checkpoint.vkey"), format!("{vkey}\n")).expect("vkey");
    let o = verify(d.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("no signed checkpoint yet"),
        "{}",
        text(&o)
    );
    let o = verify(d.path(), &["--vkey", vkey.as_str()]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(text(&o).contains("none are in"), "{}", text(&o));
    // A --checkpoints file that does not exist is the operator's mistake: an error, no pass.
    let o = verify(
        d.path(),
        &["--checkpoints", "/nonexistent/checkpoints.jsonl"],
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("the --checkpoints you named"),
        "{}",
        text(&o)
    );
}

#[test]
fn a_missing_last_newline_still_counts_and_a_torn_line_is_reported_and_repaired() {
    let d = tempfile::tempdir().expect("tmp");
    state(d.path());
    let path = d.path().join("checkpoints.jsonl");
    let whole = std::fs::read(&path).expect("read");
    std::fs::write(&path, &whole[..whole.len() - 1]).expect("strip newline");
    let o = verify(d.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("3 signed checkpoints"), "{}", text(&o));
    let file = CheckpointFile::new(&path);
    assert_eq!(file.read().expect("read").len(), 3);
    assert!(file.repair().expect("repair").is_some());
    assert_eq!(
        std::fs::read(&path).expect("read"),
        whole,
        "only the newline was added"
    );

    // A torn append (a crash in the middle of write_all): reported, not a pass or a failure
    // by itself; the next append first cuts it (kept aside), so the file stays readable.
    let torn = &whole[whole.len() - 200..whole.len() - 1];
    let mut bytes = whole.clone();
    bytes.extend_from_slice(torn);
    std::fs::write(&path, &bytes).expect("torn");
    let o = verify(d.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("torn line of 199 bytes"), "{}", text(&o));
    let newest = file.newest().expect("read").expect("one");
    file.append(&newest).expect("append after a torn line");
    let after = std::fs::read(&path).expect("read");
    assert!(after.starts_with(&whole) && after.ends_with(b"\n"));
    assert_eq!(file.read().expect("readable").len(), 4);
    assert_eq!(file.torn_tail().expect("read"), None);
    let aside = std::fs::read(d.path().join("checkpoints.jsonl.torn")).expect("kept aside");
    assert_eq!(&aside[..aside.len() - 1], torn);
}

#[test]
fn keys_come_from_the_operator_and_a_rotation_keeps_the_old_ones() {
    let d = tempfile::tempdir().expect("tmp");
    state(d.path());
    // Keys from the state dir work, with a warning that root can replace them there.
    let o = verify(d.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("the directory being checked"),
        "{}",
        text(&o)
    );
    let old = std::fs::read_to_string(d.path().join("checkpoint.vkey")).expect("vkey");
    let old = old.trim().to_owned();
    let o = verify(d.path(), &["--vkey", &old]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        !text(&o).contains("the directory being checked"),
        "{}",
        text(&o)
    );

    // A new key signs from now on (a rotation).
    let (key, new) = keygen(d.path(), "test.host/osmoda-ledger-2");
    sign_more(d.path(), &key, 5);
    let o = verify(d.path(), &["--vkey", &new]);
    assert_eq!(
        o.status.code(),
        Some(6),
        "the old checkpoints need the old key: {}",
        text(&o)
    );
    let o = verify(d.path(), &["--vkey", &old, "--vkey", &new]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("4 signed checkpoints"), "{}", text(&o));
    let keys = d.path().join("keys.txt");
    std::fs::write(
        &keys,
        format!("# the ledger's keys, oldest first\n{old}\n{new}\n"),
    )
    .expect("keys");
    let o = verify(d.path(), &["--vkey-file", keys.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

/// A new key made with `agentctl ledger keygen`: (private key file, verifier key).
fn keygen(dir: &Path, name: &str) -> (std::path::PathBuf, String) {
    let key = dir.join(format!("{}.key", name.replace('/', "_")));
    let o = ctl(&[
        "ledger",
        "keygen",
        "--name",
        name,
        "--out",
        key.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let vkey = text(&o)
        .lines()
        .find_map(|l| l.strip_prefix("verifier key: ").map(str::to_owned))
        .expect("vkey");
    (key, vkey)
}

/// Appends `n` events and a checkpoint of them signed by `key`.
fn sign_more(dir: &Path, key: &Path, n: usize) {
    let signer = CheckpointSigner::from_file(key).expect("key");
    let ledger = Ledger::open(&dir.join("ledger.db")).expect("open");
    for i in 0..n {
        ledger
            .append_blocking(NewEvent::new("t.e", "a", format!(r#"{{"k":{i}}}"#)))
            .expect("append");
    }
    checkpoint(
        &ledger,
        &signer,
        &CheckpointFile::new(dir.join("checkpoints.jsonl")),
    );
}

/// A rotated-out key verifies only what it signed while it was current: retired at size 33
/// (`"<vkey> 33"`, as agentd's checkpoint.vkeys records it), a checkpoint it signs at size 41
/// is BROKEN, while its checkpoints up to 33 and the new key's still verify.
#[test]
fn a_retired_key_verifies_nothing_past_the_size_where_it_was_retired() {
    let d = tempfile::tempdir().expect("tmp");
    state(d.path());
    let old = std::fs::read_to_string(d.path().join("checkpoint.vkey")).expect("vkey");
    let old = old.trim().to_owned();
    let (new_key, new) = keygen(d.path(), "test.host/osmoda-ledger-2");
    // The rotation happened with 33 rows (30 events and three checkpoint records).
    sign_more(d.path(), &new_key, 5);
    let retired = format!("{old} 33");
    let o = verify(d.path(), &["--vkey", &retired, "--vkey", &new]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // Whoever kept the old key signs a later checkpoint with it.
    sign_more(d.path(), &d.path().join("checkpoint.key"), 2);
    let o = verify(d.path(), &["--vkey", &retired, "--vkey", &new]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(
        text(&o).contains("size 41 is signed by the retired key")
            && text(&o).contains("past its range"),
        "{}",
        text(&o)
    );
    // The same range from a key file, and from the state dir's history as agentd writes it.
    let keys = d.path().join("keys.txt");
    std::fs::write(&keys, format!("{retired}\n{new}\n")).expect("keys");
    let o = verify(d.path(), &["--vkey-file", keys.to_str().expect("utf-8")]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    std::fs::write(
        d.path().join("checkpoint.vkeys"),
        format!("{retired}\n{new}\n"),
    )
    .expect("h");
    std::fs::write(d.path().join("checkpoint.vkey"), format!("{new}\n")).expect("vkey");
    let o = verify(d.path(), &[]);
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    // Without the range (the old way) the forged checkpoint passed: the range is what holds.
    let o = verify(d.path(), &["--vkey", &old, "--vkey", &new]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    // A key line that does not parse is an error, not a pass.
    let o = verify(d.path(), &["--vkey", &format!("{old} many")]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
}

/// A pass says which trust it rests on: keys from the state dir (nothing against root), keys
/// the operator passed (not against root on the signing machine), witnesses (root too).
#[test]
fn a_pass_says_whom_it_holds_against() {
    let d = tempfile::tempdir().expect("tmp");
    state(d.path());
    let vkey = std::fs::read_to_string(d.path().join("checkpoint.vkey")).expect("vkey");
    let vkey = vkey.trim().to_owned();
    let trust = |o: &Output| {
        text(o)
            .lines()
            .find(|l| l.starts_with("trust: "))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no trust line: {}", text(o)))
    };
    let o = verify(d.path(), &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = trust(&o);
    assert!(
        t.contains("read from the state dir") && t.contains("--witnesses N"),
        "{t}"
    );
    let o = verify(d.path(), &["--vkey", &vkey]);
    let t = trust(&o);
    assert!(
        t.contains("you passed")
            && t.contains("root on the signing machine")
            && t.contains("--witnesses N"),
        "{t}"
    );
    // One witness cosigns the newest checkpoint (size 32).
    let cps = CheckpointFile::new(d.path().join("checkpoints.jsonl"))
        .read()
        .expect("cps");
    let newest = cps.last().expect("newest").clone();
    let ledger = Ledger::open(&d.path().join("ledger.db")).expect("open");
    let mut w = osmoda_ledger::witness::Witness::open(
        "beta/osmoda-witness",
        [7u8; 32],
        d.path().join("w.json"),
    )
    .expect("witness");
    w.add_log(&vkey).expect("log");
    let proof = ledger
        .consistency_proof(0, newest.size)
        .expect("proof")
        .proof;
    let line = w
        .add_checkpoint(0, &proof, &newest.note, now())
        .expect("cosigned");
    osmoda_ledger::witness::CosignatureFile::new(d.path().join("cosignatures.jsonl"))
        .append(&osmoda_ledger::witness::Cosignature {
            size: newest.size,
            root: newest.root.clone(),
            peer: "beta".into(),
            line,
        })
        .expect("cosignature");
    let o = verify(
        d.path(),
        &[
            "--vkey",
            &vkey,
            "--witnesses",
            "1",
            "--witness-key",
            &w.vkey(),
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = trust(&o);
    assert!(
        t.contains("cosigned by 1 witness")
            && t.contains("you passed (--witness-key)")
            && t.contains("binds root too"),
        "{t}"
    );
    // Review 18-11 finding 4: the same witness key read from agentd's configuration (on the
    // machine under check, replaceable by its root) does not claim to bind root.
    let config = d.path().join("agentd.json");
    std::fs::write(
        &config,
        serde_json::json!({ "ledger": { "witness": { "peers": { "beta": w.vkey() } } } })
            .to_string(),
    )
    .expect("config");
    let config = config.to_str().expect("utf-8");
    let o = verify(
        d.path(),
        &["--vkey", &vkey, "--witnesses", "1", "--config", config],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = trust(&o);
    assert!(
        t.contains(&format!("read from {config} (--config)"))
            && t.contains("can replace those keys")
            && !t.contains("binds root too"),
        "{t}"
    );
}

/// Review 18-11 finding 5: `--witnesses N` counts only fresh cosignatures (`--max-age`,
/// default a day; agentd asks its witnesses again every hour). A ledger rolled back together
/// with its checkpoint and cosignature files carries only the old cosignatures of that state,
/// so it fails, saying why; `--max-age 0` (any age) passes and its trust line says what that
/// does not exclude.
#[test]
fn witnesses_n_counts_only_fresh_cosignatures() {
    let d = tempfile::tempdir().expect("tmp");
    state(d.path());
    let vkey = std::fs::read_to_string(d.path().join("checkpoint.vkey")).expect("vkey");
    let vkey = vkey.trim().to_owned();
    let newest = CheckpointFile::new(d.path().join("checkpoints.jsonl"))
        .newest()
        .expect("read")
        .expect("newest");
    let ledger = Ledger::open(&d.path().join("ledger.db")).expect("open");
    let mut w = osmoda_ledger::witness::Witness::open(
        "beta/osmoda-witness",
        [7u8; 32],
        d.path().join("w.json"),
    )
    .expect("witness");
    w.add_log(&vkey).expect("log");
    let proof = ledger
        .consistency_proof(0, newest.size)
        .expect("proof")
        .proof;
    let two_days_ago = now() - 2 * 86_400;
    let old = w
        .add_checkpoint(0, &proof, &newest.note, two_days_ago)
        .expect("cosigned");
    let file = osmoda_ledger::witness::CosignatureFile::new(d.path().join("cosignatures.jsonl"));
    let entry = |line: String| osmoda_ledger::witness::Cosignature {
        size: newest.size,
        root: newest.root.clone(),
        peer: "beta".into(),
        line,
    };
    file.append(&entry(old)).expect("cosignature");
    let wkey = w.vkey();
    let args = |extra: &[&'static str]| {
        let mut a = vec![
            "--vkey".to_owned(),
            vkey.clone(),
            "--witnesses".into(),
            "1".into(),
            "--witness-key".into(),
            wkey.clone(),
        ];
        a.extend(extra.iter().map(|s| (*s).to_owned()));
        a
    };
    let run = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        verify(d.path(), &refs)
    };
    let o = run(args(&[]));
    assert_eq!(o.status.code(), Some(6), "{}", text(&o));
    assert!(
        text(&o).contains("0 of the 1 valid cosignatures signed in the last 86400 s")
            && text(&o).contains("1 of any age"),
        "{}",
        text(&o)
    );
    let o = run(args(&["--max-age", "0"]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("of any age (--max-age 0)"),
        "{}",
        text(&o)
    );
    // The witness cosigns the same checkpoint again (agentd's hourly refresh): it passes.
    let fresh = w
        .add_checkpoint(newest.size, &[], &newest.note, now())
        .expect("cosigned again");
    file.append(&entry(fresh)).expect("cosignature");
    let o = run(args(&[]));
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("signed in the last 86400 s"),
        "{}",
        text(&o)
    );
}
