//! Tools for untrusted code (agentd's `/sandbox/exec` and `/capability/mint`): Ring 2 (no
//! network, nothing of the host but its software) and Ring 1 (internet only through
//! osmoda-egress, for the domains of declared capabilities), and capability tokens for egress.

import { Type } from "typebox";

import { invalidArgs } from "../errors.ts";
import { clip } from "../format.ts";
import { tool } from "../tool.ts";

const obj = <P extends Record<string, any>>(props: P) => Type.Object(props, { additionalProperties: false });

const capName = Type.String({ minLength: 1, maxLength: 64, pattern: "^[A-Za-z0-9_-]+$" });
const narrowing = obj({
  domains: Type.Optional(Type.Array(Type.String({ minLength: 1, maxLength: 253 }), { minItems: 1, maxItems: 64, description: "Host names or *.wildcards within the declared ones." })),
  ports: Type.Optional(Type.Array(Type.Integer({ minimum: 1, maximum: 65535 }), { minItems: 1, maxItems: 64, description: "Ports among the declared ones." })),
});
/** Capabilities by name, or name → true | {domains?, ports?} (only ever narrower than declared). */
const permissions = (description: string) =>
  Type.Union([Type.Array(capName, { minItems: 1, maxItems: 64 }), Type.Record(capName, Type.Union([Type.Boolean(), narrowing]), { minProperties: 1, maxProperties: 64 })], { description });

function grants(caps: any): string {
  return Object.entries(caps ?? {})
    .map(([name, g]: [string, any]) => `${name}: ${(g.domains ?? []).join(", ")} on port ${(g.ports ?? []).join(", ")}`)
    .join("; ");
}

export const sandboxTools = [
  tool({
    name: "sandbox_exec",
    label: "Run untrusted code",
    description:
      "Run untrusted code (a downloaded script, a tool you do not know) in an isolated sandbox: an empty file system with only the system's software, no view of secrets, daemon sockets or home directories, user nobody, no privileges, limited memory, tasks and time. " +
      "Without capabilities (Ring 2) it has no network at all. With capabilities (Ring 1: names declared in services.osmoda.egress.capabilities, or narrower {domains, ports}) it reaches exactly those domains through osmoda-egress (HTTPS_PROXY is set; other hosts are refused). " +
      "Give command (a shell line) or argv. Files to work on go in through stdin; results come back as stdout (64 KiB per stream). Recorded in the ledger. For trusted administration use shell_exec.",
    parameters: obj({
      command: Type.Optional(Type.String({ minLength: 1, maxLength: 65536, description: "Shell command line (run by /bin/sh -c)." })),
      argv: Type.Optional(Type.Array(Type.String({ maxLength: 65536 }), { minItems: 1, maxItems: 1024, description: "Program and arguments, no shell." })),
      capabilities: Type.Optional(permissions("Egress capabilities for Ring 1; leave out for no network (Ring 2).")),
      timeout_sec: Type.Optional(Type.Integer({ minimum: 1, maximum: 600, description: "Default 60; everything in the sandbox is killed then." })),
      memory_mb: Type.Optional(Type.Integer({ minimum: 16, maximum: 8192, description: "Default 512." })),
      max_tasks: Type.Optional(Type.Integer({ minimum: 8, maximum: 4096, description: "Processes and threads at once; default 128." })),
      env: Type.Optional(Type.Record(Type.String({ pattern: "^[A-Za-z_][A-Za-z0-9_]*$" }), Type.String({ maxLength: 65536 }), { additionalProperties: false, maxProperties: 64 })),
      cwd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, pattern: "^/", description: "Working directory inside the sandbox (default /tmp, empty)." })),
      stdin: Type.Optional(Type.String({ maxLength: 524288, description: "Text on standard input (at most 512 KiB)." })),
    }),
    async run(p, ctx) {
      if ((p.command === undefined) === (p.argv === undefined)) {
        throw invalidArgs("sandbox_exec", ["give exactly one of `command` (a shell line) or `argv` (no shell)"]);
      }
      const r = await ctx.daemon("agentd", "POST", "/sandbox/exec", { timeout_sec: 60, ...p }, "sandbox_exec");
      const how = r.timed_out
        ? "timed out (everything in the sandbox was killed)"
        : r.memory_exceeded
          ? `killed: over its memory limit of ${Math.round(r.limits.memory_bytes / 1048576)} MiB`
          : r.exit_code === null
            ? `killed by signal ${r.signal}`
            : `exit ${r.exit_code}`;
      const net = r.ring === 1 ? `Ring 1, network only to ${grants(r.capabilities)}` : "Ring 2, no network";
      const lines = [`${how} after ${r.duration_ms} ms (${net})${r.truncated ? " (output truncated)" : ""}`];
      if (r.stdout) lines.push(`stdout:\n${clip(r.stdout, 6000)}`);
      if (r.stderr) lines.push(`stderr:\n${clip(r.stderr, 3000)}`);
      return { text: lines.join("\n"), details: r };
    },
  }),
  tool({
    name: "capability_mint",
    label: "Mint egress token",
    description:
      "Mint a capability token for osmoda-egress (the proxy that is untrusted tools' only way to the internet): only capabilities declared in services.osmoda.egress.capabilities, and only narrower (fewer domains or ports), for ttl_sec seconds. " +
      "The token is a secret: give it only to the program that needs it, as the proxy password (http://osmoda:<token>@127.0.0.1:19999) or Proxy-Authorization: Bearer. sandbox_exec mints its own; this is for apps run elsewhere. Recorded in the ledger (never the token).",
    parameters: obj({
      granted_to: Type.String({ minLength: 1, maxLength: 128, description: "Who or what the token is for (its subject)." }),
      permissions: permissions("Capability names, or name → {domains?, ports?} narrowings."),
      ttl_sec: Type.Integer({ minimum: 1, maximum: 86400, description: "Lifetime in seconds." }),
    }),
    async run(p, ctx) {
      const r = await ctx.daemon("agentd", "POST", "/capability/mint", p, `capability_mint for ${p.granted_to}`);
      const until = new Date(r.expires_at * 1000).toISOString();
      const text = [
        `token ${r.id} for ${r.subject}, valid until ${until}: ${grants(r.capabilities)}`,
        `proxy ${r.proxy}; token (secret):`,
        r.token,
      ].join("\n");
      return { text, details: r };
    },
  }),
];
