// Approvals where the person chats, in full agent turns through the real gateway: the scripted
// model asks to disable sshd, agentd's gate refuses with a ticket, the model asks again, the
// gateway shows the bridge's plugin approval to the connected approval client (this test, as the
// Control UI would be), and the answer is relayed to agentd by the bridge's resolution callback.
// Also OpenClaw's built-in file tools: a write into the configuration tree is blocked, one
// elsewhere is recorded in the ledger.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";

import { Stack, renderGatewayConfig, until } from "./harness.ts";
import { ScriptedModel, lastToolResult, type ChatRequest, type Step } from "./model.ts";

const stack = new Stack();
const DISABLE = { file: "configuration.nix", path: "services.openssh.enable", value: false, reason: "the person asked to disable sshd" };
const elsewhere = join(stack.dir, "notes", "todo.txt");

/**
 * What the model does next in one conversation: the tool calls of `plan` in order, where
 * `"disable"` is config_set of DISABLE, repeated while its refusal says to call it again (as a
 * model following the tool's text would); then the last result as text.
 */
let plan: (Step | "disable")[] = [];
function script(req: ChatRequest): Step {
  if (req.messages.filter((m) => m.role === "tool").length > 6) return { text: "RESULT: too many steps" };
  const last = lastToolResult(req);
  const done = req.messages.filter((m) => m.role === "tool").length;
  const i = plan.indexOf("disable");
  if (i >= 0 && done >= i && (done === i || last?.includes("call config_set again"))) return { tool: "config_set", args: DISABLE };
  const next = i >= 0 ? plan.filter((s) => s !== "disable")[done - 1] : plan[done];
  if (next && next !== "disable") return next;
  return { text: `RESULT: ${last ?? ""}` };
}
const model = new ScriptedModel(script);

/** The approval surface: a gateway client with the approvals scope, answering as told. */
let answer: "allow-once" | "deny" | "ignore" = "ignore";
const requested: any[] = [];
let client: any;

async function turn(text: string, steps: (Step | "disable")[]): Promise<string> {
  plan = steps;
  const res = await fetch(`http://127.0.0.1:${stack.port}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${stack.token}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "openclaw", messages: [{ role: "user", content: text }] }),
  });
  const body: any = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  return body.choices[0].message.content as string;
}

const head = () => stack.git("rev-parse", "HEAD");
const sshd = () => readFileSync(join(stack.tree, "configuration.nix"), "utf8");
async function tickets(): Promise<any[]> {
  return stack.agentd("GET", "/approvals?limit=1000");
}

before(async () => {
  await model.start();
  await stack.startDaemons();
  await stack.startGateway({
    render: (pluginDir, port) => {
      const c = renderGatewayConfig(
        {
          configTree: stack.tree,
          agentd: { socket: stack.agentdSocket },
          watch: { socket: stack.watchSocket },
          gateway: { port, relaySocket: stack.relaySocket },
        },
        pluginDir,
        stack.dir,
      );
      c.plugins.entries["osmoda-bridge"].config.approvalTimeoutSecs = 20;
      c.gateway.http = { endpoints: { chatCompletions: { enabled: true } } };
      c.models = {
        mode: "merge",
        providers: {
          scripted: {
            baseUrl: `http://127.0.0.1:${model.port}/v1`,
            apiKey: "scripted-model",
            api: "openai-completions",
            models: [{ id: "turns", name: "Scripted turns", reasoning: false, input: ["text"], cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }, contextWindow: 1000000, maxTokens: 4096 }],
          },
        },
      };
      // The agent's workspace: relative paths of the built-in file tools resolve here.
      c.agents = { defaults: { model: { primary: "scripted/turns" }, workspace: stack.dir } };
      return c;
    },
  });
  // The gateway client keeps its device identity under the state dir it is given.
  process.env.OPENCLAW_STATE_DIR = join(stack.dir, "approver");
  const { GatewayClient } = await import("openclaw/plugin-sdk/gateway-runtime");
  let ready: () => void;
  const hello = new Promise<void>((r) => (ready = r));
  client = new GatewayClient({
    url: `ws://127.0.0.1:${stack.port}`,
    token: stack.token,
    role: "operator",
    // The owner's operator scopes, as the Control UI or `openclaw approvals` use them.
    scopes: ["operator.admin", "operator.approvals", "operator.read"],
    caps: ["plugin-approvals"],
    onHelloOk: (h: any) => {
      assert.ok(h.auth.scopes.includes("operator.approvals"), JSON.stringify(h.auth));
      ready();
    },
    onEvent: (evt: any) => {
      if (evt.event !== "plugin.approval.requested") return;
      requested.push(evt.payload);
      if (answer !== "ignore") void client.request("plugin.approval.resolve", { id: evt.payload.id, decision: answer });
    },
  });
  client.start();
  await hello;
});
after(async () => {
  await client?.stopAndWait({ timeoutMs: 5000 }).catch(() => {});
  await stack.stop();
  await model.stop();
});

test("a gate refusal tells the model how to ask the owner; a denial in the chat is recorded and changes nothing", { timeout: 240_000 }, async () => {
  const before = head();
  answer = "deny";
  const out = await turn("disable sshd", ["disable"]);
  // The first refusal told the model what to do; the second call showed the person the effect.
  const first = model.requests.map((r) => lastToolResult(r)).find((t) => t?.includes("call config_set again"));
  assert.ok(first, "the refusal says how to ask the owner");
  assert.equal(requested.length, 1, JSON.stringify(requested));
  const shown = requested[0].request ?? requested[0];
  assert.match(JSON.stringify(shown), /disables service openssh: services\.openssh\.enable true → false/);
  assert.match(out, /RESULT: .*(denied|Denied)/s);
  assert.equal(head(), before);
  const t = (await tickets()).find((x) => JSON.stringify(shown).includes(x.id));
  assert.equal(t.status, "denied");
  assert.match(t.decided_by, /^human\[channel=webchat,sender=-,owner=true,via=relay,uid=\d+,/);
});

test("no answer before the timeout changes nothing and decides nothing", { timeout: 240_000 }, async () => {
  const before = head();
  answer = "ignore";
  const n = requested.length;
  const out = await turn("disable sshd", ["disable"]);
  assert.equal(requested.length, n + 1);
  assert.match(out, /RESULT: .*timed out/is);
  assert.equal(head(), before);
  const id = JSON.stringify(requested[n]).match(/osModa ticket ([A-Za-z0-9-]+)/)![1];
  const t = (await tickets()).find((x) => x.id === id);
  assert.equal(t.status, "pending", JSON.stringify(t));
  assert.equal(t.decided_by, null);
});

test("shell_exec cannot reach the relay socket or the approval socket", { timeout: 120_000 }, async () => {
  // The ticket the timed-out ask left pending.
  const open = (await tickets()).filter((t) => t.status === "pending" && t.origin === "gate");
  assert.equal(open.length, 1, JSON.stringify(open));
  const id = open[0].id;
  for (const [sock, path, body] of [
    [stack.relaySocket, `/relay/approval/${id}`, JSON.stringify({ decision: "approve", requester: { channel: "telegram", owner: true } })],
    [stack.approvalSocket, `/approval/${id}/approve`, "{}"],
  ]) {
    for (const user of ["nobody", "root"]) {
      const r = await stack.invoke("shell_exec", {
        argv: ["curl", "-sS", "-X", "POST", "-H", "content-type: application/json", "-d", body!, "--unix-socket", sock!, `http://agentd${path}`],
        user,
        timeout_secs: 30,
      });
      assert.equal(r.status, 200, JSON.stringify(r.body));
      const d = r.body.result.details;
      assert.notEqual(d.exit_code, 0, `${user} reached ${sock}: ${JSON.stringify(d)}`);
      assert.match(d.stderr, /Couldn't connect|Failed to connect/, JSON.stringify(d));
    }
  }
  assert.equal((await tickets()).find((t) => t.id === id).status, "pending");
});

test("the owner approves in the chat: agentd records the sender as decided_by and the edit lands", { timeout: 240_000 }, async () => {
  const before = head();
  answer = "allow-once";
  const n = requested.length;
  const out = await turn("disable sshd", ["disable"]);
  assert.equal(requested.length, n + 1);
  assert.match(out, /RESULT: set services\.openssh\.enable: committed generation \w+/);
  assert.match(out, /files: configuration\.nix\n/);
  const log = stack.git("log", "--format=%H %s", `${before}..HEAD`).split("\n");
  assert.equal(log.length, 1, log.join("\n"));
  assert.match(sshd(), /services\.openssh = \{\n\s+enable = false;/);
  const id = JSON.stringify(requested[n]).match(/osModa ticket ([A-Za-z0-9-]+)/)![1];
  const t = (await tickets()).find((x) => x.id === id);
  assert.equal(t.status, "used");
  assert.match(t.decided_by, /^human\[channel=webchat,sender=-,owner=true,via=relay,/);
  const approved = await stack.agentd("GET", "/events/log?type=approval.approved&limit=100");
  assert.ok(approved.some((e: any) => JSON.parse(e.payload).id === id && JSON.parse(e.payload).relay.owner === true));
});

test("built-in write: into the tree is blocked naming config_set; elsewhere it is recorded in the ledger", { timeout: 240_000 }, async () => {
  const offered = (model.requests[0]!.tools ?? []).map((t) => t.function.name);
  assert.ok(offered.includes("write"), `write offered: ${offered}`);
  for (const t of ["exec", "process"]) assert.ok(!offered.includes(t), `${t} must not be offered`);
  mkdirSync(join(stack.dir, "notes"), { recursive: true });
  const before = head();
  const treeFile = join(stack.tree, "configuration.nix");
  const was = readFileSync(treeFile, "utf8");
  // Relative paths are the workspace's (stack.dir), not the gateway's working directory (bridge/).
  const out = await turn("write the files", [
    { tool: "write", args: { path: treeFile, content: "{ }\n" } },
    { tool: "write", args: { path: join(stack.tree, "new.nix"), content: "{ }\n" } },
    { tool: "write", args: { path: "tree/relative.nix", content: "{ }\n" } },
    { tool: "write", args: { path: elsewhere, content: "hello\n" } },
    { tool: "write", args: { path: "notes/relative.txt", content: "hi\n" } },
  ]);
  const results = model.requests.slice(-5).map((r) => lastToolResult(r) ?? "");
  assert.match(results[0]!, /config_set/, results[0]);
  assert.match(results[1]!, /config_set/, results[1]);
  assert.match(results[2]!, /config_set/, results[2]);
  assert.equal(readFileSync(treeFile, "utf8"), was);
  assert.ok(!existsSync(join(stack.tree, "new.nix")));
  assert.ok(!existsSync(join(stack.tree, "relative.nix")));
  assert.equal(readFileSync(join(stack.dir, "notes", "relative.txt"), "utf8"), "hi\n");
  assert.equal(head(), before);
  assert.match(out, /RESULT/);
  assert.equal(readFileSync(elsewhere, "utf8"), "hello\n");
  await until("gateway.write in the ledger", 30_000, async () => {
    const evs = await stack.agentd("GET", "/events/log?type=gateway.write&limit=100");
    return evs.some((e: any) => JSON.parse(e.payload).paths.includes(elsewhere) && JSON.parse(e.payload).ok === true) &&
      evs.some((e: any) => JSON.parse(e.payload).paths.includes(join(stack.dir, "notes", "relative.txt")));
  });
});
