// A scripted agent turn driven by a skill: the gateway (config rendered by lib/, the workspace
// installed by scripts/install-workspace.sh) lists the skills in the model's prompt; the model
// reads natural-language-config's SKILL.md with OpenClaw's `read` tool and follows the loop it
// prescribes against the real agentd and osmoda-watch: config_get → config_set → config_diff →
// safe_switch_begin (health checks) → safe_switch_status → safe_switch_commit.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readFileSync } from "node:fs";
import { join, resolve } from "node:path";

import { Stack, bridgeDir } from "./harness.ts";
import { startChatGateway, turn } from "./chat.ts";
import { ScriptedModel, lastToolResult, type ChatRequest, type Step } from "./model.ts";

const repoDir = resolve(bridgeDir, "..");
const stack = new Stack();
const workspace = join(stack.dir, "workspace");
const WATCHER = "services.osmoda.watch.watchers.agentd-up";
/** The loop natural-language-config prescribes, in the order its text names the tools. */
const LOOP = ["config_get", "config_set", "config_diff", "safe_switch_begin", "safe_switch_status"];

const called: string[] = [];
let skillText = "";
let baseRev = "";

function system(req: ChatRequest): string {
  return req.messages.filter((m) => m.role === "system" || m.role === "developer").map((m) => (typeof m.content === "string" ? m.content : JSON.stringify(m.content))).join("\n");
}

function step(s: Step): Step {
  if ("tool" in s) called.push(s.tool);
  return s;
}

function script(req: ChatRequest): Step {
  if (called.length > 14) return { text: "giving up after 14 steps" };
  const result = lastToolResult(req);
  if (called.length === 0) {
    const m = /<name>natural-language-config<\/name>[\s\S]*?<location>([^<]+)<\/location>/.exec(system(req));
    if (!m) return { text: "natural-language-config is not among my skills" };
    const read = req.tools?.find((t) => t.function.name === "read");
    if (!read) return { text: "no read tool" };
    const props = Object.keys((read.function.parameters as any)?.properties ?? {});
    const key = props.includes("path") ? "path" : (props.find((p) => /path/i.test(p)) ?? "path");
    return step({ tool: "read", args: { [key]: m[1]!.trim() } });
  }
  const last = called[called.length - 1];
  if (last === "read") {
    skillText = result ?? "";
    return step({ tool: "config_get", args: { path: "services.osmoda.watch.watchers" } });
  }
  if (last === "config_get") {
    return step({ tool: "config_set", args: { path: WATCHER, value: { check: { type: "agentd" }, intervalSecs: 3600, actions: ["notify"] }, reason: "watch that agentd answers" } });
  }
  if (last === "config_set") return step({ tool: "config_diff", args: { from: baseRev } });
  if (last === "config_diff") {
    return step({ tool: "safe_switch_begin", args: { plan: "watch that agentd answers", ttl_secs: 3600, health_checks: [{ type: "agentd" }] } });
  }
  const m = /switch (\d+): generation \w+ is ([a-z-]+)/.exec(result ?? "");
  if (!m) return { text: `unexpected: ${(result ?? "").slice(0, 300)}` };
  const [, id, state] = m;
  if (state === "committed") return { text: `Applied: switch ${id} committed.` };
  if (state === "probing" && last === "safe_switch_status") return step({ tool: "safe_switch_commit", args: { id: Number(id) } });
  if (["rolled-back", "failed"].includes(state!)) return { text: `The switch ${state}.` };
  return step({ tool: "safe_switch_status", args: { id: Number(id) } });
}

const model = new ScriptedModel(script);

before(async () => {
  await model.start();
  await stack.startDaemons();
  await stack.agentd("POST", "/config/unset", { path: "services.osmoda.watch.watchers.sshd", reason: "no systemd in the test" });
  baseRev = stack.git("rev-parse", "HEAD");
  const inst = spawnSync("bash", [join(repoDir, "scripts", "install-workspace.sh"), join(repoDir, "skills"), join(repoDir, "templates"), workspace], { encoding: "utf8" });
  assert.equal(inst.status, 0, inst.stderr);
  await startChatGateway(stack, model, (c) => (c.agents.defaults.workspace = workspace));
});
after(async () => {
  await stack.stop();
  await model.stop();
});

test("natural-language-config: the model reads the skill and follows its loop; the change lands and is applied", { timeout: 300_000 }, async () => {
  const answer = await turn(stack, "Also watch that agentd answers, and tell me when it is applied.");
  assert.match(answer, /Applied: switch \d+ committed/, `calls: ${called.join(" → ")}`);
  // The skill the model read is the installed natural-language-config, and it names the loop in this order.
  assert.equal(skillText.includes("# Natural-language configuration"), true, "read returned the skill");
  const file = readFileSync(join(repoDir, "skills", "natural-language-config", "SKILL.md"), "utf8");
  const firstAt = LOOP.map((t) => file.indexOf(`\`${t}`));
  assert.ok(firstAt.every((i, n) => i >= 0 && (n === 0 || i > firstAt[n - 1]!)), `the skill names ${LOOP.join(" → ")} in order`);
  // What ran through the gateway: read, then the loop, then the commit of the switch.
  assert.deepEqual(called.filter((t, i) => i === 0 || t !== called[i - 1]), ["read", ...LOOP, "safe_switch_commit"]);
  // The effects: one generation with the reason, deployed by a committed switch.
  assert.match(stack.git("log", "-1", "--format=%B"), /watch that agentd answers/);
  const got = await stack.agentd("GET", `/config/get?path=${encodeURIComponent(`${WATCHER}.actions`)}`);
  assert.deepEqual(got.value, ["notify"]);
  const history = await stack.watch("GET", "/switch/history");
  assert.equal(history[0].state, "committed");
});
