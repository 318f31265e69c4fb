//! Approvals where the person chats. When agentd refuses a tool call with a gate ticket, the
//! bridge remembers the ticket for exactly that call; when the model makes the same call again,
//! `before_tool_call` asks the person through OpenClaw's plugin approval (`/approve` in the chat
//! or the Control UI) with the effect agentd computed, and the resolution callback — code the
//! model cannot call — relays the owner's decision to agentd's approval relay socket. The tool
//! then runs with the ticket and waits for the relay first.
//
// Failing closed: no requester, a sender that is not the owner, a timeout, a cancellation or a
// denial leave the ticket undecided (a denial is recorded as denied) and nothing changes.

import { call } from "./client.ts";
import type { Settings } from "./tool.ts";

/** What agentd's gate answered for one refused call. */
export interface OpenTicket {
  ticket: string;
  effect: string[];
  approve: string;
  expiresAt: string;
}

/** OpenClaw's `ctx.requester`: the person whose message started this run. */
export interface Requester {
  channel?: string;
  accountId?: string;
  senderId?: string;
  senderIsOwner?: boolean;
}

export type Decision = "allow-once" | "allow-always" | "deny" | "timeout" | "cancelled";

/** The stable key of one call: the tool and its arguments without `approval`, keys sorted. */
export function callKey(tool: string, params: unknown): string {
  const sorted = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sorted);
    if (v && typeof v === "object") {
      return Object.fromEntries(
        Object.keys(v)
          .filter((k) => k !== "approval")
          .sort()
          .map((k) => [k, sorted((v as Record<string, unknown>)[k])]),
      );
    }
    return v;
  };
  return `${tool} ${JSON.stringify(sorted(params ?? {}))}`;
}

/**
 * The ticket in a 403's detail, if the refusal carries one: the gate's shape (`{ticket: id,
 * effect, approve, expires_at}`) or a daemon's (`{kind: "approval_required", ticket: Ticket}`,
 * osmoda-keyd), whose `Ticket` carries its own `effect` and `expires_at`.
 */
export function ticketOf(detail: unknown): OpenTicket | undefined {
  let d = detail as { ticket?: unknown; effect?: unknown; approve?: unknown; expires_at?: unknown } | null;
  if (d && (d as { kind?: unknown }).kind === "approval_required" && d.ticket && typeof d.ticket === "object") {
    const t = d.ticket as { id?: unknown; effect?: unknown; expires_at?: unknown };
    d = { ticket: t.id, effect: t.effect, expires_at: t.expires_at };
  }
  if (!d || typeof d.ticket !== "string") return undefined;
  return {
    ticket: d.ticket,
    effect: Array.isArray(d.effect) ? d.effect.map(String) : [],
    approve: typeof d.approve === "string" ? d.approve : `agentctl approvals approve ${d.ticket}`,
    expiresAt: typeof d.expires_at === "string" ? d.expires_at : "",
  };
}

/**
 * Process-wide state of the flow: tickets waiting for the same call again, and relays in
 * flight. Module scope, not `register()`'s, because OpenClaw calls `register()` many times and
 * may run the hook and the tool from different registrations.
 */
const waiting = new Map<string, OpenTicket>();
const relays = new Map<string, Promise<void>>();

/** Remember that `key` was refused with `t` (the tool calls this on a gate 403). */
export function remember(key: string, t: OpenTicket): void {
  waiting.set(key, t);
  // Bounded: a model that never retries must not grow this without end.
  if (waiting.size > 256) waiting.delete(waiting.keys().next().value!);
}

/** The relay of `ticket`'s decision, if one is in flight or done. */
export function relayOf(ticket: string): Promise<void> | undefined {
  return relays.get(ticket);
}

/** Text the person reads in the approval prompt (OpenClaw caps it at 512 characters). */
export function describe(tool: string, t: OpenTicket): string {
  const effect = t.effect.length ? t.effect.join("; ") : "a change agentd judged destructive";
  const tail = ` (osModa ticket ${t.ticket}; also: ${t.approve})`;
  const head = `${tool} would: `;
  const room = 500 - head.length - tail.length;
  return head + (effect.length > room ? effect.slice(0, room - 1) + "…" : effect) + tail;
}

/**
 * A channel or sender id in the characters agentd's relay accepts (letters, digits and
 * `._@:+-/#`): any other character, and `+` itself, becomes `+HH` per UTF-8 byte, so distinct
 * ids stay distinct. IRC's sender ids are `nick!user@host`: without this an IRC owner's
 * decision was refused by the relay (400) and could never be recorded.
 */
export function relayId(id: string): string {
  return Array.from(new TextEncoder().encode(id), (b) => {
    const c = String.fromCharCode(b);
    return b < 0x80 && /[A-Za-z0-9._@:\-/#]/.test(c) ? c : `+${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }).join("");
}

/** Passes the owner's decision on to agentd's relay socket. */
export async function relayDecision(settings: Settings, ticket: string, approve: boolean, who: Requester): Promise<void> {
  const res = await call({
    socket: settings.relaySocket,
    method: "POST",
    path: `/relay/approval/${encodeURIComponent(ticket)}`,
    body: {
      decision: approve ? "approve" : "deny",
      requester: { channel: who.channel && relayId(who.channel), sender_id: who.senderId ? relayId(who.senderId) : null, owner: who.senderIsOwner === true },
    },
    timeoutMs: settings.requestTimeoutMs,
  });
  if (res.status !== 200) {
    const b = res.body as { error?: string } | null;
    throw new Error(`agentd's approval relay answered ${res.status}: ${b?.error ?? JSON.stringify(res.body)}`);
  }
}

/** The `before_tool_call` result for a bridge tool call: nothing, a block, or an approval. */
export function beforeBridgeCall(
  settings: Settings,
  tool: string,
  params: Record<string, unknown>,
  requester: Requester | undefined,
): Record<string, unknown> | undefined {
  if (params.approval !== undefined) return undefined;
  const key = callKey(tool, params);
  const t = waiting.get(key);
  if (!t) return undefined;
  if (!requester || typeof requester.channel !== "string" || requester.channel === "") {
    return {
      block: true,
      blockReason: `${tool} needs a person's approval (ticket ${t.ticket}), but this run has no requester to ask; nothing was changed. A person can run: ${t.approve}`,
    };
  }
  if (requester.senderIsOwner !== true) {
    return {
      block: true,
      blockReason: `${tool} needs the owner's approval (ticket ${t.ticket}); the person asking is not the owner, so nothing was changed.`,
    };
  }
  const who: Requester = { channel: requester.channel, senderId: requester.senderId, senderIsOwner: true };
  return {
    params: { ...params, approval: t.ticket },
    requireApproval: {
      title: `osModa: approve ${tool}?`,
      description: describe(tool, t),
      severity: "critical",
      allowedDecisions: ["allow-once", "deny"],
      timeoutMs: settings.approvalTimeoutMs,
      onResolution(decision: Decision) {
        // Runs synchronously up to the first await, before the tool starts: the tool finds the
        // relay in `relays` and waits for it.
        if (decision !== "allow-once" && decision !== "allow-always" && decision !== "deny") return;
        waiting.delete(key);
        const p = relayDecision(settings, t.ticket, decision !== "deny", who);
        p.catch(() => {});
        relays.set(t.ticket, p);
        if (relays.size > 256) relays.delete(relays.keys().next().value!);
        return p;
      },
    },
  };
}
