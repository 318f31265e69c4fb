// scripts/dev's gateway part: `scripts/dev --once` in a temp copy of the checkout starts agentd,
// osmoda-watch, osmoda-keyd, osmoda-routines and the real OpenClaw gateway with the bridge
// (lib/-rendered config, generated token), invokes system_health, routine_list and wallet_list
// through POST /tools/invoke (the routine and the wallet the walk made answer through the
// gateway), stops everything and exits 0; the same again on the same .osmoda (the token and
// state are reused). The walk without the gateway is crates/agentctl/tests/dev_script.rs.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";

import { bridgeDir, daemonBinDir } from "./harness.ts";

const repo = resolve(bridgeDir, "..");
const dir = mkdtempSync(join(tmpdir(), "osmoda-dev-gw-"));
const clone = join(dir, "osmoda");

/** The checkout's files (tracked and untracked-not-ignored), timestamps kept, as a fresh clone plus work in progress. */
function cloneCheckout() {
  const ls = spawnSync("git", ["-C", repo, "ls-files", "-z", "--cached", "--others", "--exclude-standard"], { encoding: "utf8" });
  assert.equal(ls.status, 0, ls.stderr);
  for (const rel of ls.stdout.split("\0").filter(Boolean)) {
    const src = join(repo, rel);
    if (!existsSync(src) || !statSync(src).isFile()) continue;
    mkdirSync(dirname(join(clone, rel)), { recursive: true });
    cpSync(src, join(clone, rel), { preserveTimestamps: true });
  }
  // The bridge's installed dependencies (Node 24, openclaw): the copy uses them as they are, so
  // scripts/dev finds them current and installs nothing.
  symlinkSync(join(bridgeDir, "node_modules"), join(clone, "bridge", "node_modules"));
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

function dev(port: number): { status: number | null; out: string } {
  const env: Record<string, string | undefined> = { ...process.env, OSMODA_DEV_BIN_DIR: daemonBinDir(), OSMODA_DEV_GATEWAY_PORT: String(port) };
  for (const k of ["OSMODA_AGENTD_SOCKET", "OSMODA_APPROVAL_SOCKET", "OSMODA_WATCH_SOCKET", "OSMODA_KEYD_SOCKET", "OSMODA_ROUTINES_SOCKET", "OSMODA_DEV_GATEWAY", "OPENCLAW_STATE_DIR", "OPENCLAW_CONFIG_PATH", "ANTHROPIC_API_KEY", "OPENAI_API_KEY"]) delete env[k];
  const r = spawnSync(join(clone, "scripts", "dev"), ["--once"], { cwd: clone, env, encoding: "utf8", timeout: 600_000, stdio: ["ignore", "pipe", "pipe"] });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

after(() => {
  if (!process.env.OSMODA_KEEP_TEST_DIR) rmSync(dir, { recursive: true, force: true });
});

/** The gateway's answer to tool `name` in a walk's output: the JSON line after its curl line. */
function invoked(out: string, name: string): any {
  const lines = out.split("\n");
  const at = lines.findIndex((l) => l.startsWith("$ curl ") && l.includes(`{\"tool\":\"${name}\"`));
  assert.ok(at >= 0, `no curl line for ${name} in:\n${out.slice(-4000)}`);
  return JSON.parse(lines[at + 1]);
}

/** The text the model would see from tool `name`'s answer. */
function toolText(out: string, name: string): string {
  const r = invoked(out, name);
  assert.equal(r.ok, true, JSON.stringify(r));
  return r.result.content.map((c: { text: string }) => c.text).join("\n");
}

test("scripts/dev --once starts the gateway with the bridge and calls system_health, routine_list and wallet_list through it, twice in a row", { timeout: 900_000 }, async () => {
  cloneCheckout();
  const port = await freePort();
  const first = dev(port);
  assert.equal(first.status, 0, first.out.slice(-4000));
  assert.match(first.out, /starting the OpenClaw gateway on 127\.0\.0\.1:\d+ with the bridge/);
  assert.match(first.out, new RegExp(`\\$ curl -sS --fail-with-body -H "Authorization: Bearer \\$\\(cat .*/\\.osmoda/gateway/token\\)" .* http://127\\.0\\.0\\.1:${port}/tools/invoke`));
  assert.match(first.out, /"ok":true.*CPU [\d.]+% of \d+ cores/);
  // osmoda-routines and osmoda-keyd answer the bridge's tools: the routine and wallet of the walk.
  assert.match(toolText(first.out, "routine_list"), /agentd-health\s+on\s+every 3600s\s+http\b.*ok #\d+/);
  assert.match(toolText(first.out, "wallet_list"), /dev-wallet\s+solana\s+\w{32,44}/);
  const token = readFileSync(join(clone, ".osmoda", "gateway", "token"), "utf8");
  assert.match(token, /^[0-9a-f]{48}$/);
  assert.equal(statSync(join(clone, ".osmoda", "gateway", "token")).mode & 0o777, 0o600);
  // The rendered config is lib/'s, with the dev machine's sockets and the model left unset (no key here).
  const cfg = JSON.parse(readFileSync(join(clone, ".osmoda", "gateway", "openclaw.json"), "utf8"));
  assert.deepEqual(cfg.tools.allow, ["group:plugins", "group:fs", "group:memory"]);
  assert.ok(cfg.tools.deny.includes("group:runtime"), JSON.stringify(cfg.tools));
  assert.equal(cfg.plugins.entries["osmoda-bridge"].config.agentdSocket, join(clone, ".osmoda", "run", "agentd.sock"));
  assert.equal(cfg.agents, undefined);
  // The agent's workspace holds osModa's skills and templates, as the module's ExecStartPre
  // installs them; a person's SOUL.md survives the next start.
  const ws = join(clone, ".osmoda", "gateway", "state", "workspace");
  assert.match(readFileSync(join(ws, "AGENTS.md"), "utf8"), /osModa/);
  assert.ok(existsSync(join(ws, "skills", "drift-detection", "SKILL.md")));
  writeFileSync(join(ws, "SOUL.md"), "the person's own soul\n");

  // Again on the same .osmoda: the same token, the tree resumed, the gateway started again.
  const second = dev(port);
  assert.equal(second.status, 0, second.out.slice(-4000));
  assert.match(second.out, /reusing the configuration tree/);
  assert.match(second.out, /"ok":true.*CPU [\d.]+% of \d+ cores/);
  assert.match(toolText(second.out, "routine_list"), /agentd-health/);
  assert.equal(toolText(second.out, "wallet_list"), toolText(first.out, "wallet_list"), "the same wallet, from keyd's state");
  assert.equal(readFileSync(join(clone, ".osmoda", "gateway", "token"), "utf8"), token);
  assert.equal(readFileSync(join(ws, "SOUL.md"), "utf8"), "the person's own soul\n");
  // Nothing is left listening.
  await new Promise<void>((res, rej) => {
    const s = createServer();
    s.on("error", rej);
    s.listen(port, "127.0.0.1", () => s.close(() => res()));
  });
});
