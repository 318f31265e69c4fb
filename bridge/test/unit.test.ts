// Unit tests: manifest ↔ registered tools, argument validation, error text, formatting.
import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { createServer } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";

import entry from "../src/index.ts";
import { daemonError, transportError, ToolInputError, DaemonFailure } from "../src/errors.ts";
import { TransportError } from "../src/client.ts";
import { bytes, clip, duration, table } from "../src/format.ts";
import { resolveSettings, toAgentTool, validate, DAEMONS, DEFAULT_SETTINGS } from "../src/tool.ts";
import { allTools, toolModules } from "../src/tools/index.ts";
import { SYSTEM_QUERIES } from "../src/tools/agentd.ts";
import { MAX_PLAINTEXT, MAX_TEXT_BYTES, textProblem } from "../src/tools/mesh.ts";
import { memoryCorpusSupplement, parseLookup } from "../src/memory-corpus.ts";
import { CONTROL_PLANE_TOOLS, HOST_CODE_TOOLS, HOST_TOOLS, beforeHostCall } from "../src/host.ts";
import { bridgeDir } from "./harness.ts";

const manifest = JSON.parse(readFileSync(new URL("../openclaw.plugin.json", import.meta.url), "utf8"));

const hooks: { name: string; matcher: string[] }[] = [];
const supplements: any[] = [];
const prompts: any[] = [];
function registered(config: unknown = {}) {
  const tools: any[] = [];
  hooks.length = 0;
  supplements.length = 0;
  prompts.length = 0;
  const api: any = {
    pluginConfig: config,
    registerTool: (t: any) => tools.push(t),
    registerMemoryCorpusSupplement: (s: any) => supplements.push(s),
    registerMemoryPromptSupplement: (b: any) => prompts.push(b),
    on: (name: string, _h: unknown, opts: { matcher: string[] }) => hooks.push({ name, matcher: opts.matcher }),
  };
  (entry as any).register(api);
  return tools;
}

test("hooks: the approval flow on the bridge's own tools, the fence and the ledger on the built-in file tools, the host tools blocked", () => {
  const names = registered().map((t) => t.name);
  assert.deepEqual(hooks.map((h) => h.name), ["before_tool_call", "before_tool_call", "before_tool_call", "after_tool_call"]);
  assert.deepEqual(hooks[0]!.matcher, names);
  assert.deepEqual(hooks[1]!.matcher, ["write", "edit", "apply_patch"]);
  assert.deepEqual(hooks[2]!.matcher, [...HOST_TOOLS]);
  assert.deepEqual(hooks[3]!.matcher, ["write", "edit", "apply_patch"]);
});

test("host tools: every blocked name is one of OpenClaw's own tool ids (no alias, no stale name), each blocked with what to use instead", async () => {
  // OpenClaw's tool catalog (the module its tool policy reads; a hashed file name per release).
  const dist = join(bridgeDir, "node_modules", "openclaw", "dist");
  const file = readdirSync(dist).find((f) => /^tool-catalog-[\w-]+\.mjs$/.test(f));
  assert.ok(file, `OpenClaw's tool catalog in ${dist}`);
  const catalog: any = await import(join(dist, file!));
  const isKnown = Object.values(catalog).find((f: any) => typeof f === "function" && f.name === "isKnownCoreToolId") as (id: string) => boolean;
  const groups = Object.values(catalog).find((g: any) => g && typeof g === "object" && "group:runtime" in g) as Record<string, string[]>;
  assert.ok(isKnown && groups, "the catalog exports isKnownCoreToolId and the tool groups");
  for (const t of HOST_TOOLS) assert.ok(isKnown(t), `${t} is an OpenClaw tool id`);
  assert.ok(!isKnown("bash"), "an alias is not an id (a matcher naming one makes OpenClaw refuse the plugin)");
  // Every built-in that runs code on the host is in the list: the runtime and nodes groups, but
  // code_execution (it runs on xAI's servers and needs the xai plugin, which osModa does not
  // load) and secrets (credentials for exec, which never sees them run); the rendered config
  // denies the whole runtime group anyway.
  for (const t of [...groups["group:runtime"]!, ...groups["group:nodes"]!].filter((t) => !["code_execution", "secrets"].includes(t))) {
    assert.ok((HOST_CODE_TOOLS as readonly string[]).includes(t), `${t} is blocked as host code`);
  }
  for (const t of HOST_CODE_TOOLS) assert.match(beforeHostCall(t)!.blockReason, new RegExp(`^${t} is not available on osModa: .*shell_exec .*Nothing was run\\.$`));
  for (const t of CONTROL_PLANE_TOOLS) assert.match(beforeHostCall(t)!.blockReason, new RegExp(`^${t} is not available on osModa: .*services\\.osmoda\\.gateway\\. Change them with config_set .*Nothing was changed\\.$`));
  for (const t of ["read", "write", "memory_search", "shell_exec", "config_set"]) assert.equal(beforeHostCall(t), undefined, t);
});

test("contracts.tools equals the registered set, and register() is repeatable", () => {
  const a = registered().map((t) => t.name);
  const b = registered().map((t) => t.name);
  assert.deepEqual(a, b);
  assert.equal(new Set(a).size, a.length, "no duplicate names");
  assert.deepEqual([...a].sort(), [...manifest.contracts.tools].sort());
  assert.equal(manifest.id, (entry as any).id);
});

test("every row of toolModules is covered by a gateway test file (coverageOf)", () => {
  const dir = new URL(".", import.meta.url);
  const covered: string[] = [];
  for (const f of readdirSync(dir).filter((f) => f.endsWith(".test.ts"))) {
    for (const m of readFileSync(new URL(f, dir), "utf8").matchAll(/coverageOf\(([^)]*)\)/g)) {
      for (const n of m[1]!.matchAll(/"([^"]+)"/g)) covered.push(n[1]!);
    }
  }
  assert.deepEqual([...new Set(covered)].sort(), Object.keys(toolModules).sort());
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
  assert.deepEqual(
    resolveSettings({ agentdSocket: "/a", watchSocket: "/w", keydSocket: "/k", routinesSocket: "/o", voiceSocket: "/v", meshSocket: "/m", relaySocket: "/r", requestTimeoutSecs: 2, approvalTimeoutSecs: 7, configTree: "/t", memoryDir: "/n" }),
    { agentdSocket: "/a", watchSocket: "/w", keydSocket: "/k", routinesSocket: "/o", voiceSocket: "/v", meshSocket: "/m", relaySocket: "/r", requestTimeoutMs: 2000, approvalTimeoutMs: 7000, configTree: "/t", memoryDir: "/n" },
  );
  assert.deepEqual(Object.keys(manifest.configSchema.properties).sort(), [
    "agentdSocket", "approvalTimeoutSecs", "configTree", "keydSocket", "memoryDir", "meshSocket", "relaySocket", "requestTimeoutSecs", "routinesSocket", "voiceSocket", "watchSocket",
  ]);
  // Every daemon a tool can call has its socket setting, with a default and in the schema.
  for (const key of Object.values(DAEMONS)) {
    assert.equal(typeof DEFAULT_SETTINGS[key], "string", key);
    assert.ok(manifest.configSchema.properties[key], key);
  }
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
  ["shell_exec", { command: "wc -l", stdin: "a\nb\n" }, []],
  ["shell_exec", { command: "cat", stdin: "x".repeat(524289) }, ["stdin: "]],
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
  ["config_append", { path: "environment.systemPackages", nix: "pkgs.htop", reason: "r" }, []],
  ["config_append", { path: "networking.firewall.allowedTCPPorts", value: 443, file: "configuration.nix", reason: "r", approval: "t" }, []],
  ["config_append", { path: "environment.systemPackages", nix: "", reason: "r" }, ["nix: must not have fewer than 1 characters"]],
  ["config_remove", { path: "environment.systemPackages", nix: "pkgs.htop", reason: "r" }, []],
  ["config_remove", { path: "x y", nix: "pkgs.htop" }, ["path: must match pattern", 'missing required field(s) ["reason"]']],
  ["config_status", {}, []],
  ["config_status", { file: "osmoda.nix" }, ['unknown field(s) ["file"]']],
  ["config_commit", { reason: "keep the person's edit" }, []],
  ["config_commit", { reason: "r", approval: "t-1" }, []],
  ["config_commit", {}, ['missing required field(s) ["reason"]']],
  ["config_commit", { reason: "" }, ["reason: must not have fewer than 1 characters"]],
  ["config_commit", { reason: "r", approval: 7 }, ["approval: must be string"]],
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
  ["wallet_create", { chain: "ethereum", label: "ops-hot" }, []],
  ["wallet_create", { chain: "bitcoin", label: "x" }, ["chain: must be one of"]],
  ["wallet_create", { chain: "solana", label: "has space" }, ["label: must match pattern"]],
  ["wallet_create", { chain: "solana", label: "imp", import: { format: "solana_keypair", keypair: [] } }, ['unknown field(s) ["import"]']],
  ["wallet_list", {}, []],
  ["wallet_sign", { wallet_id: "w_0123456789abcdef", payload: { type: "personal_sign", message: "hi" } }, []],
  ["wallet_sign", { wallet_id: "w_0123456789abcdef", payload: { type: "transaction", tx: { nonce: 0, to: "0x3535353535353535353535353535353535353535", gas_limit: "21000", max_fee_per_gas: "1", max_priority_fee_per_gas: "1", value: "1000000000000000000000" } } }, []],
  ["wallet_sign", { wallet_id: "w_0123456789abcdef", payload: { type: "raw_hash", hash: "0x00" } }, ["payload.type: must be one of"]],
  ["wallet_sign", { wallet_id: "w_0123456789abcdef", payload: { type: "transaction", tx: { nonce: -1, to: "0x35", gas_limit: 1 } } }, ["payload.tx.to: must match pattern"]],
  ["wallet_sign", { wallet_id: "nope", payload: { type: "offchain_message", message: "m" } }, ["wallet_id: must match pattern"]],
  ["wallet_send", { wallet_id: "w_0123456789abcdef", to: "0x3535353535353535353535353535353535353535", amount: "1000", nonce: 0, gas_limit: 21000, max_fee_per_gas: "30000000000", max_priority_fee_per_gas: "1" }, []],
  ["wallet_send", { wallet_id: "w_0123456789abcdef", to: "0x3535353535353535353535353535353535353535", amount: 1000 }, ["amount: must be string"]],
  ["wallet_send", { wallet_id: "w_0123456789abcdef", to: "0x3535353535353535353535353535353535353535", amount: "-5" }, ["amount: must match pattern"]],
  ["wallet_send", { wallet_id: "w_0123456789abcdef", to: "0x3535353535353535353535353535353535353535", amount: "1.5" }, ["amount: must match pattern"]],
  ["wallet_send", { wallet_id: "w_0123456789abcdef", to: "not an address", amount: "1" }, ["to: must match pattern"]],
  ["wallet_delete", { wallet_id: "w_0123456789abcdef", approval: "17" }, []],
  ["wallet_delete", {}, ['missing required field(s) ["wallet_id"]']],
  ["wallet_receipt", { kind: "deny", limit: 5 }, []],
  ["wallet_receipt", { kind: "steal" }, ["kind: must be one of"]],
  ["routine_list", { limit: 10 }, []],
  ["routine_list", { limit: 0 }, ["limit: must be >= 1"]],
  ["routine_add", { name: "disk-report", trigger: { type: "cron", schedule: "0 8 * * *", timezone: "Europe/Berlin" }, action: { type: "command", command: ["df", "-h"], timeout_secs: 30 } }, []],
  ["routine_add", { name: "briefing", trigger: { type: "interval", seconds: 60 }, action: { type: "chain", steps: [{ type: "http", method: "GET", path: "/health" }, { type: "prompt", message: "summarise" }] } }, []],
  ["routine_add", { name: "x", trigger: { type: "sometimes" }, action: { type: "prompt", message: "m" } }, ["trigger.type: must be one of"]],
  ["routine_add", { name: "x", trigger: { type: "interval", seconds: 0 }, action: { type: "command", command: ["true"] } }, ["trigger.seconds: must be >= 1", 'action: missing required field(s) ["timeout_secs"]']],
  ["routine_add", { name: "x", trigger: { type: "interval", seconds: 5 }, action: { type: "chain", steps: [{ type: "chain", steps: [] }] } }, ["action.steps.0"]],
  ["routine_add", { name: "a.b", trigger: { type: "event", match: "watch.*" }, action: { type: "prompt", message: "m" } }, ["name: must match pattern"]],
  ["routine_add", { name: "fetch", trigger: { type: "interval", seconds: 60 }, action: { type: "command", command: ["curl", "https://github.com/"], timeout_secs: 30, sandbox: "ring1", capabilities: ["github"], memory_mb: 64 } }, []],
  ["routine_add", { name: "x", trigger: { type: "interval", seconds: 5 }, action: { type: "command", command: ["true"], timeout_secs: 5, sandbox: "ring3" } }, ["action.sandbox: must be one of"]],
  ["routine_remove", { name: "disk-report", reason: "not needed" }, []],
  ["routine_remove", { name: "../x" }, ["name: must match pattern"]],
  ["routine_trigger", { name: "disk-report", payload: { any: ["json"] } }, []],
  ["routine_trigger", {}, ['missing required field(s) ["name"]']],
  ["routine_history", { routine: "disk-report", before_id: 10, limit: 5 }, []],
  ["routine_history", { limit: 5000 }, ["limit: must be <= 1000"]],
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
  for (const name of ["config_append", "config_remove"]) {
    const t = toAgentTool(allTools.find((s) => s.name === name)!, settings);
    await assert.rejects(t.execute("c", { path: "a.b", reason: "r" }), new RegExp(`Invalid arguments for ${name}: give exactly one of \`value\``));
  }
  const fw = toAgentTool(allTools.find((s) => s.name === "file_write")!, settings);
  await assert.rejects(fw.execute("c", { path: "/tmp/x" }), /exactly one of `content`/);
  const se = toAgentTool(allTools.find((s) => s.name === "shell_exec")!, settings);
  await assert.rejects(se.execute("c", { command: "a", argv: ["b"] }), /exactly one of `command`/);
});

test("mesh_peer_send counts a message's bytes on the link as osmoda-mesh does, not its characters", async () => {
  // The same boundary cases as osmoda-mesh's `message::tests::text_limits_are_bytes_on_the_link`.
  assert.equal(MAX_PLAINTEXT, 65519);
  assert.equal(MAX_TEXT_BYTES, 65494);
  const fits = (t: string) => textProblem(t) === undefined;
  const cases: [string, string, boolean][] = [
    ["ASCII at the limit", "a".repeat(65494), true],
    ["ASCII one over", "a".repeat(65495), false],
    ["2-byte é at the limit (32,747 characters)", "é".repeat(32747), true],
    ["2-byte é one byte over", "é".repeat(32747) + "a", false],
    ["3-byte € at the limit less one, plus one ASCII", "€".repeat(21831) + "a", true],
    ["3-byte € one over", "€".repeat(21832), false],
    ["4-byte emoji (2 UTF-16 units) plus two ASCII at the limit", "😀".repeat(16373) + "aa", true],
    ["4-byte emoji one over", "😀".repeat(16373) + "aaa", false],
    ["quotes are escaped: 2 bytes each", '"'.repeat(32747), true],
    ["a quote over", '"'.repeat(32747) + "a", false],
    ["control characters are \\u00XX: 6 bytes", "\u0001".repeat(10915) + "aaaa", true],
    ["a control character over", "\u0001".repeat(10915) + "aaaaa", false],
  ];
  for (const [what, text, ok] of cases) assert.equal(fits(text), ok, what);
  // Far under the characters a character count allowed (65,519), and refused before any daemon.
  assert.ok("😀".repeat(16374).length < 65519);
  assert.match(textProblem("é".repeat(32748))!, /^`message` is 65521 bytes on the link/);
  assert.match(textProblem("a\uD800b")!, /lone UTF-16 surrogate/);
  assert.equal(textProblem("😀"), undefined);
  const settings = { ...DEFAULT_SETTINGS, meshSocket: "/nonexistent/m.sock" };
  const send = toAgentTool(allTools.find((s) => s.name === "mesh_peer_send")!, settings);
  await assert.rejects(send.execute("c", { peer: "beta", message: "😀".repeat(16374) }), (e: any) => {
    assert.equal(e.name, "ToolInputError");
    assert.match(e.message, /^Invalid arguments for mesh_peer_send: `message` is 65521 bytes on the link/);
    return true;
  });
  // The schema no longer counts characters: the byte rule is the only bound.
  const spec = allTools.find((s) => s.name === "mesh_peer_send")!;
  assert.equal((spec.parameters as any).properties.message.maxLength, undefined);
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
  // osmoda-keyd's shape: the ticket object under `approval_required`.
  check(403, { error: "above the approval threshold", detail: { kind: "approval_required", ticket: { id: "7", effect: ["wallet.send: 5 wei"] } } }, "ToolAuthorizationError", /A person must approve/);
  check(403, { error: "denied: recipient", detail: { kind: "denied", reason: "recipient" } }, "ToolInputError", /refused config_set a\.b: denied: recipient/);
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

test("approvals: a requester's ids reach agentd's relay in its characters, distinct ids kept distinct", async () => {
  const { relayId } = await import("../src/approvals.ts");
  for (const [id, want] of [
    ["telegram", "telegram"],
    ["alice!alice@127.0.0.1", "alice+21alice@127.0.0.1"], // IRC's nick!user@host
    ["a+b", "a+2Bb"],
    ["a+2Bb", "a+2B2Bb"],
    ["é x", "+C3+A9+20x"],
    ["user:1/#c_-.", "user:1/#c_-."],
  ]) assert.equal(relayId(id!), want, id);
});

test("approvals in the chat: only an owner with a requester is asked, for exactly the refused call", async () => {
  const { beforeBridgeCall, callKey, describe, remember, ticketOf } = await import("../src/approvals.ts");
  const settings = { ...DEFAULT_SETTINGS, relaySocket: "/nonexistent/relay.sock", approvalTimeoutMs: 5000 };
  const params = { path: "services.openssh.enable", value: false, reason: "r" };
  // Key: argument order and `approval` do not matter; any other difference does.
  assert.equal(callKey("config_set", params), callKey("config_set", { reason: "r", value: false, path: "services.openssh.enable", approval: "x" }));
  assert.notEqual(callKey("config_set", params), callKey("config_set", { ...params, value: true }));
  assert.notEqual(callKey("config_set", params), callKey("config_unset", params));
  assert.equal(ticketOf({ error: "no ticket" }), undefined);
  // osmoda-keyd's 403: the ticket object carries the effect and expiry.
  assert.deepEqual(
    ticketOf({ kind: "approval_required", ticket: { id: "9", effect: ["wallet.send: 5 wei to 0x35"], expires_at: "2026-01-01T00:00:00Z", operation: {} }, hint: "h" }),
    { ticket: "9", effect: ["wallet.send: 5 wei to 0x35"], approve: "agentctl approvals approve 9", expiresAt: "2026-01-01T00:00:00Z" },
  );
  assert.equal(ticketOf({ kind: "approval_required", ticket: { effect: [] } }), undefined);
  const t = ticketOf({ ticket: "t-1", effect: ["disables service openssh: services.openssh.enable true → false"], approve: "agentctl approvals approve t-1" })!;
  // Nothing remembered yet: no opinion.
  assert.equal(beforeBridgeCall(settings, "config_set", params, { channel: "telegram", senderIsOwner: true }), undefined);
  remember(callKey("config_set", params), t);
  const none = beforeBridgeCall(settings, "config_set", params, undefined) as any;
  assert.equal(none.block, true);
  assert.match(none.blockReason, /no requester.*agentctl approvals approve t-1/);
  const stranger = beforeBridgeCall(settings, "config_set", params, { channel: "telegram", senderId: "9", senderIsOwner: false }) as any;
  assert.equal(stranger.block, true);
  assert.match(stranger.blockReason, /not the owner/);
  // Missing owner flag is unproven, not true.
  assert.equal((beforeBridgeCall(settings, "config_set", params, { channel: "telegram" }) as any).block, true);
  // A call that already names a ticket, or a different call, is left alone.
  assert.equal(beforeBridgeCall(settings, "config_set", { ...params, approval: "t-1" }, { channel: "telegram", senderIsOwner: true }), undefined);
  assert.equal(beforeBridgeCall(settings, "config_set", { ...params, value: true }, { channel: "telegram", senderIsOwner: true }), undefined);
  const ask = beforeBridgeCall(settings, "config_set", params, { channel: "telegram", senderId: "42", senderIsOwner: true }) as any;
  assert.deepEqual(ask.params, { ...params, approval: "t-1" });
  assert.deepEqual(ask.requireApproval.allowedDecisions, ["allow-once", "deny"]);
  assert.equal(ask.requireApproval.timeoutMs, 5000);
  assert.match(ask.requireApproval.description, /disables service openssh: services\.openssh\.enable true → false.*ticket t-1/);
  assert.ok(describe("config_set", { ...t, effect: ["x".repeat(2000)] }).length <= 512);
  // osmoda-keyd puts every field a person must see in the first 362 characters of its words
  // (`SHOWN` in crates/osmoda-keyd/src/words.rs): with agentd's 32-character ticket ids, that
  // much survives the cut for its longest tool, in one prompt of at most 500 characters.
  const id = "0123456789abcdef".repeat(2);
  const words = Array.from({ length: 1024 }, (_, i) => String.fromCharCode(65 + (i % 26))).join("");
  for (const tool of ["wallet_send", "wallet_sign", "wallet_delete"]) {
    const shown = describe(tool, { ticket: id, effect: [words], approve: `agentctl approvals approve ${id}`, expiresAt: "" });
    assert.ok(shown.length <= 500 && shown.includes(words.slice(0, 362)), `${tool}: ${shown}`);
  }
  // A timeout decides nothing and keeps asking; a decision relays (here: to a missing socket).
  assert.equal(ask.requireApproval.onResolution("timeout"), undefined);
  assert.ok(beforeBridgeCall(settings, "config_set", params, { channel: "telegram", senderIsOwner: true }));
  await assert.rejects(ask.requireApproval.onResolution("allow-once"), /ENOENT|relay/);
  assert.equal(beforeBridgeCall(settings, "config_set", params, { channel: "telegram", senderIsOwner: true }), undefined);
});

test("built-in file tools: the configuration tree and /etc/nixos are fenced, through symlinks and patches", async () => {
  const { beforeFileCall, targets } = await import("../src/builtin.ts");
  const { mkdtempSync, mkdirSync, symlinkSync } = await import("node:fs");
  const { tmpdir } = await import("node:os");
  const { join } = await import("node:path");
  const dir = mkdtempSync(join(tmpdir(), "osmoda-fence-"));
  const tree = join(dir, "tree");
  mkdirSync(tree);
  symlinkSync(tree, join(dir, "link"));
  const settings = { ...DEFAULT_SETTINGS, configTree: tree };
  const blocked = (tool: string, p: Record<string, unknown>, derived?: string[]) => beforeFileCall(settings, tool, p, derived)?.blockReason;
  assert.match(blocked("write", { path: join(tree, "configuration.nix"), content: "" })!, /config_set/);
  assert.match(blocked("write", { path: join(tree, "new", "deep.nix") })!, /configuration tree/);
  assert.match(blocked("edit", { file_path: join(dir, "link", "osmoda.nix") })!, /config_set/);
  assert.match(blocked("write", { path: "/etc/nixos/configuration.nix" })!, /\/etc\/nixos/);
  assert.match(blocked("apply_patch", { input: `*** Begin Patch\n*** Update File: ${join(tree, "osmoda.nix")}\n@@\n*** End Patch` })!, /config_set/);
  assert.match(blocked("apply_patch", { input: "" }, [join(tree, "a.nix")])!, /config_set/);
  assert.equal(blocked("write", { path: join(dir, "tree-not", "x") }), undefined);
  assert.equal(blocked("write", { path: join(dir, "notes.txt") }), undefined);
  assert.deepEqual(targets({ path: "/a", input: "*** Add File: /b\n*** Move to: /c" }, ["/d"]), ["/a", "/b", "/c", "/d"]);
  // Relative paths are the agent's workspace's: judged there, never against this process's cwd.
  const inWs = (tool: string, p: Record<string, unknown>, ws: string | undefined) => beforeFileCall(settings, tool, p, undefined, ws)?.blockReason;
  assert.match(inWs("write", { path: "tree/osmoda.nix" }, dir)!, /configuration tree/);
  assert.match(inWs("edit", { file_path: "../tree/x.nix" }, join(dir, "ws"))!, /config_set/);
  assert.match(inWs("apply_patch", { input: "*** Update File: link/a.nix" }, dir)!, /config_set/);
  assert.equal(inWs("write", { path: "notes/todo.txt" }, dir), undefined);
  assert.match(inWs("write", { path: "notes/todo.txt" }, undefined)!, /relative path cannot be checked.*absolute path/);
  assert.deepEqual(targets({ path: "a/b" }, ["c"], "/ws"), ["/ws/a/b", "/ws/c"]);
});

test("memory corpus: registered once per register(), without I/O; only osModa's note paths are its own", async () => {
  registered({ agentdSocket: "/nonexistent/agentd.sock" });
  assert.equal(supplements.length, 1);
  assert.equal(typeof supplements[0].search, "function");
  assert.equal(typeof supplements[0].get, "function");
  // The prompt line only where memory_search is offered, and not to sandboxed sessions.
  assert.equal(prompts.length, 1);
  assert.match(prompts[0]({ availableTools: new Set(["memory_search", "memory_get"]) }).join("\n"), /memory_search with corpus="all" finds them \(paths starting osmoda\/\)/);
  assert.deepEqual(prompts[0]({ availableTools: new Set(["memory_get"]) }), []);
  assert.deepEqual(prompts[0]({ availableTools: new Set(["memory_search"]), sandboxed: true }), []);
  // check(lookup, expected): the note it names, or undefined when the lookup is not osModa's.
  const check = (lookup: string, expected: unknown) => assert.deepEqual(parseLookup(lookup), expected, lookup);
  check("osmoda/MEMORY.md", { rel: "MEMORY.md", dir: "", name: "MEMORY.md" });
  check("osmoda/memory/2026-11-30.md", { rel: "memory/2026-11-30.md", dir: "memory", name: "2026-11-30.md" });
  check("osmoda/memory/2026-11-30.md#L4", { rel: "memory/2026-11-30.md", dir: "memory", name: "2026-11-30.md", fromLine: 4, lineCount: 1 });
  check("osmoda/memory/2026-11-30.md#L4-L9", { rel: "memory/2026-11-30.md", dir: "memory", name: "2026-11-30.md", fromLine: 4, lineCount: 6 });
  for (const notOurs of [
    "MEMORY.md", "memory/2026-11-30.md", "/var/lib/osmoda/memory/MEMORY.md", "/etc/passwd", "osmoda/", "osmoda/../etc/passwd",
    "osmoda/memory/../MEMORY.md", "osmoda/memory/../../agentd/ledger.db", "osmoda/memory/..", "osmoda/memory/.md", "osmoda/memory/.hidden.md",
    "osmoda/memory/sub/x.md", "osmoda/memory/x.txt", "osmoda/MEMORY.md/x", "osmoda//MEMORY.md", "osmoda/memory/a\\b.md", "osmoda/memory/a\nb.md",
    "osmoda/memory/a\u0000.md", "osmoda/.index.sqlite", "osmoda/MEMORY.md#L0", "osmoda/MEMORY.md#L5-L2", "osmoda/MEMORY.md#Lx", "OSMODA/MEMORY.md", " osmoda/MEMORY.md",
  ]) check(notOurs, undefined);
  // Not ours, or a sandboxed session: nothing, before any socket (this one does not exist).
  const s = memoryCorpusSupplement({ ...DEFAULT_SETTINGS, agentdSocket: "/nonexistent/agentd.sock" });
  assert.equal(await s.get({ lookup: "/etc/passwd" }), null);
  assert.equal(await s.get({ lookup: "osmoda/MEMORY.md", sandboxed: true }), null);
  assert.deepEqual(await s.search({ query: "nginx", sandboxed: true }), []);
  assert.deepEqual(await s.search({ query: "  " }), []);
  await assert.rejects(s.search({ query: "x".repeat(2001) }), /at most 2000 characters/);
  // Ours, agentd down: the bridge's clear error, naming the socket.
  await assert.rejects(s.search({ query: "nginx" }), /agentd is not reachable at \/nonexistent\/agentd\.sock/);
  await assert.rejects(s.get({ lookup: "osmoda/MEMORY.md" }), /agentd is not reachable at \/nonexistent\/agentd\.sock/);
});

test("memory corpus: memory_get reads a note in pieces (split UTF-8 included) and returns whole lines within memory-core's bounds", async () => {
  // A stand-in for agentd's /fs/list and /fs/read that answers in 7-byte pieces, whatever the
  // limit, so one excerpt takes many reads (the gateway test reads the real agentd).
  const note = ["# Notes", "## café 😀 incident", "line three ünïcödé", "x".repeat(13_000), "last"].join("\n") + "\n";
  const bytes = Buffer.from(note, "utf8");
  const dir = mkdtempSync(join(tmpdir(), "osmoda-corpus-unit-"));
  const socket = join(dir, "agentd.sock");
  let reads = 0;
  const server = createServer((req, res) => {
    const u = new URL(req.url!, "http://x");
    const path = u.searchParams.get("path")!;
    res.setHeader("content-type", "application/json");
    if (u.pathname === "/fs/list") {
      res.end(JSON.stringify({ path, entries: [{ name: "MEMORY.md", kind: "file", size: bytes.length, mode: 0o600 }], truncated: false }));
      return;
    }
    reads++;
    const offset = Number(u.searchParams.get("offset"));
    const piece = bytes.subarray(offset, offset + 7);
    const text = piece.toString("utf8");
    const utf8 = Buffer.from(text, "utf8").equals(piece);
    res.end(JSON.stringify({ path, size: bytes.length, offset, bytes: piece.length, truncated: offset + piece.length < bytes.length, encoding: utf8 ? "utf8" : "base64", content: utf8 ? text : piece.toString("base64") }));
  });
  await new Promise<void>((r) => server.listen(socket, r));
  try {
    const s = memoryCorpusSupplement({ ...DEFAULT_SETTINGS, agentdSocket: socket, memoryDir: "/mem" });
    const lines = note.split("\n");
    const two = await s.get({ lookup: "osmoda/MEMORY.md", fromLine: 2, lineCount: 2 });
    assert.equal(two!.content, `${lines[1]}\n${lines[2]}`);
    assert.deepEqual([two!.fromLine, two!.lineCount, two!.truncated, two!.nextFrom, two!.title], [2, 2, true, 4, "café 😀 incident"]);
    assert.equal(two!.sourcePath, "/mem/MEMORY.md");
    // Only as far as the lines asked for: far fewer reads than the whole file would take.
    assert.ok(reads < bytes.length / 7 / 10, `${reads} reads`);
    // A line longer than the budget alone: cut, no continuation; the rest of a long window stops before it.
    const long = await s.get({ lookup: "osmoda/MEMORY.md", fromLine: 4, lineCount: 1 });
    assert.equal(long!.content.length, 12_000);
    assert.deepEqual([long!.truncated, long!.nextFrom], [true, undefined]);
    const window = await s.get({ lookup: "osmoda/MEMORY.md#L2-L5" });
    assert.equal(window!.content, `${lines[1]}\n${lines[2]}`);
    assert.deepEqual([window!.lineCount, window!.nextFrom], [2, 4]);
    const all = await s.get({ lookup: "osmoda/MEMORY.md" });
    assert.equal(all!.lineCount, 3);
    const tail = await s.get({ lookup: "osmoda/MEMORY.md", fromLine: 5 });
    assert.deepEqual([tail!.content, tail!.lineCount, tail!.truncated], ["last", 1, undefined]);
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});

test("config_status and config_commit: the hand edits listed; a destructive commit carries the gate's ticket flow", async () => {
  const { beforeBridgeCall } = await import("../src/approvals.ts");
  const dir = mkdtempSync(join(tmpdir(), "osmoda-drift-"));
  const socket = join(dir, "agentd.sock");
  const bodies: any[] = [];
  let clean = false;
  const rev = "a".repeat(40);
  const server = createServer((req, res) => {
    let raw = "";
    req.on("data", (c) => (raw += c));
    req.on("end", () => {
      res.setHeader("content-type", "application/json");
      if (req.url === "/config/status") {
        res.end(JSON.stringify(clean ? { clean: true, changes: [] } : { clean: false, changes: [{ path: "configuration.nix", kind: "modified" }, { path: "extra.nix", kind: "new" }] }));
      } else if (req.url === "/config/commit") {
        const b = JSON.parse(raw);
        bodies.push(b);
        if (b.approval !== "t-7") {
          res.statusCode = 403;
          res.end(JSON.stringify({ error: "approval required: disables service openssh", detail: { kind: "approval_required", ticket: "t-7", effect: ["disables service openssh: services.openssh.enable true → false"], approve: "agentctl approvals approve t-7", operation: { gate: "config" } } }));
        } else {
          res.end(JSON.stringify({ generation: { rev, short: rev.slice(0, 12), message: b.reason }, requested_event: 4, event_id: 5 }));
        }
      } else if (req.url === `/config/generation/${rev}`) {
        res.end(JSON.stringify({ generation: { rev }, files: [{ path: "configuration.nix" }], patch: "-  services.openssh.enable = true;\n+  services.openssh.enable = false;" }));
      } else {
        res.statusCode = 404;
        res.end(JSON.stringify({ error: `no route ${req.url}` }));
      }
    });
  });
  await new Promise<void>((r) => server.listen(socket, r));
  try {
    const settings = { ...DEFAULT_SETTINGS, agentdSocket: socket };
    const status = toAgentTool(allTools.find((s) => s.name === "config_status")!, settings);
    const dirty = await status.execute("s", {});
    assert.match(dirty.content[0]!.text, /^2 uncommitted change\(s\) made by hand:\nchange\s+file\nmodified\s+configuration\.nix\nnew\s+extra\.nix\n.*config_commit/s);
    clean = true;
    assert.match((await status.execute("s", {})).content[0]!.text, /^the tree is clean/);

    const commit = toAgentTool(allTools.find((s) => s.name === "config_commit")!, settings);
    const params = { reason: "the owner keeps sshd off" };
    await assert.rejects(commit.execute("c", params), (e: any) => {
      assert.equal(e.name, "ToolAuthorizationError");
      assert.match(e.message, /agentd refused config_commit: approval required.*nothing was changed.*call config_commit again with exactly the same arguments.*agentctl approvals approve t-7/s);
      return true;
    });
    // The same call again from the owner in a chat becomes the approval prompt with the ticket.
    const ask = beforeBridgeCall(settings, "config_commit", params, { channel: "webchat", senderIsOwner: true }) as any;
    assert.deepEqual(ask.params, { ...params, approval: "t-7" });
    assert.match(ask.requireApproval.description, /^config_commit would: disables service openssh/);
    const landed = await commit.execute("c", ask.params);
    assert.match(landed.content[0]!.text, /^recorded the hand edits: committed generation aaaaaaaaaaaa .*"the owner keeps sshd off"\n.*files: configuration\.nix[\s\S]*services\.openssh\.enable = false;[\s\S]*safe_switch_begin/);
    assert.deepEqual(bodies, [params, { ...params, approval: "t-7" }]);
  } finally {
    server.close();
    rmSync(dir, { recursive: true, force: true });
  }
});
