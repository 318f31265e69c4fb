//! Voice-activity detection: cuts a 16 kHz mono stream into utterances at silences.
//!
//! Energy-based with hangover. Each 30 ms frame's RMS level (dBFS) is compared with a threshold
//! that follows the background: `max(floor + margin_db, min_speech_db)`, where `floor` starts at
//! the first frame's level and tracks the quiet frames (it falls at once and rises slowly, and
//! speech does not lift it).
//! An utterance starts after `start_ms` of consecutive speech frames (a click does not start
//! one), begins `preroll_ms` before that so the first syllable is kept, and ends once
//! `hangover_ms` of silence has followed the last speech frame (pauses between words are shorter
//! than that). Utterances shorter than `min_utterance_ms` are dropped; one that reaches
//! `max_utterance_ms` is cut there. Memory is bounded by `max_utterance_ms`.

use std::collections::VecDeque;

use crate::audio::SAMPLE_RATE;

/// Samples per frame (30 ms at 16 kHz).
pub const FRAME: usize = 480;
const FRAME_MS: u64 = 30;

/// The detector's settings (milliseconds and dB).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VadConfig {
    /// Speech must be this much louder than the background floor.
    pub margin_db: f32,
    /// ... and at least this loud (dBFS), so that near-digital silence never counts as speech.
    pub min_speech_db: f32,
    /// Consecutive speech needed to start an utterance.
    pub start_ms: u64,
    /// Silence after the last speech frame that ends an utterance.
    pub hangover_ms: u64,
    /// Audio kept before the start.
    pub preroll_ms: u64,
    /// Shorter utterances are dropped.
    pub min_utterance_ms: u64,
    /// Longer utterances are cut here.
    pub max_utterance_ms: u64,
}

impl Default for VadConfig {
    fn default() -> Self {
        VadConfig {
            margin_db: 12.0,
            min_speech_db: -45.0,
            start_ms: 90,
            hangover_ms: 800,
            preroll_ms: 240,
            min_utterance_ms: 250,
            max_utterance_ms: 30_000,
        }
    }
}

/// One utterance: where it lies in the stream and its samples (16 kHz mono).
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    /// Start, in ms from the beginning of the stream.
    pub start_ms: u64,
    /// End, in ms from the beginning of the stream.
    pub end_ms: u64,
    /// The samples from `start_ms` to `end_ms`.
    pub samples: Vec<f32>,
}

/// Streaming segmenter: feed it samples with [`Segmenter::push`], collect utterances.
#[derive(Debug)]
pub struct Segmenter {
    cfg: VadConfig,
    /// Samples not yet forming a whole frame.
    pending: Vec<f32>,
    /// Frames seen so far.
    frame_no: u64,
    floor_db: f32,
    /// Recent frames kept for the preroll while idle.
    preroll: VecDeque<Vec<f32>>,
    /// Consecutive speech frames while idle (they are in `preroll` too).
    run: u64,
    /// The utterance being collected.
    current: Option<Current>,
}

#[derive(Debug)]
struct Current {
    start_frame: u64,
    frames: Vec<Vec<f32>>,
    /// Frames since the last speech frame.
    silence: u64,
}

fn level_db(frame: &[f32]) -> f32 {
    let energy = frame.iter().map(|s| s * s).sum::<f32>() / frame.len() as f32;
    (10.0 * energy.max(1e-12).log10()).max(-120.0)
}

impl Segmenter {
    /// A segmenter with `cfg`.
    pub fn new(cfg: VadConfig) -> Segmenter {
        Segmenter {
            cfg,
            pending: Vec::with_capacity(FRAME),
            frame_no: 0,
            floor_db: -90.0,
            preroll: VecDeque::new(),
            run: 0,
            current: None,
        }
    }

    fn frames(ms: u64) -> u64 {
        ms.div_ceil(FRAME_MS)
    }

    /// Feeds samples; returns the utterances that ended within them.
    pub fn push(&mut self, samples: &[f32]) -> Vec<Utterance> {
        let mut out = Vec::new();
        let mut rest = samples;
        while !rest.is_empty() {
            let take = (FRAME - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == FRAME {
                let frame = std::mem::replace(&mut self.pending, Vec::with_capacity(FRAME));
                if let Some(u) = self.frame(frame) {
                    out.push(u);
                }
            }
        }
        out
    }

    /// Ends the stream: the utterance in progress, if long enough.
    pub fn finish(&mut self) -> Option<Utterance> {
        let cur = self.current.take()?;
        self.emit(cur)
    }

    /// Whether an utterance is in progress.
    pub fn in_speech(&self) -> bool {
        self.current.is_some()
    }

    fn frame(&mut self, frame: Vec<f32>) -> Option<Utterance> {
        let n = self.frame_no;
        self.frame_no += 1;
        let db = level_db(&frame);
        if n == 0 {
            self.floor_db = db;
        }
        let threshold = (self.floor_db + self.cfg.margin_db).max(self.cfg.min_speech_db);
        let speech = db > threshold;
        // The floor starts at the first frame, falls at once to a quieter frame and rises
        // slowly (at most 3 dB per second) with the background, never with speech.
        if db < self.floor_db {
            self.floor_db = db;
        } else if !speech {
            self.floor_db += ((db - self.floor_db) * 0.05).min(0.1);
        }

        if let Some(cur) = &mut self.current {
            cur.frames.push(frame);
            cur.silence = if speech { 0 } else { cur.silence + 1 };
            let len = cur.frames.len() as u64;
            if cur.silence >= Self::frames(self.cfg.hangover_ms)
                || len >= Self::frames(self.cfg.max_utterance_ms)
            {
                let mut cur = self.current.take()?;
                // Keep a short tail of the silence, drop the rest of the hangover.
                let keep =
                    cur.frames.len() - (cur.silence.saturating_sub(Self::frames(200)) as usize);
                cur.frames.truncate(keep);
                return self.emit(cur);
            }
            return None;
        }

        self.preroll.push_back(frame);
        let keep = (Self::frames(self.cfg.preroll_ms) + Self::frames(self.cfg.start_ms)) as usize;
        while self.preroll.len() > keep {
            self.preroll.pop_front();
        }
        self.run = if speech { self.run + 1 } else { 0 };
        if self.run >= Self::frames(self.cfg.start_ms) {
            self.run = 0;
            let frames: Vec<Vec<f32>> = self.preroll.drain(..).collect();
            self.current = Some(Current {
                start_frame: n + 1 - frames.len() as u64,
                frames,
                silence: 0,
            });
        }
        None
    }

    fn emit(&self, cur: Current) -> Option<Utterance> {
        let samples: Vec<f32> = cur.frames.concat();
        let ms = samples.len() as u64 * 1000 / u64::from(SAMPLE_RATE);
        if ms < self.cfg.min_utterance_ms {
            return None;
        }
        let start_ms = cur.start_frame * FRAME_MS;
        Some(Utterance {
            start_ms,
            end_ms: start_ms + ms,
            samples,
        })
    }
}

/// Cuts a whole recording into utterances.
pub fn segment(samples: &[f32], cfg: VadConfig) -> Vec<Utterance> {
    let mut s = Segmenter::new(cfg);
    let mut out = s.push(samples);
    out.extend(s.finish());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A "syllable" train: 200 ms bursts of a 300 Hz tone with `gap_ms` pauses, `n` times.
    fn speechlike(n: usize, gap_ms: usize, amp: f32) -> Vec<f32> {
        let mut v = Vec::new();
        for _ in 0..n {
            v.extend(
                (0..3200).map(|i| (i as f32 * 300.0 * std::f32::consts::TAU / 16000.0).sin() * amp),
            );
            v.extend(std::iter::repeat_n(0.0, gap_ms * 16));
        }
        v
    }

    fn silence(ms: usize) -> Vec<f32> {
        vec![0.0; ms * 16]
    }

    /// `parts` one after another, with background noise of amplitude `noise` over all of it
    /// (a deterministic LCG, so runs are repeatable).
    fn mix(parts: &[Vec<f32>], noise: f32) -> Vec<f32> {
        let mut x: u32 = 12345;
        parts
            .concat()
            .into_iter()
            .map(|s| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                s + ((x >> 16) as f32 / 32768.0 - 1.0) * noise
            })
            .collect()
    }

    fn check(signal: &[f32], expected: usize) -> Vec<Utterance> {
        let u = segment(signal, VadConfig::default());
        assert_eq!(
            u.len(),
            expected,
            "{:?}",
            u.iter().map(|u| (u.start_ms, u.end_ms)).collect::<Vec<_>>()
        );
        u
    }

    #[test]
    fn pauses_between_words_do_not_cut_silences_do() {
        // Word pauses of 300 ms stay inside one utterance; 2 s of silence splits.
        for noise in [0.0, 0.001, 0.02] {
            let signal = mix(
                &[
                    silence(500),
                    speechlike(5, 300, 0.3),
                    silence(2000),
                    speechlike(3, 300, 0.3),
                    silence(1000),
                ],
                noise,
            );
            let u = check(&signal, 2);
            assert!(
                (200..=500).contains(&u[0].start_ms),
                "noise {noise}: {}",
                u[0].start_ms
            );
            assert!(u[1].start_ms > u[0].end_ms + 1000, "noise {noise}");
        }
        // Speech right at the start and at the very end of the stream.
        check(
            &mix(
                &[
                    speechlike(4, 200, 0.3),
                    silence(2000),
                    speechlike(4, 200, 0.3),
                ],
                0.001,
            ),
            2,
        );
    }

    #[test]
    fn clicks_and_silence_are_no_utterances_and_long_speech_is_cut() {
        check(&mix(&[silence(3000)], 0.001), 0);
        check(
            &mix(&[silence(1000), vec![0.5; 480], silence(1000)], 0.001),
            0,
        );
        // 70 s of speech with 100 ms pauses: cut at 30 s twice.
        check(&mix(&[silence(500), speechlike(233, 100, 0.3)], 0.001), 3);
    }

    #[test]
    fn streaming_in_odd_chunks_gives_the_same_cuts() {
        let all = mix(
            &[
                silence(400),
                speechlike(4, 250, 0.3),
                silence(1500),
                speechlike(2, 250, 0.3),
            ],
            0.001,
        );
        let whole = segment(&all, VadConfig::default());
        let mut s = Segmenter::new(VadConfig::default());
        let mut streamed = Vec::new();
        for chunk in all.chunks(777) {
            streamed.extend(s.push(chunk));
        }
        streamed.extend(s.finish());
        assert_eq!(whole, streamed);
    }
}
