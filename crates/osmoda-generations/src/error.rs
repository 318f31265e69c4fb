//! The crate's one error type: every refusal says what was wrong and what to do next.

use std::path::PathBuf;

use crate::Change;

/// Everything that can go wrong while reading or changing a generations tree.
///
/// Whenever a mutation returns one of these, the work tree, the index, `HEAD` and the history are
/// exactly as they were before the call (see [`crate::Tree::mutate`]).
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// A file-system operation failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What we were doing ("read", "write", "create directory", ...).
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A git operation failed.
    #[error("git: {context}: {}", source.message())]
    Git {
        /// What we were doing.
        context: String,
        /// The underlying libgit2 error.
        #[source]
        source: git2::Error,
    },
    /// The directory is not a generations tree (no git repository with a first generation).
    #[error("{} is not a configuration tree: {reason}", dir.display())]
    NotATree {
        /// The directory that was opened.
        dir: PathBuf,
        /// Why it is not usable.
        reason: String,
    },
    /// The tree belongs to another user than this process's, and git does not trust it (its
    /// `safe.directory` check), e.g. after a `chown` while agentd runs; nothing was changed.
    #[error("{} is owned by another user than the one agentd runs as ({reason}); nothing was \
             changed. Give the tree back to that user (`chown -R`), or, if sharing is intended, \
             add it to git's `safe.directory` for that user (`git config --global --add \
             safe.directory {}`)", dir.display(), dir.display())]
    NotOwned {
        /// The tree root.
        dir: PathBuf,
        /// git's message.
        reason: String,
    },
    /// `init` was pointed at a directory that already holds files.
    #[error("{} already exists and is not empty; choose an empty or new directory", dir.display())]
    NotEmpty {
        /// The target directory.
        dir: PathBuf,
    },
    /// The tree has uncommitted changes, so an agent edit would mix with a person's edit.
    #[error("the configuration tree has uncommitted changes ({}); record them as a generation with \
             `agentctl config commit -m \"<why>\"` (or discard them) before the agent can edit", summary(.changes))]
    Dirty {
        /// The uncommitted changes that blocked the edit.
        changes: Vec<Change>,
    },
    /// The validation the tree was configured for cannot run on this machine; nothing was
    /// committed.
    #[error("{what} is unavailable here, nothing was committed: {reason}")]
    Unavailable {
        /// What cannot run (`validate = build`).
        what: &'static str,
        /// Why, and what to do instead.
        reason: String,
    },
    /// A changed file did not pass validation; nothing was committed.
    #[error("{} is not valid Nix, nothing was committed: {message}", path.display())]
    Invalid {
        /// The file, relative to the tree root.
        path: PathBuf,
        /// The parser's or evaluator's message.
        message: String,
    },
    /// The edit closure failed; nothing was committed.
    #[error("edit failed, nothing was committed: {0}")]
    Edit(String),
    /// A path handed to the tree escapes it or points into `.git`.
    #[error("bad path {}: {reason}", path.display())]
    BadPath {
        /// The offending path.
        path: PathBuf,
        /// Why it was refused.
        reason: &'static str,
    },
    /// A caller-supplied field (actor, reason, revision, ...) is unusable.
    #[error("invalid {field}: {reason}")]
    BadInput {
        /// Which input.
        field: &'static str,
        /// What was wrong with it.
        reason: String,
    },
    /// A revision does not name a generation of this tree.
    #[error("unknown generation {rev:?}: {reason} (list them with `agentctl config log`)")]
    UnknownRevision {
        /// The revision as given.
        rev: String,
        /// The lookup error.
        reason: String,
    },
    /// The change would leave the tree exactly as it is, so no generation was recorded.
    #[error("nothing changed: {0}; no generation was recorded")]
    NoChange(String),
    /// Reverting a generation conflicts with later generations.
    #[error("cannot revert {rev}: later generations changed the same lines in {}; \
             bring back a whole earlier generation instead with `agentctl config restore <rev>` \
             (`POST /config/restore`)", paths.join(", "))]
    Conflict {
        /// The generation that could not be reverted.
        rev: String,
        /// Files with conflicts.
        paths: Vec<String>,
    },
    /// Watching the tree for hand edits failed.
    #[error("cannot watch {} for hand edits: {source}", dir.display())]
    Watch {
        /// The tree root.
        dir: PathBuf,
        /// The notify error.
        #[source]
        source: notify::Error,
    },
    /// A live process holds one of git's lock files open.
    #[error("{} is held by {holder}; wait for it to finish (or stop it), then retry", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// `pid N (command)` of the holder.
        holder: String,
    },
    /// `HEAD` is detached, so a new generation would be orphaned when a branch is checked out.
    #[error(
        "the tree's HEAD is detached at {rev}; check out its branch first \
         (`git -C {} checkout main`, or `git switch -c NAME` to keep the detached commits)",
        dir.display()
    )]
    DetachedHead {
        /// The tree root.
        dir: PathBuf,
        /// The commit HEAD points at.
        rev: String,
    },
    /// The original error, plus a failure to undo the partial change afterwards.
    #[error("{original}; restoring the previous state ALSO failed ({restore}): inspect the tree with `git status`")]
    RestoreFailed {
        /// Why the operation failed in the first place.
        original: Box<GenError>,
        /// Why the restore failed.
        restore: Box<GenError>,
    },
}

impl GenError {
    /// Wraps a failure of an edit closure (for example an `osmoda-nix` refusal).
    pub fn edit(message: impl std::fmt::Display) -> GenError {
        GenError::Edit(message.to_string())
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> GenError {
        GenError::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn git(context: impl Into<String>) -> impl FnOnce(git2::Error) -> GenError {
        let context = context.into();
        move |source| GenError::Git { context, source }
    }
}

fn summary(changes: &[Change]) -> String {
    let mut parts: Vec<String> = changes
        .iter()
        .take(5)
        .map(|c| format!("{} {}", c.kind, c.path))
        .collect();
    if changes.len() > 5 {
        parts.push(format!("and {} more", changes.len() - 5));
    }
    parts.join(", ")
}
