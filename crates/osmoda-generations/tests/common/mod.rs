//! Shared helpers for the integration tests: a fresh tree from the real template, the real git CLI.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

use osmoda_generations::{Actor, GenError, Tree};

/// The repository's `generations/` template.
pub fn template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../generations")
}

pub fn agent() -> Actor {
    Actor::new("openclaw[uid=0,pid=42,exe=openclaw]", "agent@osmoda.local")
}

pub fn alice() -> Actor {
    Actor::new("Alice Admin", "alice@example.org")
}

/// A new tree in a temp dir (kept alive by the returned guard).
pub fn new_tree() -> anyhow::Result<(tempfile::TempDir, Tree)> {
    let tmp = tempfile::tempdir()?;
    let tree = Tree::init(&tmp.path().join("tree"), &template(), &alice())?;
    Ok((tmp, tree))
}

/// Runs the real `git` CLI in `dir` and returns its stdout.
pub fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output()?;
    anyhow::ensure!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `git status --porcelain` (untracked files included).
pub fn porcelain(dir: &Path) -> anyhow::Result<String> {
    git(dir, &["status", "--porcelain", "--untracked-files=all"])
}

/// Every commit id from HEAD, newest first.
pub fn log(dir: &Path) -> anyhow::Result<Vec<String>> {
    Ok(git(dir, &["log", "--format=%H"])?
        .lines()
        .map(str::to_string)
        .collect())
}

/// True if `nix-instantiate` is installed; prints why a check is skipped otherwise.
pub fn have_nix(what: &str) -> bool {
    let found = osmoda_generations::validate::find_nix_instantiate().is_some();
    if !found {
        eprintln!("skipped: {what}: nix-instantiate not found");
    }
    found
}

/// A plain text edit of osmoda.nix: inserts `line` just before the closing `};` of
/// `services.osmoda`.
pub fn insert_setting(root: &Path, line: &str) -> Result<Vec<PathBuf>, GenError> {
    let path = root.join("osmoda.nix");
    let text = std::fs::read_to_string(&path).map_err(GenError::edit)?;
    let anchor = "\n  };\n}\n";
    let at = text
        .rfind(anchor)
        .ok_or_else(|| GenError::edit("closing brace of services.osmoda not found"))?;
    let new = format!("{}\n    {line}{}", &text[..at], &text[at..]);
    std::fs::write(&path, new).map_err(GenError::edit)?;
    Ok(vec![PathBuf::from("osmoda.nix")])
}

/// Replaces the whole of `rel` with `text`.
pub fn write_file(root: &Path, rel: &str, text: &str) -> Result<Vec<PathBuf>, GenError> {
    std::fs::write(root.join(rel), text).map_err(GenError::edit)?;
    Ok(vec![PathBuf::from(rel)])
}
