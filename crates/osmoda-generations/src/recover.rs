//! Crash safety of a mutation: the intent is persisted in `.git/osmoda-intent` before the work
//! tree is touched and removed when the mutation has committed or been undone. A process that
//! dies in between (kill -9, power loss) leaves the intent behind; [`Tree::recover`] then either
//! completes the bookkeeping of a commit that landed or puts the work tree back to `HEAD`, so the
//! agent's half-landed change is never mistaken for a person's drift.
//!
//! Git's own lock files (`.git/index.lock`, `.git/refs/heads/*.lock`) left by a crash are cleared
//! when no live process holds them open; a live holder is named in the error instead.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use git2::{ObjectType, Repository};

use crate::worktree::{remove_file_and_empty_parents, statuses, write_blob};
use crate::{GenError, Tree};

/// Name of the intent file inside `.git/`.
pub(crate) const INTENT_FILE: &str = "osmoda-intent";

/// What [`Tree::recover`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// The interrupted mutation had committed: `rev` carries its `Osmoda-Event` trailer.
    Committed {
        /// Ledger id of the request (`config.requested`), if the mutation had one.
        event_id: Option<i64>,
        /// The commit that landed.
        rev: String,
    },
    /// The interrupted mutation had not committed: these files were put back to `HEAD`.
    RolledBack {
        /// Ledger id of the request, if the mutation had one.
        event_id: Option<i64>,
        /// Files restored (relative to the tree).
        files: Vec<String>,
    },
}

/// The persisted intent of one mutation.
pub(crate) struct Intent {
    pub head: String,
    pub event_id: Option<i64>,
}

impl Intent {
    /// Writes the intent durably (file and directory synced) before any file is changed.
    pub(crate) fn persist(&self, git_dir: &Path) -> Result<(), GenError> {
        let path = git_dir.join(INTENT_FILE);
        let tmp = git_dir.join(format!("{INTENT_FILE}.tmp"));
        let event = self.event_id.map_or("-".to_string(), |e| e.to_string());
        let text = format!("head {}\nevent {event}\n", self.head);
        let mut f = fs::File::create(&tmp).map_err(|e| GenError::io("write", &tmp, e))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(|e| GenError::io("write", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| GenError::io("rename", &path, e))?;
        fs::File::open(git_dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| GenError::io("sync", git_dir, e))
    }

    fn load(git_dir: &Path) -> Result<Option<Intent>, GenError> {
        let path = git_dir.join(INTENT_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(GenError::io("read", &path, e)),
        };
        let field = |name: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
                .map(str::to_string)
        };
        Ok(Some(Intent {
            head: field("head").unwrap_or_default(),
            event_id: field("event").and_then(|e| e.parse().ok()),
        }))
    }

    /// Removes the intent: the mutation is over (committed or undone).
    pub(crate) fn clear(git_dir: &Path) -> Result<(), GenError> {
        let path = git_dir.join(INTENT_FILE);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(GenError::io("remove", &path, e)),
        }
    }
}

impl Tree {
    /// Finishes a mutation that a crash interrupted (see the module docs). Returns `None` when
    /// there was none. Call it once at start, before serving edits.
    ///
    /// # Errors
    /// Git or I/O errors; [`GenError::Locked`] if a live process holds a git lock.
    pub fn recover(&self) -> Result<Option<Recovery>, GenError> {
        let locked = self.lock()?;
        let repo = &*locked.repo;
        let git_dir = repo.path().to_path_buf();
        let Some(intent) = Intent::load(&git_dir)? else {
            return Ok(None);
        };
        self.cleared_locks_push(clear_stale_locks(&git_dir)?);
        let head = repo
            .head()
            .and_then(|h| h.peel_to_commit())
            .map_err(GenError::git("read HEAD"))?;
        let landed = head.id().to_string() != intent.head
            && head
                .parent_id(0)
                .is_ok_and(|p| p.to_string() == intent.head)
            && crate::message::parse(head.message().unwrap_or_default()).event_id
                == intent.event_id;
        let head_tree = head.tree().map_err(GenError::git("read HEAD's tree"))?;
        // Either way the index must describe HEAD (a crash may have come before it was written).
        let mut index = repo.index().map_err(GenError::git("open the index"))?;
        index
            .read_tree(&head_tree)
            .and_then(|()| index.write())
            .map_err(GenError::git("reset the index to HEAD"))?;
        let outcome = if landed {
            Recovery::Committed {
                event_id: intent.event_id,
                rev: head.id().to_string(),
            }
        } else {
            let files = restore_all(repo, &self.dir, &head_tree)?;
            Recovery::RolledBack {
                event_id: intent.event_id,
                files,
            }
        };
        Intent::clear(&git_dir)?;
        Ok(Some(outcome))
    }
}

/// Puts every changed tracked file back to `head_tree`, removes files HEAD does not have that the
/// status reports, and the editor's temporary files.
fn restore_all(
    repo: &Repository,
    dir: &Path,
    head_tree: &git2::Tree<'_>,
) -> Result<Vec<String>, GenError> {
    let mut restored = Vec::new();
    for change in statuses(repo)? {
        let rel = PathBuf::from(&change.path);
        let abs = dir.join(&rel);
        match head_tree.get_path(&rel) {
            Ok(entry) if entry.kind() == Some(ObjectType::Blob) => {
                let blob = repo
                    .find_blob(entry.id())
                    .map_err(GenError::git("read a blob"))?;
                let now = fs::read(&abs).ok();
                match crate::attributes::restored(
                    repo,
                    &rel,
                    blob.content(),
                    entry.id(),
                    now.as_deref(),
                ) {
                    Some(bytes) => write_blob(&abs, &bytes, entry.filemode())?,
                    None => continue,
                }
            }
            Ok(_) => continue,
            Err(_) => remove_file_and_empty_parents(dir, &abs)?,
        }
        restored.push(change.path);
    }
    Ok(restored)
}

/// Clears git lock files left by a crash (`index.lock`, `HEAD.lock`, `refs/**/*.lock`) that no
/// live process holds open, and returns their paths relative to `git_dir`.
///
/// # Errors
/// [`GenError::Locked`] naming the process when one holds a lock file open.
pub fn clear_stale_locks(git_dir: &Path) -> Result<Vec<String>, GenError> {
    let mut locks = Vec::new();
    for name in ["index.lock", "HEAD.lock", "config.lock"] {
        let p = git_dir.join(name);
        if p.exists() {
            locks.push(p);
        }
    }
    find_ref_locks(&git_dir.join("refs"), &mut locks);
    let mut cleared = Vec::new();
    for lock in locks {
        if let Some(holder) = holder_of(&lock) {
            return Err(GenError::Locked { path: lock, holder });
        }
        match fs::remove_file(&lock) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(GenError::io("remove the stale lock", &lock, e)),
        }
        let rel = lock.strip_prefix(git_dir).unwrap_or(&lock);
        cleared.push(format!(".git/{}", rel.display()));
    }
    Ok(cleared)
}

fn find_ref_locks(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => find_ref_locks(&path, out),
            Ok(t) if t.is_file() && path.extension().is_some_and(|e| e == "lock") => out.push(path),
            _ => {}
        }
    }
}

/// `pid (command)` of a live process with `path` open, from `/proc/*/fd` (processes of other
/// users are only visible to root).
fn holder_of(path: &Path) -> Option<String> {
    let target = path.canonicalize().ok()?;
    for proc_entry in fs::read_dir("/proc").ok()?.flatten() {
        let name = proc_entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(fds) = fs::read_dir(proc_entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if fs::read_link(fd.path()).is_ok_and(|l| l == target) {
                let comm = fs::read_to_string(proc_entry.path().join("comm")).unwrap_or_default();
                return Some(format!("pid {pid} ({})", comm.trim()));
            }
        }
    }
    None
}
