//! Evaluating a tree state with the real Nix evaluator (`extract.nix`): every module reachable
//! from the roots, values under the protected roots only, merged across modules by priority.
//!
//! The evaluator runs with `restrict-eval` on a private copy of the files, so a configuration
//! cannot make agentd read anything outside it. nixpkgs' `lib` is used where `<nixpkgs>`
//! resolves, a minimal `lib` with the same module wrappers elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::merge;

const EXTRACT: &str = include_str!("extract.nix");

/// The option subtrees the rules read; nothing else is evaluated.
pub const PROTECTED: &[&[&str]] = &[
    &["services"],
    &["systemd", "services"],
    &["users", "users"],
    &["networking", "firewall"],
    &["environment", "systemPackages"],
];

/// Longest a single evaluation may take.
const TIMEOUT: Duration = Duration::from_secs(20);
/// Reruns allowed after errors `tryEval` cannot catch (each one skips the failing value).
const MAX_RERUNS: usize = 24;
/// Identifiers offered to stubs; beyond this, a file's other names read as undecidable.
const MAX_IDENTS: usize = 20_000;

/// A tree state: `.nix` files by path relative to the tree.
pub type Files = BTreeMap<PathBuf, String>;

/// The evaluated protected values of one tree state.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    /// Merged values under [`PROTECTED`], with `{"__osmoda": "undecidable"}` where a value
    /// could not be decided and `{"__osmoda": "pkg", "name"}` for packages.
    pub tree: Value,
    /// Modules that could not be evaluated at all (their values are unknown).
    pub failed: Vec<String>,
}

/// Why a tree state could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// `nix-instantiate` is not installed.
    #[error("nix-instantiate is not installed; the approval gate needs the Nix evaluator")]
    NoNix,
    /// The evaluator failed in a way that skipping values does not fix.
    #[error("the Nix evaluator failed: {0}")]
    Failed(String),
    /// Writing the private copy failed.
    #[error("cannot prepare the evaluation: {0}")]
    Io(#[from] std::io::Error),
}

fn nix_instantiate() -> Option<&'static PathBuf> {
    static NIX: OnceLock<Option<PathBuf>> = OnceLock::new();
    NIX.get_or_init(osmoda_generations::validate::find_nix_instantiate)
        .as_ref()
}

/// Where `<nixpkgs>` resolves for agentd's environment, if anywhere.
fn nixpkgs() -> Option<&'static PathBuf> {
    static NIXPKGS: OnceLock<Option<PathBuf>> = OnceLock::new();
    NIXPKGS
        .get_or_init(|| {
            let out = Command::new(nix_instantiate()?)
                .args(["--find-file", "nixpkgs/lib"])
                .stderr(Stdio::null())
                .output()
                .ok()?;
            let lib = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
            (out.status.success() && lib.join("default.nix").exists())
                .then(|| lib.parent().map(Path::to_path_buf))
                .flatten()
        })
        .as_ref()
}

/// Every identifier-like word of the files: the names stubs must answer to.
fn identifiers(files: &Files) -> Vec<String> {
    let mut out = BTreeSet::new();
    for text in files.values() {
        let mut word = String::new();
        for c in text.chars().chain(std::iter::once(' ')) {
            let part = c.is_ascii_alphanumeric() || matches!(c, '_' | '\'' | '-');
            if part && !(word.is_empty() && (c.is_ascii_digit() || c == '\'' || c == '-')) {
                word.push(c);
            } else if !word.is_empty() {
                out.insert(std::mem::take(&mut word));
            }
        }
    }
    out.into_iter().take(MAX_IDENTS).collect()
}

/// Evaluate `files` starting from `roots` (each must be one of the files).
///
/// # Errors
/// [`EvalError::NoNix`] without `nix-instantiate`; [`EvalError::Failed`] when the evaluator
/// fails even after skipping the values it names.
pub fn evaluate(files: &Files, roots: &[PathBuf]) -> Result<Evaluated, EvalError> {
    let nix = nix_instantiate().ok_or(EvalError::NoNix)?;
    let dir = tempfile::Builder::new().prefix("osmoda-gate").tempdir()?;
    let root = dir.path().join("tree");
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap_or(&root))?;
        std::fs::write(p, text)?;
    }
    std::fs::write(dir.path().join("extract.nix"), EXTRACT)?;
    let roots: Vec<String> = roots
        .iter()
        .filter(|r| files.contains_key(*r))
        .map(|r| r.to_string_lossy().into_owned())
        .collect();
    let mut skip: Vec<String> = Vec::new();
    for _ in 0..=MAX_RERUNS {
        let args = json!({
            "roots": roots, "idents": identifiers(files), "skip": skip,
            "protected": PROTECTED, "nixpkgs": nixpkgs().is_some(),
        });
        std::fs::write(dir.path().join("args.json"), args.to_string())?;
        match run(nix, dir.path())? {
            Ok(out) => return Ok(assemble(&out)),
            Err(stderr) => {
                let failing = stderr
                    .lines()
                    .rev()
                    .find_map(|l| l.strip_prefix("trace: osmoda-gate:"))
                    .map(str::to_string);
                match failing {
                    Some(k) if !skip.contains(&k) => skip.push(k),
                    _ => return Err(EvalError::Failed(last_error(&stderr))),
                }
            }
        }
    }
    Err(EvalError::Failed(format!(
        "more than {MAX_RERUNS} values could not be evaluated"
    )))
}

fn last_error(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with("trace: "))
        .take(4)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One evaluator run: `Ok(Ok(json))`, or `Ok(Err(stderr))` when Nix reported an error.
fn run(nix: &Path, dir: &Path) -> Result<Result<Value, String>, EvalError> {
    let mut cmd = Command::new(nix);
    cmd.args(["--eval", "--strict", "--json", "--readonly-mode"])
        .args(["--option", "restrict-eval", "true"])
        .args(["--option", "allowed-uris", ""])
        .arg("-I")
        .arg(format!("osmoda-gate={}", dir.display()));
    if let Some(p) = nixpkgs() {
        cmd.arg("-I").arg(format!("nixpkgs={}", p.display()));
    }
    cmd.arg(dir.join("extract.nix"))
        .arg("--arg")
        .arg("root")
        .arg(dir.join("tree"))
        .arg("--arg")
        .arg("args")
        .arg(dir.join("args.json"))
        .env_remove("NIX_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let (mut so, mut se) = (child.stdout.take(), child.stderr.take());
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        so.as_mut().map(|o| o.read_to_string(&mut s));
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        se.as_mut().map(|e| e.read_to_string(&mut s));
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(EvalError::Failed(format!(
                "evaluation took longer than {}s",
                TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        return Ok(Err(stderr));
    }
    serde_json::from_str(&stdout)
        .map(Ok)
        .map_err(|e| EvalError::Failed(format!("unreadable evaluator output: {e}")))
}

/// Put each module's values at their paths and merge the modules by priority.
fn assemble(out: &Value) -> Evaluated {
    let mut modules = Vec::new();
    let mut failed = Vec::new();
    for m in out.as_array().into_iter().flatten() {
        let file = m["file"].as_str().unwrap_or_default().to_string();
        if m["ok"] != Value::Bool(true) {
            failed.push(file);
            continue;
        }
        let mut tree = Value::Object(Map::new());
        for r in m["roots"].as_array().into_iter().flatten() {
            if r["value"].is_null() {
                continue;
            }
            let path: Vec<&str> = r["path"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            insert(&mut tree, &path, r["value"].clone());
        }
        modules.push(tree);
    }
    Evaluated {
        tree: merge::merge_modules(&modules),
        failed,
    }
}

fn insert(tree: &mut Value, path: &[&str], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        *tree = value;
        return;
    };
    if !tree.is_object() {
        *tree = Value::Object(Map::new());
    }
    if let Value::Object(m) = tree {
        let slot = m
            .entry(first.to_string())
            .or_insert(Value::Object(Map::new()));
        insert(slot, rest, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRICKY: &str = r#"{ config, lib, pkgs, inputs, ... }:
let off = !true; in {
  imports = [ ./other.nix ./missing.nix <nixpkgs/nixos/modules/profiles/minimal.nix> ];
  services.openssh.enable = lib.mkForce off;
  services.nginx = lib.mkIf config.services.foo.enable { enable = true; };
  services.x.enable = !config.services.y.enable;
  services.secret.text = builtins.readFile /etc/passwd;
  services.typo.enable = 1 + "a";
  users.users.alice = { isNormalUser = true; extraGroups = [ "wheel" ]; };
  environment.systemPackages = with pkgs; [ openssh python3Packages.requests ] ++ lib.optional true pkgs.vim;
  networking.hostName = throw "not read";
}
"#;

    #[test]
    fn the_real_evaluator_decides_what_it_can_and_marks_the_rest() {
        if nix_instantiate().is_none() {
            eprintln!("skipped: nix-instantiate not found");
            return;
        }
        let mut f = Files::new();
        f.insert("configuration.nix".into(), TRICKY.into());
        f.insert(
            "other.nix".into(),
            "{ lib, ... }: { services.openssh = lib.mkMerge [ { ports = [ 2222 ]; } (lib.mkIf false { enable = true; }) ]; }".into(),
        );
        let e = evaluate(&f, &["configuration.nix".into()]).expect("evaluates");
        let s = &e.tree["services"];
        assert_eq!(s["openssh"], json!({"enable": false, "ports": [2222]}));
        assert_eq!(s["nginx"], merge::undecidable(), "depends on config");
        assert_eq!(s["x"]["enable"], merge::undecidable());
        // Reading outside the tree is refused (restrict-eval), not performed.
        assert_eq!(s["secret"]["text"], merge::undecidable());
        assert_eq!(s["typo"]["enable"], merge::undecidable());
        assert_eq!(
            e.tree["users"]["users"]["alice"]["extraGroups"],
            json!(["wheel"])
        );
        let names: Vec<&str> = e.tree["environment"]["systemPackages"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(names, ["openssh", "python3Packages.requests", "vim"]);
        assert!(e.failed.is_empty());
    }

    #[test]
    fn identifiers_cover_attribute_names_and_skip_numbers() {
        let mut f = Files::new();
        f.insert(
            "a.nix".into(),
            "{ pkgs, ... }: with pkgs; [ htop python3Packages.requests x-y 42 ]".into(),
        );
        let ids = identifiers(&f);
        for w in ["pkgs", "with", "htop", "python3Packages", "requests", "x-y"] {
            assert!(ids.contains(&w.to_string()), "{w}");
        }
        assert!(!ids.iter().any(|w| w == "42"));
    }
}
