//! Tools backed by osmoda-keyd: Ethereum and Solana wallets whose keys never leave keyd, signing
//! under the default-deny policy of `services.osmoda.keyd.policy`, never broadcasting.
//
// Amounts, nonces and gas figures are decimal strings (wei and lamports do not fit a double);
// small ones may be given as integers. Above the policy's approval threshold, and for every
// delete, keyd answers 403 with an agentd ticket: the bridge asks the owner in the chat (the
// same flow as the gate's tickets, `approvals.ts`) when the model repeats the call.
// Importing a key is not offered: key material would pass through the model's context and the
// gateway's transcripts. An operator imports on keyd's socket (docs/api.md).

import { Type } from "typebox";

import { withQuery } from "../client.ts";
import { brief, clip, table } from "../format.ts";
import { tool } from "../tool.ts";

const obj = <P extends Record<string, any>>(props: P) => Type.Object(props, { additionalProperties: false });

const walletId = Type.String({ pattern: "^w_[0-9a-f]{16}$", description: "Wallet id from wallet_list or wallet_create (w_ and 16 hex digits)." });
const decimal = (description: string) => Type.String({ pattern: "^[0-9]{1,78}$", description });
/** A non-negative integer as a decimal string, or a JSON integer when it is small. */
const num = (description: string) =>
  Type.Union([Type.Integer({ minimum: 0, maximum: Number.MAX_SAFE_INTEGER }), decimal(description)], { description });
const approvalArg = Type.Optional(
  Type.String({ minLength: 1, maxLength: 128, description: "Id of a ticket a person approved for exactly this operation." }),
);
const hex = (description: string, max = 65536) => Type.String({ pattern: "^0x([0-9a-fA-F]{2})*$", maxLength: max, description });

/** Wallets per request of `wallet_list` (it follows keyd's pages to the end). */
const WALLET_PAGE = 100;

/** What `wallet_sign` signs, by `type` (keyd has no raw-hash signing). */
export const SignPayload = Type.Union(
  [
    obj({
      type: Type.Literal("personal_sign"),
      message: Type.Optional(Type.String({ maxLength: 65536, description: "Text to sign (EIP-191)." })),
      message_hex: Type.Optional(hex("Bytes to sign, 0x-hex (EIP-191).")),
    }),
    obj({ type: Type.Literal("typed_data"), data: Type.Object({}, { description: "EIP-712 typed data {types, primaryType, domain, message}." }) }),
    obj({
      type: Type.Literal("transaction"),
      tx: obj({
        type: Type.Optional(Type.Enum(["eip1559", "legacy"])),
        chain_id: Type.Optional(Type.Integer({ minimum: 1 })),
        nonce: num("Account nonce."),
        to: Type.String({ pattern: "^0x[0-9a-fA-F]{40}$" }),
        value: Type.Optional(num("Wei.")),
        data: Type.Optional(hex("Calldata (only ERC-20 transfer/approve pass the policy).")),
        gas_limit: num("Gas limit."),
        gas_price: Type.Optional(num("Legacy: wei per gas.")),
        max_fee_per_gas: Type.Optional(num("EIP-1559: wei per gas.")),
        max_priority_fee_per_gas: Type.Optional(num("EIP-1559: wei per gas.")),
      }),
    }),
    obj({ type: Type.Literal("solana_message"), message: Type.String({ minLength: 4, maxLength: 4096, pattern: "^[A-Za-z0-9+/]+={0,2}$", description: "A legacy message (base64) with one System transfer from this wallet." }) }),
    obj({ type: Type.Literal("offchain_message"), message: Type.String({ minLength: 1, maxLength: 1212, description: "Text for Solana off-chain message signing." }) }),
  ],
  { description: "personal_sign {message | message_hex} | typed_data {data} | transaction {tx} (Ethereum); solana_message {message: base64} | offchain_message {message} (Solana)" },
);

const KINDS = ["create", "sign", "send", "deny", "delete"] as const;

/** One line about a signature keyd released. */
function signedLine(v: any): string {
  const what = v.tx_hash ? `transaction ${v.tx_hash}` : v.signature ? `signature ${brief(v.signature, 40)}` : "signature";
  const unit = v.token ? `base units of ERC-20 token ${v.token}` : v.chain === "solana" ? "lamports" : "wei";
  const amount = v.amount !== undefined && v.amount !== "0" ? `${v.amount} ${unit} ` : "";
  return `${v.kind} signed by ${v.chain} wallet ${v.wallet_id} (${v.from}): ${amount}${v.to ? `to ${v.to} ` : ""}${v.chain_id ? `on chain id ${v.chain_id} ` : ""}→ ${what}. Not broadcast: keyd has no network; the signed bytes are in details (raw_tx).`;
}

export const keydTools = [
  tool({
    name: "wallet_create",
    label: "Create wallet",
    description:
      "Create an Ethereum or Solana wallet in osmoda-keyd: the key is generated inside keyd, sealed at rest and never shown. Returns its id and address. The label is the name the wallet policy (services.osmoda.keyd.policy.wallets.<label>) uses; nothing can be signed until the policy allows the chain.",
    parameters: obj({
      chain: Type.Enum(["ethereum", "solana"]),
      label: Type.String({ pattern: "^[A-Za-z0-9._-]{1,64}$", description: "Unique name: 1-64 of letters, digits, . _ -" }),
    }),
    async run(p, ctx) {
      const w = await ctx.daemon("osmoda-keyd", "POST", "/wallet/create", p, `wallet_create ${p.label}`);
      return { text: `created ${w.chain} wallet ${w.id} "${w.label}" with address ${w.address}; receipt recorded (wallet_receipt).`, details: w };
    },
  }),
  tool({
    name: "wallet_list",
    label: "List wallets",
    description: "The wallets in osmoda-keyd: id, label, chain, address (never keys).",
    parameters: obj({}),
    async run(_p, ctx) {
      // keyd answers in pages (`next` names the last id of a full page); the wallet cap
      // (services.osmoda.keyd.maxWallets) bounds how many there are.
      const ws: any[] = [];
      let after: string | null = null;
      do {
        const path: string = `/wallet/list?limit=${WALLET_PAGE}` + (after === null ? "" : `&after=${encodeURIComponent(after)}`);
        const out = await ctx.daemon("osmoda-keyd", "GET", path, undefined, "wallet_list");
        ws.push(...(out.wallets ?? []));
        after = typeof out.next === "string" && out.next !== after ? out.next : null;
      } while (after !== null);
      const rows = ws.map((w) => [w.id, w.label, w.chain, w.address, w.created_at]);
      return { text: `${ws.length} wallets\n${clip(table(["id", "label", "chain", "address", "created"], rows), 6000)}`, details: ws };
    },
  }),
  tool({
    name: "wallet_sign",
    label: "Sign with wallet",
    description:
      "Sign with a wallet under the policy: an EIP-191 message, EIP-712 typed data or an Ethereum transaction; a Solana transfer message or off-chain message. Transactions count against the daily limits; above the approval threshold the owner is asked. Never broadcasts.",
    parameters: obj({ wallet_id: walletId, payload: SignPayload, approval: approvalArg }),
    async run(p, ctx) {
      const v = await ctx.daemon("osmoda-keyd", "POST", "/wallet/sign", p, `wallet_sign ${p.payload.type} with ${p.wallet_id}`);
      return { text: signedLine(v), details: v };
    },
  }),
  tool({
    name: "wallet_send",
    label: "Send from wallet",
    description:
      "Build and sign a transfer (ETH, an ERC-20 token with token, or SOL) under the policy; returns the signed transaction, never broadcast. amount in base units (wei, lamports) as a decimal string. Ethereum needs nonce, gas_limit and max_fee_per_gas + max_priority_fee_per_gas (or type legacy + gas_price); Solana needs a recent blockhash. Above the approval threshold the owner is asked in this chat: call again with the same arguments.",
    parameters: obj({
      wallet_id: walletId,
      to: Type.String({ minLength: 32, maxLength: 64, pattern: "^(0x[0-9a-fA-F]{40}|[1-9A-HJ-NP-Za-km-z]{32,44})$", description: "Recipient: 0x address or base58." }),
      amount: decimal("Base units (wei, lamports, token units), decimal string."),
      token: Type.Optional(Type.String({ pattern: "^0x[0-9a-fA-F]{40}$", description: "Ethereum: ERC-20 contract." })),
      type: Type.Optional(Type.Enum(["eip1559", "legacy"])),
      chain_id: Type.Optional(Type.Integer({ minimum: 1, description: "Ethereum chain id (default: the policy's only one)." })),
      nonce: Type.Optional(num("Ethereum: account nonce.")),
      gas_limit: Type.Optional(num("Ethereum: gas limit.")),
      gas_price: Type.Optional(num("Ethereum legacy: wei per gas.")),
      max_fee_per_gas: Type.Optional(num("Ethereum EIP-1559: wei per gas.")),
      max_priority_fee_per_gas: Type.Optional(num("Ethereum EIP-1559: wei per gas.")),
      blockhash: Type.Optional(Type.String({ pattern: "^[1-9A-HJ-NP-Za-km-z]{32,44}$", description: "Solana: recent blockhash (base58)." })),
      approval: approvalArg,
    }),
    async run(p, ctx) {
      const v = await ctx.daemon("osmoda-keyd", "POST", "/wallet/send", p, `wallet_send ${p.amount} from ${p.wallet_id} to ${p.to}`);
      return { text: signedLine(v), details: v };
    },
  }),
  tool({
    name: "wallet_delete",
    label: "Delete wallet",
    description: "Delete a wallet and its sealed key for good. Always needs the owner's approval: the first call opens the ticket, the same call again asks the owner in this chat.",
    parameters: obj({ wallet_id: walletId, approval: approvalArg }),
    async run(p, ctx) {
      const v = await ctx.daemon("osmoda-keyd", "POST", "/wallet/delete", p, `wallet_delete ${p.wallet_id}`);
      return { text: `deleted wallet ${p.wallet_id}; receipt recorded.`, details: v };
    },
  }),
  tool({
    name: "wallet_receipt",
    label: "Wallet receipts",
    description:
      "Receipts of keyd's actions from the ledger, newest first: create, sign, send, deny (with the policy rule that denied), delete. Filter by kind, wallet_id or tx_hash.",
    parameters: obj({
      kind: Type.Optional(Type.Enum([...KINDS])),
      wallet_id: Type.Optional(walletId),
      tx_hash: Type.Optional(Type.String({ pattern: "^(0x[0-9a-fA-F]{64}|[1-9A-HJ-NP-Za-km-z]{64,88})$", description: "Ethereum tx hash or Solana signature." })),
      limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: "Default 20." })),
    }),
    async run(p, ctx) {
      const limit = p.limit ?? 20;
      const type = `receipt.wallet.${p.kind ?? "*"}`;
      // A wallet id or hash narrows through the ledger's full-text index (w_<hex> indexes as
      // "w" and "<hex>"); the type and exact value are checked here.
      const needle = p.tx_hash ?? p.wallet_id?.slice(2);
      const events: any[] = needle
        ? await ctx.daemon("agentd", "GET", withQuery("/events/search", { q: needle, limit: 1000 }), undefined, "wallet_receipt")
        : await ctx.daemon("agentd", "GET", withQuery("/events/log", { type, order: "desc", limit }), undefined, "wallet_receipt");
      const rs = events
        .filter((e) => (p.kind ? e.type === type : e.type.startsWith("receipt.wallet.")))
        .map((e) => ({ id: e.id, ts: e.ts, kind: e.type.slice("receipt.wallet.".length), receipt: JSON.parse(e.payload) }))
        .filter((r) => (!p.wallet_id || r.receipt.wallet_id === p.wallet_id) && (!p.tx_hash || r.receipt.tx_hash === p.tx_hash || r.receipt.signature === p.tx_hash))
        .slice(0, limit);
      const rows = rs.map((r) => [String(r.id), r.ts, r.kind, r.receipt.wallet_id ?? "", r.receipt.reason ?? r.receipt.tx_hash ?? r.receipt.address ?? "", r.receipt.amount ?? ""]);
      return { text: `${rs.length} wallet receipts\n${clip(table(["id", "ts", "kind", "wallet", "reason/hash/address", "amount"], rows), 6000)}`, details: rs };
    },
  }),
];
