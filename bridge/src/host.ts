//! OpenClaw's built-in tools that act outside osModa's boundary, blocked before they run whatever
//! the gateway's tool policy says (a person may widen `tools.allow`; the rendered config already
//! leaves them out). Two kinds:
//! - host code: `exec`, `process`, `terminal`, `portal`, `nodes`, `computer`, `mobile_ui` run
//!   commands or drive devices with the gateway's own rights, unaudited, where the approval
//!   path and the configuration tree are within reach, and `automations` (alias `cron`) can
//!   schedule such commands — `shell_exec` runs inside the boundary and is recorded (osModa's
//!   schedules are routines);
//! - OpenClaw's own control plane: `gateway`, `plugins`, `openclaw` change the gateway's
//!   configuration or plugins (and so its tool policy), which NixOS renders from
//!   `services.osmoda.gateway`.
//!
//! Names only, never aliases (`bash`): OpenClaw refuses a plugin whose hook matcher names an
//! alias, and resolves aliases to these names before hooks run.

/** Built-in tools that run code or drive devices outside osModa's boundary. */
export const HOST_CODE_TOOLS = ["exec", "process", "terminal", "portal", "nodes", "computer", "mobile_ui", "automations"] as const;

/** Built-in tools that change OpenClaw's own configuration, plugins or installation. */
export const CONTROL_PLANE_TOOLS = ["gateway", "plugins", "openclaw"] as const;

/** Every built-in tool the bridge blocks. */
export const HOST_TOOLS = [...HOST_CODE_TOOLS, ...CONTROL_PLANE_TOOLS] as const;

/** `before_tool_call` for a built-in host tool: a block saying what to use instead. */
export function beforeHostCall(tool: string): { block: true; blockReason: string } | undefined {
  if ((HOST_CODE_TOOLS as readonly string[]).includes(tool)) {
    return {
      block: true,
      blockReason:
        `${tool} is not available on osModa: it would act on this machine outside osModa's boundary, unaudited. ` +
        "Run commands with shell_exec (inside the boundary, recorded in the ledger; a destructive one asks a person). Nothing was run.",
    };
  }
  if ((CONTROL_PLANE_TOOLS as readonly string[]).includes(tool)) {
    return {
      block: true,
      blockReason:
        `${tool} is not available on osModa: OpenClaw's own configuration and plugins are rendered by NixOS from services.osmoda.gateway. ` +
        "Change them with config_set on that option and apply the generation with safe_switch_begin. Nothing was changed.",
    };
  }
  return undefined;
}
