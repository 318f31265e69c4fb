//! Hand-edit detection: watch the work tree with `notify` and report uncommitted changes (drift).

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};

use crate::{Change, GenError, Tree};

/// Default quiet period after the last file event before the status is read.
pub const DEFAULT_DEBOUNCE: Duration = Duration::from_millis(250);

/// Keeps the watch alive; dropping it stops watching and joins the worker thread.
pub struct DriftWatcher {
    watcher: Option<notify::RecommendedWatcher>,
    worker: Option<JoinHandle<()>>,
}

impl Drop for DriftWatcher {
    fn drop(&mut self) {
        // Dropping the watcher drops the event sender, which ends the worker's loop.
        self.watcher.take();
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// [`watch_drift_with`] with the default debounce (250 ms).
///
/// # Errors
/// As [`watch_drift_with`].
pub fn watch_drift<F>(dir: &Path, callback: F) -> Result<DriftWatcher, GenError>
where
    F: FnMut(Result<Vec<Change>, GenError>) + Send + 'static,
{
    watch_drift_with(dir, DEFAULT_DEBOUNCE, callback)
}

/// Watches tree `dir` for hand edits and calls `callback` with the uncommitted changes whenever
/// they differ from the last report (the first report is the state at start, made only if the
/// tree is dirty then). An empty list means the drift was committed or discarded.
///
/// Read-only accesses and events under `.git/` other than the index and refs are ignored; bursts are debounced (`debounce`
/// of quiet before reading). The status is read under the tree's writer lock, so an agent's
/// mutation in progress is never reported as drift.
///
/// # Errors
/// [`GenError::NotATree`] if `dir` is not a tree, [`GenError::Watch`] if watching fails.
pub fn watch_drift_with<F>(
    dir: &Path,
    debounce: Duration,
    mut callback: F,
) -> Result<DriftWatcher, GenError>
where
    F: FnMut(Result<Vec<Change>, GenError>) + Send + 'static,
{
    let tree = Tree::open(dir)?;
    let root = tree.dir().to_path_buf();
    let git_dir = root.join(".git");
    let (tx, rx) = mpsc::channel::<notify::Result<notify::Event>>();
    let mut watcher = notify::recommended_watcher(tx).map_err(|source| GenError::Watch {
        dir: root.clone(),
        source,
    })?;
    watcher
        .watch(&root, RecursiveMode::Recursive)
        .map_err(|source| GenError::Watch {
            dir: root.clone(),
            source,
        })?;
    let mut last = tree.status()?;
    if !last.is_empty() {
        callback(Ok(last.clone()));
    }
    // Work-tree files matter, and so do the index and refs: a commit clears drift without
    // touching a work-tree file. Objects, logs and our lock file do not.
    let watched_git = [
        git_dir.join("index"),
        git_dir.join("HEAD"),
        git_dir.join("refs/heads"),
    ];
    let relevant = move |event: &notify::Result<notify::Event>| match event {
        Ok(ev) => {
            !matches!(ev.kind, EventKind::Access(_))
                && ev.paths.iter().any(|p| {
                    !p.starts_with(&git_dir) || watched_git.iter().any(|w| p.starts_with(w))
                })
        }
        Err(_) => true,
    };
    let worker = std::thread::Builder::new()
        .name("osmoda-drift".into())
        .spawn(move || {
            while let Ok(event) = rx.recv() {
                if !relevant(&event) {
                    continue;
                }
                // Wait for a quiet period so one save (write, rename, chmod) is one report.
                loop {
                    match rx.recv_timeout(debounce) {
                        Ok(_) => continue,
                        Err(RecvTimeoutError::Timeout) => break,
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                }
                match tree.status() {
                    Ok(now) if now == last => {}
                    Ok(now) => {
                        last = now.clone();
                        callback(Ok(now));
                    }
                    Err(e) => callback(Err(e)),
                }
            }
        })
        .map_err(|e| GenError::io("spawn the drift watcher for", root.clone(), e))?;
    Ok(DriftWatcher {
        watcher: Some(watcher),
        worker: Some(worker),
    })
}
