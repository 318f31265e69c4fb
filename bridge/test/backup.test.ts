// The backup tools through the real gateway on a real agentd: backup_create archives the machine
// (recorded in the ledger), backup_list shows it; bad arguments change nothing. There is no
// restore tool: a restore needs a person (agentctl backup restore, behind an approval).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";

import { Stack, ToolCalls, coverageOf } from "./harness.ts";

const stack = new Stack();

/** Everything a refused backup call could change: the archives and the ledger's backup events. */
async function snapshot() {
  const list = await stack.agentd("GET", "/backup/list");
  const events = await stack.agentd("GET", "/events/log?type=backup.*&limit=1000");
  return { backups: list.backups.map((b: any) => b.id), events: events.length };
}
const calls = new ToolCalls(stack, snapshot);

describe("backup tools through the real gateway", { timeout: 600_000 }, () => {
  before(async () => {
    await stack.startDaemons();
    await stack.startGateway();
  });
  after(async () => {
    await stack.stop();
  });

  it("backup_list says there is none yet, backup_create makes one and backup_list shows it", async () => {
    const empty = await calls.ok("backup_list", {});
    assert.equal(empty.text, "no backups yet");
    const head = stack.git("rev-parse", "HEAD").trim();
    const made = await calls.ok("backup_create", { reason: "before the upgrade" });
    assert.match(made.text, /^backup \d{8}T\d{9}Z-[0-9a-f]{8}: /);
    assert.equal(made.details.tree_commit, head);
    assert.match(made.text, new RegExp(`config tree ${head}`));
    const events = await stack.agentd("GET", "/events/log?type=backup.created");
    assert.equal(events.length, 1);
    assert.equal(JSON.parse(events[0].payload).reason, "before the upgrade");
    assert.equal(JSON.parse(events[0].payload).manifest_sha256, made.details.manifest_sha256);
    await calls.ok("backup_create", {});
    const list = await calls.ok("backup_list", {});
    assert.equal(list.details.backups.length, 2);
    assert.equal(list.details.backups[1].id, made.details.id, "newest first");
    assert.match(list.text, new RegExp(`${made.details.id}\\s`));
  });

  it("refuses bad arguments and changes nothing", async () => {
    await calls.refused("backup_create", { reason: "" }, /reason/);
    await calls.refused("backup_create", { backup_id: "x" }, /unknown field/);
    await calls.refused("backup_list", { all: true }, /unknown field/);
  });

  it("offers no restore tool (a restore is a person's decision)", () => {
    assert.deepEqual(coverageOf("backup").sort(), ["backup_create", "backup_list"]);
  });

  it("covers every backup tool", () => calls.assertCovered(coverageOf("backup")));
});
