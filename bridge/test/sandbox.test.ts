// The untrusted-code tools through the real gateway: sandbox_exec in Ring 2 (no network, no
// secrets) and Ring 1 (only the declared capability, through a real osmoda-egress), and
// capability_mint. The capability is configuration: declared with config_set's API in the tree
// and applied by SafeSwitch into egress.json, which agentd and osmoda-egress both read.
// Everything listens on loopback only; the Ring 1 sandbox has its own network namespace.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { join } from "node:path";

import { Stack, ToolCalls, coverageOf, daemonBinDir, until } from "./harness.ts";

const stack = new Stack();

/** Everything a refused call could change: the ledger's sandbox and mint events. */
async function snapshot() {
  const exec = await stack.agentd("GET", "/events/log?type=sandbox.exec&limit=1000");
  const mint = await stack.agentd("GET", "/events/log?type=capability.mint&limit=1000");
  return { exec: exec.length, mint: mint.length };
}
const calls = new ToolCalls(stack, snapshot);

let egress: ChildProcess | undefined;
let web: Server | undefined;
let webPort = 0;

function listen(s: Server): Promise<number> {
  return new Promise((res) => s.listen(0, "127.0.0.1", () => res((s.address() as { port: number }).port)));
}

describe("sandbox tools through the real gateway", { timeout: 600_000 }, () => {
  before(async () => {
    web = createServer((_req, res) => res.end("hello from loopback\n"));
    webPort = await listen(web);
    const probe = createServer();
    const proxyPort = await listen(probe); // a free port for the proxy
    await new Promise((r) => probe.close(r));
    await stack.startDaemons();
    const set = (path: string, value: unknown) =>
      stack.agentd("POST", "/config/set", { path, value, reason: `sandbox test: ${path}` });
    // The test's web server is on loopback, so only this test's allow range lets egress dial it.
    await set("services.osmoda.egress.capabilities", { web: { domains: ["*.allowed.test"], ports: [webPort] } });
    await set("services.osmoda.egress.allowRanges", ["127.0.0.1/32"]);
    await set("services.osmoda.egress.listen", `127.0.0.1:${proxyPort}`);
    await set("services.osmoda.egress.publicKeyFile", join(stack.dir, "capability", "public.key"));
    await set("services.osmoda.egress.revocationFile", join(stack.dir, "capability", "revoked"));
    await stack.applyHead();
    const bin = daemonBinDir();
    egress = spawn(join(bin, "osmoda-egress"), [
      "--config", join(stack.etc, "osmoda", "egress.json"), "--socket", join(stack.dir, "run", "egress.sock"),
      "--proxy-socket", stack.egressProxySocket, "--state-dir", join(stack.dir, "state", "egress"),
      "--agentd-socket", stack.agentdSocket,
    ], { stdio: "inherit" });
    await until("osmoda-egress's status socket", 30_000, () => existsSync(join(stack.dir, "run", "egress.sock")) || (egress!.exitCode !== null && assert.fail("osmoda-egress exited")));
    await stack.startGateway();
  });
  after(async () => {
    if (egress && egress.exitCode === null) {
      const gone = new Promise((r) => egress!.once("exit", r));
      egress.kill("SIGTERM");
      await gone;
    }
    web?.closeAllConnections();
    web?.close();
    await stack.stop();
  });

  it("sandbox_exec without capabilities: Ring 2, no inet socket, no secrets, recorded", async () => {
    const r = await calls.ok("sandbox_exec", {
      command: `perl -e 'use Socket; socket(my $s, AF_INET, SOCK_STREAM, 0) ? print "inet opened\\n" : print "inet refused: $!\\n"'; cat /etc/shadow; ls ${stack.dir}; id -un`,
      timeout_sec: 30,
    });
    assert.match(r.text, /^exit 0 after \d+ ms \(Ring 2, no network\)/);
    assert.match(r.details.stdout, /inet refused: Operation not permitted\nnobody\n$/);
    assert.match(r.details.stderr, /\/etc\/shadow: No such file/);
    const ev = (await stack.agentd("GET", "/events/log?type=sandbox.exec&order=desc&limit=1"))[0];
    assert.equal(ev.id, r.details.event_id);

    await calls.refused("sandbox_exec", { timeout_sec: 5 }, /give exactly one of `command`/);
    await calls.refused("sandbox_exec", { command: "true", memory_mb: 1 }, /memory_mb: must be >= 16/);
    await calls.refused("sandbox_exec", { command: "true", user: "root" }, /unknown field/);
  });

  it("sandbox_exec with a capability: Ring 1 reaches only the granted port through osmoda-egress", async () => {
    const curl = (port: number) => `curl -sS --max-time 20 --proxytunnel http://127.0.0.1:${port}/ 2>&1 || echo "failed $?"`;
    const otherServer = createServer((_q, s) => s.end("other\n"));
    const other = await listen(otherServer);
    const r = await calls.ok("sandbox_exec", { command: `${curl(webPort)}; ${curl(other)}`, capabilities: ["web"], timeout_sec: 60 }).finally(() => {
      otherServer.closeAllConnections();
      otherServer.close();
    });
    assert.match(r.text, new RegExp(`\\(Ring 1, network only to web: \\*\\.allowed\\.test on port ${webPort}\\)`));
    const lines = r.details.stdout.split("\n");
    assert.equal(lines[0], "hello from loopback", r.details.stdout);
    assert.match(r.details.stdout, /CONNECT tunnel failed, response 403/);
    assert.doesNotMatch(r.details.stdout, /^other$/m);
    assert.equal(r.details.ring, 1);

    await calls.refused("sandbox_exec", { command: "true", capabilities: ["npm"] }, /not declared in services\.osmoda\.egress\.capabilities/);
    await calls.refused("sandbox_exec", { command: "true", capabilities: { web: { domains: ["*.test"] } } }, /only narrow/);
  });

  it("capability_mint: a narrowed token for a declared capability; the ledger never holds it", async () => {
    const r = await calls.ok("capability_mint", { granted_to: "ci-app", permissions: { web: { domains: ["api.allowed.test"] } }, ttl_sec: 600 });
    assert.match(r.text, new RegExp(`^token [0-9a-f]{32} for ci-app, valid until .*: web: api\\.allowed\\.test on port ${webPort}`));
    assert.match(r.details.token, /^osm1\./);
    const ev = (await stack.agentd("GET", "/events/log?type=capability.mint&order=desc&limit=1"))[0];
    assert.ok(!JSON.stringify(ev).includes(r.details.token));

    await calls.refused("capability_mint", { granted_to: "x", permissions: ["web"], ttl_sec: 0 }, /ttl_sec: must be >= 1/);
    await calls.refused("capability_mint", { granted_to: "x", permissions: { web: { ports: [22] } }, ttl_sec: 60 }, /port 22/);
  });

  it("every tool of sandbox.ts was invoked successfully and refused bad input", () => {
    calls.assertCovered(coverageOf("sandbox"));
  });
});
