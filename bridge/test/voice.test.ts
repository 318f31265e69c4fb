// The voice tools through the real gateway, on a real osmoda-voice with the real models (piper
// voice and whisper tiny.en from PyPI, crates/osmoda-voice/scripts/fetch-models): speak → a WAV,
// transcribe it back, and listen to speech, 2 s of silence, speech: each utterance reaches the
// agent as the person's message through the same gateway's /v1/chat/completions, and the
// scripted model sees both. Audio goes through a real PipeWire (test/pipewire.ts: a private
// server whose microphone hears its speaker): voice_speak plays there, voice_record and
// voice_listen hear what is played; once that PipeWire is stopped, they say there is no audio
// device.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, writeFileSync, existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";

import { call } from "../src/client.ts";
import { Stack, ToolCalls, coverageOf, until } from "./harness.ts";
import { startChatGateway } from "./chat.ts";
import { ScriptedModel, type ChatRequest, type Step } from "./model.ts";
import { MIC, PipeWire } from "./pipewire.ts";

const repo = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const stack = new Stack();
const audioDir = join(stack.dir, "audio");
const pipewire = new PipeWire(join(stack.dir, "pipewire"));

/** Everything a refused voice call could change: the files it writes and its ledger events. */
async function snapshot() {
  const state = join(stack.dir, "state", "voice");
  const files = ["speech", "recordings"].flatMap((d) => (existsSync(join(state, d)) ? readdirSync(join(state, d)).map((f) => `${d}/${f}`) : [])).sort();
  const events = (await stack.agentd("GET", "/events/log?type=voice.*&limit=1000")).length;
  return { files, events };
}
const calls = new ToolCalls(stack, snapshot);

/**
 * Waits until the ledger holds `n` voice events: osmoda-voice spools them, so they arrive a
 * little after the answers, and a refusal's before/after snapshot must not see one land.
 */
async function settled(n: number) {
  await until(`${n} voice events in the ledger`, 30_000, async () => (await stack.agentd("GET", "/events/log?type=voice.*&limit=1000")).length === n);
}

/**
 * The person's words as the agent got them: the last user text of each request that has one.
 * OpenClaw adds its own context as user text too, and makes model requests of its own (its
 * heartbeat, memory): those carry only that context and are not the person's.
 */
const heard: string[] = [];
function script(req: ChatRequest): Step {
  const texts = (c: unknown): string[] =>
    typeof c === "string" ? [c] : Array.isArray(c) ? c.filter((p) => p?.type === "text" && typeof p.text === "string").map((p) => p.text) : [];
  const said = req.messages
    .filter((m) => m.role === "user")
    .flatMap((m) => texts(m.content))
    // The marker may carry invisible characters (OpenClaw's guard against spoofing it).
    .filter((t) => !/begin.?openclaw.?internal.?context/i.test(t.replace(/[^\x20-\x7E\n]/g, "")))
    .at(-1);
  if (said === undefined) return { text: "nothing was said" };
  heard.push(said);
  return { text: `I heard: ${said}` };
}
const model = new ScriptedModel(script);

/** The PCM data chunk and its format chunk of a WAV file. */
function pcm(file: string): { fmt: Buffer; data: Buffer } {
  const b = readFileSync(file);
  let fmt: Buffer | undefined;
  for (let o = 12; o + 8 <= b.length; ) {
    const id = b.toString("ascii", o, o + 4);
    const size = b.readUInt32LE(o + 4);
    if (id === "fmt ") fmt = b.subarray(o + 8, o + 8 + size);
    if (id === "data") return { fmt: fmt!, data: b.subarray(o + 8, o + 8 + size) };
    o += 8 + size + (size & 1);
  }
  throw new Error(`${file}: no data chunk`);
}

/** `a`, `gapMs` of silence, `b` (same format) as one WAV file. */
function concat(a: string, b: string, gapMs: number, out: string) {
  const x = pcm(a), y = pcm(b);
  const rate = x.fmt.readUInt32LE(4), align = x.fmt.readUInt16LE(12);
  const data = Buffer.concat([x.data, Buffer.alloc(Math.round((rate * gapMs) / 1000) * align), y.data]);
  const head = Buffer.alloc(12 + 8 + x.fmt.length + 8);
  head.write("RIFF", 0, "ascii");
  head.writeUInt32LE(head.length - 8 + data.length, 4);
  head.write("WAVEfmt ", 8, "ascii");
  head.writeUInt32LE(x.fmt.length, 16);
  x.fmt.copy(head, 20);
  head.write("data", 20 + x.fmt.length, "ascii");
  head.writeUInt32LE(data.length, 24 + x.fmt.length);
  writeFileSync(out, Buffer.concat([head, data]));
}

describe("voice tools through the real gateway", { timeout: 900_000 }, () => {
  before(async () => {
    const fetched = spawnSync(join(repo, "crates/osmoda-voice/scripts/fetch-models"), { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] });
    assert.equal(fetched.status, 0, "fetch-models failed: the voice tests need the real models from PyPI");
    const m = Object.fromEntries(fetched.stdout.trim().split("\n").map((l) => l.split("=", 2)));
    mkdirSync(audioDir, { recursive: true });
    await model.start();
    await pipewire.start();
    const port = await stack.reservePort();
    // osmoda-voice (and only it) gets PipeWire's directory in its environment, as the unit's
    // PIPEWIRE_RUNTIME_DIR gives it; the test process keeps its own HOME (cargo and rustup need it).
    await stack.startDaemons({
      voice: {
        piper: m.piper,
        env: pipewire.env(),
        config: { whisper_model: m.whisper_model, piper_model: m.piper_model, language: "en", audio_dirs: [audioDir], gateway_url: `http://127.0.0.1:${port}` },
      },
    });
    await startChatGateway(stack, model);
  });
  after(async () => {
    await stack.stop();
    await model.stop();
    await pipewire.stop();
  });

  it("voice_status says what is loaded and that PipeWire is there", async () => {
    const s = await calls.ok("voice_status", {});
    assert.match(s.text, /whisper model: .*ggml-tiny\.en\.bin; language en/);
    assert.match(s.text, /piper voice: .*en_US-joe-medium\.onnx/);
    assert.match(s.text, /audio device: PipeWire/);
    assert.match(s.text, /listening: no; 0 utterances/);
    await calls.refused("voice_status", { verbose: true }, /verbose/);
  });

  it("voice_speak plays through PipeWire, voice_transcribe hears the words back", async () => {
    const said = "Please restart the web server after the update.";
    // A recorder of the test's own on the microphone, from before the call until after it.
    const heardWav = join(audioDir, "heard.wav");
    const ear = spawn("pw-record", ["--rate", "16000", "--channels", "1", "--format", "s16", "--target", MIC, heardWav], { env: { ...process.env, ...pipewire.env() }, stdio: "ignore" });
    const earExit = new Promise((r) => ear.once("exit", r));
    await pipewire.recorderLinked();
    const s = await calls.ok("voice_speak", { text: said });
    ear.kill("SIGINT");
    await Promise.race([earExit, new Promise((_, no) => setTimeout(() => no(new Error("pw-record did not stop on SIGINT")), 10_000))]);
    assert.match(s.text, /^spoke \d+ ms of audio into \/.*\.wav \(played\)\.$/);
    assert.equal(s.details.played, true);
    for (const file of [s.details.audio_path, heardWav]) {
      const t = await calls.ok("voice_transcribe", { audio_path: file });
      for (const w of ["restart", "web", "server", "update"]) assert.match(t.details.text.toLowerCase(), new RegExp(w), t.text);
      assert.match(t.text, /language en, transcribed in \d+ ms/);
    }
    await settled(3); // voice.spoke, 2 voice.transcribed
    await calls.refused("voice_speak", { text: "" }, /text: must NOT have fewer than 1 characters|text/);
    await calls.refused("voice_speak", { text: "bell\u0007" }, /osmoda-voice refused voice_speak.*control characters/);
    await calls.refused("voice_transcribe", { audio_path: "relative.wav" }, /audio_path/);
    await calls.refused("voice_transcribe", { audio_path: "/etc/passwd" }, /osmoda-voice refused voice_transcribe \/etc\/passwd.*outside the directories/);
    await calls.refused("voice_transcribe", { audio_path: join(audioDir, "missing.wav") }, /does not exist/);
  });

  it("voice_record hears what is played on the speaker", async () => {
    const said = await calls.ok("voice_speak", { text: "Roll back the last configuration change.", play: false });
    const rec = calls.ok("voice_record", { duration_secs: 10 });
    await pipewire.recorderLinked();
    await pipewire.play(said.details.audio_path);
    const r = await rec;
    assert.match(r.text, /^recorded \d+ ms of audio into \/.*\/recordings\/.*\.wav: /);
    assert.ok(r.details.duration_ms >= 5_000 && r.details.duration_ms <= 10_500, r.text);
    assert.match(r.details.text.toLowerCase(), /roll back.*configuration change/, r.text);
    await settled(5); // + voice.spoke, voice.recorded
    await calls.refused("voice_record", { duration_secs: 0 }, /duration_secs/);
    await calls.refused("voice_record", { duration_secs: 31 }, /duration_secs/);
  });

  it("voice_listen on the microphone cuts speech, silence, speech into two utterances, and the agent hears each as the person", async () => {
    const a = await calls.ok("voice_speak", { text: "Turn on the lights in the kitchen.", play: false });
    const b = await calls.ok("voice_speak", { text: "What will the weather be like tomorrow?", play: false });
    const two = join(audioDir, "two.wav");
    concat(a.details.audio_path, b.details.audio_path, 2000, two);
    const before = heard.length;
    const l = await calls.ok("voice_listen", { enabled: true });
    assert.equal(l.text, "listening (was not listening).");
    await pipewire.recorderLinked();
    await pipewire.play(two);
    // Polled on voice's own socket: the gateway is busy with the turns the utterances start.
    await until("both utterances delivered", 600_000, async () => {
      const s = (await call({ socket: stack.voiceSocket, method: "GET", path: "/voice/status", timeoutMs: 30_000 })).body;
      return s.listen.recent.length >= 2;
    });
    const stop = await calls.ok("voice_listen", { enabled: false });
    assert.equal(stop.text, "not listening (was listening).");
    const status = await calls.ok("voice_status", {});
    assert.equal(status.details.listen.utterances, 2, JSON.stringify(status.details.listen));
    assert.ok(status.details.listen.recent.every((h: any) => h.delivered), JSON.stringify(status.details.listen));
    const got = heard.slice(before);
    assert.equal(got.length, 2, JSON.stringify({ got, requests: model.requests.slice(-4).map((r) => r.messages.filter((m) => m.role === "user")) }));
    assert.match(got[0].toLowerCase(), /lights.*kitchen/);
    assert.match(got[1].toLowerCase(), /weather.*tomorrow/);
    assert.match(status.details.listen.recent[0].reply, /^I heard: /);
    await until("the utterances in the ledger", 30_000, async () => (await stack.agentd("GET", "/events/log?type=voice.utterance&limit=100")).length === 2);
    // 5 + 2 speeches + listen.started + 2 utterances + listen.stopped.
    await settled(11);
    await calls.refused("voice_listen", { enabled: "yes" }, /enabled/);
    await calls.refused("voice_listen", { enabled: true, audio_path: "/etc/passwd" }, /outside the directories/);
  });

  it("without PipeWire, voice_record and voice_listen say there is no audio device", async () => {
    await pipewire.stop();
    const s = await calls.ok("voice_status", {});
    assert.match(s.text, /audio device: no audio device: /);
    await calls.refused("voice_record", { duration_secs: 2 }, /osmoda-voice cannot do voice_record here: no audio device/);
    await calls.refused("voice_listen", { enabled: true }, /no audio device/);
    const spoken = await calls.ok("voice_speak", { text: "Hello.", play: true });
    assert.match(spoken.text, /\(not played: no audio device: /);
  });

  it("covers every voice tool", () => calls.assertCovered(coverageOf("voice")));
});
