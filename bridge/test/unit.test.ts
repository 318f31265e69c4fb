// Unit tests: manifest ↔ registered tools, argument validation, error text, formatting.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";

import entry from "../src/index.ts";
import { daemonError, transportError, ToolInputError, DaemonFailure } from "../src/errors.ts";
import { TransportError } from "../src/client.ts";
import { bytes, clip, duration, table } from "../src/format.ts";
import { resolveSettings, toAgentTool, validate, DEFAULT_SETTINGS } from "../src/tool.ts";
import { allTools } from "../src/tools/index.ts";
import { SYSTEM_QUERIES } from "../src/tools/agentd.ts";

const manifest = JSON.parse(readFileSync(new URL("../openclaw.plugin.json", import.meta.url), "utf8"));

function registered(config: unknown = {}) {
  const tools: any[] = [];
  const api: any = {
    pluginConfig: config,
    registerTool: (t: any) => tools.push(t),
    on: () => assert.fail("the bridge registers no hooks yet"),
  };
  (entry as any).register(api);
  return tools;
}

test("contracts.tools equals the registered set, and register() is repeatable", () => {
  const a = registered().map((t) => t.name);
  const b = registered().map((t) => t.name);
  assert.deepEqual(a, b);
  assert.equal(new Set(a).size, a.length, "no duplicate names");
  assert.deepEqual([...a].sort(), [...manifest.contracts.tools].sort());
  assert.equal(manifest.id, (entry as any).id);
});

test("every registered tool has a description, a label and an object schema that forbids unknown fields", () => {
  for (const t of registered()) {
    assert.ok(t.description.length > 20, t.name);
    assert.ok(t.label, t.name);
    assert.equal(t.parameters.type, "object", t.name);
    assert.equal(t.parameters.additionalProperties, false, t.name);
    assert.equal(typeof t.execute, "function");
  }
});

test("settings: defaults, overrides, and the manifest's configSchema names exactly those keys", () => {
  assert.deepEqual(resolveSettings(undefined), DEFAULT_SETTINGS);
  assert.deepEqual(resolveSettings({ agentdSocket: "/a", watchSocket: "/w", requestTimeoutSecs: 2 }), {
    agentdSocket: "/a",
    watchSocket: "/w",
    requestTimeoutMs: 2000,
  });
  assert.deepEqual(Object.keys(manifest.configSchema.properties).sort(), ["agentdSocket", "requestTimeoutSecs", "watchSocket"]);
  assert.equal(manifest.configSchema.additionalProperties, false);
});

test("system_query's enum is agentd's query list", () => {
  const sq = allTools.find((t) => t.name === "system_query")!;
  assert.deepEqual((sq.parameters as any).properties.query.enum, [...SYSTEM_QUERIES]);
});

// check(tool, args, expected): expected = [] for valid, else substrings every problem list must contain.
const cases: [string, unknown, string[]][] = [
  ["system_health", {}, []],
  ["system_health", { verbose: true }, ['unknown field(s) ["verbose"]']],
  ["system_query", { query: "disk" }, []],
  ["system_query", { query: "processes", args: { sort: "cpu" } }, []],
  ["system_query", { query: "rm -rf" }, ["query: must be one of"]],
  ["system_query", {}, ['missing required field(s) ["query"]']],
  ["service_status", { unit: "nginx" }, []],
  ["service_status", {}, ['missing required field(s) ["unit"]']],
  ["journal_logs", { unit: "nginx", lines: 20, priority: "err", since: "1 hour ago" }, []],
  ["journal_logs", { lines: 5000 }, ["lines: must be <= 1000"]],
  ["shell_exec", { command: "uptime" }, []],
  ["shell_exec", { argv: ["ls", "-l"], cwd: "/", env: { LANG: "C" }, timeout_secs: 5, user: "root", writable: ["/srv"] }, []],
  ["shell_exec", { command: "x", env: { "BAD-KEY": "1" } }, ["env: "]],
  ["shell_exec", { command: "x", timeout_secs: 3600 }, ["timeout_secs: must be <= 600"]],
  ["shell_exec", { argv: [] }, ["argv: must not have fewer than 1 items"]],
  ["file_read", { path: "/etc/hosts", offset: 0, limit: 10 }, []],
  ["file_read", { path: "etc/hosts" }, ["path: must match pattern"]],
  ["file_write", { path: "/tmp/x", content: "hi", mode: 420, create_dirs: true }, []],
  ["file_write", { path: "/tmp/x", content: 5 }, ["content: must be string"]],
  ["directory_list", { path: "/" }, []],
  ["directory_list", { path: "/", recursive: true }, ['unknown field(s) ["recursive"]']],
  ["event_log", { type: "config.*", limit: 5, order: "desc" }, []],
  ["event_log", { limit: 0 }, ["limit: must be >= 1"]],
  ["event_log", { limit: "5" }, ["limit: must be integer"]],
  ["event_log", { order: "sideways" }, ["order: must be one of"]],
  ["incident_create", { name: "disk full" }, []],
  ["incident_create", { name: "" }, ["name: must not have fewer than 1 characters"]],
  ["incident_step", { id: 1, action: "a", result: "b" }, []],
  ["incident_step", { id: -1, action: "a", result: "b" }, ["id: must be >= 1"]],
  ["config_set", { path: "services.nginx.enable", value: true, reason: "r" }, []],
  ["config_set", { path: "services.nginx.enable; rm", value: true, reason: "r" }, ["path: must match pattern"]],
  ["config_set", { path: "a.b", value: 1 }, ['missing required field(s) ["reason"]']],
  ["config_revert", { rev: "abc", reason: "r" }, []],
  ["safe_switch_begin", {}, []],
  ["safe_switch_begin", { health_checks: [{ type: "agentd" }, { type: "http", url: "https://x" }] }, ["health_checks.1.url: must match pattern"]],
  ["safe_switch_begin", { health_checks: [{ type: "ping" }] }, ["health_checks.0.type: must be one of"]],
  ["safe_switch_status", { id: "1" }, ["id: must be integer"]],
  ["watcher_add", { name: "nginx", check: { type: "systemd", unit: "nginx.service" }, interval_secs: 10, actions: ["restart"] }, []],
  ["watcher_add", { name: "1bad", check: { type: "tcp", host: "h" }, interval_secs: 10, actions: ["reboot"] }, [
    "name: must match pattern",
    'check: missing required field(s) ["port"]',
    "actions.0: must be one of",
  ]],
];

test("argument validation: valid calls pass, invalid ones name each wrong field", () => {
  for (const [name, args, expected] of cases) {
    const spec = allTools.find((t) => t.name === name);
    assert.ok(spec, name);
    const problems = validate(spec.parameters, args).join("; ");
    if (expected.length === 0) assert.equal(problems, "", `${name} ${JSON.stringify(args)}`);
    for (const e of expected) assert.ok(problems.includes(e), `${name} ${JSON.stringify(args)}: wanted ${e}, got ${problems}`);
  }
});

test("invalid arguments never reach a daemon: execute throws a ToolInputError naming the tool", async () => {
  // A socket path that cannot exist: reaching the transport would fail differently.
  const settings = { ...DEFAULT_SETTINGS, agentdSocket: "/nonexistent/a.sock", watchSocket: "/nonexistent/w.sock" };
  for (const [name, args, expected] of cases) {
    if (expected.length === 0) continue;
    const t = toAgentTool(allTools.find((s) => s.name === name)!, settings);
    await assert.rejects(t.execute("call-1", args), (e: any) => {
      assert.equal(e.name, "ToolInputError");
      assert.match(e.message, new RegExp(`^Invalid arguments for ${name}: `));
      assert.match(e.message, /Nothing was done\.$/);
      return true;
    });
  }
  const cs = toAgentTool(allTools.find((s) => s.name === "config_set")!, settings);
  await assert.rejects(cs.execute("c", { path: "a.b", reason: "r" }), /exactly one of `value`/);
  await assert.rejects(cs.execute("c", { path: "a.b", reason: "r", value: 1, nix: "1" }), /exactly one of `value`/);
  const fw = toAgentTool(allTools.find((s) => s.name === "file_write")!, settings);
  await assert.rejects(fw.execute("c", { path: "/tmp/x" }), /exactly one of `content`/);
  const se = toAgentTool(allTools.find((s) => s.name === "shell_exec")!, settings);
  await assert.rejects(se.execute("c", { command: "a", argv: ["b"] }), /exactly one of `command`/);
});

test("daemon errors become text the model can act on", () => {
  const check = (status: number, body: unknown, name: string, ...parts: RegExp[]) => {
    const e = daemonError("agentd", "config_set a.b", { status, body });
    assert.equal(e.name, name, `${status}`);
    for (const p of parts) assert.match(e.message, p);
  };
  check(400, { error: "invalid Nix: unexpected token", detail: { line: 3 } }, "ToolInputError", /^agentd refused config_set a\.b: invalid Nix/, /"line":3/, /Nothing was changed/);
  check(404, { error: "not defined", detail: null }, "ToolInputError", /\(not found\)/);
  check(409, { error: "the tree has uncommitted edits", detail: null }, "ToolInputError", /conflicts with the current state/);
  check(403, { error: "removing a service needs approval", detail: { operation: { kind: "x" } } }, "ToolAuthorizationError", /A person must approve/, /nothing was changed/);
  check(503, { error: "systemd is not running", detail: null }, "ToolInputError", /cannot do config_set a\.b here: systemd is not running/);
  check(500, { error: "internal error: disk I/O", detail: null }, "DaemonFailure", /failed during config_set a\.b \(HTTP 500\)/);
  check(502, "<html>", "DaemonFailure", /"<html>"/);
  const big = daemonError("agentd", "x", { status: 400, body: { error: "e", detail: { s: "x".repeat(5000) } } });
  assert.ok(big.message.length < 800, "detail is clipped in the message");
  assert.equal((big as ToolInputError).detail && ((big as any).detail.detail.s.length), 5000, "but kept whole in detail");
});

test("transport failures say what to check", () => {
  const t = (kind: TransportError["kind"]) => transportError("osmoda-watch", "safe_switch_begin", new TransportError(kind, "/run/w.sock", "ENOENT: x"));
  assert.match(t("unreachable").message, /osmoda-watch is not reachable at \/run\/w\.sock .*is it running\?/);
  assert.match(t("timeout").message, /did not answer safe_switch_begin in time.*check before retrying/);
  assert.match(t("aborted").message, /cancelled/);
  assert.ok(t("protocol") instanceof DaemonFailure);
});

test("formatting helpers", () => {
  assert.equal(bytes(512), "512 B");
  assert.equal(bytes(1536), "1.5 KiB");
  assert.equal(bytes(25276514304), "23.5 GiB");
  assert.equal(duration(59), "0m 59s");
  assert.equal(duration(3 * 3600 + 120), "3h 2m");
  assert.equal(duration(93784), "1d 2h 3m");
  assert.equal(clip("abc", 5), "abc");
  assert.match(clip("x".repeat(10), 4), /^xxxx\n… \(6 more characters; see details\)$/);
  assert.equal(table(["a", "bb"], [["ccc", "d"]]), "a    bb\nccc  d");
  assert.equal(table(["n", "x"], [[12, null], [undefined, true]]), "n   x\n12\n    true");
});
