//! `agentctl incidents …`: agentd's incident workspaces (folded from `incident.*` ledger events).

use clap::Subcommand;
use osmoda_client::Client;
use serde_json::{json, Value};

use crate::output::{self, cell, Outcome};

#[derive(Subcommand, Debug)]
pub enum IncidentCmd {
    /// Incidents, oldest first (all, or only open / resolved ones).
    #[command(after_help = "Examples:
  agentctl incidents list
  agentctl incidents list --status open")]
    List {
        /// `open` or `resolved`.
        #[arg(long, value_parser = ["open", "resolved"])]
        status: Option<String>,
    },
    /// One incident with its steps.
    Show {
        /// Incident id.
        id: String,
    },
    /// Resolve an open incident.
    #[command(after_help = "Example:
  agentctl incidents resolve 12 --reason \"sshd restarted; the disk was full, cleaned /var/log\"")]
    Resolve {
        /// Incident id.
        id: String,
        /// Why / how it was resolved (the resolution summary).
        #[arg(long, short = 'm')]
        reason: String,
    },
}

/// Run one `incidents` subcommand.
///
/// # Errors
/// The daemon's refusal or an unreachable agentd.
pub async fn run(agent: &Client, cmd: IncidentCmd) -> anyhow::Result<Outcome> {
    Ok(match cmd {
        IncidentCmd::List { status } => {
            let q = status
                .map(|s| format!("?status={}", output::urlencode(&s)))
                .unwrap_or_default();
            Outcome::new(
                agent.get(&format!("/incidents{q}")).await?.ok_json()?,
                table,
            )
        }
        IncidentCmd::Show { id } => Outcome::new(
            agent
                .get(&format!("/incident/{}", output::urlencode(&id)))
                .await?
                .ok_json()?,
            one,
        ),
        IncidentCmd::Resolve { id, reason } => Outcome::new(
            agent
                .post(
                    &format!("/incident/{}/resolve", output::urlencode(&id)),
                    &json!({ "summary": reason }),
                )
                .await?
                .ok_json()?,
            one,
        ),
    })
}

const HEADER: &str = "ID      STATUS    CREATED                 STEPS  NAME\n";

fn row(i: &Value) -> String {
    format!(
        "{:<6}  {:<8}  {:<22}  {:>5}  {}\n",
        cell(&i["id"]),
        cell(&i["status"]),
        cell(&i["created_at"]),
        i["steps"].as_array().map_or(0, Vec::len),
        cell(&i["name"])
    )
}

/// Incidents as a table with a header.
pub fn table(v: &Value) -> String {
    let mut out = HEADER.to_string();
    for i in v.as_array().into_iter().flatten() {
        out.push_str(&row(i));
    }
    out
}

/// One incident: its row, who opened it, every step, and the resolution.
pub fn one(i: &Value) -> String {
    let mut out = format!("{HEADER}{}created by {}\n", row(i), cell(&i["created_by"]));
    for s in i["steps"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  {}  {}  {} → {}\n",
            cell(&s["ts"]),
            cell(&s["actor"]),
            cell(&s["action"]),
            cell(&s["result"])
        ));
    }
    if i["status"] == "resolved" {
        out.push_str(&format!(
            "resolved {}: {}\n",
            cell(&i["resolved_at"]),
            cell(&i["resolution"])
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incident_views_have_headers_and_no_null() {
        let i = json!({"id": 7, "name": "switch 3 rolled back", "status": "open", "created_at": "t0",
            "created_by": "osmoda-watch", "steps": [{"ts": "t1", "actor": "a", "action": "restart", "result": "ok"}],
            "resolved_at": null, "resolution": null});
        let t = table(&json!([i]));
        assert!(t.starts_with("ID      STATUS"), "{t}");
        assert!(t.contains("7       open"), "{t}");
        let o = one(&i);
        assert!(o.contains("restart → ok") && !o.contains("null"), "{o}");
    }
}
