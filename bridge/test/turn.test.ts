// One full agent turn through the real gateway: a person asks in English, a scripted
// OpenAI-compatible model on loopback picks the tools, the bridge calls the daemons, and the
// change lands as a commit in the tree applied by SafeSwitch. The test reads git log and the ledger.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { Stack, renderGatewayConfig, until } from "./harness.ts";
import { ScriptedModel, lastToolResult, type ChatRequest, type Step } from "./model.ts";
import { allTools } from "../src/tools/index.ts";

const stack = new Stack();

// The model's plan for "watch nginx and restart it if it fails": declare a watcher (a commit
// that osmoda-watch applies with a SafeSwitch), follow the switch until it is probing, commit
// it, then answer. It reads the tool results' text, as a real model would.
function script(req: ChatRequest): Step {
  if (model.requests.length > 8) return { text: "giving up after 8 steps" };
  const result = lastToolResult(req);
  if (result === undefined) {
    return { tool: "watcher_add", args: { name: "nginx", check: { type: "systemd", unit: "nginx.service" }, interval_secs: 3600, actions: ["restart"], ttl_secs: 3600, reason: "watch nginx and restart it if it fails" } };
  }
  const m = /switch (\d+): generation \w+ is ([a-z-]+)/.exec(result);
  if (!m) return { text: `I could not apply it: ${result.slice(0, 300)}` };
  const [, id, state] = m;
  if (state === "probing") return { tool: "safe_switch_commit", args: { id: Number(id) } };
  if (state === "committed") return { text: `Done: nginx is watched and restarted when it fails (switch ${id} committed).` };
  if (["rolled-back", "failed"].includes(state!)) return { text: `The switch ${state}.` };
  return { tool: "safe_switch_status", args: { id: Number(id) } };
}

const model = new ScriptedModel(script);

before(async () => {
  await model.start();
  await stack.startDaemons();
  await stack.agentd("POST", "/config/unset", { path: "services.osmoda.watch.watchers.sshd", reason: "no systemd in the test" });
  // The config the NixOS module renders (lib/), plus what only a test has: a model provider on
  // loopback and the OpenAI-compatible endpoint that starts a turn.
  await stack.startGateway({
    render: (pluginDir, port) => {
      const c = renderGatewayConfig(
        { agentd: { socket: stack.agentdSocket }, watch: { socket: stack.watchSocket }, gateway: { port } },
        pluginDir,
        stack.dir,
      );
      assert.deepEqual(c.tools.allow, ["group:plugins", "group:fs", "group:memory"]);
      assert.ok(c.tools.deny.includes("group:runtime") && c.tools.deny.includes("gateway"), JSON.stringify(c.tools));
      c.gateway.http = { endpoints: { chatCompletions: { enabled: true } } };
      c.models = {
        mode: "merge",
        providers: {
          scripted: {
            baseUrl: `http://127.0.0.1:${model.port}/v1`,
            apiKey: "scripted-model",
            api: "openai-completions",
            models: [{ id: "turns", name: "Scripted turns", reasoning: false, input: ["text"], cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }, contextWindow: 1000000, maxTokens: 4096 }],
          },
        },
      };
      c.agents = { defaults: { model: { primary: "scripted/turns" } } };
      return c;
    },
  });
});
after(async () => {
  await stack.stop();
  await model.stop();
});

test("'watch nginx and restart it if it fails' → watcher_add → a commit → SafeSwitch committed", { timeout: 120_000 }, async () => {
  const head = stack.git("rev-parse", "HEAD");
  const res = await fetch(`http://127.0.0.1:${stack.port}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${stack.token}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "openclaw", messages: [{ role: "user", content: "watch nginx and restart it if it fails" }] }),
  });
  const body: any = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  // What the gateway offered the model with the rendered config: the bridge's tools, not the
  // built-in host exec.
  const offered = (model.requests[0]!.tools ?? []).map((t) => t.function.name);
  for (const t of ["watcher_add", "safe_switch_begin", "shell_exec", "config_set"]) assert.ok(offered.includes(t), `${t} offered: ${offered}`);
  for (const t of ["exec", "process"]) assert.ok(!offered.includes(t), `${t} must not be offered`);
  // Nothing beyond the allowlist: the bridge's tools, OpenClaw's file tools, and memory-core's
  // (memory_search, memory_get, and `intent`, its standing reminders) — the only other plugin.
  const allowed = new Set([...allTools.map((t) => t.name), "ls", "read", "write", "edit", "apply_patch", "memory_search", "memory_get", "intent"]);
  assert.deepEqual(offered.filter((t) => !allowed.has(t)), [], `offered beyond the allowlist: ${offered}`);

  assert.match(body.choices[0].message.content, /Done: nginx is watched .*committed/);

  // The change: one commit declaring the watcher, deployed by a committed switch.
  const log = stack.git("log", "--format=%H %s", `${head}..HEAD`).split("\n");
  assert.equal(log.length, 1, log.join("\n"));
  const rev = log[0]!.split(" ")[0]!;
  const diff = stack.git("show", rev, "--", "osmoda.nix");
  for (const line of ['watch.watchers.nginx = {', 'unit = "nginx.service";', 'actions = [ "restart" ];']) {
    assert.ok(diff.split("\n").some((l) => l.startsWith("+") && l.includes(line)), `${line} added in:\n${diff}`);
  }
  assert.match(stack.git("tag", "--points-at", rev), /deployed/);
  const history = await stack.watch("GET", "/switch/history");
  const sw = history.find((s: any) => s.generation === rev);
  assert.equal(sw.state, "committed");
  const ledger = await stack.agentd("GET", "/events/log?limit=1000");
  assert.ok(ledger.some((e: any) => e.type === "config.committed" && e.payload.includes(rev)), ledger.map((e: any) => e.type).join(","));
  // osmoda-watch delivers its events through a spool, so the ledger may trail the switch state.
  await until("watch.switch.committed in the ledger", 30_000, async () =>
    (await stack.agentd("GET", "/events/log?type=watch.switch.committed&limit=1000")).some((e: any) => e.payload.includes(rev)),
  );
  const watchers = await stack.watch("GET", "/watcher/list");
  assert.ok(watchers.some((w: any) => w.name === "nginx" && w.actions.includes("restart")));
});
