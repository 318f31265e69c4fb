// skills/ and templates/: every SKILL.md's frontmatter parses with OpenClaw's gating, every tool
// they name exists in the manifest's contracts.tools (so later tools are checked too), TOOLS.md
// and HEARTBEAT.md match their sources, and the workspace installer keeps its rules. The real
// gateway listing the skills is checked in skill-turn.test.ts (one gateway start for both).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";

import { bridgeDir } from "./harness.ts";
import { allTools } from "../src/tools/index.ts";
import { renderToolsMd, typeOf } from "../src/tools-md.ts";

const repoDir = resolve(bridgeDir, "..");
const skillsDir = join(repoDir, "skills");
const templatesDir = join(repoDir, "templates");
const manifestTools: string[] = JSON.parse(readFileSync(join(bridgeDir, "openclaw.plugin.json"), "utf8")).contracts.tools;
const GATE = "plugins.entries.osmoda-bridge.enabled";

/** Every argument name of every registered tool (at any depth), e.g. after_id, wallet_id. */
export function argumentNames(tools: { parameters: unknown }[]): Set<string> {
  const out = new Set<string>();
  const walk = (s: any) => {
    if (!s || typeof s !== "object") return;
    if (s.properties) for (const [k, v] of Object.entries(s.properties)) (out.add(k), walk(v));
    for (const k of ["items", "anyOf", "oneOf", "allOf", "additionalProperties"]) {
      const v = s[k];
      if (Array.isArray(v)) v.forEach(walk);
      else walk(v);
    }
  };
  tools.forEach((t) => walk(t.parameters));
  return out;
}

/** Tool families: the first word of every manifest tool, plus the families being added to the bridge. */
export function families(tools: string[]): Set<string> {
  const f = new Set(tools.map((t) => t.split("_")[0]));
  for (const x of ["wallet", "routine", "sandbox", "capability", "mesh", "backup", "safe"]) f.add(x);
  return f;
}

/**
 * Tool names a markdown text mentions: the first word of each backticked span when it is
 * snake_case, and every snake_case word (anywhere) whose first part is a tool family and that is
 * not an argument name of a tool (`args`).
 */
export function mentionedTools(text: string, fams: Set<string>, args: Set<string> = new Set()): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/`([^`\n]+)`/g)) {
    const w = /^([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b/.exec(m[1]);
    if (w) out.add(w[1]);
  }
  for (const m of text.matchAll(/(?<![A-Za-z0-9_.-])([a-z][a-z0-9]*(?:_[a-z0-9]+)+)(?![A-Za-z0-9_])/g)) {
    if (fams.has(m[1].split("_")[0]) && !args.has(m[1])) out.add(m[1]);
  }
  return out;
}

/** Splits `---\n<yaml>\n---\n<body>`; throws when the frontmatter is missing. */
export function frontmatter(text: string): { meta: any; body: string } {
  const m = /^---\n([\s\S]*?)\n---\n([\s\S]*)$/.exec(text);
  if (!m) throw new Error("no YAML frontmatter (--- ... ---) at the top");
  return { meta: parseYaml(m[1]), body: m[2] };
}

/** Runs scripts/install-workspace.sh (what the module's ExecStartPre runs) into `workspace`. */
function installWorkspace(workspace: string): void {
  const r = spawnSync("bash", [join(repoDir, "scripts", "install-workspace.sh"), skillsDir, templatesDir, workspace], { encoding: "utf8" });
  assert.equal(r.status, 0, `install-workspace.sh failed: ${r.stderr}`);
}

const skillNames = readdirSync(skillsDir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();
/** Every skill and template: the texts whose tool names and event types are checked. */
const docs = [
  ...skillNames.map((n) => join(skillsDir, n, "SKILL.md")),
  ...(existsSync(templatesDir) ? readdirSync(templatesDir).filter((f) => f.endsWith(".md")).map((f) => join(templatesDir, f)) : []),
];

describe("the checks themselves", () => {
  const fams = families(manifestTools);
  it("finds tools in backticks and by family, and ignores other snake_case words", () => {
    const t = "Call `config_set {\"path\": \"a\"}` then config_rebase; `health_checks` is a field, ttl_secs too, and `services.nginx.enable`.";
    assert.deepEqual([...mentionedTools(t, fams)].sort(), ["config_rebase", "config_set", "health_checks"]);
    assert.deepEqual([...mentionedTools("wallet_send and mesh_peer_add, but not my_wallet_send", fams)].sort(), ["mesh_peer_add", "wallet_send"]);
    // An argument name is not a tool in prose, but still is as the first word in backticks.
    assert.deepEqual([...mentionedTools("give wallet_id, then `wallet_id`", fams, new Set(["wallet_id"]))], ["wallet_id"]);
    assert.deepEqual([...mentionedTools("give wallet_id", fams, argumentNames(allTools))], []);
  });
  it("refuses a file without frontmatter and bad YAML", () => {
    assert.throws(() => frontmatter("# no frontmatter\n"), /no YAML frontmatter/);
    assert.throws(() => frontmatter("---\nname: [unclosed\n---\nbody\n"));
  });
});

describe("templates/TOOLS.md", () => {
  it("is exactly what `npm run tools-md` renders from the registered tools", () => {
    const file = readFileSync(join(templatesDir, "TOOLS.md"), "utf8");
    assert.ok(file === renderToolsMd(allTools), "templates/TOOLS.md is stale: run `cd bridge && npm run tools-md` and commit it");
  });
  it("documents every tool of contracts.tools with each argument", () => {
    const file = readFileSync(join(templatesDir, "TOOLS.md"), "utf8");
    for (const t of manifestTools) assert.ok(file.includes(`## \`${t}\``), `TOOLS.md lacks ${t}`);
    for (const t of allTools) {
      for (const arg of Object.keys((t.parameters as any).properties ?? {})) assert.match(file, new RegExp(`^\\| ${arg} \\|`, "m"));
    }
  });
  it("changes when a tool, a description or an argument changes", () => {
    const base = renderToolsMd(allTools);
    assert.notEqual(renderToolsMd(allTools.slice(1)), base);
    assert.notEqual(renderToolsMd([{ ...allTools[0]!, description: "other" }, ...allTools.slice(1)]), base);
  });
  it("renders schema types briefly", () => {
    assert.equal(typeOf({ type: "integer", minimum: 1, maximum: 1000 }), "integer 1..1000");
    assert.equal(typeOf({ enum: ["asc", "desc"] }), '"asc" \\| "desc"');
    assert.equal(typeOf({ type: "array", items: { type: "string", pattern: "^/" }, maxItems: 32 }), "[string (absolute path)] ≤ 32");
    assert.equal(typeOf({ type: "object", required: ["a"], properties: { a: {}, b: {} } }), "{a, b?}");
  });
});

describe("templates/HEARTBEAT.md", () => {
  it("names every default routine with the cadence lib/default.nix gives it, and no other", () => {
    const r = spawnSync("nix-instantiate", ["--eval", "--strict", "--json", "-E", `(import ${join(repoDir, "lib")}).defaults`], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    const d = JSON.parse(r.stdout);
    const text = readFileSync(join(templatesDir, "HEARTBEAT.md"), "utf8");
    const rows = new Map([...text.matchAll(/^\| `([a-z0-9-]+)` \| ([^|]+) \|/gm)].map((m) => [m[1]!, m[2]!.trim()]));
    assert.deepEqual([...rows.keys()].sort(), Object.keys(d.heartbeatRoutines).sort());
    for (const [name, routine] of Object.entries<any>(d.heartbeatRoutines)) {
      const want = routine.trigger.type === "interval" ? `every ${routine.trigger.seconds} s` : `cron \`${routine.trigger.schedule}\` ${d.cronTrigger.timezone}`;
      assert.equal(rows.get(name), want, `HEARTBEAT.md's cadence of ${name}`);
    }
  });
});

describe("the morning-briefing routine (lib/default.nix)", () => {
  const routineOf = (cfg: string) => {
    const r = spawnSync("nix-instantiate", ["--eval", "--strict", "--json", "-E", `((import ${join(repoDir, "lib")}).render (${cfg})).routines.routines.morning-briefing`], { encoding: "utf8" });
    assert.equal(r.status, 0, r.stderr);
    return JSON.parse(r.stdout);
  };
  it("with the gateway on is a turn of the agent that follows the morning-briefing skill, at 08:00", () => {
    const b = routineOf(`{ gateway.enable = true; }`);
    assert.deepEqual(b.trigger, { type: "cron", schedule: "0 8 * * *", timezone: "UTC" });
    assert.equal(b.enable, true);
    assert.equal(b.action.type, "prompt");
    assert.equal(b.action.timeout_secs, 600);
    const skill = /follow the ([a-z-]+) skill/.exec(b.action.message)?.[1];
    assert.equal(skill, "morning-briefing");
    assert.ok(existsSync(join(skillsDir, skill!, "SKILL.md")));
    // The skill answers to that routine firing.
    assert.match(readFileSync(join(skillsDir, skill!, "SKILL.md"), "utf8"), /Run when the `morning-briefing` routine fires/);
  });
  it("without the gateway stays a health call (a prompt would be refused there), and an operator's own action is kept", () => {
    assert.deepEqual(routineOf(`{ }`).action, { type: "http", method: "GET", path: "/health", timeout_secs: 30 });
    assert.deepEqual(routineOf(`{ gateway.enable = false; }`).action.type, "http");
    const own = { type: "command", command: ["/run/current-system/sw/bin/true"] };
    const r = routineOf(`{ gateway.enable = true; routines.morning-briefing.action = builtins.fromJSON ''${JSON.stringify(own)}''; }`);
    assert.deepEqual(r.action.command, own.command);
    assert.equal(r.action.type, "command");
  });
});

describe("skills/", () => {
  it("holds the seed's 15 system skills", () => {
    for (const s of ["self-healing", "morning-briefing", "security-hardening", "natural-language-config", "predictive-resources",
      "drift-detection", "generation-timeline", "flight-recorder", "nix-optimizer", "system-monitor", "system-packages",
      "system-config", "file-manager", "network-manager", "service-explorer"]) {
      assert.ok(skillNames.includes(s), `skills/${s}/SKILL.md is missing`);
    }
  });
  for (const name of skillNames) {
    it(`${name}: frontmatter and gating`, () => {
      const { meta, body } = frontmatter(readFileSync(join(skillsDir, name, "SKILL.md"), "utf8"));
      assert.equal(meta.name, name, "frontmatter name must equal the directory name");
      assert.match(meta.name, /^[a-z0-9]+(-[a-z0-9]+)*$/);
      assert.equal(typeof meta.description, "string");
      assert.ok(!meta.description.includes("\n") && meta.description.length < 160, "description: one line under 160 characters");
      assert.deepEqual(meta.metadata?.openclaw?.requires?.config, [GATE], "gated on the bridge being enabled");
      assert.deepEqual(meta.metadata.openclaw.os, ["linux"]);
      assert.ok(body.trim().length > 200, "a real procedure, not a stub");
    });
  }
  for (const file of docs) {
    it(`${file.slice(repoDir.length + 1)}: every tool it names is in contracts.tools`, () => {
      const unknown = [...mentionedTools(readFileSync(file, "utf8"), families(manifestTools), argumentNames(allTools))].filter((t) => !manifestTools.includes(t));
      assert.deepEqual(unknown, [], `not tools of the bridge (contracts.tools): ${unknown.join(", ")}`);
    });
  }
});

/** The ledger namespaces agentd records (`("config.", Owner::…)` rows of its one table). */
export function namespaces(): string[] {
  const src = readFileSync(join(repoDir, "crates", "agentd", "src", "namespaces.rs"), "utf8");
  return [...src.matchAll(/^\s*\("([a-z]+\.)", Owner::/gm)].map((m) => m[1]!);
}

/** The type filters of every `event_log {...}` call a text makes, and every quoted `"type": "x.*"`. */
export function eventTypes(text: string): string[] {
  const out: string[] = [];
  for (const m of text.matchAll(/`event_log \{([^`]*)\}`/g)) {
    const t = /"type": "([^"]+)"/.exec(m[1]!);
    if (t) out.push(t[1]!);
  }
  for (const m of text.matchAll(/`"(?:type": ")?([a-z]+\.(?:[a-z_.]+|\*)[^"`]*)"`/g)) out.push(m[1]!);
  return out;
}

describe("what skills say about the ledger and the issue's procedures", () => {
  const known = namespaces();
  it("reads agentd's namespace table", () => {
    for (const ns of ["config.", "watch.", "incident.", "approval.", "system."]) assert.ok(known.includes(ns), ns);
    assert.deepEqual(eventTypes('`event_log {"type": "switch.*"}` and (`"type": "config.*"`, `"watch.switch.*"`)'), ["switch.*", "config.*", "watch.switch.*"]);
  });
  for (const file of docs) {
    it(`${file.slice(repoDir.length + 1)}: every event type it filters on is in a namespace agentd records`, () => {
      const bad = eventTypes(readFileSync(file, "utf8")).filter((t) => !known.some((ns) => t.startsWith(ns)));
      assert.deepEqual(bad, [], "no ledger event has these types");
    });
  }
  it("natural-language-config teaches the loop; drift-detection uses the drift events and config_commit; generation-timeline config_log/config_diff and the ledger", () => {
    const read = (n: string) => readFileSync(join(skillsDir, n, "SKILL.md"), "utf8");
    const uses = (n: string, words: string[]) => {
      for (const w of words) assert.ok(read(n).includes(w), `${n} should use ${w}`);
    };
    uses("natural-language-config", ["`config_get", "`config_set", "`config_diff", "`safe_switch_begin", "`safe_switch_status", "Never edit files in place"]);
    uses("drift-detection", ['"config.drift"', "`config_status", "`config_commit", "approval required", "`safe_switch_begin"]);
    uses("generation-timeline", ["`config_log", "`config_diff", "`event_log"]);
    uses("system-packages", ["`config_append", "`config_remove", "`safe_switch_begin"]);
  });
});

describe("installing into the agent workspace", () => {
  it("installs every skill and template; keeps the person's files and other skills; replaces osModa's", () => {
    const dir = mkdtempSync(join(tmpdir(), "osmoda-ws-"));
    try {
      const ws = join(dir, "workspace");
      installWorkspace(ws);
      for (const n of skillNames) assert.equal(readFileSync(join(ws, "skills", n, "SKILL.md"), "utf8"), readFileSync(join(skillsDir, n, "SKILL.md"), "utf8"));
      for (const f of ["AGENTS.md", "SOUL.md", "TOOLS.md", "IDENTITY.md", "USER.md", "HEARTBEAT.md"]) {
        assert.equal(readFileSync(join(ws, f), "utf8"), readFileSync(join(templatesDir, f), "utf8"), f);
      }
      writeFileSync(join(ws, "USER.md"), "the owner's notes\n");
      writeFileSync(join(ws, "AGENTS.md"), "stale\n");
      writeFileSync(join(ws, "skills", "self-healing", "SKILL.md"), "stale\n");
      spawnSync("mkdir", ["-p", join(ws, "skills", "mine")]);
      writeFileSync(join(ws, "skills", "mine", "SKILL.md"), "mine\n");
      installWorkspace(ws);
      assert.equal(readFileSync(join(ws, "USER.md"), "utf8"), "the owner's notes\n");
      assert.equal(readFileSync(join(ws, "AGENTS.md"), "utf8"), readFileSync(join(templatesDir, "AGENTS.md"), "utf8"));
      assert.equal(readFileSync(join(ws, "skills", "self-healing", "SKILL.md"), "utf8"), readFileSync(join(skillsDir, "self-healing", "SKILL.md"), "utf8"));
      assert.equal(readFileSync(join(ws, "skills", "mine", "SKILL.md"), "utf8"), "mine\n");
      assert.deepEqual(readdirSync(join(ws, "skills")).filter((n) => n.startsWith(".")), [], "no temporary copies left");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it("refuses a relative workspace and a missing source, writing nothing", () => {
    const dir = mkdtempSync(join(tmpdir(), "osmoda-ws-"));
    try {
      const rel = spawnSync("bash", [join(repoDir, "scripts", "install-workspace.sh"), skillsDir, templatesDir, "workspace"], { cwd: dir, encoding: "utf8" });
      assert.equal(rel.status, 2);
      assert.match(rel.stderr, /absolute path/);
      const missing = spawnSync("bash", [join(repoDir, "scripts", "install-workspace.sh"), join(dir, "nope"), templatesDir, join(dir, "ws")], { encoding: "utf8" });
      assert.equal(missing.status, 2);
      assert.match(missing.stderr, /not a directory/);
      assert.deepEqual(readdirSync(dir), []);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
  it("the NixOS module runs it before the gateway starts, into OpenClaw's workspace (nixos-eval)", (t) => {
    const check = process.env.OSMODA_NIXOS_EVAL ? join(process.env.OSMODA_NIXOS_EVAL, "check.sh") : join(repoDir, "..", "shared", "nixos-eval", "check.sh");
    if (!existsSync(check)) {
      console.log(`skipped: module installs the workspace: nixos-eval not found (${check}; set OSMODA_NIXOS_EVAL to its directory)`);
      t.skip("nixos-eval not found");
      return;
    }
    const dir = mkdtempSync(join(tmpdir(), "osmoda-ws-"));
    try {
      writeFileSync(join(dir, "fm.nix"), `import ${join(repoDir, "modules", "flake-module.nix")} { revision = "r"; }`);
      writeFileSync(join(dir, "gw.nix"), `{ services.osmoda.gateway.enable = true; services.osmoda.stateDir = "/var/lib/osm"; }`);
      const evalDir = join(check, "..");
      // The server host with the gateway on, as the flake builds it (modules/flake-module.nix).
      const r = spawnSync(check, ["--host-stubs", "--pkgs", join(evalDir, "examples", "osmoda-flake-pkgs.nix"),
        join(dir, "fm.nix"), join(dir, "gw.nix"), "--get", "units.osmoda-gateway", join(repoDir, "modules", "hosts", "server.nix")], { cwd: repoDir, env: { ...process.env, OSMODA_REPO: repoDir }, encoding: "utf8", maxBuffer: 64 << 20 });
      assert.equal(r.status, 0, r.stderr);
      const unit = JSON.parse(r.stdout);
      const pre = /^\S+\/bin\/bash \/nix\/store\/[a-z0-9]{32}-install-workspace\.sh \/nix\/store\/[a-z0-9]{32}-skills \/nix\/store\/[a-z0-9]{32}-templates (\S+)$/.exec(unit.serviceConfig.ExecStartPre);
      assert.ok(pre, `ExecStartPre: ${unit.serviceConfig.ExecStartPre}`);
      assert.equal(unit.environment.OPENCLAW_STATE_DIR, "/var/lib/osm/gateway");
      assert.equal(pre[1], `${unit.environment.OPENCLAW_STATE_DIR}/workspace`, "the workspace OpenClaw uses: <OPENCLAW_STATE_DIR>/workspace");
      assert.equal(unit.serviceConfig.User, "osmoda-gateway", "written as the gateway's user, in its state dir");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
