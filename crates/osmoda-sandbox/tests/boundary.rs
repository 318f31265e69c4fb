//! The real sandbox (bubblewrap + setpriv). These tests need root — bwrap creates the mount
//! namespace with root's privileges, as osmoda-watch does under the NixOS module — and say
//! `skipped: needs root` otherwise. We run as root here and in CI.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use osmoda_sandbox::{Boundary, Exit, Pinned, Spec};

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        true
    } else {
        eprintln!("skipped: needs root");
        false
    }
}

/// A directory outside /tmp (the sandbox gets its own /tmp), readable by everyone.
fn base() -> tempfile::TempDir {
    let d = tempfile::tempdir_in(outside_tmp()).unwrap();
    chmod(d.path(), 0o755);
    d
}

fn chmod(p: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let d = base();
    let secret = d.path().join("admin");
    std::fs::create_dir(&secret).unwrap();
    chmod(&secret, 0o755);
    std::fs::write(secret.join("token"), "s3cret").unwrap();
    let open = d.path().join("open");
    std::fs::write(&open, "public").unwrap();
    chmod(&open, 0o644);
    chmod(&secret.join("token"), 0o644);
    (d, secret, open)
}

async fn sh(b: &Boundary, user: &str, script: &str) -> osmoda_sandbox::Output {
    b.run(
        &Spec::new(["sh", "-c", script])
            .user(user)
            .timeout(Duration::from_secs(30)),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn masked_paths_are_unreachable_even_for_root_and_siblings_are_not() {
    if !root() {
        return;
    }
    let (_d, secret, open) = setup();
    let b = Boundary::new([secret.clone()]);
    for user in ["root", "nobody"] {
        let out = sh(&b, user, &format!("cat {}", open.display())).await;
        assert!(out.success(), "{user}: control read failed: {out:?}");
        assert_eq!(out.stdout_lossy(), "public");
        let out = sh(&b, user, &format!("cat {}/token", secret.display())).await;
        assert!(!out.success(), "{user} read the masked file: {out:?}");
        assert!(!out.stdout_lossy().contains("s3cret"));
        // Neither unmounting the mask nor writing into it works.
        let out = sh(
            &b,
            user,
            &format!(
                "umount {0} || umount -l {0}; cat {0}/token",
                secret.display()
            ),
        )
        .await;
        assert!(!out.stdout_lossy().contains("s3cret"), "{user}: {out:?}");
        let out = sh(&b, user, &format!("echo x > {}/planted", secret.display())).await;
        assert!(!out.success(), "{user} wrote into the mask: {out:?}");
    }
    assert!(!secret.join("planted").exists());
    // The mask is there only inside: the same command outside reads it.
    assert_eq!(
        std::fs::read_to_string(secret.join("token")).unwrap(),
        "s3cret"
    );
}

/// A root command cannot reach a service manager that would start a process outside the
/// namespace: root's own under `/run/user/0` (H3 of the issue 8 review), another user's under
/// `/run/user/<uid>`, systemd's D-Bus. Stand-in sockets in a user-runtime dir the test makes.
#[tokio::test]
async fn a_root_command_sees_no_user_service_manager() {
    if !root() {
        return;
    }
    let created = !Path::new("/run/user").exists();
    let dir = Path::new("/run/user/4242");
    std::fs::create_dir_all(dir.join("systemd")).unwrap();
    let sock = dir.join("systemd/private");
    let _ = std::fs::remove_file(&sock);
    let _l = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let b = Boundary::osmoda_default();
    let out = sh(
        &b,
        "root",
        &format!(
            "ls -A /run/user; test -e {} && echo reachable; true",
            sock.display()
        ),
    )
    .await;
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout_lossy(), "", "root saw the managers: {out:?}");
    // Outside, it is there.
    assert!(sock.exists());
    let _ = std::fs::remove_dir_all(dir);
    if created {
        let _ = std::fs::remove_dir("/run/user");
    }
}

fn cap_bits(status: &str, field: &str) -> u64 {
    let line = status.lines().find(|l| l.starts_with(field)).unwrap();
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

#[tokio::test]
async fn the_bounding_set_cannot_undo_the_masks() {
    if !root() {
        return;
    }
    let b = Boundary::osmoda_default();
    let out = sh(&b, "root", "cat /proc/self/status").await;
    assert!(out.success(), "{out:?}");
    let st = out.stdout_lossy();
    // CAP_SYS_MODULE 16, CAP_SYS_RAWIO 17, CAP_SYS_PTRACE 19, CAP_SYS_ADMIN 21,
    // CAP_DAC_READ_SEARCH 2, CAP_MKNOD 27.
    for bit in [2, 16, 17, 19, 21, 27] {
        for field in ["CapBnd:", "CapEff:", "CapPrm:"] {
            assert_eq!(
                cap_bits(&st, field) & (1 << bit),
                0,
                "{field} has cap {bit}: {st}"
            );
        }
    }
    assert_ne!(
        cap_bits(&st, "CapEff:"),
        0,
        "root keeps its other capabilities"
    );
    assert!(st.lines().any(|l| l == "NoNewPrivs:\t1"), "{st}");
    let out = sh(&b, "nobody", "id -u; cat /proc/self/status").await;
    let st = out.stdout_lossy();
    assert!(st.starts_with("65534\n"), "{st}");
    for field in ["CapBnd:", "CapEff:", "CapPrm:", "CapInh:", "CapAmb:"] {
        assert_eq!(cap_bits(&st, field), 0, "{field}: {st}");
    }
}

/// Agent-specified commands run below the daemon that starts them (nice 10, issue 11: the
/// approval thread shares the CPU with them) and cannot climb back: not by `renice`/`nice -n`,
/// not by raising `RLIMIT_NICE` first, not as root (no `CAP_SYS_NICE`/`CAP_SYS_RESOURCE`).
#[tokio::test]
async fn commands_run_at_a_lower_priority_they_cannot_raise() {
    if !root() {
        return;
    }
    let b = Boundary::osmoda_default();
    // CAP_SYS_RESOURCE 24, CAP_SYS_NICE 23.
    let script = "cut -d' ' -f19 /proc/self/stat; \
                  nice -n -15 cut -d' ' -f19 /proc/self/stat 2>/dev/null; \
                  renice -n -5 -p $$ >/dev/null 2>&1 && echo reniced; \
                  prlimit --nice=40:40 --pid $$ 2>/dev/null && echo lifted; \
                  (ulimit -e 40 2>/dev/null && echo lifted-sh); \
                  grep -E '^Max nice' /proc/self/limits; grep CapBnd /proc/self/status";
    let want = osmoda_sandbox::COMMAND_NICE.max(nix_nice()).to_string();
    for user in ["root", "nobody"] {
        let out = sh(&b, user, script).await;
        let text = out.stdout_lossy();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.first().copied(),
            Some(want.as_str()),
            "{user}: {text}"
        );
        assert_eq!(lines.get(1).copied(), Some(want.as_str()), "{user}: {text}");
        assert!(
            !text.contains("reniced") && !text.contains("lifted"),
            "{user}: {text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("Max nice priority")
                    && l.split_whitespace().nth(3) == Some("0")),
            "{user}: {text}"
        );
        let bnd = cap_bits(&text, "CapBnd:");
        assert_eq!(bnd & (1 << 23 | 1 << 24), 0, "{user}: {text}");
    }
}

/// This process's own nice value (tests may run under `nice`; commands are never raised above it).
fn nix_nice() -> i32 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    after.split_whitespace().nth(16).unwrap().parse().unwrap()
}

#[tokio::test]
async fn the_default_user_is_not_root() {
    if !root() {
        return;
    }
    let out = Boundary::osmoda_default()
        .run(&Spec::new(["id", "-u"]))
        .await
        .unwrap();
    assert_eq!(out.stdout_lossy().trim(), "65534", "{out:?}");
}

#[tokio::test]
async fn judged_by_exit_status_even_when_a_child_holds_stdout() {
    if !root() {
        return;
    }
    let b = Boundary::osmoda_default();
    let start = Instant::now();
    let out = sh(&b, "nobody", "sleep 30 & echo ok; exit 0").await;
    assert_eq!(out.exit, Exit::Code(0), "{out:?}");
    assert_eq!(out.stdout_lossy(), "ok\n");
    assert!(
        start.elapsed() < Duration::from_secs(25),
        "waited for the child: {:?}",
        start.elapsed()
    );
    let out = sh(&b, "nobody", "sleep 30 & exit 3").await;
    assert_eq!(out.exit, Exit::Code(3), "{out:?}");
}

fn processes_with(marker: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(marker) && !c.contains("sh -c"))
        .collect()
}

#[tokio::test]
async fn a_timeout_kills_every_process_of_the_command() {
    if !root() {
        return;
    }
    let marker = format!("{}.4321", 900 + std::process::id() % 99);
    let out = Boundary::osmoda_default()
        .run(
            &Spec::new(["sh", "-c", &format!("sleep {marker} & sleep {marker}")])
                .timeout(Duration::from_millis(300)),
        )
        .await
        .unwrap();
    assert_eq!(out.exit, Exit::TimedOut, "{out:?}");
    assert_eq!(processes_with(&marker), Vec::<String>::new());
}

#[tokio::test]
async fn output_is_capped_and_flagged() {
    if !root() {
        return;
    }
    let out = Boundary::osmoda_default()
        .run(&Spec::new(["sh", "-c", "head -c 100000 /dev/zero"]).output_limit(1000))
        .await
        .unwrap();
    assert!(out.success());
    assert_eq!(out.stdout.len(), 1000);
    assert!(out.truncated);
}

#[tokio::test]
async fn writable_paths_are_writable_but_masks_win() {
    if !root() {
        return;
    }
    let (d, secret, _) = setup();
    let b = Boundary::new([secret.clone()]);
    let spec = Spec::new([
        "sh",
        "-c",
        &format!(
            "echo hi > {0}/out && ls {1}",
            d.path().display(),
            secret.display()
        ),
    ])
    .user("root")
    .writable(Pinned::open(&d.path().canonicalize().unwrap()).unwrap());
    let out = b.run(&spec).await.unwrap();
    assert!(out.success(), "{out:?}");
    assert_eq!(out.stdout_lossy(), "", "the masked dir looks empty");
    assert_eq!(
        std::fs::read_to_string(d.path().join("out")).unwrap(),
        "hi\n"
    );
    // Without the bind, the file system is read-only.
    let out = sh(
        &b,
        "root",
        &format!("echo hi > {}/out2", d.path().display()),
    )
    .await;
    assert!(!out.success());
    assert!(!d.path().join("out2").exists());
}

#[tokio::test]
async fn the_environment_is_cleared() {
    if !root() {
        return;
    }
    std::env::set_var("OSMODA_SANDBOX_LEAK", "leaked");
    let out = Boundary::osmoda_default()
        .run(&Spec::new(["env"]).env("GIVEN", "yes"))
        .await
        .unwrap();
    let env = out.stdout_lossy();
    assert!(!env.contains("leaked"), "{env}");
    assert!(env.contains("GIVEN=yes"), "{env}");
    assert!(env.contains("PATH="), "{env}");
}

/// A daemon running unprivileged (as `scripts/dev` runs osmoda-watch): simulated by running the
/// argv it would build under `setpriv` as nobody. The masks hold and the command has nothing.
#[tokio::test]
async fn an_unprivileged_daemon_still_masks_and_runs_commands_as_itself() {
    if !root() {
        return;
    }
    let (_d, secret, open) = setup();
    let b = Boundary::new([secret.clone()]);
    let script = format!(
        "id -u; cat {}; cat {}/token; grep CapBnd /proc/self/status",
        open.display(),
        secret.display()
    );
    // What an unprivileged caller builds (uid 65534), run as that uid.
    let spec = Spec::new(["sh", "-c", &script]);
    let argv = b.argv_for_test(&spec, 65534).unwrap();
    let out = tokio::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(&argv)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("65534\npublic"),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("CapBnd:\t0000000000000000"), "{text}");
}

/// A scratch root that commands inside the boundary can see: the target dir's tmp, unless the
/// checkout itself lives under `/tmp` (commands get a private `/tmp`), then `/var/tmp`.
fn outside_tmp() -> &'static std::path::Path {
    let root = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"));
    if root.starts_with("/tmp") {
        std::path::Path::new("/var/tmp")
    } else {
        root
    }
}

/// Forks up to 100 sleeping children, stops at the first refused fork, prints how many ran.
const FORKS: &str = "import os, time
n = 0
for i in range(100):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    n += 1
print(n, flush=True)
os._exit(0)
";

/// Holds 300 MB, then says so.
const HOG: &str = "b = bytearray(300 * 1024 * 1024)
for i in range(0, len(b), 4096):
    b[i] = 1
print('held', flush=True)
";

fn sleepers() -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| c.starts_with(b"/usr/bin/python3\0-c\0import os, time"))
        .count()
}

#[tokio::test]
async fn a_command_is_bounded_in_tasks_and_memory_away_from_the_daemon() {
    if !root() {
        return;
    }
    // Every boundary command gets the default bounds unless it names others.
    assert_eq!(Spec::new(["true"]).limits, osmoda_sandbox::COMMAND_LIMITS);
    let b = Boundary::new(Vec::<PathBuf>::new());
    let small = osmoda_sandbox::Limits {
        memory_bytes: 128 << 20,
        tasks: 16,
    };
    for user in ["nobody", "root"] {
        // A fork bomb (bounded here, so that a failure cannot take the machine) stops at the
        // group's task count, for root as for any user; what it left is killed with the run.
        let out = b
            .run(
                &Spec::new(["/usr/bin/python3", "-c", FORKS])
                    .user(user)
                    .limits(small)
                    .timeout(Duration::from_secs(20)),
            )
            .await
            .unwrap();
        let n: usize = out
            .stdout_lossy()
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{user}: {}", out.describe()));
        assert!(
            (1..16).contains(&n),
            "{user}: {n} children ran under a bound of 16"
        );
        let t = Instant::now();
        while sleepers() > 0 && t.elapsed() < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            sleepers(),
            0,
            "{user}: the command's children outlived its run"
        );
        // A memory hog is stopped at the group's memory, not the machine's.
        let out = b
            .run(
                &Spec::new(["/usr/bin/python3", "-c", HOG])
                    .user(user)
                    .limits(small)
                    .timeout(Duration::from_secs(20)),
            )
            .await
            .unwrap();
        assert!(!out.success(), "{user}: {}", out.describe());
        assert!(
            !out.stdout_lossy().contains("held"),
            "{user}: {}",
            out.describe()
        );
        // The same command with room enough runs: the bound is what stopped it.
        let out = b
            .run(
                &Spec::new(["/usr/bin/python3", "-c", HOG])
                    .user(user)
                    .limits(osmoda_sandbox::Limits {
                        memory_bytes: 1 << 30,
                        tasks: 16,
                    })
                    .timeout(Duration::from_secs(20)),
            )
            .await
            .unwrap();
        assert!(
            out.stdout_lossy().contains("held"),
            "{user}: {}",
            out.describe()
        );
    }
    // The daemon (this test) is in none of the groups it made.
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    assert!(!own.contains("osmoda-sandbox-"), "{own}");
}
