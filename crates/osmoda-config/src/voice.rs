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
}

impl VoiceConfig {
    /// Semantic checks: model paths are absolute.
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
        if self.language.is_empty() {
            return Err("language must not be empty (use \"auto\")".into());
        }
        Ok(())
    }
}
