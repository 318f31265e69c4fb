//! `agentctl switch …`: SafeSwitch on osmoda-watch, with exit codes a script can trust.

use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Subcommand;
use osmoda_client::{Client, ClientError};
use serde_json::{json, Value};

use crate::output::{self, cell, switch_exit, Outcome};

#[derive(Subcommand, Debug)]
pub enum SwitchCmd {
    /// Apply a generation with health gates; rolls back by itself if a check fails.
    ///
    /// Without --wait it prints the accepted switch and exits 0; with --wait it follows the
    /// switch to its end and exits 0 only if it committed (3 rolled back, 4 failed).
    #[command(after_help = "Examples:
  agentctl switch begin --wait --reason \"apply the latest generation\"
  agentctl switch begin --wait --ttl 30 --check '{\"type\":\"agentd\"}' --reason \"agentd must stay up\"
  agentctl switch begin --generation HEAD~1 --reason \"back to yesterday\"")]
    Begin {
        /// Generation (commit) to apply; the tree's HEAD by default.
        #[arg(long)]
        generation: Option<String>,
        /// Seconds to probe health checks before committing (the daemon's default otherwise).
        #[arg(long)]
        ttl: Option<u64>,
        /// A health check as JSON, e.g. '{"type":"tcp","host":"127.0.0.1","port":22}' (repeatable);
        /// added to the default checks.
        #[arg(long = "check")]
        checks: Vec<String>,
        /// Why: what this switch is for (recorded as its plan).
        #[arg(long, visible_alias = "plan", short = 'm')]
        reason: Option<String>,
        /// Follow the switch until it commits, rolls back or fails.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up waiting after this many seconds (exit 5; the switch goes on).
        #[arg(long, requires = "wait")]
        timeout: Option<u64>,
        /// Approval ticket for a destructive switch to an older generation (the refusal names it
        /// and the command a person runs to approve it).
        #[arg(long)]
        approval: Option<String>,
    },
    /// Show one switch; exits 0 only if it committed (3 rolled back, 4 failed, 5 not finished).
    #[command(after_help = "Examples:
  agentctl switch status 3
  agentctl switch status 3 --wait && echo deployed")]
    Status {
        /// Switch id.
        id: String,
        /// Wait until the switch has finished.
        #[arg(long)]
        wait: bool,
        /// With --wait: give up after this many seconds (exit 5).
        #[arg(long, requires = "wait")]
        timeout: Option<u64>,
    },
    /// Commit a probing switch before its TTL ends; exits 0 once it committed.
    Commit {
        /// Switch id.
        id: String,
    },
    /// Roll a running switch back now; exits 0 once it rolled back (4 if the rollback failed).
    #[command(after_help = "Example:
  agentctl switch rollback 3 --reason \"the web UI is broken\"")]
    Rollback {
        /// Switch id.
        id: String,
        /// Why (recorded in the revert commit and the ledger).
        #[arg(long, short = 'm')]
        reason: Option<String>,
    },
    /// Past switches, newest first.
    History,
    /// What would change between the deployed and a candidate generation, as a diff.
    #[command(after_help = "Examples:
  agentctl switch preview
  agentctl switch preview --generation HEAD~1
  agentctl --json switch preview")]
    Preview {
        /// Candidate generation; the tree's HEAD by default.
        #[arg(long)]
        generation: Option<String>,
    },
}

/// How often `--wait` asks osmoda-watch for the switch's state.
const POLL: Duration = Duration::from_millis(200);
/// How long `--wait` tolerates osmoda-watch being unreachable (it may be restarting; the switch
/// survives that and finishes).
const UNREACHABLE_GRACE: Duration = Duration::from_secs(30);

/// Run one `switch` subcommand.
///
/// # Errors
/// The daemon's refusal, an unreachable daemon, or a `--check` that is not JSON.
pub async fn run(watch: &Client, cmd: SwitchCmd) -> anyhow::Result<Outcome> {
    Ok(match cmd {
        SwitchCmd::Begin {
            generation,
            ttl,
            checks,
            reason,
            wait: follow,
            timeout,
            approval,
        } => {
            let checks: Vec<Value> = checks
                .iter()
                .map(|c| {
                    serde_json::from_str(c).with_context(|| {
                        format!("--check {c:?} is not JSON; e.g. '{{\"type\":\"agentd\"}}'")
                    })
                })
                .collect::<anyhow::Result<_>>()?;
            let mut body = json!({ "health_checks": checks });
            if let Some(g) = generation {
                body["generation"] = json!(g);
            }
            if let Some(t) = ttl {
                body["ttl_secs"] = json!(t);
            }
            if let Some(r) = reason {
                body["plan"] = json!(r);
            }
            if let Some(a) = approval {
                body["approval"] = json!(a);
            }
            let s = watch.post("/switch/begin", &body).await?.ok_json()?;
            if follow {
                let id = id_of(&s)?;
                session(wait(watch, &id, timeout).await?, "committed")
            } else {
                output::note(&format!(
                    "switch {} accepted; follow it with: agentctl switch status {} --wait",
                    cell(&s["id"]),
                    cell(&s["id"])
                ));
                Outcome::new(s, status_table)
            }
        }
        SwitchCmd::Status {
            id,
            wait: follow,
            timeout,
        } => {
            let s = if follow {
                wait(watch, &id, timeout).await?
            } else {
                watch
                    .get(&format!("/switch/status/{}", output::urlencode(&id)))
                    .await?
                    .ok_json()?
            };
            session(s, "committed")
        }
        SwitchCmd::Commit { id } => session(
            watch
                .post(
                    &format!("/switch/commit/{}", output::urlencode(&id)),
                    &json!({}),
                )
                .await?
                .ok_json()?,
            "committed",
        ),
        SwitchCmd::Rollback { id, reason } => {
            let body = reason.map_or_else(|| json!({}), |r| json!({ "reason": r }));
            session(
                watch
                    .post(
                        &format!("/switch/rollback/{}", output::urlencode(&id)),
                        &body,
                    )
                    .await?
                    .ok_json()?,
                "rolled-back",
            )
        }
        SwitchCmd::History => Outcome::new(
            output::all_pages(watch, "/switch/history", "before_id", |s| {
                s["id"].as_u64().map(|id| id.to_string())
            })
            .await?,
            history_table,
        ),
        SwitchCmd::Preview { generation } => {
            let q = generation
                .map(|g| format!("?generation={}", output::urlencode(&g)))
                .unwrap_or_default();
            Outcome::new(
                watch.get(&format!("/switch/preview{q}")).await?.ok_json()?,
                preview_text,
            )
        }
    })
}

pub(crate) fn id_of(s: &Value) -> anyhow::Result<String> {
    match &s["id"] {
        Value::Number(n) => Ok(n.to_string()),
        Value::String(s) => Ok(s.clone()),
        other => anyhow::bail!("osmoda-watch answered a switch without an id: {other}"),
    }
}

/// One session, with the exit code for the state the command asked for.
fn session(s: Value, want: &str) -> Outcome {
    let state = s["state"].as_str().unwrap_or_default().to_string();
    let mut o = Outcome::new(s, status_table);
    o.code = switch_exit(&state, want);
    o
}

/// Polls the switch until it reaches a terminal state, reporting each new state on stderr.
/// Returns the final session; with `timeout`, the last one seen when it expires.
pub(crate) async fn wait(watch: &Client, id: &str, timeout: Option<u64>) -> anyhow::Result<Value> {
    let deadline = timeout.map(|t| Instant::now() + Duration::from_secs(t));
    let path = format!("/switch/status/{}", output::urlencode(id));
    let mut last_state = String::new();
    let mut last_seen: Option<Value> = None;
    let mut unreachable_since: Option<Instant> = None;
    loop {
        match watch.get(&path).await {
            Ok(r) => {
                unreachable_since = None;
                let s = r.ok_json()?;
                let state = s["state"].as_str().unwrap_or_default().to_string();
                if state != last_state {
                    output::note(&format!("switch {id}: {}", output::escape(&state)));
                    last_state.clone_from(&state);
                }
                let done = matches!(state.as_str(), "committed" | "rolled-back" | "failed");
                if done {
                    return Ok(s);
                }
                last_seen = Some(s);
            }
            Err(e @ (ClientError::Connect { .. } | ClientError::Http { .. })) => {
                let since = *unreachable_since.get_or_insert_with(Instant::now);
                if since.elapsed() > UNREACHABLE_GRACE {
                    return Err(anyhow::Error::new(e).context(format!(
                        "osmoda-watch unreachable for {} s while waiting for switch {id}; \
                         it finishes the switch when it is back: agentctl switch status {id} --wait",
                        UNREACHABLE_GRACE.as_secs()
                    )));
                }
            }
            Err(e) => return Err(e.into()),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            output::note(&format!(
                "switch {id}: still {} after {} s; it goes on (agentctl switch status {id} --wait)",
                output::escape(&last_state),
                timeout.unwrap_or_default()
            ));
            return Ok(last_seen.unwrap_or(Value::Null));
        }
        tokio::time::sleep(POLL).await;
    }
}

fn short(v: &Value) -> String {
    match v.as_str() {
        Some(s) => s.chars().take(12).collect(),
        None => "-".into(),
    }
}

/// An RFC 3339 time to the second, as `2026-01-01 12:00:00Z`.
fn time(v: &Value) -> String {
    match v.as_str() {
        Some(t) if t.len() >= 19 && t.is_char_boundary(19) => {
            format!("{}Z", t[..19].replacen('T', " ", 1))
        }
        Some(t) => t.to_string(),
        None => "-".into(),
    }
}

/// Plan for a switch that is running or committed, the reason for one that did not.
fn why(r: &Value) -> String {
    let reason = r["reason"].as_str().filter(|s| !s.is_empty());
    let plan = r["plan"].as_str().filter(|s| !s.is_empty());
    match (r["state"].as_str(), reason, plan) {
        (Some("rolled-back" | "failed" | "rolling-back"), Some(why), _) => why.to_string(),
        (_, _, Some(plan)) => plan.to_string(),
        (_, Some(why), None) => why.to_string(),
        _ => "-".into(),
    }
}

const HEADER: &str = "ID    STATE         GENERATION    PREVIOUS      ORIGIN            CREATED               PLAN / REASON\n";

fn row(r: &Value) -> String {
    let first_line = why(r).lines().next().unwrap_or_default().to_string();
    format!(
        "{:<4}  {:<12}  {:<12}  {:<12}  {:<16}  {:<20}  {}\n",
        cell(&r["id"]),
        cell(&r["state"]),
        short(&r["generation"]),
        short(&r["previous_generation"]),
        cell(&r["origin"]),
        time(&r["created_at"]),
        first_line
    )
}

/// Switch history as a table with a header; `-` for what is not there.
pub fn history_table(v: &Value) -> String {
    let mut out = HEADER.to_string();
    for r in v.as_array().into_iter().flatten() {
        out.push_str(&row(r));
    }
    out
}

/// One switch: the table row, then its checks, reason, revert commit, incident and warnings.
pub fn status_table(r: &Value) -> String {
    if r.is_null() {
        return String::new();
    }
    let mut out = format!("{HEADER}{}", row(r));
    let checks = r["checks"].as_array().filter(|c| !c.is_empty());
    if let Some(checks) = checks {
        out.push_str("checks:\n");
        for c in checks {
            out.push_str(&format!(
                "  {:<4}  {}  ({})\n",
                if c["ok"] == json!(true) { "ok" } else { "FAIL" },
                cell(&c["check"]),
                cell(&c["detail"])
            ));
        }
    }
    for (label, key) in [
        ("reason", "reason"),
        ("revert commit", "revert_commit"),
        ("incident", "incident_id"),
    ] {
        if let Some(v) = r[key].as_str().filter(|s| !s.is_empty()) {
            out.push_str(&format!("{label}: {v}\n"));
        }
    }
    for w in r["warnings"].as_array().into_iter().flatten() {
        out.push_str(&format!("warning: {}\n", cell(w)));
    }
    out
}

/// `/switch/preview` as a readable diff with a short header.
pub fn preview_text(v: &Value) -> String {
    let mut out = match v["from"].as_str() {
        Some(from) => format!(
            "from {} (deployed)\nto   {}\n",
            short(&json!(from)),
            short(&v["to"])
        ),
        None => format!(
            "nothing deployed yet: everything in {} is new\n",
            short(&v["to"])
        ),
    };
    let files: Vec<String> = v["files"]
        .as_array()
        .into_iter()
        .flatten()
        .map(cell)
        .collect();
    if files.is_empty() && v["from"].is_string() {
        out.push_str("no changes\n");
    } else if !files.is_empty() {
        out.push_str(&format!("files: {}\n", files.join(", ")));
    }
    for c in v["cannot_apply"].as_array().into_iter().flatten() {
        out.push_str(&format!("cannot apply here: {}\n", cell(c)));
    }
    if let Some(d) = v["diff"].as_str().filter(|d| !d.is_empty()) {
        out.push('\n');
        out.push_str(d);
        if !d.ends_with('\n') {
            out.push('\n');
        }
    }
    match &v["closure_diff"] {
        Value::Null => {}
        Value::String(s) if s.is_empty() => {}
        Value::String(s) => out.push_str(&format!("\nclosure diff:\n{s}\n")),
        other => out.push_str(&format!(
            "\nclosure diff:\n{}\n",
            serde_json::to_string_pretty(other).unwrap_or_default()
        )),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_headers_and_no_null() {
        let s = json!({"id": 3, "state": "rolled-back", "generation": "0123456789abcdef", "previous_generation": null,
            "origin": "api", "created_at": "2026-01-01T00:00:00.123456789Z", "plan": "try", "reason": "check failed: tcp x",
            "checks": [{"check": "tcp x", "ok": false, "detail": "refused", "attempts": 1}],
            "revert_commit": "abc", "incident_id": null, "warnings": []});
        let t = status_table(&s);
        assert!(t.starts_with("ID    STATE"), "{t}");
        assert!(!t.contains("null"), "{t}");
        assert!(t.contains("rolled-back   0123456789ab  -"), "{t}");
        assert!(t.contains("  2026-01-01 00:00:00Z  check failed"), "{t}");
        assert!(
            t.contains("check failed: tcp x") && t.contains("FAIL  tcp x  (refused)"),
            "{t}"
        );
        let h = history_table(&json!([s, {"id": 4, "state": "committed", "plan": null}]));
        assert_eq!(h.lines().count(), 3, "{h}");
        assert!(!h.contains("null"), "{h}");
        assert_eq!(history_table(&json!([])), HEADER);
    }

    #[test]
    fn preview_reads_like_a_diff() {
        let p = preview_text(
            &json!({"from": "aaaaaaaaaaaaaaaa", "to": "bbbbbbbbbbbbbbbb", "files": ["osmoda.nix"],
            "diff": "--- a/osmoda.nix\n+++ b/osmoda.nix\n", "cannot_apply": [], "closure_diff": null}),
        );
        assert_eq!(
            p,
            "from aaaaaaaaaaaa (deployed)\nto   bbbbbbbbbbbb\nfiles: osmoda.nix\n\n--- a/osmoda.nix\n+++ b/osmoda.nix\n"
        );
        let first = preview_text(&json!({"from": null, "to": "b", "files": [], "diff": ""}));
        assert_eq!(first, "nothing deployed yet: everything in b is new\n");
    }
}
