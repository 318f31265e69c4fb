// A real PipeWire for the voice tests, touching no real device: `pipewire` on its own config in
// a temp runtime dir with a null speaker (Audio/Sink) and a null microphone
// (Audio/Source/Virtual), WirePlumber on a private D-Bus session bus (its hardware monitors off)
// making them the defaults, and the speaker's monitor linked into the microphone: what is played
// is heard. The same setup as crates/osmoda-voice/tests/common/pipewire.rs. Every wait has a
// deadline; stop() ends the three processes.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, writeFileSync } from "node:fs";
import { connect } from "node:net";
import { join } from "node:path";

import { until } from "./harness.ts";

export const SPEAKER = "osmoda-test-speaker";
export const MIC = "osmoda-test-mic";

const CONF = `
context.properties = { core.daemon = true core.name = pipewire-0 link.max-buffers = 16 default.clock.rate = 48000 }
context.spa-libs = { audio.convert.* = audioconvert/libspa-audioconvert support.* = support/libspa-support }
context.modules = [
  { name = libpipewire-module-protocol-native } { name = libpipewire-module-metadata }
  { name = libpipewire-module-spa-node-factory } { name = libpipewire-module-client-node }
  { name = libpipewire-module-access } { name = libpipewire-module-adapter }
  { name = libpipewire-module-link-factory } { name = libpipewire-module-session-manager }
]
context.objects = [
  { factory = spa-node-factory args = { factory.name = support.node.driver node.name = Dummy-Driver node.group = pipewire.dummy priority.driver = 20000 } }
  { factory = adapter args = { factory.name = support.null-audio-sink node.name = ${SPEAKER} media.class = Audio/Sink audio.position = [ MONO ] audio.rate = 48000 priority.session = 2000 } }
  { factory = adapter args = { factory.name = support.null-audio-sink node.name = ${MIC} media.class = Audio/Source/Virtual audio.position = [ MONO ] audio.rate = 48000 priority.session = 2000 } }
]
`;

export class PipeWire {
  readonly dir: string;
  readonly runtimeDir: string;
  private procs: { name: string; child: ChildProcess }[] = [];

  // No parameter properties: Node runs the tests by stripping types, which cannot rewrite them.
  constructor(dir: string) {
    this.dir = dir;
    this.runtimeDir = join(dir, "run");
  }

  /** Environment for the server's processes and its clients. */
  env(): Record<string, string> {
    return {
      XDG_RUNTIME_DIR: this.runtimeDir,
      PIPEWIRE_RUNTIME_DIR: this.runtimeDir,
      XDG_CONFIG_HOME: join(this.dir, "config"),
      XDG_STATE_HOME: join(this.dir, "state"),
      XDG_DATA_HOME: join(this.dir, "data"),
      HOME: this.dir,
      DBUS_SESSION_BUS_ADDRESS: `unix:path=${join(this.dir, "bus")}`,
    };
  }

  private clientEnv(): NodeJS.ProcessEnv {
    const env: NodeJS.ProcessEnv = { ...process.env, ...this.env() };
    delete env.PIPEWIRE_REMOTE;
    delete env.DISPLAY;
    return env;
  }

  private spawn(name: string, cmd: string, args: string[]) {
    const child = spawn(cmd, args, { env: this.clientEnv(), stdio: "ignore" });
    child.on("error", () => {});
    this.procs.push({ name, child });
  }

  private alive() {
    for (const p of this.procs) if (p.child.exitCode !== null || p.child.signalCode !== null) throw new Error(`${p.name} exited (${p.child.exitCode ?? p.child.signalCode})`);
  }

  private run(cmd: string, args: string[]): string {
    const r = spawnSync(cmd, args, { env: this.clientEnv(), encoding: "utf8", timeout: 20_000 });
    if (r.error) throw new Error(`${cmd} ${args.join(" ")}: ${r.error.message} (apt-get install pipewire pipewire-bin wireplumber dbus-daemon)`);
    return r.stdout;
  }

  /** Starts the server and the session manager; resolves once the loop speaker → microphone is linked. */
  async start(): Promise<void> {
    mkdirSync(this.runtimeDir, { recursive: true, mode: 0o700 });
    const conf = join(this.dir, "pipewire.conf");
    writeFileSync(conf, CONF);
    for (const [sub, text] of [["main.lua.d", "alsa_monitor.enabled = false\nv4l2_monitor.enabled = false\nlibcamera_monitor.enabled = false\n"], ["bluetooth.lua.d", "bluez_monitor.enabled = false\n"]]) {
      mkdirSync(join(this.dir, "config", "wireplumber", sub), { recursive: true });
      writeFileSync(join(this.dir, "config", "wireplumber", sub, "60-osmoda-test.lua"), text);
    }
    this.spawn("pipewire", "pipewire", ["-c", conf]);
    const sock = join(this.runtimeDir, "pipewire-0");
    await until("PipeWire's socket", 20_000, () => (this.alive(), existsSync(sock) && answers(sock)));
    this.spawn("dbus-daemon", "dbus-daemon", ["--session", "--nofork", "--nopidfile", `--address=unix:path=${join(this.dir, "bus")}`]);
    await until("the D-Bus session bus", 20_000, () => (this.alive(), existsSync(join(this.dir, "bus"))));
    this.spawn("wireplumber", "wireplumber", []);
    await until("WirePlumber choosing the test speaker and microphone", 30_000, () => {
      this.alive();
      const m = this.run("pw-metadata", ["-n", "default"]);
      return m.includes(`"${SPEAKER}"`) && m.includes(`"${MIC}"`);
    });
    const [from, to] = [`${SPEAKER}:monitor_MONO`, `${MIC}:input_MONO`];
    await until("the speaker linked into the microphone", 20_000, () => {
      this.run("pw-link", [from, to]);
      return this.run("pw-link", ["-l"]).includes(`${from}\n  |-> ${to}`);
    });
  }

  /** Resolves once a pw-record is linked to the microphone (60 s at most). */
  async recorderLinked(): Promise<void> {
    await until("a pw-record linked to the test microphone", 60_000, () => this.run("pw-link", ["-l"]).includes(`${MIC}:capture_MONO\n  |-> pw-record:`));
  }

  /** Plays a WAV file on the speaker and waits until it has played (60 s at most). */
  async play(file: string): Promise<void> {
    const child = spawn("pw-play", [file], { env: this.clientEnv(), stdio: "ignore" });
    const code = await new Promise<number | null>((resolve, reject) => {
      const t = setTimeout(() => (child.kill("SIGKILL"), reject(new Error(`pw-play ${file} did not finish within 60 s`))), 60_000);
      child.on("exit", (c) => (clearTimeout(t), resolve(c)));
      child.on("error", (e) => (clearTimeout(t), reject(e)));
    });
    if (code !== 0) throw new Error(`pw-play ${file} exited ${code}`);
  }

  /** Ends every process (SIGTERM, SIGKILL after 5 s), newest first. */
  async stop(): Promise<void> {
    for (const { child } of this.procs.reverse()) {
      if (child.exitCode !== null || child.signalCode !== null) continue;
      const exited = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill("SIGTERM");
      const t = setTimeout(() => child.kill("SIGKILL"), 5_000);
      await exited;
      clearTimeout(t);
    }
    this.procs = [];
  }
}

/** Whether a server accepts a connection on the Unix socket `path` (checked synchronously enough for `until`). */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once("connect", () => (s.destroy(), resolve(true)));
    s.once("error", () => resolve(false));
  });
}
