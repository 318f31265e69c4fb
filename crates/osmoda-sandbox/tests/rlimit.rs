//! The ring sandbox's limits where no cgroup can be made: `setrlimit` (`RLIMIT_AS` for memory,
//! `RLIMIT_NPROC` for tasks), in both cases that lead there — a daemon that is not root (it
//! runs the sandbox in a user namespace of its own, and only root makes cgroups) and a root
//! daemon on a machine without usable cgroups (here: a mount namespace whose `/sys/fs/cgroup`
//! is an empty tmpfs).
//!
//! A test without libtest's harness: the outer run (root, in a network namespace it makes with
//! only `lo`) starts this same binary twice, as an unprivileged account and as root without
//! cgroups; each inner run checks the limits itself and fails (exit 101) on the first miss.
//! Prints `skipped:` when not root. The cgroup v1 path is `tests/ring.rs`; cgroup v2 with the
//! `memory` and `pids` controllers delegated does not exist on this machine (its v2 hierarchy
//! has no controllers), so it is not run here.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use osmoda_sandbox::{Boundary, Enforcement, Limits, RingOutput, RingSpec};

#[path = "support/netns.rs"]
mod netns;

const ROLE: &str = "OSMODA_RLIMIT_TEST_ROLE";

/// Accounts that exist on Debian-like systems and run nothing: the unprivileged daemon's uid.
/// `RLIMIT_NPROC` counts every task of the sandbox's user, so an account that runs nothing else
/// keeps the count to this test's own.
const ACCOUNTS: &[&str] = &["games", "news", "list", "irc", "gnats"];

fn main() {
    match std::env::var(ROLE).as_deref() {
        Ok("unprivileged") => inner("unprivileged"),
        Ok("no-cgroup") => {
            hide_cgroups();
            inner("no-cgroup");
        }
        _ => outer(),
    }
}

fn outer() {
    if !nix::unistd::geteuid().is_root() {
        println!(
            "skipped: rlimit needs root (to start its cases as another user and without cgroups)"
        );
        return;
    }
    let Some(account) = ACCOUNTS
        .iter()
        .filter_map(|a| nix::unistd::User::from_name(a).ok().flatten())
        .find(|u| !u.uid.is_root())
    else {
        println!("skipped: rlimit needs one of the accounts {ACCOUNTS:?}");
        return;
    };
    let exe = std::env::current_exe().unwrap();
    netns::in_netns("rlimit", move || async move {
        let uid = account.uid.to_string();
        let gid = account.gid.to_string();
        let unprivileged = [
            "setpriv",
            "--reuid",
            &uid,
            "--regid",
            &gid,
            "--clear-groups",
            "--",
        ]
        .map(String::from)
        .into_iter()
        .chain([exe.display().to_string()])
        .collect::<Vec<_>>();
        let no_cgroup = vec![exe.display().to_string()];
        let cases = [
            ("unprivileged", account.name.as_str(), unprivileged),
            ("no-cgroup", "root", no_cgroup),
        ];
        for (role, user, argv) in cases {
            let child = tokio::process::Command::new(&argv[0])
                .args(&argv[1..])
                .env(ROLE, role)
                .current_dir("/")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .unwrap();
            let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
                .await
                .unwrap_or_else(|_| panic!("{role}: no answer within 300 s"))
                .unwrap();
            let stdout = String::from_utf8_lossy(&out.stdout);
            let stderr = String::from_utf8_lossy(&out.stderr);
            println!("{role} (as {user}):\n{stdout}");
            assert!(
                out.status.success(),
                "{role}: {}\n{stdout}\n{stderr}",
                out.status
            );
            assert!(stdout.contains("all checks passed"), "{role}: {stdout}");
        }
    });
    println!("rlimit: both cases passed");
}

/// A private mount namespace whose `/sys/fs/cgroup` is an empty tmpfs: no cgroup can be made.
fn hide_cgroups() {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS)");
    for args in [
        &["--make-rprivate", "/"][..],
        &["-t", "tmpfs", "none", "/sys/fs/cgroup"][..],
    ] {
        let st = std::process::Command::new("mount")
            .args(args)
            .status()
            .unwrap();
        assert!(st.success(), "mount {args:?}");
    }
}

async fn run(argv: &[&str], memory_mb: u64, tasks: u64) -> RingOutput {
    let mut spec = RingSpec::new(argv.iter().copied());
    spec.timeout = Duration::from_secs(60);
    spec.limits = Limits {
        memory_bytes: memory_mb << 20,
        tasks,
    };
    Boundary::osmoda_default().run_ring(&spec).await.unwrap()
}

fn inner(role: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // An ordinary command runs, with the limits enforced by rlimits.
        let out = run(&["sh", "-c", "echo ran"], 256, 64).await;
        assert_eq!(out.output.stdout_lossy(), "ran\n", "{role}: {out:?}");
        assert_eq!(out.enforced_by, Enforcement::Rlimit, "{role}: {out:?}");
        println!("enforced_by={}", out.enforced_by.as_str());
        // Memory: 300 MiB under a 64 MiB budget is refused (the address-space limit: the
        // allocation fails, no kernel kill), and fits under 1 GiB.
        let big = "my $x = 'a' x (300 * 1024 * 1024); print length($x), \"\\n\"";
        let out = run(&["perl", "-e", big], 64, 64).await;
        assert!(!out.output.success(), "{role}: {out:?}");
        assert!(
            !out.output.stdout_lossy().contains("314572800"),
            "{role}: {out:?}"
        );
        assert!(
            !out.memory_exceeded,
            "{role}: no cgroup reports a kill: {out:?}"
        );
        let out = run(&["perl", "-e", big], 1024, 64).await;
        assert_eq!(out.output.stdout_lossy(), "314572800\n", "{role}: {out:?}");
        println!("memory: 300 MiB refused under 64 MiB, fits under 1 GiB");
        // Tasks: 40 background sleeps cannot all start under 16, and can under 128.
        let forks = "for i in $(seq 40); do sleep 30 & done; echo all-started";
        let out = run(&["sh", "-c", forks], 256, 16).await;
        assert!(
            !out.output.stdout_lossy().contains("all-started"),
            "{role}: {out:?}"
        );
        assert!(
            out.output.stderr_lossy().contains("fork"),
            "{role}: {out:?}"
        );
        let out = run(&["sh", "-c", forks], 256, 128).await;
        assert!(
            out.output.stdout_lossy().contains("all-started"),
            "{role}: {out:?}"
        );
        println!("tasks: 40 refused under 16, started under 128");
    });
    println!("{role}: all checks passed");
}
