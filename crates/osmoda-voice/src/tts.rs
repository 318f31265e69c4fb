//! Text to speech with piper.
//!
//! piper runs as a child process per request (`piper --model M --output_file F`, the text on
//! stdin; the flags of both the piper-tts Python runtime and the C++ binary nixpkgs ships), with
//! a timeout, into a temporary file in the speech directory that is renamed into place only once
//! it is a valid WAV: a failed or killed piper leaves nothing behind. Playing it is
//! [`crate::device`]'s.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::{Result, VoiceError};

/// Longest text `speak` accepts (characters).
pub const MAX_TEXT_CHARS: usize = 4000;
/// How long piper may take for one request.
pub const PIPER_TIMEOUT: Duration = Duration::from_secs(120);
/// Speech files kept in the speech directory; older ones are removed.
pub const KEEP_FILES: usize = 100;
/// Piper processes at once (each loads the voice, ~100 MB).
pub const MAX_PIPERS: usize = 2;
/// Longest wait for a piper slot before a request is refused as busy (503).
pub const PIPER_WAIT: Duration = Duration::from_secs(60);

/// What `speak` produced.
#[derive(Debug, Clone, PartialEq)]
pub struct Speech {
    /// The WAV file (under the state dir's `speech/`).
    pub audio_path: PathBuf,
    /// Its length (ms).
    pub duration_ms: u64,
    /// Time until the audio existed: piper's run (ms).
    pub synth_ms: u64,
}

/// The piper runtime and voice.
#[derive(Debug, Clone)]
pub struct Speaker {
    /// The `piper` executable (a name on `PATH` or a path).
    pub piper: PathBuf,
    /// The voice model (`.onnx`, its `.onnx.json` beside it).
    pub model: PathBuf,
    /// Piper runs (at most [`MAX_PIPERS`] at once).
    turn: std::sync::Arc<tokio::sync::Semaphore>,
}

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A new file name in `dir`: `<unix ms>-<pid>-<seq>.<ext>`, unique within and across processes.
pub fn fresh_name(dir: &Path, ext: &str) -> PathBuf {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!("{ms}-{}-{n}.{ext}", std::process::id()))
}

/// Where a file that will be `out` is written until complete: `.tmp-<name>` beside it, which
/// [`prune`] never counts and the daemon's start removes ([`crate::AppState::open`]).
pub fn temp_name(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map_or_else(|| "audio.wav".into(), |n| n.to_string_lossy().into_owned());
    out.with_file_name(format!(".tmp-{name}"))
}

/// Checks text for `speak`: not blank, at most [`MAX_TEXT_CHARS`], no control characters other
/// than line breaks and tabs.
///
/// # Errors
/// `BadRequest` saying what is wrong.
pub fn check_text(text: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(VoiceError::BadRequest("text is empty".into()));
    }
    let n = text.chars().count();
    if n > MAX_TEXT_CHARS {
        return Err(VoiceError::BadRequest(format!(
            "text is {n} characters, the limit is {MAX_TEXT_CHARS}; split it"
        )));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Err(VoiceError::BadRequest(
            "text contains control characters".into(),
        ));
    }
    Ok(())
}

impl Speaker {
    /// Checks that the voice model and its config exist.
    ///
    /// # Errors
    /// `Config` naming the missing file.
    pub fn new(piper: PathBuf, model: PathBuf) -> Result<Speaker> {
        let json = PathBuf::from(format!("{}.json", model.display()));
        for f in [&model, &json] {
            if !f.is_file() {
                return Err(VoiceError::Config(format!(
                    "piper voice file {} does not exist (services.osmoda.voice.piperModel names the .onnx; its .onnx.json must be beside it)",
                    f.display()
                )));
            }
        }
        Ok(Speaker {
            piper,
            model,
            turn: std::sync::Arc::new(tokio::sync::Semaphore::new(MAX_PIPERS)),
        })
    }

    /// Synthesises `text` into a new WAV file in `dir`.
    ///
    /// # Errors
    /// `BadRequest` for bad text; `Unavailable` when piper cannot be started; `Engine` when it
    /// fails, times out or writes no valid WAV (nothing is left behind); `Io` for the directory.
    pub async fn speak(&self, text: &str, dir: &Path) -> Result<Speech> {
        check_text(text)?;
        std::fs::create_dir_all(dir).map_err(VoiceError::io("create", dir))?;
        let out = fresh_name(dir, "wav");
        let tmp = temp_name(&out);
        let started = Instant::now();
        let _turn = tokio::time::timeout(PIPER_WAIT, self.turn.acquire())
            .await
            .map_err(|_| {
                VoiceError::Unavailable(format!(
                    "{MAX_PIPERS} speeches were being synthesised for {} s; retry later",
                    PIPER_WAIT.as_secs()
                ))
            })?
            .map_err(|_| VoiceError::Unavailable("the daemon is stopping".into()))?;
        // Removed on every way out but the rename: an error, or this future dropped (the caller
        // hung up and piper is killed with it) with piper's partial file written.
        let mut partial = crate::device::Partial(Some(tmp.clone()));
        let res = self.run_piper(text, &tmp).await;
        let res = res.and_then(|()| {
            let reader = hound::WavReader::open(&tmp)
                .map_err(|e| VoiceError::Engine(format!("piper wrote no valid WAV file: {e}")))?;
            let spec = reader.spec();
            Ok(u64::from(reader.duration()) * 1000 / u64::from(spec.sample_rate.max(1)))
        });
        let duration_ms = res?;
        std::fs::rename(&tmp, &out).map_err(VoiceError::io("rename", &out))?;
        partial.0 = None;
        prune(dir, KEEP_FILES);
        Ok(Speech {
            audio_path: out,
            duration_ms,
            synth_ms: started.elapsed().as_millis() as u64,
        })
    }

    async fn run_piper(&self, text: &str, out: &Path) -> Result<()> {
        let mut cmd = Command::new(&self.piper);
        crate::device::clean_env(&mut cmd);
        crate::device::die_with_daemon(&mut cmd);
        let mut child = cmd
            .arg("--model")
            .arg(&self.model)
            .arg("--output_file")
            .arg(out)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                VoiceError::Unavailable(format!(
                    "cannot start piper ({}): {e}",
                    self.piper.display()
                ))
            })?;
        let mut stdin = child
            .stdin
            .take()
            .ok_or_else(|| VoiceError::Engine("piper has no stdin".into()))?;
        // One utterance per line for piper: line breaks inside the text become spaces.
        let line = format!("{}\n", text.replace(['\n', '\r'], " "));
        let wait = async {
            stdin.write_all(line.as_bytes()).await?;
            drop(stdin);
            child.wait_with_output().await
        };
        let output = tokio::time::timeout(PIPER_TIMEOUT, wait)
            .await
            .map_err(|_| {
                VoiceError::Engine(format!(
                    "piper took longer than {} s and was stopped",
                    PIPER_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| VoiceError::Engine(format!("piper: {e}")))?;
        if !output.status.success() {
            let err = String::from_utf8_lossy(&output.stderr);
            let tail: String = err
                .lines()
                .rev()
                .take(3)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join(" | ");
            return Err(VoiceError::Engine(format!(
                "piper failed ({}): {tail}",
                output.status
            )));
        }
        Ok(())
    }
}

/// Removes the oldest `.wav` files in `dir` beyond the newest `keep`.
pub fn prune(dir: &Path, keep: usize) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, PathBuf)> = rd
        .flatten()
        .filter(|e| {
            e.path().extension().is_some_and(|x| x == "wav")
                && !e.file_name().to_string_lossy().starts_with('.')
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    if files.len() <= keep {
        return;
    }
    files.sort();
    for (_, p) in &files[..files.len() - keep] {
        let _ = std::fs::remove_file(p);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_rules() {
        assert!(check_text("Hello there.\nSecond line.").is_ok());
        for bad in ["", "   \n", "a\u{0}b", "bell\u{7}"] {
            assert!(
                matches!(check_text(bad), Err(VoiceError::BadRequest(_))),
                "{bad:?}"
            );
        }
        assert!(check_text(&"a".repeat(MAX_TEXT_CHARS)).is_ok());
        assert!(check_text(&"a".repeat(MAX_TEXT_CHARS + 1)).is_err());
    }

    #[test]
    fn prune_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..5 {
            let p = dir.path().join(format!("{i}.wav"));
            std::fs::write(&p, b"x").unwrap();
            let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000 + i);
            std::fs::File::options()
                .write(true)
                .open(&p)
                .unwrap()
                .set_modified(t)
                .unwrap();
        }
        std::fs::write(dir.path().join("keep.txt"), b"x").unwrap();
        prune(dir.path(), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["3.wav", "4.wav", "keep.txt"]);
    }
}
