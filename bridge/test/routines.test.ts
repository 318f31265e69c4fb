// The routine tools through the real gateway, on a real osmoda-routines reading the routines.json
// SafeSwitch renders from the config tree: adding and removing a routine are commits applied by
// SafeSwitch, runs are recorded. A `prompt` routine asks the agent through the same gateway
// (token from OPENCLAW_GATEWAY_TOKEN, URL rendered from services.osmoda.gateway), and the
// scripted model's turn, tool call included, is the run's output.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";

import { Stack, ToolCalls, coverageOf, renderGatewayConfig, until } from "./harness.ts";
import { startChatGateway } from "./chat.ts";
import { ScriptedModel, lastToolResult, type ChatRequest, type Step } from "./model.ts";

const stack = new Stack();

/** Everything a refused routine call could change: the tree, the routines in force, the switches. */
async function snapshot() {
  const list = (await stack.routines("GET", "/routine/list")).body.map((r: any) => r.name);
  const switches = await stack.watch("GET", "/switch/history");
  return { head: stack.git("rev-parse", "HEAD"), list, switches: switches.length };
}
const calls = new ToolCalls(stack, snapshot);

const BRIEFING = "Write the morning briefing";
/** The agent's side of a prompt routine: look at the machine, then answer. */
function script(req: ChatRequest): Step {
  const asked = JSON.stringify(req.messages.find((m) => m.role === "user")?.content ?? "");
  if (!asked.includes(BRIEFING)) return { text: "not a briefing" };
  const result = lastToolResult(req);
  if (result === undefined) return { tool: "system_health", args: {} };
  return { text: `BRIEFING: ${result.split("\n")[0]}` };
}
const model = new ScriptedModel(script);

async function switchSettles(id: number) {
  return until(`switch ${id} to settle`, 120_000, async () => {
    const s = await stack.watch("GET", `/switch/status/${id}`);
    return ["committed", "rolled-back", "failed"].includes(s.state) && s;
  });
}

async function listed(name: string, present: boolean) {
  await until(`${name} ${present ? "listed" : "gone"}`, 30_000, async () =>
    (await stack.routines("GET", "/routine/list")).body.some((r: any) => r.name === name) === present,
  );
}

async function runEnds(id: number) {
  return until(`run ${id} to end`, 120_000, async () => {
    const h = (await stack.routines("GET", "/routine/history?limit=1000")).body;
    const r = h.find((x: any) => x.id === id);
    return r && !["queued", "running"].includes(r.status) && r;
  });
}

describe("routine tools through the real gateway", { timeout: 600_000 }, () => {
  before(async () => {
    await model.start();
    const port = await stack.reservePort();
    await stack.startDaemons({ routines: true });
    // The gateway is configuration too: routines.json then names its URL for prompt actions.
    await stack.agentd("POST", "/config/set", { path: "services.osmoda.gateway", value: { enable: true, port }, reason: "run the OpenClaw gateway" });
    await stack.applyHead();
    await startChatGateway(stack, model);
  });
  after(async () => {
    await stack.stop();
    await model.stop();
  });

  it("the rendered gateway config enables the endpoint prompt routines use, only while routines run", () => {
    const on = renderGatewayConfig({ gateway: { port: 1 } }, "/bridge", stack.dir);
    assert.equal(on.gateway.http.endpoints.chatCompletions.enabled, true);
    const off = renderGatewayConfig({ routines: { enable: false }, gateway: { port: 1 } }, "/bridge", stack.dir);
    assert.equal(off.gateway.http, undefined);
  });

  it("routine_list shows the routines in force (the module's heartbeat ones)", async () => {
    const l = await calls.ok("routine_list", {});
    for (const n of ["health-snapshot", "failed-units", "log-scan", "morning-briefing"]) assert.ok(l.details.some((r: any) => r.name === n), n);
    assert.match(l.text, /health-snapshot\s+on\s+every 300s\s+http/);
    await calls.refused("routine_list", { limit: 0 }, /limit: must be >= 1/);
  });

  it("routine_add declares the routine (a commit) and applies it; routine_trigger runs it; routine_history shows the run", async () => {
    const before = stack.git("rev-parse", "HEAD");
    const r = await calls.ok("routine_add", { name: "disk-report", trigger: { type: "interval", seconds: 86400 }, action: { type: "command", command: ["df", "-P", "/"], timeout_secs: 30 }, ttl_secs: 1, reason: "report the disk daily" });
    const rev = r.details.config.generation.rev;
    assert.notEqual(rev, before);
    assert.equal(stack.git("rev-parse", "HEAD"), rev);
    assert.match(stack.git("log", "-1", "--format=%s"), /report the disk daily/);
    assert.match(r.text, /^routine disk-report declared in generation \w+ \([0-9a-f]{40}\), ledger event \d+\.\nApplying it: switch \d+/);
    assert.equal((await switchSettles(r.details.switch.id)).state, "committed");
    await listed("disk-report", true);

    const t = await calls.ok("routine_trigger", { name: "disk-report", payload: { why: "test" } });
    assert.match(t.text, /^routine disk-report queued as run \d+/);
    const run = await runEnds(t.details.run_id);
    assert.equal(run.status, "ok", JSON.stringify(run));
    assert.equal(run.trigger, "manual");
    assert.match(run.output, /Filesystem/);
    const h = await calls.ok("routine_history", { routine: "disk-report" });
    assert.equal(h.details[0].id, t.details.run_id);
    assert.match(h.text, new RegExp(`${t.details.run_id}\\s+disk-report\\s+manual\\s+ok\\s+0`));
    await until("the run in the ledger", 30_000, async () =>
      (await stack.agentd("GET", "/events/log?type=routine.run.finished&limit=1000")).some((e: any) => JSON.parse(e.payload).run_id === t.details.run_id),
    );

    await calls.refused("routine_add", { name: "bad", trigger: { type: "cron", schedule: "61 * * * *" }, action: { type: "command", command: ["true"], timeout_secs: 5 } }, /osmoda-routines refused routine_add bad: .*schedule/);
    await calls.refused("routine_add", { name: "x", trigger: { type: "sometimes" }, action: { type: "prompt", message: "m" } }, /trigger\.type: must be one of/);
    await calls.refused("routine_trigger", { name: "no-such-routine" }, /osmoda-routines refused routine_trigger no-such-routine \(not found\)/);
    await calls.refused("routine_history", { limit: 5000 }, /limit: must be <= 1000/);
  });

  it("a prompt routine asks the agent through the gateway; the turn (with its tool call) is the run's output", async () => {
    const r = await calls.ok("routine_add", { name: "briefing", trigger: { type: "cron", schedule: "0 8 * * *" }, action: { type: "prompt", message: BRIEFING, timeout_secs: 120 }, ttl_secs: 1 });
    assert.equal((await switchSettles(r.details.switch.id)).state, "committed");
    await listed("briefing", true);
    const asked = model.requests.length;
    const t = await calls.ok("routine_trigger", { name: "briefing" });
    const run = await runEnds(t.details.run_id);
    assert.equal(run.status, "ok", JSON.stringify(run));
    assert.match(run.output, /^BRIEFING: CPU [\d.]+% of \d+ cores/);
    // The model was asked the routine's message and called a bridge tool in that turn.
    const turn = model.requests.slice(asked);
    assert.ok(turn.some((q) => JSON.stringify(q.messages).includes(BRIEFING)));
    assert.ok(turn.some((q) => q.messages.some((m) => m.role === "tool")), "system_health ran inside the routine's turn");
  });

  it("routine_remove removes a routine of the tree as a generation; a default routine is refused with what to do", async () => {
    const before = stack.git("rev-parse", "HEAD");
    const r = await calls.ok("routine_remove", { name: "disk-report", reason: "not needed any more" });
    assert.notEqual(r.details.config.generation.rev, before);
    assert.doesNotMatch(stack.git("show", "HEAD:osmoda.nix"), /disk-report/);
    // /routine/remove takes no TTL: end the switch's probing (the module's default TTL) early.
    const id = r.details.switch.id;
    await until("probing", 60_000, async () => ["probing", "committed"].includes((await stack.watch("GET", `/switch/status/${id}`)).state));
    await stack.watch("POST", `/switch/commit/${id}`).catch(() => {});
    assert.equal((await switchSettles(id)).state, "committed");
    await listed("disk-report", false);
    await calls.refused("routine_remove", { name: "health-snapshot" }, /osmoda-routines refused routine_remove health-snapshot \(conflicts .*\): .*enable = false/);
    await calls.refused("routine_remove", { name: "../x" }, /name: must match pattern/);
  });

  it("every tool of routines.ts was invoked successfully and refused bad input", () => {
    calls.assertCovered(coverageOf("routines"));
  });
});
