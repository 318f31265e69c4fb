//! Tools backed by agentd's backups: make one, list them. Restoring a backup is for a person
//! (`agentctl backup restore`, behind an approval ticket), so there is no restore tool.

import { Type } from "typebox";

import { bytes, table } from "../format.ts";
import { tool } from "../tool.ts";

const obj = <P extends Record<string, any>>(props: P) => Type.Object(props, { additionalProperties: false });

export const backupTools = [
  tool({
    name: "backup_create",
    label: "Create backup",
    description:
      "Archive this machine's osModa state now: the ledger and its checkpoints, the config tree (git bundle), every daemon's database and the memory notes, with a SHA-256 manifest. Restoring one is for a person (agentctl backup restore, which needs an approval).",
    parameters: obj({
      reason: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: "Why, recorded with the backup in the ledger." })),
    }),
    async run(p, ctx) {
      const b = await ctx.daemon("agentd", "POST", "/backup/create", { reason: p.reason ?? "" }, "backup_create");
      const text = [
        `backup ${b.id}: ${bytes(b.bytes)}, ${b.files} files; ledger ${b.ledger_size} events; config tree ${b.tree_commit ?? "(none)"}; sources ${(b.sources ?? []).join(", ") || "(none)"}`,
        `manifest SHA-256 ${b.manifest_sha256}`,
      ].join("\n");
      return { text, details: b };
    },
  }),
  tool({
    name: "backup_list",
    label: "Backups",
    description: "The backups on this machine, newest first: id, time, size, ledger events and config tree commit.",
    parameters: obj({}),
    async run(_p, ctx) {
      const l = await ctx.daemon("agentd", "GET", "/backup/list", undefined, "backup_list");
      const rows = (l.backups ?? []).map((b: any) => [
        b.id,
        b.created_at,
        bytes(b.bytes),
        String(b.ledger_size),
        (b.tree_commit ?? "-").slice(0, 12),
        (b.sources ?? []).join(","),
      ]);
      const text = rows.length ? table(["id", "created", "size", "events", "tree", "sources"], rows) : "no backups yet";
      return { text, details: l };
    },
  }),
];
