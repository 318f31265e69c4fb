//! `agentctl switch …` and `agentctl watchers …`: SafeSwitch and autopilot watchers on osmoda-watch.

use anyhow::Context;
use clap::Subcommand;
use osmoda_client::Client;
use serde_json::{json, Value};

#[derive(Subcommand, Debug)]
pub enum SwitchCmd {
    /// Apply a generation with health gates; rolls back by itself if a check fails.
    Begin {
        /// Generation (commit) to apply; the tree's HEAD by default.
        #[arg(long)]
        generation: Option<String>,
        /// Seconds to probe health checks before committing.
        #[arg(long)]
        ttl: Option<u64>,
        /// A health check as JSON, e.g. '{"type":"tcp","host":"127.0.0.1","port":22}' (repeatable).
        #[arg(long = "check")]
        checks: Vec<String>,
        /// What this switch is for.
        #[arg(long)]
        plan: Option<String>,
    },
    /// Show one switch.
    Status {
        /// Switch id.
        id: String,
    },
    /// Commit a switch before its TTL ends.
    Commit {
        /// Switch id.
        id: String,
    },
    /// Roll a switch back now.
    Rollback {
        /// Switch id.
        id: String,
        /// Why.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Past switches.
    History,
    /// What would change between the running and a candidate generation.
    Preview {
        /// Candidate generation; the tree's HEAD by default.
        #[arg(long)]
        generation: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum WatcherCmd {
    /// Watchers from the active configuration, with their state.
    List,
}

/// Run one `switch` subcommand.
pub async fn run(watch: &Client, cmd: SwitchCmd) -> anyhow::Result<Value> {
    Ok(match cmd {
        SwitchCmd::Begin {
            generation,
            ttl,
            checks,
            plan,
        } => {
            let checks: Vec<Value> = checks
                .iter()
                .map(|c| {
                    serde_json::from_str(c).with_context(|| format!("--check {c:?} is not JSON"))
                })
                .collect::<anyhow::Result<_>>()?;
            let mut body = json!({ "health_checks": checks });
            if let Some(g) = generation {
                body["generation"] = json!(g);
            }
            if let Some(t) = ttl {
                body["ttl_secs"] = json!(t);
            }
            if let Some(p) = plan {
                body["plan"] = json!(p);
            }
            watch.post("/switch/begin", &body).await?.ok_json()?
        }
        SwitchCmd::Status { id } => watch
            .get(&format!("/switch/status/{id}"))
            .await?
            .ok_json()?,
        SwitchCmd::Commit { id } => watch
            .post(&format!("/switch/commit/{id}"), &json!({}))
            .await?
            .ok_json()?,
        SwitchCmd::Rollback { id, reason } => {
            let body = reason.map_or_else(|| json!({}), |r| json!({ "reason": r }));
            watch
                .post(&format!("/switch/rollback/{id}"), &body)
                .await?
                .ok_json()?
        }
        SwitchCmd::History => watch.get("/switch/history").await?.ok_json()?,
        SwitchCmd::Preview { generation } => {
            let q = generation
                .map(|g| format!("?generation={}", crate::output::urlencode(&g)))
                .unwrap_or_default();
            watch.get(&format!("/switch/preview{q}")).await?.ok_json()?
        }
    })
}

/// Run one `watchers` subcommand.
pub async fn run_watchers(watch: &Client, cmd: WatcherCmd) -> anyhow::Result<Value> {
    match cmd {
        WatcherCmd::List => Ok(watch.get("/watcher/list").await?.ok_json()?),
    }
}

/// Watchers as a table.
pub fn watchers_table(v: &Value) -> String {
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let mut out = format!(
        "{:<20}  {:<9}  {:>8}  {:<24}  {}\n",
        "NAME", "CHECK", "INTERVAL", "ACTIONS", "HEALTH / LAST RESULT"
    );
    for w in v.as_array().into_iter().flatten() {
        let actions = w["actions"]
            .as_array()
            .map(|a| a.iter().map(s).collect::<Vec<_>>().join(","))
            .unwrap_or_default();
        out.push_str(&format!(
            "{:<20}  {:<9}  {:>7}s  {:<24}  {}: {}\n",
            s(&w["name"]),
            s(&w["check"]["type"]),
            s(&w["interval_secs"]),
            actions,
            s(&w["status"]["health"]),
            s(&w["status"]["last_detail"])
        ));
    }
    out
}

/// A switch (or a list of them) as readable lines.
pub fn table(v: &Value) -> String {
    let rows: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        Value::Object(o) if o.contains_key("sessions") => o["sessions"]
            .as_array()
            .map(|a| a.iter().collect())
            .unwrap_or_default(),
        other => vec![other],
    };
    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
    let mut out = String::new();
    for r in rows {
        if r.get("state").is_none() {
            out.push_str(&format!(
                "{}\n",
                serde_json::to_string_pretty(r).unwrap_or_default()
            ));
            continue;
        }
        out.push_str(&format!(
            "switch {}  {:<12}  generation {}  (previous {})  {}\n",
            s(&r["id"]),
            s(&r["state"]),
            s(&r["generation"]).chars().take(12).collect::<String>(),
            s(&r["previous_generation"])
                .chars()
                .take(12)
                .collect::<String>(),
            r.get("outcome")
                .or(r.get("reason"))
                .map(s)
                .unwrap_or_default()
        ));
    }
    out
}
