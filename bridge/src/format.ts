//! Small helpers that turn daemon answers into short text for the model.

/** Text longer than `max` characters is cut, saying how much was left out. */
export function clip(text: string, max = 4000): string {
  if (text.length <= max) return text;
  return `${text.slice(0, max)}\n… (${text.length - max} more characters; see details)`;
}

/** `1536` → `1.5 KiB`; binary units, one decimal. */
export function bytes(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let v = n;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${v} B` : `${v.toFixed(1)} ${units[i]}`;
}

/** `93784` seconds → `1d 2h 3m`. */
export function duration(secs: number): string {
  const s = Math.max(0, Math.floor(secs));
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d) return `${d}d ${h}h ${m}m`;
  if (h) return `${h}h ${m}m`;
  return `${m}m ${s % 60}s`;
}

/** Rows of cells (any values; null and undefined print empty) → aligned plain-text table, header first. */
export function table(header: string[], rows: unknown[][]): string {
  const all = [header, ...rows].map((r) => r.map((c) => (c === null || c === undefined ? "" : String(c))));
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? "").length)));
  return all.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()).join("\n");
}

/** A short one-line rendering of any JSON value. */
export function brief(v: unknown, max = 200): string {
  const s = typeof v === "string" ? v : JSON.stringify(v);
  return s.length > max ? `${s.slice(0, max)}…` : s;
}
