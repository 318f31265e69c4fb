// memory_store, memory_recall and agent_card through the real gateway, on a real agentd running
// the real embedding model (fetched like CI does: scripts/fetch-memory-model).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { spawnSync } from "node:child_process";

import { Stack, ToolCalls, bridgeDir, coverageOf } from "./harness.ts";

const stack = new Stack();
const memDir = () => join(stack.dir, "state", "agentd", "memory");

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
  const [last] = await stack.agentd("GET", "/events/log?order=desc&limit=1");
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
