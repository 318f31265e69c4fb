// Benchmark (a separate command, never part of `npm test`): `npm run bench`.
//
// 1. Latency the gateway and the bridge add: `POST /tools/invoke` of `system_health` through the
//    real gateway vs `GET /health` directly on agentd's socket, interleaved in the same run
//    (sequential calls, after a warm-up); p50/p99 of each and the difference.
// 2. Idle RSS of the gateway (its process tree) with the bridge, and the bridge's share: the same
//    gateway started a second time without the bridge, same config otherwise.
import { readFileSync, readdirSync } from "node:fs";

import { call } from "../src/client.ts";
import { Stack } from "../test/harness.ts";

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
  await withBridge.startGateway();
  const direct: number[] = [];
  const gateway: number[] = [];
  for (let i = 0; i < 20; i++) {
    await withBridge.invoke("system_health", {});
    await call({ socket: withBridge.agentdSocket, method: "GET", path: "/health", timeoutMs: 10_000 });
  }
  for (let i = 0; i < N; i++) {
    let t = performance.now();
    const r = await withBridge.invoke("system_health", {});
    gateway.push(performance.now() - t);
    if (r.status !== 200) throw new Error(`system_health through the gateway: ${r.status} ${JSON.stringify(r.body)}`);
    t = performance.now();
    await call({ socket: withBridge.agentdSocket, method: "GET", path: "/health", timeoutMs: 10_000 });
    direct.push(performance.now() - t);
  }
  const f = (x: number) => x.toFixed(2);
  console.log(`system_health, ${N} calls each, interleaved:`);
  console.log(`  direct on agentd's socket: p50 ${f(pct(direct, 50))} ms, p99 ${f(pct(direct, 99))} ms`);
  console.log(`  through the gateway:       p50 ${f(pct(gateway, 50))} ms, p99 ${f(pct(gateway, 99))} ms`);
  console.log(`  added by gateway + bridge: p50 ${f(pct(gateway, 50) - pct(direct, 50))} ms, p99 ${f(pct(gateway, 99) - pct(direct, 99))} ms (target ≤ 5 ms at p50)`);
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
