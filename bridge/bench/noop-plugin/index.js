// Benchmark only: the cheapest tool OpenClaw can call, so `npm run bench` can tell the gateway's
// own cost of POST /tools/invoke from what the bridge and agentd add. Never installed.
import { definePluginEntry } from "openclaw/plugin-sdk/plugin-entry";

export default definePluginEntry({
  id: "osmoda-bench-noop",
  name: "osModa bench baseline",
  description: "bench_noop returns at once.",
  register(api) {
    api.registerTool({
      name: "bench_noop",
      label: "No-op (benchmark)",
      description: "Returns at once; benchmark baseline only.",
      parameters: { type: "object", additionalProperties: false, properties: {} },
      async execute() {
        return { content: [{ type: "text", text: "ok" }], details: null };
      },
    });
  },
});
