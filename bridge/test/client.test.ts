// The Unix-socket HTTP client against a real HTTP server on a Unix socket.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { createServer, type Server } from "node:http";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { call, withQuery, MAX_RESPONSE_BYTES, TransportError } from "../src/client.ts";

const dir = mkdtempSync(join(tmpdir(), "osmoda-bridge-client-"));
const socket = join(dir, "d.sock");
let server: Server;
const seen: { method?: string; url?: string; body: string; type?: string }[] = [];

before(async () => {
  server = createServer((req, res) => {
    let body = "";
    req.on("data", (c) => (body += c));
    req.on("end", () => {
      seen.push({ method: req.method, url: req.url, body, type: req.headers["content-type"] });
      switch (req.url?.split("?")[0]) {
        case "/echo":
          res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify({ got: body ? JSON.parse(body) : null }));
          break;
        case "/refuse":
          res.writeHead(409, { "content-type": "application/json" }).end('{"error":"busy","detail":{"id":3}}');
          break;
        case "/empty":
          res.writeHead(204).end();
          break;
        case "/html":
          res.writeHead(502).end("<html>bad gateway</html>");
          break;
        case "/huge":
          res.writeHead(200);
          res.end(Buffer.alloc(MAX_RESPONSE_BYTES + 1024, 0x20));
          break;
        case "/hang":
          break; // never answers
      }
    });
  });
  await new Promise<void>((r) => server.listen(socket, r));
});
after(() => {
  server.closeAllConnections();
  server.close();
  rmSync(dir, { recursive: true, force: true });
});

const base = { socket, timeoutMs: 5000 } as const;

test("POST sends JSON and parses the JSON answer", async () => {
  const r = await call({ ...base, method: "POST", path: "/echo", body: { a: [1, "x"] } });
  assert.deepEqual(r, { status: 200, body: { got: { a: [1, "x"] } } });
  assert.equal(seen.at(-1)!.type, "application/json");
});

test("GET sends no body; query strings are encoded and undefined values dropped", async () => {
  const path = withQuery("/echo", { type: "config.*", limit: 5, actor: undefined, q: "a b&c" });
  assert.equal(path, "/echo?type=config.*&limit=5&q=a+b%26c");
  const r = await call({ ...base, method: "GET", path });
  assert.deepEqual(r.body, { got: null });
  assert.equal(seen.at(-1)!.url, path);
  assert.equal(withQuery("/x", {}), "/x");
});

test("error statuses resolve with the body (errors.ts decides what they mean)", async () => {
  assert.deepEqual(await call({ ...base, method: "POST", path: "/refuse", body: {} }), { status: 409, body: { error: "busy", detail: { id: 3 } } });
  assert.deepEqual(await call({ ...base, method: "GET", path: "/empty" }), { status: 204, body: null });
});

test("a body that is not JSON, or too large, is a protocol error", async () => {
  await assert.rejects(call({ ...base, method: "GET", path: "/html" }), (e: any) => e instanceof TransportError && e.kind === "protocol" && /HTTP 502 .*not JSON: <html>/.test(e.message));
  await assert.rejects(call({ ...base, method: "GET", path: "/huge" }), (e: any) => e.kind === "protocol" && /larger than/.test(e.message));
});

test("a missing socket is unreachable; a silent daemon times out; a cancelled call aborts", async () => {
  await assert.rejects(call({ ...base, socket: join(dir, "none.sock"), method: "GET", path: "/echo" }), (e: any) => e.kind === "unreachable" && /ENOENT/.test(e.message));
  await assert.rejects(call({ ...base, timeoutMs: 100, method: "GET", path: "/hang" }), (e: any) => e.kind === "timeout");
  const ac = new AbortController();
  const p = call({ ...base, method: "GET", path: "/hang", signal: ac.signal });
  ac.abort();
  await assert.rejects(p, (e: any) => e.kind === "aborted");
  const done = new AbortController();
  done.abort();
  await assert.rejects(call({ ...base, method: "GET", path: "/echo", signal: done.signal }), (e: any) => e.kind === "aborted");
});
