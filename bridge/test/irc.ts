// A minimal IRC server on loopback for full chat turns through OpenClaw's IRC channel
// (`@openclaw/irc`): the RFC 1459/2812 subset its client uses — registration (PASS ignored,
// NICK/USER answered with 001), PING/PONG, JOIN, PRIVMSG relayed between connected nicks
// (direct messages) and channel members — plus scripted users the test speaks through.

import { createServer, type Server, type Socket } from "node:net";

/** One connected client as the server sees it. */
interface Conn {
  socket: Socket;
  nick?: string;
  user?: string;
  registered: boolean;
  channels: Set<string>;
}

/** A line a nick received: who sent it (`nick!user@host`), to whom, and the text. */
export interface Received {
  from: string;
  target: string;
  text: string;
}

const HOST = "127.0.0.1";

export class IrcServer {
  private server: Server | undefined;
  private readonly conns = new Set<Conn>();
  /** Every PRIVMSG relayed, in order (the bot's replies included). */
  readonly log: Received[] = [];
  port = 0;

  async start(): Promise<void> {
    this.server = createServer((socket) => this.accept(socket));
    await new Promise<void>((r) => this.server!.listen(0, HOST, r));
    this.port = (this.server!.address() as { port: number }).port;
  }

  /** `nick!user@127.0.0.1`, the sender identity OpenClaw's allowlists match. */
  static identity(nick: string): string {
    return `${nick}!${nick}@${HOST}`;
  }

  /** Whether `nick` is registered (the bot, once it connected). */
  online(nick: string): boolean {
    return [...this.conns].some((c) => c.registered && c.nick?.toLowerCase() === nick.toLowerCase());
  }

  /** Connects a scripted user and registers it; resolves after its 001. */
  async connect(nick: string): Promise<IrcUser> {
    const u = new IrcUser(nick, this.port);
    await u.start();
    return u;
  }

  private accept(socket: Socket): void {
    const c: Conn = { socket, registered: false, channels: new Set() };
    this.conns.add(c);
    socket.setEncoding("utf8");
    let buf = "";
    socket.on("data", (chunk: string) => {
      buf += chunk;
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const line = buf.slice(0, i).replace(/\r$/, "");
        buf = buf.slice(i + 1);
        if (line) this.handle(c, line);
      }
    });
    socket.on("close", () => this.conns.delete(c));
    socket.on("error", () => this.conns.delete(c));
  }

  private send(c: Conn, line: string): void {
    if (!c.socket.destroyed) c.socket.write(`${line}\r\n`);
  }

  private prefix(c: Conn): string {
    return `${c.nick}!${c.user ?? c.nick}@${HOST}`;
  }

  private handle(c: Conn, raw: string): void {
    const { command, params } = parse(raw);
    switch (command) {
      case "NICK": {
        const nick = params[0] ?? "";
        if ([...this.conns].some((o) => o !== c && o.nick?.toLowerCase() === nick.toLowerCase())) {
          this.send(c, `:irc.test 433 * ${nick} :Nickname is already in use`);
          return;
        }
        c.nick = nick;
        break;
      }
      case "USER":
        c.user = params[0];
        break;
      case "PING":
        this.send(c, `:irc.test PONG irc.test :${params[0] ?? ""}`);
        return;
      case "JOIN":
        for (const ch of (params[0] ?? "").split(",").filter(Boolean)) {
          c.channels.add(ch.toLowerCase());
          for (const o of this.conns) if (o.channels.has(ch.toLowerCase())) this.send(o, `:${this.prefix(c)} JOIN ${ch}`);
        }
        return;
      case "PRIVMSG": {
        const [target, text] = params;
        if (!target || text === undefined) return;
        this.log.push({ from: this.prefix(c), target, text });
        const line = `:${this.prefix(c)} PRIVMSG ${target} :${text}`;
        const chan = target.startsWith("#") || target.startsWith("&");
        for (const o of this.conns) {
          if (o === c) continue;
          if (chan ? o.channels.has(target.toLowerCase()) : o.nick?.toLowerCase() === target.toLowerCase()) this.send(o, line);
        }
        return;
      }
      case "QUIT":
        c.socket.end();
        return;
      default:
        // Anything else (CAP, MODE, WHO, ...) is not needed by OpenClaw's client: ignored.
        return;
    }
    if (!c.registered && c.nick && c.user) {
      c.registered = true;
      this.send(c, `:irc.test 001 ${c.nick} :Welcome to the test network ${this.prefix(c)}`);
    }
  }

  async stop(): Promise<void> {
    for (const c of this.conns) c.socket.destroy();
    await new Promise((r) => this.server?.close(r));
  }
}

/** A scripted person on the test network: sends PRIVMSGs and keeps what it receives. */
export class IrcUser {
  readonly received: Received[] = [];
  private socket: Socket | undefined;
  private readonly nick: string;
  private readonly port: number;

  constructor(nick: string, port: number) {
    this.nick = nick;
    this.port = port;
  }

  async start(): Promise<void> {
    const { connect } = await import("node:net");
    this.socket = connect({ host: HOST, port: this.port });
    this.socket.setEncoding("utf8");
    let welcome: () => void;
    const ready = new Promise<void>((r) => (welcome = r));
    let buf = "";
    this.socket.on("data", (chunk: string) => {
      buf += chunk;
      for (let i = buf.indexOf("\n"); i >= 0; i = buf.indexOf("\n")) {
        const line = buf.slice(0, i).replace(/\r$/, "");
        buf = buf.slice(i + 1);
        const m = parse(line);
        if (m.command === "001") welcome();
        if (m.command === "PING") this.socket!.write(`PONG :${m.params[0] ?? ""}\r\n`);
        if (m.command === "PRIVMSG") this.received.push({ from: m.prefix ?? "", target: m.params[0] ?? "", text: m.params[1] ?? "" });
      }
    });
    this.socket.write(`NICK ${this.nick}\r\nUSER ${this.nick} 0 * :${this.nick}\r\n`);
    await ready;
  }

  say(target: string, text: string): void {
    this.socket!.write(`PRIVMSG ${target} :${text}\r\n`);
  }

  /** Everything `from` (a nick) sent this user, joined by newlines. */
  textFrom(nick: string): string {
    return this.received.filter((r) => r.from.split("!")[0]!.toLowerCase() === nick.toLowerCase()).map((r) => r.text).join("\n");
  }

  stop(): void {
    this.socket?.destroy();
  }
}

/** One IRC line: optional `:prefix`, the command, middle params and the trailing param last. */
function parse(raw: string): { prefix?: string; command: string; params: string[] } {
  let rest = raw;
  let prefix: string | undefined;
  if (rest.startsWith(":")) {
    const sp = rest.indexOf(" ");
    prefix = rest.slice(1, sp < 0 ? undefined : sp);
    rest = sp < 0 ? "" : rest.slice(sp + 1);
  }
  const t = rest.indexOf(" :");
  const trailing = t >= 0 ? rest.slice(t + 2) : undefined;
  const words = (t >= 0 ? rest.slice(0, t) : rest).split(" ").filter(Boolean);
  const command = (words.shift() ?? "").toUpperCase();
  return { prefix, command, params: trailing === undefined ? words : [...words, trailing] };
}
