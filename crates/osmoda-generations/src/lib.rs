//! osmoda-generations: the machine's configuration as a git-tracked Nix tree, one commit per change.
//!
//! A [`Tree`] is a directory created from the `generations/` template (a flake,
//! `configuration.nix` for people, and `osmoda.nix`, a data-only module where agents mostly write)
//! and tracked by git through `git2`. Every change that lands is one commit, a *generation*:
//!
//! * author = the [`Actor`] (the person or agent), message = the reason, followed by the trailers
//!   `Osmoda-Event: <ledger id>` (when known) and `Osmoda-Actor: <actor name>`;
//! * each changed `.nix` file is validated before the commit: rnix parse, then
//!   `nix-instantiate --eval --strict` for data-only files or `--parse` for the rest where Nix is
//!   installed (see [`validate`]);
//! * a failed edit, validation or commit leaves the work tree, the index, `HEAD` and the history
//!   exactly as they were;
//! * one writer at a time: an in-process mutex plus an exclusive `flock` on `.git/osmoda.lock`, so
//!   concurrent requests from threads or processes are serialized and none is lost;
//! * an agent edit on a dirty tree (a person's uncommitted edits) is refused, so human and agent
//!   changes never mix in one commit; [`Tree::commit_worktree`] records the person's edits as a
//!   generation authored by them, and [`watch_drift`] reports such edits as they happen.
//!
//! # Which ledger event the `Osmoda-Event` trailer names
//!
//! The trailer must be written before the commit exists, but the ledger event that carries the
//! commit id can only be appended after it. The trailer therefore names the event that
//! **requested** the change. agentd appends `config.requested` (actor, reason, the edit) and gets
//! its id, calls [`Tree::mutate`] with that id, then appends `config.committed` (or
//! `config.failed`) carrying the commit id. Both directions are then linked: commit → request
//! event via the trailer, request → commit via the follow-up event, and no id is ever reserved
//! or guessed.
//!
//! # Revert and restore
//!
//! [`Tree::revert`] has `git revert` semantics: a new commit that undoes the changes of one
//! generation on top of the current one (later generations are kept). [`Tree::restore`] makes a
//! new commit whose tree equals a given generation's tree ("Revert to generation <rev>: <why>"),
//! which is what SafeSwitch records after rolling a failed switch back. Neither rewrites history.

mod attributes;
mod drift;
mod error;
pub mod evaluator;
mod full_eval;
mod history;
mod message;
mod owner;
mod recover;
mod repl;
mod revert;
mod tree;
pub mod validate;
mod worktree;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use drift::{watch_drift, watch_drift_with, DriftWatcher};
pub use error::GenError;
pub use full_eval::Validate;
pub use message::{TRAILER_ACTOR, TRAILER_EVENT, TRAILER_PEER, TRAILER_RESTORES, TRAILER_REVERTS};
pub use recover::{clear_stale_locks, Recovery};
pub use tree::Tree;
pub use validate::NixCheck;

/// Who makes a change: a person (from their git identity) or an agent/daemon (from SO_PEERCRED).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Display name, stable and readable (`agent`, `osmoda-watch`, a user name); also written to
    /// the `Osmoda-Actor` trailer.
    pub name: String,
    /// E-mail address for the git author line.
    pub email: String,
    /// The kernel's identity of the caller (`uid=0,pid=42,exe=node`), written to the
    /// `Osmoda-Peer` trailer rather than the author name, which stays stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
}

impl Actor {
    /// Builds an actor.
    pub fn new(name: impl Into<String>, email: impl Into<String>) -> Actor {
        Actor {
            name: name.into(),
            email: email.into(),
            peer: None,
        }
    }

    /// The same actor with the caller's kernel identity for the `Osmoda-Peer` trailer.
    pub fn with_peer(mut self, peer: impl Into<String>) -> Actor {
        self.peer = Some(peer.into());
        self
    }

    pub(crate) fn signature(&self) -> Result<git2::Signature<'static>, GenError> {
        for (field, value) in [("actor name", &self.name), ("actor email", &self.email)] {
            if value.trim().is_empty() {
                return Err(GenError::BadInput {
                    field,
                    reason: "it is empty".into(),
                });
            }
            if value
                .chars()
                .any(|c| c.is_control() || c == '<' || c == '>')
            {
                return Err(GenError::BadInput {
                    field,
                    reason: format!("{value:?} contains '<', '>' or control characters"),
                });
            }
        }
        git2::Signature::now(self.name.trim(), self.email.trim())
            .map_err(GenError::git("build the author signature"))
    }
}

/// One generation: a commit of the tree with its osModa metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// Full commit id (40 hex digits).
    pub rev: String,
    /// Abbreviated commit id (12 hex digits).
    pub short: String,
    /// Commit author.
    pub author: Actor,
    /// Commit time in seconds since the Unix epoch.
    pub time: i64,
    /// Commit time as RFC 3339 UTC.
    pub timestamp: String,
    /// The whole commit message.
    pub message: String,
    /// The message without the `Osmoda-*` trailers.
    pub reason: String,
    /// `Osmoda-Event`: id of the ledger event that requested the change.
    pub event_id: Option<i64>,
    /// `Osmoda-Actor`: the actor name recorded by osModa.
    pub actor: Option<String>,
    /// `Osmoda-Reverts`: the generation this one reverts.
    pub reverts: Option<String>,
    /// `Osmoda-Restores`: the generation whose tree this one restores.
    pub restores: Option<String>,
    /// Parent commit ids.
    pub parents: Vec<String>,
    /// Tags pointing at this commit.
    pub tags: Vec<String>,
    /// True if a `deployed/<n>` tag points at this commit.
    pub deployed: bool,
}

/// A generation with the list of changed files and its patch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationDetail {
    /// Metadata.
    pub generation: Generation,
    /// Files changed relative to the first parent (all files for the first generation).
    pub files: Vec<Change>,
    /// Unified diff against the first parent.
    pub patch: String,
}

/// What happened to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// New file (tracked in a commit, or untracked in the work tree).
    Added,
    /// Content or mode changed.
    Modified,
    /// File removed.
    Deleted,
    /// File renamed.
    Renamed,
    /// Type changed (file ↔ symlink).
    Typechange,
    /// Unresolved merge conflict.
    Conflicted,
}

impl fmt::Display for ChangeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ChangeKind::Added => "added",
            ChangeKind::Modified => "modified",
            ChangeKind::Deleted => "deleted",
            ChangeKind::Renamed => "renamed",
            ChangeKind::Typechange => "typechange",
            ChangeKind::Conflicted => "conflicted",
        })
    }
}

/// A changed file, relative to the tree root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// Path relative to the tree root, with `/` separators.
    pub path: String,
    /// What happened to it.
    pub kind: ChangeKind,
}

#[cfg(test)]
mod tests {
    /// agentd shares one `Tree` between request handlers behind an `Arc`.
    #[test]
    fn tree_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<crate::Tree>();
        check::<crate::GenError>();
    }
}
