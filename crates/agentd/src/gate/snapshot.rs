//! Tree states the gate compares, read with git (read-only): a generation's `.nix` files, the
//! result a revert would have, and the work tree (a hand edit about to be committed).

use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};

use super::eval::Files;

/// Largest `.nix` file read (bigger ones are not configuration anyone edits by hand).
const MAX_FILE: usize = 4 << 20;
/// Most `.nix` files read from one state.
const MAX_FILES: usize = 2000;

/// Why a state could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the tree for the approval gate: {0}")]
pub struct SnapshotError(String);

fn err(what: &str) -> impl Fn(git2::Error) -> SnapshotError + '_ {
    move |e| SnapshotError(format!("{what}: {}", e.message()))
}

fn is_nix(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "nix")
}

fn blobs(repo: &Repository, tree: &git2::Tree<'_>) -> Result<Files, SnapshotError> {
    let mut files = Files::new();
    let mut failed = None;
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or_default();
        let rel = PathBuf::from(format!("{dir}{name}"));
        if entry.kind() == Some(ObjectType::Blob) && is_nix(&rel) && files.len() < MAX_FILES {
            match repo.find_blob(entry.id()) {
                Ok(b) if b.content().len() <= MAX_FILE => {
                    files.insert(rel, String::from_utf8_lossy(b.content()).into_owned());
                }
                Ok(_) => {}
                Err(e) => {
                    failed = Some(e);
                    return TreeWalkResult::Abort;
                }
            }
        }
        TreeWalkResult::Ok
    })
    .map_err(err("walk a tree"))?;
    match failed {
        Some(e) => Err(err("read a file")(e)),
        None => Ok(files),
    }
}

fn open(dir: &Path) -> Result<Repository, SnapshotError> {
    Repository::open(dir).map_err(err("open the repository"))
}

fn commit<'r>(repo: &'r Repository, rev: &str) -> Result<git2::Commit<'r>, SnapshotError> {
    repo.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| SnapshotError(format!("no generation {rev}: {}", e.message())))
}

/// The `.nix` files of generation `rev` (`HEAD`, a commit id, a tag).
///
/// # Errors
/// Unknown revision or unreadable repository.
pub fn at(dir: &Path, rev: &str) -> Result<Files, SnapshotError> {
    let repo = open(dir)?;
    let c = commit(&repo, rev)?;
    let tree = c.tree().map_err(err("read a tree"))?;
    blobs(&repo, &tree)
}

/// The `.nix` files the tree would have after reverting generation `rev` on top of `HEAD`;
/// `None` when the revert would conflict or `rev` is the first generation (the revert itself
/// then fails and changes nothing).
///
/// # Errors
/// Unknown revision or unreadable repository.
pub fn after_revert(dir: &Path, rev: &str) -> Result<Option<Files>, SnapshotError> {
    let repo = open(dir)?;
    let target = commit(&repo, rev)?;
    let head = commit(&repo, "HEAD")?;
    if target.parent_count() == 0 {
        return Ok(None);
    }
    let mainline = if target.parent_count() > 1 { 1 } else { 0 };
    let mut index = repo
        .revert_commit(&target, &head, mainline, None)
        .map_err(err("revert"))?;
    if index.has_conflicts() {
        return Ok(None);
    }
    let oid: Oid = index.write_tree_to(&repo).map_err(err("write a tree"))?;
    let tree = repo.find_tree(oid).map_err(err("read a tree"))?;
    blobs(&repo, &tree).map(Some)
}

/// The `.nix` files of the work tree as they are on disk (symbolic links and `.git` skipped).
///
/// # Errors
/// Unreadable directory.
pub fn worktree(dir: &Path) -> Result<Files, SnapshotError> {
    let mut files = Files::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let entries = std::fs::read_dir(dir.join(&rel))
            .map_err(|e| SnapshotError(format!("read {}: {e}", rel.display())))?;
        for e in entries.flatten() {
            let name = e.file_name();
            let r = rel.join(&name);
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() && name != ".git" {
                stack.push(r);
            } else if t.is_file() && is_nix(&r) && files.len() < MAX_FILES {
                let text = std::fs::read(dir.join(&r))
                    .map_err(|e| SnapshotError(format!("read {}: {e}", r.display())))?;
                if text.len() <= MAX_FILE {
                    files.insert(r, String::from_utf8_lossy(&text).into_owned());
                }
            }
        }
    }
    Ok(files)
}

/// The full commit id of generation `rev`.
///
/// # Errors
/// Unknown revision or unreadable repository.
pub fn resolve(dir: &Path, rev: &str) -> Result<String, SnapshotError> {
    let repo = open(dir)?;
    let id = commit(&repo, rev)?.id().to_string();
    Ok(id)
}
