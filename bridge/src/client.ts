//! HTTP/1.1 + JSON over a Unix socket: the one way the bridge talks to osModa's daemons.
//
// Every daemon answers `{ "error": "...", "detail": ... }` on failure; this module only moves
// bytes and parses JSON. Turning a failure into text for the model happens in `errors.ts`.

import { request as httpRequest } from "node:http";

/** What one call needs: the socket, the method, the path (with query), an optional JSON body. */
export interface CallOptions {
  /** Unix socket path of the daemon, e.g. `/run/osmoda/agentd.sock`. */
  socket: string;
  method: "GET" | "POST" | "DELETE";
  /** Path and query string, e.g. `/events/log?limit=10`. */
  path: string;
  /** JSON body for POST; omitted for GET/DELETE. */
  body?: unknown;
  /** Whole-call budget in milliseconds (connect, send, receive). */
  timeoutMs: number;
  /** Aborts the call (the gateway's tool-call signal). */
  signal?: AbortSignal;
}

/** A daemon's answer: HTTP status and the parsed JSON body (`null` when the body was empty). */
export interface DaemonResponse {
  status: number;
  body: unknown;
}

/** The daemon could not be reached or did not answer in time (no HTTP status). */
export class TransportError extends Error {
  /** `unreachable` (no socket / refused), `timeout`, `aborted`, `protocol` (bad answer). */
  readonly kind: "unreachable" | "timeout" | "aborted" | "protocol";
  readonly socket: string;
  constructor(kind: TransportError["kind"], socket: string, message: string) {
    super(message);
    this.name = "TransportError";
    this.kind = kind;
    this.socket = socket;
  }
}

/** Answers larger than this are refused rather than buffered (a daemon bug, not a use case). */
export const MAX_RESPONSE_BYTES = 16 * 1024 * 1024;

/** Builds `path?k=v&...` from the defined entries of `query` (undefined values are left out). */
export function withQuery(path: string, query: Record<string, string | number | boolean | undefined>): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query)) {
    if (v !== undefined) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

/**
 * Sends one request and resolves with the status and parsed JSON body, whatever the status.
 *
 * Errors: rejects with {@link TransportError} when the socket is missing or refuses, the budget
 * runs out, the signal aborts, or the answer is not JSON / exceeds {@link MAX_RESPONSE_BYTES}.
 */
export function call(opts: CallOptions): Promise<DaemonResponse> {
  return new Promise((resolve, reject) => {
    const payload = opts.body === undefined ? undefined : Buffer.from(JSON.stringify(opts.body));
    let settled = false;
    const finish = (err: TransportError | null, res?: DaemonResponse) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      opts.signal?.removeEventListener("abort", onAbort);
      if (err) {
        req.destroy();
        reject(err);
      } else {
        resolve(res!);
      }
    };
    const req = httpRequest(
      {
        socketPath: opts.socket,
        method: opts.method,
        path: opts.path,
        headers: {
          host: "localhost",
          accept: "application/json",
          ...(payload ? { "content-type": "application/json", "content-length": payload.length } : {}),
        },
      },
      (res) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (c: Buffer) => {
          size += c.length;
          if (size > MAX_RESPONSE_BYTES) {
            finish(new TransportError("protocol", opts.socket, `answer larger than ${MAX_RESPONSE_BYTES} bytes`));
            return;
          }
          chunks.push(c);
        });
        res.on("error", (e) => finish(new TransportError("protocol", opts.socket, e.message)));
        res.on("end", () => {
          const text = Buffer.concat(chunks).toString("utf8");
          let body: unknown = null;
          if (text.trim() !== "") {
            try {
              body = JSON.parse(text);
            } catch {
              finish(
                new TransportError(
                  "protocol",
                  opts.socket,
                  `answered HTTP ${res.statusCode} with a body that is not JSON: ${text.slice(0, 200)}`,
                ),
              );
              return;
            }
          }
          finish(null, { status: res.statusCode ?? 0, body });
        });
      },
    );
    req.on("error", (e: NodeJS.ErrnoException) => {
      const unreachable = e.code === "ENOENT" || e.code === "ECONNREFUSED" || e.code === "EACCES";
      finish(new TransportError(unreachable ? "unreachable" : "protocol", opts.socket, `${e.code ?? "error"}: ${e.message}`));
    });
    const timer = setTimeout(
      () => finish(new TransportError("timeout", opts.socket, `no answer within ${opts.timeoutMs} ms`)),
      opts.timeoutMs,
    );
    const onAbort = () => finish(new TransportError("aborted", opts.socket, "the tool call was cancelled"));
    if (opts.signal?.aborted) {
      onAbort();
      return;
    }
    opts.signal?.addEventListener("abort", onAbort, { once: true });
    req.end(payload);
  });
}
