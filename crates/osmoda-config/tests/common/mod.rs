//! Shared helpers for the Nix integration tests: locating the repo and running the real
//! `nix-instantiate` (the tests skip, saying so, only when it is not installed).

#![allow(dead_code)]

pub mod options;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The repository root (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
}

/// `nix-instantiate` with flags that need no writable store or state directory.
fn nix_instantiate() -> Command {
    let mut c = Command::new("nix-instantiate");
    c.arg("--readonly-mode");
    c
}

/// True when `nix-instantiate` runs; otherwise prints why the caller skips.
pub fn nix_available(test: &str) -> bool {
    match Command::new("nix-instantiate").arg("--version").output() {
        Ok(o) if o.status.success() => true,
        _ => {
            eprintln!("skipped: {test}: nix-instantiate not found (install Debian's nix-bin)");
            false
        }
    }
}

/// `nix-instantiate --parse FILE`.
pub fn nix_parse(file: &Path) -> Result<()> {
    let o = nix_instantiate()
        .arg("--parse")
        .arg(file)
        .output()
        .context("running nix-instantiate")?;
    if !o.status.success() {
        bail!(
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    Ok(())
}

/// Evaluates `expr` (a function of `args`, passed with --argstr) strictly to JSON.
pub fn nix_eval_json(expr: &str, args: &[(&str, &str)]) -> Result<serde_json::Value> {
    let mut c = nix_instantiate();
    c.args(["--eval", "--strict", "--json"]);
    for (k, v) in args {
        c.args(["--argstr", k, v]);
    }
    c.args(["-E", expr]);
    let o = c.output().context("running nix-instantiate")?;
    if !o.status.success() {
        bail!(
            "nix-instantiate failed: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        );
    }
    serde_json::from_slice(&o.stdout).context("nix-instantiate printed invalid JSON")
}

/// Renders `fixture` (a file evaluating to a services.osmoda attrset) with lib/: the seven
/// daemon files, plus OpenClaw's config under the key `openclaw`.
pub fn render_fixture(fixture: &Path) -> Result<serde_json::Value> {
    let root = repo_root();
    nix_eval_json(
        "{ repo, fixture }: let L = import (/. + repo + \"/lib\"); c = import (/. + fixture); in \
         { daemons = L.render c; openclaw = L.renderGateway c { bridgePath = \"/bridge\"; }; \
           unsupported = L.unsupported c; }",
        &[
            ("repo", &root.to_string_lossy()),
            ("fixture", &fixture.to_string_lossy()),
        ],
    )
}

/// Renders an inline Nix attrset expression (a partial services.osmoda) with lib/.
pub fn render_inline(cfg: &str) -> Result<serde_json::Value> {
    let root = repo_root();
    nix_eval_json(
        &format!("{{ repo }}: let L = import (/. + repo + \"/lib\"); in L.render ({cfg})"),
        &[("repo", &root.to_string_lossy())],
    )
}

/// Fixture files in tests/nix/fixtures, sorted.
pub fn fixtures() -> Result<Vec<PathBuf>> {
    let dir = repo_root().join("tests/nix/fixtures");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "nix"))
        .collect();
    v.sort();
    Ok(v)
}

/// Compares `actual` with the golden file (pretty JSON), or rewrites it when
/// `UPDATE_GOLDEN=1`.
pub fn check_golden(name: &str, actual: &serde_json::Value) -> Result<()> {
    let path = repo_root()
        .join("tests/nix/golden")
        .join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(actual)? + "\n";
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::create_dir_all(path.parent().context("golden dir")?)?;
        std::fs::write(&path, text)?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{} missing; run with UPDATE_GOLDEN=1 and review the diff",
            path.display()
        )
    })?;
    if expected != text {
        let first = expected
            .lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(0);
        bail!(
            "{} differs from lib's output (first difference at line {}):\n  golden: {}\n  actual: {}\n\
             if the change is intended, run with UPDATE_GOLDEN=1 and review the diff",
            path.display(),
            first + 1,
            expected.lines().nth(first).unwrap_or("<eof>"),
            text.lines().nth(first).unwrap_or("<eof>")
        );
    }
    Ok(())
}
