//! The one place where a failure (bad arguments, a daemon's refusal, an unreachable socket)
//! becomes the text the model reads.
//
// OpenClaw's gateway recognises errors by name: `ToolInputError` answers 400 and
// `ToolAuthorizationError` 403 on `POST /tools/invoke`, both with our message; any other error
// is a 500 whose message the HTTP caller does not see (the model still does in a turn). So a
// refusal the caller can act on is named `ToolInputError`, one that needs a person's approval
// `ToolAuthorizationError`, and a daemon that is down or broken stays a plain `Error`.

import type { DaemonResponse } from "./client.ts";
import { TransportError } from "./client.ts";

/** A failure the caller can fix by changing the call (HTTP 400 on `/tools/invoke`). */
export class ToolInputError extends Error {
  readonly status: number = 400;
  /** Structured detail kept for the tool result's `details` and for tests. */
  readonly detail: unknown;
  constructor(message: string, detail: unknown = null) {
    super(message);
    this.name = "ToolInputError";
    this.detail = detail;
  }
}

/** The daemon refused because a person must approve this exact operation first (HTTP 403). */
export class ToolAuthorizationError extends ToolInputError {
  override readonly status: number = 403;
  constructor(message: string, detail: unknown = null) {
    super(message, detail);
    this.name = "ToolAuthorizationError";
  }
}

/** The daemon is down, timed out or failed internally; the caller cannot fix it by retrying differently. */
export class DaemonFailure extends Error {
  readonly detail: unknown;
  constructor(message: string, detail: unknown = null) {
    super(message);
    this.name = "DaemonFailure";
    this.detail = detail;
  }
}

function errorBody(body: unknown): { error: string; detail: unknown } {
  if (body && typeof body === "object" && "error" in body) {
    const b = body as { error: unknown; detail?: unknown };
    return { error: String(b.error), detail: b.detail ?? null };
  }
  return { error: body === null ? "no error message" : JSON.stringify(body).slice(0, 300), detail: null };
}

/** Short JSON of `detail` for the model; the full value stays in the error's `detail`. */
function detailText(detail: unknown): string {
  if (detail === null || detail === undefined) return "";
  const s = JSON.stringify(detail);
  return s.length > 600 ? ` Detail: ${s.slice(0, 600)}…` : ` Detail: ${s}`;
}

/**
 * Turns a daemon's non-2xx answer into the error the tool throws.
 *
 * `daemon` names the daemon for the message (`agentd`, `osmoda-watch`); `what` says what was
 * attempted (`config_set services.nginx.enable`).
 */
export function daemonError(daemon: string, what: string, res: DaemonResponse): Error {
  const { error, detail } = errorBody(res.body);
  const d = detail as { operation?: unknown; ticket?: unknown; kind?: unknown } | null;
  // The gate's refusal carries the operation; a daemon's (osmoda-keyd) says `approval_required`.
  if (res.status === 403 && d && typeof d === "object" && ("operation" in d || d.kind === "approval_required")) {
    return new ToolAuthorizationError(
      `${daemon} refused ${what}: ${error} A person must approve this exact operation before it can run; ` +
        `nothing was changed.${detailText(detail)}`,
      { status: res.status, error, detail },
    );
  }
  if (res.status >= 400 && res.status < 500) {
    const hint =
      res.status === 404 ? " (not found)" : res.status === 409 ? " (conflicts with the current state; look at it and retry)" : "";
    return new ToolInputError(`${daemon} refused ${what}${hint}: ${error}${detailText(detail)} Nothing was changed.`, {
      status: res.status,
      error,
      detail,
    });
  }
  if (res.status === 503) {
    return new ToolInputError(`${daemon} cannot do ${what} here: ${error}${detailText(detail)}`, {
      status: res.status,
      error,
      detail,
    });
  }
  return new DaemonFailure(`${daemon} failed during ${what} (HTTP ${res.status}): ${error}${detailText(detail)}`, {
    status: res.status,
    error,
    detail,
  });
}

/** Turns a transport failure into the error the tool throws, naming the socket and what to check. */
export function transportError(daemon: string, what: string, e: TransportError): Error {
  switch (e.kind) {
    case "unreachable":
      return new DaemonFailure(
        `${daemon} is not reachable at ${e.socket} (${e.message}); is it running? ${what} was not attempted.`,
      );
    case "timeout":
      return new DaemonFailure(
        `${daemon} did not answer ${what} in time (${e.message}); it may still complete: check before retrying.`,
      );
    case "aborted":
      return new DaemonFailure(`${what} was cancelled before ${daemon} answered; it may still complete.`);
    default:
      return new DaemonFailure(`${daemon} gave an unusable answer to ${what}: ${e.message}`);
  }
}

/** The bad-arguments error: names the tool, each problem with its JSON path, and what is expected. */
export function invalidArgs(tool: string, problems: string[]): ToolInputError {
  return new ToolInputError(`Invalid arguments for ${tool}: ${problems.join("; ")}. Nothing was done.`, { problems });
}
