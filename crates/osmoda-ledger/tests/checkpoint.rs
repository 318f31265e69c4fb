//! Signed checkpoints: the note format re-checked by rules written here from the C2SP and Go
//! `sumdb/note` specifications (with their published examples), and tampering that the hash
//! chain alone cannot see — a shortened ledger, a rewritten event with the chain recomputed —
//! caught against the checkpoints and named.

use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use osmoda_ledger::{
    event_hash, generate_key, verify, verify_checkpoints, CheckpointFile, CheckpointSigner,
    Disagreement, Ledger, LedgerError, NewEvent,
};
use rusqlite::Connection;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Checks a signed note by the rules of c2sp.org/signed-note, written independently of the
/// `signed_note` crate: text ending in a newline, a blank line, then `— <name> <base64>` lines;
/// the base64 is a 4-byte key id (first 4 bytes of SHA-256(name ‖ "\n" ‖ 0x01 ‖ key)) followed by
/// an Ed25519 signature of the text. Returns the text.
fn check_note(note: &str, vkey: &str) -> Result<String, String> {
    let mut parts = vkey.splitn(3, '+');
    let (name, id_hex, key_b64) = (
        parts.next().ok_or("vkey name")?,
        parts.next().ok_or("vkey id")?,
        parts.next().ok_or("vkey key")?,
    );
    let key = B64.decode(key_b64).map_err(|e| e.to_string())?;
    if key.len() != 33 || key[0] != 1 {
        return Err("not an Ed25519 verifier key".into());
    }
    let mut idh = Sha256::new();
    idh.update(name.as_bytes());
    idh.update(b"\n");
    idh.update(&key);
    let id = idh.finalize()[..4].to_vec();
    if hex::encode(&id) != id_hex {
        return Err("verifier key id does not match its name and key".into());
    }
    let vk = VerifyingKey::from_bytes(key[1..].try_into().map_err(|_| "key length")?)
        .map_err(|e| e.to_string())?;
    let (text, sigs) = note
        .rsplit_once("\n\n")
        .ok_or("no blank line before signatures")?;
    let text = format!("{text}\n");
    let mut verified = false;
    for line in sigs
        .strip_suffix('\n')
        .ok_or("signatures must end in a newline")?
        .split('\n')
    {
        let rest = line
            .strip_prefix("\u{2014} ")
            .ok_or("signature line must start with an em dash")?;
        let (sig_name, b64) = rest.split_once(' ').ok_or("signature line shape")?;
        let blob = B64.decode(b64).map_err(|e| e.to_string())?;
        if sig_name == name && blob.len() == 68 && blob[..4] == id[..] {
            let sig = Signature::from_slice(&blob[4..]).map_err(|e| e.to_string())?;
            vk.verify(text.as_bytes(), &sig)
                .map_err(|e| e.to_string())?;
            verified = true;
        }
    }
    if verified {
        Ok(text)
    } else {
        Err("no signature by this key".into())
    }
}

/// The C2SP tlog-checkpoint body rules: origin line, decimal size without leading zeros, the
/// base64 of a 32-byte root, each ending in a newline.
fn check_checkpoint_body(text: &str) -> Result<(String, u64, Vec<u8>), String> {
    let lines: Vec<&str> = text
        .strip_suffix('\n')
        .ok_or("final newline")?
        .split('\n')
        .collect();
    if lines.len() != 3 || lines[0].is_empty() {
        return Err(format!("expected 3 lines, got {lines:?}"));
    }
    let size_line = lines[1];
    if size_line.is_empty()
        || !size_line.bytes().all(|b| b.is_ascii_digit())
        || (size_line.len() > 1 && size_line.starts_with('0'))
    {
        return Err(format!("size line {size_line:?}"));
    }
    let root = B64.decode(lines[2]).map_err(|e| e.to_string())?;
    if root.len() != 32 {
        return Err("root is not 32 bytes".into());
    }
    Ok((
        lines[0].to_owned(),
        size_line.parse().map_err(|_| "size")?,
        root,
    ))
}

#[test]
fn the_note_checker_accepts_the_published_examples() {
    // golang.org/x/mod/sumdb/note's documentation example.
    let go_vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    let go_text = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    let go_note = format!("{go_text}\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n");
    assert_eq!(check_note(&go_note, go_vkey).expect("Go example"), go_text);
    // c2sp.org/signed-note's example.
    let spec_vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k";
    let spec_note = "This is an example message.\n\n\u{2014} example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n";
    check_note(spec_note, spec_vkey).expect("C2SP example");
    // And refuses a changed text or a signature by another key.
    assert!(check_note(&go_note.replace("answer", "Answer"), go_vkey).is_err());
    assert!(check_note(spec_note, go_vkey).is_err());
}

fn write_key(dir: &Path, skey: &str) -> PathBuf {
    let p = dir.join("checkpoint.key");
    std::fs::write(&p, format!("{skey}\n")).expect("key");
    p
}

#[test]
fn our_checkpoints_verify_by_the_independent_rules() {
    let dir = tempfile::tempdir().expect("tmp");
    // The Go example key: Ed25519 is deterministic, so our signer must reproduce the published
    // signature of the published text.
    let go_skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    let signer = CheckpointSigner::from_file(&write_key(dir.path(), go_skey)).expect("key");
    assert_eq!(
        signer.vkey(),
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
    );
    let ledger = Ledger::open(&dir.path().join("ledger.db")).expect("open");
    for i in 0..13 {
        ledger
            .append_blocking(NewEvent::new("t.e", "a", format!("{i}")))
            .expect("append");
    }
    let head = ledger.tree_head().expect("head");
    let cp = signer.sign(&head).expect("sign");
    let text = check_note(&cp.note, signer.vkey()).expect("independent check");
    let (origin, size, root) = check_checkpoint_body(&text).expect("checkpoint body");
    assert_eq!((origin.as_str(), size), ("PeterNeumann", 13));
    assert_eq!(hex::encode(root), head.root);

    // A key of our own making, too.
    let (skey, vkey) = generate_key("host.example/osmoda-ledger").expect("keygen");
    let signer = CheckpointSigner::from_file(&write_key(dir.path(), &skey)).expect("key");
    assert_eq!(signer.vkey(), vkey);
    assert_eq!(signer.origin(), "host.example/osmoda-ledger");
    let cp = signer.sign(&head).expect("sign");
    check_note(&cp.note, &vkey).expect("independent check of a generated key");
    assert!(check_note(&cp.note.replace("\n13\n", "\n14\n"), &vkey).is_err());

    // Bad keys are refused with what to do.
    for bad in [
        "",
        "PRIVATE+KEY+x",
        "not a key at all",
        &skey.replace("+KEY+", "+KEX+"),
    ] {
        match CheckpointSigner::from_file(&write_key(dir.path(), bad)) {
            Err(LedgerError::InvalidKey(m)) => assert!(m.contains("agentctl ledger keygen"), "{m}"),
            other => panic!("{bad:?}: expected InvalidKey, got {other:?}"),
        }
    }
    assert!(matches!(
        generate_key("two words"),
        Err(LedgerError::InvalidKey(_))
    ));
    assert!(matches!(
        generate_key("a+b"),
        Err(LedgerError::InvalidKey(_))
    ));
}

struct Setup {
    _dir: tempfile::TempDir,
    db: PathBuf,
    file: CheckpointFile,
    vkey: String,
}

/// 40 events with a checkpoint after every 10.
fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tmp");
    let (skey, vkey) = generate_key("test.host/osmoda-ledger").expect("keygen");
    let signer = CheckpointSigner::from_file(&write_key(dir.path(), &skey)).expect("key");
    let db = dir.path().join("ledger.db");
    let file = CheckpointFile::new(dir.path().join("checkpoints.jsonl"));
    let ledger = Ledger::open(&db).expect("open");
    for i in 1..=40 {
        ledger
            .append_blocking(NewEvent::new("t.e", "a", format!(r#"{{"n":{i}}}"#)))
            .expect("append");
        if i % 10 == 0 {
            file.append(
                &signer
                    .sign(&ledger.tree_head().expect("head"))
                    .expect("sign"),
            )
            .expect("write checkpoint");
        }
    }
    drop(ledger);
    Setup {
        _dir: dir,
        db,
        file,
        vkey,
    }
}

/// Recomputes every row's prev_hash and hash in id order, as an attacker hiding an edit would.
fn recompute_chain(db: &Path) {
    let conn = Connection::open(db).expect("sqlite");
    let rows: Vec<(i64, String, String, String, String)> = conn
        .prepare("SELECT id, ts, type, actor, payload FROM events ORDER BY id")
        .expect("prepare")
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let mut prev = osmoda_ledger::GENESIS_HASH.to_owned();
    for (id, ts, kind, actor, payload) in rows {
        let h = event_hash(id, &ts, &kind, &actor, &payload, &prev);
        conn.execute(
            "UPDATE events SET prev_hash = ?1, hash = ?2 WHERE id = ?3",
            (&prev, &h, id),
        )
        .expect("update");
        prev = h;
    }
}

fn check(s: &Setup) -> Option<Disagreement> {
    let cps = s.file.read().expect("read checkpoints");
    let report = verify_checkpoints(&s.db, &cps, &s.vkey).expect("verify");
    assert_eq!(report.checkpoints, 4);
    report.first_bad
}

#[test]
fn an_untouched_ledger_matches_every_checkpoint() {
    let s = setup();
    assert_eq!(check(&s), None);
    // Growth after the newest checkpoint is fine.
    Ledger::open(&s.db)
        .expect("open")
        .append_blocking(NewEvent::new("t.e", "a", "1"))
        .expect("append");
    assert_eq!(check(&s), None);
}

#[test]
fn deleting_the_last_ten_events_and_recomputing_is_detected() {
    let s = setup();
    let conn = Connection::open(&s.db).expect("sqlite");
    conn.execute_batch(
        "DELETE FROM events WHERE id > 30; UPDATE sqlite_sequence SET seq = 30 WHERE name = 'events';",
    )
    .expect("truncate");
    recompute_chain(&s.db);
    assert!(
        verify(&s.db).expect("chain").is_ok(),
        "the chain alone cannot see it"
    );
    assert_eq!(
        check(&s),
        Some(Disagreement::Missing {
            first_missing: 31,
            checkpoint_size: 40
        })
    );
    // Appending again to the same length does not hide it either.
    let ledger = Ledger::open(&s.db).expect("open");
    for i in 0..10 {
        ledger
            .append_blocking(NewEvent::new("t.e", "a", format!("{i}")))
            .expect("append");
    }
    drop(ledger);
    assert!(matches!(
        check(&s),
        Some(Disagreement::Changed {
            checkpoint_size: 40,
            ..
        })
    ));
}

#[test]
fn rewriting_a_middle_event_and_recomputing_the_chain_names_it() {
    let s = setup();
    let conn = Connection::open(&s.db).expect("sqlite");
    conn.execute(
        "UPDATE events SET payload = '{\"n\":\"rewritten\"}' WHERE id = 15",
        [],
    )
    .expect("rewrite");
    recompute_chain(&s.db);
    assert!(
        verify(&s.db).expect("chain").is_ok(),
        "the chain alone cannot see it"
    );
    // The tree stored at append time still holds the original leaves: the event is named.
    let bad = check(&s).expect("detected");
    assert_eq!(
        bad,
        Disagreement::Changed {
            first_event: 15,
            exact: true,
            checkpoint_size: 20
        }
    );
    assert!(bad.to_string().contains("event 15 was changed"), "{bad}");
    // With the tree rebuilt from the forged rows too, the checkpoints still bound it: the
    // checkpoint of size 10 matches, the one of size 20 does not.
    conn.execute_batch("DELETE FROM tree_runs;")
        .expect("drop tree");
    drop(Ledger::open(&s.db).expect("rebuild tree"));
    assert_eq!(
        check(&s),
        Some(Disagreement::Changed {
            first_event: 11,
            exact: false,
            checkpoint_size: 20
        })
    );
}

#[test]
fn a_forged_or_foreign_checkpoint_is_an_error_not_a_pass() {
    let s = setup();
    let mut cps = s.file.read().expect("read");
    // The convenience fields must say what the signed note says.
    let mut forged = cps.clone();
    forged[3].size = 30;
    assert!(matches!(
        verify_checkpoints(&s.db, &forged, &s.vkey),
        Err(LedgerError::ProofFailed(m)) if m.contains("checkpoint 4")
    ));
    // A note re-signed by another key does not verify with ours.
    let (other_skey, _) = generate_key("test.host/osmoda-ledger").expect("keygen");
    let dir = tempfile::tempdir().expect("tmp");
    let other = CheckpointSigner::from_file(&write_key(dir.path(), &other_skey)).expect("key");
    let head = osmoda_ledger::TreeHead {
        size: 40,
        root: cps[3].root.clone(),
    };
    cps[3] = other.sign(&head).expect("sign");
    assert!(matches!(
        verify_checkpoints(&s.db, &cps, &s.vkey),
        Err(LedgerError::ProofFailed(_))
    ));
}

#[test]
fn a_torn_last_line_is_left_out_and_a_bad_line_is_named() {
    let s = setup();
    let mut text = std::fs::read_to_string(s.file.path()).expect("read");
    text.push_str("{\"origin\":\"half");
    std::fs::write(s.file.path(), &text).expect("write");
    assert_eq!(s.file.read().expect("read").len(), 4);
    let mut lines: Vec<&str> = text.lines().collect();
    lines[1] = "garbage";
    std::fs::write(s.file.path(), lines.join("\n") + "\n").expect("write");
    match s.file.read() {
        Err(LedgerError::Malformed(m)) => assert!(m.contains("line 2"), "{m}"),
        other => panic!("expected Malformed, got {other:?}"),
    }
}
