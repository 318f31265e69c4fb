//! `/voice/listen`: the loop that hears the person. Audio comes from the microphone (PipeWire's
//! `pw-record`, a 16 kHz mono 16-bit WAV stream on its stdout) or from a WAV file; the
//! [`crate::vad::Segmenter`] cuts it into utterances at silences; each utterance is transcribed
//! and recorded as a `voice.utterance` event. Only the microphone's utterances are sent to the
//! agent through the gateway ([`crate::gateway`]) as the person's words, and not those that
//! overlap this daemon's own playback ([`Playback`], plus [`PLAYBACK_TAIL`]): the microphone
//! then hears the daemon. A file's utterances stay in `/voice/status` (see [`FROM_FILE`]).
//!
//! One loop runs at a time ([`Listener`]): start and stop are serialised, a start stops and
//! awaits the previous loop, a stop drops what was cut but not yet sent and returns once the
//! loop has ended; each loop writes only its own status.
//!
//! Capture and segmentation run in one task, transcription and delivery in another, joined by a
//! bounded queue: a slow agent never stalls the microphone. From a microphone, an utterance
//! that finds the queue full is dropped and counted; from a file the reader waits.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::{mpsc, watch};

use crate::audio::{self, Limits};
use crate::device::NO_AUDIO_TIMEOUT;
use crate::vad::{Segmenter, Utterance, VadConfig};
use crate::AppState;

/// Why a file's utterance was not sent to the agent.
pub const FROM_FILE: &str =
    "from a file: transcribed here only; only the microphone speaks to the agent as the person";

/// Utterances waiting for transcription.
const QUEUE: usize = 4;
/// The most of an agent's answer kept in `/voice/status` (characters): the status holds 20
/// utterances, and an answer may be megabytes.
pub const MAX_REPLY_CHARS: usize = 2000;

/// `text` cut to `max` characters, marked with `…` where it was cut.
fn shorten(text: String, max: usize) -> String {
    match text.char_indices().nth(max) {
        None => text,
        Some((at, _)) => format!("{}…", &text[..at]),
    }
}
/// Samples read from the microphone at a time (100 ms).
const CHUNK: usize = 1600;

/// Where the loop listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// PipeWire's source through the recorder command: the node named here
    /// ([`AudioDevice::source_name`](crate::device::AudioDevice::source_name)), which the
    /// status and the ledger name as what was heard.
    Microphone(String),
    /// A WAV file (resolved inside the allowed directories); the loop ends at its end.
    File(PathBuf),
}

impl Source {
    fn describe(&self) -> String {
        match self {
            Source::Microphone(node) => format!("microphone {node}"),
            Source::File(p) => format!("file {}", p.display()),
        }
    }
}

/// One utterance as the status page shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Heard {
    /// Position in the stream (ms).
    pub start_ms: u64,
    /// End in the stream (ms).
    pub end_ms: u64,
    /// What whisper heard.
    pub text: String,
    /// Whether the gateway took it.
    pub delivered: bool,
    /// The agent's answer, when delivered.
    pub reply: Option<String>,
    /// Why it was not transcribed or delivered.
    pub error: Option<String>,
}

/// The loop's state, for `/voice/status`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ListenStatus {
    /// A loop is running.
    pub listening: bool,
    /// `microphone <node>` (the PipeWire node it records, or `default source`) or
    /// `file <path>`.
    pub source: Option<String>,
    /// Utterances cut since the loop started.
    pub utterances: u64,
    /// Utterances dropped because transcription was behind.
    pub dropped: u64,
    /// Utterances dropped because they overlapped this daemon's own playback (`/voice/speak`)
    /// or its [`PLAYBACK_TAIL`]: the microphone heard the daemon, not the person.
    pub suppressed: u64,
    /// The most recent utterances, newest last (at most 20).
    pub recent: Vec<Heard>,
    /// Why the loop stopped, if it failed.
    pub error: Option<String>,
}

/// How long after this daemon's playback ends the microphone's utterances are still taken as
/// the daemon's own voice (the room's echo and PipeWire's capture latency).
pub const PLAYBACK_TAIL: std::time::Duration = std::time::Duration::from_millis(1500);

/// This daemon's own playback, so the listen loop does not take it for the person.
#[derive(Debug, Default)]
pub struct Playback {
    /// Playbacks running, and when the last one ended.
    state: Mutex<(usize, Option<std::time::Instant>)>,
}

/// Marks a playback as running until dropped.
#[derive(Debug)]
pub struct Playing<'a>(&'a Playback);

impl Playback {
    /// Marks a playback as running (until the returned guard is dropped).
    pub fn begin(&self) -> Playing<'_> {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).0 += 1;
        Playing(self)
    }

    /// Whether the microphone may now be hearing this daemon: a playback runs, or one ended
    /// less than [`PLAYBACK_TAIL`] ago.
    pub fn muted(&self) -> bool {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 > 0 || s.1.is_some_and(|t| t.elapsed() < PLAYBACK_TAIL)
    }
}

impl Drop for Playing<'_> {
    fn drop(&mut self) {
        let mut s = self.0.state.lock().unwrap_or_else(|p| p.into_inner());
        s.0 = s.0.saturating_sub(1);
        s.1 = Some(std::time::Instant::now());
    }
}

/// One loop: its own status (only it and its stopper write there) and its stop signal.
#[derive(Debug)]
struct Loop {
    status: Arc<Mutex<ListenStatus>>,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

/// The listen loop, owned by the app state: at most one runs. Start and stop are serialised;
/// a stop returns only once the loop has ended (nothing is sent to the agent after it).
#[derive(Debug, Default)]
pub struct Listener {
    current: Mutex<Option<Loop>>,
    control: tokio::sync::Mutex<()>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Listener {
    /// A copy of the current (or last) loop's state.
    pub fn status(&self) -> ListenStatus {
        lock(&self.current)
            .as_ref()
            .map(|l| lock(&l.status).clone())
            .unwrap_or_default()
    }

    /// Stops the loop (if any) and waits until it has ended: utterances cut but not yet sent
    /// are dropped. Returns whether one was running.
    pub async fn stop(&self) -> bool {
        let _turn = self.control.lock().await;
        self.stop_locked().await
    }

    async fn stop_locked(&self) -> bool {
        let (was, task) = match lock(&self.current).as_mut() {
            None => (false, None),
            Some(l) => {
                let was = std::mem::replace(&mut lock(&l.status).listening, false);
                let _ = l.stop.send(true);
                (was, l.task.take())
            }
        };
        if let Some(t) = task {
            let _ = t.await;
        }
        was
    }

    /// Starts a loop on `source`, stopping a running one first (and waiting for its end);
    /// returns whether one was running.
    pub async fn start(&self, app: Arc<AppState>, source: Source) -> bool {
        let _turn = self.control.lock().await;
        let previous = self.stop_locked().await;
        let (tx, rx) = watch::channel(false);
        let status = Arc::new(Mutex::new(ListenStatus {
            listening: true,
            source: Some(source.describe()),
            ..ListenStatus::default()
        }));
        let st = Arc::clone(&status);
        let task = tokio::spawn(async move {
            app.report(
                "voice.listen.started",
                json!({ "source": source.describe() }),
            )
            .await;
            let result = run(Arc::clone(&app), source.clone(), Arc::clone(&st), rx).await;
            let utterances = lock(&st).utterances;
            let error = result.err();
            // Spooled before the status says the loop ended, so whoever saw it end finds it.
            app.report(
                "voice.listen.stopped",
                json!({ "source": source.describe(), "utterances": utterances, "error": error }),
            )
            .await;
            let mut s = lock(&st);
            s.listening = false;
            s.error = error;
        });
        *lock(&self.current) = Some(Loop {
            status,
            stop: tx,
            task: Some(task),
        });
        previous
    }
}

async fn run(
    app: Arc<AppState>,
    source: Source,
    status: Arc<Mutex<ListenStatus>>,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel::<Utterance>(QUEUE);
    let from_file = matches!(source, Source::File(_));
    let work = deliver(
        Arc::clone(&app),
        rx,
        Arc::clone(&status),
        stop.clone(),
        from_file,
    );
    let mut stopped = stop.clone();
    let capture = async move {
        let res = match &source {
            Source::File(p) => file(&app, p.clone(), &tx, &status).await,
            Source::Microphone(_) => microphone(&app, &tx, &status).await,
        };
        drop(tx);
        res
    };
    let capture = async move {
        tokio::select! {
            biased;
            _ = stopped.wait_for(|s| *s) => Ok(()),
            r = capture => r,
        }
    };
    // Utterances already cut are still transcribed and delivered, unless the loop is stopped.
    let (res, ()) = tokio::join!(capture, work);
    res
}

async fn file(
    app: &AppState,
    p: PathBuf,
    tx: &mpsc::Sender<Utterance>,
    status: &Mutex<ListenStatus>,
) -> Result<(), String> {
    let limits = Limits {
        max_secs: LISTEN_FILE_MAX_SECS,
        ..app.limits
    };
    let audio = app.read_audio(p, limits).await.map_err(|e| e.message())?;
    let mut seg = Segmenter::new(VadConfig::default());
    for chunk in audio
        .samples
        .chunks(CHUNK)
        .map(Some)
        .chain(std::iter::once(None))
    {
        let cut = match chunk {
            Some(c) => seg.push(c),
            None => seg.finish().into_iter().collect(),
        };
        for u in cut {
            count(status);
            tx.send(u)
                .await
                .map_err(|_| "the transcriber stopped".to_string())?;
        }
    }
    Ok(())
}

/// The longest WAV file `/voice/listen {audio_path}` takes (s): as `/voice/transcribe`.
pub const LISTEN_FILE_MAX_SECS: u64 = 600;

fn count(status: &Mutex<ListenStatus>) {
    lock(status).utterances += 1;
}

async fn microphone(
    app: &AppState,
    tx: &mpsc::Sender<Utterance>,
    status: &Mutex<ListenStatus>,
) -> Result<(), String> {
    app.audio.check().await?;
    let mut child = app.audio.stream()?;
    let mut out = child.stdout.take().ok_or("the recorder has no stdout")?;
    // A source delivers samples all the time (silence as zeros): a stream that brings nothing
    // for NO_AUDIO_TIMEOUT has no source linked to it, or lost it.
    let silent = || {
        format!(
            "no audio device: {} delivered no audio for {} s, no source is linked to it (is a microphone there, and a session manager such as WirePlumber running?)",
            app.audio.recorder.display(),
            NO_AUDIO_TIMEOUT.as_secs()
        )
    };
    let mut pending = tokio::time::timeout(NO_AUDIO_TIMEOUT, read_stream_start(&mut out))
        .await
        .map_err(|_| silent())??;
    let vad = VadConfig::default();
    let preroll_ms = vad.preroll_ms;
    let mut seg = Segmenter::new(vad);
    let mut buf = vec![0u8; CHUNK * 2];
    // Stream positions (ms) captured while this daemon played: an utterance overlapping one is
    // the daemon's own voice. Only the span still open or the last one can matter.
    let mut muted: Option<(u64, u64)> = None;
    let mut pos_samples: u64 = 0;
    let offer = |u: Utterance, muted: Option<(u64, u64)>| {
        count(status);
        // Judged from the speech itself, not the quiet kept before it (`preroll_ms`): a
        // person who starts right after the tail is not taken for the daemon.
        let onset = (u.start_ms + preroll_ms).min(u.end_ms);
        if muted.is_some_and(|(a, b)| onset <= b && a <= u.end_ms) {
            lock(status).suppressed += 1;
            tracing::info!(
                start_ms = u.start_ms,
                end_ms = u.end_ms,
                "utterance overlaps this daemon's own playback; not sent"
            );
        } else if tx.try_send(u).is_err() {
            lock(status).dropped += 1;
        }
    };
    loop {
        let n = tokio::time::timeout(NO_AUDIO_TIMEOUT, out.read(&mut buf))
            .await
            .map_err(|_| silent())?
            .map_err(|e| format!("reading the recorder: {e}"))?;
        if n == 0 {
            break;
        }
        let mut bytes = std::mem::take(&mut pending);
        bytes.extend_from_slice(&buf[..n]);
        if bytes.len() % 2 == 1 {
            pending.extend(bytes.pop());
        }
        let samples: Vec<f32> = bytes
            .chunks_exact(2)
            .map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0)
            .collect();
        let from_ms = pos_samples * 1000 / u64::from(audio::SAMPLE_RATE);
        pos_samples += samples.len() as u64;
        let to_ms = pos_samples * 1000 / u64::from(audio::SAMPLE_RATE);
        if app.playback.muted() {
            muted = match muted {
                Some((a, b)) if b + 200 >= from_ms => Some((a, to_ms)),
                _ => Some((from_ms, to_ms)),
            };
        }
        for u in seg.push(&samples) {
            offer(u, muted);
        }
    }
    if let Some(u) = seg.finish() {
        offer(u, muted);
    }
    let st = child.wait().await.map_err(|e| e.to_string())?;
    Err(format!("{} ended ({st})", app.audio.recorder.display()))
}

/// Reads the start of the recorder's stream and returns the sample bytes read so far.
///
/// `pw-record ... -` (PipeWire 0.3) writes bare PCM in the format asked for, 16-bit
/// little-endian mono at 16 kHz: its first bytes are already samples. A recorder that writes a
/// WAV stream instead is accepted too: its header (RIFF, `fmt ` = 16-bit PCM mono 16 kHz, up to
/// the `data` chunk, whose declared size a stream leaves open) is checked and dropped. (Bare PCM
/// that starts with the bytes `RIFF` would be two samples of exactly 18,770 and 17,990.)
///
/// # Errors
/// What is wrong with a WAV stream's header; a stream that ends within its first 4 bytes.
pub async fn read_stream_start<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, String> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic)
        .await
        .map_err(|e| format!("the recorder's stream ended: {e}"))?;
    if &magic != b"RIFF" {
        return Ok(magic.to_vec());
    }
    let mut head = [0u8; 8];
    r.read_exact(&mut head)
        .await
        .map_err(|e| format!("the recorder's stream ended: {e}"))?;
    if &head[4..8] != b"WAVE" {
        return Err("the recorder wrote a RIFF stream that is not WAVE".into());
    }
    let mut fmt_ok = false;
    for _ in 0..16 {
        let mut ch = [0u8; 8];
        r.read_exact(&mut ch)
            .await
            .map_err(|e| format!("the recorder's stream ended: {e}"))?;
        let size = u32::from_le_bytes([ch[4], ch[5], ch[6], ch[7]]) as usize;
        if &ch[0..4] == b"data" {
            return if fmt_ok {
                Ok(Vec::new())
            } else {
                Err("the recorder's stream has no format chunk".into())
            };
        }
        if size > 4096 {
            return Err(format!(
                "the recorder's stream has a {size}-byte header chunk"
            ));
        }
        let mut body = vec![0u8; size + (size & 1)];
        r.read_exact(&mut body)
            .await
            .map_err(|e| format!("the recorder's stream ended: {e}"))?;
        if &ch[0..4] == b"fmt " && size >= 16 {
            let format = u16::from_le_bytes([body[0], body[1]]);
            let channels = u16::from_le_bytes([body[2], body[3]]);
            let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
            let bits = u16::from_le_bytes([body[14], body[15]]);
            if !(matches!(format, 1 | 0xFFFE) && channels == 1 && rate == 16_000 && bits == 16) {
                return Err(format!(
                    "the recorder delivers format {format}, {channels} channel(s), {rate} Hz, {bits} bit; expected 16-bit PCM mono at 16 kHz"
                ));
            }
            fmt_ok = true;
        }
    }
    Err("the recorder's stream has too many header chunks".into())
}

/// Transcribes each utterance and, from the microphone, sends it to the agent as the person's
/// words. A file's utterances are transcribed into the status only: a file is not the person.
/// Once `stop` is set nothing more is transcribed or sent.
async fn deliver(
    app: Arc<AppState>,
    mut rx: mpsc::Receiver<Utterance>,
    status: Arc<Mutex<ListenStatus>>,
    mut stop: watch::Receiver<bool>,
    from_file: bool,
) {
    loop {
        let u = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            u = rx.recv() => match u { Some(u) => u, None => return },
        };
        let mut heard = Heard {
            start_ms: u.start_ms,
            end_ms: u.end_ms,
            text: String::new(),
            delivered: false,
            reply: None,
            error: None,
        };
        tracing::info!(
            start_ms = u.start_ms,
            end_ms = u.end_ms,
            "utterance heard; transcribing"
        );
        // What the ledger row says went wrong, when that is not `heard.error` itself.
        let mut ledger_error: Option<String> = None;
        let t = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            t = app.transcribe_samples(u.samples, None, !from_file) => t,
        };
        match t {
            Err(e) => heard.error = Some(format!("transcription failed: {}", e.message())),
            Ok(t) if t.text.is_empty() => heard.error = Some("nothing intelligible".into()),
            Ok(t) if from_file => {
                heard.text = t.text;
                heard.error = Some(FROM_FILE.into());
            }
            Ok(t) => {
                heard.text = t.text;
                match &app.gateway {
                    None => heard.error = Some("no gateway is configured (services.osmoda.gateway.enable); the text was not sent".into()),
                    Some(g) => {
                        // A stop drops a turn in flight: its answer is no longer wanted.
                        let said = tokio::select! {
                            biased;
                            _ = stop.wait_for(|s| *s) => return,
                            r = g.say(&heard.text) => r,
                        };
                        match said {
                            Ok(reply) => {
                                heard.delivered = true;
                                heard.reply = Some(shorten(reply, MAX_REPLY_CHARS));
                            }
                            Err(e) => {
                                // The gateway's own words may echo what was said: the ledger
                                // gets only the daemon's reason, the status the whole of it.
                                ledger_error = Some(e.reason.clone());
                                heard.error = Some(e.to_string());
                            }
                        }
                    }
                }
            }
        }
        tracing::info!(
            start_ms = heard.start_ms,
            words = heard.text.split_whitespace().count(),
            delivered = heard.delivered,
            error = heard.error.as_deref().unwrap_or(""),
            "utterance done"
        );
        app.report(
            "voice.utterance",
            json!({
                "start_ms": heard.start_ms,
                "end_ms": heard.end_ms,
                "words": heard.text.split_whitespace().count(),
                "delivered": heard.delivered,
                "error": ledger_error.as_ref().or(heard.error.as_ref()),
            }),
        )
        .await;
        osmoda_daemon::metrics::global().voice(
            "utterance",
            if heard.delivered {
                "delivered"
            } else {
                "undelivered"
            },
        );
        let mut s = lock(&status);
        s.recent.push(heard);
        if s.recent.len() > 20 {
            s.recent.remove(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wav_head(format: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let mut h = b"RIFF\xff\xff\xff\xffWAVEfmt \x10\0\0\0".to_vec();
        h.extend(format.to_le_bytes());
        h.extend(channels.to_le_bytes());
        h.extend(rate.to_le_bytes());
        h.extend((rate * u32::from(channels) * u32::from(bits) / 8).to_le_bytes());
        h.extend((channels * bits / 8).to_le_bytes());
        h.extend(bits.to_le_bytes());
        h.extend(b"data\xff\xff\xff\xff");
        h
    }

    async fn start(stream: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
        let mut r = stream;
        let first = read_stream_start(&mut r).await?;
        Ok((first, r.to_vec()))
    }

    #[test]
    fn long_answers_are_cut_for_the_status() {
        assert_eq!(shorten("abc".into(), 3), "abc");
        assert_eq!(shorten("abcd".into(), 3), "abc…");
        assert_eq!(shorten("ééééé".into(), 2), "éé…");
        assert_eq!(shorten(String::new(), 0), "");
    }

    #[tokio::test]
    async fn bare_pcm_and_wav_streams_are_read_from_their_first_sample() {
        // Bare PCM (what PipeWire 0.3's pw-record writes to stdout): nothing is dropped.
        let pcm: Vec<u8> = (0..10u8).collect();
        let (first, rest) = start(&pcm).await.unwrap();
        assert_eq!([first, rest].concat(), pcm);
        // A WAV stream: the header is dropped, the samples follow.
        let wav = [wav_head(1, 1, 16_000, 16), pcm.clone()].concat();
        let (first, rest) = start(&wav).await.unwrap();
        assert_eq!([first, rest].concat(), pcm);
    }

    #[tokio::test]
    async fn wav_streams_in_another_format_or_cut_short_are_refused() {
        for (stream, want) in [
            (wav_head(1, 2, 16_000, 16), "2 channel(s)"),
            (wav_head(1, 1, 48_000, 16), "48000 Hz"),
            (wav_head(3, 1, 16_000, 32), "format 3"),
            (b"RIFF\0\0\0\0AVI ".to_vec(), "not WAVE"),
            (b"RIFF\0\0".to_vec(), "ended"),
            (b"RI".to_vec(), "ended"),
            (wav_head(1, 1, 16_000, 16)[..30].to_vec(), "ended"),
        ] {
            let e = start(&stream).await.unwrap_err();
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
