//! Speech to text with whisper.cpp (through `whisper-rs`, which builds it from source).
//!
//! One [`Transcriber`] per process holds the model (loaded once, read-only, shared); each
//! transcription gets its own whisper state. Transcriptions run one at a time on the blocking
//! pool (a 2-core machine gains nothing from two at once); callers wait at most
//! [`QUEUE_WAIT`] for their turn and are then told the engine is busy.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use whisper_rs::{FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters};

use crate::error::{Result, VoiceError};

/// Longest wait for the engine before a request is refused as busy.
pub const QUEUE_WAIT: Duration = Duration::from_secs(120);

/// Transcriptions that may wait for the engine; one more is refused at once (503).
pub const MAX_WAITING: usize = 4;

/// Input shorter than this (250 ms, the voice-activity detector's shortest utterance) holds no
/// speech: it is answered with an empty text without running the engine.
pub const MIN_SAMPLES: usize = 4_000;

/// A transcription.
#[derive(Debug, Clone, PartialEq)]
pub struct Transcript {
    /// The text, segments joined, trimmed.
    pub text: String,
    /// The language whisper used (the requested one, or the detected one for `auto`).
    pub language: String,
    /// Wall time spent in whisper.cpp (ms).
    pub elapsed_ms: u64,
}

/// A loaded whisper.cpp model.
pub struct Transcriber {
    ctx: Arc<WhisperContext>,
    path: PathBuf,
    turn: Arc<tokio::sync::Semaphore>,
    waiting: std::sync::atomic::AtomicUsize,
    threads: i32,
    /// The person's utterances waiting for the engine: while any wait, the agent's
    /// transcriptions stand back and a running one is stopped.
    person_waiting: std::sync::atomic::AtomicUsize,
    /// Told when the person's count drops.
    person_done: tokio::sync::Notify,
    /// The agent's transcription that holds the engine now, to stop for the person.
    running: std::sync::Mutex<Option<Preemptible>>,
}

/// How to stop the agent's running transcription for the person.
struct Preemptible {
    stop: Arc<AtomicBool>,
    preempted: Arc<AtomicBool>,
}

/// Counts one of the person's utterances waiting for the engine until dropped.
struct PersonWaiting<'a>(&'a Transcriber);

impl Drop for PersonWaiting<'_> {
    fn drop(&mut self) {
        self.0.person_waiting.fetch_sub(1, Ordering::SeqCst);
        self.0.person_done.notify_waiters();
    }
}

/// Clears [`Transcriber::running`] when the agent's turn ends.
struct Registered<'a>(&'a Transcriber);

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        *lock(&self.0.running) = None;
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counts a waiting transcription until dropped.
struct Waiting<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::fmt::Debug for Transcriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transcriber")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// Checks a language name: `auto` or a code whisper knows (`en`, `de`, ...).
///
/// # Errors
/// `BadRequest` naming the value.
pub fn check_language(lang: &str) -> Result<()> {
    // whisper's codes are 2-3 lowercase ASCII letters ("en", "haw", "yue"); anything else is
    // refused before whisper-rs sees it (it panics on a NUL byte).
    let plausible = (2..=8).contains(&lang.len()) && lang.bytes().all(|b| b.is_ascii_lowercase());
    if lang == "auto" || (plausible && whisper_rs::get_lang_id(lang).is_some()) {
        Ok(())
    } else {
        Err(VoiceError::BadRequest(format!(
            "language {lang:?} is not one whisper knows; use a code such as \"en\" or \"de\", or \"auto\""
        )))
    }
}

impl Transcriber {
    /// Loads the ggml model at `path` (blocking; seconds for larger models).
    ///
    /// # Errors
    /// `Config` when the file is missing or whisper.cpp cannot load it.
    pub fn load(path: &Path) -> Result<Transcriber> {
        whisper_rs::install_logging_hooks();
        if !path.is_file() {
            return Err(VoiceError::Config(format!(
                "whisper model {} does not exist (services.osmoda.voice.whisperModel)",
                path.display()
            )));
        }
        let p = path.to_str().ok_or_else(|| {
            VoiceError::Config(format!(
                "whisper model path {} is not UTF-8",
                path.display()
            ))
        })?;
        let ctx = WhisperContext::new_with_params(p, WhisperContextParameters::default()).map_err(
            |e| {
                VoiceError::Config(format!(
                    "whisper.cpp cannot load {} ({e}); is it a ggml Whisper model?",
                    path.display()
                ))
            },
        )?;
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(8)) as i32;
        Ok(Transcriber {
            ctx: Arc::new(ctx),
            path: path.to_owned(),
            turn: Arc::new(tokio::sync::Semaphore::new(1)),
            waiting: std::sync::atomic::AtomicUsize::new(0),
            threads,
            person_waiting: std::sync::atomic::AtomicUsize::new(0),
            person_done: tokio::sync::Notify::new(),
            running: std::sync::Mutex::new(None),
        })
    }

    /// Whether a transcription runs now.
    pub fn busy(&self) -> bool {
        self.turn.available_permits() == 0
    }

    /// Transcriptions waiting for their turn.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::SeqCst)
    }

    /// The model file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the model knows languages other than English.
    pub fn multilingual(&self) -> bool {
        self.ctx.is_multilingual()
    }

    /// Checks that this model can transcribe `language`.
    ///
    /// # Errors
    /// `BadRequest` for an unknown language or a non-English one on an English-only model.
    pub fn check_language(&self, language: &str) -> Result<()> {
        check_language(language)?;
        if !self.multilingual() && !matches!(language, "en" | "auto") {
            return Err(VoiceError::BadRequest(format!(
                "the model {} is English-only; language {language:?} needs a multilingual model",
                self.path.display()
            )));
        }
        Ok(())
    }

    /// Transcribes 16 kHz mono samples in `language` (`auto` detects it) for the agent (a file,
    /// a recording). One runs at a time; at most [`MAX_WAITING`] wait for their turn. Input
    /// shorter than [`MIN_SAMPLES`] is an empty text at once. Dropping the future (the caller
    /// left) leaves the queue at once, or stops a transcription that runs: whisper.cpp asks its
    /// abort callback after each encoder window (30 s of audio) and each decoder step, so the
    /// engine is free again within one encoder window. The person goes first (see
    /// [`transcribe_for_person`](Self::transcribe_for_person)).
    ///
    /// # Errors
    /// `BadRequest` for an unknown language or a non-English one on an English-only model,
    /// `Unavailable` when [`MAX_WAITING`] already wait, the engine stayed busy for
    /// [`QUEUE_WAIT`] or the person's speech stopped this one, `Engine` when whisper.cpp fails.
    pub async fn transcribe(&self, samples: Vec<f32>, language: &str) -> Result<Transcript> {
        self.transcribe_as(samples, language, false).await
    }

    /// Transcribes what the person said into the microphone: ahead of every transcription for
    /// the agent, waiting or running. Agent work waiting stands back, and the agent's
    /// transcription that holds the engine is stopped (its caller gets a 503 to retry), so the
    /// person waits at most one encoder window. Otherwise as [`transcribe`](Self::transcribe).
    ///
    /// # Errors
    /// As [`transcribe`](Self::transcribe).
    pub async fn transcribe_for_person(
        &self,
        samples: Vec<f32>,
        language: &str,
    ) -> Result<Transcript> {
        self.transcribe_as(samples, language, true).await
    }

    async fn transcribe_as(
        &self,
        samples: Vec<f32>,
        language: &str,
        person: bool,
    ) -> Result<Transcript> {
        self.check_language(language)?;
        if samples.len() < MIN_SAMPLES {
            return Ok(Transcript {
                text: String::new(),
                language: language.to_owned(),
                elapsed_ms: 0,
            });
        }
        let busy = || {
            VoiceError::Unavailable(format!(
                "the transcription engine stayed busy for {} s; retry later",
                QUEUE_WAIT.as_secs()
            ))
        };
        let stopping = || VoiceError::Unavailable("the daemon is stopping".into());
        let stop = Arc::new(AtomicBool::new(false));
        let preempted = Arc::new(AtomicBool::new(false));
        let (turn, registered) = if person {
            let _waiting = {
                self.person_waiting.fetch_add(1, Ordering::SeqCst);
                PersonWaiting(self)
            };
            if let Some(r) = lock(&self.running).as_ref() {
                r.preempted.store(true, Ordering::SeqCst);
                r.stop.store(true, Ordering::SeqCst);
            }
            let turn = tokio::time::timeout(QUEUE_WAIT, Arc::clone(&self.turn).acquire_owned())
                .await
                .map_err(|_| busy())?
                .map_err(|_| stopping())?;
            (turn, None)
        } else {
            if self.waiting.fetch_add(1, Ordering::SeqCst) >= MAX_WAITING {
                self.waiting.fetch_sub(1, Ordering::SeqCst);
                return Err(VoiceError::Unavailable(format!(
                    "{MAX_WAITING} transcriptions are already waiting for the engine; retry later"
                )));
            }
            let waiting = Waiting(&self.waiting);
            let got = tokio::time::timeout(QUEUE_WAIT, self.agent_turn(&stop, &preempted))
                .await
                .map_err(|_| busy())??;
            drop(waiting);
            (got.0, Some(got.1))
        };
        // From here a caller who leaves stops the engine (before, it only left the queue).
        let mut left = Abandon::new(Arc::clone(&stop));
        let ctx = Arc::clone(&self.ctx);
        let language = language.to_owned();
        let threads = self.threads;
        // The turn is held by the engine's thread: a caller who leaves frees it only once
        // whisper.cpp has stopped.
        let res = tokio::task::spawn_blocking(move || {
            let _turn = turn;
            run(&ctx, &samples, &language, threads, &stop)
        })
        .await;
        drop(registered);
        left.finished = true;
        let res = res.map_err(|e| VoiceError::Engine(format!("transcription task: {e}")))?;
        if preempted.load(Ordering::SeqCst) && res.is_err() {
            return Err(VoiceError::Unavailable(
                "the transcription was stopped: the person's speech from the microphone goes first; retry later".into(),
            ));
        }
        res
    }

    /// The engine's turn for the agent, once no utterance of the person waits; registered as
    /// [`running`](Self::running) so the person can stop it.
    async fn agent_turn(
        &self,
        stop: &Arc<AtomicBool>,
        preempted: &Arc<AtomicBool>,
    ) -> Result<(tokio::sync::OwnedSemaphorePermit, Registered<'_>)> {
        loop {
            loop {
                let done = self.person_done.notified();
                tokio::pin!(done);
                done.as_mut().enable();
                if self.person_waiting.load(Ordering::SeqCst) == 0 {
                    break;
                }
                done.await;
            }
            let turn = Arc::clone(&self.turn)
                .acquire_owned()
                .await
                .map_err(|_| VoiceError::Unavailable("the daemon is stopping".into()))?;
            // Registered before looking: a person who comes after this either is seen here or
            // sees this transcription (and stops it).
            *lock(&self.running) = Some(Preemptible {
                stop: Arc::clone(stop),
                preempted: Arc::clone(preempted),
            });
            let registered = Registered(self);
            if self.person_waiting.load(Ordering::SeqCst) == 0 {
                return Ok((turn, registered));
            }
            drop(registered);
            drop(turn);
        }
    }
}

/// Tells a running transcription to stop when dropped before it finished: its caller left
/// (the request was dropped, the listen loop stopped).
struct Abandon {
    stop: Arc<AtomicBool>,
    finished: bool,
}

impl Abandon {
    fn new(stop: Arc<AtomicBool>) -> Abandon {
        Abandon {
            stop,
            finished: false,
        }
    }
}

impl Drop for Abandon {
    fn drop(&mut self) {
        if !self.finished {
            self.stop.store(true, Ordering::SeqCst);
            osmoda_daemon::metrics::global().voice("transcribe", "abandoned");
            tracing::info!("the caller left; its transcription is stopped");
        }
    }
}

/// whisper.cpp's abort callback (`whisper_full_params.abort_callback`): true stops the
/// transcription, which then fails with -6 (after an encoder window) or -8/-9 (after a decoder
/// step). `user_data` is the `AtomicBool` [`run`] passes.
///
/// Not whisper-rs's `set_abort_callback_safe`: in 0.16 it instantiates its trampoline with the
/// closure's own type while handing whisper.cpp a pointer to a `Box<dyn FnMut>`, so the
/// closure reads a fat pointer as its captures, returns garbage (true), and every
/// transcription fails with -6.
#[allow(unsafe_code)]
unsafe extern "C" fn abandoned(user_data: *mut std::ffi::c_void) -> bool {
    // SAFETY: `run` sets `user_data` to a `&AtomicBool` that outlives its `state.full` call,
    // the only time whisper.cpp calls this.
    let stop = unsafe { &*(user_data as *const AtomicBool) };
    stop.load(Ordering::SeqCst)
}

/// Whether a segment is one of whisper's non-speech markers (`[BLANK_AUDIO]`, `(music)`, ...).
fn is_marker(seg: &str) -> bool {
    let t = seg.trim();
    t.len() >= 2
        && ((t.starts_with('[') && t.ends_with(']')) || (t.starts_with('(') && t.ends_with(')')))
}

fn run(
    ctx: &WhisperContext,
    samples: &[f32],
    language: &str,
    threads: i32,
    stop: &AtomicBool,
) -> Result<Transcript> {
    let started = Instant::now();
    let engine = |what: &str, e: &dyn std::fmt::Display| {
        VoiceError::Engine(format!("whisper.cpp {what}: {e}"))
    };
    let mut state = ctx.create_state().map_err(|e| engine("state", &e))?;
    let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
    params.set_language(Some(language));
    params.set_n_threads(threads);
    params.set_print_progress(false);
    params.set_print_realtime(false);
    params.set_print_timestamps(false);
    params.set_print_special(false);
    params.set_suppress_blank(true);
    // SAFETY: `abandoned` reads `user_data` as the `AtomicBool` given here, which outlives
    // `state.full` below (the only call that uses these parameters).
    #[allow(unsafe_code)]
    unsafe {
        params.set_abort_callback(Some(abandoned));
        params.set_abort_callback_user_data(stop as *const AtomicBool as *mut std::ffi::c_void);
    }
    // Whisper needs at least one second; shorter input is padded with silence.
    let mut padded;
    let input = if samples.len() < 16_000 {
        padded = samples.to_vec();
        padded.resize(16_100, 0.0);
        &padded[..]
    } else {
        samples
    };
    let res = state.full(params, input);
    if stop.load(Ordering::SeqCst) {
        return Err(VoiceError::Unavailable(
            "the transcription was stopped: its caller left".into(),
        ));
    }
    res.map_err(|e| engine("transcription", &e))?;
    let mut text = String::new();
    for i in 0..state.full_n_segments() {
        if let Some(seg) = state.get_segment(i) {
            let s = seg.to_str_lossy().map_err(|e| engine("segment text", &e))?;
            if !is_marker(&s) {
                text.push_str(&s);
            }
        }
    }
    let lang_id = state.full_lang_id_from_state();
    let detected = whisper_rs::get_lang_str(lang_id)
        .unwrap_or(language)
        .to_owned();
    Ok(Transcript {
        text: text.trim().to_owned(),
        language: if language == "auto" {
            detected
        } else {
            language.to_owned()
        },
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}
