// Approvals by who is chatting, in full agent turns through a real OpenClaw chat channel: the
// gateway loads `@openclaw/irc` and connects to a minimal IRC server on loopback (test/irc.ts),
// where two scripted people write to the bot in direct messages — "alice", the owner
// (`commands.ownerAllowFrom`), and "mallory", allowed to chat but not the owner. The scripted
// model asks to disable sshd; agentd's gate refuses with a ticket; the model asks again. For
// mallory the bridge asks nobody and nothing changes; for alice the owner's approval is asked.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { homedir } from "node:os";
import { dirname, join } from "node:path";

import { Approver, startChatGateway } from "./chat.ts";
import { Stack, bridgeDir, nodeBin, openclawCli, until } from "./harness.ts";
import { IrcServer, type IrcUser } from "./irc.ts";
import { ScriptedModel, lastToolResult, type ChatRequest, type Step } from "./model.ts";

const stack = new Stack();
const irc = new IrcServer();
const approver = new Approver();
const BOT = "osmoda";
const DISABLE = { file: "configuration.nix", path: "services.openssh.enable", value: false, reason: "the person asked to disable sshd" };
const ALICE = IrcServer.identity("alice");
const MALLORY = IrcServer.identity("mallory");

/**
 * config_set of DISABLE, again while the refusal says to call it again; then the last result.
 * Only this turn counts (since the person's newest message): direct messages from every sender
 * share the agent's main session by default (`session.dmScope: "main"`).
 */
function script(req: ChatRequest): Step {
  // The person's message (the gateway also adds user-role context messages after tool results).
  const turn = req.messages.slice(req.messages.findLastIndex((m) => m.role === "user" && JSON.stringify(m.content).includes("please disable sshd")));
  const done = turn.filter((m) => m.role === "tool").length;
  if (done > 4) return { text: "RESULT: too many steps" };
  const last = done ? lastToolResult({ ...req, messages: turn }) : undefined;
  if (done === 0 || last?.includes("call config_set again")) return { tool: "config_set", args: DISABLE };
  return { text: `RESULT: ${last ?? ""}` };
}
const model = new ScriptedModel(script);
let alice: IrcUser;
let mallory: IrcUser;

const head = () => stack.git("rev-parse", "HEAD");
const tickets = (): Promise<any[]> => stack.agentd("GET", "/approvals?limit=1000");

/** `who` writes `text` to the bot; resolves with the bot's reply that carries the RESULT. */
async function chat(who: IrcUser, nick: string, text: string): Promise<string> {
  const n = who.received.length;
  who.say(BOT, text);
  return until(`the bot's answer to ${nick}`, 180_000, () => {
    const got = who.received.slice(n).filter((r) => r.from.startsWith(`${BOT}!`)).map((r) => r.text).join("\n");
    return got.includes("RESULT:") && got;
  });
}

/**
 * Installs `@openclaw/irc` (the version package-lock.json pins) into the gateway's state dir
 * with OpenClaw's own installer, offline from npm's cache (`npm ci` put it there). A channel
 * plugin loaded from `plugins.load.paths` instead is refused its ingress queue
 * (PLUGIN_TRUST_REFUSED: only an official npm or ClawHub install record is trusted).
 */
function installIrcPlugin(): void {
  const version = JSON.parse(readFileSync(join(bridgeDir, "node_modules", "@openclaw", "irc", "package.json"), "utf8")).version;
  const scratch = join(stack.dir, "irc-install");
  mkdirSync(scratch, { recursive: true });
  writeFileSync(join(scratch, "openclaw.json"), "{}");
  const r = spawnSync(nodeBin, [openclawCli, "plugins", "install", `@openclaw/irc@${version}`], {
    encoding: "utf8",
    env: {
      ...process.env,
      HOME: join(stack.dir, "home"),
      OPENCLAW_STATE_DIR: join(stack.dir, "openclaw"),
      OPENCLAW_CONFIG_PATH: join(scratch, "openclaw.json"),
      npm_config_offline: "true",
      npm_config_cache: process.env.npm_config_cache ?? join(homedir(), ".npm"),
      PATH: `${dirname(nodeBin)}:${process.env.PATH}`,
    },
  });
  assert.equal(r.status, 0, `openclaw plugins install @openclaw/irc@${version}: ${r.stdout}${r.stderr}`);
}

before(async () => {
  await irc.start();
  await model.start();
  await stack.startDaemons();
  installIrcPlugin();
  await startChatGateway(stack, model, (c) => {
    c.plugins.allow.push("irc");
    c.plugins.entries.irc = { enabled: true };
    c.plugins.entries["osmoda-bridge"].config.approvalTimeoutSecs = 20;
    c.channels = {
      ...c.channels,
      irc: {
        enabled: true,
        host: "127.0.0.1",
        port: irc.port,
        tls: false,
        nick: BOT,
        dmPolicy: "allowlist",
        allowFrom: [ALICE, MALLORY],
      },
    };
    c.commands = { ...c.commands, ownerAllowFrom: [`irc:${ALICE}`] };
  });
  await until("the bot on the IRC server", 60_000, () => irc.online(BOT));
  await approver.start(stack);
  alice = await irc.connect("alice");
  mallory = await irc.connect("mallory");
});
after(async () => {
  alice?.stop();
  mallory?.stop();
  await approver.stop();
  await stack.stop();
  await model.stop();
  await irc.stop();
});

test("a non-owner chatting on IRC is not asked and cannot approve: the ticket stays pending, nothing lands", { timeout: 300_000 }, async () => {
  const before = head();
  approver.answer = "allow-once"; // were anyone asked, the approval surface would allow it
  const out = await chat(mallory, "mallory", "please disable sshd");
  assert.equal(approver.requested.length, 0, `no plugin approval for a non-owner: ${JSON.stringify(approver.requested)}`);
  assert.ok(model.requests.some((r) => lastToolResult(r)?.includes("call config_set again")), "the gate refused the first call with a ticket");
  assert.match(out, /RESULT: .*needs the owner's approval \(ticket [\w-]+\); the person asking is not the owner, so nothing was changed/s);
  assert.equal(head(), before);
  const id = out.match(/ticket ([\w-]+)\)/)![1];
  const t = (await tickets()).find((x) => x.id === id);
  assert.equal(t.status, "pending", JSON.stringify(t));
  assert.equal(t.decided_by, null);
});

test("the owner on the same channel is asked, with the effect, and approves: the edit lands with her as decided_by", { timeout: 300_000 }, async () => {
  const before = head();
  approver.answer = "allow-once";
  const out = await chat(alice, "alice", "please disable sshd");
  assert.equal(approver.requested.length, 1, JSON.stringify(approver.requested));
  const shown = JSON.stringify(approver.requested[0]);
  assert.match(shown, /disables service openssh: services\.openssh\.enable true → false/);
  assert.match(out, /RESULT: set services\.openssh\.enable: committed generation \w+/);
  assert.equal(stack.git("rev-list", "--count", `${before}..HEAD`), "1");
  const id = shown.match(/osModa ticket ([\w-]+)/)![1];
  const t = (await tickets()).find((x) => x.id === id);
  assert.equal(t.status, "used", JSON.stringify(t));
  // The sender id as the relay accepts it: `!` written as +21 (src/approvals.ts relayId).
  assert.match(t.decided_by, /^human\[channel=irc,sender=alice\+21alice@127\.0\.0\.1,owner=true,via=relay,/);
});
