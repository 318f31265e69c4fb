//! Every tool the bridge registers, one module per daemon.

import { agentdTools } from "./agentd.ts";
import { backupTools } from "./backup.ts";
import { configTools } from "./config.ts";
import { keydTools } from "./keyd.ts";
import { memoryTools } from "./memory.ts";
import { meshTools } from "./mesh.ts";
import { routinesTools } from "./routines.ts";
import { sandboxTools } from "./sandbox.ts";
import { voiceTools } from "./voice.ts";
import { watchTools } from "./watch.ts";

/**
 * Each daemon's tools (`src/tools/<daemon>.ts`), in registration order. A new daemon adds one
 * row; its gateway test names the row with `coverageOf("<row>")` (test/harness.ts), and a unit
 * test checks that every row is covered by some test file.
 */
export const toolModules = {
  agentd: agentdTools,
  config: configTools,
  watch: watchTools,
  keyd: keydTools,
  routines: routinesTools,
  sandbox: sandboxTools,
  memory: memoryTools,
  voice: voiceTools,
  backup: backupTools,
  mesh: meshTools,
};

/** All tools, in the order they are registered. `openclaw.plugin.json`'s `contracts.tools` lists exactly these names. */
export const allTools = Object.values(toolModules).flat();
