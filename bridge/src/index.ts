//! osmoda-bridge: the OpenClaw plugin that gives the agent osModa's daemons as tools.
//
// `register()` runs many times (discovery, inspection, each reload): it only declares tools and
// hooks. Sockets are opened inside each tool's `execute` and inside the hooks.

import { definePluginEntry } from "openclaw/plugin-sdk/plugin-entry";

import { beforeBridgeCall } from "./approvals.ts";
import { FILE_TOOLS, beforeFileCall, recordFileCall, workspaceOf } from "./builtin.ts";
import { HOST_TOOLS, beforeHostCall } from "./host.ts";
import { memoryCorpusSupplement, memoryPromptLines } from "./memory-corpus.ts";
import { resolveSettings, toAgentTool } from "./tool.ts";
import { allTools } from "./tools/index.ts";

export default definePluginEntry({
  id: "osmoda-bridge",
  name: "osModa bridge",
  description: "Operate this machine through osModa's daemons: audited, declarative and reversible.",
  register(api) {
    const settings = resolveSettings(api.pluginConfig);
    for (const spec of allTools) {
      api.registerTool(toAgentTool(spec, settings) as never);
    }
    // osModa's notes in OpenClaw's own memory_search/memory_get (corpus "wiki" or "all"), beside
    // memory-core (the exclusive memory slot stays memory-core's), and a line in its memory
    // prompt section saying so.
    api.registerMemoryCorpusSupplement(memoryCorpusSupplement(settings));
    api.registerMemoryPromptSupplement(memoryPromptLines);
    const ours = allTools.map((t) => t.name) as [string, ...string[]];
    // A bridge call agentd refused with a gate ticket, made again: ask the owner in the chat.
    api.on(
      "before_tool_call",
      (event, ctx) => beforeBridgeCall(settings, event.toolName, event.params ?? {}, ctx.requester) as never,
      { matcher: ours },
    );
    // OpenClaw's own file tools: never into the configuration tree or /etc/nixos; always recorded.
    // Relative paths are the agent's workspace's, as the tools themselves resolve them.
    api.on(
      "before_tool_call",
      async (event, ctx) =>
        beforeFileCall(settings, event.toolName, event.params ?? {}, event.derivedPaths, await workspaceOf(api.config, ctx.agentId)),
      { matcher: [...FILE_TOOLS] },
    );
    // OpenClaw's host exec and control-plane tools: blocked even where a person's tool policy
    // lets the model call them (src/host.ts).
    api.on("before_tool_call", (event) => beforeHostCall(event.toolName) as never, { matcher: [...HOST_TOOLS] });
    api.on(
      "after_tool_call",
      async (event, ctx) => {
        const cwd = await workspaceOf(api.config, ctx.agentId);
        await recordFileCall(settings, event, cwd).catch((e) => api.logger.warn(`osmoda-bridge: recording ${event.toolName} in the ledger failed: ${e}`));
      },
      { matcher: [...FILE_TOOLS] },
    );
  },
});
