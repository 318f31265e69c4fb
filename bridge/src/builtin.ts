//! OpenClaw's built-in file tools (`write`, `edit`, `apply_patch`) inside osModa's rules: a
//! call that targets the configuration tree or /etc/nixos is blocked before it runs (the tree
//! changes only through config_set), and every call is recorded in agentd's ledger after it ran.

import { realpathSync } from "node:fs";
import { basename, dirname, isAbsolute, join, resolve } from "node:path";

import { call } from "./client.ts";
import type { Settings } from "./tool.ts";

/** The built-in tools that write files. */
export const FILE_TOOLS = ["write", "edit", "apply_patch"] as const;

const ETC_NIXOS = "/etc/nixos";

/** Where `p` really leads: the longest existing prefix resolved through symlinks, plus the rest. */
function real(p: string): string {
  let head = p;
  const rest: string[] = [];
  for (;;) {
    try {
      return join(realpathSync(head), ...rest.reverse());
    } catch {
      const up = dirname(head);
      if (up === head) return p;
      rest.push(basename(head));
      head = up;
    }
  }
}

/**
 * The agent's workspace: where OpenClaw's file tools resolve a relative path (not the gateway's
 * working directory). `undefined` when the host cannot say; then relative paths are refused.
 */
export async function workspaceOf(config: unknown, agentId: string | undefined): Promise<string | undefined> {
  try {
    // The host's own resolution (agents.list[].workspace, agents.defaults.workspace, the
    // default under the state dir); loaded on first use, shared with the gateway's module cache.
    const sdk = await import("openclaw/plugin-sdk/health");
    return sdk.resolveAgentWorkspaceDir(config as never, agentId ?? sdk.resolveDefaultAgentId(config as never));
  } catch {
    return undefined;
  }
}

/**
 * The paths a built-in file call targets: `path`/`file_path` of write/edit, the files an
 * apply_patch envelope names, or the host's `derivedPaths`; relative ones resolved against
 * `cwd` (the agent's workspace), or left relative when there is none.
 */
export function targets(params: Record<string, unknown>, derivedPaths: readonly string[] | undefined, cwd?: string): string[] {
  const named = [params.path, params.file_path, params.filePath].filter((v): v is string => typeof v === "string" && v !== "");
  // apply_patch's envelope names its files; the host's derivedPaths are a hint, not the whole truth.
  const patch = typeof params.input === "string" ? params.input : typeof params.patch === "string" ? params.patch : "";
  for (const m of patch.matchAll(/^\*\*\* (?:Add File|Update File|Delete File|Move to): (.+)$/gm)) named.push(m[1]!.trim());
  return [...named, ...(derivedPaths ?? [])].map((p) => (isAbsolute(p) || cwd === undefined ? p : resolve(cwd, p)));
}

/** The protected root `path` falls in (the tree or /etc/nixos), or undefined. */
export function protectedRoot(settings: Settings, path: string): string | undefined {
  const r = real(resolve(path));
  for (const root of [settings.configTree, ETC_NIXOS]) {
    const rr = real(root);
    if (r === rr || r.startsWith(rr.endsWith("/") ? rr : `${rr}/`)) return root;
  }
  return undefined;
}

/** `before_tool_call` for a built-in file tool: a block naming config_set, or nothing. */
export function beforeFileCall(
  settings: Settings,
  tool: string,
  params: Record<string, unknown>,
  derivedPaths: readonly string[] | undefined,
  cwd?: string,
): { block: true; blockReason: string } | undefined {
  for (const p of targets(params, derivedPaths, cwd)) {
    if (!isAbsolute(p)) {
      return {
        block: true,
        blockReason: `${tool} may not change ${p}: the agent's workspace is unknown here, so a relative path cannot be checked against the configuration tree; give an absolute path. Nothing was changed.`,
      };
    }
    const root = protectedRoot(settings, p);
    if (root) {
      return {
        block: true,
        blockReason:
          `${tool} may not change ${p}: it is in ${root === ETC_NIXOS ? "/etc/nixos" : `the configuration tree (${root})`}, ` +
          "which changes only through config_set (validated, committed to git, recorded; apply it with safe_switch_begin). Nothing was changed.",
      };
    }
  }
  return undefined;
}

/** `after_tool_call` for a built-in file tool: one `gateway.<tool>` ledger event. */
export async function recordFileCall(
  settings: Settings,
  event: { toolName: string; params: Record<string, unknown>; error?: string; durationMs?: number; toolCallId?: string },
  cwd?: string,
): Promise<void> {
  const content = event.params.content;
  const payload = {
    tool: event.toolName,
    paths: targets(event.params, undefined, cwd),
    ok: event.error === undefined,
    error: event.error?.slice(0, 500),
    bytes: typeof content === "string" ? Buffer.byteLength(content) : undefined,
    duration_ms: event.durationMs,
    tool_call_id: event.toolCallId,
  };
  const res = await call({
    socket: settings.agentdSocket,
    method: "POST",
    path: "/events/append",
    body: { type: `gateway.${event.toolName}`, daemon: "openclaw-gateway", payload },
    timeoutMs: settings.requestTimeoutMs,
  });
  if (res.status !== 200) throw new Error(`agentd refused the ledger event (${res.status}): ${JSON.stringify(res.body)}`);
}
