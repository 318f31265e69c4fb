// skills/ and templates/: every SKILL.md's frontmatter parses with OpenClaw's gating, every tool
// they name exists in the manifest's contracts.tools (so later tools are checked too), and the
// real gateway with the bridge loaded lists the skills from the agent workspace.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { cpSync, existsSync, readdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parse as parseYaml } from "yaml";

import { Stack, bridgeDir, nodeBin, openclawCli } from "./harness.ts";
import { allTools } from "../src/tools/index.ts";
import { renderToolsMd, typeOf } from "../src/tools-md.ts";

const repoDir = resolve(bridgeDir, "..");
const skillsDir = join(repoDir, "skills");
const templatesDir = join(repoDir, "templates");
const manifestTools: string[] = JSON.parse(readFileSync(join(bridgeDir, "openclaw.plugin.json"), "utf8")).contracts.tools;
const GATE = "plugins.entries.osmoda-bridge.enabled";

/** Tool families: the first word of every manifest tool, plus the families being added to the bridge. */
export function families(tools: string[]): Set<string> {
  const f = new Set(tools.map((t) => t.split("_")[0]));
  for (const x of ["wallet", "routine", "sandbox", "capability", "mesh", "backup", "safe"]) f.add(x);
  return f;
}

/**
 * Tool names a markdown text mentions: the first word of each backticked span when it is
 * snake_case, and every snake_case word (anywhere) whose first part is a tool family.
 */
export function mentionedTools(text: string, fams: Set<string>): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/`([^`\n]+)`/g)) {
    const w = /^([a-z][a-z0-9]*(?:_[a-z0-9]+)+)\b/.exec(m[1]);
    if (w) out.add(w[1]);
  }
  for (const m of text.matchAll(/(?<![A-Za-z0-9_.-])([a-z][a-z0-9]*(?:_[a-z0-9]+)+)(?![A-Za-z0-9_])/g)) {
    if (fams.has(m[1].split("_")[0])) out.add(m[1]);
  }
  return out;
}

/** Splits `---\n<yaml>\n---\n<body>`; throws when the frontmatter is missing. */
export function frontmatter(text: string): { meta: any; body: string } {
  const m = /^---\n([\s\S]*?)\n---\n([\s\S]*)$/.exec(text);
  if (!m) throw new Error("no YAML frontmatter (--- ... ---) at the top");
  return { meta: parseYaml(m[1]), body: m[2] };
}

const skillNames = readdirSync(skillsDir, { withFileTypes: true }).filter((d) => d.isDirectory()).map((d) => d.name).sort();

describe("the checks themselves", () => {
  const fams = families(manifestTools);
  it("finds tools in backticks and by family, and ignores other snake_case words", () => {
    const t = "Call `config_set {\"path\": \"a\"}` then config_commit; `health_checks` is a field, ttl_secs too, and `services.nginx.enable`.";
    assert.deepEqual([...mentionedTools(t, fams)].sort(), ["config_commit", "config_set", "health_checks"]);
    assert.deepEqual([...mentionedTools("wallet_send and mesh_peer_add, but not my_wallet_send", fams)].sort(), ["mesh_peer_add", "wallet_send"]);
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

describe("skills/", () => {
  it("holds the skills whose tools exist", () => {
    for (const s of ["natural-language-config", "generation-timeline", "drift-detection", "self-healing", "system-monitor",
      "service-explorer", "file-manager", "system-config", "flight-recorder", "security-hardening"]) {
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
  const docs = [
    ...skillNames.map((n) => join(skillsDir, n, "SKILL.md")),
    ...(existsSync(templatesDir) ? readdirSync(templatesDir).filter((f) => f.endsWith(".md")).map((f) => join(templatesDir, f)) : []),
  ];
  for (const file of docs) {
    it(`${file.slice(repoDir.length + 1)}: every tool it names is in contracts.tools`, () => {
      const unknown = [...mentionedTools(readFileSync(file, "utf8"), families(manifestTools))].filter((t) => !manifestTools.includes(t));
      assert.deepEqual(unknown, [], `not tools of the bridge (contracts.tools): ${unknown.join(", ")}`);
    });
  }
});

describe("the real gateway lists the skills", () => {
  let stack: Stack;
  let workspace: string;
  before(async () => {
    stack = new Stack();
    workspace = join(stack.dir, "workspace");
    cpSync(skillsDir, join(workspace, "skills"), { recursive: true });
    await stack.startGateway({ extraConfig: { agents: { defaults: { workspace } } } });
  });
  after(() => stack?.stop());

  it("`openclaw skills list --json` shows every skill, eligible with the bridge enabled", () => {
    const r = spawnSync(nodeBin, [openclawCli, "skills", "list", "--json"], {
      encoding: "utf8",
      timeout: 120_000,
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
    for (const name of skillNames) {
      const s = out.skills.find((x: any) => x.name === name);
      assert.ok(s, `the gateway does not list ${name}`);
      const { meta } = frontmatter(readFileSync(join(skillsDir, name, "SKILL.md"), "utf8"));
      assert.equal(s.description, meta.description);
      assert.match(s.source, /workspace/, `${name} should load from the workspace: ${JSON.stringify(s)}`);
      assert.equal(s.bundled, false);
      assert.deepEqual(s.missing.config, [], `${name}: ${JSON.stringify(s.missing)}`);
      assert.equal(s.eligible, true, `${name} is not eligible: ${JSON.stringify(s)}`);
      assert.equal(s.modelVisible, true, `${name} is not shown to the model: ${JSON.stringify(s)}`);
    }
  });
});
