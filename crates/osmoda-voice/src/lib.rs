//! osmoda-voice: local speech in and out. whisper.cpp transcribes ([`stt`]), piper speaks
//! ([`tts`]), PipeWire plays and records ([`device`]), and `/voice/listen` ([`listen`]) cuts what the
//! microphone hears into utterances with voice-activity detection ([`vad`]) and sends each to the
//! agent through the OpenClaw gateway ([`gateway`]). Nothing leaves the machine.
//!
//! Entry points: [`AppState::open`] reads `voice.json`, loads the models it names and opens the
//! ledger spool; [`serve`] answers the API on a Unix socket until shutdown. The models are
//! loaded once at start: a new `voice.json` takes effect at the restart its NixOS unit does on
//! change (`restartTriggers`).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod api;
pub mod audio;
pub mod device;
pub mod error;
pub mod gateway;
pub mod listen;
pub mod proxy;
pub mod stt;
pub mod tts;
pub mod vad;

use std::path::PathBuf;
use std::sync::Arc;

use osmoda_client::Reporter;
use osmoda_config::VoiceConfig;
use serde_json::Value;

pub use error::{Result, VoiceError};
pub use osmoda_daemon::shutdown;
pub use osmoda_daemon::Shutdown;

use crate::audio::{AllowedDirs, Limits};
use crate::device::AudioDevice;
use crate::gateway::Gateway;
use crate::listen::{Listener, Playback};
use crate::stt::{Transcriber, Transcript};
use crate::tts::Speaker;

/// Audio files decoded at once; one more request is refused at once (503): each may hold up to
/// ~150 MB while it decodes (see [`audio::MAX_FRAMES`]).
pub const MAX_DECODES: usize = 2;

/// `/voice/record` calls at once (each holds a recorder for up to 300 s); one more is refused at
/// once (503).
pub const MAX_RECORDINGS: usize = 2;

/// Speech played at once by `/voice/speak`; more speech is written but not played (said in
/// `playback_error`).
pub const MAX_PLAYBACKS: usize = 2;

/// Everything the daemon needs to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// `voice.json`.
    pub config: PathBuf,
    /// Speech and recordings (`speech/`, `recordings/`) and the ledger spool (`spool/`).
    pub state_dir: PathBuf,
    /// agentd's socket (ledger events).
    pub agentd_socket: PathBuf,
    /// The piper executable.
    pub piper: PathBuf,
    /// PipeWire's player and recorder.
    pub audio: AudioDevice,
    /// Bearer token for the OpenClaw gateway (`OPENCLAW_GATEWAY_TOKEN`).
    pub gateway_token: Option<String>,
}

/// Shared state of the running daemon.
pub struct AppState {
    /// The config in force.
    pub config: VoiceConfig,
    /// The loaded whisper model, if one is configured.
    pub transcriber: Option<Transcriber>,
    /// The piper voice, if one is configured.
    pub speaker: Option<Speaker>,
    /// PipeWire.
    pub audio: AudioDevice,
    /// The gateway utterances go to, if one is configured.
    pub gateway: Option<Gateway>,
    /// Where audio may be read from: the state dir and `audio_dirs`.
    pub allowed: AllowedDirs,
    /// Limits on audio input.
    pub limits: Limits,
    /// The listen loop.
    pub listener: Listener,
    /// Audio files being decoded (at most [`MAX_DECODES`] at once).
    decodes: Arc<tokio::sync::Semaphore>,
    /// `/voice/record` calls running (at most [`MAX_RECORDINGS`]).
    pub recordings: Arc<tokio::sync::Semaphore>,
    /// `/voice/speak` playbacks running (at most [`MAX_PLAYBACKS`]).
    pub playbacks: Arc<tokio::sync::Semaphore>,
    /// This daemon's own playback (the listen loop ignores what the microphone hears of it).
    pub playback: Playback,
    reporter: Reporter,
    /// How the daemon was started.
    pub opts: Options,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Reads and validates `voice.json`.
///
/// # Errors
/// `Config` with the file, position and field, or the validation message.
pub fn load_config(path: &std::path::Path) -> Result<VoiceConfig> {
    let c =
        osmoda_config::load::<VoiceConfig>(path).map_err(|e| VoiceError::Config(e.to_string()))?;
    stt::check_language(&c.language).map_err(|e| {
        VoiceError::Config(format!(
            "{}: {} (services.osmoda.voice.language)",
            path.display(),
            e.message()
        ))
    })?;
    Ok(c)
}

impl AppState {
    /// Loads the config and the models it names (refusing a missing or unloadable one),
    /// creates the state dir and opens the ledger spool. Call inside a tokio runtime.
    ///
    /// # Errors
    /// An invalid config, a model that cannot be loaded, an unusable state dir.
    pub async fn open(opts: Options) -> Result<Arc<AppState>> {
        let config = load_config(&opts.config)?;
        if let Some(name) = &opts.audio.source {
            device::check_source(name).map_err(VoiceError::Config)?;
        }
        for sub in ["speech", "recordings"] {
            let d = opts.state_dir.join(sub);
            std::fs::create_dir_all(&d).map_err(VoiceError::io("create", &d))?;
            // Partial speech or recordings of a daemon killed while writing them.
            for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                if e.file_name().to_string_lossy().starts_with(".tmp-") {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        let transcriber = match config.whisper_model.clone() {
            Some(p) => Some(
                tokio::task::spawn_blocking(move || Transcriber::load(&p))
                    .await
                    .map_err(|e| VoiceError::Engine(e.to_string()))??,
            ),
            None => None,
        };
        if let Some(t) = &transcriber {
            t.check_language(&config.language).map_err(|e| {
                VoiceError::Config(format!(
                    "{} (services.osmoda.voice.language with services.osmoda.voice.whisperModel)",
                    e.message()
                ))
            })?;
        }
        let speaker = match &config.piper_model {
            Some(m) => Some(Speaker::new(opts.piper.clone(), m.clone())?),
            None => None,
        };
        let gateway = match &config.gateway_url {
            Some(u) => Some(Gateway::new(
                gateway::parse_url(u).map_err(VoiceError::Config)?,
                opts.gateway_token.clone(),
            )),
            None => None,
        };
        let allowed = AllowedDirs::new(
            std::iter::once(opts.state_dir.clone()).chain(config.audio_dirs.iter().cloned()),
        );
        let spool = opts.state_dir.join("spool");
        let reporter = Reporter::open(&opts.agentd_socket, &spool, "osmoda-voice")
            .map_err(|e| VoiceError::Config(format!("ledger spool {}: {e}", spool.display())))?;
        Ok(Arc::new(AppState {
            config,
            transcriber,
            speaker,
            audio: opts.audio.clone(),
            gateway,
            allowed,
            limits: Limits::default(),
            listener: Listener::default(),
            playback: Playback::default(),
            decodes: Arc::new(tokio::sync::Semaphore::new(MAX_DECODES)),
            recordings: Arc::new(tokio::sync::Semaphore::new(MAX_RECORDINGS)),
            playbacks: Arc::new(tokio::sync::Semaphore::new(MAX_PLAYBACKS)),
            reporter,
            opts,
        }))
    }

    /// Spools a ledger event (delivered to agentd in the background; logged if it cannot even
    /// be spooled).
    pub async fn report(&self, kind: &str, payload: Value) {
        if let Err(e) = self.reporter.report(kind, payload).await {
            tracing::error!("cannot record {kind}: {e}");
        }
    }

    /// Delivers the spooled events now (tests use it to wait for the ledger).
    ///
    /// # Errors
    /// Why delivery stopped (agentd down); the events stay spooled.
    pub async fn flush_events(&self) -> std::result::Result<usize, osmoda_client::ClientError> {
        self.reporter.flush().await
    }

    /// Reads the WAV file at `path` (already resolved) on the blocking pool, at most
    /// [`MAX_DECODES`] at once.
    ///
    /// # Errors
    /// `Unavailable` when [`MAX_DECODES`] files are being decoded; as [`audio::read_wav`].
    pub async fn read_audio(&self, path: PathBuf, limits: Limits) -> Result<audio::Audio> {
        let permit = Arc::clone(&self.decodes).try_acquire_owned().map_err(|_| {
            VoiceError::Unavailable(format!(
                "{MAX_DECODES} audio files are being decoded; retry later"
            ))
        })?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            audio::read_wav(&path, limits)
        })
        .await
        .map_err(|e| VoiceError::Engine(e.to_string()))?
    }

    /// Transcribes 16 kHz mono samples in `language` (default: the configured one); `person`:
    /// what the person said into the microphone, which goes before the agent's work
    /// ([`Transcriber::transcribe_for_person`]).
    ///
    /// # Errors
    /// `Unavailable` without a whisper model; as [`Transcriber::transcribe`].
    pub async fn transcribe_samples(
        &self,
        samples: Vec<f32>,
        language: Option<&str>,
        person: bool,
    ) -> Result<Transcript> {
        let t = self.transcriber.as_ref().ok_or_else(|| {
            VoiceError::Unavailable(
                "no whisper model is configured (services.osmoda.voice.whisperModel)".into(),
            )
        })?;
        let language = language.unwrap_or(&self.config.language);
        if person {
            t.transcribe_for_person(samples, language).await
        } else {
            t.transcribe(samples, language).await
        }
    }
}

/// Serves the API on `listener` until `shutdown`; stops the listen loop on the way out.
///
/// # Errors
/// Only when the listener itself fails.
pub async fn serve(
    listener: tokio::net::UnixListener,
    state: Arc<AppState>,
    shutdown: Shutdown,
) -> Result<()> {
    let app = api::router(Arc::clone(&state));
    let limits = osmoda_daemon::server::Limits::main(osmoda_daemon::fd_limit());
    let res = osmoda_daemon::server::serve(
        listener,
        "voice",
        limits,
        app,
        osmoda_daemon::server::PeerCred::of,
        shutdown,
    )
    .await
    .map_err(|e| VoiceError::Io {
        op: "serve",
        path: PathBuf::from("voice socket"),
        source: e,
    });
    state.listener.stop().await;
    let _ = state.flush_events().await;
    res
}
