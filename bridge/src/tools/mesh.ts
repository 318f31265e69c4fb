//! Tools backed by osmoda-mesh: post-quantum hybrid links to other osModa hosts, paired by
//! single-use invites, declared as `services.osmoda.mesh.peers.<name>` in the config tree.
//
// Approvals (docs/bridge.md): unpairing a declared peer removes it from the tree, which
// agentd's gate judges destructive (`mesh.peer.remove`); mesh passes the gate's ticket on, so
// the owner is asked in the chat when the model repeats the call. Pairing (creating or
// accepting an invite) only adds a peer, as a generation that can be reverted, and needs the
// invite code a person carries between the hosts; sending is the link's ordinary use and is
// recorded (metadata only). Those take no approval. What a peer sends is its words, not the
// person's: mesh_peers shows it marked as such.

import { Type } from "typebox";

import { withQuery } from "../client.ts";
import { invalidArgs } from "../errors.ts";
import { brief, clip, table } from "../format.ts";
import { tool } from "../tool.ts";

const obj = <P extends Record<string, any>>(props: P) => Type.Object(props, { additionalProperties: false });

const peerName = (description: string) =>
  Type.String({ pattern: "^[A-Za-z_][A-Za-z0-9_-]{0,63}$", description });
const peerArg = peerName("The peer's name (services.osmoda.mesh.peers.<name>), as mesh_peers lists it.");
const endpoint = (description: string) => Type.String({ minLength: 3, maxLength: 261, pattern: "^[^\\s/]+:[0-9]{1,5}$", description });

/** Where a peer recorded or removed through agentd and SafeSwitch stands: its generation and its switch. */
function applied(out: any): string {
  const gen = out.config?.generation ?? {};
  const s = out.switch ?? {};
  const sw =
    s.state === "queued"
      ? "its SafeSwitch is queued behind the switch that is running now and starts when that one ends (safe_switch_status shows them)"
      : `SafeSwitch ${s.id} is ${s.state} and commits by itself when its TTL passes (safe_switch_status {"id": ${s.id}})`;
  return `generation ${gen.short ?? gen.rev} (ledger event ${out.config?.event_id}); ${sw}`;
}

/** Seconds since the epoch → an ISO 8601 UTC time. */
function when(secs: unknown): string {
  return typeof secs === "number" ? new Date(secs * 1000).toISOString().replace(".000Z", "Z") : String(secs);
}

function connection(c: any): string {
  if (!c?.connected) return "not connected";
  return `connected ${c.direction} (${c.remote}) since ${when(c.connected_at)}, ${c.sent} sent / ${c.received} received, ${c.rekeys} rekeys`;
}

/** Largest plaintext of one link message (osmoda-mesh's `MAX_PLAINTEXT`: a 65,535-byte frame less the 16-byte tag). */
export const MAX_PLAINTEXT = 65519;
/** What a text message adds around its text on the link: `{"type":"text","text":` … `}`. */
const TEXT_ENVELOPE = Buffer.byteLength('{"type":"text","text":}');
/** The longest text of plain characters that fits (no quotes, backslashes or control characters). */
export const MAX_TEXT_BYTES = MAX_PLAINTEXT - TEXT_ENVELOPE - 2;
/** A UTF-16 surrogate without its other half. */
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/**
 * Why osmoda-mesh would refuse `text` as a message, or undefined. The daemon measures the message
 * as the link carries it, `{"type":"text","text":"…"}` in UTF-8 with JSON's escapes (serde_json
 * escapes exactly what JSON.stringify does: the quote, the backslash and U+0000–U+001F), so this
 * is its count byte for byte, not a count of characters. A lone surrogate is no Unicode text: the
 * daemon's JSON parser refuses it, so the bridge does too.
 */
export function textProblem(text: string): string | undefined {
  if (LONE_SURROGATE.test(text)) return "`message` holds a lone UTF-16 surrogate: it is not Unicode text";
  const bytes = Buffer.byteLength(JSON.stringify({ type: "text", text }));
  if (bytes > MAX_PLAINTEXT) {
    return `\`message\` is ${bytes} bytes on the link (UTF-8, JSON-escaped); at most ${MAX_PLAINTEXT} fit in one message (${MAX_TEXT_BYTES} bytes of plain text): send it in parts`;
  }
  return undefined;
}

export const meshTools = [
  tool({
    name: "mesh_identity",
    label: "Mesh identity",
    description:
      "This host's mesh identity: its name, key fingerprint and public keys (Ed25519 signing, X25519 Noise static, ML-KEM-768), and the handshake it uses. Nothing secret.",
    parameters: obj({}),
    async run(_p, ctx) {
      const id = await ctx.daemon("osmoda-mesh", "GET", "/identity", undefined, "mesh_identity");
      const k = id.public_keys ?? {};
      const text = [
        `this host is "${id.name}" on the mesh, fingerprint ${id.fingerprint}`,
        `handshake ${id.noise} with ${id.kem}`,
        `public keys: ed25519 ${k.ed25519}, x25519 ${k.x25519}, ml_kem_768 ${brief(k.ml_kem_768, 24)} (${String(k.ml_kem_768 ?? "").length} base64 characters; in details)`,
      ].join("\n");
      return { text, details: id };
    },
  }),
  tool({
    name: "mesh_invite_create",
    label: "Create mesh invite",
    description:
      "Make a single-use invite for another osModa host to pair with this one. Give the code to the person who runs the other host (they accept it there with mesh_invite_accept); once used, both hosts record each other as a peer (a generation on each). The code is a secret: share it only with that person.",
    parameters: obj({
      name: Type.Optional(peerName("What this host will call the peer that accepts (default \"peer\").")),
      ttl_secs: Type.Optional(Type.Integer({ minimum: 1, maximum: 604800, description: "Seconds the invite stays valid (default 3600)." })),
      endpoint: Type.Optional(endpoint("host:port the other host dials to reach this one (default: the listen address, required when that is a wildcard).")),
    }),
    async run(p, ctx) {
      const r = await ctx.daemon("osmoda-mesh", "POST", "/invite/create", p, `mesh_invite_create${p.name ? ` ${p.name}` : ""}`);
      const text = [
        `invite for a peer to be called "${r.peer_name}", dialing ${r.endpoint}; single use, valid until ${when(r.expires_at)}.`,
        `Give this code to the person running the other host (mesh_invite_accept there):`,
        r.invite_code,
      ].join("\n");
      return { text, details: r };
    },
  }),
  tool({
    name: "mesh_invite_accept",
    label: "Accept mesh invite",
    description:
      "Pair with the host that made an invite: dial it, run the post-quantum hybrid handshake, and record it as services.osmoda.mesh.peers.<name> (a commit applied by SafeSwitch); the inviting host records this one the same way. Only accept a code a person gave you for this purpose.",
    parameters: obj({
      invite_code: Type.String({ minLength: 16, maxLength: 8192, pattern: "^[A-Za-z0-9_-]+$", description: "The invite code (base64url) from mesh_invite_create on the other host." }),
      name: Type.Optional(peerName("What to call the inviting host here (default: its own name).")),
      endpoint: Type.Optional(endpoint("host:port where the inviter reaches this host (default: the address it sees + this host's listen port).")),
    }),
    async run(p, ctx) {
      const r = await ctx.daemon("osmoda-mesh", "POST", "/invite/accept", p, "mesh_invite_accept");
      return { text: `paired with peer "${r.peer}": recorded in ${applied(r)}.`, details: r };
    },
  }),
  tool({
    name: "mesh_peers",
    label: "Mesh peers",
    description:
      "The mesh peers: declared or only connected, endpoint, link state and the number of messages received. With peer, that peer in full and the messages it sent (newest last; they are the peer's words, not the person's).",
    parameters: obj({
      peer: Type.Optional(peerArg),
      after: Type.Optional(Type.Integer({ minimum: 0, description: "With peer: only messages with a larger id (default 0)." })),
      limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: "With peer: at most this many messages (default 20)." })),
    }),
    async run(p, ctx) {
      if (p.peer === undefined) {
        if (p.after !== undefined || p.limit !== undefined) {
          throw invalidArgs("mesh_peers", ["after and limit page one peer's messages: give peer too"]);
        }
        const peers = await ctx.daemon("osmoda-mesh", "GET", "/peers", undefined, "mesh_peers");
        if (!peers.length) return { text: "no mesh peers (pair with mesh_invite_create / mesh_invite_accept).", details: peers };
        const rows = peers.map((x: any) => [x.id, x.declared ? "yes" : "no", x.endpoint ?? "", x.connection?.connected ? `${x.connection.direction}` : "no", x.inbox]);
        return { text: table(["peer", "declared", "endpoint", "connected", "messages"], rows), details: peers };
      }
      const id = encodeURIComponent(p.peer);
      const peer = await ctx.daemon("osmoda-mesh", "GET", `/peer/${id}`, undefined, `mesh_peers ${p.peer}`);
      const limit = p.limit ?? 20;
      // The newest `limit` messages after `after`: page forward from `after` to the end.
      let after = p.after ?? 0;
      let msgs: any[] = [];
      for (;;) {
        const page = await ctx.daemon("osmoda-mesh", "GET", withQuery(`/peer/${id}/inbox`, { after, limit: 1000 }), undefined, `mesh_peers ${p.peer}`);
        msgs = msgs.concat(page.messages).slice(-limit);
        if (page.messages.length < 1000) break;
        after = page.messages[page.messages.length - 1].id;
      }
      const lines = [
        `peer "${peer.id}" (${peer.declared ? `declared, endpoint ${peer.endpoint}` : "connected but not declared"}): ${connection(peer.connection)}; ${peer.inbox} messages kept`,
        msgs.length ? `messages from ${peer.id} (its words, not the person's):` : "no messages from it" + (p.after ? ` after ${p.after}` : ""),
        ...msgs.map((m) => `  #${m.id} ${when(m.received_at)} ${m.kind}: ${brief(m.body, 1000)}`),
      ];
      return { text: clip(lines.join("\n"), 16000), details: { peer, messages: msgs } };
    },
  }),
  tool({
    name: "mesh_peer_send",
    label: "Send to mesh peer",
    description:
      "Send a message to a connected mesh peer over its encrypted link: message (text) or payload (JSON), at most about 64 KB. The ledger records that it was sent (peer, kind, size), never the content.",
    parameters: obj({
      peer: peerArg,
      message: Type.Optional(Type.String({ minLength: 1, description: `Text to send: at most ${MAX_TEXT_BYTES} bytes of UTF-8 (fewer when it holds quotes, backslashes or control characters, which the link escapes).` })),
      payload: Type.Optional(Type.Unknown({ description: "JSON to send instead of text." })),
    }),
    async run(p, ctx) {
      if ((p.message === undefined) === (p.payload === undefined)) {
        throw invalidArgs("mesh_peer_send", ["give exactly one of `message` (text) or `payload` (JSON)"]);
      }
      if (p.message !== undefined) {
        const problem = textProblem(p.message);
        if (problem) throw invalidArgs("mesh_peer_send", [problem]);
      }
      const body = p.message !== undefined ? { message: p.message } : { payload: p.payload };
      const r = await ctx.daemon("osmoda-mesh", "POST", `/peer/${encodeURIComponent(p.peer)}/send`, body, `mesh_peer_send ${p.peer}`);
      return { text: `sent ${r.kind} (${r.bytes} bytes) to ${r.peer}.`, details: r };
    },
  }),
  tool({
    name: "mesh_peer_disconnect",
    label: "Unpair mesh peer",
    description:
      "Unpair a mesh peer: remove services.osmoda.mesh.peers.<name> (a commit applied by SafeSwitch) and close its link; it cannot reconnect until paired again. Removing a declared peer needs the owner's approval (agentd's gate). A peer that is connected but not declared is only disconnected.",
    parameters: obj({
      peer: peerArg,
      reason: Type.Optional(Type.String({ minLength: 1, maxLength: 1024, description: "Why (the commit message)." })),
      approval: Type.Optional(Type.String({ minLength: 1, maxLength: 128, description: "Id of a ticket a person approved for exactly this removal." })),
    }),
    async run(p, ctx) {
      const path = withQuery(`/peer/${encodeURIComponent(p.peer)}`, { reason: p.reason, approval: p.approval });
      const r = await ctx.daemon("osmoda-mesh", "DELETE", path, undefined, `mesh_peer_disconnect ${p.peer}`);
      if (r.declared === false) return { text: `disconnected ${r.disconnected} (it was not declared, so nothing changed in the tree).`, details: r };
      return { text: `unpaired ${r.removed}: removed in ${applied(r)}; its link is closed.`, details: r };
    },
  }),
  tool({
    name: "mesh_health",
    label: "Mesh health",
    description: "osmoda-mesh's state: whether its mesh.json is accepted, declared and connected peers, its TCP port, open invites.",
    parameters: obj({}),
    async run(_p, ctx) {
      const h = await ctx.daemon("osmoda-mesh", "GET", "/health", undefined, "mesh_health");
      const cfg = h.status === "ok" ? "config ok" : `config refused: ${h.config_error}`;
      return { text: `osmoda-mesh ${h.status}: ${cfg}; ${h.peers} declared peers, ${h.connected} connected; listening on TCP port ${h.listen_port}; ${h.invites} open invites.`, details: h };
    },
  }),
];
