//! Tree states the gate compares, read with git (read-only): a generation's files, the result a
//! revert would have, and the work tree (a hand edit about to be committed). Every file counts,
//! not only `*.nix`: NixOS imports a module by any name (`imports = [ ./ssh-off ]`) and a path
//! value (`openssh.authorizedKeys.keyFiles = [ ./alice.pub ]`) stands for its file's content.

use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};

use super::eval::Files;

/// Largest file read (bigger ones are not configuration anyone edits by hand).
const MAX_FILE: usize = 4 << 20;
/// Most files read from one state.
const MAX_FILES: usize = 2000;

/// Why a state could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the tree for the approval gate: {0}")]
pub struct SnapshotError(String);

fn err(what: &str) -> impl Fn(git2::Error) -> SnapshotError + '_ {
    move |e| SnapshotError(format!("{what}: {}", e.message()))
}

/// Whether `p` is named as a Nix module (the gate evaluates a changed one even when nothing
/// imports it yet).
pub fn is_nix(p: &Path) -> bool {
    p.extension().is_some_and(|e| e == "nix")
}

/// What a symbolic link at `rel` (to `target`) is to the gate. A link inside the tree is the file
/// it points to (`Some(resolved path)`); a link that leaves the tree (say
/// `hardware-configuration.nix` → `/etc/nixos/…`) cannot be read by the evaluator, so it stands
/// as a module that cannot be evaluated, whose text names the target: unchanged, it is the same
/// before and after (a hand edit elsewhere passes); pointed elsewhere, it is a changed module the
/// gate cannot judge (`gate.undecidable`).
enum Link {
    Inside(PathBuf),
    Outside(String),
}

fn link(rel: &Path, target: &Path) -> Link {
    let mut out = rel.parent().map(Path::to_path_buf).unwrap_or_default();
    for c in target.components() {
        match c {
            std::path::Component::Normal(n) => out.push(n),
            std::path::Component::CurDir => {}
            std::path::Component::ParentDir if out.pop() => {}
            _ => {
                return Link::Outside(format!(
                    "throw \"osmoda-gate: {} is a symbolic link to {}, outside the tree\"\n",
                    rel.display(),
                    target.display()
                ))
            }
        }
    }
    Link::Inside(out)
}

/// Links are followed this many times at most (a cycle is outside the tree).
const MAX_LINKS: usize = 8;

fn blobs(repo: &Repository, tree: &git2::Tree<'_>) -> Result<Files, SnapshotError> {
    let mut files = Files::new();
    let mut failed = None;
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let name = entry.name().unwrap_or_default();
        let rel = PathBuf::from(format!("{dir}{name}"));
        if entry.kind() == Some(ObjectType::Blob) && files.len() < MAX_FILES {
            match blob_text(repo, tree, &rel, entry.id(), entry.filemode()) {
                Ok(Some(text)) => {
                    files.insert(rel, text);
                }
                Ok(None) => {}
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

/// The text of a `.nix` blob, following symbolic links inside the tree (see [`link`]).
fn blob_text(
    repo: &Repository,
    tree: &git2::Tree<'_>,
    rel: &Path,
    id: Oid,
    mode: i32,
) -> Result<Option<String>, git2::Error> {
    let (mut rel, mut id, mut mode) = (rel.to_path_buf(), id, mode);
    for _ in 0..=MAX_LINKS {
        let b = repo.find_blob(id)?;
        if b.content().len() > MAX_FILE {
            return Ok(None);
        }
        if mode != i32::from(git2::FileMode::Link) {
            return Ok(Some(String::from_utf8_lossy(b.content()).into_owned()));
        }
        let target = PathBuf::from(String::from_utf8_lossy(b.content()).into_owned());
        match link(&rel, &target) {
            Link::Outside(text) => return Ok(Some(text)),
            Link::Inside(next) => match tree.get_path(&next) {
                Ok(e) if e.kind() == Some(ObjectType::Blob) => {
                    (rel, id, mode) = (next, e.id(), e.filemode());
                }
                _ => return Ok(Some(outside(&rel, &target))),
            },
        }
    }
    Ok(Some(outside(&rel, Path::new("a chain of links"))))
}

fn outside(rel: &Path, target: &Path) -> String {
    format!(
        "throw \"osmoda-gate: {} is a symbolic link to {}, which the gate cannot read\"\n",
        rel.display(),
        target.display()
    )
}

fn open(dir: &Path) -> Result<Repository, SnapshotError> {
    Repository::open(dir).map_err(err("open the repository"))
}

fn commit<'r>(repo: &'r Repository, rev: &str) -> Result<git2::Commit<'r>, SnapshotError> {
    repo.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| SnapshotError(format!("no generation {rev}: {}", e.message())))
}

/// The files of generation `rev` (`HEAD`, a commit id, a tag).
///
/// # Errors
/// Unknown revision or unreadable repository.
pub fn at(dir: &Path, rev: &str) -> Result<Files, SnapshotError> {
    let repo = open(dir)?;
    let c = commit(&repo, rev)?;
    let tree = c.tree().map_err(err("read a tree"))?;
    blobs(&repo, &tree)
}

/// The files the tree would have after reverting generation `rev` on top of `HEAD`;
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

/// The files of the work tree as they are on disk (`.git` skipped; symbolic links as in
/// a generation, see [`link`]).
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
            } else if (t.is_file() || t.is_symlink()) && files.len() < MAX_FILES {
                if let Some(text) = worktree_text(dir, &r)? {
                    files.insert(r, text);
                }
            }
        }
    }
    Ok(files)
}

fn worktree_text(dir: &Path, rel: &Path) -> Result<Option<String>, SnapshotError> {
    let mut rel = rel.to_path_buf();
    let mut from: Option<(PathBuf, PathBuf)> = None;
    for _ in 0..=MAX_LINKS {
        let abs = dir.join(&rel);
        let meta = match std::fs::symlink_metadata(&abs) {
            Ok(m) => m,
            // A link to a file the tree does not have: as `blob_text` says it.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if let Some((link_rel, target)) = &from {
                    return Ok(Some(outside(link_rel, target)));
                }
                return Ok(None);
            }
            Err(e) => return Err(SnapshotError(format!("read {}: {e}", rel.display()))),
        };
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&abs)
                .map_err(|e| SnapshotError(format!("read {}: {e}", rel.display())))?;
            match link(&rel, &target) {
                Link::Outside(text) => return Ok(Some(text)),
                Link::Inside(next) => {
                    from = Some((rel, target));
                    rel = next;
                }
            }
            continue;
        }
        if !meta.is_file() {
            let (r, t) = from.unwrap_or((rel, PathBuf::from("something that is not a file")));
            return Ok(Some(outside(&r, &t)));
        }
        let text = std::fs::read(&abs)
            .map_err(|e| SnapshotError(format!("read {}: {e}", rel.display())))?;
        return Ok((text.len() <= MAX_FILE).then(|| String::from_utf8_lossy(&text).into_owned()));
    }
    Ok(Some(outside(&rel, Path::new("a chain of links"))))
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
