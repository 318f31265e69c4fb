//! Planning one attribute edit against the whole tree: which file and module it goes to (see
//! `locate.rs`), the file's text before and after, and the checks that run before anything is
//! written (a dirty tree, flakes and non-modules, raw values that do not evaluate).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use axum::http::StatusCode;
use osmoda_generations::{GenError, Tree};
use osmoda_nix::{AttrPath, Op, Value as NixValue};
use serde_json::json;

use super::locate::{self, Place, Target};
use crate::error::ApiError;

/// An edit planned against `HEAD`: where it goes and the file before and after.
pub struct Planned {
    /// File (relative to the tree) and module the edit goes to.
    pub target: Target,
    /// The file's text at `HEAD`.
    pub before: String,
    /// The file's text after the edit.
    pub after: String,
    /// Every definition of the path found in the tree.
    pub places: Vec<Place>,
    /// The priority wrapper kept around the new value, if any.
    pub kept: Option<String>,
}

/// The path an operation edits.
pub fn path_of(op: &Op) -> &AttrPath {
    match op {
        Op::Set(p, _) | Op::Unset(p) | Op::Append(p, _) | Op::Remove(p, _) => p,
    }
}

/// Plans `op`: refuses a dirty tree, finds every definition of the path in the tree's modules,
/// picks the one place to edit (or refuses listing them), and computes the new text.
///
/// # Errors
/// 409 for a dirty tree or several definitions, 4xx for edits the editor refuses.
pub fn plan(tree: &Tree, named: Option<&Path>, op: &Op) -> Result<Planned, ApiError> {
    let dirty = tree.status()?;
    if !dirty.is_empty() {
        return Err(GenError::Dirty { changes: dirty }.into());
    }
    let files = tree.nix_files_at("HEAD")?;
    let mods = locate::modules(&files);
    let path = path_of(op);
    let places = locate::definitions(&files, &mods, path)?;
    let target = locate::choose(path, &places, named, Path::new(super::DEFAULT_FILE))?;
    let before = match files.get(&target.file) {
        Some(Ok(text)) => text.clone(),
        Some(Err(why)) => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("cannot edit {}: it is {why}", target.file.display()),
            ))
        }
        None => {
            return Err(ApiError::not_found(format!(
                "cannot read {} in the tree: no such file in the current generation",
                target.file.display()
            ))
            .with_detail(json!({ "hint": "create the file and import it, then commit it with `agentctl config commit -m WHY`" })))
        }
    };
    tree.check_no_symlink(&target.file)?;
    locate::check_kind(&target.file, &before, path, target.module)?;
    let edit = osmoda_nix::edit_in(&before, target.module, op)
        .map_err(|e| locate::in_file(&target.file, e))?;
    Ok(Planned {
        target,
        before,
        after: edit.text,
        places,
        kept: edit.kept,
    })
}

/// Re-applies a planned edit to the work tree under the tree's lock (the tree is clean there, so
/// the file equals `HEAD`), keeping the file's owner and mode. Returns the file for the commit.
pub fn apply(root: &Path, target: &Target, op: &Op) -> Result<Vec<PathBuf>, GenError> {
    let abs = root.join(&target.file);
    let text = std::fs::read_to_string(&abs).map_err(GenError::edit)?;
    let out = osmoda_nix::edit_in(&text, target.module, op).map_err(GenError::edit)?;
    write_atomic(&abs, &out.text).map_err(GenError::edit)?;
    Ok(vec![target.file.clone()])
}

/// Replace `path` atomically (temp file + rename), so no reader ever sees a half-written file;
/// the new file keeps the old one's owner and permissions.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.osmoda-tmp"));
    let meta = std::fs::metadata(path).ok();
    let result = (|| {
        std::fs::write(&tmp, text)?;
        if let Some(m) = &meta {
            std::fs::set_permissions(&tmp, m.permissions())?;
            if m.uid() != nix::unistd::geteuid().as_raw()
                || m.gid() != nix::unistd::getegid().as_raw()
            {
                std::os::unix::fs::chown(&tmp, Some(m.uid()), Some(m.gid()))?;
            }
        }
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// What evaluating a raw value before the commit found.
pub enum RawEval {
    /// Not evaluated: no evaluator, or the value names its module's arguments (`pkgs`, `lib`, …).
    Skipped,
    /// It evaluates; with its value as JSON when asked for and expressible (not a function).
    Evaluated(Option<serde_json::Value>),
}

/// Evaluates a raw Nix value before it is committed, when it can be evaluated on its own (no
/// free variables such as `pkgs` or `lib`, no `with`): `nix-instantiate --eval --strict` in
/// restricted mode, which cannot read any file outside the tree. With `want_json`, the value
/// is also returned as JSON (one evaluation; a second, without `--json`, only for a value JSON
/// cannot carry, such as a function).
///
/// # Errors
/// 422 with the evaluator's message.
pub fn evaluate_raw(tree: &Tree, raw: &str, want_json: bool) -> Result<RawEval, ApiError> {
    let Some(nix) = tree.nix_instantiate() else {
        return Ok(RawEval::Skipped);
    };
    match osmoda_nix::free_variables(raw) {
        Ok(Some(free)) if free.is_empty() => {}
        Ok(_) => return Ok(RawEval::Skipped),
        Err(e) => return Err(e.into()),
    }
    if want_json {
        match run_eval(tree, nix, raw, true)? {
            Ok(stdout) => {
                let v = serde_json::from_slice(&stdout).map_err(ApiError::internal)?;
                return Ok(RawEval::Evaluated(Some(v)));
            }
            Err(stderr) if !stderr.contains("cannot convert") => {
                return Err(not_evaluated(&stderr))
            }
            Err(_) => {}
        }
    }
    match run_eval(tree, nix, raw, false)? {
        Ok(_) => Ok(RawEval::Evaluated(None)),
        Err(stderr) => Err(not_evaluated(&stderr)),
    }
}

fn not_evaluated(stderr: &str) -> ApiError {
    if stderr.is_empty() {
        return ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "the raw Nix value did not finish evaluating within 10 seconds",
        );
    }
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!(
            "the raw Nix value does not evaluate: {}",
            first_error(stderr)
        ),
    )
    .with_detail(json!({ "evaluator": stderr.trim() }))
}

/// One restricted evaluation: `Ok(stdout)`, or `Err(stderr)` (empty when it timed out).
fn run_eval(
    tree: &Tree,
    nix: &Path,
    raw: &str,
    json: bool,
) -> Result<Result<Vec<u8>, String>, ApiError> {
    let mut cmd = Command::new(nix);
    cmd.args(["--eval", "--strict", "--readonly-mode"]);
    if json {
        cmd.arg("--json");
    }
    let mut child = cmd
        .args(["--option", "restrict-eval", "true"])
        .args(["--option", "allowed-uris", ""])
        .arg("-I")
        .arg(format!("tree={}", tree.dir().display()))
        .arg("-E")
        .arg(format!("(\n{raw}\n)"))
        .current_dir(tree.dir())
        .env("NIX_PATH", "")
        .stdin(Stdio::null())
        .stdout(if json { Stdio::piped() } else { Stdio::null() })
        .stderr(Stdio::piped())
        .spawn()
        .map_err(ApiError::internal)?;
    // Read stdout as it comes (a large value must not fill the pipe and stall the child),
    // bounded like a request body.
    let reader = child.stdout.take().map(|out| {
        std::thread::spawn(move || {
            use std::io::Read;
            let mut buf = Vec::new();
            let _ = out.take(4 * 1024 * 1024).read_to_end(&mut buf);
            buf
        })
    });
    // Bounded: an expression that loops is stopped, not waited for.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(ApiError::internal)? {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    let mut stderr = String::new();
    if let Some(e) = child.stderr.take() {
        use std::io::Read;
        let _ = e.take(8 * 1024).read_to_string(&mut stderr);
    }
    Ok(match status {
        Some(s) if s.success() => Ok(stdout),
        Some(_) if stderr.trim().is_empty() => Err("the evaluator failed without a message".into()),
        Some(_) => Err(stderr),
        None => Err(String::new()),
    })
}

/// The evaluator's `error: …` line.
fn first_error(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(stderr.trim())
        .to_string()
}

/// A JSON value as shown in a response or the ledger (`Raw` values as their Nix text).
pub fn shown(value: &NixValue) -> serde_json::Value {
    match value {
        NixValue::Json(v) => json!({ "value": v }),
        NixValue::Raw(n) => json!({ "nix": n }),
    }
}
