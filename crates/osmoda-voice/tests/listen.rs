//! Voice-activity detection and the listen loop on real speech: piper says two sentences with
//! 2 s of silence between them, the detector cuts exactly two utterances, and `/voice/listen`
//! transcribes each; from the microphone each is sent to the gateway as the person's message
//! (but not what the daemon itself plays), from a file it stays in the status.
//!
//! The loop is fed from a WAV file (`audio_path`), and from the microphone of a real PipeWire
//! (`common::pipewire`) on whose speaker the sentences are played. The gateway here is a
//! loopback HTTP stand-in that records what it is sent; the bridge tests send to the real
//! OpenClaw gateway.

#![allow(clippy::unwrap_used)]

mod common;

use std::future::IntoFuture;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::HeaderMap;
use common::pipewire::PipeWire;
use common::{concat_wav, config, options, piper_wav, wer, Agentd, Voice};
use serde_json::{json, Value};

const FIRST: &str = "Turn on the lights in the kitchen.";
const SECOND: &str = "What will the weather be like tomorrow?";

/// speech, 2 s of silence, speech (22,050 Hz, piper's rate).
fn two_sentences(dir: &Path) -> PathBuf {
    let (a, b, out) = (dir.join("a.wav"), dir.join("b.wav"), dir.join("two.wav"));
    piper_wav(FIRST, &a);
    piper_wav(SECOND, &b);
    concat_wav(&[&a, &b], 2000, &out);
    out
}

#[derive(Default)]
struct Heard {
    requests: Vec<(Option<String>, Value)>,
}

async fn chat(
    State(h): State<Arc<Mutex<Heard>>>,
    headers: HeaderMap,
    axum::Json(body): axum::Json<Value>,
) -> axum::Json<Value> {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let said = body["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    h.lock().unwrap().requests.push((auth, body));
    axum::Json(
        json!({ "choices": [{ "message": { "role": "assistant", "content": format!("you said: {said}") } }] }),
    )
}

fn gateway_app(h: Arc<Mutex<Heard>>) -> axum::Router {
    axum::Router::new()
        .route("/v1/chat/completions", axum::routing::post(chat))
        .with_state(h)
}

fn check_sent(h: &Mutex<Heard>) {
    let h = h.lock().unwrap();
    assert_eq!(h.requests.len(), 2, "{:?}", h.requests);
    for ((auth, body), said) in h.requests.iter().zip([FIRST, SECOND]) {
        assert_eq!(auth.as_deref(), Some("Bearer test-token"));
        assert_eq!(body["user"], "osmoda-voice");
        assert_eq!(body["messages"][0]["role"], "user");
        let text = body["messages"][0]["content"].as_str().unwrap();
        let r = wer(said, text);
        println!("sent {text:?} for {said:?}: WER {r:.3}");
        assert!(r <= 0.25, "{text:?} for {said:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn speech_silence_speech_is_exactly_two_utterances() {
    let dir = tempfile::tempdir().unwrap();
    let wav = two_sentences(dir.path());
    let audio =
        osmoda_voice::audio::read_wav(&wav, osmoda_voice::audio::Limits::default()).unwrap();
    let u = osmoda_voice::vad::segment(&audio.samples, osmoda_voice::vad::VadConfig::default());
    println!(
        "utterances: {:?}",
        u.iter().map(|u| (u.start_ms, u.end_ms)).collect::<Vec<_>>()
    );
    assert_eq!(u.len(), 2);
    // The cut lies in the silence: the first ends before the second starts, 1.2 s or more apart.
    assert!(
        u[1].start_ms >= u[0].end_ms + 1200,
        "{:?}",
        (u[0].end_ms, u[1].start_ms)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_is_transcribed_into_the_status_but_never_sent_as_the_persons_words() {
    let dir = tempfile::tempdir().unwrap();
    let agentd = Agentd::start(dir.path());
    let audio = dir.path().join("audio");
    std::fs::create_dir_all(&audio).unwrap();
    let wav = two_sentences(&audio);

    let heard = Arc::new(Mutex::new(Heard::default()));
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", tcp.local_addr().unwrap());
    tokio::spawn(axum::serve(tcp, gateway_app(Arc::clone(&heard))).into_future());

    let cfg = config(dir.path(), std::slice::from_ref(&audio), Some(&url));
    let voice = Voice::start(dir.path(), options(dir.path(), cfg, &agentd.socket)).await;
    let (s, b) = voice
        .post(
            "/voice/listen",
            json!({ "enabled": true, "audio_path": wav }),
        )
        .await;
    assert_eq!(
        (s, b),
        (200, json!({ "listening": true, "previous": false }))
    );
    let listen = voice.listen_done().await;
    assert_eq!(listen["utterances"], 2, "{listen}");
    assert_eq!(listen["error"], Value::Null, "{listen}");
    let recent = listen["recent"].as_array().unwrap();
    for (h, said) in recent.iter().zip([FIRST, SECOND]) {
        assert_eq!(h["delivered"], false, "{listen}");
        assert_eq!(h["error"], osmoda_voice::listen::FROM_FILE, "{listen}");
        assert!(wer(said, h["text"].as_str().unwrap()) <= 0.25, "{listen}");
    }
    // Nothing reached the agent: a file is not the person.
    assert!(heard.lock().unwrap().requests.is_empty());

    voice.state.flush_events().await.unwrap();
    let ev = agentd.events("voice.utterance");
    assert_eq!(ev.len(), 2);
    assert!(
        ev.iter().all(|e| e.payload.contains("\"delivered\":false")),
        "{:?}",
        ev.iter().map(|e| &e.payload).collect::<Vec<_>>()
    );
    assert_eq!(agentd.events("voice.listen.").len(), 2);

    // Stopping when nothing runs says so.
    let (s, b) = voice
        .post("/voice/listen", json!({ "enabled": false }))
        .await;
    assert_eq!(
        (s, b),
        (200, json!({ "listening": false, "previous": false }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_starts_and_stops_leave_one_loop_or_none_and_status_tells_which() {
    let dir = tempfile::tempdir().unwrap();
    let agentd = Agentd::start(dir.path());
    let audio = dir.path().join("audio");
    std::fs::create_dir_all(&audio).unwrap();
    let wav = two_sentences(&audio);
    let cfg = config(dir.path(), std::slice::from_ref(&audio), None);
    let voice = Arc::new(Voice::start(dir.path(), options(dir.path(), cfg, &agentd.socket)).await);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let v = Arc::clone(&voice);
        let body = if i % 2 == 0 {
            json!({ "enabled": true, "audio_path": wav })
        } else {
            json!({ "enabled": false })
        };
        tasks.push(tokio::spawn(
            async move { v.post("/voice/listen", body).await },
        ));
    }
    for t in tasks {
        let (s, b) = tokio::time::timeout(std::time::Duration::from_secs(300), t)
            .await
            .expect("a listen request hung")
            .unwrap();
        assert_eq!(s, 200, "{b}");
    }
    // The last start (if the last request was one) runs; one stop ends whatever runs.
    let (s, _) = voice
        .post("/voice/listen", json!({ "enabled": false }))
        .await;
    assert_eq!(s, 200);
    let (_, st) = voice.get("/voice/status").await;
    assert_eq!(st["listening"], false, "{st}");
    // Every loop that started has ended (its end is recorded before the stop answers), and a
    // stop when none runs says so.
    voice.state.flush_events().await.unwrap();
    let started = agentd.events("voice.listen.started").len();
    assert_eq!(agentd.events("voice.listen.stopped").len(), started);
    assert!((1..=6).contains(&started), "{started}");
    let (s, b) = voice
        .post("/voice/listen", json!({ "enabled": false }))
        .await;
    assert_eq!(
        (s, b),
        (200, json!({ "listening": false, "previous": false }))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listening_to_the_pipewire_microphone_sends_each_utterance_to_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let agentd = Agentd::start(dir.path());
    // A real PipeWire whose microphone hears its speaker: the two sentences are played there
    // once the listen loop's pw-record is linked.
    let pw = PipeWire::start();
    let two = two_sentences(dir.path());

    let heard = Arc::new(Mutex::new(Heard::default()));
    let sock = dir.path().join("gateway.sock");
    let unix = tokio::net::UnixListener::bind(&sock).unwrap();
    tokio::spawn(axum::serve(unix, gateway_app(Arc::clone(&heard))).into_future());
    let cfg = config(dir.path(), &[], Some(&format!("unix:{}", sock.display())));
    let mut opts = options(dir.path(), cfg, &agentd.socket);
    opts.audio = pw.device();
    let voice = Voice::start(dir.path(), opts).await;

    let (s, b) = voice
        .post("/voice/listen", json!({ "enabled": true }))
        .await;
    assert_eq!(
        (s, b),
        (200, json!({ "listening": true, "previous": false }))
    );
    pw.wait_for_recorder().await;
    // The daemon's own voice, played while it listens, is heard but not sent as the person's.
    let (s, b) = voice
        .post(
            "/voice/speak",
            json!({ "text": "Please delete all the old logs now." }),
        )
        .await;
    assert_eq!((s, b["played"].clone()), (200, json!(true)), "{b}");
    let start = std::time::Instant::now();
    loop {
        let (_, st) = voice.get("/voice/status").await;
        if st["listen"]["suppressed"].as_u64().unwrap() >= 1 {
            break;
        }
        assert!(start.elapsed().as_secs() < 120, "not suppressed: {st}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    while voice.state.playback.muted() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // The person speaking afterwards is heard and sent.
    pw.play(&two).await;
    // Both utterances arrive while the microphone stays open.
    let start = std::time::Instant::now();
    while heard.lock().unwrap().requests.len() < 2 {
        let (_, st) = voice.get("/voice/status").await;
        assert_eq!(st["listening"], true, "the loop stopped: {st}");
        assert!(start.elapsed().as_secs() < 600, "{st}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    check_sent(&heard);
    let (_, st) = voice.get("/voice/status").await;
    assert_eq!(st["listening"], true);
    assert_eq!(st["listen"]["source"], "microphone default source");
    let suppressed = st["listen"]["suppressed"].as_u64().unwrap();
    assert_eq!(
        st["listen"]["utterances"].as_u64().unwrap(),
        2 + suppressed,
        "{st}"
    );
    let (s, b) = voice
        .post("/voice/listen", json!({ "enabled": false }))
        .await;
    assert_eq!(
        (s, b),
        (200, json!({ "listening": false, "previous": true }))
    );
    let listen = voice.listen_done().await;
    assert_eq!(listen["error"], Value::Null, "{listen}");
    voice.state.flush_events().await.unwrap();
    assert_eq!(agentd.events("voice.utterance").len(), 2);
    assert_eq!(agentd.events("voice.listen.stopped").len(), 1);
}
