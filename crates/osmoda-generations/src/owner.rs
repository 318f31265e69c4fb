//! A tree owned by another user than the one agentd runs as (root) keeps its owner: after every
//! generation, whatever git created or replaced under `.git` (objects, refs, logs, the index,
//! osModa's intent and lock files) and the files the change wrote are given back to the owner
//! of the tree's root, so the person can keep using git on their tree without `sudo`.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::GenError;

/// The owner to keep, when the tree's root belongs to someone other than this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Owner {
    uid: u32,
    gid: u32,
}

impl Owner {
    /// The owner of `dir`, if it is not the effective user of this process (read from the owner
    /// of `/proc/self`, which is the process's effective uid).
    pub(crate) fn of(dir: &Path) -> Option<Owner> {
        let tree = fs::metadata(dir).ok()?;
        let me = fs::metadata("/proc/self").ok()?;
        (tree.uid() != me.uid()).then_some(Owner {
            uid: tree.uid(),
            gid: tree.gid(),
        })
    }

    /// Gives every file and directory under `git_dir`, and each of `files`, that is not the
    /// owner's back to the owner (symbolic links are not followed).
    ///
    /// # Errors
    /// [`GenError::Io`] naming the path that could not be changed.
    pub(crate) fn restore(&self, git_dir: &Path, files: &[PathBuf]) -> Result<(), GenError> {
        let mut stack = vec![git_dir.to_path_buf()];
        stack.extend(files.iter().cloned());
        while let Some(p) = stack.pop() {
            let Ok(meta) = fs::symlink_metadata(&p) else {
                continue;
            };
            if meta.uid() != self.uid || meta.gid() != self.gid {
                std::os::unix::fs::lchown(&p, Some(self.uid), Some(self.gid))
                    .map_err(|e| GenError::io("give back to the tree's owner", &p, e))?;
            }
            if meta.is_dir() && p.starts_with(git_dir) {
                let entries = fs::read_dir(&p).map_err(|e| GenError::io("list", &p, e))?;
                stack.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
            }
        }
        Ok(())
    }
}
