// A scripted OpenAI-compatible model on loopback: `POST /v1/chat/completions` answers with the
// next step a `script` function picks from the conversation so far (a tool call or text), as a
// JSON body or as server-sent events when the client asks to stream. Every request is kept, so
// tests can assert what the gateway offered the model (its tool list) and sent back (results).

import { createServer, type Server } from "node:http";

export type Step = { tool: string; args: unknown } | { text: string };

export interface ChatRequest {
  model: string;
  messages: { role: string; content?: unknown; tool_call_id?: string; tool_calls?: unknown }[];
  tools?: { type: string; function: { name: string; parameters?: unknown } }[];
  stream?: boolean;
}

export class ScriptedModel {
  readonly requests: ChatRequest[] = [];
  private server: Server | undefined;
  port = 0;
  private calls = 0;

  private readonly script: (req: ChatRequest) => Step;

  constructor(script: (req: ChatRequest) => Step) {
    this.script = script;
  }

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      let body = "";
      req.on("data", (c) => (body += c));
      req.on("end", () => {
        if (req.method !== "POST" || !req.url?.endsWith("/chat/completions")) {
          res.writeHead(404, { "content-type": "application/json" }).end('{"error":{"message":"not found"}}');
          return;
        }
        let chat: ChatRequest;
        try {
          chat = JSON.parse(body);
        } catch {
          res.writeHead(400).end();
          return;
        }
        this.requests.push(chat);
        let step: Step;
        try {
          step = this.script(chat);
        } catch (e) {
          step = { text: `script error: ${(e as Error).message}` };
        }
        this.answer(chat, step, res);
      });
    });
    await new Promise<void>((r) => this.server!.listen(0, "127.0.0.1", r));
    this.port = (this.server!.address() as { port: number }).port;
  }

  private answer(chat: ChatRequest, step: Step, res: import("node:http").ServerResponse) {
    const id = `chatcmpl-${++this.calls}`;
    const created = Math.floor(Date.now() / 1000);
    const message =
      "tool" in step
        ? {
            role: "assistant",
            content: null,
            tool_calls: [{ id: `call_${this.calls}`, type: "function", function: { name: step.tool, arguments: JSON.stringify(step.args) } }],
          }
        : { role: "assistant", content: step.text };
    const finish = "tool" in step ? "tool_calls" : "stop";
    const usage = { prompt_tokens: 10, completion_tokens: 5, total_tokens: 15 };
    if (!chat.stream) {
      res.writeHead(200, { "content-type": "application/json" });
      res.end(JSON.stringify({ id, object: "chat.completion", created, model: chat.model, choices: [{ index: 0, message, finish_reason: finish }], usage }));
      return;
    }
    res.writeHead(200, { "content-type": "text/event-stream", "cache-control": "no-cache" });
    const send = (o: unknown) => res.write(`data: ${JSON.stringify(o)}\n\n`);
    const chunk = (delta: unknown, finish_reason: string | null) => ({ id, object: "chat.completion.chunk", created, model: chat.model, choices: [{ index: 0, delta, finish_reason }] });
    if ("tool" in step) {
      const tc = message.tool_calls![0]!;
      send(chunk({ role: "assistant", tool_calls: [{ index: 0, id: tc.id, type: "function", function: { name: tc.function.name, arguments: "" } }] }, null));
      send(chunk({ tool_calls: [{ index: 0, function: { arguments: tc.function.arguments } }] }, null));
    } else {
      send(chunk({ role: "assistant", content: step.text }, null));
    }
    send({ ...chunk({}, finish), usage });
    res.end("data: [DONE]\n\n");
  }

  async stop(): Promise<void> {
    this.server?.closeAllConnections();
    await new Promise((r) => this.server?.close(r));
  }
}

/**
 * The text of the newest `tool` message (the gateway may append its own context message after
 * it), or undefined when the model has not called a tool yet in this conversation.
 */
export function lastToolResult(req: ChatRequest): string | undefined {
  const last = req.messages.findLast((m) => m.role === "tool");
  if (!last) return undefined;
  const c = last.content;
  if (typeof c === "string") return c;
  if (Array.isArray(c)) return c.map((p: any) => (typeof p === "string" ? p : (p?.text ?? ""))).join("");
  return JSON.stringify(c);
}
