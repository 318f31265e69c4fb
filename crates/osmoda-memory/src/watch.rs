//! Follows hand edits: a `notify` watcher on the memory dir triggers a sync of the notes that
//! changed (of all of them when an event names no note, e.g. the `memory/` dir itself).
//!
//! A watch belongs to a directory, not its name: when the memory dir itself is removed or
//! replaced (restored from a copy, `rm -r` and recreated), its watch is gone. So an event on
//! the memory dir itself re-arms the watch, and while the dir is missing the watcher looks
//! for it every second; once it is back, everything is synced.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Weak};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};

use crate::error::{MemoryError, Result};
use crate::memory::Memory;

/// Quiet time after the last file event before a sync (editors write in several steps).
const SETTLE: Duration = Duration::from_millis(200);

/// How often a watcher whose directory is gone looks for it again.
const REARM_EVERY: Duration = Duration::from_secs(1);

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _inner: Arc<std::sync::Mutex<notify::RecommendedWatcher>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watcher")
    }
}

/// What a batch of events asks for: these notes, or everything.
#[derive(Debug, Default, PartialEq, Eq)]
struct Pending {
    all: bool,
    notes: BTreeSet<String>,
}

impl Pending {
    /// Add an event's paths: a note path (relative to `root`) is synced alone; the
    /// directories, paths outside the root and events without paths sync everything.
    fn add(&mut self, root: &Path, notes: &crate::notes::Notes, paths: Option<&[PathBuf]>) {
        let Some(paths) = paths.filter(|p| !p.is_empty()) else {
            self.all = true;
            return;
        };
        for p in paths {
            let rel = p
                .strip_prefix(root)
                .ok()
                .map(|r| r.to_string_lossy().into_owned());
            match rel {
                Some(rel) if notes.is_note(&rel) => {
                    self.notes.insert(rel);
                }
                // Temp files of atomic writes and other names are not notes.
                Some(rel) if rel.contains('/') || rel.ends_with(".md") => {}
                Some(rel) if !rel.is_empty() && rel != crate::notes::DAILY_DIR => {}
                _ => self.all = true,
            }
        }
    }
}

fn relevant(root: &Path, ev: &notify::Event) -> bool {
    ev.paths.iter().any(|p| {
        if p == root {
            return true;
        }
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        (name.ends_with(".md") && !name.starts_with('.')) || name == "memory"
    })
}

impl Memory {
    /// Watch the memory dir; every change to a note is followed by a sync (after
    /// [`SETTLE`] of quiet). The thread ends when the watcher or the memory is dropped.
    ///
    /// # Errors
    /// [`MemoryError::Io`] when the directory cannot be watched.
    pub fn watch(self: &Arc<Self>) -> Result<Watcher> {
        let (tx, rx) = mpsc::channel::<Option<Vec<PathBuf>>>();
        let root = self.notes().root().to_path_buf();
        let r = root.clone();
        let mut inner = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            match ev {
                // Lost events (queue overflow, rescan): sync everything.
                Err(_) => drop(tx.send(None)),
                Ok(ev) if ev.need_rescan() => drop(tx.send(None)),
                Ok(ev) if relevant(&r, &ev) => drop(tx.send(Some(ev.paths))),
                Ok(_) => {}
            }
        })
        .map_err(|e| MemoryError::io(&root, std::io::Error::other(e)))?;
        inner
            .watch(&root, RecursiveMode::Recursive)
            .map_err(|e| MemoryError::io(&root, std::io::Error::other(e)))?;
        let inner = Arc::new(std::sync::Mutex::new(inner));
        let watcher = Arc::downgrade(&inner);
        let weak: Weak<Memory> = Arc::downgrade(self);
        let notes = self.notes().clone();
        std::thread::Builder::new()
            .name("memory-watch".into())
            .spawn(move || {
                // The root's watch must be armed again (its dir was removed or replaced).
                let mut lost = false;
                loop {
                    let first =
                        match rx.recv_timeout(if lost { REARM_EVERY } else { Duration::MAX }) {
                            Ok(first) => Some(first),
                            Err(mpsc::RecvTimeoutError::Timeout) => None,
                            Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        };
                    let mut pending = Pending::default();
                    if let Some(first) = &first {
                        lost |= names_root(&root, first.as_deref());
                        pending.add(&root, &notes, first.as_deref());
                        while let Ok(more) = rx.recv_timeout(SETTLE) {
                            lost |= names_root(&root, more.as_deref());
                            pending.add(&root, &notes, more.as_deref());
                        }
                    }
                    if lost && root.is_dir() {
                        let Some(w) = watcher.upgrade() else { return };
                        let mut w = w.lock().unwrap_or_else(|p| p.into_inner());
                        let _ = w.unwatch(&root);
                        match w.watch(&root, RecursiveMode::Recursive) {
                            Ok(()) => {
                                lost = false;
                                pending.all = true;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "memory dir not watched again yet")
                            }
                        }
                    }
                    if first.is_none() && !pending.all {
                        continue;
                    }
                    let Some(mem) = weak.upgrade() else { return };
                    let r = if pending.all {
                        mem.sync()
                    } else {
                        mem.sync_paths(&pending.notes.into_iter().collect::<Vec<_>>())
                    };
                    if let Err(e) = r {
                        tracing::warn!(error = %e, "memory sync after a file change failed");
                    }
                }
            })
            .map_err(|e| MemoryError::io(self.notes().root(), e))?;
        Ok(Watcher { _inner: inner })
    }
}

/// Whether an event names the memory dir itself (removed, replaced, renamed), or is a lost
/// event (`None`), after which the watch may be stale too.
fn names_root(root: &Path, paths: Option<&[PathBuf]>) -> bool {
    paths.is_none_or(|ps| ps.iter().any(|p| p == root))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_name_notes_or_everything() {
        let root = Path::new("/m");
        let notes = crate::notes::Notes::new(root);
        let check = |paths: Option<&[&str]>, all: bool, want: &[&str]| {
            let mut p = Pending::default();
            let paths: Option<Vec<PathBuf>> =
                paths.map(|ps| ps.iter().map(PathBuf::from).collect());
            p.add(root, &notes, paths.as_deref());
            assert_eq!(p.all, all, "{paths:?}");
            let got: Vec<&str> = p.notes.iter().map(String::as_str).collect();
            assert_eq!(got, want, "{paths:?}");
        };
        check(
            Some(&["/m/memory/2026-01-02.md"]),
            false,
            &["memory/2026-01-02.md"],
        );
        check(
            Some(&["/m/MEMORY.md", "/m/MEMORY.md"]),
            false,
            &["MEMORY.md"],
        );
        // An atomic write's temp file, then its rename onto the note.
        check(
            Some(&["/m/memory/.osmoda-x.tmp", "/m/memory/2026-01-02.md"]),
            false,
            &["memory/2026-01-02.md"],
        );
        check(Some(&["/m/memory"]), true, &[]);
        check(Some(&["/m"]), true, &[]);
        check(Some(&["/elsewhere/MEMORY.md"]), true, &[]);
        check(None, true, &[]);
        check(Some(&[]), true, &[]);
    }
}
