//! A network namespace with only loopback for a test (also used by agentd's `tests/sandbox.rs`
//! through `#[path]`): so that a bug can never send a packet off the machine.

use std::process::Command;

/// Runs `f` on a thread of its own in a new network namespace with only `lo` (up), with a
/// tokio runtime of its own (its threads stay in the namespace). Prints `skipped: …` and
/// returns false when not root.
pub fn in_netns<F, Fut>(test: &str, f: F) -> bool
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: {test} needs root to create a network namespace");
        return false;
    }
    let joined = std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare(CLONE_NEWNET)");
        let up = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .expect("ip");
        assert!(up.success());
        let links = Command::new("ip")
            .args(["-o", "link"])
            .output()
            .expect("ip");
        let links = String::from_utf8_lossy(&links.stdout).to_string();
        assert_eq!(links.lines().count(), 1, "only loopback expected: {links}");
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f());
    })
    .join();
    if let Err(p) = joined {
        std::panic::resume_unwind(p);
    }
    true
}
