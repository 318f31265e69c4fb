//! Two in-process witnesses cosign a ledger's checkpoints after checking consistency, refuse a
//! rolled-back or forked ledger (also after a restart), and the cosignatures are counted.

use osmoda_ledger::witness::{count_cosignatures, Refusal, Witness};
use osmoda_ledger::{
    generate_key, CheckpointSigner, Ledger, LedgerError, NewEvent, SignedCheckpoint,
};
use std::path::Path;

struct Log {
    _dir: tempfile::TempDir,
    ledger: Ledger,
    signer: CheckpointSigner,
}

fn log(origin: &str) -> Log {
    let dir = tempfile::tempdir().expect("tmp");
    let (skey, _) = generate_key(origin).expect("keygen");
    let key = dir.path().join("k");
    std::fs::write(&key, skey).expect("key");
    let signer = CheckpointSigner::from_file(&key).expect("signer");
    let ledger = Ledger::open(&dir.path().join("ledger.db")).expect("open");
    Log {
        _dir: dir,
        ledger,
        signer,
    }
}

impl Log {
    fn append(&self, n: usize, tag: &str) {
        for i in 0..n {
            self.ledger
                .append_blocking(NewEvent::new("t.e", "a", format!(r#"{{"{tag}":{i}}}"#)))
                .expect("append");
        }
    }

    fn checkpoint(&self) -> SignedCheckpoint {
        self.signer
            .sign(&self.ledger.tree_head().expect("head"))
            .expect("sign")
    }

    /// Asks `w` to cosign the current checkpoint, proving consistency from what `w` has.
    fn submit(&self, w: &mut Witness, time: u64) -> Result<String, Refusal> {
        let cp = self.checkpoint();
        let old = w.cosigned(self.signer.vkey()).map_or(0, |c| c.size);
        let proof = if old <= cp.size {
            self.ledger
                .consistency_proof(old, cp.size)
                .expect("proof")
                .proof
        } else {
            Vec::new()
        };
        match w.add_checkpoint(old, &proof, &cp.note, time) {
            Ok(line) => Ok(format!("{}{line}", cp.note)),
            Err(Ok(refusal)) => Err(refusal),
            Err(Err(e)) => panic!("witness failed: {e}"),
        }
    }
}

fn witness(dir: &Path, name: &str, seed: u8, log: &Log) -> Witness {
    let mut w = Witness::open(name, [seed; 32], dir.join(format!("{name}.json"))).expect("witness");
    w.add_log(log.signer.vkey()).expect("log key");
    w
}

#[test]
fn two_witnesses_cosign_a_growing_ledger_and_the_cosignatures_count() {
    let wdir = tempfile::tempdir().expect("tmp");
    let l = log("host-a/osmoda-ledger");
    let mut a = witness(wdir.path(), "witness-a", 1, &l);
    let mut b = witness(wdir.path(), "witness-b", 2, &l);
    let keys = vec![a.vkey(), b.vkey()];
    l.append(10, "x");
    let first_a = l.submit(&mut a, 1_700_000_000).expect("a cosigns");
    l.submit(&mut b, 1_700_000_001).expect("b cosigns");
    assert_eq!(count_cosignatures(&first_a, &keys).expect("count"), 1);
    l.append(7, "y");
    let note_a = l.submit(&mut a, 1_700_000_100).expect("a cosigns again");
    let line_b = l.submit(&mut b, 1_700_000_101).expect("b cosigns again");
    // Both cosignatures beside the checkpoint: the requirement of two is met, of three not.
    let b_line = line_b.lines().last().expect("b's cosignature line");
    let both = format!("{note_a}{b_line}\n");
    assert_eq!(count_cosignatures(&both, &keys).expect("count"), 2);
    // A listed key twice still counts once; an unknown key counts nothing.
    let dup = vec![a.vkey(), a.vkey()];
    assert_eq!(count_cosignatures(&both, &dup).expect("count"), 1);
    let c = witness(wdir.path(), "witness-c", 3, &l);
    assert_eq!(count_cosignatures(&both, &[c.vkey()]).expect("count"), 0);
    // A cosignature does not carry over to another checkpoint body.
    let other = both.replacen("\n17\n", "\n18\n", 1);
    assert_eq!(count_cosignatures(&other, &keys).expect("count"), 0);
    assert_eq!(a.cosigned(l.signer.vkey()).map(|c| c.size), Some(17));
}

#[test]
fn a_rolled_back_or_forked_ledger_is_refused_even_after_a_restart() {
    let wdir = tempfile::tempdir().expect("tmp");
    let l = log("host-a/osmoda-ledger");
    let mut a = witness(wdir.path(), "witness-a", 1, &l);
    l.append(20, "x");
    l.submit(&mut a, 1).expect("cosigned at 20");
    // The machine restores an old ledger file: 12 of the 20 events, then new ones to 25.
    let old_db = l._dir.path().join("old.db");
    {
        let conn = rusqlite::Connection::open(l.ledger.path()).expect("sqlite");
        conn.execute("VACUUM INTO ?1", [old_db.to_str().expect("utf-8")])
            .expect("copy");
    }
    let conn = rusqlite::Connection::open(&old_db).expect("sqlite");
    conn.execute_batch(
        "DELETE FROM events WHERE id > 12; UPDATE sqlite_sequence SET seq = 12 WHERE name = 'events';\
         DELETE FROM tree_runs;",
    )
    .expect("roll back");
    drop(conn);
    let forked = Log {
        _dir: tempfile::tempdir().expect("tmp"),
        ledger: Ledger::open(&old_db).expect("reopen"),
        signer: CheckpointSigner::from_file(&{
            // Same key: the attacker is root on the machine.
            let p = l._dir.path().join("k");
            assert!(p.exists());
            p
        })
        .expect("signer"),
    };
    // Smaller than what was cosigned: a rollback.
    match forked.submit(&mut a, 2) {
        Err(Refusal::Rollback {
            cosigned: 20,
            new: 12,
        }) => {}
        other => panic!("expected a rollback refusal, got {other:?}"),
    }
    // Grown past it again, with different events: not consistent.
    forked.append(13, "fork");
    match forked.submit(&mut a, 3) {
        Err(Refusal::Inconsistent { cosigned: 20, .. }) => {}
        other => panic!("expected an inconsistency refusal, got {other:?}"),
    }
    // A restarted witness remembers.
    drop(a);
    let mut a = witness(wdir.path(), "witness-a", 1, &l);
    assert!(matches!(
        forked.submit(&mut a, 4),
        Err(Refusal::Inconsistent { .. })
    ));
    // The honest ledger still gets cosigned.
    l.append(3, "y");
    l.submit(&mut a, 5).expect("the real ledger");
}

#[test]
fn wrong_sizes_keys_and_logs_are_refused_with_the_reason() {
    let wdir = tempfile::tempdir().expect("tmp");
    let l = log("host-a/osmoda-ledger");
    let mut a = witness(wdir.path(), "witness-a", 1, &l);
    l.append(5, "x");
    l.submit(&mut a, 1).expect("cosigned at 5");
    l.append(5, "y");
    let cp = l.checkpoint();
    // A proof from another size than the witness has: it says which size to use.
    let proof = l.ledger.consistency_proof(3, 10).expect("proof").proof;
    match a.add_checkpoint(3, &proof, &cp.note, 2) {
        Err(Ok(Refusal::Conflict {
            witness_size: 5,
            claimed: 3,
        })) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    // A bad proof.
    let mut proof = l.ledger.consistency_proof(5, 10).expect("proof").proof;
    proof[0] = "00".repeat(32);
    assert!(matches!(
        a.add_checkpoint(5, &proof, &cp.note, 2),
        Err(Ok(Refusal::Inconsistent { .. }))
    ));
    // A note signed by another key for the same origin.
    let impostor = log("host-a/osmoda-ledger");
    impostor.append(10, "z");
    assert!(matches!(
        a.add_checkpoint(5, &[], &impostor.checkpoint().note, 2),
        Err(Ok(Refusal::BadSignature(_)))
    ));
    // A log the witness does not watch.
    let stranger = log("host-b/osmoda-ledger");
    stranger.append(1, "s");
    assert!(matches!(
        a.add_checkpoint(0, &[], &stranger.checkpoint().note, 2),
        Err(Ok(Refusal::UnknownLog(o))) if o == "host-b/osmoda-ledger"
    ));
    // Nothing of that changed the witness.
    assert_eq!(a.cosigned(l.signer.vkey()).map(|c| c.size), Some(5));
    assert!(matches!(
        Witness::open("two words", [0; 32], wdir.path().join("x.json")),
        Err(LedgerError::InvalidKey(_))
    ));
}

/// Two machines installed from one configuration may sign under one origin (an operator's
/// `keyFile` named after the shared hostname): a witness keeps each log by (origin, key), so
/// it cosigns both and a rollback of one is refused without touching the other. A state file
/// written when logs were keyed by origin alone is taken over by the one log of that origin.
#[test]
fn logs_sharing_an_origin_are_kept_apart_by_their_keys() {
    let wdir = tempfile::tempdir().expect("tmp");
    let one = log("osmoda-server/osmoda-ledger");
    let two = log("osmoda-server/osmoda-ledger");
    let mut w = witness(wdir.path(), "witness-a", 1, &one);
    w.add_log(two.signer.vkey()).expect("second log key");
    one.append(8, "x");
    two.append(3, "y");
    one.submit(&mut w, 1).expect("the first log is cosigned");
    two.submit(&mut w, 2)
        .expect("the second log, same origin, is cosigned too");
    assert_eq!(w.cosigned(one.signer.vkey()).map(|c| c.size), Some(8));
    assert_eq!(w.cosigned(two.signer.vkey()).map(|c| c.size), Some(3));
    let three = two.checkpoint();
    two.append(4, "y");
    two.submit(&mut w, 3).expect("the second log grows");
    one.append(1, "x");
    one.submit(&mut w, 4)
        .expect("the first log grows: nothing of the second's state is its");
    // The second log rolled back to its size-3 checkpoint is refused; the first is untouched.
    assert!(matches!(
        w.add_checkpoint(7, &[], &three.note, 5),
        Err(Ok(Refusal::Rollback {
            cosigned: 7,
            new: 3
        }))
    ));
    assert_eq!(w.cosigned(one.signer.vkey()).map(|c| c.size), Some(9));

    // The older state format (keyed by origin) belongs to the one log of that origin.
    let legacy = wdir.path().join("legacy.json");
    std::fs::write(
        &legacy,
        r#"{"osmoda-server/osmoda-ledger":{"size":9,"root":"00"}}"#,
    )
    .expect("state");
    let mut old = Witness::open("witness-c", [3; 32], legacy).expect("open");
    old.add_log(one.signer.vkey()).expect("log key");
    assert_eq!(old.cosigned(one.signer.vkey()).map(|c| c.size), Some(9));
}

/// Review 18-11 finding 3: the state an older witness kept under an origin belonged to the
/// *last* key configured for it. With two keys of that origin it is not given to the first:
/// each log keeps its own history, the one whose checkpoint is consistent with the legacy
/// state takes it over, and the other starts fresh (no false rollback).
#[test]
fn legacy_state_of_a_shared_origin_goes_only_to_the_log_consistent_with_it() {
    let wdir = tempfile::tempdir().expect("tmp");
    let a = log("osmoda-server/osmoda-ledger");
    let b = log("osmoda-server/osmoda-ledger");
    b.append(40, "b");
    let b40 = b.ledger.tree_head().expect("head");
    let legacy = wdir.path().join("legacy.json");
    std::fs::write(
        &legacy,
        format!(
            r#"{{"osmoda-server/osmoda-ledger":{{"size":40,"root":"{}"}}}}"#,
            b40.root
        ),
    )
    .expect("state");
    let mut w = Witness::open("witness-c", [3; 32], legacy.clone()).expect("open");
    w.add_log(a.signer.vkey()).expect("a");
    w.add_log(b.signer.vkey()).expect("b");
    // Ambiguous: neither key is credited with B's size until a checkpoint proves whose it is.
    assert_eq!(w.cosigned(a.signer.vkey()), None);
    assert_eq!(w.cosigned(b.signer.vkey()), None);
    // A's size-30 checkpoint is A's own first one, not a rollback of B's 40.
    a.append(30, "a");
    a.submit(&mut w, 1).expect("A is cosigned from 0");
    assert_eq!(w.cosigned(a.signer.vkey()).map(|c| c.size), Some(30));
    // B proves consistency from the legacy 40: it takes the legacy state over.
    b.append(5, "b");
    let cp = b.checkpoint();
    let proof = b.ledger.consistency_proof(40, 45).expect("proof").proof;
    w.add_checkpoint(40, &proof, &cp.note, 2)
        .expect("B continues from the legacy state");
    assert_eq!(w.cosigned(b.signer.vkey()).map(|c| c.size), Some(45));
    // From then on B rolled back below 45 is refused, and the legacy entry is gone.
    let saved = std::fs::read_to_string(&legacy).expect("state");
    assert!(
        !saved.contains("\"osmoda-server/osmoda-ledger\""),
        "{saved}"
    );
    assert!(matches!(
        w.add_checkpoint(45, &[], &b.signer.sign(&b40).expect("sign").note, 3),
        Err(Ok(Refusal::Rollback {
            cosigned: 45,
            new: 40
        }))
    ));
}

/// With a single key of the origin the legacy state is that log's, as before, and a peer
/// named when cosigning is pinned as the log's owner.
#[test]
fn a_single_key_takes_the_legacy_state_and_its_first_peer_owns_it() {
    let wdir = tempfile::tempdir().expect("tmp");
    let a = log("osmoda-server/osmoda-ledger");
    a.append(9, "a");
    let root = a.ledger.tree_head().expect("head").root;
    let legacy = wdir.path().join("legacy.json");
    std::fs::write(
        &legacy,
        format!(r#"{{"osmoda-server/osmoda-ledger":{{"size":9,"root":"{root}"}}}}"#),
    )
    .expect("state");
    let mut w = Witness::open("witness-c", [3; 32], legacy).expect("open");
    w.add_log(a.signer.vkey()).expect("a");
    assert_eq!(w.cosigned(a.signer.vkey()).map(|c| c.size), Some(9));
    assert_eq!(w.owner_of("osmoda-server/osmoda-ledger"), None);
    a.append(2, "a");
    let cp = a.checkpoint();
    let proof = a.ledger.consistency_proof(9, 11).expect("proof").proof;
    w.add_checkpoint_from(Some("alpha"), 9, &proof, &cp.note, 1)
        .expect("cosigned from the legacy size");
    assert_eq!(w.owner_of("osmoda-server/osmoda-ledger"), Some("alpha"));
    // Another peer asking later does not take the log over.
    w.add_checkpoint_from(Some("mallory"), 11, &[], &cp.note, 2)
        .expect("the same checkpoint again");
    assert_eq!(w.owner_of("osmoda-server/osmoda-ledger"), Some("alpha"));
}

/// A cosignature counts as fresh only when signed at or after the bound asked for.
#[test]
fn cosignatures_older_than_the_bound_do_not_count() {
    let wdir = tempfile::tempdir().expect("tmp");
    let l = log("host-a/osmoda-ledger");
    let mut a = witness(wdir.path(), "witness-a", 1, &l);
    l.append(3, "x");
    let signed = l.submit(&mut a, 1_000).expect("cosigned");
    let keys = vec![a.vkey()];
    assert_eq!(
        osmoda_ledger::witness::count_cosignatures_since(&signed, &keys, 1_000).expect("count"),
        1
    );
    assert_eq!(
        osmoda_ledger::witness::count_cosignatures_since(&signed, &keys, 1_001).expect("count"),
        0
    );
    let line = signed.lines().last().expect("line");
    assert_eq!(osmoda_ledger::witness::cosignature_time(line), Some(1_000));
}
