//! `agentctl memory …`: agentd's memory (markdown notes + derived index, `/memory/*`).

use clap::Subcommand;
use osmoda_client::Client;
use serde_json::{json, Value};

use crate::output::{cell, Outcome};

#[derive(Subcommand, Debug)]
pub enum MemoryCmd {
    /// Recall notes relevant to a query (hybrid: keywords + embeddings).
    #[command(after_help = "Examples:
  agentctl memory recall \"why did nginx fail last week\"
  agentctl memory recall backups --max 3 --timeframe 30d")]
    Recall {
        /// What to look for.
        query: String,
        /// Most results (1-50).
        #[arg(long)]
        max: Option<usize>,
        /// `all`, `<N>h`, `<N>d`, `<N>w` or `SINCE..UNTIL` (RFC 3339).
        #[arg(long)]
        timeframe: Option<String>,
    },
    /// Append a note to the memory (today's daily note, or MEMORY.md with --durable).
    #[command(after_help = "Example:
  agentctl memory store \"Backups run at 02:00\" --detail \"restic to B2, 7 daily kept\" --category config --tag backup")]
    Store {
        /// One-line summary (the note's heading).
        summary: String,
        /// Body text.
        #[arg(long, default_value = "")]
        detail: String,
        /// Category word (incident, config, preference, ...).
        #[arg(long)]
        category: Option<String>,
        /// Tags (repeatable).
        #[arg(long = "tag")]
        tags: Vec<String>,
        /// A durable fact (MEMORY.md) rather than a daily note.
        #[arg(long)]
        durable: bool,
    },
    /// Delete the index and rebuild it from the markdown notes alone.
    Reindex,
    /// Model status and index size.
    Health,
}

/// Run one `memory` subcommand.
///
/// # Errors
/// The daemon's refusal or an unreachable agentd.
pub async fn run(agent: &Client, cmd: MemoryCmd) -> anyhow::Result<Outcome> {
    Ok(match cmd {
        MemoryCmd::Recall { query, max, timeframe } => Outcome::new(
            agent
                .post("/memory/recall", &json!({ "query": query, "max_results": max, "timeframe": timeframe }))
                .await?
                .ok_json()?,
            recall_table,
        ),
        MemoryCmd::Store { summary, detail, category, tags, durable } => Outcome::new(
            agent
                .post(
                    "/memory/store",
                    &json!({ "summary": summary, "detail": detail, "category": category, "tags": tags, "durable": durable }),
                )
                .await?
                .ok_json()?,
            |v| format!("stored in {} at {}\n", cell(&v["path"]), cell(&v["at"])),
        ),
        MemoryCmd::Reindex => Outcome::new(
            agent.post("/memory/reindex", &json!({})).await?.ok_json()?,
            |v| format!("reindexed: {} notes, {} chunks embedded\n", cell(&v["files_changed"]), cell(&v["embedded"])),
        ),
        MemoryCmd::Health => Outcome::new(agent.get("/memory/health").await?.ok_json()?, health_table),
    })
}

/// Recall results: one block per hit (score, place, text).
pub fn recall_table(v: &Value) -> String {
    let mut out = String::new();
    if let Some(w) = v["warning"].as_str() {
        out.push_str(&format!("warning: {w}\n"));
    }
    let hits = v["results"].as_array().cloned().unwrap_or_default();
    if hits.is_empty() {
        out.push_str("nothing relevant found\n");
    }
    for h in hits {
        out.push_str(&format!(
            "{}:{}  {}  (score {:.4})\n",
            cell(&h["path"]),
            cell(&h["line_start"]),
            cell(&h["at"]),
            h["score"].as_f64().unwrap_or(0.0)
        ));
        for l in h["text"].as_str().unwrap_or("").lines() {
            out.push_str(&format!("    {l}\n"));
        }
    }
    out.push_str(&format!(
        "mode {}, {} tokens, {} omitted\n",
        cell(&v["mode"]),
        cell(&v["tokens"]),
        cell(&v["omitted"])
    ));
    out
}

/// Health as `key: value` lines.
pub fn health_table(v: &Value) -> String {
    [
        "model_status",
        "model",
        "collection_size",
        "pending_vectors",
        "notes",
        "index_rebuilt",
        "last_error",
    ]
    .iter()
    .map(|k| format!("{k}: {}\n", cell(&v[*k])))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recall_view_shows_place_text_and_warning() {
        let v = json!({"results": [{"path": "memory/2026-11-30.md", "line_start": 3, "at": "2026-11-30T03:10:00Z",
            "score": 0.0328, "text": "## nginx down\ncert expired"}], "mode": "keyword", "tokens": 7, "omitted": 0,
            "warning": "keyword recall only: no model"});
        let t = recall_table(&v);
        assert!(t.starts_with("warning: keyword recall only"), "{t}");
        assert!(
            t.contains("memory/2026-11-30.md:3") && t.contains("    cert expired"),
            "{t}"
        );
        assert!(
            recall_table(&json!({"results": [], "mode": "hybrid", "tokens": 0, "omitted": 0}))
                .contains("nothing relevant")
        );
    }
}
