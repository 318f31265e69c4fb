//! Reading history: list generations, show one, diff two, read a file at a generation, and the
//! `deployed/<n>` tags SafeSwitch sets.

use std::collections::HashMap;
use std::path::Path;

use git2::{Commit, DiffFormat, DiffOptions, Oid, Repository};
use time::format_description::well_known::Rfc3339;

use crate::message;
use crate::{Actor, Change, ChangeKind, GenError, Generation, GenerationDetail, Tree};

/// Prefix of the tags that mark deployed generations (`deployed/1`, `deployed/2`, ...).
pub const DEPLOYED_PREFIX: &str = "deployed/";

impl Tree {
    /// The full commit id of the current generation.
    ///
    /// # Errors
    /// Git errors.
    pub fn head(&self) -> Result<String, GenError> {
        let locked = self.lock()?;
        let commit = locked
            .repo
            .head()
            .and_then(|h| h.peel_to_commit())
            .map_err(GenError::git("read HEAD"))?;
        Ok(commit.id().to_string())
    }

    /// Up to `limit` generations reachable from HEAD, newest first.
    ///
    /// # Errors
    /// Git errors.
    pub fn generations(&self, limit: usize) -> Result<Vec<Generation>, GenError> {
        let locked = self.lock()?;
        let repo = &*locked.repo;
        let tags = tag_map(repo)?;
        let mut walk = repo.revwalk().map_err(GenError::git("walk the history"))?;
        walk.set_sorting(git2::Sort::TOPOLOGICAL | git2::Sort::TIME)
            .map_err(GenError::git("walk the history"))?;
        walk.push_head()
            .map_err(GenError::git("walk the history"))?;
        let mut out = Vec::new();
        for oid in walk.take(limit) {
            let oid = oid.map_err(GenError::git("walk the history"))?;
            let commit = repo
                .find_commit(oid)
                .map_err(GenError::git("read a commit"))?;
            out.push(generation_of(&commit, &tags));
        }
        Ok(out)
    }

    /// One generation: metadata, changed files and the patch against its first parent.
    ///
    /// # Errors
    /// [`GenError::UnknownRevision`] if `rev` names no commit; git errors.
    pub fn show(&self, rev: &str) -> Result<GenerationDetail, GenError> {
        let locked = self.lock()?;
        let repo = &*locked.repo;
        let commit = resolve(repo, rev)?;
        let tree = commit.tree().map_err(GenError::git("read a tree"))?;
        let parent_tree = match commit.parents().next() {
            Some(p) => Some(p.tree().map_err(GenError::git("read a tree"))?),
            None => None,
        };
        let diff = repo
            .diff_tree_to_tree(
                parent_tree.as_ref(),
                Some(&tree),
                Some(&mut DiffOptions::new()),
            )
            .map_err(GenError::git("diff"))?;
        let files = diff
            .deltas()
            .map(|d| Change {
                path: d
                    .new_file()
                    .path()
                    .or(d.old_file().path())
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                kind: match d.status() {
                    git2::Delta::Added => ChangeKind::Added,
                    git2::Delta::Deleted => ChangeKind::Deleted,
                    git2::Delta::Renamed => ChangeKind::Renamed,
                    git2::Delta::Typechange => ChangeKind::Typechange,
                    git2::Delta::Conflicted => ChangeKind::Conflicted,
                    _ => ChangeKind::Modified,
                },
            })
            .collect();
        let patch = patch_text(&diff)?;
        Ok(GenerationDetail {
            generation: generation_of(&commit, &tag_map(repo)?),
            files,
            patch,
        })
    }

    /// Unified diff from generation `from` to generation `to`.
    ///
    /// # Errors
    /// [`GenError::UnknownRevision`] if either names no commit; git errors.
    pub fn diff(&self, from: &str, to: &str) -> Result<String, GenError> {
        let locked = self.lock()?;
        let repo = &*locked.repo;
        let a = resolve(repo, from)?
            .tree()
            .map_err(GenError::git("read a tree"))?;
        let b = resolve(repo, to)?
            .tree()
            .map_err(GenError::git("read a tree"))?;
        let diff = repo
            .diff_tree_to_tree(Some(&a), Some(&b), None)
            .map_err(GenError::git("diff"))?;
        patch_text(&diff)
    }

    /// The text of file `rel` as it was in generation `rev`.
    ///
    /// # Errors
    /// [`GenError::UnknownRevision`], [`GenError::BadPath`] if the file is absent there or is not
    /// UTF-8 text.
    pub fn read_file_at(&self, rev: &str, rel: &Path) -> Result<String, GenError> {
        let rel = crate::worktree::normalize(rel)?;
        let locked = self.lock()?;
        let repo = &*locked.repo;
        let tree = resolve(repo, rev)?
            .tree()
            .map_err(GenError::git("read a tree"))?;
        let entry = tree.get_path(&rel).map_err(|_| GenError::BadPath {
            path: rel.clone(),
            reason: "no such file in that generation",
        })?;
        if entry.filemode() == 0o120000 {
            return Err(GenError::BadPath {
                path: rel.clone(),
                reason: "it is a symbolic link; osModa does not follow links in the tree",
            });
        }
        let blob = repo.find_blob(entry.id()).map_err(|_| GenError::BadPath {
            path: rel.clone(),
            reason: "it is not a file in that generation",
        })?;
        String::from_utf8(blob.content().to_vec()).map_err(|_| GenError::BadPath {
            path: rel.clone(),
            reason: "it is not UTF-8 text",
        })
    }

    /// Every `.nix` file of generation `rev` (relative path → text), read under one lock.
    /// Symbolic links and files that are not UTF-8 map to `Err(reason)`: they are never followed.
    ///
    /// # Errors
    /// [`GenError::UnknownRevision`] or a git error.
    pub fn nix_files_at(
        &self,
        rev: &str,
    ) -> Result<std::collections::BTreeMap<std::path::PathBuf, Result<String, String>>, GenError>
    {
        let locked = self.lock()?;
        let repo = &*locked.repo;
        let tree = resolve(repo, rev)?
            .tree()
            .map_err(GenError::git("read a tree"))?;
        let mut out = std::collections::BTreeMap::new();
        let mut failed = None;
        tree.walk(git2::TreeWalkMode::PreOrder, |dir, entry| {
            let Some(name) = entry.name().filter(|n| n.ends_with(".nix")) else {
                return git2::TreeWalkResult::Ok;
            };
            let rel = std::path::PathBuf::from(format!("{dir}{name}"));
            let text = if entry.filemode() == 0o120000 {
                Err("a symbolic link (not followed)".to_string())
            } else {
                match repo.find_blob(entry.id()) {
                    Ok(blob) => String::from_utf8(blob.content().to_vec())
                        .map_err(|_| "not UTF-8 text".to_string()),
                    Err(e) => {
                        failed = Some(e);
                        return git2::TreeWalkResult::Abort;
                    }
                }
            };
            out.insert(rel, text);
            git2::TreeWalkResult::Ok
        })
        .map_err(GenError::git("walk a tree"))?;
        if let Some(e) = failed {
            return Err(GenError::Git {
                context: "read a blob".into(),
                source: e,
            });
        }
        Ok(out)
    }

    /// Tags generation `rev` as deployed: a lightweight tag `deployed/<n>` with `n` one more than
    /// the highest so far. If `rev` already is the last deployed generation, its tag is returned
    /// and nothing is created. Returns the tag name.
    ///
    /// # Errors
    /// [`GenError::UnknownRevision`]; git errors.
    pub fn tag_deployed(&self, rev: &str) -> Result<String, GenError> {
        let locked = self.lock_for_write()?;
        let repo = &*locked.repo;
        let commit = resolve(repo, rev)?;
        let last = deployed_tags(repo)?.into_iter().max_by_key(|(n, _, _)| *n);
        if let Some((_, name, target)) = &last {
            if *target == commit.id() {
                return Ok(name.clone());
            }
        }
        let name = format!("{DEPLOYED_PREFIX}{}", last.map_or(1, |(n, _, _)| n + 1));
        repo.tag_lightweight(&name, commit.as_object(), false)
            .map_err(GenError::git(format!("create tag {name}")))?;
        Ok(name)
    }

    /// The most recently deployed generation (highest `deployed/<n>` tag), if any.
    ///
    /// # Errors
    /// Git errors.
    pub fn last_deployed(&self) -> Result<Option<Generation>, GenError> {
        let locked = self.lock()?;
        let repo = &*locked.repo;
        let Some((_, _, oid)) = deployed_tags(repo)?.into_iter().max_by_key(|(n, _, _)| *n) else {
            return Ok(None);
        };
        let commit = repo
            .find_commit(oid)
            .map_err(GenError::git("read a commit"))?;
        Ok(Some(generation_of(&commit, &tag_map(repo)?)))
    }
}

/// Resolves a revision (commit id, abbreviation, tag, `HEAD~1`, ...) to a commit.
pub(crate) fn resolve<'r>(repo: &'r Repository, rev: &str) -> Result<Commit<'r>, GenError> {
    let unknown = |reason: String| GenError::UnknownRevision {
        rev: rev.to_string(),
        reason,
    };
    if rev.is_empty()
        || rev.starts_with('-')
        || rev.len() > 256
        || rev.chars().any(char::is_control)
    {
        return Err(unknown("not a revision".into()));
    }
    repo.revparse_single(rev)
        .and_then(|o| o.peel_to_commit())
        .map_err(|e| unknown(e.message().to_string()))
}

/// Builds a [`Generation`] from a commit and a map of tags by target.
pub(crate) fn generation_of(commit: &Commit<'_>, tags: &HashMap<Oid, Vec<String>>) -> Generation {
    let id = commit.id();
    let author = commit.author();
    let message = String::from_utf8_lossy(commit.message_bytes()).into_owned();
    let parsed = message::parse(&message);
    let time = commit.time().seconds();
    let timestamp = time::OffsetDateTime::from_unix_timestamp(time)
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_default();
    let tags = tags.get(&id).cloned().unwrap_or_default();
    let deployed = tags.iter().any(|t| t.starts_with(DEPLOYED_PREFIX));
    let rev = id.to_string();
    Generation {
        short: rev.chars().take(12).collect(),
        rev,
        author: Actor {
            name: String::from_utf8_lossy(author.name_bytes()).into_owned(),
            email: String::from_utf8_lossy(author.email_bytes()).into_owned(),
            peer: parsed.peer,
        },
        time,
        timestamp,
        message,
        reason: parsed.reason,
        event_id: parsed.event_id,
        actor: parsed.actor,
        reverts: parsed.reverts,
        restores: parsed.restores,
        parents: commit.parent_ids().map(|p| p.to_string()).collect(),
        tags,
        deployed,
    }
}

/// All tags, grouped by the commit they point at.
fn tag_map(repo: &Repository) -> Result<HashMap<Oid, Vec<String>>, GenError> {
    let mut map: HashMap<Oid, Vec<String>> = HashMap::new();
    let refs = repo
        .references_glob("refs/tags/*")
        .map_err(GenError::git("list tags"))?;
    for r in refs.flatten() {
        let (Some(name), Ok(commit)) = (r.shorthand().map(str::to_string), r.peel_to_commit())
        else {
            continue;
        };
        map.entry(commit.id()).or_default().push(name);
    }
    for names in map.values_mut() {
        names.sort();
    }
    Ok(map)
}

/// `(n, tag name, commit)` for every `deployed/<n>` tag.
fn deployed_tags(repo: &Repository) -> Result<Vec<(u64, String, Oid)>, GenError> {
    let refs = repo
        .references_glob(&format!("refs/tags/{DEPLOYED_PREFIX}*"))
        .map_err(GenError::git("list tags"))?;
    let mut out = Vec::new();
    for r in refs.flatten() {
        let Some(name) = r.shorthand().map(str::to_string) else {
            continue;
        };
        let Some(n) = name
            .strip_prefix(DEPLOYED_PREFIX)
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        if let Ok(commit) = r.peel_to_commit() {
            out.push((n, name, commit.id()));
        }
    }
    Ok(out)
}

/// Renders a diff as unified patch text (`diff --git` headers, hunks, `+`/`-`/` ` lines).
pub(crate) fn patch_text(diff: &git2::Diff<'_>) -> Result<String, GenError> {
    let mut out = String::new();
    diff.print(DiffFormat::Patch, |_, _, line| {
        if matches!(line.origin(), '+' | '-' | ' ') {
            out.push(line.origin());
        }
        out.push_str(&String::from_utf8_lossy(line.content()));
        true
    })
    .map_err(GenError::git("render the diff"))?;
    Ok(out)
}
