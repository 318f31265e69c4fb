//! Where an option is defined across the whole tree: the modules reachable from the flake and
//! `configuration.nix` through static `imports` (and inline modules), every definition of a path,
//! its prefixes and suffixes with `file:line` and priority, and the one place an edit goes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use axum::http::StatusCode;
use osmoda_nix::{AttrPath, EditError, FileKind};
use serde::Serialize;
use serde_json::json;

use crate::error::ApiError;

/// The `.nix` files of a generation: relative path → text (or why it cannot be read).
pub type Files = BTreeMap<PathBuf, Result<String, String>>;

/// One definition of (part of) a path, as reported by `config get` and in refusals.
#[derive(Debug, Clone, Serialize)]
pub struct Place {
    /// File relative to the tree.
    pub file: String,
    /// Module within the file (0: its body; 1…: inline modules in `imports`/`modules`).
    pub module: usize,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// Defines exactly the path (false: something below it, or a prefix hides it).
    pub exact: bool,
    /// Priority wrapper (`lib.mkForce`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
    /// Why the editor cannot see into this definition, if it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hidden: Option<String>,
}

impl Place {
    fn label(&self) -> String {
        let mut s = format!("{}:{}:{}", self.file, self.line, self.column);
        if let Some(p) = &self.priority {
            s.push_str(&format!(" ({p})"));
        }
        if let Some(h) = &self.hidden {
            s.push_str(&format!(" (hidden: {h})"));
        }
        s
    }
}

/// The modules of the tree, in a stable order, and what was not followed.
pub struct Modules {
    /// Files that are modules (or hold inline modules), reachable from the roots.
    pub files: Vec<PathBuf>,
    /// Imports that were not followed, with the reason (outside the tree, a symlink, missing).
    pub skipped: Vec<String>,
    /// Modules computed from a path of the tree (`./. + "/${host}.nix"`, `import ./m.nix { }`):
    /// `file:line:col` and the expression. They may define any option.
    pub unfollowed: Vec<String>,
}

/// The files reachable from the roots: `flake.nix` (its `modules` lists) and
/// `configuration.nix`, following static `imports` paths (a directory means its `default.nix`).
/// A tree with neither root counts every `.nix` file as a module.
pub fn modules(files: &Files) -> Modules {
    let roots: Vec<PathBuf> = ["flake.nix", "configuration.nix"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| files.contains_key(p))
        .collect();
    if roots.is_empty() {
        return Modules {
            files: files.keys().cloned().collect(),
            skipped: Vec::new(),
            unfollowed: Vec::new(),
        };
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    let mut skipped = Vec::new();
    let mut unfollowed = Vec::new();
    let mut queue = roots;
    while let Some(file) = queue.pop() {
        if !seen.insert(file.clone()) {
            continue;
        }
        order.push(file.clone());
        let Some(Ok(text)) = files.get(&file) else {
            if let Some(Err(why)) = files.get(&file) {
                skipped.push(format!("{}: {why}", file.display()));
            }
            continue;
        };
        let Ok(info) = osmoda_nix::file_info(text) else {
            continue;
        };
        for u in info.unfollowed {
            let line = format!("{}:{}: `{}`", file.display(), u.pos, u.path);
            skipped.push(format!("{line} is computed (not followed)"));
            unfollowed.push(line);
        }
        for import in info.imports {
            match resolve_import(&file, &import.path, files) {
                Ok(target) => queue.push(target),
                Err(why) => skipped.push(format!(
                    "{}:{}: `{}` {why}",
                    file.display(),
                    import.pos.line,
                    import.path
                )),
            }
        }
    }
    order.sort();
    Modules {
        files: order,
        skipped,
        unfollowed,
    }
}

/// The tree file an import path names, relative to the importing file.
pub fn resolve_import(from: &Path, import: &str, files: &Files) -> Result<PathBuf, &'static str> {
    if import.starts_with('/') {
        return Err("is outside the tree (not followed)");
    }
    let mut out = from.parent().map(Path::to_path_buf).unwrap_or_default();
    for c in Path::new(import).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return Err("is outside the tree (not followed)");
                }
            }
            Component::Normal(n) => out.push(n),
            _ => return Err("is not a relative path (not followed)"),
        }
    }
    if files.contains_key(&out) {
        return Ok(out);
    }
    let default = out.join("default.nix");
    if files.contains_key(&default) {
        return Ok(default);
    }
    Err("is not a .nix file of this generation (not followed)")
}

/// Every definition of `path` (its prefixes and suffixes) in the tree's modules.
///
/// # Errors
/// 422 when a module does not parse.
pub fn definitions(files: &Files, mods: &Modules, path: &AttrPath) -> Result<Vec<Place>, ApiError> {
    let mut out = Vec::new();
    for file in &mods.files {
        let Some(Ok(text)) = files.get(file) else {
            continue;
        };
        let defs = osmoda_nix::definitions(text, path).map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("cannot read {}: {e}", file.display()),
            )
        })?;
        out.extend(defs.into_iter().map(|d| Place {
            file: file.display().to_string(),
            module: d.module,
            line: d.pos.line,
            column: d.pos.col,
            exact: d.exact,
            priority: d.priority,
            hidden: d.hidden,
        }));
    }
    Ok(out)
}

/// Where an edit goes: a file and a module within it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// File relative to the tree.
    pub file: PathBuf,
    /// Module within the file.
    pub module: usize,
}

/// Chooses the one place an edit of `path` goes. One defining module → there; none → `named` or
/// `default`; several (or a hidden one) → 409 listing each `file:line`, unless `named` picks one
/// file that holds a single defining module. A `named` file that defines nothing while another
/// file does is refused with the existing place.
///
/// # Errors
/// 409 as above, 422 when `named` is a flake or not a module.
pub fn choose(
    path: &AttrPath,
    places: &[Place],
    named: Option<&Path>,
    default: &Path,
) -> Result<Target, ApiError> {
    let modules: BTreeSet<(String, usize)> =
        places.iter().map(|p| (p.file.clone(), p.module)).collect();
    let list = || places.iter().map(Place::label).collect::<Vec<_>>();
    let conflict = |msg: String, hint: &str| {
        ApiError::new(StatusCode::CONFLICT, msg)
            .with_detail(json!({ "definitions": places, "hint": hint }))
    };
    if let Some(named) = named {
        let name = named.display().to_string();
        let here: BTreeSet<usize> = places
            .iter()
            .filter(|p| p.file == name)
            .map(|p| p.module)
            .collect();
        if here.is_empty() && places.iter().any(|p| p.file != name) {
            return Err(conflict(
                format!(
                    "`{path}` is already defined at {}; a second definition in {name} would \
                     conflict with it",
                    list().join(", ")
                ),
                "leave `file` out to edit it where it is defined",
            ));
        }
        if here.len() > 1 {
            return Err(conflict(
                format!(
                    "`{path}` is defined by several modules in {name}: {}",
                    list().join(", ")
                ),
                "edit the file by hand to keep one definition",
            ));
        }
        return Ok(Target {
            file: named.to_path_buf(),
            module: here.into_iter().next().unwrap_or(0),
        });
    }
    let hidden = places.iter().any(|p| p.hidden.is_some());
    match (modules.len(), hidden) {
        (0, _) => Ok(Target {
            file: default.to_path_buf(),
            module: 0,
        }),
        (1, false) => {
            let (file, module) = modules.into_iter().next().unwrap_or_default();
            Ok(Target {
                file: PathBuf::from(file),
                module,
            })
        }
        // One place, which the editor cannot see into: say where and why, not "several".
        (1, true) if places.len() == 1 => {
            let p = &places[0];
            Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "cannot edit `{path}`: {} at {}:{}:{}; edit this part of the file by hand",
                    p.hidden.as_deref().unwrap_or("it is hidden"),
                    p.file,
                    p.line,
                    p.column
                ),
            )
            .with_detail(json!({ "definitions": places })))
        }
        _ => Err(conflict(
            format!(
                "`{path}` is defined in several places ({}); NixOS would merge or reject them, \
                 so the editor will not pick one",
                list().join(", ")
            ),
            "name the file that should hold the value with `file` (and remove the other \
             definitions by hand if they conflict)",
        )),
    }
}

/// Refuses to add a first definition of `path` (none found where the editor can look) while
/// the tree imports modules it cannot follow: one of them may define it, and a second
/// definition would conflict with it. Naming `file` says where the value belongs.
///
/// # Errors
/// 409 listing the modules that were not followed.
pub fn check_unfollowed(
    path: &AttrPath,
    places: &[Place],
    named: Option<&Path>,
    mods: &Modules,
) -> Result<(), ApiError> {
    if !places.is_empty() || named.is_some() || mods.unfollowed.is_empty() {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::CONFLICT,
        format!(
            "cannot tell whether `{path}` is already defined: the tree imports {} which the \
             editor cannot follow (computed, not a plain path), and a second definition would \
             conflict with one there",
            mods.unfollowed.join(", ")
        ),
    )
    .with_detail(json!({
        "not_followed": mods.unfollowed,
        "hint": "name the file that should hold the value with `file` (agentctl: --file), or write the import as a plain path (imports = [ ./dyn.nix ])",
    })))
}

/// Refuses adding a module to `imports` that does not exist: a relative path must name a file
/// of the current generation (or a directory with `default.nix`), an absolute one a file on
/// this machine.
///
/// # Errors
/// 422 naming the path, 400 for a relative path given as a string.
pub fn check_import(
    from: &Path,
    element: &osmoda_nix::Value,
    files: &Files,
) -> Result<(), ApiError> {
    let (text, string) = match element {
        osmoda_nix::Value::Raw(raw) => (raw.trim().to_string(), false),
        osmoda_nix::Value::Json(serde_json::Value::String(s)) => (s.clone(), true),
        osmoda_nix::Value::Json(_) => return Ok(()),
    };
    let plain = !text.contains(|c: char| c.is_whitespace() || "${}()\"+".contains(c));
    if !plain {
        return Ok(()); // an expression: the evaluator judges it
    }
    if text.starts_with("./") || text.starts_with("../") {
        if string {
            return Err(ApiError::bad_request(format!(
                "imports takes modules as paths, not strings: give `{text}` as Nix (`nix`: \
                 \"{text}\", agentctl: --nix {text})"
            )));
        }
        if let Err(why) = resolve_import(from, &text, files) {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "cannot import `{text}` from {}: it {}; create the module and record it \
                     with `agentctl config commit -m WHY` first",
                    from.display(),
                    why.trim_end_matches(" (not followed)")
                ),
            ));
        }
    } else if text.starts_with('/') && !Path::new(&text).exists() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("cannot import `{text}`: no such file on this machine"),
        ));
    }
    Ok(())
}

/// Refuses an option edit aimed at a flake or at a file that is not a module.
///
/// # Errors
/// 422 saying where the option belongs.
pub fn check_kind(file: &Path, text: &str, path: &AttrPath, module: usize) -> Result<(), ApiError> {
    let info = osmoda_nix::file_info(text)?;
    let first = path.segments()[0].as_str();
    let flake_data = matches!(first, "inputs" | "description" | "nixConfig");
    match info.kind {
        FileKind::Flake if module == 0 && !flake_data => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{}:{} is a flake, not a NixOS module: `{path}` belongs in configuration.nix or \
                 a module it imports",
                file.display(),
                info.expr
            ),
        )
        .with_detail(json!({ "hint": "leave `file` out: the option is edited where it is defined, or added to osmoda.nix" }))),
        FileKind::Other => Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{}:{} is not a NixOS module (its body is not an attribute set)",
                file.display(),
                info.expr
            ),
        )),
        _ => Ok(()),
    }
}

/// `e` with its positions given as `file:line:col` (the editor only knows line and column).
pub fn in_file(file: &Path, e: EditError) -> ApiError {
    let at = |p: &osmoda_nix::Pos| format!("{}:{p}", file.display());
    let mut message = e.to_string();
    let positions: Vec<osmoda_nix::Pos> = match &e {
        EditError::Refused { pos, .. }
        | EditError::Unreadable { pos, .. }
        | EditError::NonLiteral { pos, .. }
        | EditError::Type { pos, .. }
        | EditError::TooComplex { pos, .. } => vec![*pos],
        EditError::Duplicate { positions, .. } => positions.clone(),
        _ => Vec::new(),
    };
    if let [one] = positions.as_slice() {
        message = message.replacen(&format!(" at {one}"), &format!(" at {}", at(one)), 1);
    } else if !positions.is_empty() {
        let old = positions
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let new = positions.iter().map(at).collect::<Vec<_>>().join(", ");
        message = message.replacen(&old, &new, 1);
    }
    let mut api = ApiError::from(e);
    api.error = message;
    api.with_detail(json!({
        "file": file,
        "positions": positions.iter().map(|p| json!({"line": p.line, "column": p.col})).collect::<Vec<_>>(),
    }))
}
