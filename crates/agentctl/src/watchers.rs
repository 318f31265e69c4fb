//! `agentctl watchers …`: autopilot watchers on osmoda-watch. Adding or removing one is an edit
//! of `services.osmoda.watch.watchers.<name>` (a generation) applied by a SafeSwitch.

use anyhow::Context;
use clap::Subcommand;
use osmoda_client::Client;
use serde_json::{json, Value};

use crate::output::{self, cell, switch_exit, Outcome};

#[derive(Subcommand, Debug)]
pub enum WatcherCmd {
    /// Watchers from the active configuration, with their state.
    List,
    /// Add a watcher: one generation, applied by a SafeSwitch; exits 0 once the switch committed.
    #[command(after_help = "Examples:
  agentctl watchers add tmp-space --check '{\"type\":\"disk\",\"path\":\"/tmp\",\"min_free_percent\":5}' --interval 60 --reason \"keep /tmp usable\"
  agentctl watchers add alive --check '{\"type\":\"agentd\"}' --action restart --action notify --reason \"watch agentd\"")]
    Add {
        /// Name (letters, digits, '-' and '_'; becomes services.osmoda.watch.watchers.<name>).
        name: String,
        /// The health check as JSON (snake_case keys, as in docs/api.md).
        #[arg(long)]
        check: String,
        /// Seconds between checks.
        #[arg(long, default_value_t = 30)]
        interval: u64,
        /// What to do when the check fails: restart, rollback, notify (repeatable).
        #[arg(long = "action", default_value = "notify")]
        actions: Vec<String>,
        /// Seconds the SafeSwitch probes before committing.
        #[arg(long)]
        ttl: Option<u64>,
        /// Why: the commit message of the generation.
        #[arg(long, short = 'm')]
        reason: String,
    },
    /// Remove a watcher: one generation, applied by a SafeSwitch; exits 0 once it committed.
    #[command(after_help = "Example:
  agentctl watchers remove tmp-space --reason \"/tmp is a tmpfs now\"")]
    Remove {
        /// Watcher name.
        name: String,
        /// Why: the commit message of the generation.
        #[arg(long, short = 'm')]
        reason: String,
    },
}

/// Run one `watchers` subcommand.
///
/// # Errors
/// The daemon's refusal, an unreachable daemon, or a `--check` that is not JSON.
pub async fn run(watch: &Client, cmd: WatcherCmd) -> anyhow::Result<Outcome> {
    match cmd {
        WatcherCmd::List => Ok(Outcome::new(
            output::all_pages(watch, "/watcher/list", "after", |w| {
                w["name"].as_str().map(str::to_string)
            })
            .await?,
            table,
        )),
        WatcherCmd::Add {
            name,
            check,
            interval,
            actions,
            ttl,
            reason,
        } => {
            let check: Value = serde_json::from_str(&check).with_context(|| {
                format!("--check {check:?} is not JSON; e.g. '{{\"type\":\"agentd\"}}'")
            })?;
            let mut body = json!({ "name": name, "check": check, "interval_secs": interval,
                "actions": actions, "reason": reason });
            if let Some(t) = ttl {
                body["ttl_secs"] = json!(t);
            }
            applied(watch, watch.post("/watcher/add", &body).await?.ok_json()?).await
        }
        WatcherCmd::Remove { name, reason } => {
            let v = watch
                .delete(&format!(
                    "/watcher/remove/{}?reason={}",
                    output::urlencode(&name),
                    output::urlencode(&reason)
                ))
                .await?
                .ok_json()?;
            applied(watch, v).await
        }
    }
}

/// `{config, switch}` from add/remove: follows the switch to its end; exit 0 only when it
/// committed.
async fn applied(watch: &Client, mut v: Value) -> anyhow::Result<Outcome> {
    let id = crate::switch::id_of(&v["switch"])?;
    v["switch"] = crate::switch::wait(watch, &id, None).await?;
    let state = v["switch"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut o = Outcome::new(v, applied_text);
    o.code = switch_exit(&state, "committed");
    Ok(o)
}

fn applied_text(v: &Value) -> String {
    let g = &v["config"]["generation"];
    format!(
        "generation {}  {}\nswitch {}: {}{}\n",
        cell(&g["short"]),
        cell(&g["reason"]).lines().next().unwrap_or_default(),
        cell(&v["switch"]["id"]),
        cell(&v["switch"]["state"]),
        v["switch"]["reason"]
            .as_str()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    )
}

/// Watchers as a table.
pub fn table(v: &Value) -> String {
    let mut out = format!(
        "{:<20}  {:<9}  {:>8}  {:<24}  {}\n",
        "NAME", "CHECK", "INTERVAL", "ACTIONS", "HEALTH / LAST RESULT"
    );
    for w in v.as_array().into_iter().flatten() {
        let actions = w["actions"]
            .as_array()
            .map(|a| a.iter().map(cell).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<20}  {:<9}  {:>7}s  {:<24}  {}: {}\n",
            cell(&w["name"]),
            cell(&w["check"]["type"]),
            cell(&w["interval_secs"]),
            actions,
            cell(&w["status"]["health"]),
            cell(&w["status"]["last_detail"])
        ));
    }
    out
}
