//! `agentctl backup …`: agentd's backups (`POST /backup/create`, `GET /backup/list`,
//! `POST /backup/restore`). A restore is refused with an approval ticket first; a person
//! approves it (`agentctl approvals approve ID`) and runs the restore again with `--approval`.

use clap::Subcommand;
use osmoda_client::Client;
use serde_json::{json, Value};

use crate::output::{cell, Outcome};

#[derive(Subcommand, Debug)]
pub enum BackupCmd {
    /// Archive the ledger, the config tree, the daemons' state and the memory dir.
    #[command(after_help = "Example:
  agentctl backup create -m \"before the kernel upgrade\"")]
    Create {
        /// Why (recorded with the backup.created event).
        #[arg(long, short = 'm', default_value = "")]
        reason: String,
    },
    /// Backups, newest first.
    List,
    /// Restore a backup (needs an approved ticket: the first run prints the one to approve).
    #[command(after_help = "Examples:
  agentctl backup restore 20261130T031500123Z-1a2b3c4d
  agentctl backup restore 20261130T031500123Z-1a2b3c4d --approval 5f0c…")]
    Restore {
        /// Backup id (`agentctl backup list`).
        id: String,
        /// The approved ticket for this restore.
        #[arg(long)]
        approval: Option<String>,
        /// Restore even though agentd's checks refuse it (another ledger history, or one
        /// cosigned by witnesses past the backup); the ticket is bound to this flag.
        #[arg(long)]
        force: bool,
    },
}

/// Run one `backup` subcommand.
///
/// # Errors
/// The daemon's refusal or an unreachable agentd.
pub async fn run(agent: &Client, cmd: BackupCmd) -> anyhow::Result<Outcome> {
    Ok(match cmd {
        BackupCmd::Create { reason } => Outcome::new(
            agent
                .post("/backup/create", &json!({ "reason": reason }))
                .await?
                .ok_json()?,
            |v| table(&json!({ "backups": [v] })),
        ),
        BackupCmd::List => Outcome::new(agent.get("/backup/list").await?.ok_json()?, table),
        BackupCmd::Restore {
            id,
            approval,
            force,
        } => Outcome::new(
            agent
                .post(
                    "/backup/restore",
                    &json!({ "backup_id": id, "approval": approval, "force": force }),
                )
                .await?
                .ok_json()?,
            restored,
        ),
    })
}

/// Backups as a table with a header.
pub fn table(v: &Value) -> String {
    let mut out = format!(
        "{:<28}  {:<24}  {:>12}  {:>7}  {:<12}  SOURCES\n",
        "ID", "CREATED", "BYTES", "EVENTS", "TREE"
    );
    for b in v["backups"].as_array().into_iter().flatten() {
        let tree = b["tree_commit"]
            .as_str()
            .map_or("-", |c| &c[..c.len().min(12)]);
        let sources: Vec<&str> = b["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        out.push_str(&format!(
            "{:<28}  {:<24}  {:>12}  {:>7}  {:<12}  {}\n",
            cell(&b["id"]),
            cell(&b["created_at"]),
            cell(&b["bytes"]),
            cell(&b["ledger_size"]),
            tree,
            sources.join(",")
        ));
    }
    out
}

fn restored(v: &Value) -> String {
    let mut out = format!(
        "restored backup {} (made {}): ledger {} → {} events",
        cell(&v["backup_id"]),
        cell(&v["created_at"]),
        cell(&v["previous"]["size"]),
        cell(&v["restored"]["size"])
    );
    if let Some(c) = v["tree_commit"].as_str() {
        out.push_str(&format!(", config tree at {c}"));
    }
    out.push('\n');
    let restart: Vec<&str> = v["restart"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if !restart.is_empty() {
        out.push_str(&format!(
            "restart these daemons so they reload their state: {}\n",
            restart.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backup_views_have_headers_and_no_null() {
        let b = json!({"id": "20261130T031500123Z-1a2b3c4d", "created_at": "2026-11-30T03:15:00.123Z",
            "bytes": 12345, "ledger_size": 42, "tree_commit": null, "sources": ["keyd", "mesh"]});
        let t = table(&json!({ "backups": [b] }));
        assert!(t.starts_with("ID "), "{t}");
        assert!(t.contains("keyd,mesh") && !t.contains("null"), "{t}");
        let r = restored(
            &json!({"backup_id": "x", "created_at": "t", "previous": {"size": 9},
            "restored": {"size": 4}, "tree_commit": null, "restart": ["keyd"]}),
        );
        assert!(
            r.contains("9 → 4") && r.contains("reload their state: keyd"),
            "{r}"
        );
    }
}
