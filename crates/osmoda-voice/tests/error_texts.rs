//! Issue 11's error-text audit for osmoda-voice: every refusal of its API (routing, bodies,
//! audio paths outside the allowed directories, missing, relative or with `..`, files that are
//! not WAV, text it will not speak, a listen flag without audio) against a real osmoda-voice with
//! the real models keeps `osmoda_daemon::audit`'s rule: `{error, detail}` naming what was wrong,
//! no Debug dump, no internal error, none of its own config or socket paths.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use osmoda_client::Method;
use osmoda_daemon::audit::audit_row;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_says_what_was_wrong_in_one_shape() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let audio = dir.join("audio");
    std::fs::create_dir(&audio).unwrap();
    std::fs::write(audio.join("notes.txt"), "not audio").unwrap();
    std::fs::write(dir.join("outside.wav"), "x").unwrap();
    let agentd = Agentd::start(dir);
    let cfg = config(dir, std::slice::from_ref(&audio), None);
    let voice = Voice::start(dir, options(dir, cfg.clone(), &agentd.socket)).await;
    let private = vec![
        cfg.display().to_string(),
        voice.socket.display().to_string(),
        agentd.socket.display().to_string(),
    ];
    let a = |p: &str| audio.join(p).display().to_string();
    let outside = dir.join("outside.wav").display().to_string();
    let rows: Vec<(Method, &str, Option<Value>, u16, Vec<&str>)> = vec![
        (
            Method::GET,
            "/no/such/route",
            None,
            404,
            vec!["no such route GET /no/such/route", "/voice/speak"],
        ),
        (
            Method::GET,
            "/voice/speak",
            None,
            405,
            vec!["GET", "/voice/speak"],
        ),
        (
            Method::POST,
            "/voice/speak",
            Some(json!("text")),
            400,
            vec!["invalid JSON body", "expected a JSON object"],
        ),
        (
            Method::POST,
            "/voice/speak",
            Some(json!({"text": "hi", "loud": true})),
            400,
            vec!["unknown field `loud`", "`text`"],
        ),
        (
            Method::POST,
            "/voice/speak",
            Some(json!({"text": 5})),
            400,
            vec!["text", "expected a string"],
        ),
        (
            Method::POST,
            "/voice/speak",
            Some(json!({"text": ""})),
            400,
            vec!["text is empty"],
        ),
        (
            Method::POST,
            "/voice/speak",
            Some(json!({"text": "x".repeat(5000)})),
            400,
            vec!["4000"],
        ),
        (
            Method::POST,
            "/voice/transcribe",
            Some(json!({})),
            400,
            vec!["missing field `audio_path`"],
        ),
        (
            Method::POST,
            "/voice/transcribe",
            Some(json!({"audio_path": "rel.wav"})),
            400,
            vec!["rel.wav", "absolute"],
        ),
        (
            Method::POST,
            "/voice/transcribe",
            Some(json!({"audio_path": format!("{}/../outside.wav", audio.display())})),
            400,
            vec!["`..`"],
        ),
        (
            Method::POST,
            "/voice/transcribe",
            Some(json!({"audio_path": outside})),
            403,
            vec!["outside the directories", "audioDirs"],
        ),
        (
            Method::POST,
            "/voice/transcribe",
            Some(json!({"audio_path": a("missing.wav")})),
            404,
            vec!["missing.wav", "does not exist"],
        ),
        (
            Method::POST,
            "/voice/transcribe",
            Some(json!({"audio_path": a("notes.txt")})),
            415,
            vec!["notes.txt"],
        ),
        (
            Method::POST,
            "/voice/record",
            Some(json!({"duration_secs": "five"})),
            400,
            vec!["duration_secs", "expected a non-negative integer"],
        ),
        (
            Method::POST,
            "/voice/listen",
            Some(json!({"enabled": false, "audio_path": a("x.wav")})),
            400,
            vec!["audio_path goes with enabled: true"],
        ),
    ];
    let mut failures = Vec::new();
    for (method, path, body, status, needles) in &rows {
        let what = format!(
            "{method} {path} {}",
            body.as_ref().map(Value::to_string).unwrap_or_default()
        );
        let r = voice
            .client()
            .request(method.clone(), path, body.as_ref())
            .await
            .unwrap();
        if std::env::var("OSMODA_PRINT_ERRORS").is_ok() {
            println!("{} {what}\n    → {}", r.status, r.body);
        }
        failures.extend(audit_row(
            &what,
            (r.status, &r.body),
            *status,
            needles,
            &private,
        ));
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    // Nothing was spoken or transcribed.
    assert!(agentd.events("voice.").is_empty());
}
