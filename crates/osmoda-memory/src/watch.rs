//! Follows hand edits: a `notify` watcher on the memory dir triggers a sync.

use std::sync::{mpsc, Arc, Weak};
use std::time::Duration;

use notify::{RecursiveMode, Watcher as _};

use crate::error::{MemoryError, Result};
use crate::memory::Memory;

/// Quiet time after the last file event before a sync (editors write in several steps).
const SETTLE: Duration = Duration::from_millis(200);

/// A running watcher; dropping it stops watching.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Watcher")
    }
}

fn relevant(ev: &notify::Event) -> bool {
    ev.paths.iter().any(|p| {
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
        let (tx, rx) = mpsc::channel::<()>();
        let mut inner = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
            if ev.as_ref().map_or(true, relevant) {
                let _ = tx.send(());
            }
        })
        .map_err(|e| MemoryError::io(self.notes().root(), std::io::Error::other(e)))?;
        inner
            .watch(self.notes().root(), RecursiveMode::Recursive)
            .map_err(|e| MemoryError::io(self.notes().root(), std::io::Error::other(e)))?;
        let weak: Weak<Memory> = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("memory-watch".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    while rx.recv_timeout(SETTLE).is_ok() {}
                    let Some(mem) = weak.upgrade() else { return };
                    if let Err(e) = mem.sync() {
                        tracing::warn!(error = %e, "memory sync after a file change failed");
                    }
                }
            })
            .map_err(|e| MemoryError::io(self.notes().root(), e))?;
        Ok(Watcher { _inner: inner })
    }
}
