//! `agentctl config …`: the configuration tree and its generations, through agentd.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use osmoda_client::Client;
use serde_json::{json, Value};

use crate::output;

/// The starter tree, compiled in so `agentctl config init` works from any install.
const TEMPLATE: &[(&str, &str)] = &[
    ("flake.nix", include_str!("../../../generations/flake.nix")),
    (
        "configuration.nix",
        include_str!("../../../generations/configuration.nix"),
    ),
    (
        "osmoda.nix",
        include_str!("../../../generations/osmoda.nix"),
    ),
];

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Create a configuration tree (a git repository) from the starter template.
    Init {
        /// New or empty directory.
        dir: PathBuf,
    },
    /// Read a value where the tree defines it (`--json` adds every definition: file:line, priority).
    #[command(after_help = "Examples:
  agentctl config get time.timeZone
  agentctl --json config get services.openssh.enable")]
    Get {
        /// Attribute path, e.g. services.osmoda.watch.watchers.
        path: String,
        /// Only this file (relative to the tree); default: wherever the tree defines it.
        #[arg(long)]
        file: Option<String>,
    },
    /// Set a value (JSON) or a raw Nix expression (--nix); one generation.
    #[command(after_help = "Examples:
  agentctl config set time.timeZone '\"Europe/Paris\"' --reason \"the machine moved\"
  agentctl config set networking.hostName --nix '\"web-\" + \"1\"' -m \"name the machine\"")]
    Set {
        /// Attribute path.
        path: String,
        /// JSON value (omit when using --nix).
        value: Option<String>,
        /// A raw Nix expression instead of JSON, e.g. `pkgs.htop`.
        #[arg(long)]
        nix: Option<String>,
        /// File relative to the tree.
        #[arg(long)]
        file: Option<String>,
        /// Why: the commit message.
        #[arg(long, short = 'm')]
        reason: String,
        /// Approval ticket id, for destructive edits.
        #[arg(long)]
        approval: Option<String>,
    },
    /// Append one element to a list (created if missing); one generation.
    #[command(after_help = "Examples:
  agentctl config append environment.systemPackages --nix jq --reason \"json on the command line\"
  agentctl config append networking.firewall.allowedTCPPorts 8080 -m \"serve the web UI\"")]
    Append {
        /// Attribute path of the list.
        path: String,
        /// The element as JSON (omit when using --nix), e.g. 8080 or '"text"'.
        value: Option<String>,
        /// The element as Nix source, e.g. `htop` or `./module.nix`.
        #[arg(long)]
        nix: Option<String>,
        /// File relative to the tree; default: where the tree defines the list.
        #[arg(long)]
        file: Option<String>,
        /// Why: the commit message.
        #[arg(long, short = 'm')]
        reason: String,
        /// Approval ticket id, for destructive edits.
        #[arg(long)]
        approval: Option<String>,
    },
    /// Remove every element equal to the given one from a list; one generation.
    #[command(after_help = "Examples:
  agentctl config remove environment.systemPackages --nix curl --reason \"not needed\"
  agentctl config remove networking.firewall.allowedTCPPorts 8080 -m \"the web UI moved\"")]
    Remove {
        /// Attribute path of the list.
        path: String,
        /// The element as JSON (omit when using --nix).
        value: Option<String>,
        /// The element as Nix source, e.g. `pkgs.htop`.
        #[arg(long)]
        nix: Option<String>,
        /// File relative to the tree; default: where the tree defines the list.
        #[arg(long)]
        file: Option<String>,
        /// Why: the commit message.
        #[arg(long, short = 'm')]
        reason: String,
        /// Approval ticket id, for destructive edits.
        #[arg(long)]
        approval: Option<String>,
    },
    /// Remove a binding; one generation.
    Unset {
        /// Attribute path.
        path: String,
        /// File relative to the tree.
        #[arg(long)]
        file: Option<String>,
        /// Why: the commit message.
        #[arg(long, short = 'm')]
        reason: String,
        /// Approval ticket id, for destructive edits.
        #[arg(long)]
        approval: Option<String>,
    },
    /// List generations, newest first.
    Log {
        /// How many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show one generation with its patch.
    Show {
        /// Revision.
        rev: String,
    },
    /// Diff two generations.
    Diff {
        /// Older revision.
        from: String,
        /// Newer revision.
        #[arg(default_value = "HEAD")]
        to: String,
    },
    /// Undo a generation with a new one (history is kept).
    Revert {
        /// Revision to undo.
        rev: String,
        /// Why: the commit message.
        #[arg(long, short = 'm')]
        reason: String,
        /// Approval ticket id, when undoing it is destructive.
        #[arg(long)]
        approval: Option<String>,
    },
    /// Bring back a whole earlier generation as a new one (its tree, history kept); what a
    /// revert that conflicts with later generations suggests.
    ///
    /// Example: agentctl config restore 1a2b3c4d --reason "back to the state before the upgrade"
    Restore {
        /// Revision whose tree becomes the new generation.
        rev: String,
        /// Why (first line = subject).
        #[arg(long, short = 'm')]
        reason: String,
        /// Approval ticket id, when going back is destructive.
        #[arg(long)]
        approval: Option<String>,
    },
    /// Record your uncommitted hand edits as a generation authored by you.
    Commit {
        /// Why: the commit message (`-m` like git).
        #[arg(short = 'm', long = "reason", visible_alias = "message")]
        message: String,
        /// Approval ticket id, when the hand edits are destructive.
        #[arg(long)]
        approval: Option<String>,
    },
    /// Show uncommitted hand edits (drift).
    Status,
}

fn init(dir: &Path) -> anyhow::Result<Value> {
    let template = tempfile::tempdir()?;
    for (name, text) in TEMPLATE {
        std::fs::write(template.path().join(name), text)?;
    }
    let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
    let actor = osmoda_generations::Actor::new(user.clone(), format!("{user}@localhost"));
    let tree = osmoda_generations::Tree::init(dir, template.path(), &actor)
        .with_context(|| format!("creating a configuration tree in {}", dir.display()))?;
    let head = tree.generations(1)?;
    Ok(json!({ "dir": tree.dir(), "generation": head.first() }))
}

fn encode(s: &str) -> String {
    output::urlencode(s)
}

/// Run one `config` subcommand; returns the JSON to print and how to render it.
pub async fn run(agent: &Client, cmd: ConfigCmd) -> anyhow::Result<(Value, fn(&Value) -> String)> {
    Ok(match cmd {
        ConfigCmd::Init { dir } => (init(&dir)?, output::landed),
        ConfigCmd::Get { path, file } => {
            let mut url = format!("/config/get?path={}", encode(&path));
            if let Some(f) = file {
                url.push_str(&format!("&file={}", encode(&f)));
            }
            let v = agent.get(&url).await?.ok_json()?;
            (v, show_get)
        }
        ConfigCmd::Append {
            path,
            value,
            nix,
            file,
            reason,
            approval,
        } => {
            let body = list_body(path, value, nix, file, reason, approval)?;
            (
                agent.post("/config/append", &body).await?.ok_json()?,
                output::landed,
            )
        }
        ConfigCmd::Remove {
            path,
            value,
            nix,
            file,
            reason,
            approval,
        } => {
            let body = list_body(path, value, nix, file, reason, approval)?;
            (
                agent.post("/config/remove", &body).await?.ok_json()?,
                output::landed,
            )
        }
        ConfigCmd::Set {
            path,
            value,
            nix,
            file,
            reason,
            approval,
        } => {
            let mut body = json!({ "path": path, "reason": reason });
            match (value, nix) {
                (Some(v), None) => {
                    body["value"] = serde_json::from_str(&v)
                        .with_context(|| format!("{v:?} is not JSON; quote strings ('\"text\"') or use --nix for a Nix expression"))?;
                }
                (None, Some(n)) => body["nix"] = Value::String(n),
                _ => anyhow::bail!("give either a JSON value or --nix EXPR"),
            }
            if let Some(f) = file {
                body["file"] = Value::String(f);
            }
            if let Some(a) = approval {
                body["approval"] = Value::String(a);
            }
            (
                agent.post("/config/set", &body).await?.ok_json()?,
                output::landed,
            )
        }
        ConfigCmd::Unset {
            path,
            file,
            reason,
            approval,
        } => {
            let mut body = json!({ "path": path, "reason": reason });
            if let Some(f) = file {
                body["file"] = Value::String(f);
            }
            if let Some(a) = approval {
                body["approval"] = Value::String(a);
            }
            (
                agent.post("/config/unset", &body).await?.ok_json()?,
                output::landed,
            )
        }
        ConfigCmd::Log { limit } => (
            agent
                .get(&format!("/config/generations?limit={limit}"))
                .await?
                .ok_json()?,
            output::generations,
        ),
        ConfigCmd::Show { rev } => {
            let v = agent
                .get(&format!("/config/generation/{}", encode(&rev)))
                .await?
                .ok_json()?;
            (v, |v| {
                format!(
                    "{}{}",
                    output::generations(&json!([v["generation"]])),
                    s(&v["patch"])
                )
            })
        }
        ConfigCmd::Diff { from, to } => {
            let v = agent
                .get(&format!(
                    "/config/diff?from={}&to={}",
                    encode(&from),
                    encode(&to)
                ))
                .await?
                .ok_json()?;
            (v, |v| s(&v["patch"]))
        }
        ConfigCmd::Revert {
            rev,
            reason,
            approval,
        } => (
            agent
                .post(
                    "/config/revert",
                    &json!({ "rev": rev, "reason": reason, "approval": approval }),
                )
                .await?
                .ok_json()?,
            output::landed,
        ),
        ConfigCmd::Restore {
            rev,
            reason,
            approval,
        } => (
            agent
                .post(
                    "/config/restore",
                    &json!({ "rev": rev, "reason": reason, "approval": approval }),
                )
                .await?
                .ok_json()?,
            output::landed,
        ),
        ConfigCmd::Commit { message, approval } => (
            agent
                .post(
                    "/config/commit",
                    &json!({ "reason": message, "approval": approval }),
                )
                .await?
                .ok_json()?,
            output::landed,
        ),
        ConfigCmd::Status => (agent.get("/config/status").await?.ok_json()?, |v| {
            if v["clean"] == json!(true) {
                return "clean: no uncommitted changes\n".into();
            }
            v["changes"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| format!("{:<10} {}\n", s(&c["kind"]), s(&c["path"])))
                .collect()
        }),
    })
}

/// The body of an append/remove request.
fn list_body(
    path: String,
    value: Option<String>,
    nix: Option<String>,
    file: Option<String>,
    reason: String,
    approval: Option<String>,
) -> anyhow::Result<Value> {
    let mut body = json!({ "path": path, "reason": reason });
    match (value, nix) {
        (Some(v), None) => {
            body["value"] = serde_json::from_str(&v).with_context(|| {
                format!("{v:?} is not JSON; quote strings ('\"text\"') or use --nix for Nix source")
            })?;
        }
        (None, Some(n)) => body["nix"] = Value::String(n),
        _ => anyhow::bail!("give either a JSON value or --nix EXPR"),
    }
    if let Some(f) = file {
        body["file"] = Value::String(f);
    }
    if let Some(a) = approval {
        body["approval"] = Value::String(a);
    }
    Ok(body)
}

/// `config get` for people and scripts: the value, or for a list its elements one per line, or
/// its Nix source. Where it is defined (file:line, priority) is in `--json`.
fn show_get(v: &Value) -> String {
    match (&v["value"], &v["elements"]) {
        (Value::Null, Value::Array(items)) => items.iter().map(|i| format!("{}\n", s(i))).collect(),
        (Value::Null, _) if v["nix"].is_string() => format!("{}\n", s(&v["nix"])),
        (value, _) => format!(
            "{}\n",
            serde_json::to_string_pretty(value).unwrap_or_default()
        ),
    }
}

fn s(v: &Value) -> String {
    v.as_str()
        .map_or_else(|| v.to_string(), crate::output::escape)
}
