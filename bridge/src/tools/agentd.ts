//! Tools backed by agentd: system views, the ledger, incidents and the config tree.

import { Type } from "typebox";

import { withQuery } from "../client.ts";
import { invalidArgs } from "../errors.ts";
import { brief, bytes, clip, duration, table } from "../format.ts";
import { tool, type RunContext } from "../tool.ts";

const obj = <P extends Record<string, any>>(props: P) => Type.Object(props, { additionalProperties: false });
const text = (description: string, extra: Record<string, unknown> = {}) =>
  Type.String({ minLength: 1, maxLength: 4096, description, ...extra });
/** A NixOS option path argument. */
export const optionPath = (description: string) =>
  Type.String({ minLength: 1, maxLength: 512, pattern: "^[A-Za-z0-9_.\"'-]+$", description });
/** The optional `file` of the tree an edit goes to. */
export const fileArg = Type.Optional(
  Type.String({ minLength: 1, maxLength: 256, description: "File in the config tree (default osmoda.nix)." }),
);
/** The `reason` every tree mutation takes. */
export const reasonArg = text("Why, in one sentence: becomes the commit message and the ledger reason.");
/** The `approval` ticket a destructive mutation is retried with. */
export const approvalArg = Type.Optional(
  Type.String({ minLength: 1, maxLength: 128, description: "Id of a ticket a person approved for exactly this edit." }),
);

/** The `/system/query` queries agentd knows (kept equal to agentd's `QUERIES`). */
export const SYSTEM_QUERIES = ["processes", "services", "network", "disk", "users", "kernel", "generations", "service", "journal"] as const;

const absPath = (description: string) =>
  Type.String({ minLength: 1, maxLength: 4096, pattern: "^/", description });

/** After a generation lands: fetch its patch and say how to apply it. */
export async function landed(ctx: RunContext, what: string, body: any): Promise<{ text: string; details: unknown }> {
  const gen = body?.generation ?? {};
  const rev: string = gen.rev;
  const show = await ctx.daemon("agentd", "GET", `/config/generation/${encodeURIComponent(rev)}`, undefined, `reading generation ${rev}`);
  const patch: string = show?.patch ?? "";
  // agentd lists each changed file as an object ({path, ...}); older answers were plain names.
  const files: string[] = (show?.files ?? []).map((f: any) => (typeof f === "string" ? f : (f?.path ?? f?.file ?? JSON.stringify(f))));
  const lines = [
    `${what}: committed generation ${gen.short ?? rev} (${rev}) "${gen.message?.split("\n")[0] ?? ""}"`,
    `ledger event ${body.event_id}; files: ${files.join(", ") || "(none)"}`,
    "",
    clip(patch, 3000),
    "",
    `Not applied yet. Apply it with safe_switch_begin {"generation": "${rev}"} (it rolls back by itself when health checks fail).`,
  ];
  return { text: lines.join("\n"), details: { ...body, files, patch } };
}

/**
 * A tree edit that takes exactly one of `value` (JSON) or `nix` and lands one generation:
 * config_set here, config_append and config_remove in `config.ts`. `done` starts the answer
 * ("set services.x: committed generation ...").
 */
export function valueEdit(e: { name: string; endpoint: string; label: string; description: string; path: string; value: string; nix: string; done: string }) {
  return tool({
    name: e.name,
    label: e.label,
    description: e.description,
    parameters: obj({
      path: optionPath(e.path),
      value: Type.Optional(Type.Unknown({ description: e.value })),
      nix: Type.Optional(Type.String({ minLength: 1, maxLength: 65536, description: e.nix })),
      file: fileArg,
      reason: reasonArg,
      approval: approvalArg,
    }),
    async run(p, ctx) {
      if ((p.value === undefined) === (p.nix === undefined)) {
        throw invalidArgs(e.name, ["give exactly one of `value` (JSON) or `nix` (a Nix expression)"]);
      }
      const body = await ctx.daemon("agentd", "POST", e.endpoint, p, `${e.name} ${p.path}`);
      return landed(ctx, `${e.done} ${p.path}`, body);
    },
  });
}

export const agentdTools = [
  tool({
    name: "system_health",
    label: "System health",
    description: "CPU, memory, disk, load and uptime of this machine.",
    parameters: obj({}),
    async run(_p, ctx) {
      const h = await ctx.daemon("agentd", "GET", "/health", undefined, "system_health");
      const text = [
        `CPU ${h.cpu.usage_percent.toFixed(1)}% of ${h.cpu.cores} cores; load ${h.load.map((l: number) => l.toFixed(2)).join(" ")}`,
        `memory ${h.ram.used_percent.toFixed(1)}% used (${bytes(h.ram.available_bytes)} free of ${bytes(h.ram.total_bytes)})`,
        `disk ${h.disk.path} ${h.disk.used_percent.toFixed(1)}% used (${bytes(h.disk.available_bytes)} free of ${bytes(h.disk.total_bytes)})`,
        `up ${duration(h.uptime)}`,
      ].join("\n");
      return { text, details: h };
    },
  }),
  tool({
    name: "system_query",
    label: "System query",
    description:
      "Structured read-only views of the system: processes {sort: cpu|memory, limit}, services {state}, network, disk, users, kernel {keys: [sysctl names]}, generations (NixOS system generations), service {unit}, journal {unit, since, priority, lines}.",
    parameters: obj({
      query: Type.Enum([...SYSTEM_QUERIES], { description: "Which view." }),
      args: Type.Optional(Type.Record(Type.String(), Type.Unknown(), { description: "Query-specific arguments." })),
    }),
    async run(p, ctx) {
      const out = await ctx.daemon("agentd", "POST", "/system/query", { query: p.query, args: p.args ?? null }, `system_query ${p.query}`);
      const n = Array.isArray(out) ? `${out.length} entries` : "result";
      return { text: `${p.query}: ${n}\n${clip(JSON.stringify(out, null, 1), 6000)}`, details: out };
    },
  }),
  tool({
    name: "network_info",
    label: "Network info",
    description: "Network interfaces with their addresses, and the TCP/UDP ports this machine listens on.",
    parameters: obj({}),
    async run(_p, ctx) {
      const n = await ctx.daemon("agentd", "POST", "/system/query", { query: "network", args: null }, "network_info");
      const ifs = table(
        ["interface", "up", "addresses"],
        n.interfaces.map((i: any) => [i.name, i.up ? "up" : "down", (i.addresses ?? []).join(", ")]),
      );
      const ports = table(
        ["proto", "address", "port"],
        n.listening.map((l: any) => [l.proto, l.address, String(l.port)]),
      );
      return { text: `${ifs}\n\nlistening:\n${clip(ports, 4000)}`, details: n };
    },
  }),
  tool({
    name: "service_status",
    label: "Service status",
    description: "One systemd unit's state: active/sub state, main PID, last exit status, restarts, unit file.",
    parameters: obj({ unit: Type.String({ minLength: 1, maxLength: 256, description: "Unit, e.g. nginx or nginx.service." }) }),
    async run(p, ctx) {
      const s = await ctx.daemon("agentd", "POST", "/system/query", { query: "service", args: { unit: p.unit } }, `service_status ${p.unit}`);
      return {
        text: `${s.Id}: ${s.ActiveState} (${s.SubState}), main PID ${s.MainPID}, last exit status ${s.ExecMainStatus}, result ${s.Result}, ${s.NRestarts ?? 0} restarts; unit file ${s.UnitFileState || "-"} ${s.FragmentPath || ""}`.trim(),
        details: s,
      };
    },
  }),
  tool({
    name: "journal_logs",
    label: "Journal",
    description: "Recent systemd journal lines, oldest first. Filters: unit, since ('1 hour ago', '2026-01-01 10:00'), priority (0..7 or emerg..debug: that level and more severe), lines (default 100, at most 1000).",
    parameters: obj({
      unit: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
      since: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
      priority: Type.Optional(Type.String({ minLength: 1, maxLength: 8 })),
      lines: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })),
    }),
    async run(p, ctx) {
      const lines = await ctx.daemon("agentd", "POST", "/system/query", { query: "journal", args: p }, "journal_logs");
      const text = lines.map((l: any) => `${l.ts ?? ""} ${l.unit ?? ""}[${l.pid ?? ""}] <${l.priority ?? ""}> ${l.message}`).join("\n");
      return { text: `${lines.length} lines\n${clip(text, 8000)}`, details: lines };
    },
  }),
  tool({
    name: "shell_exec",
    label: "Run command",
    description:
      "Run a command inside osModa's sandbox (read-only root, fresh /tmp, user nobody unless user is 'root'; agentd's state and the approval path are invisible). Give command (a shell line) or argv (no shell). Only the listed writable paths can be changed, never the configuration tree (use config_set). Input can be given as stdin. Output is capped at 64 KiB per stream; recorded in the ledger.",
    parameters: obj({
      command: Type.Optional(Type.String({ minLength: 1, maxLength: 65536, description: "Shell command line (run by /bin/sh -c)." })),
      argv: Type.Optional(Type.Array(Type.String({ maxLength: 65536 }), { minItems: 1, maxItems: 1024, description: "Program and arguments, no shell." })),
      cwd: Type.Optional(absPath("Working directory.")),
      env: Type.Optional(Type.Record(Type.String({ pattern: "^[A-Za-z_][A-Za-z0-9_]*$" }), Type.String({ maxLength: 65536 }), { additionalProperties: false, maxProperties: 64 })),
      timeout_secs: Type.Optional(Type.Integer({ minimum: 1, maximum: 600, description: "Default 60." })),
      user: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: "Default nobody; 'root' when root is needed." })),
      writable: Type.Optional(Type.Array(absPath("Existing path the command may write."), { maxItems: 32 })),
      stdin: Type.Optional(Type.String({ maxLength: 524288, description: "Text given to the command on standard input (at most 512 KiB); default: none." })),
      approval: approvalArg,
    }),
    async run(p, ctx) {
      if ((p.command === undefined) === (p.argv === undefined)) {
        throw invalidArgs("shell_exec", ["give exactly one of `command` (a shell line) or `argv` (no shell)"]);
      }
      const r = await ctx.daemon("agentd", "POST", "/system/exec", { timeout_secs: 60, ...p }, "shell_exec");
      const how = r.timed_out ? "timed out (everything it started was killed)" : r.exit_code === null ? `killed by signal ${r.signal}` : `exit ${r.exit_code}`;
      const lines = [`${how} after ${r.duration_ms} ms as ${r.user}${r.truncated ? " (output truncated)" : ""}`];
      if (r.stdout) lines.push(`stdout:\n${clip(r.stdout, 6000)}`);
      if (r.stderr) lines.push(`stderr:\n${clip(r.stderr, 3000)}`);
      if (/Read-only file system/.test(r.stderr ?? "")) {
        lines.push("Commands see a read-only system: pass the paths to change in `writable`; configuration changes go through config_set and safe_switch_begin.");
      }
      return { text: lines.join("\n"), details: r };
    },
  }),
  tool({
    name: "file_read",
    label: "Read file",
    description: "Read a regular file (UTF-8 text, or base64 for binary). Pages with offset and limit (default 64 KiB, at most 1 MiB). Recorded in the ledger.",
    parameters: obj({
      path: absPath("Absolute path."),
      offset: Type.Optional(Type.Integer({ minimum: 0 })),
      limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1048576 })),
    }),
    async run(p, ctx) {
      const r = await ctx.daemon("agentd", "GET", withQuery("/fs/read", p), undefined, `file_read ${p.path}`);
      const more = r.truncated ? `\n… ${r.size - r.offset - r.bytes} more bytes: read on with offset ${r.offset + r.bytes}` : "";
      return { text: `${r.path} (${r.size} bytes, ${r.encoding}) from ${r.offset}:\n${r.content}${more}`, details: r };
    },
  }),
  tool({
    name: "file_write",
    label: "Write file",
    description:
      "Replace (or create) a regular file atomically; the ledger records its SHA-256 before and after. Not for configuration: files in the configuration tree or /etc/nixos are refused; use config_set. Give exactly one of content (text) or content_base64.",
    parameters: obj({
      path: absPath("Absolute path."),
      content: Type.Optional(Type.String({ maxLength: 786432 })),
      content_base64: Type.Optional(Type.String({ maxLength: 786432 })),
      mode: Type.Optional(Type.Integer({ minimum: 0, maximum: 4095, description: "Permission bits as a number (0o644 = 420)." })),
      create_dirs: Type.Optional(Type.Boolean()),
      approval: approvalArg,
    }),
    async run(p, ctx) {
      if ((p.content === undefined) === (p.content_base64 === undefined)) {
        throw invalidArgs("file_write", ["give exactly one of `content` or `content_base64`"]);
      }
      const r = await ctx.daemon("agentd", "POST", "/fs/write", p, `file_write ${p.path}`);
      return {
        text: `${r.created ? "created" : "replaced"} ${r.path} (${r.bytes} bytes, mode ${r.mode.toString(8)}); sha256 ${r.sha256_before ?? "(new)"} → ${r.sha256_after}; ledger event ${r.event_id}`,
        details: r,
      };
    },
  }),
  tool({
    name: "directory_list",
    label: "List directory",
    description: "List a directory: name, kind (file, dir, symlink, other), size and mode of each entry, sorted by name.",
    parameters: obj({ path: absPath("Absolute path of a directory.") }),
    async run(p, ctx) {
      const r = await ctx.daemon("agentd", "GET", withQuery("/fs/list", p), undefined, `directory_list ${p.path}`);
      const rows = r.entries.map((e: any) => [e.kind, e.mode === null || e.mode === undefined ? "" : e.mode.toString(8), e.size, e.name]);
      return { text: `${r.path}: ${r.entries.length} entries${r.truncated ? " (truncated)" : ""}\n${clip(table(["kind", "mode", "size", "name"], rows), 8000)}`, details: r };
    },
  }),
  tool({
    name: "event_log",
    label: "Event log",
    description:
      "Read agentd's hash-chained audit ledger. Filters: type and actor (a trailing * matches a prefix), since (RFC 3339), after_id, limit (1..10000, default 100), order asc|desc.",
    parameters: obj({
      type: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
      actor: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
      since: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
      after_id: Type.Optional(Type.Integer({ minimum: 0 })),
      limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10000 })),
      order: Type.Optional(Type.Enum(["asc", "desc"])),
    }),
    async run(p, ctx) {
      const events = await ctx.daemon("agentd", "GET", withQuery("/events/log", p), undefined, "event_log");
      const rows = events.map((e: any) => [String(e.id), e.ts, e.type, e.actor, brief(e.payload, 120)]);
      return { text: `${events.length} events\n${clip(table(["id", "ts", "type", "actor", "payload"], rows), 6000)}`, details: events };
    },
  }),
  tool({
    name: "receipt_list",
    label: "Receipts",
    description: "List receipts (ledger events of type receipt.*). Filters: type (without 'receipt.'), since (RFC 3339), limit.",
    parameters: obj({
      type: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
      since: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
      limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 10000 })),
    }),
    async run(p, ctx) {
      const rs = await ctx.daemon("agentd", "GET", withQuery("/receipts", p), undefined, "receipt_list");
      const rows = rs.map((r: any) => [String(r.id), r.ts, r.type, brief(r.receipt, 120)]);
      return { text: `${rs.length} receipts\n${clip(table(["id", "ts", "type", "receipt"], rows), 6000)}`, details: rs };
    },
  }),
  tool({
    name: "incident_create",
    label: "Open incident",
    description: "Open an incident (recorded in the ledger) to track investigating and fixing a problem step by step.",
    parameters: obj({ name: text("Short name of the problem, e.g. 'nginx down on web-1'.", { maxLength: 256 }) }),
    async run(p, ctx) {
      const inc = await ctx.daemon("agentd", "POST", "/incident/create", { name: p.name }, "incident_create");
      return {
        text: `incident ${inc.id} "${inc.name}" opened (${inc.status}). Record each action with incident_step {"id": ${inc.id}, ...}.`,
        details: inc,
      };
    },
  }),
  tool({
    name: "incident_step",
    label: "Incident step",
    description: "Record one action taken on an open incident and its result.",
    parameters: obj({
      id: Type.Integer({ minimum: 1, description: "Incident id." }),
      action: text("What was done."),
      result: text("What happened."),
    }),
    async run(p, ctx) {
      const inc = await ctx.daemon("agentd", "POST", `/incident/${p.id}/step`, { action: p.action, result: p.result }, `incident_step on incident ${p.id}`);
      return { text: `incident ${inc.id} "${inc.name}": step ${inc.steps.length} recorded (${inc.status}).`, details: inc };
    },
  }),
  tool({
    name: "config_get",
    label: "Read config option",
    description: "Read one NixOS option's value from the committed configuration tree, e.g. services.osmoda.watch.watchers.",
    parameters: obj({ path: optionPath("Option path, e.g. services.nginx.enable."), file: fileArg }),
    async run(p, ctx) {
      const v = await ctx.daemon("agentd", "GET", withQuery("/config/get", p), undefined, `config_get ${p.path}`);
      return { text: `${v.path} (${v.file}) = ${clip(JSON.stringify(v.value, null, 1), 6000)}`, details: v };
    },
  }),
  valueEdit({
    name: "config_set",
    endpoint: "/config/set",
    label: "Set config option",
    description:
      "Set one NixOS option in the configuration tree (a lossless edit, validated, committed to git as a new generation). Give exactly one of value (JSON) or nix (one Nix expression). The change is NOT applied until safe_switch_begin.",
    path: "Option path, e.g. services.nginx.enable.",
    value: "New value as JSON (rendered as idiomatic Nix).",
    nix: "New value as one Nix expression.",
    done: "set",
  }),
  tool({
    name: "config_unset",
    label: "Remove config option",
    description: "Remove one NixOS option's definition from the configuration tree (committed as a new generation; applied by safe_switch_begin).",
    parameters: obj({ path: optionPath("Option path."), file: fileArg, reason: reasonArg, approval: approvalArg }),
    async run(p, ctx) {
      const body = await ctx.daemon("agentd", "POST", "/config/unset", p, `config_unset ${p.path}`);
      return landed(ctx, `removed ${p.path}`, body);
    },
  }),
  tool({
    name: "config_log",
    label: "Config history",
    description: "The configuration's generations (git commits), newest first: who, when, why, and whether deployed.",
    parameters: obj({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000 })) }),
    async run(p, ctx) {
      const gens = await ctx.daemon("agentd", "GET", withQuery("/config/generations", p), undefined, "config_log");
      const rows = gens.map((g: any) => [g.short, g.time, g.author?.name ?? "", g.deployed ? "deployed" : "", (g.message ?? "").split("\n")[0]]);
      return { text: `${gens.length} generations\n${clip(table(["rev", "time", "author", "", "message"], rows), 6000)}`, details: gens };
    },
  }),
  tool({
    name: "config_diff",
    label: "Config diff",
    description: "The patch between two generations of the configuration tree (to defaults to the newest).",
    parameters: obj({
      from: Type.String({ minLength: 1, maxLength: 128, description: "Generation (commit id or ref)." }),
      to: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
    }),
    async run(p, ctx) {
      const d = await ctx.daemon("agentd", "GET", withQuery("/config/diff", p), undefined, `config_diff ${p.from}`);
      return { text: `${d.from} → ${d.to}\n${clip(d.patch || "(no changes)", 8000)}`, details: d };
    },
  }),
  tool({
    name: "config_revert",
    label: "Revert generation",
    description: "Undo one generation with a new commit (history is kept). Apply the result with safe_switch_begin.",
    parameters: obj({
      rev: Type.String({ minLength: 1, maxLength: 128, description: "Generation to undo." }),
      reason: reasonArg,
    }),
    async run(p, ctx) {
      const body = await ctx.daemon("agentd", "POST", "/config/revert", p, `config_revert ${p.rev}`);
      return landed(ctx, `reverted ${p.rev}`, body);
    },
  }),
];
