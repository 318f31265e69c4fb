// The wallet tools through the real gateway, on a real osmoda-keyd whose policy is declared in
// the config tree (services.osmoda.keyd.policy, applied by SafeSwitch into keyd.json) and a real
// agentd holding its receipts and approval tickets. A send above the threshold goes through the
// owner's approval in the chat (the relay flow); a delete through a person's approval.
import { describe, it, before, after } from "node:test";
import assert from "node:assert/strict";
import { createPublicKey, verify } from "node:crypto";

import { Stack, ToolCalls, coverageOf, until } from "./harness.ts";
import { Approver, startChatGateway, turn } from "./chat.ts";
import { ScriptedModel, lastToolResult, type ChatRequest, type Step } from "./model.ts";
import { call } from "../src/client.ts";

const stack = new Stack();
const BOB = "0x3535353535353535353535353535353535353535";
const ETHER = 10n ** 18n;

/** Everything a refused wallet call could change: wallets, receipts, tickets. */
async function snapshot() {
  const wallets = (await stack.keyd("GET", "/wallet/list")).body;
  const receipts = await stack.agentd("GET", "/events/log?type=receipt.wallet.*&limit=10000");
  const tickets = await stack.agentd("GET", "/approvals?limit=1000");
  return { wallets, receipts: receipts.length, tickets: tickets.length };
}
const calls = new ToolCalls(stack, snapshot);

async function receipts(kind: string): Promise<any[]> {
  // keyd spools its receipts; they reach the ledger shortly after the answer.
  return (await stack.agentd("GET", `/receipts?type=wallet.${kind}&limit=10000`)).map((r: any) => r.receipt);
}

const B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz";
function base58(s: string): Buffer {
  const A = B58;
  let n = 0n;
  for (const c of s) n = n * 58n + BigInt(A.indexOf(c));
  const hex = n.toString(16);
  const body = Buffer.from(hex.length % 2 ? `0${hex}` : hex, "hex");
  const zeros = s.length - s.replace(/^1+/, "").length;
  return Buffer.concat([Buffer.alloc(zeros), body]);
}

function toBase58(b: Buffer): string {
  let n = BigInt(`0x${b.toString("hex") || "0"}`);
  let out = "";
  while (n > 0n) {
    out = B58[Number(n % 58n)] + out;
    n /= 58n;
  }
  for (const byte of b) {
    if (byte !== 0) break;
    out = `1${out}`;
  }
  return out;
}

/** Verifies an ed25519 `signature` over `message` by the Solana address `address`. */
function solVerify(address: string, message: Buffer, signature: Buffer): boolean {
  const key = createPublicKey({ key: Buffer.concat([Buffer.from("302a300506032b6570032100", "hex"), base58(address)]), format: "der", type: "spki" });
  return verify(null, message, key, signature);
}

/** The model's plan: call wallet_send with `send` (again while the answer says to), then report. */
let send: Record<string, unknown> = {};
function script(req: ChatRequest): Step {
  const tools = req.messages.filter((m) => m.role === "tool").length;
  if (tools > 4) return { text: "RESULT: too many steps" };
  const last = lastToolResult(req);
  if (tools === 0 || last?.includes("call wallet_send again")) return { tool: "wallet_send", args: send };
  return { text: `RESULT: ${last}` };
}
const model = new ScriptedModel(script);
const approver = new Approver();

let eth = "";
let sol = "";
let solAddress = "";

describe("wallet tools through the real gateway", { timeout: 600_000 }, () => {
  before(async () => {
    await model.start();
    await stack.startDaemons({ keyd: true });
    // The wallet policy is configuration: a commit in the tree, applied by SafeSwitch. Allowing
    // chains loosens what signs without a person (the gate's policy.weaken): the edit answers
    // with a ticket, a person approves it on the approval socket, and the same edit lands.
    const policy = {
      path: "services.osmoda.keyd.policy.chains",
      value: {
        ethereum: { chainIds: [1], perTxMax: String(2n * ETHER), dailyLimit: String(5n * ETHER), approvalThreshold: String(ETHER), recipientAllowlist: null },
        solana: { perTxMax: "5000000000", dailyLimit: "10000000000", approvalThreshold: null, recipientAllowlist: null },
      },
      reason: "allow small ETH and SOL payments; above 1 ETH the owner approves",
    };
    const gated = await call({ socket: stack.agentdSocket, method: "POST", path: "/config/set", body: policy, timeoutMs: 60_000 });
    assert.equal(gated.status, 403, JSON.stringify(gated.body));
    const ticket = (gated.body as { detail: { ticket: string } }).detail.ticket;
    const approved = await call({ socket: stack.approvalSocket, method: "POST", path: `/approval/${ticket}/approve`, body: {}, timeoutMs: 30_000 });
    assert.equal(approved.status, 200, JSON.stringify(approved.body));
    await stack.agentd("POST", "/config/set", { ...policy, approval: ticket });
    await stack.applyHead();
    await until("keyd to read the policy", 30_000, async () => (await stack.keyd("GET", "/health")).body.policy?.chains?.length === 2);
    await startChatGateway(stack, model, (c) => (c.plugins.entries["osmoda-bridge"].config.approvalTimeoutSecs = 20));
    await approver.start(stack);
  });
  after(async () => {
    await approver.stop();
    await stack.stop();
    await model.stop();
  });

  it("wallet_create and wallet_list: keys made inside keyd, only addresses come out", async () => {
    const e = await calls.ok("wallet_create", { chain: "ethereum", label: "ops-hot" });
    eth = e.details.id;
    assert.match(e.text, new RegExp(`^created ethereum wallet ${eth} "ops-hot" with address 0x[0-9a-fA-F]{40}`));
    const s = await calls.ok("wallet_create", { chain: "solana", label: "sol-ops" });
    sol = s.details.id;
    solAddress = s.details.address;
    const l = await calls.ok("wallet_list", {});
    assert.deepEqual(l.details.map((w: any) => w.id).sort(), [eth, sol].sort());
    assert.match(l.text, /^2 wallets\nid\s+label\s+chain\s+address/);
    assert.doesNotMatch(JSON.stringify(l.details), /secret|sealed|private/i);
    await until("the create receipts", 30_000, async () => (await receipts("create")).length === 2);

    await calls.refused("wallet_create", { chain: "bitcoin", label: "x" }, /chain: must be one of/);
    await calls.refused("wallet_create", { chain: "ethereum", label: "ops-hot" }, /osmoda-keyd refused wallet_create ops-hot/);
    await calls.refused("wallet_create", { chain: "solana", label: "imported", import: { format: "solana_keypair", keypair: [1, 2] } }, /unknown field\(s\) \["import"\]/);
    await calls.refused("wallet_list", { all: true }, /unknown field/);
  });

  it("wallet_sign: a Solana off-chain message verifies with the wallet's address; bad payloads sign nothing", async () => {
    const r = await calls.ok("wallet_sign", { wallet_id: sol, payload: { type: "offchain_message", message: "login 1234" } });
    const signed = Buffer.from(r.details.signed_message, "base64");
    assert.ok(signed.subarray(0, 16).equals(Buffer.from("\xffsolana offchain", "latin1")));
    assert.ok(solVerify(solAddress, signed, base58(r.details.signature)), "ed25519 signature by the wallet's address");
    const p = await calls.ok("wallet_sign", { wallet_id: eth, payload: { type: "personal_sign", message: "Some data" } });
    assert.match(p.details.signature, /^0x[0-9a-f]{130}$/);
    await until("the sign receipts", 30_000, async () => (await receipts("sign")).length === 2);

    await calls.refused("wallet_sign", { wallet_id: eth, payload: { type: "raw_hash", hash: "0x00" } }, /payload\.type: must be one of/);
    await calls.refused("wallet_sign", { wallet_id: eth, payload: { type: "offchain_message", message: "x" } }, /osmoda-keyd refused wallet_sign offchain_message .*does not apply to an Ethereum wallet/);
    await calls.refused("wallet_sign", { wallet_id: "w_0000000000000000", payload: { type: "personal_sign", message: "x" } }, /osmoda-keyd refused .* \(not found\)/);
  });

  it("wallet_send under the threshold signs a transaction (never broadcast); the policy's denials are receipts", async () => {
    const body = { wallet_id: eth, to: BOB, amount: String(ETHER / 2n), nonce: 0, gas_limit: 21000, max_fee_per_gas: "30000000000", max_priority_fee_per_gas: "1000000000" };
    const r = await calls.ok("wallet_send", body);
    assert.match(r.details.tx_hash, /^0x[0-9a-f]{64}$/);
    assert.match(r.details.raw_tx, /^0x02/, "an EIP-1559 transaction (EIP-2718 type 2)");
    assert.equal(r.details.broadcast, false);
    assert.match(r.text, /transfer signed by ethereum wallet .*500000000000000000 wei to 0x3535.* on chain id 1 → transaction 0x[0-9a-f]{64}\. Not broadcast/);
    await until("the send receipt", 30_000, async () => (await receipts("send")).some((x) => x.tx_hash === r.details.tx_hash));
    // A Solana transfer: the message names from, to, the blockhash and the lamports, signed by the wallet.
    const to = "4fYNw3dojWmQ4dXtSGE9epjRGy9pFSx62YypT7avPYvA";
    const blockhash = Buffer.alloc(32, 42);
    const s = await calls.ok("wallet_send", { wallet_id: sol, to, amount: "1500000000", blockhash: toBase58(blockhash) });
    const raw = Buffer.from(s.details.raw_tx, "base64");
    const m = raw.subarray(65);
    assert.ok(m.subarray(4, 36).equals(base58(solAddress)));
    assert.ok(m.subarray(36, 68).equals(base58(to)));
    assert.ok(m.subarray(100, 132).equals(blockhash));
    assert.equal(m.readBigUInt64LE(142), 1_500_000_000n);
    assert.ok(solVerify(solAddress, m, raw.subarray(1, 65)));

    // Above per_tx_max: denied by the policy, recorded as a deny receipt, nothing signed or charged.
    const deny = await stack.invoke("wallet_send", { ...body, amount: String(3n * ETHER), nonce: 1 });
    assert.equal(deny.status, 400, JSON.stringify(deny.body));
    assert.match(deny.body.error.message, /osmoda-keyd refused wallet_send .*per_tx_max/);
    await until("the deny receipt", 30_000, async () => (await receipts("deny")).some((x) => x.reason === "per_tx_max"));
    const w = await calls.ok("wallet_receipt", { kind: "deny" });
    assert.match(w.text, /deny\s+w_[0-9a-f]{16}\s+per_tx_max/);
    const byHash = await calls.ok("wallet_receipt", { tx_hash: r.details.tx_hash });
    assert.equal(byHash.details.length, 1);
    assert.equal(byHash.details[0].kind, "send");
    const byWallet = await calls.ok("wallet_receipt", { wallet_id: sol });
    assert.deepEqual(byWallet.details.map((x: any) => x.kind).sort(), ["create", "send", "sign"]);

    await calls.refused("wallet_send", { ...body, amount: 5 }, /amount: must be string/);
    await calls.refused("wallet_send", { ...body, amount: "0.5" }, /amount: must match pattern/);
    await calls.refused("wallet_send", { wallet_id: eth, to: BOB, amount: "1" }, /osmoda-keyd refused wallet_send .*`nonce` is required/);
    await calls.refused("wallet_receipt", { kind: "steal" }, /kind: must be one of/);
  });

  it("wallet_send above the threshold: the owner is asked in the chat; a denial signs nothing, an approval signs once", async () => {
    send = { wallet_id: eth, to: BOB, amount: String((3n * ETHER) / 2n), nonce: 2, gas_limit: 21000, max_fee_per_gas: "30000000000", max_priority_fee_per_gas: "1000000000" };
    const sends = (await receipts("send")).length;

    approver.answer = "deny";
    const denied = await turn(stack, "pay bob 1.5 ETH");
    assert.equal(approver.requested.length, 1);
    assert.match(JSON.stringify(approver.requested[0]), /wallet_send would: wallet\.send: TRANSFER 1500000000000000000 wei \(1\.5 ETH\) to 0x[0-9a-f]{40} on chain id \d+, max fee 0\.00063 ETH; from wallet 0x[0-9a-fA-F]{40}; label \\?"ops-hot\\?"/);
    assert.match(denied, /RESULT: .*(denied|Denied)/s);
    const id1 = JSON.stringify(approver.requested[0]).match(/osModa ticket ([A-Za-z0-9-]+)/)![1];
    let t = (await stack.agentd("GET", "/approvals?limit=1000")).find((x: any) => x.id === id1);
    assert.equal(t.status, "denied");
    assert.equal(t.origin, "keyd");
    assert.equal((await receipts("send")).length, sends, "nothing signed");

    approver.answer = "allow-once";
    const ok = await turn(stack, "pay bob 1.5 ETH, I approve");
    assert.equal(approver.requested.length, 2);
    assert.match(ok, /RESULT: transfer signed by ethereum wallet .*1500000000000000000 wei .*→ transaction 0x[0-9a-f]{64}/);
    const id2 = JSON.stringify(approver.requested[1]).match(/osModa ticket ([A-Za-z0-9-]+)/)![1];
    t = (await stack.agentd("GET", "/approvals?limit=1000")).find((x: any) => x.id === id2);
    assert.equal(t.status, "used");
    assert.match(t.decided_by, /^human\[channel=webchat,sender=-,owner=true,via=relay,/);
    await until("the approved send's receipt", 30_000, async () => (await receipts("send")).some((x) => x.approval === id2 && x.amount === send.amount));
  });

  it("wallet_delete always needs a person: the ticket, then the approved call deletes", async () => {
    const first = await stack.invoke("wallet_delete", { wallet_id: sol });
    assert.equal(first.status, 403, JSON.stringify(first.body));
    assert.match(first.body.error.message, /A person must approve .* call wallet_delete again with exactly the same arguments/);
    const ticket = first.body.error.message.match(/agentctl approvals approve ([A-Za-z0-9-]+)/)![1];
    assert.equal((await stack.keyd("GET", "/wallet/list")).body.wallets.length, 2, "nothing deleted yet");
    const ap = await call({ socket: stack.approvalSocket, method: "POST", path: `/approval/${ticket}/approve`, body: {}, timeoutMs: 30_000 });
    assert.equal(ap.status, 200, JSON.stringify(ap.body));
    const r = await calls.ok("wallet_delete", { wallet_id: sol, approval: ticket });
    assert.match(r.text, new RegExp(`^deleted wallet ${sol}`));
    assert.deepEqual((await stack.keyd("GET", "/wallet/list")).body.wallets.map((w: any) => w.id), [eth]);
    await until("the delete receipt", 30_000, async () => (await receipts("delete")).length === 1);

    await calls.refused("wallet_delete", { wallet_id: "solana-ops" }, /wallet_id: must match pattern/);
  });

  it("wallet_list follows keyd's pages: 121 wallets in two pages of 100, each once", async () => {
    for (let i = 0; i < 120; i++) {
      const r = await stack.keyd("POST", "/wallet/create", { chain: i % 2 ? "solana" : "ethereum", label: `bulk-${i}` });
      assert.equal(r.status, 200, JSON.stringify(r.body));
    }
    const first = await stack.keyd("GET", "/wallet/list?limit=100");
    assert.equal(first.body.wallets.length, 100);
    assert.equal(first.body.next, first.body.wallets[99].id, "a full page names its last id");
    const l = await calls.ok("wallet_list", {});
    const ids = l.details.map((w: any) => w.id);
    assert.equal(ids.length, 121);
    assert.equal(new Set(ids).size, 121, "no wallet twice");
    assert.ok(ids.includes(eth));
    assert.match(l.text, /^121 wallets\n/);
  });

  it("every tool of keyd.ts was invoked successfully and refused bad input", () => {
    calls.assertCovered(coverageOf("keyd"));
  });
});
