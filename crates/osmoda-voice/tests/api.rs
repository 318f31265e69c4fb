//! osmoda-voice's API on a real socket with the real models: piper speaks, whisper.cpp hears it
//! back (word error rate printed), bad input of every kind is a 4xx that writes nothing, and the
//! work is in the ledger and in `/metrics`.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{config, files, options, piper_wav, wer, Agentd, Voice};
use serde_json::json;

const SENTENCE: &str = "The quick brown fox jumps over the lazy dog near the river bank.";

/// The round trip's bound: 2 errors in the sentence's 13 words.
const MAX_WER: f64 = 2.0 / 13.0 + 1e-9;

#[test]
fn the_round_trips_bound_holds_a_word_changed_and_fails_what_is_not_the_sentence() {
    for (heard, ok) in [
        (SENTENCE, true),
        (
            "the quick brown fox jumped over the lazy dog near the river bank",
            true,
        ),
        (
            "Quick brown fox jumps over a lazy dog near the river bank!",
            true,
        ),
        (
            "The quick brown fox jumped over a lazy dog near the river.",
            false,
        ),
        ("", false),
        ("Hello there, how are you today?", false),
        ("The quick brown fox", false),
    ] {
        assert_eq!(wer(SENTENCE, heard) <= MAX_WER, ok, "{heard:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_text_to_piper_to_whisper_and_back() {
    let dir = tempfile::tempdir().unwrap();
    let agentd = Agentd::start(dir.path());
    let audio = dir.path().join("audio");
    std::fs::create_dir_all(&audio).unwrap();
    let cfg = config(dir.path(), std::slice::from_ref(&audio), None);
    let voice = Voice::start(dir.path(), options(dir.path(), cfg, &agentd.socket)).await;

    let (s, st) = voice.get("/voice/status").await;
    assert_eq!(s, 200);
    assert_eq!(st["whisper_model_loaded"], true, "{st}");
    assert_eq!(st["piper_model_loaded"], true);
    assert_eq!(st["listening"], false);
    // No PipeWire here: said plainly, not faked.
    assert_eq!(st["audio_device"], false);
    assert!(
        st["audio_device_error"]
            .as_str()
            .unwrap()
            .starts_with("no audio device: "),
        "{st}"
    );

    // Speak: a WAV under the state dir, not played (no audio device) and saying why.
    let (s, spoken) = voice
        .post("/voice/speak", json!({ "text": SENTENCE }))
        .await;
    assert_eq!(s, 200, "{spoken}");
    let wav = std::path::PathBuf::from(spoken["audio_path"].as_str().unwrap());
    assert!(
        wav.starts_with(dir.path().join("voice/speech")),
        "{}",
        wav.display()
    );
    assert!(wav.is_file());
    let ms = spoken["duration_ms"].as_u64().unwrap();
    assert!((2000..10_000).contains(&ms), "{ms} ms for one sentence");
    assert_eq!(spoken["played"], false);
    assert!(spoken["playback_error"]
        .as_str()
        .unwrap()
        .starts_with("no audio device: "));

    // Hear it back: whisper gets the words.
    let (s, heard) = voice
        .post("/voice/transcribe", json!({ "audio_path": wav }))
        .await;
    assert_eq!(s, 200, "{heard}");
    let text = heard["text"].as_str().unwrap();
    let rate = wer(SENTENCE, text);
    println!("round trip: {SENTENCE:?} -> {text:?}, WER {rate:.3}");
    // What the pair guarantees is a bound on the word error rate, not each word: piper's voice
    // varies from run to run (its noise), and once "jumps" came back as "jumped". At most 2 of
    // the 13 words may be wrong, missing or extra; an empty or unrelated text cannot pass.
    assert!(rate <= MAX_WER, "WER {rate} for {text:?}");
    assert_eq!(heard["language"], "en");
    assert_eq!(heard["duration_ms"].as_u64().unwrap() / 100, ms / 100);

    // Any WAV: stereo 44.1 kHz float and 8 kHz 8-bit of the same speech transcribe too.
    let (spec, samples) = common::read_i16(&wav);
    for (rate, channels, float, name) in [
        (44_100u32, 2u16, true, "stereo-float.wav"),
        (8_000, 1, false, "8k.wav"),
    ] {
        let mono: Vec<f32> = samples.iter().map(|s| f32::from(*s) / 32768.0).collect();
        let res = osmoda_voice::audio::resample(&mono, spec.sample_rate, rate).unwrap();
        let p = audio.join(name);
        let spec2 = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: if float { 32 } else { 8 },
            sample_format: if float {
                hound::SampleFormat::Float
            } else {
                hound::SampleFormat::Int
            },
        };
        let mut w = hound::WavWriter::create(&p, spec2).unwrap();
        for s in res {
            for _ in 0..channels {
                if float {
                    w.write_sample(s).unwrap();
                } else {
                    w.write_sample((s * 127.0) as i8).unwrap();
                }
            }
        }
        w.finalize().unwrap();
        let (s, h) = voice
            .post("/voice/transcribe", json!({ "audio_path": p }))
            .await;
        assert_eq!(s, 200, "{name}: {h}");
        let r = wer(SENTENCE, h["text"].as_str().unwrap());
        println!("{name}: {:?}, WER {r:.3}", h["text"]);
        assert!(r <= 0.3, "{name}: WER {r}: {h}");
    }

    // The work is in the ledger (as osmoda-voice) and in /metrics.
    voice.state.flush_events().await.unwrap();
    assert_eq!(agentd.events("voice.spoke").len(), 1);
    let t = agentd.events("voice.transcribed");
    assert_eq!(t.len(), 3);
    assert!(t[0].actor.starts_with("osmoda-voice"), "{}", t[0].actor);
    let metrics = voice.client().get("/metrics").await.unwrap();
    let m = metrics.body.as_str().unwrap().to_owned();
    assert!(
        m.contains(r#"osmoda_voice_requests_total{kind="transcribe",outcome="ok"} 3"#),
        "{m}"
    );
    assert!(
        m.contains(r#"osmoda_voice_requests_total{kind="speak",outcome="ok"} 1"#),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_a_4xx_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let agentd = Agentd::start(dir.path());
    let audio = dir.path().join("audio");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&audio).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    let cfg = config(dir.path(), std::slice::from_ref(&audio), None);
    let voice = Voice::start(dir.path(), options(dir.path(), cfg, &agentd.socket)).await;

    // Fixtures: real speech outside the allowed dirs, a symlink to it inside, a text file, a
    // WAV header declaring 10 hours (with 1 s of data), a truncated WAV, a FIFO, an MP3-named
    // text file, a 0-byte file.
    let speech = outside.join("speech.wav");
    piper_wav("This file is outside.", &speech);
    std::os::unix::fs::symlink(&speech, audio.join("link.wav")).unwrap();
    std::fs::write(audio.join("notes.wav"), "these are notes, not audio").unwrap();
    std::fs::write(audio.join("empty.wav"), "").unwrap();
    let mut ten_hours = Vec::new();
    let data_len: u32 = 10 * 3600 * 16_000 * 2;
    ten_hours.extend_from_slice(b"RIFF");
    ten_hours.extend_from_slice(&(36 + data_len).to_le_bytes());
    ten_hours.extend_from_slice(b"WAVEfmt ");
    ten_hours.extend_from_slice(&16u32.to_le_bytes());
    ten_hours.extend_from_slice(&1u16.to_le_bytes()); // PCM
    ten_hours.extend_from_slice(&1u16.to_le_bytes()); // mono
    ten_hours.extend_from_slice(&16_000u32.to_le_bytes());
    ten_hours.extend_from_slice(&32_000u32.to_le_bytes());
    ten_hours.extend_from_slice(&2u16.to_le_bytes());
    ten_hours.extend_from_slice(&16u16.to_le_bytes());
    ten_hours.extend_from_slice(b"data");
    ten_hours.extend_from_slice(&data_len.to_le_bytes());
    ten_hours.extend(std::iter::repeat_n(0u8, 32_000));
    std::fs::write(audio.join("ten-hours.wav"), &ten_hours).unwrap();
    let mut truncated = std::fs::read(&speech).unwrap();
    truncated.truncate(truncated.len() / 2 + 1);
    std::fs::write(audio.join("truncated.wav"), &truncated[..]).unwrap();
    nix::unistd::mkfifo(
        &audio.join("fifo.wav"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();

    // 1 s of 44.1 kHz stereo 32-bit float NaN (once a panic inside the resampler: a 500).
    {
        let spec = hound::WavSpec {
            channels: 2,
            sample_rate: 44_100,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut w = hound::WavWriter::create(audio.join("nan44k.wav"), spec).unwrap();
        for _ in 0..44_100 * 2 {
            w.write_sample(f32::NAN).unwrap();
        }
        w.finalize().unwrap();
    }

    let before = files(dir.path());
    let a = |n: &str| audio.join(n).display().to_string();
    let cases: Vec<(serde_json::Value, u16, &str)> = vec![
        (
            json!({ "audio_path": a("missing.wav") }),
            404,
            "does not exist",
        ),
        (
            json!({ "audio_path": a("notes.wav") }),
            415,
            "is not a WAV file",
        ),
        (
            json!({ "audio_path": a("empty.wav") }),
            415,
            "is not a WAV file",
        ),
        (
            json!({ "audio_path": a("ten-hours.wav") }),
            413,
            "declares 36000 s of audio, the limit is 600 s",
        ),
        (
            json!({ "audio_path": a("truncated.wav") }),
            415,
            "cannot read the samples",
        ),
        (
            json!({ "audio_path": a("fifo.wav") }),
            415,
            "is not a regular file",
        ),
        (
            json!({ "audio_path": speech }),
            403,
            "outside the directories",
        ),
        (
            json!({ "audio_path": a("link.wav") }),
            403,
            "outside the directories",
        ),
        (
            json!({ "audio_path": "/etc/passwd" }),
            403,
            "outside the directories",
        ),
        (
            json!({ "audio_path": format!("{}/../outside/speech.wav", audio.display()) }),
            400,
            "must not contain `..`",
        ),
        (
            json!({ "audio_path": "speech.wav" }),
            400,
            "must be an absolute path",
        ),
        (
            json!({ "audio_path": a("ten-hours.wav"), "language": "klingon" }),
            400,
            "not one whisper knows",
        ),
        (
            json!({ "audio_path": a("ten-hours.wav"), "language": "de" }),
            400,
            "English-only",
        ),
        (
            json!({ "audio_path": a("nan44k.wav") }),
            415,
            "NaN or infinite samples",
        ),
        // A NUL byte once panicked inside whisper-rs (no answer at all).
        (
            json!({ "audio_path": a("ten-hours.wav"), "language": "e\u{0}n" }),
            400,
            "not one whisper knows",
        ),
        (
            json!({ "audio_path": a("ten-hours.wav"), "language": "EN" }),
            400,
            "not one whisper knows",
        ),
        (json!({ "path": a("notes.wav") }), 400, "invalid JSON body"),
        (json!({ "audio_path": 7 }), 400, "invalid JSON body"),
    ];
    for (body, status, msg) in cases {
        let (s, b) = tokio::time::timeout(
            Duration::from_secs(60),
            voice.post("/voice/transcribe", body.clone()),
        )
        .await
        .unwrap();
        assert_eq!(s, status, "{body}: {b}");
        assert!(b["error"].as_str().unwrap().contains(msg), "{body}: {b}");
        assert!(b["detail"]["hint"].is_string(), "{b}");
    }
    for (path, body, status, msg) in [
        ("/voice/speak", json!({ "text": "" }), 400, "text is empty"),
        (
            "/voice/speak",
            json!({ "text": "a".repeat(4001) }),
            400,
            "the limit is 4000",
        ),
        (
            "/voice/speak",
            json!({ "text": "nul\u{0}byte" }),
            400,
            "control characters",
        ),
        (
            "/voice/speak",
            json!({ "words": "hi" }),
            400,
            "invalid JSON body",
        ),
        (
            "/voice/record",
            json!({ "duration_secs": 0 }),
            400,
            "use 1-300",
        ),
        (
            "/voice/record",
            json!({ "duration_secs": 3 }),
            503,
            "no audio device",
        ),
        (
            "/voice/listen",
            json!({ "enabled": true }),
            503,
            "no audio device",
        ),
        (
            "/voice/listen",
            json!({ "enabled": true, "audio_path": a("ten-hours.wav") }),
            413,
            "limit is 600 s",
        ),
        (
            "/voice/listen",
            json!({ "enabled": true, "audio_path": speech }),
            403,
            "outside the directories",
        ),
        (
            "/voice/listen",
            json!({ "enabled": false, "audio_path": a("notes.wav") }),
            400,
            "goes with enabled: true",
        ),
    ] {
        let (s, b) = voice.post(path, body.clone()).await;
        assert_eq!(s, status, "{path} {body}: {b}");
        assert!(
            b["error"].as_str().unwrap().contains(msg),
            "{path} {body}: {b}"
        );
    }
    let (s, b) = voice.get("/voice/transcribe").await;
    assert_eq!(
        (s, b["detail"]["kind"].as_str()),
        (405, Some("method_not_allowed"))
    );
    let (s, _) = voice.get("/voice/nothing").await;
    assert_eq!(s, 404);

    assert_eq!(
        files(dir.path())
            .into_iter()
            .filter(|p| !p.starts_with(dir.path().join("agentd")))
            .collect::<Vec<_>>(),
        before
            .into_iter()
            .filter(|p| !p.starts_with(dir.path().join("agentd")))
            .collect::<Vec<_>>(),
        "a refused request wrote something"
    );
    voice.state.flush_events().await.unwrap();
    assert!(agentd.events("voice.").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_models_are_refused_at_start_and_absent_ones_are_503() {
    let dir = tempfile::tempdir().unwrap();
    let agentd = Agentd::start(dir.path());
    let cfg = dir.path().join("voice.json");
    std::fs::write(
        &cfg,
        json!({ "whisper_model": "/nonexistent/ggml.bin", "piper_model": null, "language": "en" })
            .to_string(),
    )
    .unwrap();
    let err = osmoda_voice::AppState::open(options(dir.path(), cfg.clone(), &agentd.socket))
        .await
        .unwrap_err();
    assert!(
        err.message()
            .contains("/nonexistent/ggml.bin does not exist"),
        "{err}"
    );
    std::fs::write(&cfg, json!({ "whisper_model": null, "piper_model": null, "language": "en", "gateway_url": "http://example.com:80" }).to_string()).unwrap();
    let err = osmoda_voice::AppState::open(options(dir.path(), cfg.clone(), &agentd.socket))
        .await
        .unwrap_err();
    assert!(err.message().contains("gateway_url"), "{err}");

    // Nothing configured: the daemon runs, says so, and refuses work with 503.
    std::fs::write(
        &cfg,
        json!({ "whisper_model": null, "piper_model": null, "language": "en" }).to_string(),
    )
    .unwrap();
    let voice = Voice::start(dir.path(), options(dir.path(), cfg, &agentd.socket)).await;
    let (_, st) = voice.get("/voice/status").await;
    assert_eq!(
        (
            st["whisper_model_loaded"].as_bool(),
            st["piper_model_loaded"].as_bool()
        ),
        (Some(false), Some(false))
    );
    let (s, b) = voice.post("/voice/speak", json!({ "text": "hello" })).await;
    assert_eq!(s, 503, "{b}");
    assert!(b["error"]
        .as_str()
        .unwrap()
        .contains("services.osmoda.voice.piperModel"));
    let (s, b) = voice
        .post("/voice/transcribe", json!({ "audio_path": "/var/x.wav" }))
        .await;
    assert_eq!(s, 503, "{b}");
    assert!(b["error"]
        .as_str()
        .unwrap()
        .contains("services.osmoda.voice.whisperModel"));
}
