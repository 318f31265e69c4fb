// Full agent turns for the tests: the gateway config the NixOS module renders (lib/) plus a
// scripted model on loopback and the OpenAI-compatible endpoint, and an approval client that
// answers the bridge's plugin approvals as the owner would in the Control UI.

import assert from "node:assert/strict";
import { dirname, join } from "node:path";

import { Stack, renderGatewayConfig } from "./harness.ts";
import type { ScriptedModel } from "./model.ts";

/**
 * Starts `stack`'s gateway with `lib/`'s rendered config for every daemon socket of the stack,
 * the scripted model as its only provider and `/v1/chat/completions` enabled.
 */
export async function startChatGateway(stack: Stack, model: ScriptedModel, extra: (c: Record<string, any>) => void = () => {}): Promise<void> {
  await stack.startGateway({
    render: (pluginDir, port) => {
      const c = renderGatewayConfig(
        {
          stateDir: dirname(stack.memoryDir),
          configTree: stack.tree,
          agentd: { socket: stack.agentdSocket },
          watch: { socket: stack.watchSocket },
          keyd: { socket: stack.keydSocket },
          routines: { socket: stack.routinesSocket },
          voice: { socket: stack.voiceSocket },
          mesh: { socket: stack.meshSocket },
          gateway: { port, relaySocket: stack.relaySocket },
        },
        pluginDir,
        stack.dir,
      );
      c.gateway.http = { endpoints: { chatCompletions: { enabled: true } } };
      c.models = {
        mode: "merge",
        providers: {
          scripted: {
            baseUrl: `http://127.0.0.1:${model.port}/v1`,
            apiKey: "scripted-model",
            api: "openai-completions",
            models: [{ id: "turns", name: "Scripted turns", reasoning: false, input: ["text"], cost: { input: 0, output: 0, cacheRead: 0, cacheWrite: 0 }, contextWindow: 1000000, maxTokens: 4096 }],
          },
        },
      };
      c.agents = { defaults: { model: { primary: "scripted/turns" } } };
      extra(c);
      return c;
    },
  });
}

/** One user turn through `/v1/chat/completions`; the assistant's final text. */
export async function turn(stack: Stack, text: string): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${stack.port}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${stack.token}`, "content-type": "application/json" },
    body: JSON.stringify({ model: "openclaw", messages: [{ role: "user", content: text }] }),
  });
  const body: any = await res.json();
  assert.equal(res.status, 200, JSON.stringify(body));
  return body.choices[0].message.content as string;
}

/** A gateway client with the owner's approvals scope: records each plugin approval and answers it. */
export class Approver {
  answer: "allow-once" | "deny" | "ignore" = "ignore";
  readonly requested: any[] = [];
  private client: any;

  async start(stack: Stack): Promise<void> {
    // The gateway client keeps its device identity under the state dir it is given.
    process.env.OPENCLAW_STATE_DIR = join(stack.dir, "approver");
    const { GatewayClient } = await import("openclaw/plugin-sdk/gateway-runtime");
    let ready: () => void;
    const hello = new Promise<void>((r) => (ready = r));
    this.client = new GatewayClient({
      url: `ws://127.0.0.1:${stack.port}`,
      token: stack.token,
      role: "operator",
      scopes: ["operator.admin", "operator.approvals", "operator.read"],
      caps: ["plugin-approvals"],
      onHelloOk: () => ready(),
      onEvent: (evt: any) => {
        if (evt.event !== "plugin.approval.requested") return;
        this.requested.push(evt.payload);
        if (this.answer !== "ignore") void this.client.request("plugin.approval.resolve", { id: evt.payload.id, decision: this.answer });
      },
    });
    this.client.start();
    await hello;
  }

  async stop(): Promise<void> {
    await this.client?.stopAndWait({ timeoutMs: 5000 }).catch(() => {});
  }
}
