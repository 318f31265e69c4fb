//! The `/voice/*` handlers: status, transcribe, speak, record, listen.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::Extension;
use osmoda_daemon::hangup::Hangup;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, Json};
use crate::error::VoiceError;
use crate::listen::Source;
use crate::tts::fresh_name;
use crate::{audio, stt, AppState};

type ApiResult = Result<axum::Json<Value>, ApiError>;

fn metric(kind: &str, ok: bool) {
    osmoda_daemon::metrics::global().voice(kind, if ok { "ok" } else { "error" });
}

/// `GET /health`.
pub async fn health() -> axum::Json<Value> {
    axum::Json(json!({ "status": "ok" }))
}

/// `GET /voice/status`.
pub async fn status(State(app): State<Arc<AppState>>) -> axum::Json<Value> {
    let listen = app.listener.status();
    let audio = app.audio.check().await;
    axum::Json(json!({
        "listening": listen.listening,
        "whisper_model_loaded": app.transcriber.is_some(),
        "piper_model_loaded": app.speaker.is_some(),
        "whisper_model": app.transcriber.as_ref().map(|t| t.path().display().to_string()),
        "piper_model": app.speaker.as_ref().map(|s| s.model.display().to_string()),
        "language": app.config.language,
        "audio_device": audio.is_ok(),
        "audio_device_error": audio.err(),
        "gateway": app.config.gateway_url,
        "audio_dirs": app.allowed.dirs(),
        "listen": listen,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranscribeReq {
    audio_path: PathBuf,
    #[serde(default)]
    language: Option<String>,
}

/// Nobody reads the answer of a caller who hung up: from here on such a request is dropped,
/// which stops its transcription (or recording) instead of running it to its end.
fn stop_on_hangup(hangup: Option<Extension<Hangup>>) {
    if let Some(Extension(h)) = hangup {
        h.drop_on_hangup();
    }
}

/// `POST /voice/transcribe {audio_path, language?}` → `{text, language, duration_ms, transcribe_ms}`.
pub async fn transcribe(
    State(app): State<Arc<AppState>>,
    hangup: Option<Extension<Hangup>>,
    Json(req): Json<TranscribeReq>,
) -> ApiResult {
    stop_on_hangup(hangup);
    let res = transcribe_file(&app, &req.audio_path, req.language.as_deref()).await;
    metric("transcribe", res.is_ok());
    let (audio_ms, t) = res?;
    app.report(
        "voice.transcribed",
        json!({ "audio_path": req.audio_path, "duration_ms": audio_ms, "transcribe_ms": t.elapsed_ms, "words": t.text.split_whitespace().count() }),
    )
    .await;
    Ok(axum::Json(json!({
        "text": t.text,
        "language": t.language,
        "duration_ms": audio_ms,
        "transcribe_ms": t.elapsed_ms,
    })))
}

async fn transcribe_file(
    app: &AppState,
    path: &std::path::Path,
    language: Option<&str>,
) -> crate::Result<(u64, stt::Transcript)> {
    if let Some(l) = language {
        stt::check_language(l)?;
    }
    let Some(t) = &app.transcriber else {
        return Err(VoiceError::Unavailable(
            "no whisper model is configured (services.osmoda.voice.whisperModel)".into(),
        ));
    };
    if let Some(l) = language {
        t.check_language(l)?;
    }
    let real = app.allowed.resolve(path)?;
    let audio = app.read_audio(real, app.limits).await?;
    let ms = audio.duration_ms();
    let t = app
        .transcribe_samples(audio.samples, language, false)
        .await?;
    Ok((ms, t))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpeakReq {
    text: String,
    /// Play it (default true); false only writes the file.
    #[serde(default = "yes")]
    play: bool,
}

fn yes() -> bool {
    true
}

/// `POST /voice/speak {text, play?}` → `{audio_path, duration_ms, synth_ms, played, playback_error}`.
pub async fn speak(State(app): State<Arc<AppState>>, Json(req): Json<SpeakReq>) -> ApiResult {
    crate::tts::check_text(&req.text)?;
    let speaker = app.speaker.as_ref().ok_or_else(|| {
        VoiceError::Unavailable(
            "no piper voice is configured (services.osmoda.voice.piperModel)".into(),
        )
    })?;
    let res = speaker
        .speak(&req.text, &app.opts.state_dir.join("speech"))
        .await;
    metric("speak", res.is_ok());
    let speech = res?;
    let played = if req.play {
        match Arc::clone(&app.playbacks).try_acquire_owned() {
            Ok(_slot) => {
                // The listen loop does not take this for the person (see listen::Playback).
                let _playing = app.playback.begin();
                app.audio.play(&speech.audio_path, speech.duration_ms).await
            }
            Err(_) => Err(format!(
                "{} speeches are playing; this one was written but not played",
                crate::MAX_PLAYBACKS
            )),
        }
    } else {
        Err("not requested (play: false)".into())
    };
    app.report(
        "voice.spoke",
        json!({ "audio_path": speech.audio_path, "chars": req.text.chars().count(), "duration_ms": speech.duration_ms, "played": played.is_ok() }),
    )
    .await;
    Ok(axum::Json(json!({
        "audio_path": speech.audio_path,
        "duration_ms": speech.duration_ms,
        "synth_ms": speech.synth_ms,
        "played": played.is_ok(),
        "playback_error": played.err(),
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordReq {
    #[serde(default = "five")]
    duration_secs: u64,
    #[serde(default = "yes")]
    transcribe: bool,
}

fn five() -> u64 {
    5
}

/// `POST /voice/record {duration_secs? (5, 1..=300), transcribe? (true)}` →
/// `{audio_path, duration_ms, text?, transcribe_ms?}`. 503 without an audio device.
pub async fn record(
    State(app): State<Arc<AppState>>,
    hangup: Option<Extension<Hangup>>,
    Json(req): Json<RecordReq>,
) -> ApiResult {
    if !(1..=300).contains(&req.duration_secs) {
        return Err(VoiceError::BadRequest(format!(
            "duration_secs is {}; use 1-300",
            req.duration_secs
        ))
        .into());
    }
    if req.transcribe && app.transcriber.is_none() {
        return Err(VoiceError::Unavailable("no whisper model is configured (services.osmoda.voice.whisperModel); record with transcribe: false".into()).into());
    }
    app.audio.check().await.map_err(VoiceError::Unavailable)?;
    let _slot = Arc::clone(&app.recordings)
        .try_acquire_owned()
        .map_err(|_| {
            VoiceError::Unavailable(format!(
                "{} recordings are running; retry later",
                crate::MAX_RECORDINGS
            ))
        })?;
    stop_on_hangup(hangup);
    let dir = app.opts.state_dir.join("recordings");
    let out = fresh_name(&dir, "wav");
    // Recorded under a temporary name and renamed once complete: a daemon killed meanwhile
    // leaves only a `.tmp-*` file, which the next start removes, never a cut-off recording
    // under a recording's name.
    let tmp = crate::tts::temp_name(&out);
    let res = app
        .audio
        .record(&tmp, Duration::from_secs(req.duration_secs))
        .await;
    metric("record", res.is_ok());
    let samples = res?;
    let mut partial = crate::device::Partial(Some(tmp.clone()));
    std::fs::rename(&tmp, &out).map_err(VoiceError::io("rename", &out))?;
    partial.0 = None;
    crate::tts::prune(&dir, crate::tts::KEEP_FILES);
    let source = app.audio.source_name();
    // Recorded in the ledger as soon as it is kept, before the transcription (which a caller
    // who hangs up stops): every kept recording has its row.
    app.report(
        "voice.recorded",
        json!({ "audio_path": out, "duration_secs": req.duration_secs, "source": source }),
    )
    .await;
    let mut body = json!({
        "audio_path": out,
        "duration_ms": samples * 1000 / u64::from(audio::SAMPLE_RATE),
        "source": source,
    });
    if req.transcribe {
        let (_, t) = transcribe_file(&app, &out, None).await?;
        body["text"] = json!(t.text);
        body["transcribe_ms"] = json!(t.elapsed_ms);
    }
    Ok(axum::Json(body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenReq {
    enabled: bool,
    /// Listen to this WAV file instead of the microphone (the loop ends at its end).
    #[serde(default)]
    audio_path: Option<PathBuf>,
}

/// `POST /voice/listen {enabled, audio_path?}` → `{listening, previous}`.
pub async fn listen(State(app): State<Arc<AppState>>, Json(req): Json<ListenReq>) -> ApiResult {
    if !req.enabled {
        if req.audio_path.is_some() {
            return Err(VoiceError::BadRequest("audio_path goes with enabled: true".into()).into());
        }
        // In a task of its own: a caller who hangs up does not interrupt the stop.
        let a = Arc::clone(&app);
        let previous = tokio::spawn(async move { a.listener.stop().await })
            .await
            .map_err(|e| VoiceError::Engine(e.to_string()))?;
        return Ok(axum::Json(
            json!({ "listening": false, "previous": previous }),
        ));
    }
    if app.transcriber.is_none() {
        return Err(VoiceError::Unavailable(
            "no whisper model is configured (services.osmoda.voice.whisperModel)".into(),
        )
        .into());
    }
    let source = match &req.audio_path {
        Some(p) => {
            let real = app.allowed.resolve(p)?;
            // Refuse what cannot be read now rather than in the loop.
            let limits = audio::Limits {
                max_secs: crate::listen::LISTEN_FILE_MAX_SECS,
                ..app.limits
            };
            let r = real.clone();
            tokio::task::spawn_blocking(move || audio::probe_wav(&r, limits))
                .await
                .map_err(|e| VoiceError::Engine(e.to_string()))??;
            Source::File(real)
        }
        None => {
            app.audio.check().await.map_err(VoiceError::Unavailable)?;
            Source::Microphone(app.audio.source_name())
        }
    };
    let a = Arc::clone(&app);
    let previous = tokio::spawn(async move { a.listener.start(Arc::clone(&a), source).await })
        .await
        .map_err(|e| VoiceError::Engine(e.to_string()))?;
    Ok(axum::Json(
        json!({ "listening": true, "previous": previous }),
    ))
}
