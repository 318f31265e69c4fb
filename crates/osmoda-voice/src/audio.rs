//! Audio files in: which paths may be read, and any PCM/float WAV turned into the 16 kHz mono
//! `f32` samples whisper.cpp and the voice-activity detector work on.
//!
//! Every check happens before a sample is decoded, and reading never writes anything: a path
//! outside the allowed directories (also through a symlink or `..`), a missing file, a FIFO or
//! device, a file that is not WAV, an encoding we do not read, or a header that declares more
//! audio than [`Limits::max_secs`] is refused with its own error.

use std::fs::File;
use std::io::{BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use rubato::{FftFixedIn, Resampler};

use crate::error::{Result, VoiceError};

/// whisper.cpp's and the detector's sample rate (Hz).
pub const SAMPLE_RATE: u32 = 16_000;

/// The most frames (samples per channel) one file may bring, judged from its header: 10 minutes
/// at 48 kHz. The decoder holds only the mono signal, so one request holds at most ~115 MB of
/// samples at the file's rate plus ~38 MB at 16 kHz.
pub const MAX_FRAMES: u64 = 600 * 48_000;

/// How much audio one request may bring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest audio accepted, in seconds (judged from the header, before decoding).
    pub max_secs: u64,
    /// Largest file accepted, in bytes.
    pub max_bytes: u64,
}

impl Default for Limits {
    /// 10 minutes and 256 MiB (10 minutes of 48 kHz stereo 32-bit float is 220 MiB).
    fn default() -> Self {
        Limits {
            max_secs: 600,
            max_bytes: 256 << 20,
        }
    }
}

/// The directories audio may be read from (canonical paths).
#[derive(Debug, Clone, Default)]
pub struct AllowedDirs(Vec<PathBuf>);

impl AllowedDirs {
    /// Canonicalises `dirs`; a directory that does not exist (yet) is kept as written, so it
    /// is allowed once it appears but nothing can reach it through a symlink meanwhile.
    pub fn new(dirs: impl IntoIterator<Item = PathBuf>) -> AllowedDirs {
        AllowedDirs(
            dirs.into_iter()
                .map(|d| d.canonicalize().unwrap_or(d))
                .collect(),
        )
    }

    /// The directories, canonical.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.0
    }

    /// The canonical path of `path` when it is an existing file inside one of the directories.
    ///
    /// Symlinks are followed one at a time, and only from inside the directories: a link whose
    /// target leads out is refused as outside without looking at the target, so a missing, an
    /// unreadable and an existing file elsewhere get the same answer (no existence oracle for
    /// whoever may create links in an audio dir). Only paths inside the directories are ever
    /// looked up, so 404 and "cannot be read" speak of those alone.
    ///
    /// # Errors
    /// `BadRequest` for a relative path or one with `..`; `Forbidden` for a path outside the
    /// directories (also when a symlink leads out) or through a symlink whose target has `..`
    /// after a name; `NotFound` when it does not exist.
    pub fn resolve(&self, path: &Path) -> Result<PathBuf> {
        if !path.is_absolute() {
            return Err(VoiceError::BadRequest(format!(
                "audio_path {} must be an absolute path",
                path.display()
            )));
        }
        if path.components().any(|c| matches!(c, Component::ParentDir)) {
            return Err(VoiceError::BadRequest(format!(
                "audio_path {} must not contain `..`",
                path.display()
            )));
        }
        let outside = || {
            VoiceError::Forbidden(format!(
                "{} is outside the directories osmoda-voice may read ({}); put the file there or add its directory to services.osmoda.voice.audioDirs",
                path.display(),
                self.list()
            ))
        };
        // The path as it would be walked: where it is now, and what is left.
        let mut pending = normalize(path);
        let mut links = 0;
        'restart: loop {
            let Some(dir) = self.0.iter().find(|d| pending.starts_with(d)) else {
                return Err(outside());
            };
            let mut cur = dir.clone();
            let rest: Vec<_> = pending
                .strip_prefix(dir)
                .map(|r| r.components().map(|c| c.as_os_str().to_owned()).collect())
                .unwrap_or_default();
            for (i, name) in rest.iter().enumerate() {
                let next = cur.join(name);
                let meta =
                    std::fs::symlink_metadata(&next).map_err(|e| path_error("resolve", path, e))?;
                if meta.file_type().is_symlink() {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(path_error(
                            "resolve",
                            path,
                            std::io::Error::from_raw_os_error(libc::ELOOP),
                        ));
                    }
                    let target =
                        std::fs::read_link(&next).map_err(|e| path_error("resolve", path, e))?;
                    if dotdot_after_a_name(&target) {
                        return Err(VoiceError::Forbidden(format!(
                            "{} leads through a symlink whose target has `..` after a name; osmoda-voice does not follow it (where `..` lands depends on whether that name is itself a link): point the link straight at the file",
                            path.display()
                        )));
                    }
                    let mut joined = cur.join(target);
                    for r in &rest[i + 1..] {
                        joined.push(r);
                    }
                    pending = normalize(&joined);
                    continue 'restart;
                }
                cur = next;
            }
            // `x.wav/` names a directory (components() drops the slash): as open(2) says.
            if path.as_os_str().as_encoded_bytes().ends_with(b"/") && !cur.is_dir() {
                return Err(path_error(
                    "resolve",
                    path,
                    std::io::Error::from_raw_os_error(libc::ENOTDIR),
                ));
            }
            return Ok(cur);
        }
    }

    fn list(&self) -> String {
        self.0
            .iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Symlinks followed while resolving one path before it counts as a loop (as Linux's 40).
const MAX_LINKS: usize = 40;

/// Whether a link's target has a `..` after a name (`s/../f.wav`, `/a/../b`): the kernel takes
/// that `..` from wherever the name leads when it is itself a link, which [`normalize`] cannot
/// know, so [`AllowedDirs::resolve`] refuses such links. A leading `..` (`../f.wav`) is taken
/// from the link's own directory, a real one already walked.
fn dotdot_after_a_name(target: &Path) -> bool {
    let mut named = false;
    target.components().any(|c| match c {
        Component::Normal(_) => {
            named = true;
            false
        }
        Component::ParentDir => named,
        _ => false,
    })
}

/// `p` with `.` dropped and each `..` taken back a component, without looking at the disk. The
/// components before a `..` here are always real directories already walked: a request path has
/// no `..`, and a link target's `..` may only lead it ([`dotdot_after_a_name`]). So this is the
/// path the kernel would walk, and what is opened is exactly that path, checked again.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Decoded audio: 16 kHz mono samples in `-1.0..=1.0`, and what the file was.
#[derive(Debug, Clone)]
pub struct Audio {
    /// The samples at [`SAMPLE_RATE`].
    pub samples: Vec<f32>,
    /// The file's own sample rate (Hz).
    pub source_rate: u32,
    /// The file's channel count.
    pub source_channels: u16,
}

impl Audio {
    /// Length in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        self.samples.len() as u64 * 1000 / u64::from(SAMPLE_RATE)
    }
}

/// What a failure to resolve or open the caller's `path` is: the caller's mistake (404 for a
/// missing file, 400 for a path that cannot name one: a file used as a directory, a symlink
/// loop, a name too long, a NUL byte; 403 when it may not be read), or the daemon's own (500).
fn path_error(op: &'static str, path: &Path, e: std::io::Error) -> VoiceError {
    use std::io::ErrorKind;
    let bad = |why: &str| {
        VoiceError::BadRequest(format!(
            "audio_path {} does not name a file ({why}: {e})",
            path.display()
        ))
    };
    match e.kind() {
        ErrorKind::NotFound => VoiceError::NotFound(format!("{} does not exist", path.display())),
        ErrorKind::PermissionDenied => VoiceError::Forbidden(format!(
            "{} cannot be read by osmoda-voice ({e}); make it readable by the voice user",
            path.display()
        )),
        ErrorKind::InvalidInput => bad("invalid name"),
        _ => match e.raw_os_error() {
            Some(libc::ENOTDIR) => bad("a part of it is not a directory"),
            Some(libc::ELOOP) => bad("too many symbolic links"),
            Some(libc::ENAMETOOLONG) => bad("name too long"),
            _ => VoiceError::io(op, path)(e),
        },
    }
}

/// Opens the regular file at the canonical `path` without following any symlink on the way and
/// without blocking on a FIFO.
///
/// `path` was checked by [`AllowedDirs::resolve`] as it was then; a directory on it may have been
/// swapped for a symlink since. `openat2(RESOLVE_NO_SYMLINKS)` opens exactly the checked path or
/// nothing: a symlink appearing anywhere on it is refused (403), so no file outside the allowed
/// directories is ever opened, FIFOs and devices included.
fn open_regular(path: &Path, limits: Limits) -> Result<File> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag, AT_FDCWD};
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
    let file = match openat2(AT_FDCWD, path, how) {
        Ok(fd) => File::from(fd),
        Err(nix::errno::Errno::ELOOP) => {
            return Err(VoiceError::Forbidden(format!(
                "{} changed while it was opened (a symbolic link on the way); nothing outside the allowed directories is read",
                path.display()
            )))
        }
        Err(e) => return Err(path_error("open", path, std::io::Error::from(e))),
    };
    let meta = file.metadata().map_err(VoiceError::io("stat", path))?;
    if !meta.is_file() {
        return Err(VoiceError::Unsupported(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    if meta.len() > limits.max_bytes {
        return Err(VoiceError::TooLarge(format!(
            "{} is {} bytes, the limit is {} bytes",
            path.display(),
            meta.len(),
            limits.max_bytes
        )));
    }
    Ok(file)
}

/// Reads the WAV file at `path` (already resolved) as 16 kHz mono.
///
/// Accepts PCM 8/16/24/32-bit and 32-bit float, 1-8 channels, 8-192 kHz; channels are averaged.
///
/// # Errors
/// `NotFound`, `Unsupported` (not WAV, another encoding, truncated data), `TooLarge` (the header
/// declares more than `limits.max_secs`, or the file is over `limits.max_bytes`).
pub fn read_wav(path: &Path, limits: Limits) -> Result<Audio> {
    let file = open_regular(path, limits)?;
    decode_wav(BufReader::new(file), &path.display().to_string(), limits)
}

/// Checks the file at `path` as [`read_wav`] does, without decoding the samples.
///
/// # Errors
/// As [`read_wav`], except for truncated sample data.
pub fn probe_wav(path: &Path, limits: Limits) -> Result<()> {
    let file = open_regular(path, limits)?;
    let name = path.display().to_string();
    let wav = hound::WavReader::new(BufReader::new(file)).map_err(|e| {
        VoiceError::Unsupported(format!("{name} is not a WAV file we can read: {e}"))
    })?;
    check_header(&wav, &name, limits)
}

fn check_header<R: Read>(wav: &hound::WavReader<R>, name: &str, limits: Limits) -> Result<()> {
    let spec = wav.spec();
    if !(1..=8).contains(&spec.channels) || !(8_000..=192_000).contains(&spec.sample_rate) {
        return Err(VoiceError::Unsupported(format!(
            "{name}: {} channels at {} Hz; 1-8 channels at 8-192 kHz are supported",
            spec.channels, spec.sample_rate
        )));
    }
    let secs = u64::from(wav.duration()) / u64::from(spec.sample_rate);
    if secs > limits.max_secs {
        return Err(VoiceError::TooLarge(format!(
            "{name} declares {secs} s of audio, the limit is {} s",
            limits.max_secs
        )));
    }
    if u64::from(wav.duration()) > MAX_FRAMES {
        return Err(VoiceError::TooLarge(format!(
            "{name} declares {} frames ({} Hz); one request may bring at most {MAX_FRAMES} (10 minutes at 48 kHz); split it or lower its rate",
            wav.duration(),
            spec.sample_rate
        )));
    }
    Ok(())
}

/// Decodes a WAV stream (see [`read_wav`]); `name` names it in errors.
///
/// # Errors
/// As [`read_wav`].
pub fn decode_wav<R: Read>(reader: R, name: &str, limits: Limits) -> Result<Audio> {
    let wav = hound::WavReader::new(reader).map_err(|e| {
        VoiceError::Unsupported(format!("{name} is not a WAV file we can read: {e}"))
    })?;
    check_header(&wav, name, limits)?;
    let spec = wav.spec();
    let truncated =
        |e: hound::Error| VoiceError::Unsupported(format!("{name}: cannot read the samples: {e}"));
    let channels = usize::from(spec.channels);
    // Channels are averaged as the samples are read: only the mono signal is held.
    let mut mono = Vec::with_capacity(wav.duration() as usize);
    let mut frame = (0.0f32, 0usize);
    let mut push = |x: f32| {
        frame.0 += x;
        frame.1 += 1;
        if frame.1 == channels {
            mono.push(frame.0 / channels as f32);
            frame = (0.0, 0);
        }
    };
    match (spec.sample_format, spec.bits_per_sample) {
        (hound::SampleFormat::Float, 32) => {
            // NaN or infinity would poison the resampler's FFT (a panic in rubato) and hold the
            // engine for minutes: refused. Finite samples beyond full scale are clipped, as a
            // player would, so averaging channels cannot overflow.
            for x in wav.into_samples::<f32>() {
                let x = x.map_err(truncated)?;
                if !x.is_finite() {
                    return Err(VoiceError::Unsupported(format!(
                        "{name} holds NaN or infinite samples; float WAV samples must be finite (-1.0 to 1.0)"
                    )));
                }
                push(x.clamp(-1.0, 1.0));
            }
        }
        (hound::SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / (1u64 << (bits - 1)) as f32;
            for x in wav.into_samples::<i32>() {
                push(x.map_err(truncated)? as f32 * scale);
            }
        }
        (format, bits) => {
            return Err(VoiceError::Unsupported(format!(
                "{name}: {bits}-bit {format:?} samples; PCM 8/16/24/32-bit or 32-bit float are supported"
            )))
        }
    }
    Ok(Audio {
        samples: resample(&mono, spec.sample_rate, SAMPLE_RATE)?,
        source_rate: spec.sample_rate,
        source_channels: spec.channels,
    })
}

/// Resamples mono `input` from `from` Hz to `to` Hz (rubato's FFT resampler), keeping length
/// and timing: the resampler's delay is trimmed off.
///
/// # Errors
/// `Engine` if the resampler refuses the rates.
pub fn resample(input: &[f32], from: u32, to: u32) -> Result<Vec<f32>> {
    if from == to || input.is_empty() {
        return Ok(input.to_vec());
    }
    const CHUNK: usize = 1024;
    let err = |e: &dyn std::fmt::Display| {
        VoiceError::Engine(format!("resampling {from} Hz to {to} Hz: {e}"))
    };
    let mut r =
        FftFixedIn::<f32>::new(from as usize, to as usize, CHUNK, 2, 1).map_err(|e| err(&e))?;
    let want = (input.len() as u64 * u64::from(to) / u64::from(from)) as usize;
    let delay = r.output_delay();
    let mut out = Vec::with_capacity(want + delay + CHUNK);
    let mut pos = 0;
    while pos + CHUNK <= input.len() {
        let o = r
            .process(&[&input[pos..pos + CHUNK]], None)
            .map_err(|e| err(&e))?;
        out.extend_from_slice(&o[0]);
        pos += CHUNK;
    }
    // The tail, then silence until the delayed samples have come out.
    // (rubato refuses an empty slice: a whole number of chunks has no tail.)
    if pos < input.len() {
        let o = r
            .process_partial(Some(&[&input[pos..]]), None)
            .map_err(|e| err(&e))?;
        out.extend_from_slice(&o[0]);
    }
    // A flush can return nothing while the resampler fills one FFT block: with rates that share
    // few factors (8,001 or 44,101 Hz) a block spans several chunks. Keep flushing (silence)
    // until the whole signal is out, bounded by the chunks that much output needs plus one block.
    let (a, b) = (u64::from(from), u64::from(to));
    let gcd = {
        let (mut x, mut y) = (a, b);
        while y != 0 {
            (x, y) = (y, x % y);
        }
        x
    };
    let needed = (want + delay).saturating_sub(out.len()) as u64;
    let mut calls = needed * a / (b * CHUNK as u64) + (a / gcd) / CHUNK as u64 + 4;
    while out.len() < want + delay && calls > 0 {
        let o = r
            .process_partial::<&[f32]>(None, None)
            .map_err(|e| err(&e))?;
        out.extend_from_slice(&o[0]);
        calls -= 1;
    }
    let end = (delay + want).min(out.len());
    Ok(out[delay.min(end)..end].to_vec())
}

/// Writes 16 kHz mono samples as a 16-bit PCM WAV file at `path` (created new, never
/// overwriting).
///
/// # Errors
/// `Io` when the file cannot be created or written.
pub fn write_wav(path: &Path, samples: &[f32]) -> Result<()> {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o640)
        .open(path)
        .map_err(VoiceError::io("create", path))?;
    let io = |e: hound::Error| VoiceError::Io {
        op: "write",
        path: path.to_owned(),
        source: std::io::Error::other(e.to_string()),
    };
    let mut w = hound::WavWriter::new(std::io::BufWriter::new(file), spec).map_err(io)?;
    for s in samples {
        w.write_sample((s.clamp(-1.0, 1.0) * 32767.0) as i16)
            .map_err(io)?;
    }
    w.finalize().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(rate: u32, secs: f32, hz: f32) -> Vec<f32> {
        (0..(rate as f32 * secs) as usize)
            .map(|i| (i as f32 * hz * std::f32::consts::TAU / rate as f32).sin() * 0.5)
            .collect()
    }

    #[test]
    fn resampling_keeps_length_and_pitch() {
        // Lengths with and without a partial last chunk (1024 frames each).
        for (from, secs) in [
            (8_000, 1.0),
            (22_050, 1.0),
            (44_100, 1.0),
            (48_000, 1.0),
            (10_240, 1.0),
            // Rates that share few factors with 16 kHz: one FFT block spans several chunks.
            (8_001, 2.0),
            (44_101, 2.0),
            (96_001, 2.0),
        ] {
            let input = tone(from, secs, 440.0);
            let out = resample(&input, from, SAMPLE_RATE).unwrap();
            let want = (input.len() as u64 * 16_000 / u64::from(from)) as usize;
            assert_eq!(out.len(), want, "from {from}");
            // Zero crossings of a 440 Hz tone: 880 a second, give or take the edges.
            let crossings = out
                .windows(2)
                .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
                .count();
            let expect = (880.0 * secs) as usize;
            assert!(crossings.abs_diff(expect) <= 10, "from {from}: {crossings}");
            // The signal reaches the end: the last 100 ms is the tone, not the flush's silence.
            let tail = &out[want - 1_600..];
            assert!(
                tail.iter().any(|x| x.abs() > 0.3),
                "from {from}: the end is silent"
            );
        }
    }

    fn float_wav(rate: u32, channels: u16, samples: &[f32]) -> Vec<u8> {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 32,
            sample_format: hound::SampleFormat::Float,
        };
        let mut buf = std::io::Cursor::new(Vec::new());
        let mut w = hound::WavWriter::new(&mut buf, spec).unwrap();
        for x in samples {
            w.write_sample(*x).unwrap();
        }
        w.finalize().unwrap();
        buf.into_inner()
    }

    #[test]
    fn non_finite_float_samples_are_refused_and_loud_ones_clipped() {
        // 1 s of 44.1 kHz stereo: resampled, where NaN once panicked inside rubato.
        for (rate, bad) in [
            (44_100, f32::NAN),
            (44_100, f32::INFINITY),
            (16_000, f32::NEG_INFINITY),
        ] {
            let mut samples = tone(rate, 1.0, 440.0).repeat(2);
            samples[1001] = bad;
            let wav = float_wav(rate, 2, &samples);
            let e = decode_wav(&wav[..], "x.wav", Limits::default()).unwrap_err();
            assert!(
                matches!(&e, VoiceError::Unsupported(m) if m.contains("NaN or infinite")),
                "{rate} {bad}: {e:?}"
            );
        }
        // Finite but far beyond full scale (8 channels summed would overflow f32): clipped.
        let wav = float_wav(44_100, 8, &vec![3.0e38; 44_100 * 8]);
        let a = decode_wav(&wav[..], "x.wav", Limits::default()).unwrap();
        assert_eq!(a.samples.len(), 16_000);
        assert!(
            a.samples.iter().all(|x| x.is_finite()),
            "not finite after clipping"
        );
    }

    #[test]
    fn a_directory_swapped_after_the_check_is_never_read() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("in");
        let real = dir.path().join("in/real");
        let outside = dir.path().join("out");
        std::fs::create_dir_all(&real).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // 100 ms inside, 200 ms outside: the duration says which file was read.
        write_wav(&real.join("x.wav"), &vec![0.1; 1_600]).unwrap();
        write_wav(&outside.join("x.wav"), &vec![0.1; 3_200]).unwrap();
        let allowed = AllowedDirs::new([inside.clone()]);
        let sub = inside.join("sub");
        let link = inside.join("link");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        let swap = |to_outside: bool| {
            // rename(2) over `sub`: the real directory or the symlink to the outside one.
            if to_outside {
                std::fs::rename(&sub, &real).unwrap();
                std::fs::rename(&link, &sub).unwrap();
            } else {
                std::fs::rename(&sub, &link).unwrap();
                std::fs::rename(&real, &sub).unwrap();
            }
        };
        std::fs::rename(&real, &sub).unwrap();
        let path = sub.join("x.wav");

        // Checked while `sub` is the real directory, swapped before the open.
        let checked = allowed.resolve(&path).unwrap();
        assert_eq!(
            read_wav(&checked, Limits::default()).unwrap().duration_ms(),
            100
        );
        swap(true);
        let e = read_wav(&checked, Limits::default()).unwrap_err();
        assert!(matches!(e, VoiceError::Forbidden(_)), "{e:?}");
        swap(false);

        // The same as a race, bounded: a thread swaps while the file is checked and read.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let swapper = {
            let stop = std::sync::Arc::clone(&stop);
            let (sub, real, link) = (sub.clone(), real.clone(), link.clone());
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    if n % 2 == 0 {
                        std::fs::rename(&sub, &real).unwrap();
                        std::fs::rename(&link, &sub).unwrap();
                    } else {
                        std::fs::rename(&sub, &link).unwrap();
                        std::fs::rename(&real, &sub).unwrap();
                    }
                    n += 1;
                }
                n
            })
        };
        let mut read = 0;
        for _ in 0..3_000 {
            if let Ok(p) = allowed.resolve(&path) {
                if let Ok(a) = read_wav(&p, Limits::default()) {
                    assert_eq!(a.duration_ms(), 100, "the file outside was read");
                    read += 1;
                }
            }
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let swaps = swapper.join().unwrap();
        assert!(
            read > 0 && swaps > 100,
            "no race happened: {read} read, {swaps} swaps"
        );
    }

    #[test]
    fn a_dotdot_after_a_name_in_a_link_is_refused_not_read_as_text() {
        // a/l.wav -> s/../f.wav with a/s -> a/sub/deep: the kernel opens a/sub/f.wav, a textual
        // reading a/f.wav. Neither is guessed: the link is refused.
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::create_dir_all(a.join("sub/deep")).unwrap();
        std::fs::write(a.join("f.wav"), b"top").unwrap();
        std::fs::write(a.join("sub/f.wav"), b"sub").unwrap();
        let link = |name: &str, to: &str| std::os::unix::fs::symlink(to, a.join(name)).unwrap();
        link("s", "sub/deep");
        link("l.wav", "s/../f.wav");
        link("abs.wav", &format!("{}/s/../f.wav", a.display()));
        link("sub/up.wav", "../f.wav");
        link("sub/twice.wav", "../sub/../f.wav");
        assert_eq!(std::fs::read(a.join("l.wav")).unwrap(), b"sub");
        let allowed = AllowedDirs::new([a.clone()]);
        for name in ["l.wav", "abs.wav", "sub/twice.wav"] {
            match allowed.resolve(&a.join(name)) {
                Err(VoiceError::Forbidden(m)) => assert!(m.contains("`..` after a name"), "{m}"),
                other => panic!("{name}: {other:?}"),
            }
        }
        // A leading `..` is taken from the link's own (real) directory, as the kernel does.
        let up = allowed.resolve(&a.join("sub/up.wav")).unwrap();
        assert_eq!(up, std::fs::canonicalize(a.join("sub/up.wav")).unwrap());
        for (t, want) in [
            ("s/../f.wav", true),
            ("/a/../b", true),
            ("x/./../y", true),
            ("../f.wav", false),
            ("../../a/f.wav", false),
            ("./../f.wav", false),
            ("/a/b/f.wav", false),
        ] {
            assert_eq!(dotdot_after_a_name(Path::new(t)), want, "{t}");
        }
    }

    /// Links in an audio dir that lead out get one answer whatever is (or is not) at their
    /// target: nothing is looked up outside. Links between allowed places still work.
    #[test]
    fn a_link_out_says_nothing_about_its_target() {
        let dir = tempfile::tempdir().unwrap();
        let (inside, second, outside) = (
            dir.path().join("in"),
            dir.path().join("in2"),
            dir.path().join("out"),
        );
        for d in [&inside, &second, &outside, &outside.join("sub")] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::write(outside.join("secret.wav"), b"x").unwrap();
        std::fs::write(second.join("b.wav"), b"x").unwrap();
        let link =
            |name: &str, to: &Path| std::os::unix::fs::symlink(to, inside.join(name)).unwrap();
        link("existing.wav", &outside.join("secret.wav"));
        link("missing.wav", &outside.join("missing.wav"));
        link("missing-dir", &outside.join("nowhere"));
        link("file-as-dir", &outside.join("secret.wav"));
        link("outdir", &outside);
        link("loop.wav", &inside.join("loop.wav"));
        link("rel-out.wav", Path::new("../out/secret.wav"));
        link("rel-missing.wav", Path::new("../out/gone.wav"));
        link("to-second.wav", Path::new("../in2/b.wav"));
        link("to-second-missing.wav", &second.join("gone.wav"));
        link("hop", &inside.join("outdir"));
        let allowed = AllowedDirs::new([inside.clone(), second.clone()]);
        let refusal = |name: &str| {
            let p = inside.join(name);
            match allowed.resolve(&p) {
                Err(VoiceError::Forbidden(m)) => m.replace(&p.display().to_string(), "P"),
                other => panic!("{name}: {other:?}"),
            }
        };
        let one = refusal("existing.wav");
        for name in [
            "missing.wav",
            "missing-dir/x.wav",
            "file-as-dir/x.wav",
            "outdir/secret.wav",
            "outdir/missing.wav",
            "outdir/sub/x.wav",
            "rel-out.wav",
            "rel-missing.wav",
            "hop/secret.wav",
            "hop/missing.wav",
        ] {
            assert_eq!(refusal(name), one, "{name}");
        }
        assert_eq!(
            allowed.resolve(&inside.join("to-second.wav")).unwrap(),
            second.canonicalize().unwrap().join("b.wav")
        );
        // Inside the directories, what is missing is said.
        assert!(matches!(
            allowed.resolve(&inside.join("to-second-missing.wav")),
            Err(VoiceError::NotFound(_))
        ));
        assert!(matches!(
            allowed.resolve(&inside.join("loop.wav")),
            Err(VoiceError::BadRequest(_))
        ));
        std::fs::write(inside.join("a.wav"), b"x").unwrap();
        assert!(matches!(
            allowed.resolve(&inside.join("a.wav/")),
            Err(VoiceError::BadRequest(_))
        ));
    }

    #[test]
    fn allowed_dirs_judge_the_written_and_the_real_path() {
        let dir = tempfile::tempdir().unwrap();
        let inside = dir.path().join("in");
        let outside = dir.path().join("out");
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.wav"), b"x").unwrap();
        std::fs::write(inside.join("a.wav"), b"x").unwrap();
        std::os::unix::fs::symlink(outside.join("secret.wav"), inside.join("link.wav")).unwrap();
        let allowed = AllowedDirs::new([inside.clone()]);
        assert!(allowed.resolve(&inside.join("a.wav")).is_ok());
        for (p, kind) in [
            (inside.join("link.wav"), "forbidden"),
            (outside.join("secret.wav"), "forbidden"),
            (outside.join("missing.wav"), "forbidden"),
            (inside.join("../out/secret.wav"), "bad"),
            (PathBuf::from("in/a.wav"), "bad"),
            (inside.join("missing.wav"), "missing"),
        ] {
            let e = allowed.resolve(&p).unwrap_err();
            let ok = match kind {
                "forbidden" => matches!(e, VoiceError::Forbidden(_)),
                "bad" => matches!(e, VoiceError::BadRequest(_)),
                _ => matches!(e, VoiceError::NotFound(_)),
            };
            assert!(ok, "{}: {e}", p.display());
        }
    }
}
