// The config tools beyond set/unset through the real gateway on a real agentd: config_append and
// config_remove edit one element of a list option. Drift: a hand edit of the configuration tree is a
// `config.drift` event, config_status lists it, agent edits are refused while it is there, and
// config_commit records it as a generation; a destructive hand edit needs a person's approval
// (the gate's 403 with a ticket, the same call again with it); drift-detection's own diff step
// shows the edit on a root-only tree; nix-optimizer's garbage collection is held by the gate.
// Bad arguments change nothing.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { chmodSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { userInfo } from "node:os";

import { Stack, ToolCalls, bridgeDir, coverageOf, until } from "./harness.ts";
import { call } from "../src/client.ts";

// The stack (and its tree) under /var/tmp: commands run by shell_exec get a fresh /tmp of their
// own, so a tree under /tmp would be invisible to the skill's diff step.
process.env.TMPDIR = "/var/tmp";
const stack = new Stack();

/** Everything a refused call could change: HEAD, the work tree's files and agentd's newest event. */
async function snapshot() {
  const last = await stack.newestEvent();
  return { head: stack.git("rev-parse", "HEAD"), status: stack.git("status", "--porcelain"), lastEvent: last?.id ?? 0 };
}
const calls = new ToolCalls(stack, snapshot);
const conf = () => join(stack.tree, "configuration.nix");

/** Waits for the drift watcher's event that names `file` as changed (it debounces). */
async function driftOf(file: string, after: number) {
  return until(`config.drift naming ${file}`, 30_000, async () => {
    const evs = await stack.agentd("GET", `/events/log?type=config.drift&after_id=${after}&limit=100`);
    return evs.map((e: any) => JSON.parse(e.payload)).find((p: any) => p.clean === false && p.changes.some((c: any) => c.path === file));
  });
}

describe("config tools through the real gateway", { timeout: 600_000 }, () => {
  before(async () => {
    await stack.startDaemons();
    await stack.startGateway();
  });
  after(async () => {
    await stack.stop();
  });

  it("config_append adds one package to the list, keeping its layout; config_remove takes it out again", async () => {
    const before = readFileSync(conf(), "utf8");
    const a = await calls.ok("config_append", { path: "environment.systemPackages", nix: "pkgs.jq", reason: "the person wants jq" });
    assert.equal(a.details.generation.rev, stack.git("rev-parse", "HEAD"));
    assert.match(a.text, /^appended to environment\.systemPackages: committed generation /);
    const after = readFileSync(conf(), "utf8");
    assert.match(after, /environment\.systemPackages = with pkgs; \[\n    git\n    htop\n    curl\n    pkgs\.jq\n  \];/);
    assert.equal(after.replace("    pkgs.jq\n", ""), before, "nothing else in the file changed");
    const r = await calls.ok("config_remove", { path: "environment.systemPackages", nix: "jq", reason: "jq is not needed after all" });
    assert.match(r.text, /^removed from environment\.systemPackages: committed generation /);
    assert.equal(readFileSync(conf(), "utf8"), before);
    assert.match(stack.git("log", "-2", "--format=%s"), /^jq is not needed after all\nthe person wants jq$/);

    await calls.refused("config_append", { path: "environment.systemPackages", value: "jq", nix: "pkgs.jq", reason: "both" }, /exactly one of `value`/);
    await calls.refused("config_append", { path: "environment.systemPackages", nix: "pkgs.jq" }, /missing required field\(s\) \["reason"\]/);
    await calls.refused("config_append", { path: "environment.systemPackages", nix: "[ unclosed", reason: "broken" }, /agentd refused config_append environment\.systemPackages/);
    await calls.refused("config_remove", { path: "environment.systemPackages;", nix: "pkgs.jq", reason: "x" }, /path: must match pattern/);
    await calls.refused("config_remove", { path: "services.openssh.enable", value: true, reason: "not a list" }, /agentd refused config_remove services\.openssh\.enable/);
  });

  it("a clean tree: config_status says so and config_commit has nothing to record", async () => {
    const s = await calls.ok("config_status", {});
    assert.equal(s.text, "the tree is clean: every file is in a generation");
    assert.equal(s.details.clean, true);
    await calls.refused("config_status", { verbose: true }, /Invalid arguments for config_status: arguments: unknown field\(s\) \["verbose"\]/);
    await calls.refused("config_commit", { reason: "nothing there" }, /agentd refused config_commit \(conflicts with the current state; look at it and retry\): nothing to commit/);
  });

  it("a hand edit: a drift event, config_status lists it, config_set is refused, config_commit records it", async () => {
    const last = await stack.newestEvent();
    writeFileSync(conf(), readFileSync(conf(), "utf8") + "# the operator's note: keep sshd as it is\n");
    await driftOf("configuration.nix", last.id);
    const s = await calls.ok("config_status", {});
    assert.match(s.text, /^1 uncommitted change\(s\) made by hand:\nchange\s+file\n\S+\s+configuration\.nix\n/);
    // drift-detection's "show the change" step, exactly as the skill writes it (its example call
    // with the skill's tree path pointed at this tree), on a tree that is root's alone (0700) as
    // the module and install.sh make it: the patch of the hand edit comes back.
    const mode = statSync(stack.tree).mode & 0o777;
    chmodSync(stack.tree, 0o700);
    try {
      const skill = readFileSync(join(bridgeDir, "..", "skills", "drift-detection", "SKILL.md"), "utf8");
      const example = /`shell_exec (\{[^`]*"diff"[^`]*\})`/.exec(skill);
      assert.ok(example, "drift-detection shows the patch with a shell_exec example");
      const args = JSON.parse(example[1]!.replace("/var/lib/osmoda/config", stack.tree));
      const d = await calls.ok("shell_exec", args);
      assert.match(d.text, /^exit 0 /, d.text);
      assert.match(d.text, /\+# the operator's note: keep sshd as it is/);
    } finally {
      chmodSync(stack.tree, mode);
    }
    const set = await stack.invoke("config_set", { path: "services.osmoda.watch.safeSwitch.ttlSecs", value: 30, reason: "x" });
    assert.equal(set.status, 400, JSON.stringify(set.body));
    assert.match(set.body.error.message, /agentd refused config_set .*409|uncommitted|dirty/i);

    const before = stack.git("rev-parse", "HEAD");
    const c = await calls.ok("config_commit", { reason: "keep the operator's note on sshd" });
    const rev = stack.git("rev-parse", "HEAD");
    assert.notEqual(rev, before);
    assert.equal(c.details.generation.rev, rev);
    assert.match(c.text, /^recorded the hand edits: committed generation [0-9a-f]+ .*"keep the operator's note on sshd"/);
    assert.match(c.details.patch, /\+# the operator's note: keep sshd as it is/);
    assert.match(c.text, /Not applied yet\. Apply it with safe_switch_begin/);
    // Authored by the caller's user (agentd reads it from the socket's peer), with the event trailer.
    assert.equal(stack.git("log", "-1", "--format=%an"), userInfo().username);
    assert.match(stack.git("log", "-1", "--format=%B"), /keep the operator's note on sshd[\s\S]*Osmoda-Event: /);
    const committed = await stack.agentd("GET", "/events/log?type=config.committed&order=desc&limit=1");
    assert.ok(committed[0].payload.includes(rev));
    assert.equal((await calls.ok("config_status", {})).details.clean, true);
    // The drift watcher reports the tree clean again. (Wait for it: a hand edit within its
    // debounce after a commit is read together with the commit, and the watcher reports only a
    // change of the set of changed files, so that edit would not be a new event.)
    await until("config.drift saying the tree is clean", 30_000, async () =>
      (await stack.agentd("GET", `/events/log?type=config.drift&after_id=${committed[0].id}&limit=100`)).some((e: any) => JSON.parse(e.payload).clean === true),
    );
  });

  it("a destructive hand edit: config_commit gets the gate's ticket, and lands once a person approved it", async () => {
    const last = await stack.newestEvent();
    const text = readFileSync(conf(), "utf8");
    assert.match(text, /services\.openssh = \{\n    enable = true;/);
    writeFileSync(conf(), text.replace(/(services\.openssh = \{\n    enable = )true;/, "$1false;"));
    await driftOf("configuration.nix", last.id);
    const before = stack.git("rev-parse", "HEAD");
    const args = { reason: "the owner switched sshd off by hand" };

    const r = await stack.invoke("config_commit", args);
    assert.equal(r.status, 403, JSON.stringify(r.body));
    assert.match(r.body.error.message, /agentd refused config_commit: .*A person must approve this exact operation.*nothing was changed/s);
    assert.match(r.body.error.message, /call config_commit again with exactly the same arguments/);
    const ticket = /approvals approve (\S+?)`/.exec(r.body.error.message)![1]!;
    assert.equal(stack.git("rev-parse", "HEAD"), before, "nothing committed");
    const pending = (await stack.agentd("GET", "/approvals?limit=1000")).find((t: any) => t.id === ticket);
    assert.equal(pending.status, "pending");
    assert.match(JSON.stringify(pending.effect), /openssh/);

    // Retrying with a ticket nobody approved changes nothing either.
    const early = await stack.invoke("config_commit", { ...args, approval: ticket });
    assert.notEqual(early.status, 200, JSON.stringify(early.body));
    assert.equal(stack.git("rev-parse", "HEAD"), before);

    const ap = await call({ socket: stack.approvalSocket, method: "POST", path: `/approval/${ticket}/approve`, body: {}, timeoutMs: 30_000 });
    assert.equal(ap.status, 200, JSON.stringify(ap.body));
    const c = await calls.ok("config_commit", { ...args, approval: ticket });
    assert.notEqual(stack.git("rev-parse", "HEAD"), before);
    assert.match(c.details.patch, /-\s+enable = true;\n\+\s+enable = false;/);
    assert.equal(stack.git("show", "HEAD:configuration.nix"), readFileSync(conf(), "utf8").trimEnd());
    const used = (await stack.agentd("GET", "/approvals?limit=1000")).find((t: any) => t.id === ticket);
    assert.equal(used.status, "used");
    assert.equal((await calls.ok("config_status", {})).details.clean, true);
  });

  it("nix-optimizer's one-off garbage collection, exactly as the skill writes it, is held by agentd's gate for a person", async () => {
    const skill = readFileSync(join(bridgeDir, "..", "skills", "nix-optimizer", "SKILL.md"), "utf8");
    const example = /`shell_exec (\{[^`]*nix-collect-garbage[^`]*\})`/.exec(skill);
    assert.ok(example, "nix-optimizer collects garbage with a shell_exec example");
    const last = await stack.newestEvent();
    const r = await stack.invoke("shell_exec", JSON.parse(example[1]!));
    assert.equal(r.status, 403, JSON.stringify(r.body));
    assert.match(r.body.error.message, /A person must approve this exact operation/);
    assert.match(r.body.error.message, /\/nix\/var\/nix\/profiles/);
    const ran = await stack.agentd("GET", `/events/log?type=system.exec&after_id=${last.id}&limit=10`);
    assert.deepEqual(ran, [], "nothing ran");
  });

  it("bad arguments are refused before agentd sees them", async () => {
    await calls.refused("config_commit", {}, /Invalid arguments for config_commit: arguments: missing required field\(s\) \["reason"\]/);
    await calls.refused("config_commit", { reason: "r", approval: 7 }, /approval: must be string/);
  });

  it("covers every config tool", () => calls.assertCovered(coverageOf("config")));
});
