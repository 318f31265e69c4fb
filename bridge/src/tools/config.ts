//! Tools over the rest of agentd's config-tree API: list edits (one element added or removed,
//! the list's layout and comments kept) and hand edits (drift: what changed in the tree without
//! a generation, and recording it as one). agentd reports hand edits as `config.drift` events;
//! while the tree is dirty, agent edits are refused (409), so drift is resolved first.

import { Type } from "typebox";

import { table } from "../format.ts";
import { tool } from "../tool.ts";
import { approvalArg, landed, reasonArg, valueEdit } from "./agentd.ts";

const obj = <P extends Record<string, any>>(props: P) => Type.Object(props, { additionalProperties: false });

export const configTools = [
  valueEdit({
    name: "config_append",
    endpoint: "/config/append",
    label: "Add to a config list",
    description:
      "Add one element to a list option in the configuration tree (e.g. a package to environment.systemPackages, a port to networking.firewall.allowedTCPPorts), keeping the list's layout and comments; the list is created if missing. Committed as a generation, NOT applied until safe_switch_begin.",
    path: "List option, e.g. environment.systemPackages.",
    value: "The element as JSON (a string, number, attribute set...).",
    nix: "The element as one Nix expression, e.g. pkgs.htop.",
    done: "appended to",
  }),
  valueEdit({
    name: "config_remove",
    endpoint: "/config/remove",
    label: "Remove from a config list",
    description:
      "Remove every element equal to the given one from a list option (pkgs.htop also matches htop under `with pkgs;`), with the comment lines right above it. Committed as a generation, NOT applied until safe_switch_begin.",
    path: "List option, e.g. environment.systemPackages.",
    value: "The element to remove as JSON.",
    nix: "The element to remove as one Nix expression, e.g. pkgs.htop.",
    done: "removed from",
  }),
  tool({
    name: "config_status",
    label: "Uncommitted config edits",
    description:
      "Hand edits of the configuration tree that are not a generation yet (drift), as git sees them: each changed file and how (modified, new, deleted). While any exist, config_set and the other edits are refused.",
    parameters: obj({}),
    async run(_p, ctx) {
      const s = await ctx.daemon("agentd", "GET", "/config/status", undefined, "config_status");
      const changes: { path: string; kind: string }[] = s.changes ?? [];
      const text = s.clean
        ? "the tree is clean: every file is in a generation"
        : `${changes.length} uncommitted change(s) made by hand:\n${table(["change", "file"], changes.map((c) => [c.kind, c.path]))}\n` +
          "Show them to the person; only with their decision record them with config_commit (or they undo them).";
      return { text, details: s };
    },
  }),
  tool({
    name: "config_commit",
    label: "Commit hand edits",
    description:
      "Record the tree's uncommitted hand edits (see config_status) as one generation, with the person's reason; only after the person decided to keep them. agentd's approval gate judges the edits' effect like any other change. NOT applied until safe_switch_begin.",
    parameters: obj({ reason: reasonArg, approval: approvalArg }),
    async run(p, ctx) {
      const body = await ctx.daemon("agentd", "POST", "/config/commit", p, "config_commit");
      return landed(ctx, "recorded the hand edits", body);
    },
  }),
];
