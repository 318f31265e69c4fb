//! The git-tracked config tree as SafeSwitch sees it: which generation is HEAD and which is
//! deployed, tagging on commit, and diffs for the preview. A thin adapter over
//! `osmoda_generations::Tree`; commits other than the deployed tag go through agentd's config
//! API (`crate::agentd::Agentd::restore`), never straight into the tree.

use std::path::{Path, PathBuf};

use osmoda_generations::{GenError, Tree};

use crate::error::{Result, WatchError};

/// The file holding `services.osmoda` settings, the only file the local backend can apply.
pub const OSMODA_FILE: &str = "osmoda.nix";

/// The tree, opened once.
pub struct ConfigTree {
    tree: Tree,
}

fn tree_err(e: GenError) -> WatchError {
    match e {
        GenError::UnknownRevision { .. } => WatchError::BadRequest(e.to_string()),
        other => WatchError::Tree(other.to_string()),
    }
}

impl ConfigTree {
    /// Opens the tree at `dir`.
    ///
    /// # Errors
    /// When `dir` is not a generations tree.
    pub fn open(dir: &Path) -> Result<ConfigTree> {
        let tree = Tree::open(dir).map_err(tree_err)?;
        Ok(ConfigTree { tree })
    }

    /// The tree's directory.
    pub fn dir(&self) -> PathBuf {
        self.tree.dir().to_path_buf()
    }

    /// HEAD's full commit id.
    ///
    /// # Errors
    /// Git errors.
    pub fn head(&self) -> Result<String> {
        self.tree.head().map_err(tree_err)
    }

    /// Expands a revision (full or abbreviated id, tag, `HEAD~1`) to a full commit id.
    ///
    /// # Errors
    /// `BadRequest` when it names no commit.
    pub fn resolve(&self, rev: &str) -> Result<String> {
        self.tree
            .show(rev)
            .map(|d| d.generation.rev)
            .map_err(tree_err)
    }

    /// The last deployed generation, if any.
    ///
    /// # Errors
    /// Git errors.
    pub fn last_deployed(&self) -> Result<Option<String>> {
        self.tree
            .last_deployed()
            .map(|g| g.map(|g| g.rev))
            .map_err(tree_err)
    }

    /// Tags `rev` deployed (idempotent when it already is the last deployed generation).
    ///
    /// # Errors
    /// Git errors.
    pub fn tag_deployed(&self, rev: &str) -> Result<()> {
        self.tree.tag_deployed(rev).map(drop).map_err(tree_err)
    }

    /// Whether HEAD's tree already equals `rev`'s (nothing to record to bring it back).
    ///
    /// # Errors
    /// When `rev` is unknown.
    pub fn head_tree_equals(&self, rev: &str) -> Result<bool> {
        Ok(self.diff(rev, "HEAD")?.is_empty())
    }

    /// `osmoda.nix` as it was in `rev`.
    ///
    /// # Errors
    /// When `rev` is unknown or has no such file.
    pub fn osmoda_file_at(&self, rev: &str) -> Result<String> {
        self.tree
            .read_file_at(rev, Path::new(OSMODA_FILE))
            .map_err(tree_err)
    }

    /// Unified diff between two generations.
    ///
    /// # Errors
    /// When either revision is unknown.
    pub fn diff(&self, from: &str, to: &str) -> Result<String> {
        self.tree.diff(from, to).map_err(tree_err)
    }

    /// Paths changed between two generations (from the diff headers).
    ///
    /// # Errors
    /// When either revision is unknown.
    pub fn changed_files(&self, from: &str, to: &str) -> Result<Vec<String>> {
        Ok(changed_paths(&self.diff(from, to)?))
    }
}

/// Paths named by `diff --git a/X b/Y` headers (both sides, deduplicated, in order).
pub fn changed_paths(patch: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in patch.lines() {
        let Some(rest) = line.strip_prefix("diff --git a/") else {
            continue;
        };
        let (a, b) = match rest.split_once(" b/") {
            Some((a, b)) => (a.to_string(), b.to_string()),
            None => (rest.to_string(), rest.to_string()),
        };
        for p in [a, b] {
            if !out.contains(&p) {
                out.push(p);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn changed_paths_from_headers() {
        let patch = "diff --git a/osmoda.nix b/osmoda.nix\n--- a/osmoda.nix\n+++ b/osmoda.nix\n@@\n-x\n+y\ndiff --git a/old.nix b/new.nix\n";
        assert_eq!(
            super::changed_paths(patch),
            ["osmoda.nix", "old.nix", "new.nix"]
        );
        assert!(super::changed_paths("").is_empty());
    }
}
