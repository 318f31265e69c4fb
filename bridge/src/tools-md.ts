//! TOOLS.md for the agent's workspace, rendered from the tools the bridge registers, so the
//! document can never drift from the code (`npm run tools-md` writes it; a test fails when stale).

import type { TSchema } from "typebox";

import type { ToolSpec } from "./tool.ts";

/** A short type for one JSON schema: `string`, `integer 1..1000`, `"a" | "b"`, `[string]`, `{…}`. */
export function typeOf(s: any): string {
  if (!s || typeof s !== "object") return "any";
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (Array.isArray(s.enum)) return s.enum.map((v: unknown) => JSON.stringify(v)).join(" \\| ");
  if (Array.isArray(s.anyOf)) {
    const tags = s.anyOf.map((b: any) => b?.properties?.type?.const);
    if (tags.every((t: unknown) => typeof t === "string")) {
      return s.anyOf.map((b: any) => `${b.properties.type.const} {${fields(b).filter((f) => f !== "type").join(", ")}}`).join(" \\| ");
    }
    return s.anyOf.map(typeOf).join(" \\| ");
  }
  const range = (lo: unknown, hi: unknown) => (lo !== undefined || hi !== undefined ? ` ${lo ?? ""}..${hi ?? ""}` : "");
  switch (s.type) {
    case "string":
      return `string${s.pattern === "^/" ? " (absolute path)" : ""}${s.maxLength !== undefined ? ` ≤ ${s.maxLength} chars` : ""}`;
    case "integer":
    case "number":
      return `${s.type}${range(s.minimum ?? s.exclusiveMinimum, s.maximum)}`;
    case "boolean":
      return "boolean";
    case "array":
      return `[${typeOf(s.items)}]${s.maxItems !== undefined ? ` ≤ ${s.maxItems}` : ""}`;
    case "object":
      return s.properties ? `{${fields(s).join(", ")}}` : "object";
    default:
      return "any";
  }
}

/** Field names of an object schema, optional ones marked with `?`. */
function fields(s: any): string[] {
  const req = new Set<string>(s.required ?? []);
  return Object.keys(s.properties ?? {}).map((k) => (req.has(k) ? k : `${k}?`));
}

const cell = (t: string) => t.replaceAll("\n", " ").replaceAll("|", "\\|").replaceAll("\\\\|", "\\|");

/** The whole TOOLS.md for `tools`, in registration order. */
export function renderToolsMd(tools: ToolSpec<TSchema>[]): string {
  const out: string[] = [
    "# TOOLS.md — the tools osModa gives you",
    "",
    "<!-- Generated from bridge/src/tools by `cd bridge && npm run tools-md`. Do not edit: a test fails when this file is stale. -->",
    "",
    "Each tool calls one osModa daemon on this machine (agentd, osmoda-watch, osmoda-keyd, osmoda-routines,",
    "osmoda-mesh, osmoda-voice) over its local socket;",
    "every call is checked against the tool's schema and recorded in agentd's audit ledger.",
    "",
    "- Configuration is declarative: change it with `config_set` / `config_unset` (a git commit, a new",
    "  generation), apply it with `safe_switch_begin` (rolls back by itself when a health check fails).",
    "  Never edit the configuration tree or /etc/nixos with file tools: they are refused.",
    "- A call the approval gate judges destructive answers \"approval required\" with a ticket: tell the",
    "  person what it would do; repeat the same call once they approve in the chat (`/approve`).",
    "- Errors say what was wrong and what to do next; read them before retrying.",
    "",
    "| tool | what it does |",
    "|---|---|",
    ...tools.map((t) => `| \`${t.name}\` | ${cell(t.label)} |`),
    "",
  ];
  for (const t of tools) {
    const schema: any = t.parameters;
    out.push(`## \`${t.name}\` — ${t.label}`, "", t.description, "");
    const props = Object.entries<any>(schema.properties ?? {});
    if (props.length === 0) {
      out.push("No arguments.", "");
      continue;
    }
    const req = new Set<string>(schema.required ?? []);
    out.push("| argument | type | required | meaning |", "|---|---|---|---|");
    for (const [k, s] of props) out.push(`| ${k} | ${cell(typeOf(s))} | ${req.has(k) ? "yes" : "no"} | ${cell(s.description ?? "")} |`);
    out.push("");
  }
  return out.join("\n");
}
