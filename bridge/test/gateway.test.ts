// Integration: real agentd + osmoda-watch (local backend) + the real OpenClaw gateway with the
// bridge loaded. Every tool in contracts.tools is invoked through POST /tools/invoke with valid
// arguments (asserting the daemon-side effect) and with invalid ones (a clear error, nothing
// changed).
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, readFileSync } from "node:fs";

import { Stack, coverageOf, until } from "./harness.ts";
import { call } from "../src/client.ts";

const invoked = new Set<string>();
const refused = new Set<string>();
const stack = new Stack();

/**
 * Everything a call could change: the tree's HEAD, the switch count, and the newest ledger event
 * not delivered by osmoda-watch's spool (which keeps delivering earlier switches' events in the
 * background; a refused switch call shows up in the switch count instead).
 */
async function snapshot() {
  const last = await stack.newestEvent((e) => e.actor.startsWith("osmoda-watch"));
  const switches = await stack.watch("GET", "/switch/history");
  return { lastEvent: last?.id ?? 0, head: stack.git("rev-parse", "HEAD"), switches: switches.length };
}

async function ok(tool: string, args: unknown) {
  const r = await stack.invoke(tool, args);
  assert.equal(r.status, 200, `${tool} ${JSON.stringify(args)} → ${r.status} ${JSON.stringify(r.body)}`);
  assert.equal(r.body.ok, true);
  invoked.add(tool);
  return { text: r.body.result.content[0].text as string, details: r.body.result.details as any };
}

/** An invalid call: 400 with a message matching `message`, and nothing changed anywhere. */
async function refusedCall(tool: string, args: unknown, message: RegExp, status = 400) {
  const before = await snapshot();
  const r = await stack.invoke(tool, args);
  assert.equal(r.status, status, `${tool} ${JSON.stringify(args)} → ${r.status} ${JSON.stringify(r.body)}`);
  assert.equal(r.body.ok, false);
  assert.match(r.body.error.message, message);
  assert.deepEqual(await snapshot(), before, `${tool}: nothing may change`);
  refused.add(tool);
}

async function events(type: string) {
  return stack.agentd("GET", `/events/log?type=${encodeURIComponent(type)}&limit=1000`);
}

async function switchSettles(id: number) {
  return until(`switch ${id} to settle`, 60_000, async () => {
    const s = await stack.watch("GET", `/switch/status/${id}`);
    return ["committed", "rolled-back", "failed"].includes(s.state) && s;
  });
}

describe("bridge through the real gateway", { timeout: 600_000 }, () => {
  before(async () => {
    await stack.startDaemons();
    // The starter tree watches sshd through systemd, which this machine does not run.
    await stack.agentd("POST", "/config/unset", { path: "services.osmoda.watch.watchers.sshd", reason: "no systemd in the test" });
    await stack.startGateway();
  });
  after(async () => {
    await stack.stop();
  });

  it("system_health, system_query and network_info report what agentd sees", async () => {
    const direct = await stack.agentd("GET", "/health");
    const h = await ok("system_health", {});
    assert.equal(h.details.cpu.cores, direct.cpu.cores);
    assert.match(h.text, new RegExp(`of ${direct.cpu.cores} cores`));
    const users = await ok("system_query", { query: "users" });
    assert.ok(users.details.some((u: any) => u.name === "root" && u.uid === 0));
    const net = await ok("network_info", {});
    assert.ok(net.details.interfaces.some((i: any) => i.name === "lo"));
    assert.match(net.text, /^interface\s+up\s+addresses/);

    await refusedCall("system_health", { now: true }, /Invalid arguments for system_health: arguments: unknown field\(s\) \["now"\]/);
    await refusedCall("system_query", { query: "shadow" }, /query: must be one of/);
    await refusedCall("system_query", { query: "kernel", args: { keys: ["../../etc/shadow"] } }, /agentd refused system_query kernel/);
    await refusedCall("network_info", { iface: "lo" }, /unknown field/);
  });

  it("file_write, file_read and directory_list: audited, and the config tree is refused with a pointer to config_set", async () => {
    const file = `${stack.dir}/work/motd`;
    const w = await ok("file_write", { path: file, content: "welcome\n", create_dirs: true });
    assert.equal(readFileSync(file, "utf8"), "welcome\n");
    assert.match(w.text, /^created .*motd \(8 bytes, mode 644\); sha256 \(new\) → [0-9a-f]{64}; ledger event \d+$/);
    const [ev] = await events("fs.write");
    assert.equal(JSON.parse(ev.payload).sha256_after, w.details.sha256_after);
    const r = await ok("file_read", { path: file });
    assert.equal(r.details.content, "welcome\n");
    const l = await ok("directory_list", { path: `${stack.dir}/work` });
    assert.deepEqual(l.details.entries.map((e: any) => e.name), ["motd"]);
    assert.match(l.text, /file\s+644\s+8\s+motd/);

    const nixFile = `${stack.tree}/osmoda.nix`;
    const before = readFileSync(nixFile, "utf8");
    await refusedCall("file_write", { path: nixFile, content: "{ }" }, /agentd refused file_write .*config_set/);
    assert.equal(readFileSync(nixFile, "utf8"), before);
    await refusedCall("file_write", { path: file, content: "a", content_base64: "YQ==" }, /exactly one of `content`/);
    await refusedCall("file_read", { path: "motd" }, /path: must match pattern/);
    await refusedCall("file_read", { path: `${stack.dir}/state/agentd/ledger.db` }, /agentd refused file_read .*cannot see/);
    await refusedCall("directory_list", { path: `${stack.dir}/work/nothing` }, /agentd refused directory_list .*No such file/);
  });

  it("shell_exec runs inside the boundary, audited; the approval socket stays out of reach", async () => {
    const r = await ok("shell_exec", { command: "echo hi; id -un" });
    assert.match(r.text, /^exit 0 after \d+ ms as nobody\nstdout:\nhi\nnobody\n/);
    const [ev] = await stack.agentd("GET", "/events/log?type=system.exec&order=desc&limit=1");
    assert.equal(ev.id, r.details.event_id);
    const ro = await ok("shell_exec", { argv: ["touch", "/etc/osmoda-bridge-test"], user: "root" });
    assert.match(ro.text, /Read-only file system[\s\S]*config_set/);
    const ap = await ok("shell_exec", { argv: ["curl", "-sS", "--unix-socket", stack.approvalSocket, "http://x/approvals"] });
    assert.notEqual(ap.details.exit_code, 0);
    const piped = await ok("shell_exec", { command: "tr a-z A-Z", stdin: "piped in\n" });
    assert.match(piped.text, /stdout:\nPIPED IN\n/);
    const [pev] = await stack.agentd("GET", "/events/log?type=system.exec&order=desc&limit=1");
    assert.equal(JSON.parse(pev.payload).stdin_bytes, 9);

    await refusedCall("shell_exec", { command: "true", argv: ["true"] }, /exactly one of `command`/);
    await refusedCall("shell_exec", { command: "cat", stdin: 5 }, /stdin: /);
    await refusedCall("shell_exec", { command: "true", writable: [stack.tree] }, /agentd refused shell_exec: .*config_set/);
    await refusedCall("shell_exec", { command: "true", user: "no-such-user-osmoda" }, /agentd refused shell_exec: user "no-such-user-osmoda" is not one a command may run as/);
  });

  it("service_status and journal_logs read systemd, or say clearly that it is absent here", async () => {
    const systemd = existsSync("/run/systemd/system");
    for (const [tool, args] of [["service_status", { unit: "systemd-journald" }], ["journal_logs", { unit: "systemd-journald", lines: 5 }]] as const) {
      const r = await stack.invoke(tool, args);
      if (systemd) {
        assert.equal(r.status, 200, JSON.stringify(r.body));
      } else {
        assert.equal(r.status, 400, JSON.stringify(r.body));
        assert.match(r.body.error.message, new RegExp(`agentd cannot do ${tool} .*here: .*unavailable here: systemd is not running`));
      }
      invoked.add(tool);
    }
    await refusedCall("service_status", { unit: "-H evil" }, /agentd refused service_status -H evil: unit .* is not a systemd unit name/);
    await refusedCall("journal_logs", { priority: "loud" }, /`priority` must be/);
  });

  it("incidents: create and step land in the ledger; event_log reads them back", async () => {
    const inc = await ok("incident_create", { name: "nginx keeps dying" });
    const id = inc.details.id;
    assert.match(inc.text, new RegExp(`incident ${id} "nginx keeps dying" opened`));
    const step = await ok("incident_step", { id, action: "restarted nginx", result: "up again" });
    assert.equal(step.details.steps.length, 1);
    const ledger = await events("incident.*");
    assert.ok(ledger.some((e: any) => JSON.parse(e.payload).name === "nginx keeps dying"));
    assert.ok(ledger.some((e: any) => JSON.parse(e.payload).action === "restarted nginx"));
    const log = await ok("event_log", { type: "incident.*", order: "desc", limit: 10 });
    assert.deepEqual(log.details.map((e: any) => e.id), ledger.map((e: any) => e.id).reverse().slice(0, 10));

    await refusedCall("incident_create", { name: "" }, /name: must not have fewer than 1 characters/);
    await refusedCall("incident_step", { id, action: "x" }, /missing required field\(s\) \["result"\]/);
    await refusedCall("incident_step", { id: 99999, action: "x", result: "y" }, /agentd refused incident_step on incident 99999 \(not found\)/);
    await refusedCall("event_log", { limit: 100000 }, /limit: must be <= 10000/);
    await refusedCall("event_log", { since: "yesterday" }, /agentd refused event_log/);
  });

  it("receipt_list returns receipt.* events", async () => {
    const refused = await call({ socket: stack.agentdSocket, method: "POST", path: "/events/append",
      body: { type: "receipt.backup", daemon: "osmoda-test", payload: { bytes: 41 } }, timeoutMs: 30_000 });
    assert.equal(refused.status, 403, "receipt. is osmoda-keyd's namespace");
    stack.appendAs("osmoda-keyd", { type: "receipt.backup", payload: { bytes: 42 } });
    const r = await ok("receipt_list", { type: "backup" });
    assert.equal(r.details.length, 1);
    assert.deepEqual(r.details[0].receipt, { bytes: 42 });
    await refusedCall("receipt_list", { limit: -1 }, /limit: must be >= 1/);
  });

  let firstRev = "";
  let setRev = "";
  const path = "services.osmoda.watch.safeSwitch.ttlSecs";

  it("config_set commits a generation (git + ledger) and says how to apply it; config_get reads it", async () => {
    firstRev = stack.git("rev-parse", "HEAD");
    const r = await ok("config_set", { path, value: 45, reason: "give switches more time" });
    setRev = stack.git("rev-parse", "HEAD");
    assert.notEqual(setRev, firstRev);
    assert.equal(r.details.generation.rev, setRev);
    assert.match(r.text, /Not applied yet\. Apply it with safe_switch_begin \{"generation": "[0-9a-f]{40}"\}/);
    assert.match(r.details.patch, /\+.*ttlSecs = 45;/);
    assert.match(stack.git("log", "-1", "--format=%B"), /give switches more time[\s\S]*Osmoda-Event: /);
    const committed = await events("config.committed");
    assert.ok(committed.some((e: any) => JSON.parse(e.payload).rev === setRev || e.payload.includes(setRev)));
    const g = await ok("config_get", { path });
    assert.equal(g.details.value, 45);

    await refusedCall("config_set", { path, nix: "{ unclosed", reason: "broken" }, /agentd refused config_set services\.osmoda\.watch\.safeSwitch\.ttlSecs/);
    await refusedCall("config_set", { path, value: 1, nix: "1", reason: "both" }, /exactly one of `value`/);
    await refusedCall("config_set", { path: "services.osmoda.$bad", value: 1, reason: "x" }, /path: must match pattern/);
    await refusedCall("config_get", { path: "services.osmoda.nothing.here" }, /agentd refused config_get services\.osmoda\.nothing\.here \(not found\)/);
    await refusedCall("config_get", {}, /missing required field\(s\) \["path"\]/);
  });

  it("config_log, config_diff and config_revert", async () => {
    const log = await ok("config_log", { limit: 3 });
    assert.equal(log.details[0].rev, setRev);
    const diff = await ok("config_diff", { from: firstRev, to: setRev });
    assert.match(diff.details.patch, /ttlSecs = 45/);
    const rev = await ok("config_revert", { rev: setRev, reason: "45 s was too long" });
    assert.notEqual(rev.details.generation.rev, setRev);
    assert.equal(stack.git("rev-parse", "HEAD"), rev.details.generation.rev);
    assert.match(rev.details.patch, /-.*ttlSecs = 45;/);

    await refusedCall("config_log", { limit: 0 }, /limit: must be >= 1/);
    await refusedCall("config_diff", { from: "no-such-generation" }, /agentd refused config_diff no-such-generation/);
    await refusedCall("config_revert", { rev: "no-such-generation", reason: "x" }, /agentd refused config_revert/);
  });

  it("config_unset removes a definition as a new generation", async () => {
    await ok("config_set", { path: "services.osmoda.watch.watchers.port22", value: { check: { type: "tcp", host: "127.0.0.1", port: 22 }, intervalSecs: 60, actions: ["notify"] }, reason: "watch ssh" });
    const before = stack.git("rev-parse", "HEAD");
    const r = await ok("config_unset", { path: "services.osmoda.watch.watchers.port22", reason: "not needed" });
    assert.notEqual(r.details.generation.rev, before);
    assert.doesNotMatch(readFileSync(`${stack.tree}/osmoda.nix`, "utf8"), /port22/);
    await refusedCall("config_unset", { path: "services.osmoda.watch.watchers.port22" }, /missing required field\(s\) \["reason"\]/);
  });

  it("safe_switch_begin returns the preview and the switch id; the switch commits", async () => {
    const head = stack.git("rev-parse", "HEAD");
    const r = await ok("safe_switch_begin", { generation: head, ttl_secs: 1, plan: "apply the reverted ttl", health_checks: [{ type: "agentd" }] });
    assert.equal(r.details.preview.to, head);
    assert.match(r.text, new RegExp(`^switch ${r.details.switch.id}: generation ${head.slice(0, 12)}`));
    const s = await switchSettles(r.details.switch.id);
    assert.equal(s.state, "committed");
    const st = await ok("safe_switch_status", { id: s.id });
    assert.match(st.text, /is committed; done/);
    // osmoda-watch delivers its events through a spool, so the ledger may trail the state.
    await until("watch.switch.committed in the ledger", 30_000, async () =>
      (await events("watch.switch.*")).some((e: any) => e.type === "watch.switch.committed" && JSON.parse(e.payload).id === s.id),
    );

    await refusedCall("safe_switch_begin", { health_checks: [{ type: "http", url: "file:///etc/passwd" }] }, /health_checks\.0\.url: must match pattern/);
    await refusedCall("safe_switch_begin", { generation: "no-such-generation", ttl_secs: 1 }, /osmoda-watch refused safe_switch_begin/);
    await refusedCall("safe_switch_status", { id: 424242 }, /osmoda-watch refused safe_switch_status 424242 \(not found\)/);
    await refusedCall("safe_switch_status", { id: "one" }, /id: must be integer/);
  });

  it("safe_switch_commit ends probing early; safe_switch_rollback rolls back", async () => {
    const head = stack.git("rev-parse", "HEAD");
    const a = await ok("safe_switch_begin", { generation: head, ttl_secs: 3600 });
    await until("probing", 30_000, async () => (await stack.watch("GET", `/switch/status/${a.details.switch.id}`)).state === "probing");
    const c = await ok("safe_switch_commit", { id: a.details.switch.id });
    assert.equal((await switchSettles(c.details.id)).state, "committed");

    const b = await ok("safe_switch_begin", { generation: head, ttl_secs: 3600 });
    await until("probing", 30_000, async () => (await stack.watch("GET", `/switch/status/${b.details.switch.id}`)).state === "probing");
    const rb = await ok("safe_switch_rollback", { id: b.details.switch.id, reason: "changed my mind" });
    assert.equal((await switchSettles(rb.details.id)).state, "rolled-back");

    await refusedCall("safe_switch_commit", { id: 0 }, /id: must be >= 1/);
    await refusedCall("safe_switch_commit", { id: 424242 }, /osmoda-watch refused safe_switch_commit 424242/);
    await refusedCall("safe_switch_rollback", { id: 424242, reason: "x" }, /osmoda-watch refused safe_switch_rollback 424242/);
  });

  it("watcher_add declares the watcher (a commit) and applies it; watcher_list shows it", async () => {
    const before = stack.git("rev-parse", "HEAD");
    const r = await ok("watcher_add", { name: "agentd-alive", check: { type: "agentd" }, interval_secs: 5, actions: ["notify"], ttl_secs: 1 });
    const rev = r.details.config.generation.rev;
    assert.notEqual(rev, before);
    assert.equal(stack.git("rev-parse", "HEAD"), rev);
    assert.match(readFileSync(`${stack.tree}/osmoda.nix`, "utf8"), /agentd-alive/);
    assert.equal((await switchSettles(r.details.switch.id)).state, "committed");
    const list = await until("the watcher to run", 30_000, async () => {
      const l = await ok("watcher_list", {});
      return l.details.some((w: any) => w.name === "agentd-alive") && l;
    });
    assert.match(list.text, /agentd-alive\s+agentd\s+5s\s+notify/);

    await refusedCall("watcher_add", { name: "x y", check: { type: "agentd" }, interval_secs: 5, actions: ["notify"] }, /name: must match pattern/);
    await refusedCall("watcher_add", { name: "ok", check: { type: "systemd" }, interval_secs: 5, actions: ["notify"] }, /check: missing required field\(s\) \["unit"\]/);
    await refusedCall("watcher_list", { all: true }, /unknown field/);
  });

  it("every tool of agentd.ts and watch.ts was invoked successfully and refused bad input", () => {
    assert.deepEqual([...invoked].sort(), coverageOf("agentd", "watch").sort());
    assert.deepEqual([...refused].sort(), coverageOf("agentd", "watch").sort());
  });
});
