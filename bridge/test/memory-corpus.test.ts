// osModa's memory as an OpenClaw memory corpus supplement, through the real gateway: OpenClaw's own
// memory_search and memory_get (bundled memory-core, which the gateway loads beside the bridge)
// find and read agentd's notes; lookups outside them touch nothing; agentd down is a clear error.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { spawnSync } from "node:child_process";

import { startChatGateway, turn } from "./chat.ts";
import { Stack, bridgeDir, until } from "./harness.ts";
import { ScriptedModel, lastToolResult, type ChatRequest, type Step } from "./model.ts";

const stack = new Stack();

// A person asks about an old incident; the model does what memory-core's prompt and ours tell
// it: memory_search over all corpora, memory_get of osModa's hit, then answers from those lines.
function script(req: ChatRequest): Step {
  const results = req.messages.filter((m) => m.role === "tool").length;
  const last = lastToolResult(req) ?? "";
  if (results === 0) return { tool: "memory_search", args: { query: "web-1 TLS certificate expired", corpus: "all" } };
  if (results === 1) {
    const cite = /"citation": "(osmoda\/[^"]+)"/.exec(last);
    return cite ? { tool: "memory_get", args: { path: cite[1], corpus: "all" } } : { text: `no osModa note found: ${last.slice(0, 300)}` };
  }
  const text = /"text": "((?:[^"\\]|\\.)*)"/.exec(last);
  return { text: text ? `From this machine's notes: ${JSON.parse(`"${text[1]}"`)}` : `could not read it: ${last.slice(0, 300)}` };
}
const model = new ScriptedModel(script);

/** `POST /tools/invoke` of one of memory-core's tools: 200 and its JSON result. */
async function memoryTool(tool: "memory_search" | "memory_get", args: Record<string, unknown>): Promise<any> {
  const r = await stack.invoke(tool, args);
  assert.equal(r.status, 200, `${tool} ${JSON.stringify(args)} → ${r.status} ${JSON.stringify(r.body)}`);
  assert.equal(r.body.ok, true);
  return r.body.result.details;
}

/** The newest ledger event's id. */
async function lastEvent(): Promise<number> {
  const last = await stack.newestEvent();
  return last?.id ?? 0;
}

/** The `fs.*` events after `id` (agentd records every /fs/list and /fs/read it answers). */
async function fsEventsAfter(id: number): Promise<{ type: string; payload: string }[]> {
  return stack.agentd("GET", `/events/log?type=fs.*&after_id=${id}&limit=100`);
}

/** Lines `from`..`from + n - 1` (1-based) of a note, as memory_get returns them. */
function linesOf(rel: string, from: number, n: number): string {
  return readFileSync(join(stack.memoryDir, rel), "utf8").split("\n").slice(from - 1, from - 1 + n).join("\n");
}

describe("osModa's memory in OpenClaw's memory_search and memory_get", { timeout: 600_000 }, () => {
  before(async () => {
    if (!process.env.OSMODA_MEMORY_MODEL_DIR) {
      const r = spawnSync(join(resolve(bridgeDir, ".."), "scripts", "fetch-memory-model"), { encoding: "utf8" });
      assert.equal(r.status, 0, `the embedding model is needed: ${r.stderr}`);
      process.env.OSMODA_MEMORY_MODEL_DIR = r.stdout.trim();
    }
    await model.start();
    await stack.startDaemons();
    await stack.openMemory();
    // The config the NixOS module renders (lib/: memoryDir from stateDir), plus a scripted model.
    await startChatGateway(stack, model);
  });
  after(async () => {
    await stack.stop();
    await model.stop();
  });

  let hit: any;
  let day: string;

  it("memory_search (corpus wiki and all) finds notes stored with memory_store, with osModa's path and lines", async () => {
    // memory-core is loaded beside the bridge, and the supplement is registered before any note exists.
    const empty = await memoryTool("memory_search", { query: "nginx certificate", corpus: "wiki" });
    assert.deepEqual(empty.results, []);
    assert.deepEqual(empty.corpora, [{ corpus: "wiki", outcome: "ok" }]);

    const a = await stack.invoke("memory_store", { summary: "nginx TLS certificate expired on web-1", detail: "renewed with certbot and reloaded nginx", category: "incident", tags: ["nginx"] });
    assert.equal(a.status, 200, JSON.stringify(a.body));
    day = a.body.result.details.path;
    const b = await stack.invoke("memory_store", { summary: "The owner prefers metric units", detail: "temperatures in Celsius, distances in km", durable: true });
    assert.equal(b.status, 200, JSON.stringify(b.body));

    const r = await memoryTool("memory_search", { query: "why did the website's security certificate break", corpus: "wiki", maxResults: 3 });
    assert.deepEqual(r.corpora, [{ corpus: "wiki", outcome: "ok" }]);
    assert.equal(r.warning, undefined);
    hit = r.results[0];
    assert.equal(hit.path, `osmoda/${day}`);
    assert.equal(hit.corpus, "wiki");
    assert.equal(hit.source, "osmoda");
    assert.equal(hit.provenanceLabel, "osModa memory (agentd)");
    assert.equal(hit.title, "nginx TLS certificate expired on web-1");
    assert.match(hit.snippet, /certbot/);
    assert.equal(hit.citation, `osmoda/${day}#L${hit.startLine}-L${hit.endLine}`);
    assert.equal(hit.sourcePath, join(stack.memoryDir, day));
    assert.match(hit.updatedAt, /^\d{4}-\d{2}-\d{2}T/);
    assert.ok(hit.score > 0 && hit.score <= 1, String(hit.score));
    // The lines are the note's own: the section's heading is the first of them.
    assert.equal(linesOf(day, hit.startLine, 1), "## nginx TLS certificate expired on web-1");
    assert.match(linesOf(day, hit.startLine, hit.endLine - hit.startLine + 1), /renewed with certbot/);

    // corpus all: memory-core's own (empty, keyword-only here) memory and osModa's together.
    const all = await memoryTool("memory_search", { query: "what units does the owner prefer", corpus: "all" });
    assert.deepEqual(all.corpora.map((c: any) => [c.corpus, c.outcome]), [["memory", "ok"], ["wiki", "ok"]]);
    assert.ok(all.results.some((x: any) => x.path === "osmoda/MEMORY.md" && /Celsius/.test(x.snippet)), JSON.stringify(all.results));
    // Without a corpus, memory-core searches only its own files: osModa's are not mixed in.
    const own = await memoryTool("memory_search", { query: "what units does the owner prefer" });
    assert.ok(!own.results.some((x: any) => x.path.startsWith("osmoda/")), JSON.stringify(own.results));
  });

  it("memory_get reads the lines of a note it found (corpus wiki or all, path or citation)", async () => {
    const n = hit.endLine - hit.startLine + 1;
    const g = await memoryTool("memory_get", { path: hit.path, corpus: "wiki", from: hit.startLine, lines: n });
    assert.equal(g.status, "ok");
    assert.equal(g.path, hit.path);
    assert.equal(g.text, linesOf(day, hit.startLine, n));
    assert.equal(g.fromLine, hit.startLine);
    assert.equal(g.lineCount, n);
    assert.equal(g.title, "nginx TLS certificate expired on web-1");
    assert.deepEqual(g.corpora, [{ corpus: "wiki", outcome: "ok" }]);
    // The citation as a path: its range.
    const c = await memoryTool("memory_get", { path: hit.citation, corpus: "wiki" });
    assert.equal(c.text, g.text);
    // corpus all: memory-core's own read does not know the path; osModa's answers.
    const all = await memoryTool("memory_get", { path: "osmoda/MEMORY.md", corpus: "all" });
    assert.equal(all.status, "ok");
    assert.equal(all.text, readFileSync(join(stack.memoryDir, "MEMORY.md"), "utf8").replace(/\n$/, ""));
    // A range past the end: nothing, no error.
    const past = await memoryTool("memory_get", { path: "osmoda/MEMORY.md", corpus: "wiki", from: 10_000 });
    assert.equal(past.text, "");
    assert.equal(past.lineCount, 0);
  });

  it("a full turn: the model is told about osModa's notes, finds one with memory_search and reads it with memory_get", async () => {
    const before = model.requests.length;
    const answer = await turn(stack, "What happened with the TLS certificate on web-1 last time?");
    assert.equal(model.requests.length - before, 3, `search, get, answer: ${answer}; offered ${(model.requests[before]!.tools ?? []).map((t) => t.function.name)}`);
    const first = model.requests[before]!;
    const offered = (first.tools ?? []).map((t) => t.function.name);
    for (const t of ["memory_search", "memory_get", "memory_recall"]) assert.ok(offered.includes(t), `${t} offered: ${offered}`);
    const system = JSON.stringify(first.messages.filter((m) => m.role === "system"));
    assert.match(system, /operations notes kept by osModa .* memory_search with corpus=\\"all\\" finds them \(paths starting osmoda\/\)/);
    assert.equal(answer, `From this machine's notes: ${linesOf(day, hit.startLine, hit.endLine - hit.startLine + 1)}`);
    assert.match(answer, /renewed with certbot/);
  });

  it("memory_get of anything that is not one of osModa's notes reads nothing", async () => {
    // A symbolic link named like a note, to a file outside the memory dir.
    const secret = join(stack.dir, "outside.md");
    writeFileSync(secret, "## not a note\nsecret-outside-the-memory-dir\n");
    mkdirSync(join(stack.memoryDir, "memory"), { recursive: true });
    symlinkSync(secret, join(stack.memoryDir, "memory", "2000-01-01.md"));

    const before = await lastEvent();
    for (const path of [
      "/etc/passwd", join(stack.memoryDir, "MEMORY.md"), "osmoda/../outside.md", "osmoda/memory/../../outside.md",
      "osmoda/memory/../../agentd/ledger.db", "osmoda/.index.sqlite", "osmoda/memory/.hidden.md", "osmoda/memory/sub/x.md", "MEMORY.md",
    ]) {
      const g = await memoryTool("memory_get", { path, corpus: "wiki" });
      assert.equal(g.status, "not_found", `${path}: ${JSON.stringify(g)}`);
      assert.equal(g.text, "");
    }
    // None of those reached agentd: no fs.list or fs.read was recorded.
    assert.deepEqual(await fsEventsAfter(before), []);

    // Ours by name but missing: not found. A link: refused, the target not read.
    const missing = await memoryTool("memory_get", { path: "osmoda/memory/1999-01-01.md", corpus: "wiki" });
    assert.equal(missing.status, "not_found");
    const link = await memoryTool("memory_get", { path: "osmoda/memory/2000-01-01.md", corpus: "wiki" });
    assert.equal(link.text, "");
    assert.equal(link.corpora[0].outcome, "unavailable");
    assert.match(link.warning, /osmoda\/memory\/2000-01-01\.md: \S+\/memory\/2000-01-01\.md is a symlink, not a regular file; it was not read/);
    assert.doesNotMatch(JSON.stringify(link), /secret-outside/);
    // The missing note and the link were listed (the memory dir, then memory/), never read.
    assert.deepEqual((await fsEventsAfter(before)).map((e) => e.type), ["fs.list", "fs.list", "fs.list", "fs.list"]);

    // The daily notes' directory itself a link (to a copy outside): not followed either.
    const outside = join(stack.dir, "notes-elsewhere");
    renameSync(join(stack.memoryDir, "memory"), outside);
    try {
      symlinkSync(outside, join(stack.memoryDir, "memory"));
      const viaLink = await memoryTool("memory_get", { path: hit.path, corpus: "wiki" });
      assert.equal(viaLink.text, "");
      assert.match(viaLink.warning, /: \S+\/memory is a symlink, not a directory; it was not read/);
    } finally {
      rmSync(join(stack.memoryDir, "memory"));
      renameSync(outside, join(stack.memoryDir, "memory"));
    }
    assert.ok(!(await fsEventsAfter(before)).some((e) => e.type === "fs.read"), "nothing was read");
    assert.equal((await memoryTool("memory_get", { path: hit.path, corpus: "wiki" })).status, "ok");
  });

  it("agentd down: a clear error in the tool result, and the gateway keeps serving", async () => {
    process.kill(stack.pid("agentd")!, "SIGTERM");
    await until("agentd to exit", 30_000, async () => {
      try {
        await stack.agentd("GET", "/health");
        return false;
      } catch (e) {
        return /not reachable|ECONNREFUSED|ENOENT/.test(String(e)) || String(e);
      }
    });
    const s = await memoryTool("memory_search", { query: "nginx certificate", corpus: "wiki" });
    assert.deepEqual(s.results, []);
    assert.equal(s.corpora[0].outcome, "unavailable");
    assert.match(s.warning, /agentd is not reachable at .*agentd\.sock .*is it running\?/);
    const g = await memoryTool("memory_get", { path: hit.path, corpus: "wiki" });
    assert.match(g.warning, /agentd is not reachable/);
    // corpus all: memory-core's own corpus still answers beside the unavailable one.
    const all = await memoryTool("memory_search", { query: "nginx", corpus: "all" });
    assert.deepEqual(all.corpora.map((c: any) => [c.corpus, c.outcome]), [["memory", "ok"], ["wiki", "unavailable"]]);
    // The gateway itself is fine: the same search answers again.
    await memoryTool("memory_search", { query: "units", corpus: "wiki" });
  });
});
