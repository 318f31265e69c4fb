//! Planning one attribute edit against the whole tree: which file and module it goes to (see
//! `locate.rs`), the file's text before and after, and the checks that run before anything is
//! written (a dirty tree, flakes and non-modules, raw values that do not evaluate).

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::http::StatusCode;
use osmoda_generations::evaluator::{Caps, Exceeded};
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
    /// Definitions of `services.osmoda` outside the edited module (only looked up for edits
    /// of osModa's options): when there are some, the edited file alone does not say what the
    /// daemons will load.
    pub osmoda_elsewhere: Vec<Place>,
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
    if !matches!(op, Op::Unset(_)) {
        locate::check_unfollowed(path, &places, named, &mods)?;
    }
    if matches!(op, Op::Unset(_)) && places.is_empty() && named.is_none() {
        return Err(ApiError::not_found(format!(
            "`{path}` is not defined in the tree's modules, so there is nothing to unset"
        ))
        .with_detail(json!({ "modules": mods.files, "not_followed": mods.skipped })));
    }
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
    if let Op::Append(p, element) = op {
        if p.segments().len() == 1 && p.segments()[0] == "imports" {
            locate::check_import(&target.file, element, &files)?;
        }
    }
    tree.check_no_symlink(&target.file)?;
    locate::check_kind(&target.file, &before, path, target.module)?;
    let edit = osmoda_nix::edit_in(&before, target.module, op)
        .map_err(|e| locate::in_file(&target.file, e))?;
    if let (Op::Remove(p, element), true) = (op, edit.text == before) {
        let element = match element {
            osmoda_nix::Value::Raw(r) => r.clone(),
            osmoda_nix::Value::Json(j) => j.to_string(),
        };
        return Err(ApiError::not_found(format!(
            "`{element}` is not an element of `{p}` in {}, so there is nothing to remove",
            target.file.display()
        ))
        .with_detail(json!({ "hint": "read the list with config get; elements are matched as written (`htop` and `pkgs.htop` are the same in a `with pkgs;` list)" })));
    }
    let osmoda_elsewhere = if super::schema::concerns(op) {
        let osmoda = AttrPath::new(["services", "osmoda"]).map_err(ApiError::internal)?;
        let file = target.file.display().to_string();
        locate::definitions(&files, &mods, &osmoda)?
            .into_iter()
            .filter(|p| p.file != file || p.module != target.module)
            .collect()
    } else {
        Vec::new()
    };
    Ok(Planned {
        target,
        before,
        after: edit.text,
        places,
        kept: edit.kept,
        osmoda_elsewhere,
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
    /// Not (fully) evaluated: no evaluator, or the evaluation reached one of its module's
    /// arguments (`pkgs`, `lib`, a `let` of the file, …), which exist only in the tree.
    Skipped,
    /// It evaluates; with its value as JSON when asked for and expressible (not a function).
    Evaluated(Option<serde_json::Value>),
}

/// Refuses a raw value that could read a file outside the tree (`osmoda_nix::reaches_outside`:
/// an absolute, home or search path, a relative one leaving the tree, a reading builtin given
/// a computed name), found in its syntax wherever it is nested: an evaluation before the commit
/// stops at the first module argument and would not see one behind `pkgs`, `lib` or `if`
/// (review of issue 11, finding 6). A closed value (no free variable) is left to
/// [`evaluate_raw`] when an evaluator is installed: evaluated whole in restricted mode, it
/// reads exactly what it would read when built. `file` is the edited file, relative to the
/// tree.
///
/// # Errors
/// 422 naming the part and why, nothing written; 400 when the value does not parse.
pub fn refuse_outside_reads(tree: &Tree, raw: &str, file: &Path) -> Result<(), ApiError> {
    let closed = osmoda_nix::free_variables(raw)?.is_some_and(|f| f.is_empty());
    if closed && tree.nix_instantiate().is_some() {
        return Ok(());
    }
    let depth = file.components().count().saturating_sub(1);
    match osmoda_nix::reaches_outside(raw, depth)? {
        None => Ok(()),
        Some(r) => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "the raw Nix value reads outside the configuration tree: `{}` is {}",
                r.text, r.why
            ),
        )
        .with_detail(json!({
            "hint": "nothing was written; put the file in the tree and name it with a relative path (./file), or pass a secret as a *File option (a path string), which is read at run time, never into the store",
        }))),
    }
}

/// The message of the stand-in every free variable of a raw value resolves to.
const STAND_IN: &str = "osmoda: a module argument is not available before the commit";

/// Evaluates a raw Nix value before it is committed: `nix-instantiate --eval --strict` in
/// restricted mode (no file outside the tree is readable), within [`Caps::RAW_VALUE`] (CPU
/// time, memory, wall clock). A value with free variables (`pkgs.vim`, `lib.mkForce x`,
/// `with pkgs; [ … ]`, a name bound by the file around it) is evaluated with every such
/// variable resolving to a stand-in that throws: it is evaluated in Nix's order up to the first
/// use of one, so an error before that (`[ (1 + "a") pkgs.vim ]`) is found and one after it is
/// not (`[ pkgs.vim (1 + "a") ]`: the real arguments exist only when the tree is built). With
/// `want_json`, the value is also returned as JSON (one evaluation; a second, without
/// `--json`, only for a value JSON cannot carry, such as a function).
///
/// # Errors
/// 422 with the evaluator's message, or naming the cap a value ran into.
pub fn evaluate_raw(tree: &Tree, raw: &str, want_json: bool) -> Result<RawEval, ApiError> {
    let Some(nix) = tree.nix_instantiate() else {
        return Ok(RawEval::Skipped);
    };
    let closed = match osmoda_nix::free_variables(raw) {
        Ok(free) => free.is_some_and(|f| f.is_empty()),
        Err(e) => return Err(e.into()),
    };
    // An enclosing `with` is consulted only for names nothing else binds: exactly the free ones.
    let prefix = if closed {
        String::new()
    } else {
        format!("with (throw \"{STAND_IN}\"); ")
    };
    let reached_stand_in =
        // The error itself, not the source line Nix quotes (which shows the stand-in too).
        |f: &Failed| matches!(f, Failed::Error(stderr) if first_error(stderr) == STAND_IN);
    if want_json && closed {
        match run_eval(tree, nix, &prefix, raw, true)? {
            Ok(stdout) => {
                let v = serde_json::from_slice(&stdout).map_err(ApiError::internal)?;
                return Ok(RawEval::Evaluated(Some(v)));
            }
            Err(Failed::Error(stderr)) if stderr.contains("cannot convert") => {}
            Err(failed) => return Err(not_evaluated(failed)),
        }
    }
    match run_eval(tree, nix, &prefix, raw, false)? {
        Ok(_) => Ok(RawEval::Evaluated(None)),
        Err(f) if reached_stand_in(&f) => {
            // The first use of a module argument stopped the evaluation. The rest of the value
            // is evaluated part by part ([`WALK`]), so an error that needs no argument (`[
            // pkgs.vim (1 + "a") ]`, a restricted path) is found now, not at validation.
            let walked = format!("{raw}\n)");
            match run_eval(tree, nix, &format!("{WALK} ({prefix}"), &walked, false)? {
                Ok(_) => Ok(RawEval::Skipped),
                Err(f) if reached_stand_in(&f) => Ok(RawEval::Skipped),
                Err(failed) => Err(not_evaluated(failed)),
            }
        }
        Err(failed) => Err(not_evaluated(failed)),
    }
}

/// Forces a value's parts one by one (attribute values and list elements, 64 levels deep), each
/// under `tryEval`: a part that throws (a use of a module argument's stand-in, or the value's
/// own `throw`/`assert`, which `tryEval` cannot tell apart) is left out, while an error
/// `tryEval` does not catch (a type error, a missing attribute, a restricted path) still ends
/// the evaluation with its message. The value is its argument, outside its `let`.
const WALK: &str = "(let w = d: v: let r = builtins.tryEval v; in if !r.success then null \
    else if d > 64 then r.value \
    else if builtins.isAttrs r.value then builtins.mapAttrs (n: w (d + 1)) r.value \
    else if builtins.isList r.value then map (w (d + 1)) r.value else r.value; in w 0)";

/// Why a raw value did not evaluate.
enum Failed {
    /// The evaluator said so (its standard error).
    Error(String),
    /// A cap stopped it.
    Stopped(Exceeded),
}

fn not_evaluated(failed: Failed) -> ApiError {
    let stderr = match failed {
        Failed::Error(stderr) => stderr,
        Failed::Stopped(why) => return ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("the raw Nix value was refused before the commit: {why}"),
        )
        .with_detail(json!({
            "hint": "nothing was written; every later evaluation of the tree would pay for this value again",
            "caps": {
                "cpu_secs": Caps::RAW_VALUE.cpu_secs,
                "memory_bytes": Caps::RAW_VALUE.memory_bytes,
                "wall_secs": Caps::RAW_VALUE.wall.as_secs(),
            },
        })),
    };
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!(
            "the raw Nix value does not evaluate: {}",
            first_error(&stderr)
        ),
    )
    .with_detail(json!({ "evaluator": stderr.trim() }))
}

/// One restricted evaluation within [`Caps::RAW_VALUE`]: `Ok(stdout)` or why not.
fn run_eval(
    tree: &Tree,
    nix: &Path,
    prefix: &str,
    raw: &str,
    json: bool,
) -> Result<Result<Vec<u8>, Failed>, ApiError> {
    let mut cmd = Command::new(nix);
    cmd.args(["--eval", "--strict", "--readonly-mode"]);
    if json {
        cmd.arg("--json");
    }
    cmd.args(["--option", "restrict-eval", "true"])
        .args(["--option", "allowed-uris", ""])
        .arg("-I")
        .arg(format!("tree={}", tree.dir().display()))
        .arg("-E")
        .arg(format!("{prefix}(\n{raw}\n)"))
        .current_dir(tree.dir())
        .env("NIX_PATH", "");
    let out =
        osmoda_generations::evaluator::run(cmd, &Caps::RAW_VALUE).map_err(ApiError::internal)?;
    Ok(match out.exceeded {
        Some(cap) => Err(Failed::Stopped(cap)),
        None if out.success() => Ok(out.stdout),
        None if out.stderr.trim().is_empty() => Err(Failed::Error(
            "the evaluator failed without a message".into(),
        )),
        None => Err(Failed::Error(out.stderr)),
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
