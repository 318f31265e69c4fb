//! The work tree side: recording hand edits, drift status, and safe file-system helpers.

use std::fs;
use std::path::{Component, Path, PathBuf};

use git2::{IndexAddOption, Repository, Status, StatusOptions};

use crate::tree::commit_message;
use crate::validate::{self, Candidate};
use crate::{Actor, Change, ChangeKind, GenError, Generation, Tree};

impl Tree {
    /// Records the work tree's uncommitted changes (a person's hand edits) as one generation
    /// authored by `actor`.
    ///
    /// # Errors
    /// [`GenError::NoChange`] if the tree is clean, [`GenError::Invalid`] if a changed `.nix` file
    /// does not validate (the person's files are left untouched), git/I/O errors.
    pub fn commit_worktree(
        &self,
        actor: &Actor,
        reason: &str,
        event_id: Option<i64>,
    ) -> Result<Generation, GenError> {
        let msg = commit_message(actor, reason, event_id, None)?;
        let sig = actor.signature()?;
        let locked = self.lock_for_write()?;
        let repo = &*locked.repo;
        let mut index = repo.index().map_err(GenError::git("open the index"))?;
        index.read(true).map_err(GenError::git("read the index"))?;
        let changes = statuses(repo)?;
        if changes.is_empty() {
            return Err(GenError::NoChange(
                "the work tree has no uncommitted changes".into(),
            ));
        }
        let mut texts = Vec::new();
        for c in changes
            .iter()
            .filter(|c| c.kind != ChangeKind::Deleted && c.path.ends_with(".nix"))
        {
            let rel = PathBuf::from(&c.path);
            let text = read_text(&self.dir.join(&rel), &rel)?;
            texts.push((rel, text));
        }
        let candidates: Vec<Candidate<'_>> = texts
            .iter()
            .map(|(rel, text)| Candidate {
                rel,
                abs: self.dir.join(rel),
                text,
            })
            .collect();
        validate::validate(&candidates, self.nix.as_deref())?;
        let head = repo
            .head()
            .and_then(|h| h.peel_to_commit())
            .map_err(GenError::git("read HEAD"))?;
        let staged = index
            .add_all(["*"], IndexAddOption::DEFAULT, None)
            .and_then(|()| index.update_all(["*"], None))
            .map_err(GenError::git("stage the changes"))
            .and_then(|()| self.commit_index(repo, &mut index, &head, &sig, &msg));
        if staged.is_err() {
            let _ = index.read(true);
        }
        if staged.is_ok() {
            self.keep_owner(repo.path(), &[])?;
        }
        staged
    }

    /// The uncommitted changes in the work tree (drift), untracked files included, ignored ones not.
    ///
    /// # Errors
    /// Git errors.
    pub fn status(&self) -> Result<Vec<Change>, GenError> {
        let locked = self.lock()?;
        let repo = &*locked.repo;
        repo.index()
            .and_then(|mut i| i.read(true))
            .map_err(GenError::git("read the index"))?;
        statuses(repo)
    }
}

/// Lists uncommitted changes (index or work tree vs HEAD), untracked files included.
pub(crate) fn statuses(repo: &Repository) -> Result<Vec<Change>, GenError> {
    let mut opts = StatusOptions::new();
    opts.include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false)
        .exclude_submodules(true);
    let list = repo
        .statuses(Some(&mut opts))
        .map_err(GenError::git("read the status"))?;
    let mut out = Vec::new();
    let index = repo.index().map_err(GenError::git("open the index"))?;
    for entry in list.iter() {
        let s = entry.status();
        if s == Status::WT_MODIFIED
            && crate::attributes::same_as_index(
                repo,
                &index,
                Path::new(&*String::from_utf8_lossy(entry.path_bytes())),
            )
        {
            // Only its line endings differ, and its attributes say git normalises them.
            continue;
        }
        let kind = if s.is_conflicted() {
            ChangeKind::Conflicted
        } else if s.intersects(Status::WT_NEW | Status::INDEX_NEW) {
            ChangeKind::Added
        } else if s.intersects(Status::WT_DELETED | Status::INDEX_DELETED) {
            ChangeKind::Deleted
        } else if s.intersects(Status::WT_RENAMED | Status::INDEX_RENAMED) {
            ChangeKind::Renamed
        } else if s.intersects(Status::WT_TYPECHANGE | Status::INDEX_TYPECHANGE) {
            ChangeKind::Typechange
        } else if s.intersects(Status::WT_MODIFIED | Status::INDEX_MODIFIED) {
            ChangeKind::Modified
        } else {
            continue;
        };
        out.push(Change {
            path: String::from_utf8_lossy(entry.path_bytes()).into_owned(),
            kind,
        });
    }
    Ok(out)
}

/// Checks that `path` is relative, stays inside the tree and does not touch `.git`.
pub(crate) fn normalize(path: &Path) -> Result<PathBuf, GenError> {
    let bad = |reason| {
        Err(GenError::BadPath {
            path: path.to_path_buf(),
            reason,
        })
    };
    let mut out = PathBuf::new();
    for comp in path.components() {
        match comp {
            Component::Normal(c) if out.as_os_str().is_empty() && c == ".git" => {
                return bad("it is inside .git")
            }
            Component::Normal(c) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => return bad("it leaves the tree (..)"),
            Component::RootDir | Component::Prefix(_) => {
                return bad("it must be relative to the tree root")
            }
        }
    }
    if out.as_os_str().is_empty() {
        return bad("it is empty");
    }
    Ok(out)
}

/// Writes a blob's content to `abs` (creating parents) with the mode git recorded.
pub(crate) fn write_blob(abs: &Path, content: &[u8], filemode: i32) -> Result<(), GenError> {
    use std::os::unix::fs::PermissionsExt;
    if fs::read(abs).ok().as_deref() != Some(content) {
        if let Some(parent) = abs.parent() {
            fs::create_dir_all(parent).map_err(|e| GenError::io("create directory", parent, e))?;
        }
        fs::write(abs, content).map_err(|e| GenError::io("write", abs, e))?;
    }
    let mode = if filemode == 0o100755 { 0o755 } else { 0o644 };
    let current = fs::metadata(abs)
        .map_err(|e| GenError::io("inspect", abs, e))?
        .permissions()
        .mode()
        & 0o777;
    if current & 0o100 != mode & 0o100 {
        fs::set_permissions(abs, fs::Permissions::from_mode(mode))
            .map_err(|e| GenError::io("chmod", abs, e))?;
    }
    Ok(())
}

/// Removes a file the failed edit created, and the directories it created for it.
pub(crate) fn remove_file_and_empty_parents(root: &Path, abs: &Path) -> Result<(), GenError> {
    match fs::remove_file(abs) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(GenError::io("remove", abs, e)),
    }
    let mut dir = abs.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
    Ok(())
}

pub(crate) fn read_text(abs: &Path, rel: &Path) -> Result<String, GenError> {
    let bytes = fs::read(abs).map_err(|e| GenError::io("read", abs, e))?;
    String::from_utf8(bytes).map_err(|_| GenError::Invalid {
        path: rel.to_path_buf(),
        message: "it is not UTF-8 text".into(),
    })
}

/// Lists the regular files under `dir` (relative to the template root), skipping `.git`.
pub(crate) fn collect_files(
    root: &Path,
    rel: &Path,
    out: &mut Vec<PathBuf>,
) -> Result<(), GenError> {
    let dir = root.join(rel);
    let mut entries: Vec<_> = fs::read_dir(&dir)
        .map_err(|e| GenError::io("list", &dir, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| GenError::io("list", &dir, e))?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name == ".git" {
            continue;
        }
        let child = rel.join(&name);
        let kind = entry
            .file_type()
            .map_err(|e| GenError::io("inspect", entry.path(), e))?;
        if kind.is_dir() {
            collect_files(root, &child, out)?;
        } else if kind.is_file() {
            out.push(child);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_paths() {
        assert_eq!(
            normalize(Path::new("./a/b.nix")).ok(),
            Some(PathBuf::from("a/b.nix"))
        );
        for bad in ["../x", "/etc/passwd", ".git/config", "", "."] {
            assert!(normalize(Path::new(bad)).is_err(), "{bad} accepted");
        }
    }
}
