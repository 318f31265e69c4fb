//! Human-readable rendering of daemon responses (tables), with `--json` as the escape hatch;
//! the one place that turns errors into text and outcomes into exit codes.

use std::io::Write;
use std::process::ExitCode;

use osmoda_client::ClientError;
use serde_json::Value;

/// Exit codes of agentctl, documented in `agentctl --help` and docs/api.md ("agentctl").
pub mod code {
    /// Done: the command did what was asked (a switch committed, a rollback rolled back).
    pub const OK: u8 = 0;
    /// An error: the daemon refused (its `error` and `detail` are printed), was unreachable,
    /// or the input was bad. Nothing was changed by a refused request.
    pub const ERROR: u8 = 1;
    /// Usage error: unknown command or flag, missing argument (clap's own code).
    #[allow(dead_code)] // clap exits with it; listed here so the table is complete
    pub const USAGE: u8 = 2;
    /// The switch ended `rolled-back`: the previous system is active again.
    pub const ROLLED_BACK: u8 = 3;
    /// The switch ended `failed`: refused before activation, or a rollback that did not work.
    pub const FAILED: u8 = 4;
    /// The switch has not finished (`switch status` of a running switch, `--timeout` expired).
    pub const RUNNING: u8 = 5;
    /// `verify-ledger`: the hash chain is broken.
    pub const LEDGER_BROKEN: u8 = 6;
}

/// The exit-code table printed at the end of `agentctl --help` (a macro so it can be `concat!`ed).
#[macro_export]
macro_rules! exit_codes_help {
    () => {
        "Exit codes:
  0  done: the switch committed / the asked state was reached
  1  error: the daemon refused (its error and detail are printed) or was unreachable
  2  usage error (unknown command, flag or argument)
  3  the switch rolled back (switch begin --wait, switch status, switch commit, watchers add|remove)
  4  the switch failed (refused before activation, or its rollback failed)
  5  the switch has not finished yet (switch status; --timeout expired)
  6  verify-ledger: the hash chain is broken"
    };
}

/// The exit code for a switch session that was asked to reach `want`
/// (`committed` for begin/status/commit, `rolled-back` for rollback).
pub fn switch_exit(state: &str, want: &str) -> u8 {
    match state {
        s if s == want => code::OK,
        "committed" => code::ERROR,
        "rolled-back" => code::ROLLED_BACK,
        "failed" => code::FAILED,
        _ => code::RUNNING,
    }
}

/// Writes `text` to stdout. A reader that went away (`agentctl … | head`) is not an error:
/// the rest of the output is dropped and agentctl exits normally.
///
/// # Errors
/// Any other write error (a full disk behind a redirect, ...).
pub fn emit(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// Writes `text` and a newline to stderr (progress, refusals). stderr may be the same closed
/// pipe as stdout (`agentctl … 2>&1 | head -1`): like [`emit`], a reader that went away is not an
/// error, and nothing here panics the way `eprintln!` does.
pub fn note(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err
        .write_all(text.as_bytes())
        .and_then(|()| err.write_all(b"\n"))
        .and_then(|()| err.flush());
}

/// Print `v` as JSON or through `table`.
///
/// # Errors
/// As [`emit`].
pub fn print(v: &Value, json: bool, table: fn(&Value) -> String) -> std::io::Result<()> {
    if json {
        emit(&format!(
            "{}\n",
            serde_json::to_string_pretty(v).unwrap_or_default()
        ))
    } else {
        emit(&screen_safe(&table(v)))
    }
}

/// Whether `c` must not reach a terminal raw: control characters (ESC, CR, backspace, ...,
/// newline too) and the Unicode bidirectional overrides that reorder what is shown.
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        c => out.push_str(&format!("\\u{{{:x}}}", u32::from(c))),
    }
}

/// `text` with every control character shown as a visible escape (`\n`, `\r`, `\t`,
/// `\u{1b}`), so text from the agent (a ticket's detail, a reason, a watcher's output) cannot
/// erase, move or fake rows on a person's screen. Every table cell goes through it.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if unsafe_char(c) {
            escape_char(c, &mut out);
        } else {
            out.push(c);
        }
    }
    out
}

/// A rendered table as it may reach the screen: its own line breaks kept, every other control
/// character escaped as in [`escape`] (the backstop for a cell that was not escaped).
fn screen_safe(table: &str) -> String {
    table.split('\n').map(escape).collect::<Vec<_>>().join("\n")
}

/// The text of an error for stderr: a daemon's refusal shows its `error` **and** its `detail`
/// (a string as is, structured detail as compact JSON, hints on their own lines).
pub fn error_text(e: &anyhow::Error) -> String {
    let Some(ClientError::Api {
        status,
        error,
        detail,
    }) = e.chain().find_map(|c| c.downcast_ref::<ClientError>())
    else {
        return format!("agentctl: {e:#}");
    };
    let mut out = format!("agentctl: {error} (HTTP {status})");
    match detail {
        Value::Null => {}
        Value::String(d) if d.is_empty() || d == error => {}
        Value::String(d) => out.push_str(&format!("\n  {d}")),
        Value::Object(m) => {
            for (k, v) in m {
                let v = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                out.push_str(&format!("\n  {k}: {v}"));
            }
        }
        other => out.push_str(&format!("\n  {other}")),
    }
    screen_safe(&out)
}

/// What a command produced: the JSON for `--json`, how to render it, and the exit code.
pub struct Outcome {
    /// The daemon's answer (printed as is with `--json`).
    pub value: Value,
    /// The readable rendering.
    pub table: fn(&Value) -> String,
    /// One of [`code`].
    pub code: u8,
}

impl Outcome {
    /// A successful outcome (exit 0).
    pub fn new(value: Value, table: fn(&Value) -> String) -> Outcome {
        Outcome {
            value,
            table,
            code: code::OK,
        }
    }

    /// Prints the outcome and returns its exit code.
    ///
    /// # Errors
    /// As [`emit`].
    pub fn finish(self, json: bool) -> std::io::Result<ExitCode> {
        print(&self.value, json, self.table)?;
        Ok(ExitCode::from(self.code))
    }
}

/// A cell: strings with control characters escaped ([`escape`]), `null` as `-`, other JSON
/// compactly.
pub fn cell(v: &Value) -> String {
    s(v)
}

/// Every item of a paged list (`/switch/history`, `/watcher/list`): asks for pages of
/// [`PAGE`] items, each after the `cursor` of the previous page's last item (`cursor_param`
/// names the query parameter), until a page comes back short.
///
/// # Errors
/// The daemon's refusal, an unreachable daemon, or a page that is not a JSON array.
pub async fn all_pages(
    client: &osmoda_client::Client,
    path: &str,
    cursor_param: &str,
    cursor: impl Fn(&Value) -> Option<String>,
) -> anyhow::Result<Value> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let q = match &after {
            Some(c) => format!("{path}?limit={PAGE}&{cursor_param}={}", urlencode(c)),
            None => format!("{path}?limit={PAGE}"),
        };
        let page = match client.get(&q).await?.ok_json()? {
            Value::Array(items) => items,
            other => anyhow::bail!("{path} answered {other} instead of a list"),
        };
        let full = page.len() >= PAGE;
        let next = page.last().and_then(&cursor);
        all.extend(page);
        match next.filter(|_| full) {
            Some(c) if Some(&c) != after.as_ref() => after = Some(c),
            _ => return Ok(Value::Array(all)),
        }
    }
}

/// Page size [`all_pages`] asks for (the daemons' largest).
pub const PAGE: usize = 1000;

/// Percent-encode a query value.
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'*' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => escape(s),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn gib(v: &Value) -> String {
    format!("{:.1} GiB", v.as_f64().unwrap_or(0.0) / (1u64 << 30) as f64)
}

/// `health` as a few lines.
pub fn health(v: &Value) -> String {
    format!(
        "cpu     {}% of {} cores\nram     {}% used ({} available of {})\ndisk /  {}% used ({} available)\nload    {}\nuptime  {:.0} s\n",
        s(&v["cpu"]["usage_percent"]), s(&v["cpu"]["cores"]),
        s(&v["ram"]["used_percent"]), gib(&v["ram"]["available_bytes"]), gib(&v["ram"]["total_bytes"]),
        s(&v["disk"]["used_percent"]), gib(&v["disk"]["available_bytes"]),
        v["load"].as_array().map(|l| l.iter().map(s).collect::<Vec<_>>().join(" ")).unwrap_or_default(),
        v["uptime"].as_f64().unwrap_or(0.0),
    )
}

fn truncate(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// Events as a table, oldest first.
pub fn events(v: &Value) -> String {
    let mut rows: Vec<&Value> = v.as_array().map(|a| a.iter().collect()).unwrap_or_default();
    rows.reverse();
    let mut out = format!(
        "{:>6}  {:<24}  {:<24}  {:<36}  {}\n",
        "ID", "TIME", "TYPE", "ACTOR", "PAYLOAD"
    );
    for e in rows {
        out.push_str(&format!(
            "{:>6}  {:<24}  {:<24}  {:<36}  {}\n",
            s(&e["id"]),
            s(&e["ts"]),
            truncate(&s(&e["type"]), 24),
            truncate(&s(&e["actor"]), 36),
            truncate(&s(&e["payload"]), 60)
        ));
    }
    out
}

/// Who wrote a ticket's words, by the `origin` agentd recorded when it opened the ticket: agentd's
/// approval gate and each daemon that opens tickets (agentd's `/daemon/ticket/open`) describe
/// the effect they computed from the operation they verified, so their lines are shown as
/// theirs. Any other origin — `agent` (`POST /approval/request`), or one this agentctl does not
/// know — is the agent's own text, never shown as a daemon's account.
pub fn ticket_author(origin: &Value) -> Option<&'static str> {
    match origin.as_str()? {
        "gate" => Some("agentd"),
        "keyd" => Some("osmoda-keyd"),
        _ => None,
    }
}

/// Approval tickets as a table; each row's words are labelled with who wrote them
/// ([`ticket_author`]).
pub fn approvals(v: &Value) -> String {
    let mut out = format!(
        "{:<32}  {:<8}  {:<20}  {}\n",
        "ID", "STATUS", "EXPIRES", "OPERATION / DETAIL"
    );
    for t in v.as_array().into_iter().flatten() {
        let effect: Vec<String> = t["effect"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(escape)
            .collect();
        let what = match ticket_author(&t["origin"]) {
            // One line per effect, in the words of whoever computed it.
            Some(author) if !effect.is_empty() => format!(
                "[{author}'s words] {}",
                effect.join(&format!("\n{:<66}", ""))
            ),
            Some(author) => format!("[{author}'s words] {}", s(&t["detail"])),
            // The agent wrote the operation and the detail: say so, so no one mistakes them
            // for a daemon's own account of the effect.
            None => format!(
                "[agent's words] {} — {}",
                truncate(&t["operation"].to_string(), 60),
                s(&t["detail"])
            ),
        };
        out.push_str(&format!(
            "{:<32}  {:<8}  {:<20}  {what}\n",
            s(&t["id"]),
            s(&t["status"]),
            s(&t["expires_at"]),
        ));
    }
    out
}

/// Generations as `git log --oneline`-like lines.
pub fn generations(v: &Value) -> String {
    let mut out = String::new();
    for g in v.as_array().into_iter().flatten() {
        let tags = g["tags"]
            .as_array()
            .map(|t| t.iter().map(s).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        out.push_str(&format!(
            "{}  {}  {:<28}  {}{}\n",
            s(&g["short"]),
            s(&g["timestamp"]),
            truncate(&s(&g["author"]["name"]), 28),
            s(&g["reason"]).lines().next().unwrap_or(""),
            if tags.is_empty() {
                String::new()
            } else {
                format!("  [{tags}]")
            }
        ));
    }
    out
}

/// The result of an edit that landed (or of `config init`).
pub fn landed(v: &Value) -> String {
    let g = &v["generation"];
    let mut out = format!(
        "generation {}  {}\n",
        s(&g["short"]),
        s(&g["reason"]).lines().next().unwrap_or("")
    );
    if let Some(dir) = v["dir"].as_str() {
        out.push_str(&format!("tree at {dir}\n"));
    }
    if v["event_id"].is_number() {
        out.push_str(&format!(
            "ledger events {} (requested) and {} (committed)\n",
            s(&v["requested_event"]),
            s(&v["event_id"])
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct_and_match_the_asked_state() {
        assert_eq!(switch_exit("committed", "committed"), code::OK);
        assert_eq!(switch_exit("rolled-back", "committed"), code::ROLLED_BACK);
        assert_eq!(switch_exit("failed", "committed"), code::FAILED);
        assert_eq!(switch_exit("probing", "committed"), code::RUNNING);
        assert_eq!(switch_exit("rolled-back", "rolled-back"), code::OK);
        assert_eq!(switch_exit("committed", "rolled-back"), code::ERROR);
        let all = [
            code::OK,
            code::ERROR,
            code::USAGE,
            code::ROLLED_BACK,
            code::FAILED,
            code::RUNNING,
            code::LEDGER_BROKEN,
        ];
        for (i, c) in all.iter().enumerate() {
            assert!(
                exit_codes_help!().contains(&format!("\n  {c}  ")),
                "{c} undocumented"
            );
            assert!(!all[i + 1..].contains(c), "{c} used twice");
        }
    }

    #[test]
    fn daemon_errors_show_error_and_detail() {
        let e = |detail: Value| {
            error_text(&anyhow::Error::new(ClientError::Api {
                status: 400,
                error: "bad_request".into(),
                detail,
            }))
        };
        assert_eq!(
            e(Value::String("bad request: ttl_secs 9999 is above the maximum 3600".into())),
            "agentctl: bad_request (HTTP 400)\n  bad request: ttl_secs 9999 is above the maximum 3600"
        );
        assert_eq!(e(Value::Null), "agentctl: bad_request (HTTP 400)");
        assert_eq!(
            e(serde_json::json!({"hint": "use --nix", "valid": ["a", "b"]})),
            "agentctl: bad_request (HTTP 400)\n  hint: use --nix\n  valid: [\"a\",\"b\"]"
        );
        let other = anyhow::anyhow!("no ledger at /x");
        assert_eq!(error_text(&other), "agentctl: no ledger at /x");
    }

    #[test]
    fn approvals_label_each_tickets_words_by_who_wrote_them() {
        use agentd::api::approvals::{AGENT, GATE, KEYD};
        let row = |id: &str, origin: Value| {
            serde_json::json!({"id": id, "status": "pending", "expires_at": "x", "origin": origin,
                "operation": {"op": "wallet.delete"}, "detail": "harmless",
                "effect": ["alice demoted", "bob demoted"]})
        };
        // Every origin agentd records, plus one it may add later and none at all.
        let v = Value::Array(vec![
            row("g", GATE.into()),
            row("k", KEYD.into()),
            row("a", AGENT.into()),
            row("m", "mesh".into()),
            row("n", Value::Null),
        ]);
        let out = approvals(&v);
        let line = |id: &str| {
            out.lines()
                .find(|l| l.starts_with(&format!("{id} ")))
                .unwrap_or_else(|| panic!("row {id}: {out}"))
        };
        // A daemon's ticket: its own effect lines under its own name, never "[agent's words]".
        for (id, author) in [("g", "[agentd's words] "), ("k", "[osmoda-keyd's words] ")] {
            let l = line(id);
            assert!(
                l.ends_with(&format!("{author}alice demoted")) && !l.contains("agent's words"),
                "{out}"
            );
        }
        assert!(
            out.contains(&format!("\n{:<66}bob demoted\n", "")),
            "further effect lines are aligned under the first: {out}"
        );
        // The agent's ticket (and any origin agentctl cannot attribute): the agent's text,
        // never the effect lines, which it may have written to look like a daemon's.
        for id in ["a", "m", "n"] {
            let l = line(id);
            assert!(
                l.contains("[agent's words] {\"op\":\"wallet.delete\"} — harmless")
                    && !l.contains("demoted"),
                "{out}"
            );
        }
        // A daemon's ticket without effect lines shows its detail, still under its name.
        let mut bare = row("k", KEYD.into());
        bare["effect"] = serde_json::json!([]);
        let out = approvals(&Value::Array(vec![bare]));
        assert!(out.contains("[osmoda-keyd's words] harmless"), "{out}");
    }

    #[test]
    fn control_characters_in_cells_are_shown_escaped() {
        let evil = "ok\u{1b}[2K\rfake row\nID  approved\u{202e}x\u{7}";
        assert_eq!(
            escape(evil),
            "ok\\u{1b}[2K\\rfake row\\nID  approved\\u{202e}x\\u{7}"
        );
        assert_eq!(escape("plain é ✓"), "plain é ✓");
        let v = serde_json::json!([{"id": "a", "status": "pending", "expires_at": "x",
            "origin": "agent", "operation": {"op": 1}, "detail": evil, "effect": []}]);
        let out = approvals(&v);
        assert_eq!(out.lines().count(), 2, "one header, one row: {out}");
        assert!(!out.chars().any(|c| unsafe_char(c) && c != '\n'), "{out:?}");
        // Every table goes through the same rendering: events, generations, incidents...
        let ev = serde_json::json!([{"id": 1, "ts": "t", "type": "x\ry", "actor": "a",
            "payload": evil}]);
        assert_eq!(events(&ev).lines().count(), 2, "{}", events(&ev));
        let gens = serde_json::json!([{"short": "abc", "timestamp": "t",
            "author": {"name": "n\u{1b}[1A"}, "reason": "r", "tags": ["t\u{8}"]}]);
        assert!(!generations(&gens).contains('\u{1b}') && !generations(&gens).contains('\u{8}'));
        // The backstop keeps a table's own line breaks and escapes the rest.
        assert_eq!(screen_safe("a\u{1b}b\nc\r\n"), "a\\u{1b}b\nc\\r\n");
    }

    #[test]
    fn urlencode_escapes_reserved_bytes() {
        assert_eq!(urlencode("a b&c=d/é"), "a%20b%26c%3Dd%2F%C3%A9");
        assert_eq!(urlencode("switch.*"), "switch.*");
    }
}
