//! `/etc/osmoda/voice.json`: local speech models (whisper.cpp, piper).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The whole `voice.json` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VoiceConfig {
    /// whisper.cpp model file (ggml); `None` = transcription unavailable.
    pub whisper_model: Option<PathBuf>,
    /// piper voice model (`.onnx`, with its `.onnx.json` beside it); `None` = no speech.
    pub piper_model: Option<PathBuf>,
    /// Language hint for transcription, e.g. `"en"` or `"auto"`.
    pub language: String,
    /// Directories besides the state dir whose WAV files `/voice/transcribe` and
    /// `/voice/listen` may read (absolute).
    #[serde(default)]
    pub audio_dirs: Vec<PathBuf>,
    /// The OpenClaw gateway that `/voice/listen` sends what it hears to:
    /// `http://127.0.0.1:<port>` or `unix:<socket>`; `None` = utterances are transcribed only.
    #[serde(default)]
    pub gateway_url: Option<String>,
}

impl VoiceConfig {
    /// Semantic checks: paths are absolute, the gateway is on loopback or a Unix socket.
    ///
    /// # Errors
    /// Returns a message naming the bad field.
    pub fn validate(&self) -> Result<(), String> {
        for (field, p) in [
            ("whisper_model", &self.whisper_model),
            ("piper_model", &self.piper_model),
        ] {
            if let Some(p) = p {
                if !p.is_absolute() {
                    return Err(format!("{field} {} must be an absolute path", p.display()));
                }
            }
        }
        for d in &self.audio_dirs {
            if !d.is_absolute() {
                return Err(format!(
                    "audio_dirs entry {} must be an absolute path",
                    d.display()
                ));
            }
        }
        if let Some(u) = &self.gateway_url {
            let unix = u.strip_prefix("unix:").is_some_and(|p| p.starts_with('/'));
            let loopback = ["http://127.0.0.1:", "http://[::1]:", "http://localhost:"]
                .iter()
                .any(|p| u.starts_with(p));
            if !unix && !loopback {
                return Err(format!(
                    "gateway_url {u:?} must be a loopback URL such as http://127.0.0.1:18789 or unix:/run/osmoda/voice-gateway.sock"
                ));
            }
        }
        if self.language.is_empty() {
            return Err("language must not be empty (use \"auto\")".into());
        }
        Ok(())
    }
}
