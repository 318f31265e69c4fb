//! What every bridge tool shares: settings, argument validation against the tool's JSON schema,
//! daemon calls that fail with model-readable errors, and the `{content, details}` result shape.

import type { TSchema, Static } from "typebox";
import Value from "typebox/value";

import { callKey, relayOf, remember, ticketOf } from "./approvals.ts";
import { call, TransportError } from "./client.ts";
import { DaemonFailure, ToolAuthorizationError, daemonError, invalidArgs, transportError } from "./errors.ts";

/** The plugin's settings (`plugins.entries.osmoda-bridge.config`), with defaults applied. */
export interface Settings {
  /** agentd's agent-facing socket. */
  agentdSocket: string;
  /** osmoda-watch's socket. */
  watchSocket: string;
  /** osmoda-keyd's socket. */
  keydSocket: string;
  /** osmoda-routines' socket. */
  routinesSocket: string;
  /** osmoda-voice's socket. */
  voiceSocket: string;
  /** osmoda-mesh's socket. */
  meshSocket: string;
  /** agentd's approval relay (only the approval resolution callback uses it). */
  relaySocket: string;
  /** Budget for one daemon call, milliseconds. */
  requestTimeoutMs: number;
  /** How long a person has to answer an approval in the chat, milliseconds. */
  approvalTimeoutMs: number;
  /** The configuration tree: OpenClaw's built-in file tools may not write there (nor /etc/nixos). */
  configTree: string;
  /** agentd's memory dir (`--memory-dir`): `memory_get` of an `osmoda/…` note reads only there. */
  memoryDir: string;
}

export const DEFAULT_SETTINGS: Settings = {
  agentdSocket: "/run/osmoda/agentd.sock",
  watchSocket: "/run/osmoda/watch.sock",
  keydSocket: "/run/osmoda/keyd.sock",
  routinesSocket: "/run/osmoda/routines.sock",
  voiceSocket: "/run/osmoda/voice.sock",
  meshSocket: "/run/osmoda/mesh.sock",
  relaySocket: "/run/osmoda-relay/relay.sock",
  requestTimeoutMs: 120_000,
  approvalTimeoutMs: 300_000,
  configTree: "/var/lib/osmoda/config",
  memoryDir: "/var/lib/osmoda/memory",
};

/**
 * Reads the plugin config the gateway validated against `openclaw.plugin.json`'s `configSchema`.
 * Unknown keys cannot reach here (the schema forbids them); missing ones take the defaults.
 */
export function resolveSettings(raw: unknown): Settings {
  const c = (raw && typeof raw === "object" ? raw : {}) as Record<string, unknown>;
  const str = (k: string, d: string) => (typeof c[k] === "string" && c[k] !== "" ? (c[k] as string) : d);
  const secs = typeof c.requestTimeoutSecs === "number" ? c.requestTimeoutSecs : DEFAULT_SETTINGS.requestTimeoutMs / 1000;
  return {
    agentdSocket: str("agentdSocket", DEFAULT_SETTINGS.agentdSocket),
    watchSocket: str("watchSocket", DEFAULT_SETTINGS.watchSocket),
    keydSocket: str("keydSocket", DEFAULT_SETTINGS.keydSocket),
    routinesSocket: str("routinesSocket", DEFAULT_SETTINGS.routinesSocket),
    voiceSocket: str("voiceSocket", DEFAULT_SETTINGS.voiceSocket),
    meshSocket: str("meshSocket", DEFAULT_SETTINGS.meshSocket),
    relaySocket: str("relaySocket", DEFAULT_SETTINGS.relaySocket),
    requestTimeoutMs: secs * 1000,
    approvalTimeoutMs:
      (typeof c.approvalTimeoutSecs === "number" ? c.approvalTimeoutSecs : DEFAULT_SETTINGS.approvalTimeoutMs / 1000) * 1000,
    configTree: str("configTree", DEFAULT_SETTINGS.configTree),
    memoryDir: str("memoryDir", DEFAULT_SETTINGS.memoryDir),
  };
}

/** What a tool returns to OpenClaw: short text for the model plus the structured answer. */
export interface ToolResult {
  content: { type: "text"; text: string }[];
  details: unknown;
}

/** Context a tool's `run` receives: the settings, the cancellation signal and a daemon caller. */
export interface RunContext {
  settings: Settings;
  signal?: AbortSignal;
  /**
   * Calls a daemon and returns its parsed 2xx body.
   *
   * Errors: throws the error `errors.ts` builds for a non-2xx answer or a transport failure,
   * with `what` naming the attempted operation in the message.
   */
  daemon(d: Daemon, method: "GET" | "POST" | "DELETE", path: string, body: unknown, what: string): Promise<any>;
}

/**
 * The daemons tools call, each with the setting that holds its socket. A new daemon is one row
 * here, its socket in `Settings`/`DEFAULT_SETTINGS`/`resolveSettings`, and the same key in the
 * manifest's `configSchema` (and in `lib/`'s `renderGateway`).
 */
export const DAEMONS = {
  agentd: "agentdSocket",
  "osmoda-watch": "watchSocket",
  "osmoda-keyd": "keydSocket",
  "osmoda-routines": "routinesSocket",
  "osmoda-voice": "voiceSocket",
  "osmoda-mesh": "meshSocket",
} as const satisfies Record<string, keyof Settings>;

export type Daemon = keyof typeof DAEMONS;

/** One tool: its name, what the model reads about it, its parameter schema and its behaviour. */
export interface ToolSpec<S extends TSchema> {
  name: string;
  label: string;
  description: string;
  parameters: S;
  run(params: Static<S>, ctx: RunContext): Promise<{ text: string; details: unknown }>;
}

/** Keeps the parameter type of each spec while collecting them in one list. */
export function tool<S extends TSchema>(spec: ToolSpec<S>): ToolSpec<TSchema> {
  return spec as unknown as ToolSpec<TSchema>;
}

/**
 * Checks `params` against `schema`; returns one message per problem (`/path: message`), empty
 * when valid. The gateway does not validate tool arguments, so every tool calls this first.
 */
export function validate(schema: TSchema, params: unknown): string[] {
  if (Value.Check(schema, params)) return [];
  const out: string[] = [];
  for (const e of Value.Errors(narrow(schema, params), params)) {
    // typebox reports an unknown property twice (as `schema is false` and as the list); keep the list.
    if (e.keyword === "boolean") continue;
    const where = e.instancePath === "" ? "arguments" : e.instancePath.slice(1).replaceAll("/", ".");
    const params = e.params as Record<string, unknown>;
    let msg = e.message;
    if (e.keyword === "additionalProperties") msg = `unknown field(s) ${JSON.stringify(params.additionalProperties)}`;
    if (e.keyword === "required") msg = `missing required field(s) ${JSON.stringify(params.requiredProperties)}`;
    if (e.keyword === "enum") msg = `must be one of ${JSON.stringify(params.allowedValues)}`;
    out.push(`${where}: ${msg}`);
    if (out.length >= 8) break;
  }
  return out.length ? out : ["arguments do not match the schema"];
}

/** The `const` of `branch.properties.type`, when the branch is an object tagged by `type`. */
function tagOf(branch: any): string | undefined {
  return typeof branch?.properties?.type?.const === "string" ? branch.properties.type.const : undefined;
}

/**
 * Replaces each union tagged by `type` (like a health check) with the one branch the value
 * names, so errors speak about that branch only; an unknown tag becomes "type: must be one of".
 */
function narrow(schema: any, value: any): any {
  if (!schema || typeof schema !== "object") return schema;
  if (Array.isArray(schema.anyOf) && schema.anyOf.length > 0 && schema.anyOf.every((b: any) => tagOf(b))) {
    const tags = schema.anyOf.map(tagOf);
    const chosen = schema.anyOf.find((b: any) => value && typeof value === "object" && tagOf(b) === value.type);
    if (chosen) return narrow(chosen, value);
    return { type: "object", required: ["type"], properties: { type: { enum: tags } } };
  }
  if (schema.type === "object" && schema.properties && value && typeof value === "object" && !Array.isArray(value)) {
    const properties: Record<string, unknown> = {};
    for (const [k, s] of Object.entries(schema.properties)) properties[k] = narrow(s, value[k]);
    return { ...schema, properties };
  }
  if (schema.type === "array" && schema.items && Array.isArray(value)) {
    return { ...schema, prefixItems: value.map((v: unknown) => narrow(schema.items, v)), items: schema.items };
  }
  return schema;
}

function daemonCaller(settings: Settings, signal?: AbortSignal): RunContext["daemon"] {
  return async (d, method, path, body, what) => {
    const socket = settings[DAEMONS[d]] as string;
    let res;
    try {
      res = await call({ socket, method, path, body, timeoutMs: settings.requestTimeoutMs, signal });
    } catch (e) {
      if (e instanceof TransportError) throw transportError(d, what, e);
      throw e;
    }
    if (res.status < 200 || res.status >= 300) throw daemonError(d, what, res);
    return res.body;
  };
}

/**
 * Turns a spec into the object `api.registerTool` takes. Nothing happens until `execute`:
 * validation, then the daemon calls.
 */
export function toAgentTool(spec: ToolSpec<TSchema>, settings: Settings) {
  return {
    name: spec.name,
    label: spec.label,
    description: spec.description,
    parameters: spec.parameters,
    async execute(_toolCallId: string, params: unknown, signal?: AbortSignal): Promise<ToolResult> {
      const args = params ?? {};
      const problems = validate(spec.parameters, args);
      if (problems.length) throw invalidArgs(spec.name, problems);
      const ticket = (args as { approval?: unknown }).approval;
      const relay = typeof ticket === "string" ? relayOf(ticket) : undefined;
      if (relay) {
        // The owner decided in the chat; agentd must have that decision before the retry.
        try {
          await relay;
        } catch (e) {
          throw new DaemonFailure(`the owner's decision on ticket ${ticket} could not be passed on to agentd (${(e as Error).message}); nothing was changed.`);
        }
      }
      const ctx: RunContext = { settings, signal, daemon: daemonCaller(settings, signal) };
      let out;
      try {
        out = await spec.run(args as never, ctx);
      } catch (e) {
        const t = e instanceof ToolAuthorizationError ? ticketOf((e.detail as { detail?: unknown } | null)?.detail) : undefined;
        if (!t || ticket !== undefined) throw e;
        remember(callKey(spec.name, args), t);
        throw new ToolAuthorizationError(
          `${(e as Error).message} To ask the owner in this chat, call ${spec.name} again with exactly the same arguments: ` +
            `they are shown the effect and answer with /approve. Or a person runs \`${t.approve}\`.`,
          (e as ToolAuthorizationError).detail,
        );
      }
      return { content: [{ type: "text", text: out.text }], details: out.details };
    },
  };
}
