// The real gateway with the bridge lists osModa's skills from the agent workspace, and one
// scripted agent turn per skill family is driven by its skill: the gateway (config rendered by
// lib/, the workspace installer scripts/install-workspace.sh) lists the skills in the model's
// prompt; the model reads the skill's SKILL.md with OpenClaw's `read` tool and calls tools
// against the real agentd, osmoda-watch and osmoda-routines. What is asserted comes from the
// SKILL.md, not from the script: the skill's steps are parsed (each numbered step or section and
// the tools it names), every step is accounted for in order — each tool it names either called
// in that step or listed here as a branch not taken, with the reason — and the calls the gateway
// made equal the steps' taken tools in order; then what the calls did to the daemons is checked.
// - configuration (natural-language-config): read → config_get → config_set → config_log (the
//   generation before the edit) → config_diff → safe_switch_begin → safe_switch_status →
//   safe_switch_commit; not taken: config_unset, the rolled-back branch, rollback, undo;
// - self-healing: a web app that keeps dropping → incident_create → service_status →
//   journal_logs → system_health → network_info → watcher_list → config_log → event_log →
//   watcher_add (its own SafeSwitch; a tcp check, no systemd here) → safe_switch_status →
//   watcher_list → service_status → incident_step; not taken: the revert branch of step 3
//   (config_log shows no generation that explains the drops) and step 4;
// - briefing (morning-briefing): started by the morning-briefing routine itself (its prompt, the
//   gateway on in the tree) — every call of the skill's "Gather" list with the skill's own
//   arguments (event_log twice: approvals and incidents), then one message built from what they
//   returned, which is the routine run's output.
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

const manifestTools: string[] = JSON.parse(readFileSync(join(bridgeDir, "openclaw.plugin.json"), "utf8")).contracts.tools;

/** A skill's steps in order — its numbered steps (`1. **…**`) or `## ` sections, and "intro" — each with the calls it names: `tool` or `tool {JSON}` in backticks, JSON parsed when literal. */
function skillSteps(text: string): Map<string, { tool: string; args?: any }[]> {
  const steps = new Map<string, { tool: string; args?: any }[]>([["intro", []]]);
  let key = "intro";
  for (const line of text.replace(/^---\n[\s\S]*?\n---\n/, "").split("\n")) {
    const h = /^## (?:(\d+)\. )?(.+)$/.exec(line) ?? /^(\d+)\. \*\*()/.exec(line);
    if (h) steps.set((key = h[1] ?? h[2]!), []);
    for (const m of line.matchAll(/`([a-z][a-z0-9_]*)(?: (\{[^`]*\}))?`/g)) {
      if (!manifestTools.includes(m[1]!)) continue;
      let args: any;
      try {
        args = m[2] ? JSON.parse(m[2]) : undefined;
      } catch {
        args = undefined; // a template (`<unit>`), not literal
      }
      steps.get(key)!.push({ tool: m[1]!, args });
    }
  }
  return steps;
}

/** A step of the skill as the turn went through it: the tools called in it, in order, and each other tool the step names with why that branch was not taken. */
type Took = { step: string; took: string[]; notTaken?: Record<string, string> };

/**
 * The turn followed skill `name`: the plan covers every step of the skill that names a tool, in
 * the skill's order; in each step, the tools called plus the branches not taken are exactly the
 * tools the skill names there; and the calls made (polling folded) are the steps' calls in order.
 */
function assertFollowed(name: string, plan: Took[]): void {
  const steps = skillSteps(skillFile(name));
  const named = [...steps].filter(([, calls]) => calls.length > 0).map(([k]) => k);
  assert.deepEqual(plan.map((p) => p.step), named, `${name}: the steps that name tools, in order`);
  for (const p of plan) {
    const want = new Set(steps.get(p.step)!.map((c) => c.tool));
    assert.deepEqual(new Set([...p.took, ...Object.keys(p.notTaken ?? {})]), want, `${name}, step ${p.step}: the tools it names`);
    for (const t of p.took) assert.ok(want.has(t), `${name}, step ${p.step}: ${t} is not named there`);
  }
  assert.deepEqual(folded(), ["read", ...plan.flatMap((p) => p.took)], `${name}: the calls in the skill's order`);
  // Each call reached its daemon and was answered (no refusal, no argument error).
  for (const [i, r] of results.entries()) assert.doesNotMatch(r, /^\s*(\S+ refused \S+|Invalid arguments for )/, `${called[i]}: ${r.slice(0, 300)}`);
}

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
  calledArgs = [];
  for (const m of req.messages.slice(start + 1)) {
    if (m.role === "assistant" && Array.isArray(m.tool_calls)) {
      for (const tc of m.tool_calls as any[]) (calls.push(tc.function.name), calledArgs.push(JSON.parse(tc.function.arguments || "{}")));
    }
    if (m.role === "tool") out.push(textOf(m.content));
  }
  return { calls, results: out };
}

/** Every call the script sent, with its arguments (a request the gateway repeats sends one again). */
let sent: { tool: string; args: unknown }[] = [];
/** The arguments of the turn's calls as the conversation holds them, in order. */
let calledArgs: unknown[] = [];

function step(s: Step): Step {
  if ("tool" in s) (called.push(s.tool), sent.push(s));
  return s;
}

/**
 * A turn driven by skill `name` for the person's message `text`: find the skill in the gateway's
 * `<available_skills>`, read it with the gateway's `read` tool, then let `next` pick each step
 * from the last tool and its result.
 */
async function driveBy(name: string, text: string, next: (last: string | undefined, result: string) => Step): Promise<string> {
  arm(name, text, next);
  return turn(stack, text);
}

function arm(name: string, text: string, next: (last: string | undefined, result: string) => Step): void {
  called = [];
  results = [];
  sent = [];
  skillText = "";
  pending = name;
  prompt = text;
  script = next;
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

/** Calls in order with a switch's polling folded (repeated safe_switch_status is one step). */
const folded = () => called.filter((t, i) => i === 0 || t !== called[i - 1] || t !== "safe_switch_status");

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
  // The gateway on in the tree (its port reserved now), so the rendered routines.json holds the
  // gateway's URL and the morning-briefing routine is a prompt to it.
  const port = await stack.reservePort();
  await stack.agentd("POST", "/config/set", { path: "services.osmoda.gateway.enable", value: true, reason: "the agent's gateway" });
  await stack.agentd("POST", "/config/set", { path: "services.osmoda.gateway.port", value: port, reason: "the test gateway's port" });
  await stack.applyHead();
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
    // "config_diff from the generation before your first edit (read it from config_log)".
    if (last === "config_set") return step({ tool: "config_log", args: { limit: 5 } });
    if (last === "config_log") return step({ tool: "config_diff", args: { from: [...result.matchAll(/^([0-9a-f]{12})\s/gm)][1]?.[1] ?? "none" } });
    if (last === "config_diff") {
      return step({ tool: "safe_switch_begin", args: { plan: "watch that agentd answers", ttl_secs: 3600, health_checks: [{ type: "agentd" }] } });
    }
    return followSwitch(result, () => ({ text: `Applied: ${/switch (\d+)/.exec(result)![0]} committed.` }), last, true);
  });
  assert.match(answer, /Applied: switch \d+ committed/, `calls: ${called.join(" → ")}`);
  assert.equal(skillText.includes("# Natural-language configuration"), true, "read returned the skill");
  assertFollowed("natural-language-config", [
    { step: "intro", took: [], notTaken: { file_write: "named as what never to do", shell_exec: "named as what never to do" } },
    { step: "1", took: ["config_get"] },
    { step: "2", took: ["config_set"], notTaken: { config_unset: "nothing to drop" } },
    { step: "3", took: ["config_log", "config_diff"] },
    { step: "4", took: ["safe_switch_begin"] },
    {
      step: "5",
      took: ["safe_switch_status", "safe_switch_commit"],
      notTaken: { journal_logs: "the rolled-back branch: every check is green", config_set: "the rolled-back branch", safe_switch_rollback: "the person does not stop it" },
    },
    { step: "Undo later", took: [], notTaken: { config_revert: "nothing to undo", safe_switch_begin: "nothing to undo" } },
  ]);
  // The diff is from the generation before the edit, as read from config_log.
  assert.ok(sent.some((c) => c.tool === "config_diff" && (c.args as any).from === baseRev.slice(0, 12)), "config_diff from the generation before the edit");
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
        if (called.filter((t) => t === "service_status").length === 2) {
          const watchers = results[called.lastIndexOf("watcher_list")] ?? "";
          return step({ tool: "incident_step", args: { id: incident, action: "added watcher web (tcp check every 5 s, notify) and applied it with SafeSwitch; no recent generation explains the drops", result: /web\s.*"health":"ok"/.test(watchers) ? "the web watcher is ok" : `watchers: ${watchers.slice(0, 200)}` } });
        }
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
        return step({ tool: "service_status", args: { unit: "web.service" } });
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
  // Step 3's revert branch is not taken: the generations since the start are the test's set-up
  // and the configuration turn's watcher, none touching the web app.
  const log = results[called.indexOf("config_log")] ?? "";
  assert.doesNotMatch(log, /web/, "no generation explains the drops");
  const notFixing = "no wrong option, no full disk: a transient drop, which step 4 leaves to a watcher (step 5)";
  assertFollowed("self-healing", [
    { step: "1", took: ["incident_create"] },
    { step: "2", took: ["service_status", "journal_logs", "system_health", "network_info", "watcher_list"] },
    {
      step: "3",
      took: ["config_log", "event_log"],
      notTaken: { config_diff: "no generation explains the drops", config_revert: "nothing to undo", safe_switch_begin: "no revert to apply", safe_switch_status: "no revert to apply" },
    },
    { step: "4", took: [], notTaken: { config_set: notFixing, safe_switch_begin: notFixing, safe_switch_status: notFixing, system_query: notFixing, directory_list: notFixing } },
    // The watcher's check is the service's tcp check (step 3 names it), not the example's systemd one: no systemd here.
    { step: "5", took: ["watcher_add", "safe_switch_status"] },
    { step: "6", took: ["watcher_list", "service_status", "incident_step"] },
  ]);
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

test("briefing: the morning-briefing routine starts a turn; the model gathers what the skill lists, with its arguments, and the briefing is the run's output", { timeout: 600_000 }, async () => {
  // Something to report: an open incident, a generation since yesterday, a heartbeat run.
  await stack.agentd("POST", "/incident/create", { name: "disk filling on /var" });
  await stack.agentd("POST", "/config/set", { path: "services.osmoda.watch.safeSwitch.ttlSecs", value: 90, reason: "longer probes for the nightly update" });
  const trig = await stack.routines("POST", "/routine/trigger/health-snapshot", {});
  assert.ok(trig.status === 200 || trig.status === 202, JSON.stringify(trig.body));
  const ended = (routine: string, ms: number) => until(`the ${routine} run to end`, ms, async () => {
    const h = await stack.routines("GET", `/routine/history?routine=${routine}&limit=1`);
    return h.body[0] && !["queued", "running"].includes(h.body[0].status) && h.body[0];
  });
  await ended("health-snapshot", 30_000);

  // The skill's "Gather" list, in its order, with its own arguments.
  const steps = skillSteps(skillFile("morning-briefing"));
  const gather = [...steps.values()].flat();
  assert.deepEqual(gather.filter((c) => c.tool === "event_log").map((c) => c.args.type), ["approval.*", "incident.*"], "the skill asks for approvals and incidents");
  const routine = JSON.parse(readFileSync(join(stack.etc, "osmoda", "routines.json"), "utf8")).routines["morning-briefing"];
  assert.equal(routine.action.type, "prompt", "with the gateway on, the routine is a turn of the agent");
  arm("morning-briefing", routine.action.message, (last) => {
    const i = called.length - 1; // calls after `read`
    if (i < gather.length) return step({ tool: gather[i]!.tool, args: gather[i]!.args ?? {} });
    // The message, built only from the results (at most 15 lines).
    const r = (t: string, n = 0) => results.filter((_, k) => called[k] === t)[n] ?? "";
    const lines = [
      `Overall: ${r("system_health").split("\n")[0]}`,
      `Failed units: ${r("system_query").split("\n")[0]}`,
      `Watchers: ${r("watcher_list").split("\n")[0]}`,
      `Errors: ${r("journal_logs").split("\n")[0]}`,
      `Changes: ${r("config_log").split("\n").find((l) => l.includes("nightly")) ?? "none"}`,
      `Waiting: ${r("event_log", 0).split("\n")[0]}`,
      `Open incidents: ${r("event_log", 1).includes("disk filling on /var") ? "disk filling on /var" : "none"}`,
      `Routines: ${r("routine_history").split("\n").find((l) => l.includes("health-snapshot")) ?? "no runs"}`,
    ];
    return { text: `BRIEFING\n${lines.join("\n")}` };
  });
  const fired = await stack.routines("POST", "/routine/trigger/morning-briefing", {});
  assert.ok(fired.status === 200 || fired.status === 202, JSON.stringify(fired.body));
  const run = await ended("morning-briefing", 540_000);
  assert.equal(run.status, "ok", JSON.stringify(run));
  const answer: string = run.output;
  assert.match(answer, /^BRIEFING\n/, `calls: ${called.join(" → ")}\n${answer}`);
  assert.equal(skillText.includes("# Morning briefing"), true, "read returned the skill");
  assertFollowed("morning-briefing", [...steps].filter(([, c]) => c.length > 0).map(([k, c]) => ({ step: k, took: c.map((x) => x.tool) })));
  assert.deepEqual(calledArgs.slice(1), gather.map((c) => c.args ?? {}), "each call with the skill's arguments");
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
