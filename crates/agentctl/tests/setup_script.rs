//! scripts/lib/setup.sh (shared by scripts/test and scripts/dev) on a "fresh machine": a PATH
//! holding only basic tools plus fakes of cargo, rustc, rustup, curl and apt-get that record how
//! they were called. Nothing is installed and nothing leaves the temp dir.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Machine {
    dir: tempfile::TempDir,
}

const TOOLS: &[&str] = &[
    "bash", "sh", "sed", "awk", "sort", "head", "id", "cat", "env", "mkdir", "chmod", "grep",
    "git", "tr", "dirname", "rm", "ls", "printf",
];

/// A fake tool reporting `version` (or, under `RUSTUP_TOOLCHAIN=stable`, 1.90.0).
fn fake_rust(tool: &str, version: &str) -> String {
    format!(
        "#!/bin/sh\nif [ \"$RUSTUP_TOOLCHAIN\" = stable ]; then echo \"{tool} 1.90.0 (rustup stable)\"; else echo \"{tool} {version}\"; fi\n"
    )
}

impl Machine {
    fn new() -> Machine {
        let m = Machine {
            dir: tempfile::tempdir().expect("tempdir"),
        };
        for d in ["bin", "home", "log"] {
            std::fs::create_dir_all(m.dir.path().join(d)).expect("mkdir");
        }
        for tool in TOOLS {
            let real = ["/usr/bin", "/bin"]
                .iter()
                .map(|d| Path::new(d).join(tool))
                .find(|p| p.exists());
            if let Some(real) = real {
                std::os::unix::fs::symlink(real, m.bin().join(tool)).expect("symlink");
            }
        }
        // Package managers only record what they were asked.
        for (name, body) in [
            ("apt-get", "echo \"apt-get $*\" >> \"$LOG/apt\""),
            ("sudo", "exec \"$@\""),
        ] {
            m.fake(&m.bin(), name, &format!("#!/bin/sh\n{body}\n"));
        }
        m
    }
    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }
    fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }
    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join("log").join(name)).unwrap_or_default()
    }
    fn fake(&self, dir: &Path, name: &str, script: &str) {
        std::fs::create_dir_all(dir).expect("mkdir");
        let p = dir.join(name);
        std::fs::write(&p, script).expect("write");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    fn old_rust_on_path(&self) {
        self.fake(&self.bin(), "cargo", &fake_rust("cargo", "1.63.0"));
        self.fake(&self.bin(), "rustc", &fake_rust("rustc", "1.63.0"));
    }
    fn cc(&self) {
        self.fake(&self.bin(), "cc", "#!/bin/sh\nexit 0\n");
    }
    /// Runs `snippet` after sourcing setup.sh, in the repository, with only this machine's tools.
    fn run(&self, snippet: &str) -> Output {
        let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        Command::new(self.bin().join("bash"))
            .args([
                "-c",
                &format!("set -euo pipefail; . scripts/lib/setup.sh; {snippet}"),
            ])
            .current_dir(repo)
            .env_clear()
            .env("PATH", self.bin())
            .env("HOME", self.home())
            .env("LOG", self.dir.path().join("log"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .expect("bash")
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn an_installed_rust_new_enough_is_used_as_is() {
    let m = Machine::new();
    m.cc();
    m.fake(&m.bin(), "cargo", &fake_rust("cargo", "1.85.0"));
    m.fake(&m.bin(), "rustc", &fake_rust("rustc", "1.85.0"));
    let o = m.run("need_c_compiler; need_rust; cargo --version");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        text(&o),
        "cargo 1.85.0\n",
        "nothing to say, nothing installed"
    );
    assert_eq!(m.log("apt"), "");
}

#[test]
fn debians_old_cargo_is_passed_over_for_one_in_cargo_home() {
    let m = Machine::new();
    m.cc();
    m.old_rust_on_path();
    let home_bin = m.home().join(".cargo/bin");
    m.fake(&home_bin, "cargo", "#!/bin/sh\necho cargo 1.88.0\n");
    m.fake(&home_bin, "rustc", "#!/bin/sh\necho rustc 1.88.0\n");
    let o = m.run("need_rust; cargo --version");
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("using the Rust toolchain in ~/.cargo/bin"),
        "{t}"
    );
    assert!(t.ends_with("cargo 1.88.0\n"), "{t}");
    assert_eq!(m.log("apt"), "", "apt's cargo is never installed");
}

#[test]
fn an_old_default_toolchain_gets_rustups_stable_for_these_scripts_only() {
    let m = Machine::new();
    m.old_rust_on_path();
    m.fake(
        &m.bin(),
        "rustup",
        "#!/bin/sh\necho \"$*\" >> \"$LOG/rustup\"\n",
    );
    let o = m.run("need_rust; cargo --version");
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("older than 1.85; installing the stable toolchain with rustup"),
        "{t}"
    );
    assert!(t.ends_with("cargo 1.90.0 (rustup stable)\n"), "{t}");
    assert_eq!(
        m.log("rustup"),
        "toolchain install stable --profile minimal\n"
    );
    assert_eq!(m.log("apt"), "");
}

#[test]
fn without_a_usable_rust_rustup_is_installed_the_standard_way() {
    for old in [true, false] {
        let m = Machine::new();
        if old {
            m.old_rust_on_path();
        }
        // curl hands out an installer that records its arguments and puts a new toolchain
        // into ~/.cargo/bin, as rustup-init does.
        m.fake(
            &m.bin(),
            "curl",
            "#!/bin/sh\necho \"$*\" >> \"$LOG/curl\"\ncat <<'EOS'\necho \"$*\" >> \"$LOG/installer\"\nmkdir -p \"$HOME/.cargo/bin\"\nfor t in cargo rustc; do printf '#!/bin/sh\\necho %s 1.91.0\\n' $t > \"$HOME/.cargo/bin/$t\"; chmod +x \"$HOME/.cargo/bin/$t\"; done\nEOS\n",
        );
        let o = m.run("need_rust; cargo --version");
        assert!(o.status.success(), "{}", text(&o));
        let t = text(&o);
        if old {
            assert!(
                t.contains("cargo 1.63.0 is older than Rust 1.85 (this Cargo.lock needs 1.85); installing rustup"),
                "{t}"
            );
        } else {
            assert!(
                t.contains("no Rust toolchain; installing Rust with rustup"),
                "{t}"
            );
        }
        assert!(
            t.contains("installed cargo 1.91.0; add ~/.cargo/bin to your PATH"),
            "{t}"
        );
        assert!(t.ends_with("cargo 1.91.0\n"), "{t}");
        assert_eq!(
            m.log("curl"),
            "--proto =https --tlsv1.2 -sSf https://sh.rustup.rs\n"
        );
        let installer = m.log("installer");
        assert!(
            installer.contains("-y") && installer.contains("--no-modify-path"),
            "shell profiles are not touched: {installer}"
        );
        assert!(!m.log("apt").contains("cargo"), "{}", m.log("apt"));
    }
}

#[test]
fn a_missing_c_compiler_is_installed_and_present_packages_are_not() {
    let m = Machine::new();
    let o = m.run("need_c_compiler; need_packages git:git bash:bash");
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("no C compiler"), "{}", text(&o));
    let apt = m.log("apt");
    assert!(apt.starts_with("apt-get update -qq\n"), "{apt}");
    assert!(
        apt.contains("install -y -qq --no-install-recommends gcc libc6-dev"),
        "{apt}"
    );
    assert_eq!(apt.lines().count(), 2, "git and bash are there: {apt}");
}

#[test]
fn tests_get_a_git_identity_without_touching_the_users_config() {
    let m = Machine::new();
    let o = m.run(
        "test_git_identity; r=\"$HOME/repo\"; git init -q \"$r\"; git -C \"$r\" commit -q --allow-empty -m x; \
         git -C \"$r\" log --format='%an <%ae>'; git -c user.email=mine@example.org config user.email",
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        text(&o),
        "osmoda tests <tests@osmoda.invalid>\nmine@example.org\n",
        "an explicit -c still wins"
    );
    assert!(
        !m.home().join(".gitconfig").exists(),
        "no global config written"
    );
    assert!(!m.home().join(".config/git").exists());

    // Someone with an identity keeps it.
    std::fs::write(
        m.home().join(".gitconfig"),
        "[user]\n\tname = Ada\n\temail = ada@example.org\n",
    )
    .expect("write");
    let o = m.run("test_git_identity; git config user.email; echo \"${GIT_CONFIG_COUNT:-unset}\"");
    assert_eq!(text(&o), "ada@example.org\nunset\n");
}

/// The real `cargo test -- --show-output` of a scratch crate (no dependencies, offline) through
/// scripts/test's filter: skips are named and counted, passing tests' other output is dropped,
/// a failure is shown in full and the exit status is cargo's.
#[test]
fn skipped_tests_are_named_and_counted_not_passed_silently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let krate = dir.path().join("demo");
    std::fs::create_dir_all(krate.join("src")).expect("mkdir");
    std::fs::write(
        krate.join("Cargo.toml"),
        "[package]\nname = \"demo\"\nversion = \"0.0.0\"\nedition = \"2021\"\n[workspace]\n",
    )
    .expect("write");
    let lib = |extra: &str| {
        format!(
            "#[test] fn needs_root() {{ println!(\"skipped: needs root\"); }}\n\
             #[test] fn noisy() {{ println!(\"hello\"); eprintln!(\"world\"); }}\n\
             #[test] fn needs_nixpkgs() {{ eprintln!(\"skipped: <nixpkgs> not found\"); }}\n{extra}"
        )
    };
    let setup = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/lib/setup.sh");
    let run = || {
        Command::new("bash")
            .arg("-c")
            .arg("set -o pipefail; . \"$1\"; cargo test -q -- --show-output 2>&1 | report_skips")
            .arg("bash")
            .arg(&setup)
            .current_dir(&krate)
            .env("CARGO_TARGET_DIR", dir.path().join("target"))
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("bash")
    };
    std::fs::write(krate.join("src/lib.rs"), lib("")).expect("write");
    let o = run();
    let out = text(&o);
    assert!(o.status.success(), "{out}");
    assert!(out.contains("skipped: needs_root: needs root\n"), "{out}");
    assert!(
        out.contains("skipped: needs_nixpkgs: <nixpkgs> not found\n"),
        "{out}"
    );
    assert!(
        out.contains("==> 2 test(s) above did not run here"),
        "{out}"
    );
    assert!(out.contains("test result: ok. 3 passed"), "{out}");
    assert!(!out.contains("hello") && !out.contains("world"), "{out}");

    std::fs::write(
        krate.join("src/lib.rs"),
        lib("#[test] fn broken() { println!(\"why it broke\"); panic!(\"boom\"); }\n"),
    )
    .expect("write");
    let o = run();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(101), "cargo's status: {out}");
    assert!(
        out.contains("---- broken stdout ----") && out.contains("why it broke"),
        "{out}"
    );
    assert!(
        out.contains("boom") && out.contains("test result: FAILED"),
        "{out}"
    );
}
