//! agentd signs ledger checkpoints every N events and at shutdown, writes them outside the
//! database and records them in the ledger; the database is checked against them and the event
//! a recomputed chain hides is named (agentctl's side: `agentctl/tests/verify_ledger.rs`).

mod common;

use std::time::Duration;

use common::{ClientExt, Daemon};
use osmoda_ledger::{verify_checkpoints, CheckpointFile};
use serde_json::json;

fn settings(every: u64) -> agentd::Settings {
    agentd::Settings {
        checkpoint: Some(agentd::checkpoints::CheckpointSettings {
            every_events: every,
            interval: Duration::from_secs(3600),
            key_file: None,
        }),
        ..agentd::Settings::default()
    }
}

/// Waits (bounded, on the ledger's commit signal) until `n` checkpoint events are recorded.
async fn checkpoint_events(d: &Daemon, n: usize) -> Vec<osmoda_ledger::Event> {
    let mut commits = d.state.commits.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let q = osmoda_ledger::Query {
            kind: Some("agentd.checkpoint".into()),
            ..Default::default()
        };
        let found = d.state.ledger.query(&q).expect("query");
        if found.len() >= n {
            return found;
        }
        tokio::time::timeout_at(deadline, commits.changed())
            .await
            .expect("checkpoints in time")
            .expect("ledger open");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoints_every_n_events_and_at_shutdown_anchor_the_ledger() {
    let d = Daemon::start_with(settings(5)).await;
    let c = d.agent();
    for i in 0..12 {
        c.post_ok(
            "/events/append",
            &json!({ "type": "test.note", "daemon": "tester", "payload": { "i": i } }),
        )
        .await;
    }
    let events = checkpoint_events(&d, 2).await;
    let payload: serde_json::Value = serde_json::from_str(&events[0].payload).expect("json");
    // The generated key's origin ends in its own hash (unique per machine, not per hostname).
    let origin = payload["note"]
        .as_str()
        .expect("note")
        .lines()
        .next()
        .expect("origin")
        .to_owned();
    let suffix = origin
        .rsplit_once("/osmoda-ledger/")
        .expect("origin form")
        .1;
    assert!(
        suffix.len() == 16 && suffix.bytes().all(|b| b.is_ascii_hexdigit()),
        "{origin}"
    );
    assert_eq!(events[0].actor, "agentd");
    let newest = c.get_ok("/ledger/checkpoint").await;
    let vkey_api = newest["vkey"].as_str().expect("vkey").to_owned();
    let cp: osmoda_ledger::SignedCheckpoint =
        serde_json::from_value(newest["checkpoint"].clone()).expect("checkpoint");
    osmoda_ledger::verify_signed(&cp, &vkey_api).expect("the served checkpoint verifies");
    let state = d.state.state_dir.clone();
    let file = CheckpointFile::new(state.join("checkpoints.jsonl"));
    let vkey = std::fs::read_to_string(state.join("checkpoint.vkey")).expect("vkey");
    let mode = std::fs::metadata(state.join("checkpoint.key"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
        .expect("key");
    assert_eq!(mode, 0o600, "the generated key is private");
    // One more event, then a clean stop (and a start without checkpoints, which keeps the
    // directory): the last checkpoint covers it.
    c.post_ok(
        "/events/append",
        &json!({ "type": "test.note", "daemon": "tester", "payload": { "last": true } }),
    )
    .await;
    let d = d.restart().await;
    let cps = file.read().expect("checkpoints");
    let db = state.join("ledger.db");
    let events = osmoda_ledger::verify(&db).expect("chain").events;
    let newest = cps.last().expect("a checkpoint");
    assert_eq!(
        newest.size + 1,
        events,
        "the shutdown checkpoint covers all but its own record"
    );
    let report = verify_checkpoints(&db, &cps, vkey.trim()).expect("verify");
    assert!(report.is_ok(), "{report:?}");

    // Rewrite event 3 and recompute the whole chain: the chain check passes, the checkpoints
    // do not, and event 3 is named.
    let conn = rusqlite::Connection::open(&db).expect("sqlite");
    conn.execute("UPDATE events SET payload = '{\"i\":99}' WHERE id = 3", [])
        .expect("tamper");
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
    assert!(osmoda_ledger::verify(&db).expect("chain").is_ok());
    let bad = verify_checkpoints(&db, &cps, vkey.trim())
        .expect("verify")
        .first_bad
        .expect("detected");
    assert!(bad.to_string().contains("event 3 was changed"), "{bad}");
    d.stop().await;
}

#[tokio::test]
async fn a_configured_key_file_that_is_not_a_key_stops_agentd_with_the_reason() {
    let dir = tempfile::tempdir().expect("tmp");
    let key = dir.path().join("bad.key");
    std::fs::write(&key, "not a key\n").expect("write");
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let with_key = |k: &std::path::Path| {
        let mut s = settings(5);
        if let Some(c) = s.checkpoint.as_mut() {
            c.key_file = Some(k.to_path_buf());
        }
        s
    };
    let err = agentd::AppState::open(dir.path().join("state"), with_key(&key), None)
        .err()
        .expect("refused");
    assert!(
        format!("{err:#}").contains("agentctl ledger keygen"),
        "{err:#}"
    );
    // A real key others can read (anyone who reads it signs as this machine), or a missing one.
    let (skey, _) = osmoda_ledger::generate_key("t.example/osmoda-ledger").expect("key");
    let loose = dir.path().join("loose.key");
    std::fs::write(&loose, format!("{skey}\n")).expect("write");
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .expect("chmod");
    for (k, want) in [
        (loose.clone(), "chmod 0600"),
        (dir.path().join("missing.key"), "agentctl ledger keygen"),
    ] {
        let err = agentd::AppState::open(dir.path().join("state2"), with_key(&k), None)
            .err()
            .expect("refused");
        assert!(format!("{err:#}").contains(want), "{err:#}");
    }
    std::fs::set_permissions(&loose, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    agentd::AppState::open(dir.path().join("state3"), with_key(&loose), None).expect("0600 opens");
}

/// Opens the state in `dir` and serves it (as agentd's start does), returning the daemon parts.
async fn serve(
    dir: &std::path::Path,
    every: u64,
) -> (
    std::sync::Arc<agentd::AppState>,
    osmoda_client::Client,
    agentd::Trigger,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let (sock, human) = (dir.join("agentd.sock"), dir.join("approval.sock"));
    let _ = std::fs::remove_file(&sock);
    let _ = std::fs::remove_file(&human);
    let st = agentd::AppState::open(dir.join("state"), settings(every), None).expect("open");
    let agent = tokio::net::UnixListener::bind(&sock).expect("bind");
    let human = tokio::net::UnixListener::bind(&human).expect("bind");
    let (trigger, shutdown) = agentd::shutdown_channel();
    let task = tokio::spawn(agentd::serve(agent, human, st.clone(), shutdown));
    (st, osmoda_client::Client::new(&sock), trigger, task)
}

async fn notes(c: &osmoda_client::Client, n: usize) {
    for i in 0..n {
        c.post_ok(
            "/events/append",
            &json!({ "type": "test.note", "daemon": "tester", "payload": { "i": i } }),
        )
        .await;
    }
}

/// Waits (bounded) until the start check has reported the ledger on /health.
async fn degraded(c: &osmoda_client::Client) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let h = c.get_ok("/health").await;
        if let Some(d) = h["degraded"].as_array().and_then(|d| d.first()) {
            return d.as_str().unwrap_or_default().to_owned();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/health never degraded: {h}"
        );
        tokio::time::sleep(common::SHORT).await;
    }
}

fn recompute(conn: &rusqlite::Connection) {
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

/// agentd never re-signs a forged history: a row edited with its chain recomputed, the stored
/// tree deleted (rebuilt from the forged rows) and the checkpoint file emptied; or the last
/// row cut. It checks the ledger against the newest checkpoint it signed (the file or its own
/// `agentd.checkpoint` events) at start and before each signature, and refuses, loudly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agentd_refuses_to_sign_over_a_ledger_that_disagrees_with_its_checkpoints() {
    for forge in ["edit, drop tree, empty file", "cut the last row"] {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path();
        let (st, c, trigger, task) = serve(dir, 5).await;
        notes(&c, 12).await;
        trigger.fire();
        task.await.expect("join").expect("serve");
        drop(st);
        let state = dir.join("state");
        let cps = CheckpointFile::new(state.join("checkpoints.jsonl"));
        let before = cps.read().expect("read").len();
        assert!(before >= 1, "{before} checkpoints");
        let conn = rusqlite::Connection::open(state.join("ledger.db")).expect("sqlite");
        if forge.starts_with("edit") {
            conn.execute(
                "UPDATE events SET payload = '{\"i\":\"forged\"}' WHERE id = 3",
                [],
            )
            .expect("edit");
            recompute(&conn);
            conn.execute("DELETE FROM tree_runs", [])
                .expect("drop tree");
            std::fs::write(cps.path(), "").expect("empty");
        } else {
            conn.execute_batch("DELETE FROM events WHERE id = (SELECT max(id) FROM events);")
                .expect("cut");
        }
        drop(conn);
        refuses_to_sign(dir, forge, "ledger: ").await;
    }
}

/// Serves the forged state in `dir` and checks agentd reports it (`/health` degraded with
/// `why` in the reason), records `agentd.ledger.tampered` once, refuses to sign, and adds
/// nothing to the checkpoint file, not even at shutdown.
async fn refuses_to_sign(dir: &std::path::Path, forge: &str, why: &str) {
    let cps_path = dir.join("state/checkpoints.jsonl");
    let file_before = std::fs::read(&cps_path).unwrap_or_default();
    let (st, c, trigger, task) = serve(dir, 5).await;
    let reason = degraded(&c).await;
    assert!(reason.contains(why), "{forge}: {reason}");
    let q = osmoda_ledger::Query {
        kind: Some("agentd.ledger.tampered".into()),
        ..Default::default()
    };
    assert_eq!(st.ledger.query(&q).expect("query").len(), 1, "{forge}");
    notes(&c, 12).await;
    let err = st
        .checkpoints
        .as_ref()
        .expect("checkpoints on")
        .checkpoint(&st)
        .await
        .expect_err("refused");
    assert!(
        format!("{err}").contains("refusing to sign"),
        "{forge}: {err}"
    );
    trigger.fire();
    task.await.expect("join").expect("serve");
    assert_eq!(
        std::fs::read(&cps_path).unwrap_or_default(),
        file_before,
        "{forge}: nothing signed over the forged ledger, not even at shutdown"
    );
    assert_eq!(
        st.ledger.query(&q).expect("query").len(),
        1,
        "{forge}: recorded once"
    );
}

/// Appends `n` events to the ledger at `db` while no agentd has it open.
fn append_offline(db: &std::path::Path, n: usize) {
    let ledger = osmoda_ledger::Ledger::open(db).expect("ledger");
    for i in 0..n {
        ledger
            .append_blocking(osmoda_ledger::NewEvent::new(
                "t.e",
                "a",
                format!(r#"{{"i":{i}}}"#),
            ))
            .expect("append");
    }
}

/// Events that were there before the checkpoint task subscribed to commits (appended while
/// agentd was down, or by requests that beat the task at start) are signed at start, without
/// waiting for another event or the timer (an hour here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_already_there_at_start_are_signed_without_another_event() {
    let tmp = tempfile::tempdir().expect("tmp");
    std::fs::create_dir_all(tmp.path().join("state")).expect("state");
    append_offline(&tmp.path().join("state/ledger.db"), 7);
    let (st, _c, trigger, task) = serve(tmp.path(), 5).await;
    let q = osmoda_ledger::Query {
        kind: Some("agentd.checkpoint".into()),
        ..Default::default()
    };
    let mut commits = st.commits.subscribe();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while st.ledger.query(&q).expect("query").is_empty() {
        tokio::time::timeout_at(deadline, commits.changed())
            .await
            .expect("a checkpoint of the 7 events at start")
            .expect("ledger open");
    }
    trigger.fire();
    task.await.expect("join").expect("serve");
}

/// A clean restart is not reported: the check passes on an untouched ledger.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_ledger_passes_the_start_check() {
    let tmp = tempfile::tempdir().expect("tmp");
    let (st, c, trigger, task) = serve(tmp.path(), 5).await;
    notes(&c, 7).await;
    trigger.fire();
    task.await.expect("join").expect("serve");
    drop(st);
    // A torn line at the end of the file (a crash while appending) is cut at start.
    let path = tmp.path().join("state/checkpoints.jsonl");
    let mut bytes = std::fs::read(&path).expect("read");
    let whole = bytes.len();
    bytes.extend_from_slice(b"{\"origin\":\"x\",\"si");
    std::fs::write(&path, &bytes).expect("torn");
    let (st, c, trigger, task) = serve(tmp.path(), 5).await;
    assert_eq!(
        std::fs::read(&path).expect("read").len(),
        whole,
        "torn line cut"
    );
    notes(&c, 7).await;
    let cp = st.checkpoints.as_ref().expect("on");
    assert_eq!(cp.check(&st, true).await.expect("check"), None);
    cp.checkpoint(&st).await.expect("signs");
    let h = c.get_ok("/health").await;
    assert!(h.get("degraded").is_none(), "{h}");
    trigger.fire();
    task.await.expect("join").expect("serve");
    let n = CheckpointFile::new(&path).read().expect("whole file").len();
    assert!(n >= 3, "{n}");
}

/// Every signing key agentd loads besides the checkpoint key is held to its rule, at start and
/// by `check-config`: the witness key (whoever reads it cosigns any log's checkpoints as this
/// machine) and the capability key (whoever reads it mints egress tokens).
#[tokio::test]
async fn a_signing_key_others_can_read_is_refused_at_start_and_by_check_config() {
    for which in ["witness", "capability"] {
        let dir = tempfile::tempdir().expect("tmp");
        let key = dir.path().join(format!("{which}.key"));
        std::fs::write(&key, format!("{}\n", "ab".repeat(32))).expect("write");
        let chmod = |mode| {
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .expect("chmod")
        };
        chmod(0o644);
        let with_key = |k: &std::path::Path| match which {
            "witness" => agentd::Settings {
                witness: Some(agentd::witness::WitnessSettings {
                    mesh_socket: dir.path().join("mesh.sock"),
                    key_file: Some(k.to_path_buf()),
                    ..Default::default()
                }),
                ..settings(5)
            },
            _ => agentd::Settings {
                capability_key: Some(k.to_path_buf()),
                ..settings(5)
            },
        };
        let err = agentd::AppState::open(dir.path().join("state"), with_key(&key), None)
            .err()
            .expect("refused");
        assert!(
            format!("{err:#}").contains(&format!("the {which} key")),
            "{err:#}"
        );
        assert!(format!("{err:#}").contains("chmod 0600"), "{err:#}");

        let cfg = dir.path().join("agentd.json");
        let (_, log) = osmoda_ledger::generate_key("other.example/osmoda-ledger").expect("key");
        let witness_key = (which == "witness").then_some(&key);
        std::fs::write(
            &cfg,
            json!({
                "approval": { "required": [], "ttl_secs": 900, "critical_packages": [] },
                "memory": { "embedding_endpoint": null, "embedding_model": "m", "max_injected_tokens": 100 },
                "daemons": { "watch": null, "routines": null, "keyd": null, "mesh": dir.path().join("mesh.sock"), "voice": null, "egress": null },
                "ledger": {
                    "checkpoint": { "enable": true, "every_events": 5, "interval_secs": 3600, "key_file": null },
                    "witness": { "peers": {}, "logs": [log], "key_file": witness_key },
                },
                "backup": { "dir": null, "keep": null, "sources": {} },
            })
            .to_string(),
        )
        .expect("config");
        let check = || {
            let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_agentd"));
            if which == "capability" {
                c.arg("--capability-key").arg(&key);
            }
            c.arg("check-config")
                .arg(&cfg)
                .env_remove("NIX_BUILD_TOP")
                .output()
                .expect("check-config")
        };
        let o = check();
        assert!(
            !o.status.success(),
            "a 0644 {which} key passed check-config"
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("group or others can read it"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        chmod(0o600);
        let o = check();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        agentd::AppState::open(dir.path().join("state2"), with_key(&key), None)
            .unwrap_or_else(|e| panic!("a 0600 {which} key opens: {e:#}"));
    }
}

/// Machines installed from one configuration share a hostname: the generated checkpoint key's
/// origin and the witness name still differ between them (they end in the key's own hash), so
/// a witness or a verifier never takes one machine's log for another's.
#[tokio::test]
async fn machines_of_one_configuration_get_distinct_origins_and_witness_names() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut origins = Vec::new();
    let mut witnesses = Vec::new();
    for m in ["one", "two"] {
        let state = dir.path().join(m);
        drop(agentd::AppState::open(state.clone(), settings(5), None).expect("open"));
        let vkey = std::fs::read_to_string(state.join("checkpoint.vkey")).expect("vkey");
        origins.push(vkey.split('+').next().expect("name").to_owned());
        let wkey = dir.path().join(format!("{m}.witness.key"));
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).expect("random");
        std::fs::write(&wkey, hex::encode(seed)).expect("write");
        std::fs::set_permissions(&wkey, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        let w = agentd::witness::vkey_of(&wkey).expect("witness vkey");
        witnesses.push(w.split('+').next().expect("name").to_owned());
    }
    assert_ne!(origins[0], origins[1]);
    assert_ne!(witnesses[0], witnesses[1]);
    for o in &origins {
        assert!(o.contains("/osmoda-ledger/"), "{o}");
    }
    for w in &witnesses {
        assert!(w.contains("/osmoda-witness/"), "{w}");
    }
}

/// A key rotation retires the old key at the ledger's size then (`<vkey> <size>` in
/// checkpoint.vkeys), and a retired key is refused if it is configured again: keys are
/// rotated out because they may have leaked.
#[tokio::test]
async fn a_rotated_out_key_is_retired_at_the_ledger_size_and_never_signs_again() {
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state");
    let key = |name: &str| {
        let (skey, vkey) = osmoda_ledger::generate_key(name).expect("key");
        let k = dir.path().join(name.replace('/', "_"));
        std::fs::write(&k, format!("{skey}\n")).expect("write");
        std::fs::set_permissions(&k, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        (k, vkey)
    };
    let with_key = |k: &std::path::Path| {
        let mut s = settings(5);
        if let Some(c) = s.checkpoint.as_mut() {
            c.key_file = Some(k.to_path_buf());
        }
        s
    };
    let (a, va) = key("h.example/osmoda-ledger-a");
    let (b, vb) = key("h.example/osmoda-ledger-b");
    drop(agentd::AppState::open(state.clone(), with_key(&a), None).expect("open with a"));
    append_offline(&state.join("ledger.db"), 4);
    drop(agentd::AppState::open(state.clone(), with_key(&b), None).expect("open with b"));
    let history = std::fs::read_to_string(state.join("checkpoint.vkeys")).expect("history");
    assert_eq!(history, format!("{va} 4\n{vb}\n"));
    // Opening with b again changes nothing; a again is refused, naming why.
    drop(agentd::AppState::open(state.clone(), with_key(&b), None).expect("b again"));
    assert_eq!(
        std::fs::read_to_string(state.join("checkpoint.vkeys")).expect("history"),
        history
    );
    let err = agentd::AppState::open(state.clone(), with_key(&a), None)
        .err()
        .expect("a retired key is refused");
    assert!(
        format!("{err:#}").contains("was retired when the ledger had 4 events"),
        "{err:#}"
    );
}

/// A checkpoint record that is not a checkpoint is tamper evidence: an `agentd.checkpoint`
/// row rewritten with the chain recomputed (the newest, which no checkpoint covers, and a
/// covered one), or a broken middle line of the checkpoint file. agentd records
/// `agentd.ledger.tampered` once, `/health` is degraded and nothing more is signed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_record_that_does_not_parse_is_tamper_evidence() {
    for forge in ["newest record", "covered record", "file line"] {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path();
        let (st, c, trigger, task) = serve(dir, 5).await;
        notes(&c, 12).await;
        // At least two checkpoints whatever the load (appends committed in one batch make one).
        let cp = st.checkpoints.as_ref().expect("on");
        cp.checkpoint(&st).await.expect("signs");
        notes(&c, 1).await;
        cp.checkpoint(&st).await.expect("signs");
        trigger.fire();
        task.await.expect("join").expect("serve");
        drop(st);
        let state = dir.join("state");
        let cps_path = state.join("checkpoints.jsonl");
        if forge == "file line" {
            let text = std::fs::read_to_string(&cps_path).expect("read");
            let mut lines: Vec<&str> = text.lines().collect();
            assert!(lines.len() >= 2, "{text}");
            lines[0] = "{\"broken\":";
            std::fs::write(&cps_path, format!("{}\n", lines.join("\n"))).expect("write");
        } else {
            let conn = rusqlite::Connection::open(state.join("ledger.db")).expect("sqlite");
            let ids: Vec<i64> = conn
                .prepare("SELECT id FROM events WHERE type = 'agentd.checkpoint' ORDER BY id")
                .expect("prepare")
                .query_map([], |r| r.get(0))
                .expect("rows")
                .collect::<Result<_, _>>()
                .expect("rows");
            let id = if forge == "newest record" {
                *ids.last().expect("one")
            } else {
                ids[0]
            };
            conn.execute(
                "UPDATE events SET payload = '{\"x\":1}' WHERE id = ?1",
                [id],
            )
            .expect("edit");
            recompute(&conn);
        }
        refuses_to_sign(dir, forge, "is not a checkpoint").await;
    }
}

/// Events appended between a checkpoint's signature and its record are covered by the next
/// one: after shutdown the newest checkpoint covers every event but its own record. (The
/// signer once counted from the record's id, so notes that landed before a record were anchored
/// only if more came after them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_that_land_before_a_checkpoints_record_are_anchored_at_shutdown() {
    for _ in 0..3 {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path();
        let (st, c, trigger, task) = serve(dir, 5).await;
        // All at once, so some land while the first checkpoint is signed and recorded.
        let mut appends = tokio::task::JoinSet::new();
        for i in 0..24 {
            let c = osmoda_client::Client::new(dir.join("agentd.sock"));
            appends.spawn(async move {
                c.post_ok(
                    "/events/append",
                    &json!({ "type": "test.note", "daemon": "tester", "payload": { "i": i } }),
                )
                .await;
            });
        }
        while let Some(r) = appends.join_next().await {
            r.expect("append task");
        }
        drop(c);
        trigger.fire();
        task.await.expect("join").expect("serve");
        let size = st.ledger.tree_head().expect("head").size;
        drop(st);
        let newest = CheckpointFile::new(dir.join("state/checkpoints.jsonl"))
            .newest()
            .expect("read")
            .expect("one checkpoint");
        assert!(
            newest.size + 1 >= size,
            "the newest checkpoint covers {} of {size} events",
            newest.size
        );
    }
}

/// Changes one base64 character of the signature on the last line of a signed note (the note
/// still parses; its signature no longer verifies).
fn break_signature(note: &str) -> String {
    let (body, sig) = note.trim_end().rsplit_once(' ').expect("signature line");
    let mut sig: Vec<char> = sig.chars().collect();
    let i = sig.len() - 10;
    sig[i] = if sig[i] == 'A' { 'B' } else { 'A' };
    format!("{body} {}\n", sig.into_iter().collect::<String>())
}

/// Review 18-11 finding 6: agentd and `agentctl verify-ledger` give the same verdict on a
/// checkpoint that parses but does not verify (its signature changed in the file, or in the
/// ledger's `agentd.checkpoint` record with the chain recomputed): tamper evidence,
/// `agentd.ledger.tampered` once, `/health` degraded, nothing signed on top of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_that_does_not_verify_is_tamper_evidence() {
    for forge in ["file signature", "record signature"] {
        let tmp = tempfile::tempdir().expect("tmp");
        let dir = tmp.path();
        let (st, c, trigger, task) = serve(dir, 5).await;
        notes(&c, 12).await;
        let cp = st.checkpoints.as_ref().expect("on");
        cp.checkpoint(&st).await.expect("signs");
        trigger.fire();
        task.await.expect("join").expect("serve");
        drop(st);
        let state = dir.join("state");
        let cps_path = state.join("checkpoints.jsonl");
        if forge == "file signature" {
            let text = std::fs::read_to_string(&cps_path).expect("read");
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            let last = lines.last_mut().expect("a line");
            let mut v: serde_json::Value = serde_json::from_str(last).expect("json");
            v["note"] = json!(break_signature(v["note"].as_str().expect("note")));
            *last = v.to_string();
            std::fs::write(&cps_path, format!("{}\n", lines.join("\n"))).expect("write");
        } else {
            let conn = rusqlite::Connection::open(state.join("ledger.db")).expect("sqlite");
            let (id, payload): (i64, String) = conn
                .query_row(
                    "SELECT id, payload FROM events WHERE type = 'agentd.checkpoint' ORDER BY id DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .expect("a record");
            let mut v: serde_json::Value = serde_json::from_str(&payload).expect("json");
            v["note"] = json!(break_signature(v["note"].as_str().expect("note")));
            conn.execute(
                "UPDATE events SET payload = ?1 WHERE id = ?2",
                (v.to_string(), id),
            )
            .expect("edit");
            recompute(&conn);
        }
        refuses_to_sign(dir, forge, "verifies under none of this ledger's keys").await;
    }
}

/// Review 18-11 finding 8: an operator's `# comment` in `checkpoint.vkeys` is skipped (as
/// verify-ledger skips it), and a line that does not parse is named by file and line.
#[tokio::test]
async fn checkpoint_vkeys_comments_are_skipped_and_a_bad_line_is_named() {
    let tmp = tempfile::tempdir().expect("tmp");
    let state = tmp.path().join("state");
    let st = agentd::AppState::open(state.clone(), settings(5), None).expect("open");
    drop(st);
    let vkeys = state.join("checkpoint.vkeys");
    let text = std::fs::read_to_string(&vkeys).expect("vkeys");
    std::fs::write(&vkeys, format!("# rotated in 2026 by ops\n{text}")).expect("comment");
    let st =
        agentd::AppState::open(state.clone(), settings(5), None).expect("a comment is skipped");
    drop(st);
    std::fs::write(&vkeys, format!("not a key at all\n{text}")).expect("bad line");
    let Err(err) = agentd::AppState::open(state.clone(), settings(5), None) else {
        panic!("a bad checkpoint.vkeys line is refused");
    };
    let msg = format!("{err:#}");
    assert!(
        msg.contains("checkpoint.vkeys key 1 does not parse"),
        "{msg}"
    );
}

/// Review 18-11 finding 2 (runtime side): a witness that cannot start (here its generated
/// key was made readable by others) records `agentd.witness.off` with the reason and puts
/// `/health` in degraded; it never turns off with only a log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_witness_that_cannot_start_is_recorded_and_degrades_health() {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().expect("tmp");
    let dir = tmp.path();
    let state = dir.join("state");
    std::fs::create_dir_all(&state).expect("state");
    let key = state.join(agentd::witness::GENERATED_KEY_FILE);
    std::fs::write(&key, format!("{}\n", "11".repeat(32))).expect("key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let (_, log_vkey) = osmoda_ledger::generate_key("beta/osmoda-ledger").expect("keygen");
    let settings = agentd::Settings {
        witness: Some(agentd::witness::WitnessSettings {
            mesh_socket: dir.join("no-mesh.sock"),
            peers: Default::default(),
            logs: vec![log_vkey],
            key_file: None,
        }),
        ..settings(5)
    };
    let (sock, human) = (dir.join("agentd.sock"), dir.join("approval.sock"));
    let st = agentd::AppState::open(state, settings, None).expect("open");
    let agent = tokio::net::UnixListener::bind(&sock).expect("bind");
    let human = tokio::net::UnixListener::bind(&human).expect("bind");
    let (trigger, shutdown) = agentd::shutdown_channel();
    let task = tokio::spawn(agentd::serve(agent, human, st.clone(), shutdown));
    let c = osmoda_client::Client::new(&sock);
    let reason = degraded(&c).await;
    assert!(
        reason.starts_with("witness: ") && reason.contains("witness key"),
        "{reason}"
    );
    let q = osmoda_ledger::Query {
        kind: Some("agentd.witness.off".into()),
        ..Default::default()
    };
    let off = st.ledger.query(&q).expect("query");
    assert_eq!(off.len(), 1);
    assert!(off[0].payload.contains("witness key"), "{}", off[0].payload);
    trigger.fire();
    task.await.expect("join").expect("serve");
}
