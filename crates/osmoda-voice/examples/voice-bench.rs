//! Voice benchmark (a separate command, never part of the test suite):
//!
//!   cargo run --release -p osmoda-voice --example voice-bench [-- ROUNDS]
//!
//! With the real models from `scripts/fetch-models`: piper speaks a set of sentences (speak
//! latency to first audio = until the WAV is complete: piper writes the file in one go, and
//! `pw-play` starts on the finished file), then whisper.cpp transcribes each (real-time factor
//! = audio seconds per CPU second of the process, and per wall second). Memory: the process's
//! resident set (VmRSS) before and after loading the whisper model, its peak (VmHWM) after the
//! transcriptions, and the peak of the piper processes (their `ru_maxrss`): osmoda-voice holds
//! the whisper model for its lifetime and starts piper per request. Prints one line per
//! measurement and a summary; figures go to docs/STATUS.md.

use std::path::PathBuf;
use std::time::Instant;

use osmoda_voice::audio::{self, Limits};
use osmoda_voice::stt::Transcriber;
use osmoda_voice::tts::Speaker;

const SENTENCES: &[&str] = &[
    "Turn on the lights in the kitchen.",
    "What will the weather be like tomorrow?",
    "Please restart the web server after the update and tell me when it is back.",
    "How much disk space is left on the root file system?",
    "Roll back the last configuration change if the health checks fail.",
];

fn cpu_secs() -> f64 {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
        .expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

/// A `/proc/self/status` field in MiB (`VmRSS`, `VmHWM`).
fn proc_mib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let rounds: usize = std::env::args().nth(1).map_or(Ok(1), |a| a.parse())?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scripts/fetch-models");
    let out = std::process::Command::new(&script).output()?;
    anyhow::ensure!(out.status.success(), "{} failed", script.display());
    let text = String::from_utf8(out.stdout)?;
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(PathBuf::from)
            .ok_or_else(|| anyhow::anyhow!("fetch-models printed no {k}"))
    };
    let speaker = Speaker::new(get("piper")?, get("piper_model")?)
        .map_err(|e| anyhow::anyhow!(e.message()))?;
    let model = get("whisper_model")?;
    let rss_before = proc_mib("VmRSS");
    let started = Instant::now();
    let stt = Transcriber::load(&model).map_err(|e| anyhow::anyhow!(e.message()))?;
    println!(
        "whisper model {} loaded in {} ms",
        model.display(),
        started.elapsed().as_millis()
    );
    println!(
        "RSS {rss_before:.1} MiB before the whisper model, {:.1} MiB with it loaded",
        proc_mib("VmRSS")
    );
    let dir = tempfile::tempdir()?;
    let (mut speak_ms, mut rtf_cpu, mut rtf_wall) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        for s in SENTENCES {
            let speech = speaker
                .speak(s, dir.path())
                .await
                .map_err(|e| anyhow::anyhow!(e.message()))?;
            speak_ms.push(speech.synth_ms as f64);
            let a = audio::read_wav(&speech.audio_path, Limits::default())
                .map_err(|e| anyhow::anyhow!(e.message()))?;
            let secs = a.samples.len() as f64 / f64::from(audio::SAMPLE_RATE);
            let (c0, w0) = (cpu_secs(), Instant::now());
            let t = stt
                .transcribe(a.samples, "en")
                .await
                .map_err(|e| anyhow::anyhow!(e.message()))?;
            let (cpu, wall) = (cpu_secs() - c0, w0.elapsed().as_secs_f64());
            rtf_cpu.push(secs / cpu);
            rtf_wall.push(secs / wall);
            println!(
                "round {round}: speak {} ms for {:.2} s of audio; transcribe {:.2} s CPU, {:.2} s wall = {:.2} audio s per CPU s, {:.2} per wall s: {:?}",
                speech.synth_ms, secs, cpu, wall, secs / cpu, secs / wall, t.text
            );
        }
    }
    println!(
        "median over {}: speak latency to first audio {:.0} ms; transcription {:.2} audio s per CPU s, {:.2} per wall s ({} threads)",
        speak_ms.len(),
        median(speak_ms),
        median(rtf_cpu),
        median(rtf_wall),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let piper_kib = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN)
        .map_or(0, |u| u.max_rss());
    println!(
        "memory: RSS {:.1} MiB now, peak {:.1} MiB (whisper model loaded, after transcribing); piper process peak {:.1} MiB",
        proc_mib("VmRSS"),
        proc_mib("VmHWM"),
        piper_kib as f64 / 1024.0
    );
    Ok(())
}
