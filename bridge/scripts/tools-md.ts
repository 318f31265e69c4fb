// Writes ../templates/TOOLS.md from the bridge's tool definitions (`npm run tools-md`).
// `--check`: exit 1 when the file is stale instead of writing it.
import { readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { allTools } from "../src/tools/index.ts";
import { renderToolsMd } from "../src/tools-md.ts";

const target = join(dirname(fileURLToPath(import.meta.url)), "..", "..", "templates", "TOOLS.md");
const text = renderToolsMd(allTools);
let current = "";
try {
  current = readFileSync(target, "utf8");
} catch {}
if (process.argv.includes("--check")) {
  if (current !== text) {
    console.error(`${target} is stale: run \`cd bridge && npm run tools-md\``);
    process.exit(1);
  }
} else if (current !== text) {
  writeFileSync(target, text);
  console.log(`wrote ${target}`);
}
