//! Bounded work: paths that cannot name a file are the caller's 400 (never a 500), audio without
//! samples is an empty text at once, at most `MAX_WAITING` transcriptions wait and one more is
//! refused at once, a waiting transcription whose caller leaves leaves the queue and a running
//! one stops (dropped, or its HTTP caller hung up) with the daemon healthy after it, a
//! language the model cannot do refuses the start, and piper runs without the daemon's
//! environment (the gateway token, model API keys).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{config, files, models, options, Agentd, Voice};
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
    // The running one's caller leaves: whisper.cpp stops within one encoder window, and the
    // engine transcribes again (the stop was that transcription's alone).
    assert!(t.busy());
    running.abort();
    until("the running transcription stops", STOP_BOUND_SECS, || {
        !t.busy()
    })
    .await;
    let tone: Vec<f32> = long[..16_000 * 2].to_vec();
    t.transcribe(tone, "en").await.unwrap();
}

/// How long a transcription may run on after its caller left: one encoder window of 30 s of
/// audio (whisper.cpp asks its abort callback after each) on this loaded 2-core machine, with
/// room. A transcription that ran to its end would take many times longer (minutes of audio).
const STOP_BOUND_SECS: u64 = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcription_whose_caller_hangs_up_stops_and_the_daemon_stays_healthy() {
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let agentd = Agentd::start(dir.path());
    let audio = dir.path().join("audio");
    std::fs::create_dir_all(&audio).unwrap();
    // Five minutes of speech: one sentence again and again.
    let said = "Please turn off the lights in the kitchen and lock the front door.";
    let one = audio.join("one.wav");
    common::piper_wav(said, &one);
    let (spec, samples) = common::read_i16(&one);
    let long_wav = audio.join("long.wav");
    let mut w = hound::WavWriter::create(&long_wav, spec).unwrap();
    let mut n = 0u64;
    while n < u64::from(spec.sample_rate) * 300 {
        for s in samples.iter().chain(&[0i16; 11_025]) {
            w.write_sample(*s).unwrap();
            n += 1;
        }
    }
    w.finalize().unwrap();
    let cfg = config(dir.path(), std::slice::from_ref(&audio), None);
    let voice = Voice::start(dir.path(), options(dir.path(), cfg, &agentd.socket)).await;
    let engine = voice.state.transcriber.as_ref().unwrap();

    let body = json!({ "audio_path": long_wav }).to_string();
    let mut caller = tokio::net::UnixStream::connect(&voice.socket)
        .await
        .unwrap();
    caller
        .write_all(
            format!(
                "POST /voice/transcribe HTTP/1.1\r\nHost: voice\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    until("the long transcription runs", 120, || engine.busy()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(caller);
    let left = Instant::now();
    until("the abandoned transcription stops", STOP_BOUND_SECS, || {
        !engine.busy()
    })
    .await;
    println!(
        "the engine was free {} ms after the caller hung up",
        left.elapsed().as_millis()
    );

    // Healthy: it answers, transcribes the next request, and counts the abandoned one.
    let (s, h) = voice.get("/health").await;
    assert_eq!((s, &h["status"]), (200, &json!("ok")), "{h}");
    let (s, heard) = voice
        .post("/voice/transcribe", json!({ "audio_path": one }))
        .await;
    assert_eq!(s, 200, "{heard}");
    let rate = common::wer(said, heard["text"].as_str().unwrap());
    assert!(rate <= 0.25, "WER {rate}: {heard}");
    // (The metrics are the process's: this binary's other tests count there too.)
    let metrics = voice.client().get("/metrics").await.unwrap();
    let m = metrics.body.as_str().unwrap().to_owned();
    let abandoned = m
        .lines()
        .find_map(|l| {
            l.strip_prefix(r#"osmoda_voice_requests_total{kind="transcribe",outcome="abandoned"} "#)
        })
        .and_then(|v| v.parse::<u64>().ok());
    assert!(abandoned >= Some(1), "{m}");
    // Only the finished transcription is in the ledger.
    voice.state.flush_events().await.unwrap();
    assert_eq!(agentd.events("voice.transcribed").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_language_the_model_cannot_do_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let agentd = Agentd::start(dir.path());
    let m = models();
    // "e\0n" once panicked inside whisper-rs (check-config exited 101).
    for (lang, want) in [
        ("xx", "not one whisper knows"),
        ("e\u{0}n", "not one whisper knows"),
        ("de", "English-only"),
    ] {
        let p = dir
            .path()
            .join(format!("voice-{}.json", lang.replace('\0', "nul")));
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
        assert_eq!(out.status.success(), lang == "de", "{lang}: {out:?}");
        assert_eq!(
            out.status.code(),
            Some(if lang == "de" { 0 } else { 1 }),
            "{lang}: {out:?}"
        );
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

/// A speech whose caller left (its future dropped, as the connection's hang-up watch does) while
/// piper was writing leaves no `.tmp-*` file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_speech_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    // A piper that has written part of its WAV and is still working.
    let piper = dir.path().join("piper");
    std::fs::write(&piper, "#!/bin/sh\nprintf 'RIFF' > \"$4\"\nexec sleep 60\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&piper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let model = dir.path().join("v.onnx");
    std::fs::write(&model, "x").unwrap();
    std::fs::write(dir.path().join("v.onnx.json"), "{}").unwrap();
    let s = osmoda_voice::tts::Speaker::new(piper, model).unwrap();
    let speech = dir.path().join("speech");
    let partial_written = async {
        loop {
            if files(&speech)
                .iter()
                .any(|p| p.to_string_lossy().contains(".tmp-"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        r = s.speak("Hello there, this is long.", &speech) => panic!("speak ended: {r:?}"),
        () = partial_written => {}
        () = tokio::time::sleep(Duration::from_secs(30)) => panic!("piper never wrote"),
    }
    // The speak future is dropped here.
    assert_eq!(files(&speech), Vec::<std::path::PathBuf>::new());
}

/// The person's words go first: with the agent's long file holding the engine and more of its
/// work waiting, an utterance from the microphone is transcribed within about one encoder
/// window and its own (the running one is stopped and told to retry; the waiting ones stand
/// back), where before it waited behind all of them (twenty windows each) and failed after
/// `QUEUE_WAIT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_persons_utterance_goes_before_the_agents_transcriptions() {
    let m = models();
    let t = Arc::new(Transcriber::load(&m.whisper_model).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let said = dir.path().join("said.wav");
    common::piper_wav("The quick brown fox jumps over the lazy dog.", &said);
    let person = osmoda_voice::audio::read_wav(&said, osmoda_voice::audio::Limits::default())
        .unwrap()
        .samples;
    // Ten minutes of a loud tone: twenty encoder windows, far longer than the bound below.
    let long: Vec<f32> = (0..16_000 * 600)
        .map(|i| (i as f32 * 0.07).sin() * 0.5)
        .collect();
    let running = {
        let (t, s) = (Arc::clone(&t), long.clone());
        tokio::spawn(async move { t.transcribe(s, "en").await })
    };
    until("the agent's transcription runs", 60, || t.busy()).await;
    let mut waiting = Vec::new();
    for _ in 0..2 {
        let (t, s) = (Arc::clone(&t), long.clone());
        waiting.push(tokio::spawn(async move { t.transcribe(s, "en").await }));
    }
    until("the agent's others wait", 60, || t.waiting() == 2).await;

    let started = Instant::now();
    let heard = tokio::time::timeout(
        Duration::from_secs(3 * STOP_BOUND_SECS),
        t.transcribe_for_person(person, "en"),
    )
    .await
    .expect("the person's utterance waited behind the agent's work")
    .unwrap();
    assert!(heard.text.to_lowercase().contains("fox"), "{heard:?}");
    eprintln!("the person's utterance took {:?}", started.elapsed());
    let e = running.await.unwrap().unwrap_err();
    assert!(
        matches!(e, osmoda_voice::VoiceError::Unavailable(_)),
        "{e:?}"
    );
    assert!(
        e.message().contains("the person's speech"),
        "{}",
        e.message()
    );
    for w in &waiting {
        w.abort();
    }
    until("the queue empties", 10, || t.waiting() == 0).await;
    until("the engine is free", STOP_BOUND_SECS, || !t.busy()).await;
}
