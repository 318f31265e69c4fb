//! Tools backed by osmoda-routines: cron, interval, event and webhook automation declared as
//! `services.osmoda.routines.<name>` (adding or removing one is a commit applied by SafeSwitch),
//! manual runs and the run history.

import { Type, type TSchema } from "typebox";

import { withQuery } from "../client.ts";
import { brief, clip, table } from "../format.ts";
import { tool } from "../tool.ts";

const obj = <P extends Record<string, any>>(props: P) => Type.Object(props, { additionalProperties: false });

const routineName = Type.String({
  pattern: "^[A-Za-z_][A-Za-z0-9_-]{0,63}$",
  description: "Routine name (a letter or _, then letters, digits, - and _; at most 64).",
});
const secs = (max: number, description: string) => Type.Integer({ minimum: 1, maximum: max, description });

export const Trigger = Type.Union(
  [
    obj({
      type: Type.Literal("cron"),
      schedule: Type.String({ minLength: 1, maxLength: 256, description: "[second] minute hour day-of-month month day-of-week, e.g. '0 8 * * MON-FRI'." }),
      timezone: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: "IANA time zone (default UTC)." })),
    }),
    obj({ type: Type.Literal("interval"), seconds: secs(31_536_000, "Seconds between runs.") }),
    obj({ type: Type.Literal("event"), match: Type.String({ minLength: 1, maxLength: 128, pattern: "^[!-~]+$", description: "Ledger event type, exact or prefix with a trailing * ('watch.*')." }) }),
    obj({
      type: Type.Literal("webhook"),
      path: Type.String({ minLength: 1, maxLength: 128, pattern: "^[A-Za-z0-9._-]+$" }),
      secret_file: Type.String({ minLength: 2, maxLength: 4096, pattern: "^/", description: "File holding the HMAC-SHA256 secret." }),
      replay_window_secs: Type.Optional(secs(86_400, "Accepted clock distance, seconds (default 300).")),
    }),
  ],
  { description: "cron {schedule, timezone?} | interval {seconds} | event {match} | webhook {path, secret_file, replay_window_secs?}" },
);

const command = obj({
  type: Type.Literal("command"),
  command: Type.Array(Type.String({ maxLength: 4096 }), { minItems: 1, maxItems: 256, description: "Program and arguments (no shell)." }),
  timeout_secs: secs(86_400, "Kill it after this many seconds."),
  env: Type.Optional(Type.Record(Type.String({ pattern: "^[A-Za-z_][A-Za-z0-9_]{0,127}$" }), Type.String({ maxLength: 4096 }))),
  user: Type.Optional(Type.String({ minLength: 1, maxLength: 32 })),
  output_limit_bytes: Type.Optional(Type.Integer({ minimum: 1, maximum: 16 * 1024 * 1024 })),
  sandbox: Type.Optional(Type.Enum(["boundary", "ring1", "ring2"], { description: "boundary (default): the machine read-only, secrets hidden; ring2: agentd's sandbox, empty root, no network, no daemon sockets; ring1: ring2 plus the network of `capabilities` through osmoda-egress." })),
  capabilities: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 64 }), { minItems: 1, maxItems: 32, description: "ring1: names of services.osmoda.egress.capabilities it may reach." })),
  memory_mb: Type.Optional(Type.Integer({ minimum: 16, maximum: 8192, description: "ring1/ring2: memory budget, MiB (default 512)." })),
  max_tasks: Type.Optional(Type.Integer({ minimum: 8, maximum: 4096, description: "ring1/ring2: processes and threads at once (default 128)." })),
});
const http = obj({
  type: Type.Literal("http"),
  method: Type.Enum(["GET", "POST", "DELETE"]),
  path: Type.String({ minLength: 1, maxLength: 2048, pattern: "^/", description: "Path and query on agentd's socket, e.g. /health." }),
  body: Type.Optional(Type.Unknown()),
  timeout_secs: Type.Optional(secs(86_400, "Default 30.")),
});
const prompt = obj({
  type: Type.Literal("prompt"),
  message: Type.String({ minLength: 1, maxLength: 8192, description: "What the agent is asked (a user turn through the OpenClaw gateway)." }),
  timeout_secs: Type.Optional(secs(86_400, "Default 300.")),
});
const step: TSchema[] = [command, http, prompt];

export const Action = Type.Union(
  [...step, obj({ type: Type.Literal("chain"), steps: Type.Array(Type.Union(step), { minItems: 1, maxItems: 32 }) })],
  { description: "command {command: [argv], timeout_secs, env?, user?, sandbox?: boundary|ring1|ring2, capabilities?} | http {method, path, body?} (agentd) | prompt {message} (asks the agent) | chain {steps}" },
);

/** One line about a routine as listed. */
function listed(r: any): unknown[] {
  const t = r.trigger ?? {};
  const when = t.type === "cron" ? `cron '${t.schedule}' ${t.timezone ?? "UTC"}` : t.type === "interval" ? `every ${t.seconds}s` : t.type === "event" ? `on ${t.match}` : t.type === "webhook" ? `webhook /${t.path}` : String(t.type);
  return [r.name, r.enable ? "on" : "off", when, r.action?.type ?? "", r.next_run ?? "", r.last_run ? `${r.last_run.status} #${r.last_run.id}` : ""];
}

/** How the generation a routine edit produced is being applied. */
function applied(what: string, out: any): string {
  const gen = out.config?.generation ?? {};
  const s = out.switch ?? {};
  const head = `${what} in generation ${gen.short ?? gen.rev} (${gen.rev}), ledger event ${out.config?.event_id}.`;
  // Committed, but SafeSwitch could not start (osmoda-routines answered 202 applied: false).
  if (out.applied === false) return [head, `NOT applied: ${out.error}`, `To finish: ${out.hint}`].join("\n");
  return [head, `Applying it: switch ${s.id} is ${s.state}; it commits by itself when its TTL passes (safe_switch_status {"id": ${s.id}}).`].join("\n");
}

export const routinesTools = [
  tool({
    name: "routine_list",
    label: "List routines",
    description: "The routines in force: trigger, action, enabled, next and last run.",
    parameters: obj({
      after: Type.Optional(routineName),
      limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
    }),
    async run(p, ctx) {
      const rs = await ctx.daemon("osmoda-routines", "GET", withQuery("/routine/list", p), undefined, "routine_list");
      const rows = rs.map((r: any) => listed(r));
      return { text: `${rs.length} routines\n${clip(table(["name", "state", "trigger", "action", "next run", "last run"], rows), 6000)}`, details: rs };
    },
  }),
  tool({
    name: "routine_add",
    label: "Add routine",
    description:
      "Automate something: declares services.osmoda.routines.<name> in the config tree (a commit; the routine is validated first) and applies it with a SafeSwitch. Triggers: cron, interval, a ledger event, a signed webhook. Actions: a command (no shell, sandboxed), an HTTP call to agentd, a prompt to this agent, or a chain of them.",
    parameters: obj({
      name: routineName,
      trigger: Trigger,
      action: Action,
      enable: Type.Optional(Type.Boolean()),
      missed: Type.Optional(Type.Enum(["skip", "runOnce"], { description: "Runs missed while the daemon was down: skip (default) or runOnce." })),
      jitter_secs: Type.Optional(Type.Integer({ minimum: 0, maximum: 86_400 })),
      concurrency: Type.Optional(Type.Enum(["skip", "queue"], { description: "When it fires while still running: skip (default) or queue." })),
      reason: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })),
      ttl_secs: Type.Optional(secs(86_400, "TTL of the SafeSwitch that applies it.")),
    }),
    async run(p, ctx) {
      const out = await ctx.daemon("osmoda-routines", "POST", "/routine/add", p, `routine_add ${p.name}`);
      return { text: applied(`routine ${p.name} declared`, out), details: out };
    },
  }),
  tool({
    name: "routine_remove",
    label: "Remove routine",
    description: "Remove a routine declared in the config tree (a commit applied by SafeSwitch). A default routine of the module is disabled instead: config_set services.osmoda.routines.<name>.enable false.",
    parameters: obj({ name: routineName, reason: Type.Optional(Type.String({ minLength: 1, maxLength: 1024 })) }),
    async run(p, ctx) {
      const path = withQuery(`/routine/remove/${encodeURIComponent(p.name)}`, { reason: p.reason });
      const out = await ctx.daemon("osmoda-routines", "DELETE", path, undefined, `routine_remove ${p.name}`);
      return { text: applied(`routine ${p.name} removed`, out), details: out };
    },
  }),
  tool({
    name: "routine_trigger",
    label: "Run routine now",
    description: "Run a routine now, outside its schedule (recorded as a manual run); payload is handed to its action. Follow it with routine_history.",
    parameters: obj({ name: routineName, payload: Type.Optional(Type.Unknown({ description: "Any JSON, given to the action (OSMODA_PAYLOAD, or appended to a prompt)." })) }),
    async run(p, ctx) {
      const body = p.payload === undefined ? {} : { payload: p.payload };
      const out = await ctx.daemon("osmoda-routines", "POST", `/routine/trigger/${encodeURIComponent(p.name)}`, body, `routine_trigger ${p.name}`);
      const next = out.status === "skipped" ? "skipped: its previous run is still going (concurrency skip)" : `queued as run ${out.run_id}; routine_history {"routine": "${p.name}"} shows how it ends`;
      return { text: `routine ${p.name} ${next}.`, details: out };
    },
  }),
  tool({
    name: "routine_history",
    label: "Routine runs",
    description: "Runs of the routines, newest first: trigger, status (queued, running, ok, failed, skipped, interrupted), exit, duration and captured output.",
    parameters: obj({
      routine: Type.Optional(routineName),
      before_id: Type.Optional(Type.Integer({ minimum: 1 })),
      limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: "Default 20." })),
    }),
    async run(p, ctx) {
      const runs = await ctx.daemon("osmoda-routines", "GET", withQuery("/routine/history", { ...p, limit: p.limit ?? 20 }), undefined, "routine_history");
      const rows = runs.map((r: any) => [String(r.id), r.routine, r.trigger, r.status, r.exit ?? "", r.duration_ms === null || r.duration_ms === undefined ? "" : `${r.duration_ms} ms`, brief(r.error ?? r.output ?? "", 80)]);
      return { text: `${runs.length} runs\n${clip(table(["id", "routine", "trigger", "status", "exit", "took", "output/error"], rows), 6000)}`, details: runs };
    },
  }),
];
