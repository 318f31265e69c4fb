// memory_store, memory_ingest, memory_recall and agent_card through the real gateway, on a real agentd running
// the real embedding model (fetched like CI does: scripts/fetch-memory-model).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { spawnSync } from "node:child_process";

import { Stack, ToolCalls, bridgeDir, coverageOf } from "./harness.ts";

const stack = new Stack();
const memDir = () => stack.memoryDir;

/** Every note file (not the derived index) and the newest ledger event. */
async function snapshot() {
  const files: Record<string, string> = {};
  const walk = (d: string) => {
    if (!existsSync(d)) return;
    for (const n of readdirSync(d)) {
      const p = join(d, n);
      if (statSync(p).isDirectory()) walk(p);
      else if (!n.startsWith(".index.sqlite")) files[p] = readFileSync(p, "utf8");
    }
  };
  walk(memDir());
  const last = await stack.newestEvent();
  return { files, last: last?.id ?? 0 };
}
const calls = new ToolCalls(stack, snapshot);

describe("memory tools through the real gateway", { timeout: 600_000 }, () => {
  before(async () => {
    if (!process.env.OSMODA_MEMORY_MODEL_DIR) {
      const r = spawnSync(join(resolve(bridgeDir, ".."), "scripts", "fetch-memory-model"), { encoding: "utf8" });
      assert.equal(r.status, 0, `the embedding model is needed: ${r.stderr}`);
      process.env.OSMODA_MEMORY_MODEL_DIR = r.stdout.trim();
    }
    await stack.startDaemons();
    await stack.openMemory();
    await stack.startGateway();
  });
  after(async () => {
    await stack.stop();
  });

  it("stores notes as markdown and recalls them by meaning", async () => {
    const s = await calls.ok("memory_store", { summary: "nginx TLS certificate expired on web-1", detail: "renewed with certbot and reloaded nginx", category: "incident", tags: ["nginx"] });
    assert.match(s.text, /^remembered in memory\/\d{4}-\d{2}-\d{2}\.md at /);
    assert.match(readFileSync(join(memDir(), s.details.path), "utf8"), /## nginx TLS certificate expired on web-1\nat: .* · category: incident · tags: nginx\n\nrenewed with certbot/);
    await calls.ok("memory_store", { summary: "The owner prefers metric units", durable: true });
    assert.ok(existsSync(join(memDir(), "MEMORY.md")));

    const r = await calls.ok("memory_recall", { query: "why did the website's security certificate break", max_results: 1 });
    assert.equal(r.details.mode, "hybrid");
    assert.match(r.text, /certbot/);
    const none = await calls.ok("memory_recall", { query: "nginx", timeframe: "2000-01-01T00:00:00Z..2000-01-02T00:00:00Z" });
    assert.equal(none.text, "nothing relevant in memory");

    await calls.refused("memory_store", { summary: "" }, /summary/);
    await calls.refused("memory_store", { summary: "s", detail: "x".repeat(16385) }, /detail/);
    await calls.refused("memory_recall", { query: "x", timeframe: "last tuesday" }, /timeframe/);
    await calls.refused("memory_recall", { query: "" }, /query/);
  });

  it("memory_ingest records conversation and events with their context", async () => {
    const said = await calls.ok("memory_ingest", { type: "conversation", text: "The owner said the photo library backup may only run at night after 01:00, because uploads saturate the DSL line during the day." });
    assert.match(said.text, /^remembered in memory\/\d{4}-\d{2}-\d{2}\.md at /);
    assert.match(readFileSync(join(memDir(), said.details.path), "utf8"), /## conversation\nat: \S+ · source: conversation · host: \S+\n\nThe owner said the photo library backup/);
    // An event from the past, as a ledger or journal reader would pass it: that day's note.
    const ev = await calls.ok("memory_ingest", { type: "service.restart", unit: "nginx.service", source: "journal", ts: "2026-11-29T22:10:00Z", payload: { result: "exit-code", restarts: 3 } });
    assert.equal(ev.details.path, "memory/2026-11-29.md");
    assert.match(readFileSync(join(memDir(), ev.details.path), "utf8"), /## service\.restart \(nginx\.service\)\nat: 2026-11-29T22:10:00Z · source: journal · host: \S+ · unit: nginx\.service\n\n(.|\n)*result: exit-code/);
    const last = await stack.newestEvent();
    assert.equal(last.type, "memory.ingested");
    // docs/api.md: memory.ingested {path, at, type}; `at` names the section (its time), never its body.
    assert.deepEqual(JSON.parse(last.payload), { path: "memory/2026-11-29.md", at: "2026-11-29T22:10:00Z", type: "service.restart" });
    assert.equal(ev.details.at, "2026-11-29T22:10:00Z");

    const r = await calls.ok("memory_recall", { query: "when is the photo backup allowed to run", max_results: 1 });
    assert.match(r.text, /DSL line/);
    const day = await calls.ok("memory_recall", { query: "nginx service restart", timeframe: "2026-11-29T00:00:00Z..2026-11-30T00:00:00Z" });
    assert.match(day.text, /memory\/2026-11-29\.md/);
    assert.doesNotMatch(day.text, /DSL line/);

    await calls.refused("memory_ingest", { type: "memory.stored", text: "x" }, /memory\.\* events are not ingested/);
    await calls.refused("memory_ingest", { type: "note" }, /text or a payload/);
    await calls.refused("memory_ingest", { type: "note", text: "x", ts: "last tuesday" }, /RFC 3339/);
    await calls.refused("memory_ingest", { type: "two\nlines", text: "x" }, /type/);
    await calls.refused("memory_ingest", { type: "note", text: "x".repeat(16385) }, /text/);
  });

  it("agent_card writes and shows the EIP-8004 registration file", async () => {
    const g = await calls.ok("agent_card", { generate: true, name: "test-host", description: "Operates a test machine", services: [{ name: "web", endpoint: "https://example.org/" }] });
    assert.equal(g.details.card.type, "https://eips.ethereum.org/EIPS/eip-8004#registration-v1");
    assert.deepEqual(g.details.card.services, [{ name: "web", endpoint: "https://example.org/" }]);
    const shown = await calls.ok("agent_card", {});
    assert.deepEqual(shown.details, g.details.card);
    await calls.refused("agent_card", { generate: true, name: "n", description: "d", supported_trust: ["vibes"] }, /supported_trust/);
    calls.assertCovered(coverageOf("memory"));
  });
});
