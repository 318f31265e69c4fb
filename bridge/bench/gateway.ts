// Benchmark (a separate command, never part of `npm test`): `npm run bench`.
//
// 1. Latency the gateway and the bridge add: `POST /tools/invoke` of `system_health` through the
//    real gateway vs `GET /health` directly on agentd's socket, interleaved in the same run
//    (sequential calls, after a warm-up); p50/p99 of each and the difference. Split in two:
//    the bridge's own work (the same tool's `execute` called in this process: validation, the
//    socket call, formatting) and OpenClaw's (`POST /tools/invoke` of `bench_noop`, a tool of a
//    bench-only plugin in bench/noop-plugin that returns at once).
// 2. Idle RSS of the gateway (its process tree) with the bridge, and the bridge's share: the same
//    gateway started a second time without the bridge, same config otherwise.
import { readFileSync, readdirSync } from "node:fs";
import { fileURLToPath } from "node:url";

import { call } from "../src/client.ts";
import { resolveSettings, toAgentTool } from "../src/tool.ts";
import { allTools } from "../src/tools/index.ts";
import { Stack } from "../test/harness.ts";

const noopPlugin = fileURLToPath(new URL("./noop-plugin", import.meta.url));

const N = Number(process.env.BENCH_CALLS ?? 300);

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

/** RSS in KiB of `pid` and every descendant. */
function treeRss(pid: number): number {
  const kids = new Map<number, number[]>();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const ppid = Number(/PPid:\s+(\d+)/.exec(readFileSync(`/proc/${d}/status`, "utf8"))![1]);
      kids.set(ppid, [...(kids.get(ppid) ?? []), Number(d)]);
    } catch {}
  }
  let total = 0;
  const walk = (p: number) => {
    try {
      total += Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, "utf8"))?.[1] ?? 0);
    } catch {}
    for (const k of kids.get(p) ?? []) walk(k);
  };
  walk(pid);
  return total;
}

async function idleRss(stack: Stack): Promise<number> {
  // Let start-up work (plugin staging, sidecars, SQLite maintenance) settle, then sample.
  await new Promise((r) => setTimeout(r, 20_000));
  const samples: number[] = [];
  for (let i = 0; i < 5; i++) {
    samples.push(treeRss(stack.pid("gateway")!));
    await new Promise((r) => setTimeout(r, 1000));
  }
  return pct(samples, 50);
}

const withBridge = new Stack();
try {
  await withBridge.startDaemons();
  await withBridge.startGateway({
    render: (pluginDir, port) => ({
      gateway: { mode: "local", bind: "loopback", port, auth: { mode: "token", token: withBridge.token } },
      plugins: {
        allow: ["osmoda-bridge", "osmoda-bench-noop"],
        load: { paths: [pluginDir, noopPlugin] },
        entries: { "osmoda-bridge": { enabled: true, config: withBridge.bridgeConfig() }, "osmoda-bench-noop": { enabled: true } },
      },
    }),
  });
  const health = toAgentTool(allTools.find((t) => t.name === "system_health")!, resolveSettings(withBridge.bridgeConfig()));
  const series = { direct: [] as number[], plugin: [] as number[], noop: [] as number[], gateway: [] as number[] };
  const once = async (name: keyof typeof series, f: () => Promise<unknown>, warm: boolean) => {
    const t = performance.now();
    await f();
    if (!warm) series[name].push(performance.now() - t);
  };
  for (let i = 0; i < N + 20; i++) {
    const warm = i < 20;
    await once("gateway", async () => {
      const r = await withBridge.invoke("system_health", {});
      if (r.status !== 200) throw new Error(`system_health through the gateway: ${r.status} ${JSON.stringify(r.body)}`);
    }, warm);
    await once("direct", () => call({ socket: withBridge.agentdSocket, method: "GET", path: "/health", timeoutMs: 10_000 }), warm);
    await once("noop", async () => {
      const r = await withBridge.invoke("bench_noop", {});
      if (r.status !== 200) throw new Error(`bench_noop: ${r.status} ${JSON.stringify(r.body)}`);
    }, warm);
    await once("plugin", () => health.execute("bench", {}), warm);
  }
  const f = (x: number) => x.toFixed(2);
  const line = (label: string, xs: number[]) => console.log(`  ${label.padEnd(44)} p50 ${f(pct(xs, 50))} ms, p99 ${f(pct(xs, 99))} ms`);
  console.log(`system_health, ${N} calls each, interleaved (load ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")} before the idle-RSS part):`);
  line("direct on agentd's socket:", series.direct);
  line("the bridge's execute in-process (+ agentd):", series.plugin);
  line("POST /tools/invoke bench_noop (OpenClaw):", series.noop);
  line("POST /tools/invoke system_health:", series.gateway);
  const p50 = (k: keyof typeof series) => pct(series[k], 50);
  console.log(`  added by gateway + bridge: p50 ${f(p50("gateway") - p50("direct"))} ms, p99 ${f(pct(series.gateway, 99) - pct(series.direct, 99))} ms (target ≤ 5 ms at p50)`);
  console.log(`    of which the bridge's own work (execute − direct): p50 ${f(p50("plugin") - p50("direct"))} ms; OpenClaw's /tools/invoke of a no-op tool: p50 ${f(p50("noop"))} ms`);
  const rssWith = await idleRss(withBridge);
  await withBridge.stop();

  const without = new Stack();
  try {
    await without.startDaemons();
    await without.startGateway({ extraConfig: { plugins: { load: { paths: [] }, entries: {} } } });
    const rssWithout = await idleRss(without);
    console.log(`idle RSS of the gateway process tree: ${(rssWith / 1024).toFixed(1)} MiB with the bridge, ${(rssWithout / 1024).toFixed(1)} MiB without; the bridge's share ${((rssWith - rssWithout) / 1024).toFixed(1)} MiB`);
  } finally {
    await without.stop();
  }
} finally {
  await withBridge.stop().catch(() => {});
}
