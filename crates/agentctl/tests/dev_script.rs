//! `scripts/dev --once` run twice in a row in a temp clone of the checkout (a fresh `.osmoda`,
//! then the same one again with stale sockets left behind), with the binaries this suite built:
//! agentd, osmoda-watch, osmoda-keyd and osmoda-routines, the loop, a routine added and run, a
//! wallet made and signing allowed by the tree's policy; then a third run and `--reset` refused
//! while a `scripts/dev` holds the sockets.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("repo root")
}

/// Copies the checkout's files (tracked and untracked-not-ignored, as in the working tree) to
/// `to`: what a fresh clone would hold, plus uncommitted work, without target/ or .osmoda/.
fn clone_checkout(from: &Path, to: &Path) {
    let o = Command::new("git")
        .arg("-C")
        .arg(from)
        .args([
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ])
        .output()
        .expect("git ls-files");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut n = 0;
    for rel in o.stdout.split(|b| *b == 0).filter(|p| !p.is_empty()) {
        let rel = Path::new(std::str::from_utf8(rel).expect("utf-8 path"));
        let src = from.join(rel);
        if !src.is_file() {
            continue; // deleted in the working tree
        }
        let dst = to.join(rel);
        std::fs::create_dir_all(dst.parent().expect("parent")).expect("mkdir");
        std::fs::copy(&src, &dst).expect("copy");
        n += 1;
    }
    assert!(n > 50, "only {n} files copied");
}

fn dev(clone: &Path, bin_dir: &Path, arg: &str, log: &Path) -> Command {
    let out = std::fs::File::create(log).expect("log");
    let mut c = Command::new(clone.join("scripts/dev"));
    c.arg(arg)
        .current_dir(clone)
        .env("OSMODA_DEV_BIN_DIR", bin_dir)
        .env_remove("OSMODA_AGENTD_SOCKET")
        .env_remove("OSMODA_APPROVAL_SOCKET")
        .env_remove("OSMODA_WATCH_SOCKET")
        .env_remove("OSMODA_KEYD_SOCKET")
        .env_remove("OSMODA_ROUTINES_SOCKET")
        // The gateway part (npm, a minute to start) is tested in bridge/test/dev.test.ts.
        .env("OSMODA_DEV_GATEWAY", "0")
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out);
    c
}

/// Runs `scripts/dev ARG` in `clone`; returns its combined output. Killed after 5 minutes.
fn run_dev_with(clone: &Path, bin_dir: &Path, arg: &str) -> (Option<i32>, String) {
    let log = clone.join("dev-run.log");
    let mut child = dev(clone, bin_dir, arg, &log)
        .spawn()
        .expect("run scripts/dev");
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break Some(s);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    match status {
        Some(s) => (s.code(), text),
        None => (None, format!("{text}\n[killed after 300 s]")),
    }
}

fn run_dev(clone: &Path, bin_dir: &Path) -> (bool, String) {
    let (code, text) = run_dev_with(clone, bin_dir, "--once");
    (code == Some(0), text)
}

/// The id of the wallet `dev-wallet` in a walk's output (keyd's `/wallet/list` answer).
fn wallet_id(out: &str) -> String {
    out.match_indices("\"id\":\"w_")
        .map(|(i, _)| &out[i + 6..])
        .find_map(|rest| {
            let (id, after) = rest.split_once('"')?;
            after
                .starts_with(",\"label\":\"dev-wallet\"")
                .then(|| id.to_string())
        })
        .unwrap_or_else(|| panic!("no dev-wallet listed: {out}"))
}

#[test]
fn scripts_dev_runs_twice_in_a_row_in_a_temp_clone() {
    for tool in ["nix-instantiate", "git"] {
        if Command::new(tool).arg("--version").output().is_err() {
            println!(
                "skipped: scripts_dev_runs_twice_in_a_row_in_a_temp_clone: {tool} not installed"
            );
            return;
        }
    }
    let repo = repo_root();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_agentctl"))
        .parent()
        .expect("bin dir")
        .to_path_buf();
    // The daemons next to agentctl, current. The same invocation as the suite's own build
    // (scripts/test), in the environment that build had, so after it this is a no-op:
    // `cargo build -p …` unifies other features, and the variables cargo sets for this test
    // (LD_LIBRARY_PATH with the build dirs, CARGO_PKG_*, …) re-run build scripts that watch
    // them (clang-sys: LD_LIBRARY_PATH) — each rebuilt the dependencies (37 min at load once).
    // `cargo` from PATH, as scripts/test calls it (rustup's proxy sets its own library path).
    // After `cargo test -p agentctl` alone it builds the rest of the workspace's tests.
    let mut build = Command::new("cargo");
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        let set_for_this_test = key_text == "CARGO"
            || key_text == "LD_LIBRARY_PATH"
            || key_text == "CARGO_CRATE_NAME"
            || key_text == "CARGO_PRIMARY_PACKAGE"
            || key_text == "CARGO_TARGET_TMPDIR"
            || ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_BIN_EXE_"]
                .iter()
                .any(|prefix| key_text.starts_with(prefix));
        if set_for_this_test {
            build.env_remove(&key);
        }
    }
    let o = build
        .args(["test", "--workspace", "--locked", "--no-run", "-q"])
        .current_dir(&repo)
        .env("CARGO_TARGET_DIR", bin_dir.parent().expect("target dir"))
        .output()
        .expect("cargo build");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let tmp = tempfile::tempdir().expect("tempdir");
    let clone = tmp.path().join("osmoda");
    clone_checkout(&repo, &clone);

    let (ok, first) = run_dev(&clone, &bin_dir);
    assert!(ok, "first run failed:\n{first}");
    assert!(first.contains("creating the configuration tree"), "{first}");
    assert!(first.contains("the loop walked through"), "{first}");
    // keyd and routines start on what the first SafeSwitch rendered from the tree.
    assert!(
        first.contains("dropping the starter tree's sshd watcher")
            && first.contains("applying the tree once with SafeSwitch"),
        "{first}"
    );
    let etc = clone.join(".osmoda/etc/osmoda");
    for f in ["keyd.json", "routines.json"] {
        assert!(etc.join(f).is_file(), "{f} was not rendered");
    }
    let routines = std::fs::read_to_string(etc.join("routines.json")).expect("routines.json");
    assert!(routines.contains("agentd-health"), "{routines}");
    let keyd = std::fs::read_to_string(etc.join("keyd.json")).expect("keyd.json");
    assert!(keyd.contains("solana"), "{keyd}");
    // The routine's run and the wallet's signature, as the walk printed them.
    assert!(
        first.contains("\"routine\":\"agentd-health\",\"trigger\":\"manual\"")
            && first.contains("\"status\":\"ok\""),
        "{first}"
    );
    assert!(first.contains("solana is denied (default deny)"), "{first}");
    assert!(
        first.contains("\"kind\":\"offchain_message\"") && first.contains("\"signature\":"),
        "{first}"
    );
    assert!(first.contains("receipt.wallet.sign"), "{first}");
    let wallet = wallet_id(&first);

    // Leave stale sockets behind, as a killed run would: files nobody listens on.
    let run = clone.join(".osmoda/run");
    for name in ["agentd.sock", "watch.sock", "keyd.sock", "routines.sock"] {
        let path = run.join(name);
        let _ = std::fs::remove_file(&path);
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(path.exists());
    }

    let (ok, second) = run_dev(&clone, &bin_dir);
    assert!(ok, "second run failed:\n{second}");
    assert!(
        second.contains("reusing the configuration tree"),
        "{second}"
    );
    for name in ["agentd.sock", "watch.sock", "keyd.sock", "routines.sock"] {
        assert!(
            second.contains(&format!(
                "removed the stale socket {}",
                run.join(name).display()
            )),
            "{name}: {second}"
        );
    }
    assert_eq!(
        second
            .matches("already there (from an earlier run)")
            .count(),
        3,
        "the watcher, the routine and the wallet are seen, not made again: {second}"
    );
    assert!(
        second.contains("the policy allows Solana already")
            && !second.contains("applying the tree once"),
        "{second}"
    );
    assert_eq!(
        wallet_id(&second),
        wallet,
        "the same wallet, from keyd's state"
    );
    assert!(
        second.contains("\"routine\":\"agentd-health\",\"trigger\":\"manual\""),
        "{second}"
    );
    assert!(second.contains("the loop walked through"), "{second}");
    let log = Command::new("git")
        .arg("-C")
        .arg(clone.join(".osmoda/tree"))
        .args(["log", "--format=%s"])
        .output()
        .expect("git log");
    let log = String::from_utf8_lossy(&log.stdout);
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("check more often"))
            .count(),
        2,
        "each run records its own failing change and revert: {log}"
    );
    for once in [
        "no systemd on this dev machine",
        "record agentd's health every hour",
        "let the dev wallet sign on Solana",
    ] {
        assert_eq!(
            log.lines().filter(|l| l.contains(once)).count(),
            1,
            "{once}: {log}"
        );
    }

    // While a scripts/dev runs, another one and --reset refuse and change nothing.
    let log = clone.join("dev-running.log");
    let mut running = dev(&clone, &bin_dir, "--no-demo", &log)
        .spawn()
        .expect("scripts/dev --no-demo");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("osModa is running")
    {
        assert!(
            running.try_wait().expect("wait").is_none(),
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            Instant::now() < deadline,
            "scripts/dev --no-demo never came up"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for arg in ["--once", "--reset"] {
        let (code, text) = run_dev_with(&clone, &bin_dir, arg);
        assert_eq!(code, Some(1), "{arg}: {text}");
        assert!(
            text.contains("scripts/dev is already running on this checkout"),
            "{arg}: {text}"
        );
    }
    assert!(
        clone.join(".osmoda/tree/.git").is_dir(),
        "--reset deleted nothing"
    );
    // SIGTERM: scripts/dev stops its daemons on the way out.
    let kill = Command::new("kill")
        .args(["-TERM", &running.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let status = running.wait().expect("wait");
    assert_eq!(status.code(), Some(143));
    let (code, text) = run_dev_with(&clone, &bin_dir, "--reset");
    assert_eq!(code, Some(0), "{text}");
    assert!(!clone.join(".osmoda").exists());
}
