//! osmoda-bridge: the OpenClaw plugin that gives the agent osModa's daemons as tools.
//
// `register()` runs many times (discovery, inspection, each reload): it only declares tools.
// Sockets are opened inside each tool's `execute`.

import { definePluginEntry } from "openclaw/plugin-sdk/plugin-entry";

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
  },
});
