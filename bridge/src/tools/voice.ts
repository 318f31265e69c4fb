//! Tools backed by osmoda-voice: local speech (whisper.cpp in, piper out, PipeWire for the
//! microphone and speakers). Nothing leaves the machine.

import { Type } from "typebox";

import { tool } from "../tool.ts";

const obj = <P extends Record<string, any>>(props: P) => Type.Object(props, { additionalProperties: false });

const audioPath = Type.String({
  minLength: 2,
  maxLength: 4096,
  pattern: "^/",
  description: "Absolute path of a WAV file in osmoda-voice's state dir or services.osmoda.voice.audioDirs.",
});

export const voiceTools = [
  tool({
    name: "voice_status",
    label: "Voice status",
    description: "What osmoda-voice can do here: models loaded, whether an audio device (PipeWire) is there and why not, whether it is listening, and the last utterances it heard.",
    parameters: obj({}),
    async run(_p, ctx) {
      const s = await ctx.daemon("osmoda-voice", "GET", "/voice/status", undefined, "voice_status");
      const recent = (s.listen?.recent ?? []).map((h: any) => `  ${h.start_ms} ms: ${JSON.stringify(h.text)}${h.delivered ? "" : ` (not sent: ${h.error})`}`);
      const lines = [
        `whisper model: ${s.whisper_model_loaded ? s.whisper_model : "none (services.osmoda.voice.whisperModel)"}; language ${s.language}`,
        `piper voice: ${s.piper_model_loaded ? s.piper_model : "none (services.osmoda.voice.piperModel)"}`,
        `audio device: ${s.audio_device ? "PipeWire" : s.audio_device_error}`,
        `listening: ${s.listening ? `yes (${s.listen.source})` : "no"}; ${s.listen?.utterances ?? 0} utterances${s.listen?.error ? `; stopped: ${s.listen.error}` : ""}`,
        ...recent,
      ];
      return { text: lines.join("\n"), details: s };
    },
  }),
  tool({
    name: "voice_speak",
    label: "Speak",
    description: "Say text aloud with the local piper voice: writes a WAV file and plays it through PipeWire (where there is no audio device the file is still written and the answer says so).",
    parameters: obj({
      text: Type.String({ minLength: 1, maxLength: 4000, description: "What to say." }),
      play: Type.Optional(Type.Boolean({ description: "Play it (default true); false only writes the file." })),
    }),
    async run(p, ctx) {
      const r = await ctx.daemon("osmoda-voice", "POST", "/voice/speak", p, "voice_speak");
      const played = r.played ? "played" : `not played: ${r.playback_error}`;
      return { text: `spoke ${r.duration_ms} ms of audio into ${r.audio_path} (${played}).`, details: r };
    },
  }),
  tool({
    name: "voice_transcribe",
    label: "Transcribe audio",
    description: "Turn speech in a WAV file into text with the local whisper.cpp model (any sample rate and channel count; at most 10 minutes).",
    parameters: obj({
      audio_path: audioPath,
      language: Type.Optional(Type.String({ minLength: 2, maxLength: 8, description: "Whisper language code such as 'en' or 'de', or 'auto' (default: the configured one)." })),
    }),
    async run(p, ctx) {
      const r = await ctx.daemon("osmoda-voice", "POST", "/voice/transcribe", p, `voice_transcribe ${p.audio_path}`);
      return { text: `${JSON.stringify(r.text)} (${r.duration_ms} ms of audio, language ${r.language}, transcribed in ${r.transcribe_ms} ms)`, details: r };
    },
  }),
  tool({
    name: "voice_record",
    label: "Record",
    description: "Record from the microphone (PipeWire) for a few seconds into a WAV file, and transcribe it unless told not to. For longer speech use voice_listen.",
    parameters: obj({
      // At most 30 s: recording and then transcribing it (slower than real time on small
      // machines) must fit the bridge's 120 s budget for one daemon call.
      duration_secs: Type.Optional(Type.Integer({ minimum: 1, maximum: 30, description: "Seconds to record, at most 30 (default 5)." })),
      transcribe: Type.Optional(Type.Boolean({ description: "Transcribe the recording (default true)." })),
    }),
    async run(p, ctx) {
      const r = await ctx.daemon("osmoda-voice", "POST", "/voice/record", p, "voice_record");
      const heard = r.text === undefined ? "" : `: ${JSON.stringify(r.text)}`;
      return { text: `recorded ${r.duration_ms} ms of audio into ${r.audio_path}${heard}`, details: r };
    },
  }),
  tool({
    name: "voice_listen",
    label: "Listen",
    description: "Start or stop listening on the microphone: utterances are cut at pauses (voice-activity detection), transcribed, and each comes to you as a message from the person (never the machine's own speech). With audio_path it cuts that WAV file into utterances instead, shown in voice_status and never sent as the person's words.",
    parameters: obj({
      enabled: Type.Boolean({ description: "true starts listening, false stops." }),
      audio_path: Type.Optional(audioPath),
    }),
    async run(p, ctx) {
      const r = await ctx.daemon("osmoda-voice", "POST", "/voice/listen", p, p.enabled ? "voice_listen start" : "voice_listen stop");
      const was = r.previous ? "was listening" : "was not listening";
      return { text: `${r.listening ? "listening" : "not listening"} (${was}).`, details: r };
    },
  }),
];
