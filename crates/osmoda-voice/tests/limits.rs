//! Bounded work: paths that cannot name a file are the caller's 400 (never a 500), audio without
//! samples is an empty text at once, at most `MAX_WAITING` transcriptions wait and one more is
//! refused at once, a waiting transcription whose caller leaves leaves the queue, a
//! language the model cannot do refuses the start, and piper runs without the daemon's
//! environment (the gateway token, model API keys).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{config, models, options, Agentd, Voice};
use osmoda_voice::stt::{Transcriber, MAX_WAITING};
use serde_json::json;

async fn until(what: &str, secs: u64, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what} within {secs} s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnameable_paths_are_400_and_an_empty_wav_is_an_empty_text_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let agentd = Agentd::start(dir.path());
    let audio = dir.path().join("audio");
    std::fs::create_dir_all(&audio).unwrap();
    osmoda_voice::audio::write_wav(&audio.join("empty.wav"), &[]).unwrap();
    osmoda_voice::audio::write_wav(&audio.join("short.wav"), &[0.1; 1000]).unwrap();
    std::os::unix::fs::symlink(audio.join("loop2.wav"), audio.join("loop1.wav")).unwrap();
    std::os::unix::fs::symlink(audio.join("loop1.wav"), audio.join("loop2.wav")).unwrap();
    // A partial speech left by a piper that outlived a crash is removed at start.
    let tmp = dir.path().join("voice/speech/.tmp-1-2-3.wav");
    std::fs::create_dir_all(tmp.parent().unwrap()).unwrap();
    std::fs::write(&tmp, "partial").unwrap();
    let cfg = config(dir.path(), std::slice::from_ref(&audio), None);
    let voice = Voice::start(dir.path(), options(dir.path(), cfg, &agentd.socket)).await;
    assert!(!tmp.exists());
    let a = audio.display().to_string();
    for (path, want) in [
        (format!("{a}/empty.wav/"), "not a directory"),
        (format!("{a}/empty.wav/x.wav"), "not a directory"),
        (format!("{a}/loop1.wav"), "symbolic links"),
        (format!("{a}/{}.wav", "n".repeat(5000)), "too long"),
        (format!("{a}/fox\u{0}.wav"), "invalid name"),
    ] {
        for route in ["/voice/transcribe", "/voice/listen"] {
            let body = if route == "/voice/listen" {
                json!({ "enabled": true, "audio_path": path })
            } else {
                json!({ "audio_path": path })
            };
            let (s, b) = voice.post(route, body).await;
            assert_eq!(s, 400, "{route} {}: {b}", &path[..path.len().min(80)]);
            assert!(b["error"].as_str().unwrap().contains(want), "{b}");
        }
    }
    // No samples, or fewer than the shortest utterance: nothing to hear, answered at once.
    for f in ["empty.wav", "short.wav"] {
        let (s, b) = voice
            .post("/voice/transcribe", json!({ "audio_path": audio.join(f) }))
            .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(b["text"], "", "{b}");
        assert_eq!(b["transcribe_ms"], 0, "{b}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_transcriptions_are_bounded_and_abandoned_ones_leave_the_queue() {
    let m = models();
    let t = Arc::new(Transcriber::load(&m.whisper_model).unwrap());
    // 30 s of a loud tone: whisper.cpp works on it for a while.
    let long: Vec<f32> = (0..16_000 * 30)
        .map(|i| (i as f32 * 0.07).sin() * 0.5)
        .collect();
    let running = {
        let (t, s) = (Arc::clone(&t), long.clone());
        tokio::spawn(async move { t.transcribe(s, "en").await })
    };
    until("the first transcription runs", 60, || t.busy()).await;
    let mut waiting = Vec::new();
    for _ in 0..MAX_WAITING {
        let (t, s) = (Arc::clone(&t), long.clone());
        waiting.push(tokio::spawn(async move { t.transcribe(s, "en").await }));
    }
    until("four wait", 60, || t.waiting() == MAX_WAITING).await;
    let started = Instant::now();
    let e = t.transcribe(long.clone(), "en").await.unwrap_err();
    assert!(e.message().contains("already waiting"), "{}", e.message());
    assert!(matches!(e, osmoda_voice::VoiceError::Unavailable(_)));
    assert!(started.elapsed() < Duration::from_secs(5));
    // The waiting callers leave: they leave the queue at once.
    for w in &waiting {
        w.abort();
    }
    until("the queue empties", 10, || t.waiting() == 0).await;
    running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_language_the_model_cannot_do_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let agentd = Agentd::start(dir.path());
    let m = models();
    for (lang, want) in [("xx", "not one whisper knows"), ("de", "English-only")] {
        let p = dir.path().join(format!("voice-{lang}.json"));
        std::fs::write(
            &p,
            json!({ "whisper_model": m.whisper_model, "language": lang }).to_string(),
        )
        .unwrap();
        let e = osmoda_voice::AppState::open(options(dir.path(), p.clone(), &agentd.socket))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(want), "{lang}: {e}");
        assert!(e.contains("services.osmoda.voice.language"), "{lang}: {e}");
        // check-config refuses the unknown code without loading the model.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_osmoda-voice"))
            .arg("check-config")
            .arg(&p)
            .output()
            .unwrap();
        assert_eq!(out.status.success(), lang != "xx", "{lang}: {out:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn piper_gets_no_token_and_no_api_keys() {
    let dir = tempfile::tempdir().unwrap();
    // Set before anything else runs in this test binary's process.
    std::env::set_var("OPENCLAW_GATEWAY_TOKEN", "secret-token-in-env");
    std::env::set_var("ANTHROPIC_API_KEY", "sk-secret-key");
    let env_out = dir.path().join("env.txt");
    let piper = dir.path().join("piper");
    std::fs::write(
        &piper,
        format!("#!/bin/sh\nenv > {}\nexit 3\n", env_out.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&piper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let model = dir.path().join("v.onnx");
    std::fs::write(&model, "x").unwrap();
    std::fs::write(dir.path().join("v.onnx.json"), "{}").unwrap();
    let s = osmoda_voice::tts::Speaker::new(piper, model).unwrap();
    let e = s
        .speak("Hello there.", &dir.path().join("speech"))
        .await
        .unwrap_err();
    assert!(e.message().contains("piper failed"), "{}", e.message());
    let env = std::fs::read_to_string(&env_out).unwrap();
    assert!(!env.contains("secret"), "{env}");
    assert!(env.lines().any(|l| l.starts_with("PATH=")), "{env}");
}
