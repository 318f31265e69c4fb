//! osmoda-voice on a real PipeWire (`common::pipewire`: a private server whose speaker the
//! microphone hears): `/voice/speak` plays through it, `/voice/record` captures what is played
//! and transcribes it, and where PipeWire cannot deliver audio (no session manager linking the
//! recorder, the server gone) the calls say so and leave nothing behind. A named source is
//! heard whatever the default source is. No recorder or piper outlives the daemon binary killed
//! with SIGKILL, which leaves no cut-off recording under a recording's name, and the gateway
//! token from the environment is not left in /proc/<pid>/environ.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::pipewire::{PipeWire, Release, MIC};
use common::{config, files, options, piper_wav, wer, Agentd, Voice};
use serde_json::{json, Value};

const SAID: &str = "Please restart the web server after the update.";
const SPOKEN: &str = "The backup finished and every disk is healthy.";

async fn voice_on(dir: &Path, pw: &PipeWire, agentd: &Agentd) -> (Voice, PathBuf) {
    let audio = dir.join("audio");
    std::fs::create_dir_all(&audio).unwrap();
    let cfg = config(dir, std::slice::from_ref(&audio), None);
    let mut opts = options(dir, cfg, &agentd.socket);
    opts.audio = pw.device();
    (Voice::start(dir, opts).await, audio)
}

fn check_words(said: &str, text: &str) {
    let rate = wer(said, text);
    println!("{said:?} -> {text:?}: WER {rate:.3}");
    assert!(rate <= 0.25, "WER {rate}: {text:?} for {said:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn record_hears_what_is_played_and_speak_plays_through_pipewire() {
    let dir = tempfile::tempdir().unwrap();
    let agentd = Agentd::start(dir.path());
    let pw = PipeWire::start();
    let (voice, audio) = voice_on(dir.path(), &pw, &agentd).await;

    let (_, st) = voice.get("/voice/status").await;
    assert_eq!(st["audio_device"], true, "{st}");
    assert_eq!(st["audio_device_error"], Value::Null);

    // /voice/record: 10 s from the default source (the test microphone), while a sentence
    // (3.5 s) is played on the speaker once the recorder is linked.
    let said = audio.join("said.wav");
    piper_wav(SAID, &said);
    let rec = {
        let client = voice.client();
        tokio::spawn(async move {
            let r = client
                .post("/voice/record", &json!({ "duration_secs": 10 }))
                .await
                .unwrap();
            (r.status, r.body)
        })
    };
    pw.wait_for_recorder().await;
    pw.play(&said).await;
    let (s, b) = tokio::time::timeout(Duration::from_secs(600), rec)
        .await
        .expect("/voice/record did not answer within 600 s")
        .unwrap();
    assert_eq!(s, 200, "{b}");
    let wav = PathBuf::from(b["audio_path"].as_str().unwrap());
    assert!(wav.starts_with(dir.path().join("voice/recordings")), "{b}");
    let (spec, samples) = common::read_i16(&wav);
    assert_eq!((spec.sample_rate, spec.channels), (16_000, 1));
    // What the recorder got from the moment it was linked until SIGINT.
    let ms = b["duration_ms"].as_u64().unwrap();
    assert_eq!(ms, samples.len() as u64 * 1000 / 16_000);
    assert!((5_000..=10_500).contains(&ms), "{ms} ms recorded: {b}");
    assert!(samples.iter().any(|s| s.unsigned_abs() > 3000), "silence");
    check_words(SAID, b["text"].as_str().unwrap());
    assert!(b["transcribe_ms"].as_u64().is_some(), "{b}");

    // /voice/speak plays on the speaker: a recorder of the test's own, on the microphone from
    // before the call until after it returned, hears the words.
    let heard = audio.join("heard.wav");
    let mut ear = tokio::process::Command::new("pw-record")
        .envs(pw.env())
        .args(osmoda_voice::device::RECORD_FORMAT)
        .arg("--target")
        .arg(MIC)
        .arg(&heard)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    pw.wait_for_recorder().await;
    let (s, spoken) = voice.post("/voice/speak", json!({ "text": SPOKEN })).await;
    assert_eq!(s, 200, "{spoken}");
    assert_eq!(spoken["played"], true, "{spoken}");
    assert_eq!(spoken["playback_error"], Value::Null);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(ear.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), ear.wait())
        .await
        .expect("pw-record did not stop on SIGINT")
        .unwrap();
    let (s, t) = voice
        .post("/voice/transcribe", json!({ "audio_path": heard }))
        .await;
    assert_eq!(s, 200, "{t}");
    check_words(SPOKEN, t["text"].as_str().unwrap());

    // Without transcription: the recording only (silence now, but audio: zeros count).
    let (s, b) = voice
        .post(
            "/voice/record",
            json!({ "duration_secs": 1, "transcribe": false }),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    assert!(b["duration_ms"].as_u64().unwrap() > 0, "{b}");
    assert_eq!(b.get("text"), None, "{b}");
    assert!(Path::new(b["audio_path"].as_str().unwrap()).is_file());

    voice.state.flush_events().await.unwrap();
    assert_eq!(agentd.events("voice.recorded").len(), 2);
    let spoke = agentd.events("voice.spoke");
    assert_eq!(spoke.len(), 1);
    assert!(
        spoke[0].payload.contains("\"played\":true"),
        "{}",
        spoke[0].payload
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipewire_that_delivers_no_audio_or_is_gone_is_no_audio_device() {
    let dir = tempfile::tempdir().unwrap();
    let agentd = Agentd::start(dir.path());
    // PipeWire answers, but without a session manager nothing links the recorder to a source.
    let mut pw = PipeWire::without_session_manager();
    let (voice, _) = voice_on(dir.path(), &pw, &agentd).await;
    let (_, st) = voice.get("/voice/status").await;
    assert_eq!(st["audio_device"], true, "{st}");
    let recordings = dir.path().join("voice/recordings");
    let (s, b) = voice
        .post(
            "/voice/record",
            json!({ "duration_secs": 1, "transcribe": false }),
        )
        .await;
    assert_eq!(s, 503, "{b}");
    let e = b["error"].as_str().unwrap();
    assert!(e.starts_with("no audio device: "), "{b}");
    assert!(e.contains("recorded nothing in 1 s"), "{b}");
    assert_eq!(files(&recordings), Vec::<PathBuf>::new());
    // The listen loop gives up on a stream that brings nothing, and says why.
    let (s, b) = voice
        .post("/voice/listen", json!({ "enabled": true }))
        .await;
    assert_eq!(
        (s, &b),
        (200, &json!({ "listening": true, "previous": false }))
    );
    let listen = voice.listen_done().await;
    let e = listen["error"].as_str().unwrap();
    assert!(e.contains("delivered no audio for 10 s"), "{listen}");

    // The server gone: no audio device, said plainly; speaking still writes the file.
    pw.stop();
    let (_, st) = voice.get("/voice/status").await;
    assert_eq!(st["audio_device"], false, "{st}");
    let e = st["audio_device_error"].as_str().unwrap();
    assert!(e.starts_with("no audio device: "), "{st}");
    let (s, b) = voice
        .post(
            "/voice/record",
            json!({ "duration_secs": 1, "transcribe": false }),
        )
        .await;
    assert_eq!(s, 503, "{b}");
    assert!(
        b["error"]
            .as_str()
            .unwrap()
            .starts_with("no audio device: "),
        "{b}"
    );
    let (s, b) = voice
        .post("/voice/listen", json!({ "enabled": true }))
        .await;
    assert_eq!(s, 503, "{b}");
    let (s, spoken) = voice
        .post("/voice/speak", json!({ "text": "Hello." }))
        .await;
    assert_eq!(s, 200, "{spoken}");
    assert_eq!(spoken["played"], false);
    assert!(spoken["playback_error"]
        .as_str()
        .unwrap()
        .starts_with("no audio device: "));
    assert_eq!(files(&recordings), Vec::<PathBuf>::new());
}

/// The children of process `pid` (every thread's), with their command lines.
fn children(pid: u32) -> Vec<(u32, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for c in list
            .split_whitespace()
            .filter_map(|c| c.parse::<u32>().ok())
        {
            let cmd = std::fs::read(format!("/proc/{c}/cmdline")).unwrap_or_default();
            out.push((c, String::from_utf8_lossy(&cmd).replace('\0', " ")));
        }
    }
    out
}

/// Whether process `pid` still runs (a zombie waiting for its new parent to reap it does not).
fn running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| !rest.starts_with('Z')))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_recorder_or_piper_outlives_the_daemon_killed_with_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let agentd = Agentd::start(dir.path());
    let pw = PipeWire::start();
    let cfg = config(dir.path(), &[], None);
    let bin = env!("CARGO_BIN_EXE_osmoda-voice");
    let socket = dir.path().join("voice.sock");
    let token = dir.path().join("gateway-token");
    let daemon = |token_file: &Path| {
        let mut c = std::process::Command::new(bin);
        c.arg("--socket")
            .arg(&socket)
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(dir.path().join("voice"))
            .arg("--agentd-socket")
            .arg(&agentd.socket)
            .arg("--piper")
            .arg(common::models().piper)
            .arg("--gateway-token-file")
            .arg(token_file)
            .envs(pw.env())
            .stdin(Stdio::null());
        c
    };
    // The token file (the unit's credential) must hold a token: an empty or missing one stops
    // the start, naming the option.
    std::fs::write(&token, "\n").unwrap();
    for f in [token.clone(), dir.path().join("missing")] {
        let out = daemon(&f).output().unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("services.osmoda.voice.gatewayTokenFile"),
            "{err}"
        );
    }
    std::fs::write(&token, "file-token\n").unwrap();
    let mut proc = daemon(&token).stdout(Stdio::null()).spawn().unwrap();
    let pid = proc.id();
    let client = osmoda_client::Client::new(&socket).with_timeout(Duration::from_secs(600));
    let start = std::time::Instant::now();
    while client.get("/health").await.map(|r| r.status).ok() != Some(200) {
        assert!(proc.try_wait().unwrap().is_none(), "osmoda-voice exited");
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "osmoda-voice did not start"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Two recorders (the listen loop's stream, a /voice/record) and a piper at work.
    let r = client
        .post("/voice/listen", &json!({ "enabled": true }))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    let c = client.clone();
    let _record = tokio::spawn(async move {
        c.post(
            "/voice/record",
            &json!({ "duration_secs": 60, "transcribe": false }),
        )
        .await
    });
    let text = "The backup finished and every disk is healthy. ".repeat(30);
    let c = client.clone();
    let _speak = tokio::spawn(async move {
        c.post("/voice/speak", &json!({ "text": text, "play": false }))
            .await
    });
    let start = std::time::Instant::now();
    let kids = loop {
        let kids = children(pid);
        let recorders = kids.iter().filter(|(_, c)| c.contains("pw-record")).count();
        let pipers = kids.iter().filter(|(_, c)| c.contains("piper")).count();
        if recorders == 2 && pipers == 1 {
            break kids;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "expected 2 recorders and a piper under osmoda-voice: {kids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The recording has begun (the recorder wrote its header and some audio).
    let recordings = dir.path().join("voice/recordings");
    let start = std::time::Instant::now();
    while !files(&recordings)
        .iter()
        .any(|p| std::fs::metadata(p).map(|m| m.len() > 44).unwrap_or(false))
    {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the recorder wrote nothing: {:?}",
            files(&recordings)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    proc.wait().unwrap();
    let killed = std::time::Instant::now();
    for (child, cmd) in &kids {
        while running(*child) {
            assert!(
                killed.elapsed() < Duration::from_secs(5),
                "{child} ({cmd}) outlived osmoda-voice"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // The cut-off recording is not under a recording's name: only a `.tmp-*` file is left.
    let left = files(&recordings);
    assert!(!left.is_empty());
    for p in &left {
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(
            name.starts_with(".tmp-"),
            "a cut-off recording looks complete: {name}"
        );
    }

    // The next start removes it. This start takes the token from the environment (the
    // fallback without a token file): the daemon keeps it, /proc/<pid>/environ does not.
    let with_file = daemon(&token);
    let args: Vec<_> = with_file.get_args().map(ToOwned::to_owned).collect();
    // Without the last two: `--gateway-token-file <file>`.
    let mut proc = std::process::Command::new(bin)
        .args(&args[..args.len() - 2])
        .envs(pw.env())
        .env("OPENCLAW_GATEWAY_TOKEN", "env-token-sekrit-42")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while client.get("/health").await.map(|r| r.status).ok() != Some(200) {
        assert!(proc.try_wait().unwrap().is_none(), "osmoda-voice exited");
        assert!(start.elapsed() < Duration::from_secs(120), "no restart");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(files(&recordings), Vec::<PathBuf>::new());
    let environ = std::fs::read(format!("/proc/{}/environ", proc.id())).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(environ.contains("OPENCLAW_GATEWAY_TOKEN="), "{environ}");
    assert!(
        !environ.contains("sekrit"),
        "the token is in /proc/<pid>/environ: {environ}"
    );
    let _ = proc.kill();
    let _ = proc.wait();
}

/// With a source named (`services.osmoda.voice.source`), recording and listening take that node
/// even when another client made its own source the server's default, and say which node they
/// heard; another client's move of the recorder's stream (`target.object` in the metadata) is
/// ignored; a named node that is missing gives no audio, never the default source's. On the
/// machine's WirePlumber (Debian 12: 0.4) and on 0.5, NixOS's, whose linking rules differ
/// (`device::PINNED_PROPS`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_source_is_heard_whatever_the_default_is() {
    named_source_on(Release::Installed).await;
}

/// [`a_named_source_is_heard_whatever_the_default_is`] on PipeWire 1.4 + WirePlumber 0.5
/// (`scripts/fetch-pipewire-1.4`): there a missing named node falls back to the default source
/// unless `node.dont-fallback`, and a metadata move links the stream to the other node too
/// unless `node.dont-move`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_source_is_heard_whatever_the_default_is_on_wireplumber_05() {
    named_source_on(Release::Wireplumber05).await;
}

/// `/voice/record` of `secs` without transcription, running while the test goes on.
fn record_untranscribed(voice: &Voice, secs: u64) -> tokio::task::JoinHandle<(u16, Value)> {
    let client = voice.client();
    tokio::spawn(async move {
        let r = client
            .post(
                "/voice/record",
                &json!({ "duration_secs": secs, "transcribe": false }),
            )
            .await
            .unwrap();
        (r.status, r.body)
    })
}

async fn named_source_on(release: Release) {
    let dir = tempfile::tempdir().unwrap();
    let agentd = Agentd::start(dir.path());
    let pw = PipeWire::start_release(release);
    pw.another_default_source("other-src").await;
    let audio = dir.path().join("audio");
    std::fs::create_dir_all(&audio).unwrap();
    let cfg = config(dir.path(), std::slice::from_ref(&audio), None);
    let mut opts = options(dir.path(), cfg.clone(), &agentd.socket);
    opts.audio = osmoda_voice::device::AudioDevice {
        source: Some(MIC.into()),
        ..pw.device()
    };
    let voice = Voice::start(dir.path(), opts).await;

    let said = audio.join("said.wav");
    piper_wav(SAID, &said);
    let rec = record_untranscribed(&voice, 12);
    // Linked to the named microphone (this waits up to 60 s), not to the default source.
    pw.wait_for_recorder().await;
    let other_linked = "other-src:capture_MONO\n  |-> pw-record";
    let links = pw.links();
    assert!(!links.contains(other_linked), "{links}");
    // Another client moves the recorder's stream to its own source, as a mixer would: the
    // stream stays on the microphone alone.
    let nodes = pw.nodes();
    let other = nodes.iter().find(|n| n.2 == "other-src").unwrap().1;
    let stream = nodes
        .iter()
        .find(|n| n.3 == "Stream/Input/Audio")
        .unwrap_or_else(|| panic!("no recorder stream: {nodes:?}"))
        .0;
    pw.move_stream(stream, other);
    let until = std::time::Instant::now() + Duration::from_secs(3);
    while std::time::Instant::now() < until {
        let links = pw.links();
        assert!(!links.contains(other_linked), "moved: {links}");
        assert!(
            links.contains(&format!("{MIC}:capture_MONO\n  |-> pw-record")),
            "{links}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    pw.play(&said).await;
    let (s, b) = rec.await.unwrap();
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["source"], MIC, "{b}");
    let (_, samples) = common::read_i16(Path::new(b["audio_path"].as_str().unwrap()));
    assert!(samples.iter().any(|s| s.unsigned_abs() > 3000), "silence");
    voice.state.flush_events().await.unwrap();
    let rows = agentd.events("voice.recorded");
    assert_eq!(rows.len(), 1);
    assert!(rows[0].payload.contains(MIC), "{}", rows[0].payload);

    // The listen loop too, and its status names the node.
    let (s, b) = voice
        .post("/voice/listen", json!({ "enabled": true }))
        .await;
    assert_eq!(s, 200, "{b}");
    pw.wait_for_recorder().await;
    let (_, st) = voice.get("/voice/status").await;
    assert_eq!(st["listen"]["source"], format!("microphone {MIC}"), "{st}");
    let (s, _) = voice
        .post("/voice/listen", json!({ "enabled": false }))
        .await;
    assert_eq!(s, 200);
    drop(voice);

    // A named node that is not there: nothing is recorded (503), the default is not taken.
    let dir2 = tempfile::tempdir().unwrap();
    let mut opts = options(dir2.path(), cfg, &agentd.socket);
    opts.audio = osmoda_voice::device::AudioDevice {
        source: Some("no-such-microphone".into()),
        ..pw.device()
    };
    let voice = Voice::start(dir2.path(), opts).await;
    let rec = record_untranscribed(&voice, 3);
    // Watched while it records: a fallback link would show here.
    while !rec.is_finished() {
        let links = pw.links();
        assert!(!links.contains("|-> pw-record"), "{links}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (s, b) = rec.await.unwrap();
    assert_eq!(s, 503, "{b}");
    let e = b["error"].as_str().unwrap();
    // WirePlumber 0.4 leaves the recorder unlinked; 0.5 ends its stream ("defined target not
    // found"), and pw-record 1.4 stops.
    assert!(
        e.contains("recorded nothing")
            || e.contains("is the PipeWire source no-such-microphone there?"),
        "{b}"
    );
    assert_eq!(
        files(&dir2.path().join("voice/recordings")),
        Vec::<PathBuf>::new()
    );
}

/// A `source` that is not a node name stops the start, naming the option, before anything is
/// created: from the command line (`--source`, as the unit passes it) and for the library's
/// callers. `0` would have made pw-record link nothing (every recording "recorded nothing"),
/// other numbers an object serial, and a blank name reached pw-record and the status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_source_that_is_not_a_node_name_refuses_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &[], None);
    for (name, says) in [
        ("0", "is a number"),
        ("17", "is a number"),
        ("", "is empty"),
        (" ", "white space"),
        ("mic\n", "white space"),
        ("mic\u{1b}[2J", "control character"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_osmoda-voice"))
            .arg("--source")
            .arg(name)
            .arg("--config")
            .arg(&cfg)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--socket")
            .arg(dir.path().join("voice.sock"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{name:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("services.osmoda.voice.source"),
            "{name:?}: {err}"
        );
        assert!(err.contains(says), "{name:?}: {err}");

        let mut opts = options(dir.path(), cfg.clone(), &dir.path().join("agentd.sock"));
        opts.audio.source = Some(name.into());
        let e = osmoda_voice::AppState::open(opts)
            .await
            .err()
            .unwrap_or_else(|| panic!("{name:?} was taken"))
            .to_string();
        assert!(
            e.contains("services.osmoda.voice.source") && e.contains(says),
            "{name:?}: {e}"
        );
        assert!(
            !dir.path().join("voice").exists(),
            "{name:?}: the state dir was made"
        );
        assert!(!dir.path().join("state").exists());
        assert!(!dir.path().join("voice.sock").exists());
    }
}
