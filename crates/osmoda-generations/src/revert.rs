//! Going back without rewriting history: `revert` (undo one generation) and `restore` (bring
//! back a whole generation's tree), each a new validated commit.

use std::path::{Path, PathBuf};

use git2::{Delta, Oid, Repository};

use crate::history::resolve;
use crate::tree::commit_message;
use crate::worktree::{remove_file_and_empty_parents, write_blob};
use crate::{Actor, GenError, Generation, Tree, TRAILER_RESTORES, TRAILER_REVERTS};

impl Tree {
    /// Undoes generation `rev` with `git revert` semantics: a new commit on top of the current
    /// generation that reverses `rev`'s changes, keeping everything committed after it.
    /// Message: `Revert generation <short> "<its reason's first line>": <reason>`, plus the usual
    /// trailers and `Osmoda-Reverts: <rev>`.
    ///
    /// # Errors
    /// [`GenError::UnknownRevision`]; [`GenError::BadInput`] for the first generation (nothing to
    /// undo: use [`Tree::restore`]); [`GenError::Conflict`] if later generations changed the same
    /// lines; [`GenError::Dirty`], [`GenError::Invalid`] and the rest as for [`Tree::mutate`].
    pub fn revert(
        &self,
        rev: &str,
        actor: &Actor,
        reason: &str,
        event_id: Option<i64>,
    ) -> Result<Generation, GenError> {
        let (id, short, subject) = self.describe(rev)?;
        let reason = format!("Revert generation {short} \"{subject}\": {}", reason.trim());
        let msg = commit_message(
            actor,
            &reason,
            event_id,
            Some((TRAILER_REVERTS, id.to_string())),
        )?;
        self.transaction(actor, &msg, |repo, root| {
            let target = repo
                .find_commit(id)
                .map_err(GenError::git("read the generation"))?;
            if target.parent_count() == 0 {
                return Err(GenError::BadInput {
                    field: "rev",
                    reason: format!(
                        "{short} is the first generation, there is nothing before it to go back to"
                    ),
                });
            }
            let head = repo
                .head()
                .and_then(|h| h.peel_to_commit())
                .map_err(GenError::git("read HEAD"))?;
            let mainline = if target.parent_count() > 1 { 1 } else { 0 };
            let mut index = repo
                .revert_commit(&target, &head, mainline, None)
                .map_err(GenError::git("revert"))?;
            if index.has_conflicts() {
                let mut paths: Vec<String> = index
                    .conflicts()
                    .map_err(GenError::git("list conflicts"))?
                    .flatten()
                    .filter_map(|c| c.our.or(c.their).or(c.ancestor))
                    .map(|e| String::from_utf8_lossy(&e.path).into_owned())
                    .collect();
                paths.dedup();
                return Err(GenError::Conflict {
                    rev: short.clone(),
                    paths,
                });
            }
            let tree = index
                .write_tree_to(repo)
                .map_err(GenError::git("write the reverted tree"))?;
            apply_tree(repo, root, head.tree_id(), tree)
        })
    }

    /// Makes a new commit whose tree equals generation `rev`'s tree ("Revert to generation
    /// <short>: <reason>", trailer `Osmoda-Restores: <rev>`). SafeSwitch records this after
    /// rolling back a failed switch.
    ///
    /// # Errors
    /// [`GenError::UnknownRevision`]; [`GenError::NoChange`] if the current tree already equals
    /// it; the rest as for [`Tree::mutate`].
    pub fn restore(
        &self,
        rev: &str,
        actor: &Actor,
        reason: &str,
        event_id: Option<i64>,
    ) -> Result<Generation, GenError> {
        self.restore_titled("Revert to generation", rev, actor, reason, event_id)
    }

    /// Like [`Tree::restore`], titled "Switch to generation <short>: <reason>": SafeSwitch
    /// records this before applying an older generation, so HEAD is what runs.
    ///
    /// # Errors
    /// As [`Tree::restore`].
    pub fn switch_to(
        &self,
        rev: &str,
        actor: &Actor,
        reason: &str,
        event_id: Option<i64>,
    ) -> Result<Generation, GenError> {
        self.restore_titled("Switch to generation", rev, actor, reason, event_id)
    }

    fn restore_titled(
        &self,
        title: &str,
        rev: &str,
        actor: &Actor,
        reason: &str,
        event_id: Option<i64>,
    ) -> Result<Generation, GenError> {
        let (id, short, _) = self.describe(rev)?;
        let reason = format!("{title} {short}: {}", reason.trim());
        let msg = commit_message(
            actor,
            &reason,
            event_id,
            Some((TRAILER_RESTORES, id.to_string())),
        )?;
        self.transaction(actor, &msg, |repo, root| {
            let target = repo
                .find_commit(id)
                .map_err(GenError::git("read the generation"))?;
            let head = repo
                .head()
                .and_then(|h| h.peel_to_commit())
                .map_err(GenError::git("read HEAD"))?;
            apply_tree(repo, root, head.tree_id(), target.tree_id())
        })
    }

    /// Full id, short id and first line of the reason of generation `rev`.
    fn describe(&self, rev: &str) -> Result<(Oid, String, String), GenError> {
        let locked = self.lock()?;
        let commit = resolve(&locked.repo, rev)?;
        let message = String::from_utf8_lossy(commit.message_bytes()).into_owned();
        let subject = crate::message::parse(&message)
            .reason
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
        let short: String = commit.id().to_string().chars().take(12).collect();
        Ok((commit.id(), short, subject))
    }
}

/// Writes the difference between trees `from` and `to` into the work tree; returns changed paths.
fn apply_tree(
    repo: &Repository,
    root: &Path,
    from: Oid,
    to: Oid,
) -> Result<Vec<PathBuf>, GenError> {
    let from = repo.find_tree(from).map_err(GenError::git("read a tree"))?;
    let to = repo.find_tree(to).map_err(GenError::git("read a tree"))?;
    let diff = repo
        .diff_tree_to_tree(Some(&from), Some(&to), None)
        .map_err(GenError::git("diff"))?;
    let mut changed = Vec::new();
    for delta in diff.deltas() {
        let (old, new) = (delta.old_file(), delta.new_file());
        if let Some(path) = old.path().filter(|_| delta.status() == Delta::Deleted) {
            remove_file_and_empty_parents(root, &root.join(path))?;
            changed.push(path.to_path_buf());
            continue;
        }
        let Some(path) = new.path() else { continue };
        let blob = repo
            .find_blob(new.id())
            .map_err(GenError::git("read a blob"))?;
        write_blob(&root.join(path), blob.content(), i32::from(new.mode()))?;
        changed.push(path.to_path_buf());
    }
    Ok(changed)
}
