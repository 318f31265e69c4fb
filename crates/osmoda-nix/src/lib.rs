//! Lossless, AST-aware editing of Nix files: read, set, unset and list-edit attribute paths in
//! NixOS modules and plain attribute-set files without touching a byte outside the edited node.
//!
//! rowan 0.17 (under rnix 0.15) has no mutable tree, so every edit is planned on the parse tree
//! as text splices of the original source; the result is re-parsed and checked (no parse errors,
//! and the edited path reads back as written) before it is returned.

pub mod budget;
mod edit;
mod error;
mod fuzz;
mod modules;
mod path;
mod plan;
mod reach;
mod render;
mod resolve;
mod scope;
mod syntax;
mod wrappers;

use std::ops::Range;

use serde_json::{Map, Value as Json};

pub use error::{EditError, Pos};
pub use fuzz::{fuzz_one, fuzz_raw};
pub use modules::{FileKind, Import};
pub use path::{not_into_imports, AttrPath};
pub use reach::{reaches_outside, Reach};
pub use render::to_nix;
pub use scope::free_variables;
pub use wrappers::without_wrappers;

use edit::{apply, detect_unit};
use modules::{list_of, priority};
use plan::{check_result, new_value, plan_append, plan_remove, plan_set, plan_unset};
use resolve::{resolve, Body};
use syntax::{eval_literal, merge_at, parse, start, value_of};

/// A value to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Plain data, rendered as idiomatic Nix.
    Json(Json),
    /// One Nix expression written verbatim (for example `pkgs.htop` or `lib.mkForce 9090`).
    Raw(String),
}

/// One editing operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// Set `path` to `value`, creating missing parents; replaces any existing value.
    Set(AttrPath, Value),
    /// Remove the binding of `path` (and parents it leaves empty).
    Unset(AttrPath),
    /// Append `value` to the list at `path`, creating the list if it does not exist.
    Append(AttrPath, Value),
    /// Remove every element equal to `value` from the list at `path`.
    Remove(AttrPath, Value),
}

/// The result of an edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The whole new file.
    pub text: String,
    /// The byte range of the original file that was replaced (empty when nothing changed).
    /// Bytes before and after it are identical in `text`.
    pub changed: Range<usize>,
    /// The priority wrapper kept around the new value (`lib.mkForce`), when `set` replaced the
    /// value inside one.
    pub kept: Option<String>,
}

/// What a file says about one attribute path (see [`read`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Read {
    /// The value as JSON, when it is a literal.
    pub value: Option<Json>,
    /// The value's Nix source, as written (without a priority wrapper).
    pub nix: String,
    /// For a list literal (also under `with pkgs;`): each element's Nix source.
    pub elements: Option<Vec<String>>,
    /// The priority wrapper around the value (`lib.mkForce`), if any.
    pub priority: Option<String>,
}

/// One place in a file that defines (part of) an attribute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Definition {
    /// Which module of the file: 0 is the file's own body, 1… its inline modules in file order.
    pub module: usize,
    /// The path as that module writes it (`config.…` in a module with a top-level `config`).
    pub path: AttrPath,
    /// Where the binding (or the obstacle) is.
    pub pos: Pos,
    /// True if the binding defines exactly the path (false: it defines something below it).
    pub exact: bool,
    /// The priority wrapper of an exact definition (`lib.mkForce`), if any.
    pub priority: Option<String>,
    /// `Some(reason)` when the module may define the path but the editor cannot see it (a
    /// `mkIf` body, an `inherit`, a prefix set to a non-attribute-set value, …).
    pub hidden: Option<String>,
}

/// The shape of a file: its kind, how many modules it holds and what it imports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileInfo {
    /// Module, flake or other.
    pub kind: FileKind,
    /// Number of module bodies (the file's own body counts as module 0 even in a flake, where
    /// it cannot be edited as a module).
    pub modules: usize,
    /// Static paths in `imports` (or a flake's `modules`), in file order; a relative path plus
    /// plain strings (`./. + "/dyn.nix"`) counts as the path it names.
    pub imports: Vec<Import>,
    /// Modules in those lists that are computed from a path of the tree (`./. + "/${host}.nix"`,
    /// `import ./m.nix { }`) and so cannot be followed (`path` is the expression's text).
    /// Modules from outside the tree (`inputs.x.nixosModules.y`, `<nixpkgs/…>`) are not listed.
    pub unfollowed: Vec<Import>,
    /// Where the file's expression starts (after any comment header).
    pub expr: Pos,
}

/// Checks that `src` parses as Nix without errors (within the [`budget`]).
///
/// # Errors
/// [`EditError::Parse`] with the position of the first error, [`EditError::TooComplex`] if it
/// nests deeper than the budget allows.
pub fn validate(src: &str) -> Result<(), EditError> {
    parse(strip_bom(src).1).map(|_| ())
}

/// Reads the literal value at `path` in the file's own body. Attribute sets spread over several
/// bindings (`a.b = 1; a.c = 2;`) are merged the way Nix merges them; a priority wrapper
/// (`mkForce`) is looked through.
///
/// # Errors
/// [`EditError::NotFound`] if the path is not defined in this file, [`EditError::NonLiteral`] if
/// its value is not a literal, [`EditError::Unreadable`] / [`EditError::Duplicate`] when it is
/// hidden or ambiguous, [`EditError::Parse`] if the file does not parse.
pub fn get(src: &str, path: &AttrPath) -> Result<Json, EditError> {
    let src = strip_bom(src).1;
    let root = parse(src)?;
    let body = module_body(&root, src, 0, path)?;
    get_in(&body, src, &module_path(&body, path))
}

/// Reads `path` in module `module` of the file (0: its own body; see [`Definition::module`]):
/// its Nix source, its value when it is a literal, the elements of a list and its priority.
///
/// # Errors
/// As [`get`], except that a value that is not a literal is returned as Nix text.
pub fn read(src: &str, module: usize, path: &AttrPath) -> Result<Read, EditError> {
    let src = strip_bom(src).1;
    let root = parse(src)?;
    let body = module_body(&root, src, module, path)?;
    let path = &module_path(&body, path);
    let res = resolve(&body, src, path).map_err(unreadable)?;
    res.check_unique(src, path)?;
    if res.places.is_empty() {
        return Err(not_found(src, path, res.imports));
    }
    if let Some(place) = res.single_exact() {
        let value = value_of(&place.entry)
            .ok_or_else(|| EditError::Internal("binding without value".into()))?;
        let (inner, wrapper) = match priority(&value) {
            Some(w) => (w.inner, Some(w.wrapper)),
            None => (value, None),
        };
        let bare = match inner.kind() {
            rnix::SyntaxKind::NODE_PAREN => {
                inner.children().next().unwrap_or_else(|| inner.clone())
            }
            _ => inner.clone(),
        };
        let elements = list_of(&bare).map(|l| l.children().map(|c| c.text().to_string()).collect());
        return Ok(Read {
            value: eval_literal(&inner).ok(),
            nix: inner.text().to_string(),
            elements,
            priority: wrapper,
        });
    }
    let value = get_in(&body, src, path)?;
    Ok(Read {
        nix: render::to_nix(&value, ""),
        value: Some(value),
        elements: None,
        priority: None,
    })
}

/// A refusal met while reading says "cannot read", not "refusing to edit".
fn unreadable(e: EditError) -> EditError {
    match e {
        EditError::Refused { path, pos, reason } => EditError::Unreadable { path, pos, reason },
        other => other,
    }
}

/// [`get`] in an already-found module body.
fn get_in(body: &Body, src: &str, path: &AttrPath) -> Result<Json, EditError> {
    let res = resolve(body, src, path).map_err(unreadable)?;
    res.check_unique(src, path)?;
    if res.places.is_empty() {
        return Err(not_found(src, path, res.imports));
    }
    let non_literal = |e: syntax::NotLiteral| EditError::NonLiteral {
        path: path.to_string(),
        pos: Pos::of(src, e.offset),
        what: e.what,
    };
    if let Some(place) = res.single_exact() {
        let value = value_of(&place.entry)
            .ok_or_else(|| EditError::Internal("binding without value".into()))?;
        let value = priority(&value).map_or(value, |w| w.inner);
        return eval_literal(&value).map_err(non_literal);
    }
    let mut obj = Map::new();
    for place in &res.places {
        let keys = syntax::keys_of(&place.entry);
        let below: Vec<String> = keys
            .iter()
            .skip(path.len() - place.depth)
            .filter_map(|(k, _)| match k {
                syntax::Key::Static(s) => Some(s.clone()),
                syntax::Key::Dynamic => None,
            })
            .collect();
        let value = value_of(&place.entry)
            .ok_or_else(|| EditError::Internal("binding without value".into()))?;
        let value = eval_literal(&value).map_err(non_literal)?;
        merge_at(&mut obj, &below, value).map_err(|()| EditError::Duplicate {
            path: path.to_string(),
            positions: res
                .places
                .iter()
                .map(|p| Pos::of(src, start(&p.entry)))
                .collect(),
        })?;
    }
    Ok(Json::Object(obj))
}

/// The kind, modules and static imports of a file.
///
/// # Errors
/// [`EditError::Parse`] / [`EditError::TooComplex`] if the file does not parse.
pub fn file_info(src: &str) -> Result<FileInfo, EditError> {
    let src = strip_bom(src).1;
    let root = parse(src)?;
    let m = modules::modules(&root, src);
    let start = root
        .children()
        .next()
        .map_or(0, |n| usize::from(n.text_range().start()));
    Ok(FileInfo {
        kind: m.kind,
        modules: m.bodies.len(),
        imports: m.imports,
        unfollowed: m.unfollowed,
        expr: Pos::of(src, start),
    })
}

/// Every place in the file (its own body and its inline modules) that defines `path`, a prefix
/// of it (with a value the editor cannot look into) or something below it.
///
/// # Errors
/// [`EditError::Parse`] / [`EditError::TooComplex`] if the file does not parse.
pub fn definitions(src: &str, path: &AttrPath) -> Result<Vec<Definition>, EditError> {
    let src = strip_bom(src).1;
    let root = parse(src)?;
    let m = modules::modules(&root, src);
    let mut out = Vec::new();
    for (module, body) in m.bodies.iter().enumerate() {
        let Some(body) = body else { continue };
        let in_path = module_path(body, path);
        let hidden = |pos: Pos, reason: String| Definition {
            module,
            path: in_path.clone(),
            pos,
            exact: false,
            priority: None,
            hidden: Some(reason),
        };
        match resolve(body, src, &in_path) {
            Ok(res) => {
                for place in &res.places {
                    let exact = place.kind == resolve::PlaceKind::Exact;
                    let priority = value_of(&place.entry)
                        .filter(|_| exact)
                        .and_then(|v| priority(&v))
                        .map(|w| w.wrapper);
                    out.push(Definition {
                        module,
                        path: in_path.clone(),
                        pos: Pos::of(src, start(&place.entry)),
                        exact,
                        priority,
                        hidden: None,
                    });
                }
            }
            Err(EditError::Refused { pos, reason, .. }) => out.push(hidden(pos, reason)),
            Err(EditError::Type { pos, found, .. }) => out.push(hidden(pos, found)),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// The body of module `module` of a parsed file.
fn module_body(
    root: &rnix::SyntaxNode,
    src: &str,
    module: usize,
    path: &AttrPath,
) -> Result<Body, EditError> {
    if module == 0 {
        let m = modules::modules(root, src);
        if m.kind == FileKind::Flake {
            modules::check_flake_path(root, src, path)?;
        }
        return resolve::body(root, src, path);
    }
    modules::modules(root, src)
        .bodies
        .into_iter()
        .nth(module)
        .flatten()
        .ok_or_else(|| EditError::InvalidPath {
            input: path.to_string(),
            reason: format!("the file has no inline module number {module}"),
        })
}

/// In a module with a top-level `config` (and `options`), settings live under `config`.
fn module_path(body: &Body, path: &AttrPath) -> AttrPath {
    const META: &[&str] = &[
        "config",
        "options",
        "imports",
        "disabledModules",
        "meta",
        "_file",
        "key",
    ];
    let explicit = body.module
        && body.set.children().any(|e| {
            matches!(syntax::attrs_of(&e).next().map(|a| syntax::key_of(&a)),
                Some(syntax::Key::Static(k)) if k == "config" || k == "options")
        });
    if explicit && !META.contains(&path.segments()[0].as_str()) {
        let mut segs = vec!["config".to_string()];
        segs.extend(path.segments().iter().cloned());
        AttrPath::new(segs).unwrap_or_else(|_| path.clone())
    } else {
        path.clone()
    }
}

/// Splits a leading byte-order mark off `src`.
fn strip_bom(src: &str) -> (&str, &str) {
    match src.strip_prefix('\u{feff}') {
        Some(rest) => (&src[..src.len() - rest.len()], rest),
        None => ("", src),
    }
}

fn not_found(src: &str, path: &AttrPath, imports: Option<usize>) -> EditError {
    let hint = match imports {
        Some(at) => format!(
            "; it may be defined in a module imported at {}",
            Pos::of(src, at)
        ),
        None => String::new(),
    };
    EditError::NotFound {
        path: path.to_string(),
        hint,
    }
}

/// Sets `path` to `value`. See [`edit`].
///
/// # Errors
/// As [`edit`].
pub fn set(src: &str, path: &AttrPath, value: &Value) -> Result<String, EditError> {
    edit(src, &Op::Set(path.clone(), value.clone())).map(|e| e.text)
}

/// Removes `path`. See [`edit`].
///
/// # Errors
/// As [`edit`]; [`EditError::NotFound`] if the path is not defined.
pub fn unset(src: &str, path: &AttrPath) -> Result<String, EditError> {
    edit(src, &Op::Unset(path.clone())).map(|e| e.text)
}

/// Appends `value` to the list at `path` (creating `path = [ value ];` if missing).
///
/// # Errors
/// As [`edit`].
pub fn append(src: &str, path: &AttrPath, value: &Value) -> Result<String, EditError> {
    edit(src, &Op::Append(path.clone(), value.clone())).map(|e| e.text)
}

/// Removes every element equal to `value` from the list at `path`; removing a value that is not
/// there changes nothing.
///
/// # Errors
/// As [`edit`].
pub fn remove(src: &str, path: &AttrPath, value: &Value) -> Result<String, EditError> {
    edit(src, &Op::Remove(path.clone(), value.clone())).map(|e| e.text)
}

/// Applies one operation to the file's own body (module 0); see [`edit_in`].
///
/// # Errors
/// As [`edit_in`].
pub fn edit(src: &str, op: &Op) -> Result<Edit, EditError> {
    edit_in(src, 0, op)
}

/// Applies one operation to module `module` of `src` (see [`Definition::module`]) and returns
/// the new text with the range it replaced.
///
/// New bindings go next to the closest related binding, or before the closing brace of the
/// deepest attribute set that already holds a prefix of the path, at the indentation of their
/// siblings; the remainder of the path is written dotted (`osmoda.enable = true;`). A priority
/// wrapper (`mkForce`) is kept around a replaced value unless the new value brings its own. The
/// file's line endings (CRLF) and byte-order mark are kept.
///
/// # Errors
/// [`EditError::Parse`] (file or raw value), [`EditError::TooComplex`], [`EditError::InvalidValue`],
/// [`EditError::Refused`] (function applications such as `mkIf`, `inherit`, dynamic names,
/// `rec` sets whose other values use the name, flakes), [`EditError::Duplicate`],
/// [`EditError::Type`], [`EditError::NotFound`], or [`EditError::Internal`] if the result failed
/// its own checks.
pub fn edit_in(src: &str, module: usize, op: &Op) -> Result<Edit, EditError> {
    let (bom, src) = strip_bom(src);
    let path = match op {
        Op::Set(p, _) | Op::Unset(p) | Op::Append(p, _) | Op::Remove(p, _) => p,
    };
    let root = parse(src)?;
    let body = module_body(&root, src, module, path)?;
    let path = &module_path(&body, path);
    let unit = detect_unit(src);
    let (splices, kept) = match op {
        Op::Set(_, value) => plan_set(src, &body, path, &new_value(value)?, &unit)?,
        Op::Unset(_) => (plan_unset(src, &body, path)?, None),
        Op::Append(_, value) => (
            plan_append(src, &body, path, &new_value(value)?, &unit)?,
            None,
        ),
        Op::Remove(_, value) => (plan_remove(src, &body, path, value)?, None),
    };
    let eol = if edit::crlf(src) { "\r\n" } else { "\n" };
    let (text, changed) = apply(src, splices, eol)?;
    let op = with_path(op, path);
    check_result(src, &body, &text, module, &op, path)?;
    let shift = bom.len();
    Ok(Edit {
        text: format!("{bom}{text}"),
        changed: changed.start + shift..changed.end + shift,
        kept,
    })
}

/// `op` with its path replaced (by the path as the module writes it).
fn with_path(op: &Op, path: &AttrPath) -> Op {
    let p = path.clone();
    match op {
        Op::Set(_, v) => Op::Set(p, v.clone()),
        Op::Unset(_) => Op::Unset(p),
        Op::Append(_, v) => Op::Append(p, v.clone()),
        Op::Remove(_, v) => Op::Remove(p, v.clone()),
    }
}
