// The real gateway with the bridge lists osModa's skills from the agent workspace, and one
// scripted agent turn per skill family is driven by its skill: the gateway (config rendered by
// lib/, the workspace installed by scripts/install-workspace.sh) lists the skills in the model's
// prompt; the model reads the skill's SKILL.md with OpenClaw's `read` tool and calls the tools it
// prescribes, in its order, against the real agentd, osmoda-watch and osmoda-routines:
// - configuration (natural-language-config): config_get → config_set → config_diff →
//   safe_switch_begin (health checks) → safe_switch_status → safe_switch_commit;
// - self-healing: a web app that keeps dropping → incident_create → service_status →
//   journal_logs → system_health → network_info → watcher_list → config_log → event_log →
//   watcher_add (its own SafeSwitch) → safe_switch_status → watcher_list → incident_step;
// - briefing (morning-briefing): system_health → system_query → watcher_list → journal_logs →
//   config_log → event_log → routine_history, then one message built from what they returned.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { join, resolve } from "node:path";

import { Stack, bridgeDir, nodeBin, openclawCli, until } from "./harness.ts";
import { parse as parseYaml } from "yaml";
import { startChatGateway, turn } from "./chat.ts";
import { ScriptedModel, lastToolResult, type ChatRequest, type Step } from "./model.ts";

const repoDir = resolve(bridgeDir, "..");
const stack = new Stack();
const workspace = join(stack.dir, "workspace");
const skillFile = (name: string) => readFileSync(join(repoDir, "skills", name, "SKILL.md"), "utf8");

/**
 * The current turn as the model sees it in the newest request: the tool calls made since the
 * person's message and their results (so a request the gateway repeats gets the same answer),
 * the script, and the skill text `read` returned.
 */
let called: string[] = [];
let results: string[] = [];
let script: (last: string | undefined, result: string) => Step = () => ({ text: "no script" });
let skillText = "";
let pending = "";
let prompt = "";

function system(req: ChatRequest): string {
  return req.messages.filter((m) => m.role === "system" || m.role === "developer").map((m) => (typeof m.content === "string" ? m.content : JSON.stringify(m.content))).join("\n");
}

const textOf = (c: unknown): string =>
  typeof c === "string" ? c : Array.isArray(c) ? c.map((p: any) => (typeof p === "string" ? p : (p?.text ?? ""))).join("") : JSON.stringify(c);

/** The tool calls and results after the person's message of this turn, in order. */
function turnSoFar(req: ChatRequest): { calls: string[]; results: string[] } {
  const start = req.messages.findLastIndex((m) => m.role === "user" && textOf(m.content).includes(prompt));
  const calls: string[] = [];
  const out: string[] = [];
  for (const m of req.messages.slice(start + 1)) {
    if (m.role === "assistant" && Array.isArray(m.tool_calls)) for (const tc of m.tool_calls as any[]) calls.push(tc.function.name);
    if (m.role === "tool") out.push(textOf(m.content));
  }
  return { calls, results: out };
}

function step(s: Step): Step {
  if ("tool" in s) called.push(s.tool);
  return s;
}

/**
 * A turn driven by skill `name` for the person's message `text`: find the skill in the gateway's
 * `<available_skills>`, read it with the gateway's `read` tool, then let `next` pick each step
 * from the last tool and its result.
 */
async function driveBy(name: string, text: string, next: (last: string | undefined, result: string) => Step): Promise<string> {
  called = [];
  results = [];
  skillText = "";
  pending = name;
  prompt = text;
  script = next;
  return turn(stack, text);
}

const model = new ScriptedModel((req) => {
  ({ calls: called, results } = turnSoFar(req));
  if (results.length !== called.length) return { text: `unexpected conversation: ${called.length} calls, ${results.length} results` };
  // Polling a switch until its TTL ends takes a step per poll.
  if (called.length > 80) return { text: "giving up after 80 steps" };
  if (called.length === 0) {
    const m = new RegExp(`<name>${pending}</name>[\\s\\S]*?<location>([^<]+)</location>`).exec(system(req));
    if (!m) return { text: `${pending} is not among my skills` };
    const read = req.tools?.find((t) => t.function.name === "read");
    if (!read) return { text: "no read tool" };
    const props = Object.keys((read.function.parameters as any)?.properties ?? {});
    const key = props.includes("path") ? "path" : (props.find((p) => /path/i.test(p)) ?? "path");
    return step({ tool: "read", args: { [key]: m[1]!.trim() } });
  }
  if (called[0] === "read") skillText = results[0] ?? "";
  return step(script(called[called.length - 1], results[results.length - 1] ?? lastToolResult(req) ?? ""));
});

/** Calls in order with immediate repeats folded (polling a switch is one step). */
const folded = () => called.filter((t, i) => i === 0 || t !== called[i - 1]);

/** Asserts that `file` names `tools` in this order (their first mentions as a tool call, `` `name``). */
function namesInOrder(file: string, tools: string[]): void {
  const at = tools.map((t) => file.indexOf(`\`${t}`));
  assert.ok(at.every((i, n) => i >= 0 && (n === 0 || i > at[n - 1]!)), `the skill names ${tools.join(" → ")} in order: ${JSON.stringify(at)}`);
}

/**
 * Follows a switch from a tool result to its end: safe_switch_status until committed, rolled back
 * or failed; with `commitEarly`, safe_switch_commit once it probes (natural-language-config's
 * "every check is green and they do not want to wait for the TTL").
 */
function followSwitch(result: string, then: () => Step, last: string | undefined, commitEarly = false): Step {
  const m = /switch (\d+): generation \w+ is ([a-z-]+)/.exec(result);
  if (!m) return { text: `unexpected: ${result.slice(0, 300)}` };
  const [, id, state] = m;
  if (state === "committed") return then();
  if (commitEarly && state === "probing" && last === "safe_switch_status") return step({ tool: "safe_switch_commit", args: { id: Number(id) } });
  if (["rolled-back", "failed"].includes(state!)) return { text: `The switch ${state}: ${result.slice(0, 600)}` };
  return step({ tool: "safe_switch_status", args: { id: Number(id) } });
}

let web: Server;
let webPort = 0;

before(async () => {
  await model.start();
  // osmoda-routines too (the briefing reads the heartbeat routines' runs); this applies the
  // starter tree once, without its sshd watcher (no systemd here).
  await stack.startDaemons({ routines: true });
  const inst = spawnSync("bash", [join(repoDir, "scripts", "install-workspace.sh"), join(repoDir, "skills"), join(repoDir, "templates"), workspace], { encoding: "utf8" });
  assert.equal(inst.status, 0, inst.stderr);
  web = createServer((s) => s.end());
  await new Promise<void>((r) => web.listen(0, "127.0.0.1", r));
  webPort = (web.address() as { port: number }).port;
  await startChatGateway(stack, model, (c) => (c.agents.defaults.workspace = workspace));
});
after(async () => {
  await stack.stop();
  await model.stop();
  web?.close();
});

const WATCHER = "services.osmoda.watch.watchers.agentd-up";

test("configuration: the model reads natural-language-config and follows its loop; the change lands and is applied", { timeout: 300_000 }, async () => {
  const baseRev = stack.git("rev-parse", "HEAD");
  const answer = await driveBy("natural-language-config", "Also watch that agentd answers, and tell me when it is applied.", (last, result) => {
    if (last === "read") return step({ tool: "config_get", args: { path: "services.osmoda.watch.watchers" } });
    if (last === "config_get") {
      return step({ tool: "config_set", args: { path: WATCHER, value: { check: { type: "agentd" }, intervalSecs: 3600, actions: ["notify"] }, reason: "watch that agentd answers" } });
    }
    if (last === "config_set") return step({ tool: "config_diff", args: { from: baseRev } });
    if (last === "config_diff") {
      return step({ tool: "safe_switch_begin", args: { plan: "watch that agentd answers", ttl_secs: 3600, health_checks: [{ type: "agentd" }] } });
    }
    return followSwitch(result, () => ({ text: `Applied: ${/switch (\d+)/.exec(result)![0]} committed.` }), last, true);
  });
  assert.match(answer, /Applied: switch \d+ committed/, `calls: ${called.join(" → ")}`);
  assert.equal(skillText.includes("# Natural-language configuration"), true, "read returned the skill");
  const loop = ["config_get", "config_set", "config_diff", "safe_switch_begin", "safe_switch_status"];
  namesInOrder(skillFile("natural-language-config"), loop);
  assert.deepEqual(folded(), ["read", ...loop, "safe_switch_commit"]);
  // The effects: one generation with the reason, deployed by a committed switch.
  assert.match(stack.git("log", "-1", "--format=%B"), /watch that agentd answers/);
  const got = await stack.agentd("GET", `/config/get?path=${encodeURIComponent(`${WATCHER}.actions`)}`);
  assert.deepEqual(got.value, ["notify"]);
  const history = await stack.watch("GET", "/switch/history");
  assert.equal(history[0].state, "committed");
});

test("self-healing: the web app keeps dropping; the model opens an incident, looks, finds no change that caused it, adds a watcher, applies it and records the steps", { timeout: 300_000 }, async () => {
  let incident = 0;
  const text = `The web app on 127.0.0.1:${webPort} keeps dropping. Find out why and make sure it stays up.`;
  const answer = await driveBy("self-healing", text, (last, result) => {
    switch (last) {
      case "read":
        return step({ tool: "incident_create", args: { name: "web app dropping on this machine" } });
      case "incident_create":
        incident = Number(/incident (\d+)/.exec(result)![1]);
        return step({ tool: "service_status", args: { unit: "web.service" } });
      case "service_status":
        return step({ tool: "journal_logs", args: { unit: "web.service", since: "1 hour ago", lines: 200 } });
      case "journal_logs":
        return step({ tool: "system_health", args: {} });
      case "system_health":
        return step({ tool: "network_info", args: {} });
      case "network_info":
        if (!result.includes(String(webPort))) return { text: `the web app's port is not listening: ${result.slice(0, 300)}` };
        return step({ tool: "watcher_list", args: {} });
      case "watcher_list":
        if (called.filter((t) => t === "watcher_list").length === 1) return step({ tool: "config_log", args: { limit: 5 } });
        return step({ tool: "incident_step", args: { id: incident, action: "added watcher web (tcp check every 5 s, notify) and applied it with SafeSwitch; no recent generation explains the drops", result: /web\s.*"health":"ok"/.test(result) ? "the web watcher is ok" : `watchers: ${result.slice(0, 200)}` } });
      case "config_log":
        return step({ tool: "event_log", args: { type: "watch.*", order: "desc", limit: 20 } });
      case "event_log":
        return step({ tool: "watcher_add", args: { name: "web", check: { type: "tcp", host: "127.0.0.1", port: webPort }, interval_secs: 5, actions: ["notify"], ttl_secs: 2, reason: "keep the web app watched" } });
      case "incident_step":
        return { text: `Fixed: incident ${incident}; the web app is watched now.` };
      default:
        return followSwitch(result, () => step({ tool: "watcher_list", args: {} }), last);
    }
  });
  assert.match(answer, /^Fixed: incident \d+/, `calls: ${called.join(" → ")}\n${answer}\n${results.slice(1).join("\n---\n").slice(0, 3000)}`);
  assert.equal(skillText.includes("# Self-healing"), true, "read returned the skill");
  const seq = ["incident_create", "service_status", "journal_logs", "system_health", "network_info", "watcher_list", "config_log", "event_log", "watcher_add"];
  namesInOrder(skillFile("self-healing"), [...seq, "incident_step"]);
  assert.deepEqual(folded(), ["read", ...seq, "safe_switch_status", "watcher_list", "incident_step"]);
  // The effects: the watcher is a generation, applied by a committed switch and probing; the
  // incident carries the step.
  assert.match(stack.git("log", "-1", "--format=%B"), /keep the web app watched/);
  assert.equal((await stack.watch("GET", "/switch/history"))[0].state, "committed");
  await until("the web watcher to run", 30_000, async () => (await stack.watch("GET", "/watcher/list")).find((w: any) => w.name === "web")?.status?.health === "ok");
  const inc = await stack.agentd("GET", `/incident/${incident}`);
  assert.equal(inc.name, "web app dropping on this machine");
  assert.equal(inc.steps.length, 1);
  assert.match(inc.steps[0].action, /added watcher web/);
});

test("briefing: the model reads morning-briefing, gathers in its order and answers from what the tools returned", { timeout: 300_000 }, async () => {
  // Something to report: an open incident, a generation since yesterday, a heartbeat run.
  await stack.agentd("POST", "/incident/create", { name: "disk filling on /var" });
  await stack.agentd("POST", "/config/set", { path: "services.osmoda.watch.safeSwitch.ttlSecs", value: 90, reason: "longer probes for the nightly update" });
  const trig = await stack.routines("POST", "/routine/trigger/health-snapshot", {});
  assert.ok(trig.status === 200 || trig.status === 202, JSON.stringify(trig.body));
  await until("the health-snapshot run to end", 30_000, async () => {
    const h = await stack.routines("GET", "/routine/history?routine=health-snapshot&limit=1");
    return h.body[0] && !["queued", "running"].includes(h.body[0].status);
  });

  const order = ["system_health", "system_query", "watcher_list", "journal_logs", "config_log", "event_log", "routine_history"];
  const args: Record<string, unknown> = {
    system_health: {},
    system_query: { query: "services", args: { state: "failed" } },
    watcher_list: {},
    journal_logs: { priority: "err", since: "24 hours ago", lines: 200 },
    config_log: { limit: 10 },
    event_log: { type: "incident.*", order: "desc", limit: 50 },
    routine_history: { limit: 20 },
  };
  const answer = await driveBy("morning-briefing", "Good morning. How is the machine?", (last) => {
    const i = last === "read" ? 0 : order.indexOf(last!) + 1;
    if (i < order.length) return step({ tool: order[i]!, args: args[order[i]!] });
    // The message, built only from the results (at most 15 lines).
    const r = (t: string) => results[called.indexOf(t)] ?? "";
    const lines = [
      `Overall: ${r("system_health").split("\n")[0]}`,
      `Failed units: ${r("system_query").split("\n")[0]}`,
      `Watchers: ${r("watcher_list").split("\n")[0]}`,
      `Errors: ${r("journal_logs").split("\n")[0]}`,
      `Changes: ${r("config_log").split("\n").find((l) => l.includes("nightly")) ?? "none"}`,
      `Open incidents: ${r("event_log").includes("disk filling on /var") ? "disk filling on /var" : "none"}`,
      `Routines: ${r("routine_history").split("\n").find((l) => l.includes("health-snapshot")) ?? "no runs"}`,
    ];
    return { text: `BRIEFING\n${lines.join("\n")}` };
  });
  assert.match(answer, /^BRIEFING\n/, `calls: ${called.join(" → ")}\n${answer}`);
  assert.equal(skillText.includes("# Morning briefing"), true, "read returned the skill");
  namesInOrder(skillFile("morning-briefing"), order);
  assert.deepEqual(called, ["read", ...order]);
  const lines = answer.split("\n");
  assert.ok(lines.length <= 16, "at most 15 lines after the heading");
  assert.match(answer, /Overall: CPU [\d.]+% of \d+ cores/);
  assert.match(answer, /Changes: \S+ .*longer probes for the nightly update/);
  assert.match(answer, /Open incidents: disk filling on \/var/);
  assert.match(answer, /Routines: \d+\s+health-snapshot\s+\S+\s+(ok|failed)/);
  // Read-only: the briefing changed nothing in the tree.
  assert.match(stack.git("log", "-1", "--format=%s"), /longer probes for the nightly update/);
});

test("`openclaw skills list --json` shows every skill from the workspace, eligible and model-visible", { timeout: 180_000 }, () => {
  const skillsDir = join(repoDir, "skills");
  const names = readdirSync(skillsDir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
  assert.equal(names.length, 15);
  const r = spawnSync(nodeBin, [openclawCli, "skills", "list", "--json"], {
    encoding: "utf8",
    timeout: 150_000,
    env: {
      ...process.env,
      OPENCLAW_STATE_DIR: join(stack.dir, "openclaw"),
      OPENCLAW_CONFIG_PATH: join(stack.dir, "openclaw.json"),
      OPENCLAW_GATEWAY_TOKEN: stack.token,
      HOME: join(stack.dir, "home"),
    },
  });
  assert.equal(r.status, 0, `openclaw skills list failed: ${r.stderr}`);
  const out = JSON.parse(r.stdout.slice(r.stdout.indexOf("{")));
  assert.equal(out.workspaceDir, workspace);
  for (const name of names) {
    const s = out.skills.find((x: any) => x.name === name);
    assert.ok(s, `the gateway does not list ${name}`);
    assert.equal(s.description, parseYaml(/^---\n([\s\S]*?)\n---\n/.exec(readFileSync(join(skillsDir, name, "SKILL.md"), "utf8"))![1]!).description);
    assert.match(s.source, /workspace/, `${name} should load from the workspace: ${JSON.stringify(s)}`);
    assert.equal(s.bundled, false);
    assert.deepEqual(s.missing.config, [], `${name}: ${JSON.stringify(s.missing)}`);
    assert.equal(s.eligible, true, `${name} is not eligible: ${JSON.stringify(s)}`);
    assert.equal(s.modelVisible, true, `${name} is not shown to the model: ${JSON.stringify(s)}`);
  }
});
