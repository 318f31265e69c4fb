//! [`Tree`]: opening/creating a tree, the locked edit→validate→commit transaction, and drift status.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use git2::{IndexAddOption, ObjectType, Repository, RepositoryInitOptions};

use crate::message::{self, TRAILER_ACTOR, TRAILER_EVENT};
use crate::validate::{self, Candidate, NixCheck};
use crate::worktree::{
    collect_files, normalize, read_text, remove_file_and_empty_parents, statuses, write_blob,
};
use crate::{history, Actor, GenError, Generation};

/// Name of the lock file inside `.git/` that serializes writers across processes.
const LOCK_FILE: &str = "osmoda.lock";

/// A git-tracked Nix tree. `Send + Sync`: share one per process behind an `Arc`.
pub struct Tree {
    pub(crate) dir: PathBuf,
    repo: Mutex<Repository>,
    lock_file: File,
    pub(crate) nix: Option<PathBuf>,
    /// The long-lived evaluator used for validation (under the writer lock).
    repl: Mutex<Option<crate::repl::Repl>>,
    /// Stale git locks cleared since the caller last asked (see [`Tree::take_cleared_locks`]).
    cleared_locks: Mutex<Vec<String>>,
    /// The full NixOS evaluation of `validate = build`, if configured.
    full_eval: Option<crate::full_eval::FullEval>,
}

/// Holds the in-process mutex and the cross-process `flock` for one operation.
pub(crate) struct Locked<'a> {
    pub repo: MutexGuard<'a, Repository>,
    file: &'a File,
}

impl Drop for Locked<'_> {
    fn drop(&mut self) {
        // Closing the file would also release it; the Tree keeps the file open for reuse.
        let _ = fs4::FileExt::unlock(self.file);
    }
}

impl Tree {
    /// Creates a tree in `dir` (new or empty) from `template`, with a first commit
    /// "Initial generation" authored by `actor`.
    ///
    /// # Errors
    /// [`GenError::NotEmpty`] if `dir` holds files, [`GenError::Invalid`] if a template file is not
    /// valid Nix, I/O and git errors otherwise.
    pub fn init(dir: &Path, template: &Path, actor: &Actor) -> Result<Tree, GenError> {
        let sig = actor.signature()?;
        if !template.is_dir() {
            return Err(GenError::BadInput {
                field: "template",
                reason: format!("{} is not a directory", template.display()),
            });
        }
        if dir.exists() {
            let mut entries = fs::read_dir(dir).map_err(|e| GenError::io("list", dir, e))?;
            if entries.next().is_some() {
                return Err(GenError::NotEmpty {
                    dir: dir.to_path_buf(),
                });
            }
        }
        let mut files = Vec::new();
        collect_files(template, Path::new(""), &mut files)?;
        let texts: Vec<(PathBuf, String)> = files
            .iter()
            .filter(|rel| rel.extension().is_some_and(|e| e == "nix"))
            .map(|rel| read_text(&template.join(rel), rel).map(|t| (rel.clone(), t)))
            .collect::<Result<_, _>>()?;
        let candidates: Vec<Candidate<'_>> = texts
            .iter()
            .map(|(rel, text)| Candidate {
                rel,
                abs: template.join(rel),
                text,
            })
            .collect();
        validate::validate(&candidates, validate::find_nix_instantiate().as_deref())?;

        fs::create_dir_all(dir).map_err(|e| GenError::io("create directory", dir, e))?;
        for rel in &files {
            let (from, to) = (template.join(rel), dir.join(rel));
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)
                    .map_err(|e| GenError::io("create directory", parent, e))?;
            }
            fs::copy(&from, &to).map_err(|e| GenError::io("copy", &from, e))?;
        }
        let mut opts = RepositoryInitOptions::new();
        opts.initial_head("main").no_reinit(true);
        let repo = Repository::init_opts(dir, &opts).map_err(GenError::git("git init"))?;
        let mut index = repo.index().map_err(GenError::git("open the index"))?;
        index
            .add_all(["*"], IndexAddOption::DEFAULT, None)
            .map_err(GenError::git("add the template files"))?;
        index.write().map_err(GenError::git("write the index"))?;
        let tree_id = index
            .write_tree()
            .map_err(GenError::git("write the tree"))?;
        let tree = repo
            .find_tree(tree_id)
            .map_err(GenError::git("read the tree"))?;
        let msg = message::build(
            "Initial generation",
            &[(TRAILER_ACTOR, actor.name.trim().to_string())],
        );
        repo.commit(Some("HEAD"), &sig, &sig, &msg, &tree, &[])
            .map_err(GenError::git("commit"))?;
        drop(tree);
        drop(repo);
        Tree::open(dir)
    }

    /// Opens an existing tree (its root must be the work tree of a git repository with at least
    /// one commit). Validation uses `nix-instantiate` if it is on `PATH` ([`NixCheck::Auto`]).
    ///
    /// # Errors
    /// [`GenError::NotATree`] if `dir` is not such a tree.
    pub fn open(dir: &Path) -> Result<Tree, GenError> {
        let not_tree = |reason: String| GenError::NotATree {
            dir: dir.to_path_buf(),
            reason,
        };
        let dir = dir.canonicalize().map_err(|e| not_tree(e.to_string()))?;
        let repo = Repository::open(&dir).map_err(|e| {
            if e.code() == git2::ErrorCode::Owner {
                not_usable(&dir, &e)
            } else {
                not_tree(format!(
                    "{} (create one with `agentctl config init DIR`)",
                    e.message()
                ))
            }
        })?;
        let workdir = repo
            .workdir()
            .ok_or_else(|| not_tree("it is a bare repository".into()))?;
        let workdir = workdir
            .canonicalize()
            .map_err(|e| not_tree(e.to_string()))?;
        if workdir != dir {
            return Err(not_tree(format!(
                "it is inside the repository at {}",
                workdir.display()
            )));
        }
        repo.head().and_then(|h| h.peel_to_commit()).map_err(|e| {
            not_tree(format!(
                "it has no first generation ({}); create one with `agentctl config init DIR`",
                e.message()
            ))
        })?;
        let lock_path = repo.path().join(LOCK_FILE);
        let lock_file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| GenError::io("open the lock file", &lock_path, e))?;
        Ok(Tree {
            dir,
            repo: Mutex::new(repo),
            lock_file,
            nix: validate::find_nix_instantiate(),
            repl: Mutex::new(None),
            cleared_locks: Mutex::new(Vec::new()),
            full_eval: None,
        })
    }

    /// Chooses whether `nix-instantiate` takes part in validation (default [`NixCheck::Auto`]).
    ///
    /// # Errors
    /// [`GenError::BadInput`] for [`NixCheck::Required`] when `nix-instantiate` is not on `PATH`.
    pub fn with_nix_check(mut self, check: NixCheck) -> Result<Tree, GenError> {
        self.nix =
            match check {
                NixCheck::Off => None,
                NixCheck::Auto => validate::find_nix_instantiate(),
                NixCheck::Required => Some(validate::find_nix_instantiate().ok_or_else(|| {
                    GenError::BadInput {
                        field: "nix check",
                        reason: "nix-instantiate is not on PATH; install Nix or use NixCheck::Auto"
                            .into(),
                    }
                })?),
            };
        Ok(self)
    }

    /// Sets the validation level of every later change (see [`crate::Validate`]): `Parse` is
    /// [`NixCheck::Off`], `Eval` is [`NixCheck::Auto`], `Build` adds a full NixOS evaluation of
    /// the tree (with osModa's NixOS module `module`, when given) before each commit.
    pub fn with_validate(mut self, level: crate::Validate, module: Option<PathBuf>) -> Tree {
        self.nix = match level {
            crate::Validate::Parse => None,
            _ => validate::find_nix_instantiate(),
        };
        self.full_eval =
            (level == crate::Validate::Build).then_some(crate::full_eval::FullEval { module });
        self
    }

    /// The tree's root directory (canonical).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Refuses `rel` when it, or a directory on the way to it, is a symbolic link.
    ///
    /// # Errors
    /// [`GenError::BadPath`] naming the link.
    pub fn check_no_symlink(&self, rel: &Path) -> Result<(), GenError> {
        refuse_symlinks(&self.dir, rel)
    }

    /// The `nix-instantiate` used for validation, if any.
    pub fn nix_instantiate(&self) -> Option<&Path> {
        self.nix.as_deref()
    }

    /// True if changed files are also checked with `nix-instantiate`.
    pub fn uses_nix(&self) -> bool {
        self.nix.is_some()
    }

    /// Validates `text` as the new content of `rel` exactly as a change writing it would be
    /// validated before its commit (rnix, then the evaluator at this tree's level), without
    /// writing anything to the tree: callers judge an edit (agentd's approval gate) only once
    /// it is known to be able to land.
    ///
    /// # Errors
    /// [`GenError::Invalid`] naming `rel` with the parser's or evaluator's message.
    pub fn check_text(&self, rel: &Path, text: &str) -> Result<(), GenError> {
        let scratch = tempfile::Builder::new()
            .prefix("osmoda-check-")
            .tempdir()
            .map_err(|e| GenError::io("create a scratch directory in", std::env::temp_dir(), e))?;
        // The nix-instantiate fallback reads the file from disk: a private copy, never the tree.
        let abs = scratch.path().join(
            rel.file_name()
                .map_or_else(|| PathBuf::from("file.nix"), PathBuf::from),
        );
        fs::write(&abs, text).map_err(|e| GenError::io("write", &abs, e))?;
        let candidate = Candidate { rel, abs, text };
        let mut repl = self
            .repl
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        validate::validate_with(&[candidate], self.nix.as_deref(), &mut repl)
    }

    /// Git lock files left by a crash that were cleared (relative paths such as
    /// `.git/index.lock`) since the last call; the caller records them (agentd: in the ledger).
    pub fn take_cleared_locks(&self) -> Vec<String> {
        std::mem::take(
            &mut *self
                .cleared_locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }

    pub(crate) fn cleared_locks_push(&self, cleared: Vec<String>) {
        if !cleared.is_empty() {
            self.cleared_locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend(cleared);
        }
    }

    /// Takes the in-process mutex, then the cross-process lock.
    pub(crate) fn lock(&self) -> Result<Locked<'_>, GenError> {
        // A panic in another thread cannot leave the repository half-changed (every transaction
        // restores on failure), so a poisoned mutex is still safe to use.
        let mut repo = self
            .repo
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        fs4::FileExt::lock(&self.lock_file)
            .map_err(|e| GenError::io("lock", self.dir.join(".git").join(LOCK_FILE), e))?;
        // libgit2 caches the repository's settings (`core.autocrlf`, …) for the life of a
        // `Repository`; a person may change them (or the tree's owner) at any time, so every
        // operation starts from a freshly opened repository and sees what git would see.
        let fresh = Repository::open(&self.dir).map_err(|e| not_usable(&self.dir, &e))?;
        *repo = fresh;
        Ok(Locked {
            repo,
            file: &self.lock_file,
        })
    }

    /// [`Tree::lock`] for an operation that writes git's files: git lock files a crash left
    /// behind (no live holder) are cleared first and remembered for
    /// [`Tree::take_cleared_locks`]; a live holder is named.
    pub(crate) fn lock_for_write(&self) -> Result<Locked<'_>, GenError> {
        let locked = self.lock()?;
        self.cleared_locks_push(crate::recover::clear_stale_locks(locked.repo.path())?);
        Ok(locked)
    }

    /// Applies `edit` to the work tree and records the result as one generation.
    ///
    /// `edit` receives the tree root and returns the files it changed (relative to the root, or
    /// absolute paths inside it; a file it deleted counts). Those files are validated and
    /// committed with author = `actor`, message = `reason`, and the trailers
    /// `Osmoda-Event: <event_id>` (if given) and `Osmoda-Actor: <actor.name>`. See the crate
    /// docs for which ledger event `event_id` names.
    ///
    /// # Errors
    /// [`GenError::Dirty`] if the tree has uncommitted changes (nothing is run),
    /// [`GenError::NoChange`] if the edit changed nothing, [`GenError::Invalid`] if validation
    /// fails, the closure's own error, or a git/I/O error. In every error case the work tree, the
    /// index, `HEAD` and the history are as they were before the call.
    pub fn mutate<F>(
        &self,
        actor: &Actor,
        reason: &str,
        event_id: Option<i64>,
        edit: F,
    ) -> Result<Generation, GenError>
    where
        F: FnOnce(&Path) -> Result<Vec<PathBuf>, GenError>,
    {
        let msg = commit_message(actor, reason, event_id, None)?;
        self.transaction(actor, &msg, |_, root| edit(root))
    }

    /// The locked edit → validate → commit sequence shared by `mutate`, `revert` and `restore`.
    pub(crate) fn transaction<F>(
        &self,
        actor: &Actor,
        msg: &str,
        edit: F,
    ) -> Result<Generation, GenError>
    where
        F: FnOnce(&Repository, &Path) -> Result<Vec<PathBuf>, GenError>,
    {
        let sig = actor.signature()?;
        let locked = self.lock_for_write()?;
        let repo = &*locked.repo;
        let git_dir = repo.path().to_path_buf();
        if repo.head_detached().unwrap_or(false) {
            return Err(GenError::DetachedHead {
                dir: self.dir.clone(),
                rev: repo
                    .head()
                    .ok()
                    .and_then(|h| h.target())
                    .map_or_else(String::new, |o| o.to_string()),
            });
        }
        let mut index = repo.index().map_err(GenError::git("open the index"))?;
        index.read(true).map_err(GenError::git("read the index"))?;
        let dirty = statuses(repo)?;
        if !dirty.is_empty() {
            return Err(GenError::Dirty { changes: dirty });
        }
        let head = repo
            .head()
            .and_then(|h| h.peel_to_commit())
            .map_err(GenError::git("read HEAD"))?;
        let head_tree = head.tree().map_err(GenError::git("read HEAD's tree"))?;
        crate::recover::Intent {
            head: head.id().to_string(),
            event_id: event_of(msg),
        }
        .persist(&git_dir)?;

        let mut reported = Vec::new();
        let result = catch_unwind(AssertUnwindSafe(|| edit(repo, &self.dir)))
            .unwrap_or_else(|_| Err(GenError::Edit("the edit panicked".into())))
            .and_then(|paths| {
                reported = paths;
                let rels = reported
                    .iter()
                    .map(|p| normalize(p.strip_prefix(&self.dir).unwrap_or(p)))
                    .collect::<Result<BTreeSet<_>, _>>()?;
                self.commit_paths(repo, &mut index, &head, &head_tree, &rels, &sig, msg)
            });
        match result {
            Ok(generation) => {
                crate::recover::Intent::clear(&git_dir)?;
                self.keep_owner(&git_dir, &reported)?;
                Ok(generation)
            }
            Err(original) => {
                let undo = index
                    .read(true)
                    .map_err(GenError::git("re-read the index"))
                    .and_then(|()| self.restore_worktree(repo, &head_tree, &reported));
                match undo.and_then(|()| crate::recover::Intent::clear(&git_dir)) {
                    Ok(()) => Err(original),
                    Err(restore) => Err(GenError::RestoreFailed {
                        original: Box::new(original),
                        restore: Box::new(restore),
                    }),
                }
            }
        }
    }

    /// Validates and commits the files the edit reported; HEAD moves only if everything worked.
    #[allow(clippy::too_many_arguments)]
    fn commit_paths(
        &self,
        repo: &Repository,
        index: &mut git2::Index,
        head: &git2::Commit<'_>,
        head_tree: &git2::Tree<'_>,
        rels: &BTreeSet<PathBuf>,
        sig: &git2::Signature<'_>,
        msg: &str,
    ) -> Result<Generation, GenError> {
        // Read each reported file once; keep only the ones that differ from HEAD.
        let mut changed: Vec<(&PathBuf, Option<String>)> = Vec::new();
        for rel in rels {
            let abs = self.dir.join(rel);
            refuse_symlinks(&self.dir, rel)?;
            let bytes = match fs::symlink_metadata(&abs) {
                Ok(meta) if meta.is_file() => {
                    Some(fs::read(&abs).map_err(|e| GenError::io("read", &abs, e))?)
                }
                Ok(_) => {
                    return Err(GenError::BadPath {
                        path: rel.clone(),
                        reason: "it is not a regular file",
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(GenError::io("inspect", &abs, e)),
            };
            let in_head = head_tree.get_path(rel).ok().map(|e| e.id());
            let now = match &bytes {
                Some(b) => Some(
                    crate::attributes::blob_id(repo, rel, b, in_head)
                        .map_err(GenError::git("hash a file"))?,
                ),
                None => None,
            };
            if now == in_head {
                continue;
            }
            let text = match bytes {
                Some(b) if rel.extension().is_some_and(|e| e == "nix") => {
                    Some(String::from_utf8(b).map_err(|_| GenError::Invalid {
                        path: rel.clone(),
                        message: "it is not UTF-8 text".into(),
                    })?)
                }
                _ => None,
            };
            changed.push((rel, text));
        }
        if changed.is_empty() {
            return Err(GenError::NoChange(
                "the edit left every file as it was".into(),
            ));
        }
        let candidates: Vec<Candidate<'_>> = changed
            .iter()
            .filter_map(|(rel, text)| {
                text.as_deref().map(|t| Candidate {
                    rel,
                    abs: self.dir.join(rel),
                    text: t,
                })
            })
            .collect();
        {
            let mut repl = self
                .repl
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            validate::validate_with(&candidates, self.nix.as_deref(), &mut repl)?;
        }
        if let Some(full) = &self.full_eval {
            full.check(&self.dir, self.nix.as_deref())?;
        }

        for (rel, _) in &changed {
            if self.dir.join(rel).exists() {
                index
                    .add_path(rel)
                    .map_err(GenError::git(format!("stage {}", rel.display())))?;
            } else {
                index
                    .remove_path(rel)
                    .map_err(GenError::git(format!("stage removal of {}", rel.display())))?;
            }
        }
        self.commit_index(repo, index, head, sig, msg)
    }

    /// Writes the index's tree, commits it on top of `head`, then writes the index file.
    pub(crate) fn commit_index(
        &self,
        repo: &Repository,
        index: &mut git2::Index,
        head: &git2::Commit<'_>,
        sig: &git2::Signature<'_>,
        msg: &str,
    ) -> Result<Generation, GenError> {
        let tree_id = index
            .write_tree()
            .map_err(GenError::git("write the tree"))?;
        if tree_id == head.tree_id() {
            return Err(GenError::NoChange(
                "the tree is identical to the current generation".into(),
            ));
        }
        let tree = repo
            .find_tree(tree_id)
            .map_err(GenError::git("read the new tree"))?;
        // libgit2 refuses to move HEAD unless it still points at `head` (a compare-and-swap).
        let id = repo
            .commit(Some("HEAD"), sig, sig, msg, &tree, &[head])
            .map_err(GenError::git("commit"))?;
        if let Err(e) = index.write() {
            let original = GenError::Git {
                context: "write the index".into(),
                source: e,
            };
            return match repo
                .head()
                .and_then(|mut r| r.set_target(head.id(), "osmoda: undo a failed commit"))
            {
                Ok(_) => Err(original),
                Err(e) => Err(GenError::RestoreFailed {
                    original: Box::new(original),
                    restore: Box::new(GenError::Git {
                        context: "move HEAD back".into(),
                        source: e,
                    }),
                }),
            };
        }
        let commit = repo
            .find_commit(id)
            .map_err(GenError::git("read the new commit"))?;
        Ok(history::generation_of(&commit, &HashMap::new()))
    }

    /// Puts every file the failed edit touched back to its content in `head_tree`.
    ///
    /// The tree was clean when the edit started (checked under the lock), so every difference
    /// from HEAD now is the edit's doing.
    fn restore_worktree(
        &self,
        repo: &Repository,
        head_tree: &git2::Tree<'_>,
        reported: &[PathBuf],
    ) -> Result<(), GenError> {
        let mut paths: BTreeSet<PathBuf> = reported
            .iter()
            .filter_map(|p| normalize(p.strip_prefix(&self.dir).unwrap_or(p)).ok())
            .collect();
        paths.extend(statuses(repo)?.into_iter().map(|c| PathBuf::from(c.path)));
        for rel in paths {
            let abs = self.dir.join(&rel);
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
                        // Unchanged as git sees it: the person's bytes stay (mode included).
                        None => {
                            write_blob(&abs, now.as_deref().unwrap_or_default(), entry.filemode())?
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => remove_file_and_empty_parents(&self.dir, &abs)?,
            }
        }
        Ok(())
    }
}

impl Tree {
    /// Gives what a change wrote back to the tree's owner (see `owner.rs`); a no-op when agentd
    /// runs as that owner. The owner is the root directory's at the time of the change (a
    /// person may `chown` the tree while agentd runs).
    pub(crate) fn keep_owner(&self, git_dir: &Path, files: &[PathBuf]) -> Result<(), GenError> {
        match &crate::owner::Owner::of(&self.dir) {
            Some(owner) => {
                // The files and the directories the change may have created for them.
                let mut paths = Vec::new();
                for f in files {
                    let abs = if f.is_absolute() {
                        f.clone()
                    } else {
                        self.dir.join(f)
                    };
                    let mut at = abs.as_path();
                    while at.starts_with(&self.dir) && at != self.dir {
                        paths.push(at.to_path_buf());
                        at = match at.parent() {
                            Some(p) => p,
                            None => break,
                        };
                    }
                }
                owner.restore(git_dir, &paths)
            }
            None => Ok(()),
        }
    }
}

/// Why an existing tree cannot be opened now. git refuses a repository owned by another user
/// (its `safe.directory` check); say how to fix it, since the tree exists and must not be
/// re-created.
fn not_usable(dir: &Path, e: &git2::Error) -> GenError {
    if e.code() == git2::ErrorCode::Owner {
        GenError::NotOwned {
            dir: dir.to_path_buf(),
            reason: e.message().to_string(),
        }
    } else {
        GenError::NotATree {
            dir: dir.to_path_buf(),
            reason: e.message().to_string(),
        }
    }
}

/// The `Osmoda-Event` id a commit message carries.
fn event_of(msg: &str) -> Option<i64> {
    crate::message::parse(msg).event_id
}

/// Refuses a path whose file or any parent directory inside the tree is a symbolic link: a link
/// may point outside the tree, and its target must never be read or committed.
pub(crate) fn refuse_symlinks(dir: &Path, rel: &Path) -> Result<(), GenError> {
    let mut abs = dir.to_path_buf();
    for part in rel.components() {
        abs.push(part);
        if fs::symlink_metadata(&abs).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(GenError::BadPath {
                path: rel.to_path_buf(),
                reason:
                    "it is (or is inside) a symbolic link; osModa does not follow links in the tree",
            });
        }
    }
    Ok(())
}

/// Builds a commit message: reason, then `Osmoda-Event`, `Osmoda-Actor` and an optional extra trailer.
pub(crate) fn commit_message(
    actor: &Actor,
    reason: &str,
    event_id: Option<i64>,
    extra: Option<(&str, String)>,
) -> Result<String, GenError> {
    let reason = message::check_reason(reason)?;
    let mut trailers = Vec::new();
    if let Some(id) = event_id {
        trailers.push((TRAILER_EVENT, id.to_string()));
    }
    trailers.push((TRAILER_ACTOR, actor.name.trim().to_string()));
    if let Some(peer) = actor
        .peer
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        if peer.chars().any(char::is_control) {
            return Err(GenError::BadInput {
                field: "actor peer",
                reason: "it contains control characters".into(),
            });
        }
        trailers.push((crate::message::TRAILER_PEER, peer.to_string()));
    }
    trailers.extend(extra);
    Ok(message::build(reason, &trailers))
}
