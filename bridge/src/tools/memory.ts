//! Tools backed by agentd's memory (`/memory/*`: store, ingest, recall) and agent card (`/agent/card`): markdown notes
//! under agentd's memory dir are the ground truth; recall is hybrid (keywords + the local
//! embedding model), filtered by relevance and packed into services.osmoda.memory.maxInjectedTokens.

import { Type } from "typebox";

import { tool } from "../tool.ts";

const obj = <P extends Record<string, any>>(props: P) => Type.Object(props, { additionalProperties: false });
const word = Type.String({ pattern: "^[A-Za-z0-9._-]{1,40}$" });

export const memoryTools = [
  tool({
    name: "memory_store",
    label: "Remember",
    description:
      "Write a note to long-term memory (markdown in agentd's memory dir: today's daily note, or MEMORY.md with durable=true for lasting facts such as preferences and host roles). Use it for incidents and their fixes, configuration decisions, and what the owner prefers.",
    parameters: obj({
      summary: Type.String({ minLength: 1, maxLength: 200, description: "One line; becomes the note's heading." }),
      detail: Type.Optional(Type.String({ maxLength: 16384, description: "The note's body." })),
      category: Type.Optional(Type.String({ pattern: "^[A-Za-z0-9._-]{1,40}$", description: "incident, config, preference, fact, ..." })),
      tags: Type.Optional(Type.Array(word, { maxItems: 16 })),
      durable: Type.Optional(Type.Boolean({ description: "A lasting fact (MEMORY.md) rather than a daily note." })),
    }),
    async run(p, ctx) {
      const r = await ctx.daemon("agentd", "POST", "/memory/store", p, `memory_store ${p.summary}`);
      return { text: `remembered in ${r.path} at ${r.at}`, details: r };
    },
  }),
  tool({
    name: "memory_recall",
    label: "Recall",
    description:
      "Search long-term memory for notes relevant to a question (past incidents, configuration decisions, the owner's preferences). Returns the relevant notes best first, within a token budget. timeframe: all (default), <N>h, <N>d, <N>w, or SINCE..UNTIL (RFC 3339).",
    parameters: obj({
      query: Type.String({ minLength: 1, maxLength: 2000 }),
      max_results: Type.Optional(Type.Integer({ minimum: 1, maximum: 50 })),
      timeframe: Type.Optional(Type.String({ minLength: 1, maxLength: 80 })),
    }),
    async run(p, ctx) {
      const r = await ctx.daemon("agentd", "POST", "/memory/recall", p, "memory_recall");
      // agentd's token budget counts each hit as rendered here (osmoda-memory `budget.rs`).
      const hits = (r.results as any[]).map((h) => `[${h.path}:${h.line_start}, ${h.at}]\n${h.text}`);
      const head = r.warning ? `(${r.warning})\n` : "";
      const body = hits.length ? hits.join("\n\n") : "nothing relevant in memory";
      return { text: `${head}${body}`, details: r };
    },
  }),
  tool({
    name: "memory_ingest",
    label: "Remember event",
    description:
      "Record an event or a piece of conversation in that day's memory note (today's unless ts says otherwise) with its context (source, time, host, unit), so later recalls find it: what the owner said they want, an outage and how it ended, a ledger event from event_log passed as it is (type, payload, ts, actor). Use memory_store for a note you write yourself.",
    parameters: obj({
      type: Type.String({ minLength: 1, maxLength: 100, pattern: "^[^\\n\\r·]+$", description: "What happened: conversation, service.restart, deploy, ... (memory.* is refused)." }),
      text: Type.Optional(Type.String({ minLength: 1, maxLength: 16384, description: "The snippet or description, in your words or the person's." })),
      payload: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: "Structured fields (a ledger event's payload); stored as key: value lines." })),
      source: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: "Where it came from: conversation (default), ledger, journal, ..." })),
      ts: Type.Optional(Type.Union([Type.String({ minLength: 1, maxLength: 40 }), Type.Integer({ minimum: 0 })], { description: "When it happened: RFC 3339 or Unix seconds; default now. The note goes to that day's file." })),
      host: Type.Optional(Type.String({ minLength: 1, maxLength: 200 })),
      unit: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: "The systemd unit concerned." })),
      actor: Type.Optional(Type.String({ minLength: 1, maxLength: 200, description: "Who caused it." })),
    }),
    async run(p, ctx) {
      const event = { source: "conversation", ...p };
      const r = await ctx.daemon("agentd", "POST", "/memory/ingest", { event }, `memory_ingest ${p.type}`);
      return { text: `remembered in ${r.path} at ${r.at}`, details: r };
    },
  }),
  tool({
    name: "agent_card",
    label: "Agent card",
    description:
      "Show this machine's EIP-8004 agent registration file, or (generate=true with name and description) create it anew from the machine's mesh and wallet identities plus the given services.",
    parameters: obj({
      generate: Type.Optional(Type.Boolean()),
      name: Type.Optional(Type.String({ minLength: 1, maxLength: 100 })),
      description: Type.Optional(Type.String({ minLength: 1, maxLength: 2000 })),
      image: Type.Optional(Type.String({ maxLength: 2048 })),
      services: Type.Optional(
        Type.Array(obj({ name: Type.String({ minLength: 1, maxLength: 64 }), endpoint: Type.String({ minLength: 1, maxLength: 2048 }), version: Type.Optional(Type.String({ maxLength: 64 })) }), { maxItems: 32 }),
      ),
      supported_trust: Type.Optional(Type.Array(Type.Enum(["reputation", "crypto-economic", "tee-attestation"]))),
    }),
    async run(p, ctx) {
      if (!p.generate) {
        const card = await ctx.daemon("agentd", "GET", "/agent/card", undefined, "agent_card");
        return { text: JSON.stringify(card, null, 1), details: card };
      }
      const { generate: _g, ...body } = p;
      const r = await ctx.daemon("agentd", "POST", "/agent/card/generate", body, "agent_card generate");
      const missing = r.missing?.length ? `\nnot included: ${r.missing.join("; ")}` : "";
      return { text: `agent card written to ${r.path}${missing}\n${JSON.stringify(r.card, null, 1)}`, details: r };
    },
  }),
];
