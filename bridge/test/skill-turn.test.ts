// The real gateway with the bridge lists osModa's skills from the agent workspace, and a scripted
// agent turn is driven by one: the gateway (config rendered by lib/, the workspace
// installed by scripts/install-workspace.sh) lists the skills in the model's prompt; the model
// reads natural-language-config's SKILL.md with OpenClaw's `read` tool and follows the loop it
// prescribes against the real agentd and osmoda-watch: config_get → config_set → config_diff →
// safe_switch_begin (health checks) → safe_switch_status → safe_switch_commit.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";

import { Stack, bridgeDir, nodeBin, openclawCli } from "./harness.ts";
import { parse as parseYaml } from "yaml";
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
  if (["rolled-back", "failed"].includes(state!)) return { text: `The switch ${state}: ${(result ?? "").slice(0, 600)}` };
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

test("`openclaw skills list --json` shows every skill from the workspace, eligible and model-visible", { timeout: 180_000 }, () => {
  const skillsDir = join(repoDir, "skills");
  const names = readdirSync(skillsDir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name);
  assert.ok(names.length >= 10);
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
