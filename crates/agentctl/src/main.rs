//! agentctl: the operator's command line for agentd (and, through it, the whole system).

mod backup;
mod config;
mod incidents;
mod ledger;
mod memory;
mod output;
mod switch;
mod watchers;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use osmoda_client::Client;
use output::Outcome;
use serde_json::{json, Value};

/// How long `agentctl memory …` waits for agentd: the first call loads the embedding model.
const MEMORY_TIMEOUT: Duration = Duration::from_secs(180);

#[derive(Parser, Debug)]
#[command(
    name = "agentctl",
    about = "Operate an osModa machine through agentd and osmoda-watch",
    version,
    after_help = concat!(
        "Examples (with scripts/dev running, or on an osModa machine):
  agentctl health
  agentctl config set services.osmoda.watch.watchers.root-disk '{\"check\":{\"type\":\"disk\",\"path\":\"/\",\"minFreePercent\":5},\"intervalSecs\":300,\"actions\":[\"notify\"]}' --reason \"watch free space on /\"
  agentctl switch preview
  agentctl switch begin --wait --reason \"add the root-disk watcher\"
  agentctl switch history | head -3
  agentctl events --type 'watch.*' --limit 10

",
        exit_codes_help!()
    )
)]
struct Cli {
    /// agentd's agent-facing socket.
    #[arg(
        long,
        global = true,
        env = "OSMODA_AGENTD_SOCKET",
        default_value = "/run/osmoda/agentd.sock"
    )]
    socket: PathBuf,
    /// agentd's human-only approval socket.
    #[arg(
        long,
        global = true,
        env = "OSMODA_APPROVAL_SOCKET",
        default_value = osmoda_config::DEFAULT_APPROVAL_SOCKET
    )]
    approval_socket: PathBuf,
    /// osmoda-watch's socket (SafeSwitch and watchers).
    #[arg(
        long,
        global = true,
        env = "OSMODA_WATCH_SOCKET",
        default_value = "/run/osmoda/watch.sock"
    )]
    watch_socket: PathBuf,
    /// Mark every request as made for this action (`X-Osmoda-Action`): what the daemons record
    /// for it names the action. A routine's command gets its run's label in OSMODA_ACTION, so
    /// agentctl run by a routine is traced to that run (its loop guard) without this flag.
    /// (`--action-label`, not `--action`: `watchers add --action` names a watcher's actions.)
    #[arg(
        long = "action-label",
        global = true,
        env = "OSMODA_ACTION",
        value_name = "LABEL",
        value_parser = action_label
    )]
    for_action: Option<String>,
    /// Print raw JSON instead of a readable table.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// CPU, memory, disk, load and uptime.
    Health,
    /// Read the event ledger.
    Events {
        /// Event type (trailing `*` for a prefix).
        #[arg(long = "type")]
        kind: Option<String>,
        /// Actor (trailing `*` for a prefix).
        #[arg(long)]
        actor: Option<String>,
        /// Only events at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Verify the ledger's hash chain and that it matches agentd's signed checkpoints, reading
    /// the files directly (works while agentd is down).
    VerifyLedger {
        /// Path of ledger.db.
        #[arg(long, default_value = "/var/lib/osmoda/agentd/ledger.db")]
        db: PathBuf,
        /// The checkpoint file (default: checkpoints.jsonl next to the database).
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// A verifier key of the checkpoints (repeatable: the keys before and after a
        /// rotation); a retired key as "<vkey> <last size>" (the ledger's size when it was
        /// rotated out, as checkpoint.vkeys records it): a checkpoint it signed past that size is
        /// BROKEN. Default: checkpoint.vkeys/checkpoint.vkey next to the database, with a
        /// warning (root can replace them there).
        #[arg(long)]
        vkey: Vec<String>,
        /// A file of checkpoint verifier keys, one per line, in --vkey's form (repeatable).
        #[arg(long = "vkey-file")]
        vkey_file: Vec<PathBuf>,
        /// Also require this many valid cosignatures by distinct witnesses on the newest
        /// checkpoint (cosignatures.jsonl next to the database).
        #[arg(long)]
        witnesses: Option<usize>,
        /// A witness's verifier key (repeatable; default: ledger.witness.peers of --config).
        #[arg(long = "witness-key")]
        witness_keys: Vec<String>,
        /// agentd's configuration, whose ledger.witness.peers are the witnesses' keys.
        #[arg(long, default_value = "/etc/osmoda/agentd.json")]
        config: PathBuf,
        /// With --witnesses: count only cosignatures signed at most this many seconds ago
        /// (0: any age). agentd asks its witnesses again every hour, so an old copy of the
        /// ledger and its files, restored together, fails this.
        #[arg(long = "max-age", default_value_t = 86_400)]
        max_age: u64,
    },
    /// Ledger checkpoint keys.
    Ledger {
        #[command(subcommand)]
        action: ledger::LedgerCmd,
    },
    /// The configuration tree and its generations.
    Config {
        #[command(subcommand)]
        action: config::ConfigCmd,
    },
    /// SafeSwitch: apply a generation with health gates and automatic rollback.
    Switch {
        #[command(subcommand)]
        action: switch::SwitchCmd,
    },
    /// Autopilot watchers.
    Watchers {
        #[command(subcommand)]
        action: watchers::WatcherCmd,
    },
    /// Incident workspaces (opened by rollbacks, failed watchers, the agent).
    Incidents {
        #[command(subcommand)]
        action: incidents::IncidentCmd,
    },
    /// Backups of the ledger, config tree and daemons' state; restores need an approval.
    Backup {
        #[command(subcommand)]
        action: backup::BackupCmd,
    },
    /// The agent's memory: recall, store, reindex, health.
    Memory {
        #[command(subcommand)]
        action: memory::MemoryCmd,
    },
    /// Human approval of destructive operations (uses the approval socket).
    Approvals {
        #[command(subcommand)]
        action: ApprovalCmd,
    },
}

#[derive(Subcommand, Debug)]
enum ApprovalCmd {
    /// List tickets.
    List,
    /// Ask a person to approve an operation (agent socket); prints the pending ticket.
    #[command(after_help = "Example:
  agentctl approvals request --operation '{\"op\":\"config.unset\",\"path\":\"services.osmoda.watch.watchers.sshd\"}' --reason \"sshd is gone\"")]
    Request {
        /// The exact operation as JSON; the ticket is bound to it.
        #[arg(long)]
        operation: String,
        /// Why: shown to the person who decides.
        #[arg(long, short = 'm')]
        reason: String,
    },
    /// Approve a pending ticket.
    Approve {
        /// Ticket id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Deny a pending ticket.
    Deny {
        /// Ticket id.
        id: String,
        /// Why.
        #[arg(long, default_value = "")]
        reason: String,
    },
}

fn query_string(pairs: &[(&str, Option<String>)]) -> String {
    let parts: Vec<String> = pairs
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}={}", output::urlencode(v))))
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!("?{}", parts.join("&"))
    }
}

/// An action label as agentd accepts it in `X-Osmoda-Action`.
fn action_label(s: &str) -> Result<String, String> {
    if osmoda_client::valid_action_label(s) {
        Ok(s.to_string())
    } else {
        Err("an action label is 1 to 40 characters of [a-z0-9._-] (e.g. routine-run.42)".into())
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let client = |socket: &std::path::Path| match &cli.for_action {
        Some(a) => Client::new(socket).for_action(a.as_str()),
        None => Client::new(socket),
    };
    let agent = client(&cli.socket);
    let human = client(&cli.approval_socket);
    let watch = client(&cli.watch_socket);
    let outcome = match cli.command {
        Command::Health => Outcome::new(agent.get("/health").await?.ok_json()?, output::health),
        Command::Events {
            kind,
            actor,
            since,
            limit,
        } => {
            let q = query_string(&[
                ("type", kind),
                ("actor", actor),
                ("since", since),
                ("limit", Some(limit.to_string())),
                ("order", Some("desc".into())),
            ]);
            Outcome::new(
                agent.get(&format!("/events/log{q}")).await?.ok_json()?,
                output::events,
            )
        }
        Command::VerifyLedger {
            db,
            checkpoints,
            vkey,
            vkey_file,
            witnesses,
            witness_keys,
            config,
            max_age,
        } => {
            let anchors = ledger::Anchors {
                vkeys: &vkey,
                vkey_files: &vkey_file,
                witness_keys: &witness_keys,
                config: config.exists().then_some(config.as_path()),
                max_age_secs: max_age,
            };
            return ledger::verify(&db, checkpoints.as_deref(), witnesses, &anchors);
        }
        Command::Ledger { action } => return ledger::run(action),
        Command::Config { action } => {
            let (v, table) = config::run(&agent, action).await?;
            Outcome::new(v, table)
        }
        Command::Switch { action } => switch::run(&watch, action).await?,
        Command::Watchers { action } => watchers::run(&watch, action).await?,
        Command::Incidents { action } => incidents::run(&agent, action).await?,
        Command::Backup { action } => backup::run(&agent, action).await?,
        // A store or recall embeds text with agentd's model, loaded on the first call (seconds
        // in a release build; over 30 s in a debug build on a loaded machine).
        Command::Memory { action } => {
            memory::run(&agent.clone().with_timeout(MEMORY_TIMEOUT), action).await?
        }
        Command::Approvals { action } => {
            let v = match action {
                ApprovalCmd::List => human.get("/approvals").await?.ok_json()?,
                ApprovalCmd::Request { operation, reason } => {
                    let operation: Value = serde_json::from_str(&operation)
                        .with_context(|| format!("--operation {operation:?} is not JSON"))?;
                    agent
                        .post(
                            "/approval/request",
                            &json!({ "operation": operation, "detail": reason }),
                        )
                        .await?
                        .ok_json()?
                }
                ApprovalCmd::Approve { id, reason } => human
                    .post(
                        &format!("/approval/{id}/approve"),
                        &json!({ "reason": reason }),
                    )
                    .await?
                    .ok_json()?,
                ApprovalCmd::Deny { id, reason } => human
                    .post(
                        &format!("/approval/{id}/deny"),
                        &json!({ "reason": reason }),
                    )
                    .await?
                    .ok_json()?,
            };
            let v = if v.is_array() {
                v
            } else {
                Value::Array(vec![v])
            };
            Outcome::new(v, output::approvals)
        }
    };
    Ok(outcome.finish(cli.json)?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            output::note(&output::error_text(&e));
            ExitCode::from(output::code::ERROR)
        }
    }
}
