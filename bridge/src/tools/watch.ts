//! Tools backed by osmoda-watch: SafeSwitch (apply a generation, probe, commit or roll back)
//! and watchers (declared in the config tree, applied with SafeSwitch).

import { Type } from "typebox";

import { withQuery } from "../client.ts";
import { clip, table } from "../format.ts";
import { tool } from "../tool.ts";

const obj = <P extends Record<string, any>>(props: P) => Type.Object(props, { additionalProperties: false });
const common = {
  timeout_secs: Type.Optional(Type.Integer({ minimum: 1, maximum: 3600 })),
  retries: Type.Optional(Type.Integer({ minimum: 0, maximum: 100 })),
};

/** A health check, as osmoda-watch takes it (docs/api.md). */
export const HealthCheck = Type.Union(
  [
    obj({ type: Type.Literal("systemd"), unit: Type.String({ minLength: 1, maxLength: 256 }), ...common }),
    obj({
      type: Type.Literal("http"),
      url: Type.String({ pattern: "^http://", maxLength: 2048 }),
      expect_status: Type.Optional(Type.Integer({ minimum: 100, maximum: 599 })),
      body_contains: Type.Optional(Type.String({ maxLength: 1024 })),
      ...common,
    }),
    obj({ type: Type.Literal("tcp"), host: Type.String({ minLength: 1, maxLength: 256 }), port: Type.Integer({ minimum: 1, maximum: 65535 }), ...common }),
    obj({ type: Type.Literal("command"), command: Type.Array(Type.String({ maxLength: 4096 }), { minItems: 1, maxItems: 64 }), ...common }),
    obj({ type: Type.Literal("disk"), path: Type.String({ minLength: 1, maxLength: 1024 }), min_free_percent: Type.Number({ minimum: 0, maximum: 100 }), ...common }),
    obj({ type: Type.Literal("process"), name: Type.String({ minLength: 1, maxLength: 256 }), ...common }),
    obj({ type: Type.Literal("agentd"), ...common }),
  ],
  { description: "systemd {unit} | http {url, expect_status?, body_contains?} | tcp {host, port} | command {command: [argv]} | disk {path, min_free_percent} | process {name} | agentd" },
);

const switchId = Type.Integer({ minimum: 1, description: "Switch id from safe_switch_begin." });

/** One line about a switch: id, generation, state, and what happens next. */
function switchLine(s: any): string {
  const next: Record<string, string> = {
    pending: "it will build and activate next",
    building: "building",
    activating: "activating",
    probing: `probing health checks until the TTL (${s.ttl_secs}s), then it commits by itself; safe_switch_commit ends probing early, safe_switch_rollback undoes it`,
    committing: "committing",
    committed: "done: this generation is now the boot default",
    "rolling-back": "rolling back",
    "rolled-back": `rolled back to ${s.previous_generation ?? "the previous generation"}${s.reason ? ` (${s.reason})` : ""}`,
    failed: `failed${s.reason ? `: ${s.reason}` : ""}`,
  };
  return `switch ${s.id}: generation ${String(s.generation).slice(0, 12)} is ${s.state}; ${next[s.state] ?? ""}`;
}

export const watchTools = [
  tool({
    name: "safe_switch_begin",
    label: "Apply generation (SafeSwitch)",
    description:
      "Apply a configuration generation safely: activate it without making it the boot default, probe the health checks until the TTL, then commit, or roll back by itself on a failed check. Returns the preview (diff against what is deployed) and the switch id.",
    parameters: obj({
      generation: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: "Commit id (default: the newest)." })),
      plan: Type.Optional(Type.String({ minLength: 1, maxLength: 1024, description: "What this switch is for." })),
      ttl_secs: Type.Optional(Type.Integer({ minimum: 1, maximum: 86400, description: "How long to probe before committing." })),
      health_checks: Type.Optional(Type.Array(HealthCheck, { maxItems: 32 })),
    }),
    async run(p, ctx) {
      const preview = await ctx.daemon("osmoda-watch", "GET", withQuery("/switch/preview", { generation: p.generation }), undefined, "safe_switch_begin (preview)");
      const s = await ctx.daemon("osmoda-watch", "POST", "/switch/begin", p, "safe_switch_begin");
      const lines = [
        switchLine(s),
        `from ${preview.from ?? "(nothing deployed yet)"} to ${preview.to}; files: ${(preview.files ?? []).join(", ") || "(none)"}`,
        ...(preview.cannot_apply?.length ? [`cannot apply here: ${preview.cannot_apply.join("; ")}`] : []),
        clip(preview.diff ?? "", 3000),
        `Follow it with safe_switch_status {"id": ${s.id}}.`,
      ];
      return { text: lines.join("\n"), details: { switch: s, preview } };
    },
  }),
  tool({
    name: "safe_switch_status",
    label: "Switch status",
    description: "State of one SafeSwitch (pending, building, activating, probing, committing, committed, rolling-back, rolled-back, failed) with its check results.",
    parameters: obj({ id: switchId }),
    async run(p, ctx) {
      const s = await ctx.daemon("osmoda-watch", "GET", `/switch/status/${p.id}`, undefined, `safe_switch_status ${p.id}`);
      return { text: switchLine(s), details: s };
    },
  }),
  tool({
    name: "safe_switch_commit",
    label: "Commit switch",
    description: "End a switch's probing early and make its generation the boot default.",
    parameters: obj({ id: switchId }),
    async run(p, ctx) {
      const s = await ctx.daemon("osmoda-watch", "POST", `/switch/commit/${p.id}`, undefined, `safe_switch_commit ${p.id}`);
      return { text: switchLine(s), details: s };
    },
  }),
  tool({
    name: "safe_switch_rollback",
    label: "Roll back switch",
    description: "Roll a switch back to the previous system (recorded as a revert commit).",
    parameters: obj({ id: switchId, reason: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })) }),
    async run(p, ctx) {
      const body = p.reason === undefined ? undefined : { reason: p.reason };
      const s = await ctx.daemon("osmoda-watch", "POST", `/switch/rollback/${p.id}`, body, `safe_switch_rollback ${p.id}`);
      return { text: switchLine(s), details: s };
    },
  }),
  tool({
    name: "watcher_add",
    label: "Add watcher",
    description:
      "Watch something and act when it fails: declares services.osmoda.watch.watchers.<name> in the config tree (a commit) and applies it with a SafeSwitch. Actions escalate in order: restart (the unit), rollback (to the last good generation), notify.",
    parameters: obj({
      name: Type.String({ pattern: "^[A-Za-z_][A-Za-z0-9_-]{0,63}$", description: "Watcher name (letters, digits, - and _)." }),
      check: HealthCheck,
      interval_secs: Type.Integer({ minimum: 1, maximum: 86400 }),
      actions: Type.Array(Type.Enum(["restart", "rollback", "notify"]), { minItems: 1, maxItems: 3 }),
      reason: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
      ttl_secs: Type.Optional(Type.Integer({ minimum: 1, maximum: 86400 })),
    }),
    async run(p, ctx) {
      const out = await ctx.daemon("osmoda-watch", "POST", "/watcher/add", p, `watcher_add ${p.name}`);
      const gen = out.config?.generation ?? {};
      const s = out.switch ?? {};
      return {
        text: [
          `watcher ${p.name} declared in generation ${gen.short ?? gen.rev} (${gen.rev}), ledger event ${out.config?.event_id}.`,
          `Applying it: ${switchLine(s)}`,
          `Follow it with safe_switch_status {"id": ${s.id}}; watcher_list shows the watcher once committed.`,
        ].join("\n"),
        details: out,
      };
    },
  }),
  tool({
    name: "watcher_list",
    label: "List watchers",
    description: "The watchers running now, with their health and the current incident's escalation steps.",
    parameters: obj({}),
    async run(_p, ctx) {
      const ws = await ctx.daemon("osmoda-watch", "GET", "/watcher/list", undefined, "watcher_list");
      const rows = ws.map((w: any) => [w.name, w.check?.type ?? "", `${w.interval_secs}s`, (w.actions ?? []).join(">"), typeof w.status === "string" ? w.status : JSON.stringify(w.status)]);
      return { text: `${ws.length} watchers\n${clip(table(["name", "check", "every", "actions", "status"], rows), 6000)}`, details: ws };
    },
  }),
];
