//! osModa's memory as an OpenClaw memory corpus supplement: OpenClaw's own `memory_search` and
//! `memory_get` (memory-core, with `corpus: "wiki"` or `"all"`) also find and read agentd's notes.
//
// OpenClaw's memory slot (`kind: "memory"`) is exclusive and stays memory-core's; a corpus
// supplement is the additive surface beside it (`api.registerMemoryCorpusSupplement`). Search is
// agentd's hybrid recall (`POST /memory/recall`); reading goes through agentd's `/fs/list` and
// `/fs/read` (recorded in the ledger like any file read), only ever inside the memory dir.
//
// Paths are `osmoda/MEMORY.md` and `osmoda/memory/<day>.md`: memory-core's own workspace notes
// use the same layout without the prefix, so the prefix is what makes a path osModa's. A lookup
// without it (or absolute, with `..`, or outside that layout) is not ours: `get` answers null so
// another supplement may own it, and never touches a socket.

import { TransportError, call, withQuery } from "./client.ts";
import { daemonError, transportError } from "./errors.ts";
import type { Settings } from "./tool.ts";

/** Prefix of every path this corpus answers for. */
export const PATH_PREFIX = "osmoda/";
/** OpenClaw's name for the supplement corpus (the value `memory_get`'s `corpus` accepts). */
const CORPUS = "wiki";
const PROVENANCE = "osModa memory (agentd)";
const SOURCE_TYPE = "osmoda-memory";
/** agentd's largest fused score: first in both the keyword and the vector ranking, 2 / (60 + 1). */
const MAX_RRF = 2 / 61;
/** Lines and characters one `get` returns by default: the bounds memory-core's own reads use. */
export const DEFAULT_LINES = 120;
export const MAX_CHARS = 12_000;
/** agentd's `/fs/read` limit per call, and how far into a note one `get` reads at most. */
const READ_CHUNK = 1024 * 1024;
const MAX_BYTES = 16 * 1024 * 1024;
/** agentd's `/memory/recall` bounds. */
const MAX_QUERY = 2000;
const MAX_RESULTS = 50;

/** One search hit, as OpenClaw's `MemoryCorpusSearchResult`. */
export interface CorpusHit {
  corpus: string;
  path: string;
  title?: string;
  kind: string;
  score: number;
  snippet: string;
  id: string;
  startLine: number;
  endLine: number;
  citation: string;
  source: string;
  provenanceLabel: string;
  sourceType: string;
  sourcePath: string;
  updatedAt?: string;
}

/** One read, as OpenClaw's `MemoryCorpusGetResult` plus memory-core's continuation fields. */
export interface CorpusRead {
  corpus: string;
  path: string;
  title?: string;
  kind: string;
  content: string;
  fromLine: number;
  lineCount: number;
  provenanceLabel: string;
  sourceType: string;
  sourcePath: string;
  truncated?: boolean;
  nextFrom?: number;
}

/** A lookup that names one of osModa's notes: its path under the memory dir and the range asked for. */
export interface NoteLookup {
  /** `MEMORY.md` or `memory/<name>.md`. */
  rel: string;
  /** The directory under the memory dir holding it (`""` or `memory`) and its file name. */
  dir: "" | "memory";
  name: string;
  /** From a `#L<a>` / `#L<a>-L<b>` suffix (a citation), when present. */
  fromLine?: number;
  lineCount?: number;
}

/**
 * Parses `lookup` as one of osModa's notes: `osmoda/MEMORY.md` or `osmoda/memory/<name>.md`
 * (`<name>` one path segment, not starting with `.`, no control characters), optionally followed
 * by a citation's `#L<a>` or `#L<a>-L<b>`. Returns undefined for anything else (not ours).
 */
export function parseLookup(lookup: string): NoteLookup | undefined {
  const m = /^osmoda\/(MEMORY\.md|memory\/([^/\\\x00-\x1f\x7f]+\.md))(?:#L([1-9]\d{0,8})(?:-L([1-9]\d{0,8}))?)?$/.exec(lookup);
  if (!m) return undefined;
  const rel = m[1]!;
  const daily = m[2];
  if (daily !== undefined && daily.startsWith(".")) return undefined;
  const out: NoteLookup = daily === undefined ? { rel, dir: "", name: rel } : { rel, dir: "memory", name: daily };
  if (m[3] !== undefined) {
    const a = Number(m[3]);
    const b = m[4] === undefined ? a : Number(m[4]);
    if (b < a) return undefined;
    out.fromLine = a;
    out.lineCount = b - a + 1;
  }
  return out;
}

/** The citation OpenClaw shows for a hit: `osmoda/<path>#L<a>` or `#L<a>-L<b>`. */
function citation(path: string, start: number, end: number): string {
  return start === end ? `${path}#L${start}` : `${path}#L${start}-L${end}`;
}

/** `root/rel` without doubling a trailing slash of `root`. */
function under(root: string, rel: string): string {
  return rel === "" ? root.replace(/(.)\/+$/, "$1") : `${root.replace(/\/+$/, "")}/${rel}`;
}

/** agentd's `GET /fs/list` answer. */
interface Listing {
  /** The directory's real path. */
  path: string;
  entries: { name: string; kind: string }[];
  truncated: boolean;
}

type Caller = (method: "GET" | "POST", path: string, body: unknown, what: string) => Promise<any>;

/** agentd on `settings.agentdSocket`; a failure becomes the bridge's usual error (errors.ts). */
function agentdCaller(settings: Settings): Caller {
  return async (method, path, body, what) => {
    let res;
    try {
      res = await call({ socket: settings.agentdSocket, method, path, body, timeoutMs: settings.requestTimeoutMs });
    } catch (e) {
      if (e instanceof TransportError) throw transportError("agentd", what, e);
      throw e;
    }
    if (res.status < 200 || res.status >= 300) throw daemonError("agentd", what, res);
    return res.body;
  };
}

/** memory-core's line window: whole lines within {@link MAX_CHARS}, at least one line (cut if it alone is longer). */
function window(lines: string[], from: number, count: number, moreAfter: boolean) {
  const picked = lines.slice(from - 1, from - 1 + count);
  let included = 0;
  let chars = 0;
  for (const line of picked) {
    const next = chars + line.length + (included > 0 ? 1 : 0);
    if (included > 0 && next > MAX_CHARS) break;
    included += 1;
    chars = next;
  }
  const text = picked.slice(0, included).join("\n").slice(0, MAX_CHARS);
  const cut = chars > MAX_CHARS;
  const more = moreAfter || from - 1 + picked.length < lines.length || included < picked.length;
  return {
    text,
    included,
    ...(more || cut ? { truncated: true as const } : {}),
    ...(more && !cut ? { nextFrom: from + included } : {}),
  };
}

/**
 * The lines `api.registerMemoryPromptSupplement` adds to memory-core's "Memory Recall" prompt
 * section: where osModa's notes are, so the model asks for that corpus. Nothing when
 * `memory_search` is not offered or the session is sandboxed (it gets nothing from the corpus).
 */
export function memoryPromptLines(params: { availableTools: Set<string>; sandboxed?: boolean }): string[] {
  if (params.sandboxed || !params.availableTools.has("memory_search")) return [];
  return [
    `This machine's operations notes kept by osModa (incidents and their fixes, configuration decisions, what the owner prefers) are a memory corpus too: memory_search with corpus="all" finds them (paths starting ${PATH_PREFIX}), and memory_get with the same corpus reads their lines.`,
  ];
}

/**
 * The supplement `api.registerMemoryCorpusSupplement` takes. Registering it does no I/O; each
 * `search`/`get` calls agentd. Sandboxed sessions get nothing (the machine's operations notes
 * are the operator's, not a sandboxed session's).
 *
 * Errors: `search` and `get` reject with the bridge's errors (`errors.ts`) when agentd is down or
 * refuses; memory-core reports that as the corpus being unavailable, with the message, and keeps
 * the other corpora's results.
 */
export function memoryCorpusSupplement(settings: Settings) {
  const agentd = agentdCaller(settings);
  return {
    async search(params: { query: string; maxResults?: number; sandboxed?: boolean }): Promise<CorpusHit[]> {
      if (params.sandboxed) return [];
      const query = String(params.query ?? "");
      if (query.trim() === "") return [];
      if (query.length > MAX_QUERY) {
        throw new Error(`osModa's memory searches queries of at most ${MAX_QUERY} characters (this one has ${query.length}); shorten it.`);
      }
      const max = Math.min(MAX_RESULTS, Math.max(1, Math.floor(params.maxResults ?? 8)));
      const r = await agentd("POST", "/memory/recall", { query, max_results: max }, "memory_search (osModa's memory)");
      return (r.results as any[]).map((h) => {
        const path = PATH_PREFIX + h.path;
        return {
          corpus: CORPUS,
          path,
          ...(h.heading ? { title: String(h.heading) } : {}),
          kind: "note",
          score: Math.min(1, Number(h.score) / MAX_RRF),
          snippet: String(h.text),
          id: citation(path, h.line_start, h.line_end),
          startLine: h.line_start,
          endLine: h.line_end,
          citation: citation(path, h.line_start, h.line_end),
          source: "osmoda",
          provenanceLabel: PROVENANCE,
          sourceType: SOURCE_TYPE,
          sourcePath: under(settings.memoryDir, String(h.path)),
          ...(h.at ? { updatedAt: String(h.at) } : {}),
        };
      });
    },

    async get(params: { lookup: string; fromLine?: number; lineCount?: number; sandboxed?: boolean }): Promise<CorpusRead | null> {
      const note = parseLookup(String(params.lookup ?? ""));
      if (!note || params.sandboxed) return null;
      const from = Math.max(1, Math.floor(params.fromLine ?? note.fromLine ?? 1));
      const count = Math.max(1, Math.floor(params.lineCount ?? note.lineCount ?? DEFAULT_LINES));
      const what = `memory_get ${PATH_PREFIX}${note.rel}`;
      const notRead = (why: string) => new Error(`${PATH_PREFIX}${note.rel}: ${why}; it was not read.`);
      /** agentd's listing of `dir` (its real path, entries), or undefined when it does not exist. */
      const list = async (dir: string): Promise<Listing | undefined> => {
        try {
          return await agentd("GET", withQuery("/fs/list", { path: dir }), undefined, what);
        } catch (e) {
          if (/No such file or directory/.test((e as Error).message)) return undefined;
          throw e;
        }
      };
      /** Whether `name` is in `l` as `kind` (false: absent; a truncated listing cannot say so); another kind throws. */
      const has = (l: Listing, name: string, kind: "dir" | "file"): boolean => {
        const e = l.entries.find((x) => x.name === name);
        if (!e) return l.truncated;
        if (e.kind !== kind) throw notRead(`${l.path}/${name} is a ${e.kind}, not a ${kind === "dir" ? "directory" : "regular file"}`);
        return true;
      };
      // Down from the memory dir, one listing per directory: each step must be a real directory
      // (last, a regular file) where the layout puts it, so a symbolic link is never followed out
      // of the memory dir, and the read below must land exactly where the listings led.
      const root = await list(settings.memoryDir);
      if (!root) return null;
      let listing = root;
      if (note.dir !== "") {
        if (!has(root, note.dir, "dir")) return null;
        const sub = await list(`${root.path}/${note.dir}`);
        if (!sub) return null;
        if (sub.path !== `${root.path}/${note.dir}`) throw notRead(`${note.dir}/ leads outside osModa's memory dir (to ${sub.path})`);
        listing = sub;
      }
      if (!has(listing, note.name, "file")) return null;
      const file = `${listing.path}/${note.name}`;
      const need = from - 1 + count;
      const parts: Buffer[] = [];
      let newlines = 0;
      let offset = 0;
      let more = true;
      while (more && newlines < need) {
        if (offset >= MAX_BYTES) throw notRead(`line ${need} lies more than ${MAX_BYTES >> 20} MiB into the note; ask for an earlier range`);
        const r = await agentd("GET", withQuery("/fs/read", { path: file, offset, limit: READ_CHUNK }), undefined, what);
        if (r.path !== file) throw notRead(`it leads outside osModa's memory dir (to ${r.path})`);
        const bytes = Buffer.from(r.content, r.encoding === "base64" ? "base64" : "utf8");
        parts.push(bytes);
        for (const b of bytes) if (b === 0x0a) newlines++;
        offset += bytes.length;
        more = r.truncated === true && bytes.length > 0;
      }
      const lines = Buffer.concat(parts).toString("utf8").split("\n");
      if (!more && lines.at(-1) === "") lines.pop();
      // A file read only in part ends in a line that may continue: keep whole lines only.
      if (more) lines.pop();
      const w = window(lines, from, count, more);
      // The title is the section the excerpt starts in (the nearest heading above it).
      const title = lines.slice(0, from).findLast((l) => /^#{1,6} /.test(l))?.replace(/^#+ /, "");
      return {
        corpus: CORPUS,
        path: PATH_PREFIX + note.rel,
        ...(title ? { title } : {}),
        kind: "note",
        content: w.text,
        fromLine: from,
        lineCount: w.included,
        provenanceLabel: PROVENANCE,
        sourceType: SOURCE_TYPE,
        sourcePath: under(settings.memoryDir, note.rel),
        ...(w.truncated ? { truncated: true } : {}),
        ...(w.nextFrom !== undefined ? { nextFrom: w.nextFrom } : {}),
      };
    },
  };
}
