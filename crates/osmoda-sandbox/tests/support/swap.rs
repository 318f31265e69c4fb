//! A thread that swaps two directory entries back and forth (`renameat2(RENAME_EXCHANGE)`), as a
//! command given their parent writable can: the race of the review of issue 11, finding 4
//! (also used by agentd's `tests/exec.rs` through `#[path]`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The swapping thread; [`Swapper::stop`] ends it.
pub struct Swapper {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<u64>,
}

impl Swapper {
    /// Starts swapping `a` and `b` (both must exist) until stopped or until one is gone.
    pub fn start(a: PathBuf, b: PathBuf) -> Swapper {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut swaps = 0u64;
            while !flag.load(Ordering::Relaxed) {
                let swapped = nix::fcntl::renameat2(
                    nix::fcntl::AT_FDCWD,
                    &a,
                    nix::fcntl::AT_FDCWD,
                    &b,
                    nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                );
                if swapped.is_err() {
                    break;
                }
                swaps += 1;
                std::thread::yield_now();
            }
            swaps
        });
        Swapper { stop, thread }
    }

    /// Stops the thread and returns how many swaps it made.
    pub fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().expect("the swapping thread")
    }
}
