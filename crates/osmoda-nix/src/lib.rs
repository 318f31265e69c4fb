//! Lossless, AST-aware editing of Nix files: read, set, unset and list-edit attribute paths in
//! NixOS modules and plain attribute-set files without touching a byte outside the edited node.
//!
//! rowan 0.17 (under rnix 0.15) has no mutable tree, so every edit is planned on the parse tree
//! as text splices of the original source; the result is re-parsed and checked (no parse errors,
//! and the edited path reads back as written) before it is returned.

mod edit;
mod error;
mod fuzz;
mod path;
mod render;
mod resolve;
mod syntax;

use std::ops::Range;

use rnix::SyntaxKind::*;
use serde_json::{Map, Value as Json};

pub use error::{EditError, Pos};
pub use fuzz::fuzz_one;
pub use path::AttrPath;
pub use render::to_nix;

use edit::{
    apply, delete_entries, delete_items, detect_unit, insert_binding, insert_item, NewValue, Splice,
};
use resolve::{rec_set, resolve};
use syntax::{end, eval_literal, indent_at, merge_at, parse, start, value_of};

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
}

/// Checks that `src` parses as Nix without errors.
///
/// # Errors
/// [`EditError::Parse`] with the position of the first error.
pub fn validate(src: &str) -> Result<(), EditError> {
    parse(src).map(|_| ())
}

/// Reads the literal value at `path`. Attribute sets spread over several bindings
/// (`a.b = 1; a.c = 2;`) are merged the way Nix merges them.
///
/// # Errors
/// [`EditError::NotFound`] if the path is not defined in this file, [`EditError::NonLiteral`] if
/// its value is not a literal, [`EditError::Refused`] / [`EditError::Duplicate`] when it is hidden
/// or ambiguous, [`EditError::Parse`] if the file does not parse.
pub fn get(src: &str, path: &AttrPath) -> Result<Json, EditError> {
    get_in(&parse(src)?, src, path)
}

/// [`get`] on a file already parsed as `root`.
fn get_in(root: &rnix::SyntaxNode, src: &str, path: &AttrPath) -> Result<Json, EditError> {
    let res = resolve(root, src, path)?;
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

/// Applies one operation to `src` and returns the new text with the range it replaced.
///
/// New bindings go next to the closest related binding, or before the closing brace of the
/// deepest attribute set that already holds a prefix of the path, at the indentation of their
/// siblings; the remainder of the path is written dotted (`osmoda.enable = true;`).
///
/// # Errors
/// [`EditError::Parse`] (file or raw value), [`EditError::InvalidValue`],
/// [`EditError::Refused`] (`with`, `let`, function applications such as `mkIf`, `inherit`,
/// dynamic names, `rec` sets), [`EditError::Duplicate`], [`EditError::Type`],
/// [`EditError::NotFound`], or [`EditError::Internal`] if the result failed its own checks.
pub fn edit(src: &str, op: &Op) -> Result<Edit, EditError> {
    let root = parse(src)?;
    let unit = detect_unit(src);
    let (splices, path) = match op {
        Op::Set(path, value) => (plan_set(src, &root, path, &new_value(value)?, &unit)?, path),
        Op::Unset(path) => (plan_unset(src, &root, path)?, path),
        Op::Append(path, value) => (
            plan_append(src, &root, path, &new_value(value)?, &unit)?,
            path,
        ),
        Op::Remove(path, value) => (plan_remove(src, &root, path, value)?, path),
    };
    let (text, changed) = apply(src, splices)?;
    check_result(src, &root, &text, op, path)?;
    Ok(Edit { text, changed })
}

fn new_value(value: &Value) -> Result<NewValue<'_>, EditError> {
    match value {
        Value::Json(v) => {
            render::check_value(v)?;
            Ok(NewValue::Json(v))
        }
        Value::Raw(text) => {
            let root = parse(text)
                .map_err(|e| EditError::InvalidValue(format!("raw Nix expression: {e}")))?;
            let expr = root
                .children()
                .next()
                .ok_or_else(|| EditError::InvalidValue("the raw Nix expression is empty".into()))?;
            let simple = matches!(
                expr.kind(),
                NODE_IDENT
                    | NODE_LITERAL
                    | NODE_STRING
                    | NODE_LIST
                    | NODE_ATTR_SET
                    | NODE_PAREN
                    | NODE_SELECT
                    | NODE_PATH_ABS
                    | NODE_PATH_REL
                    | NODE_PATH_HOME
                    | NODE_PATH_SEARCH
            );
            Ok(NewValue::Raw {
                text: expr.text().to_string(),
                needs_parens_in_list: !simple,
            })
        }
    }
}

fn body_set(
    root: &rnix::SyntaxNode,
    src: &str,
    path: &AttrPath,
) -> Result<rnix::SyntaxNode, EditError> {
    resolve::body(root, src, path).map(|b| b.set)
}

fn plan_set(
    src: &str,
    root: &rnix::SyntaxNode,
    path: &AttrPath,
    value: &NewValue<'_>,
    unit: &str,
) -> Result<Vec<Splice>, EditError> {
    let res = resolve(root, src, path)?;
    res.check_unique(src, path)?;
    if let Some(place) = res.single_exact() {
        let v = value_of(&place.entry)
            .ok_or_else(|| EditError::Internal("binding without value".into()))?;
        let indent = indent_at(src, start(&place.entry));
        let unit = edit_unit(indent, unit);
        return Ok(vec![Splice {
            start: start(&v),
            end: end(&v),
            text: value.render(indent, &unit),
        }]);
    }
    if let Some((first, rest)) = res.places.split_first() {
        // The target is an attribute set spread over several bindings: the first one becomes
        // the new binding, the others go.
        let indent = indent_at(src, start(&first.entry));
        let unit = edit_unit(indent, unit);
        let keys = edit::render_keys(&path.segments()[first.depth..]);
        let text = format!("{keys} = {};", value.render(indent, &unit));
        let mut splices = vec![Splice {
            start: start(&first.entry),
            end: end(&first.entry),
            text,
        }];
        let body = body_set(root, src, path)?;
        splices.extend(delete_entries(
            src,
            path,
            &body,
            rest.iter().map(|p| p.entry.clone()).collect(),
        )?);
        return Ok(splices);
    }
    let container = res
        .best_container()
        .ok_or_else(|| EditError::Internal("no container".into()))?;
    if rec_set(&container.set) {
        return Err(EditError::Refused {
            path: path.to_string(),
            pos: Pos::of(src, start(&container.set)),
            reason: "adding a name to a `rec` attribute set could shadow a variable its other values use"
                .into(),
        });
    }
    Ok(vec![insert_binding(
        src,
        container,
        &path.segments()[container.depth..],
        value,
        unit,
    )?])
}

/// The indentation unit to use below a line indented with `indent`.
fn edit_unit(indent: &str, unit: &str) -> String {
    if indent.contains('\t') {
        "\t".into()
    } else {
        unit.to_string()
    }
}

fn plan_unset(
    src: &str,
    root: &rnix::SyntaxNode,
    path: &AttrPath,
) -> Result<Vec<Splice>, EditError> {
    let res = resolve(root, src, path)?;
    res.check_unique(src, path)?;
    if res.places.is_empty() {
        return Err(not_found(src, path, res.imports));
    }
    let body = body_set(root, src, path)?;
    delete_entries(
        src,
        path,
        &body,
        res.places.iter().map(|p| p.entry.clone()).collect(),
    )
}

/// The list literal at `path`, or why there is none (`Ok(None)`: the path is not defined).
fn target_list(
    src: &str,
    root: &rnix::SyntaxNode,
    path: &AttrPath,
    op: &str,
) -> Result<Option<rnix::SyntaxNode>, EditError> {
    let res = resolve(root, src, path)?;
    res.check_unique(src, path)?;
    let Some(first) = res.places.first() else {
        return Ok(None);
    };
    let type_err = |node: &rnix::SyntaxNode, found: String| EditError::Type {
        op: op.into(),
        path: path.to_string(),
        pos: Pos::of(src, start(node)),
        expected: "a list".into(),
        found,
    };
    let Some(place) = res.single_exact() else {
        return Err(type_err(
            &first.entry,
            format!("`{path}` is an attribute set"),
        ));
    };
    let value = value_of(&place.entry)
        .ok_or_else(|| EditError::Internal("binding without value".into()))?;
    match value.kind() {
        NODE_LIST => Ok(Some(value)),
        _ => match syntax::literal_kind(&value) {
            Some(kind) => Err(type_err(&value, format!("`{path}` is {kind}"))),
            None => Err(EditError::Refused {
                path: path.to_string(),
                pos: Pos::of(src, start(&value)),
                reason: format!(
                    "the list is built by {}, not written as a list literal",
                    syntax::describe(&value)
                ),
            }),
        },
    }
}

fn plan_append(
    src: &str,
    root: &rnix::SyntaxNode,
    path: &AttrPath,
    value: &NewValue<'_>,
    unit: &str,
) -> Result<Vec<Splice>, EditError> {
    match target_list(src, root, path, "append to")? {
        Some(list) => {
            let unit = edit_unit(indent_at(src, start(&list)), unit);
            Ok(vec![insert_item(src, &list, value, &unit)?])
        }
        None => plan_set(src, root, path, &value.as_list(), unit),
    }
}

fn plan_remove(
    src: &str,
    root: &rnix::SyntaxNode,
    path: &AttrPath,
    value: &Value,
) -> Result<Vec<Splice>, EditError> {
    let Some(list) = target_list(src, root, path, "remove from")? else {
        return Err(not_found(src, path, None));
    };
    let wanted = match value {
        Value::Json(v) => Wanted::Json(v),
        Value::Raw(text) => {
            Wanted::Tokens(tokens(&parse(text).map_err(|e| {
                EditError::InvalidValue(format!("raw Nix expression: {e}"))
            })?))
        }
    };
    let doomed: Vec<rnix::SyntaxNode> = list
        .children()
        .filter(|item| match &wanted {
            Wanted::Json(v) => eval_literal(item).is_ok_and(|got| &got == *v),
            Wanted::Tokens(t) => &tokens(item) == t,
        })
        .collect();
    Ok(delete_items(src, &doomed))
}

enum Wanted<'a> {
    Json(&'a Json),
    Tokens(Vec<String>),
}

/// The significant tokens of a node (no whitespace or comments), for comparing raw expressions.
fn tokens(node: &rnix::SyntaxNode) -> Vec<String> {
    let mut node = node.clone();
    while node.kind() == NODE_ROOT || node.kind() == NODE_PAREN {
        match node.children().next() {
            Some(inner) => node = inner,
            None => break,
        }
    }
    node.descendants_with_tokens()
        .filter_map(|e| e.into_token())
        .filter(|t| !matches!(t.kind(), TOKEN_WHITESPACE | TOKEN_COMMENT))
        .map(|t| t.text().to_string())
        .collect()
}

/// Verifies an edit's output: it parses, and the path reads back as the operation intended.
/// `before_root` is the parse of `before`; `after` is parsed exactly once, and the read-back
/// runs on that parse.
fn check_result(
    before: &str,
    before_root: &rnix::SyntaxNode,
    after: &str,
    op: &Op,
    path: &AttrPath,
) -> Result<(), EditError> {
    let root = parse(after)
        .map_err(|e| EditError::Internal(format!("the edited file does not parse: {e}")))?;
    let bug = |what: String| EditError::Internal(format!("after {op:?}: {what}"));
    match op {
        Op::Set(_, Value::Json(v)) => match get_in(&root, after, path) {
            Ok(got) if &got == v => Ok(()),
            other => Err(bug(format!("the path reads back as {other:?}"))),
        },
        Op::Set(_, Value::Raw(_)) => {
            let res = resolve(&root, after, path)?;
            match res.single_exact() {
                Some(_) => Ok(()),
                None => Err(bug("the path is not defined exactly once".into())),
            }
        }
        Op::Unset(_) => match get_in(&root, after, path) {
            Err(EditError::NotFound { .. }) => Ok(()),
            other => Err(bug(format!("the path still reads as {other:?}"))),
        },
        Op::Append(_, _) | Op::Remove(_, _) => {
            let count = |src: &str, root: &rnix::SyntaxNode| -> Result<usize, EditError> {
                Ok(target_list(src, root, path, "check")?.map_or(0, |l| l.children().count()))
            };
            let (old, new) = (count(before, before_root)?, count(after, &root)?);
            let ok = match op {
                Op::Append(..) => new == old + 1,
                _ => new <= old,
            };
            if ok {
                Ok(())
            } else {
                Err(bug(format!("the list went from {old} to {new} elements")))
            }
        }
    }
}
