//! Every tool the bridge registers, one module per daemon.

import { agentdTools } from "./agentd.ts";
import { watchTools } from "./watch.ts";

/** All tools, in the order they are registered. `openclaw.plugin.json`'s `contracts.tools` lists exactly these names. */
export const allTools = [...agentdTools, ...watchTools];
