//! Planning each operation on one module body as splices, and checking the result reads back as
//! the operation intended.

use rnix::{SyntaxKind::*, SyntaxNode};
use serde_json::Value as Json;

use crate::edit::{
    self, delete_entries, delete_items, insert_binding, insert_item, NewValue, Splice,
};
use crate::error::{EditError, Pos};
use crate::modules::{list_of, priority, with_namespace};
use crate::resolve::{rec_set, resolve, Body};
use crate::syntax::{
    attrs_of, eval_literal, indent_at, key_of, literal_kind, parse, start, value_of, Key,
};
use crate::{get_in, module_body, not_found, AttrPath, Op, Value};

/// Checks a value to write and prepares it for rendering.
pub(crate) fn new_value(value: &Value) -> Result<NewValue<'_>, EditError> {
    match value {
        Value::Json(v) => {
            crate::render::check_value(v)?;
            Ok(NewValue::Json(v))
        }
        Value::Raw(text) => {
            let root = parse(text).map_err(raw_error)?;
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
            // Comments around the expression are part of what the caller wrote: keep those
            // before it and inside it. A `#` comment after it would swallow the `;` that follows
            // the value, so it is written as a block comment (or gets its own line).
            let mut text = text.trim().to_string();
            if let Some(last) = root.last_token().filter(|t| t.kind() == TOKEN_COMMENT) {
                if let Some(body) = last.text().strip_prefix('#') {
                    let cut = text.len() - last.text().len();
                    text = if body.contains("*/") {
                        format!("{text}\n")
                    } else {
                        format!("{} /*{} */", text[..cut].trim_end(), body.trim_end())
                    };
                }
            }
            Ok(NewValue::Raw {
                text,
                needs_parens_in_list: !simple,
                priority: priority(&expr).is_some(),
                reindent: edit::can_reindent(&expr),
            })
        }
    }
}

/// The indentation unit to use below a line indented with `indent`.
fn edit_unit(indent: &str, unit: &str) -> String {
    if indent.contains('\t') {
        "\t".into()
    } else {
        unit.to_string()
    }
}

/// Refuses an edit of a binding that other bindings of an enclosing `rec { }` set refer to:
/// changing it would silently change them too.
fn check_rec_users(
    src: &str,
    body: &Body,
    path: &AttrPath,
    entry: &SyntaxNode,
) -> Result<(), EditError> {
    let mut binding = entry.clone();
    while let Some(set) = binding.parent() {
        if set.kind() != NODE_ATTR_SET {
            break;
        }
        if rec_set(&set) {
            if let Some(Key::Static(name)) = attrs_of(&binding).next().map(|a| key_of(&a)) {
                let users: Vec<String> = set
                    .children()
                    .filter(|b| b.kind() == NODE_ATTRPATH_VALUE && b != &binding)
                    .filter(|b| {
                        value_of(b).is_some_and(|v| {
                            v.descendants().any(|n| {
                                n.kind() == NODE_IDENT
                                    && n.text() == name.as_str()
                                    && n.parent().is_none_or(|p| p.kind() != NODE_ATTRPATH)
                            })
                        })
                    })
                    .map(|b| {
                        let keys: Vec<String> =
                            attrs_of(&b).map(|a| a.text().to_string()).collect();
                        format!("`{}` at {}", keys.join("."), Pos::of(src, start(&b)))
                    })
                    .collect();
                if !users.is_empty() {
                    return Err(EditError::Refused {
                        path: path.to_string(),
                        pos: Pos::of(src, start(&binding)),
                        reason: format!(
                            "`{name}` is used by {} in this `rec` set, so changing it would change \
                             them too (they must change together)",
                            users.join(", ")
                        ),
                    });
                }
            }
        }
        if set == body.set {
            break;
        }
        match set.parent().filter(|p| p.kind() == NODE_ATTRPATH_VALUE) {
            Some(holder) => binding = holder,
            None => break,
        }
    }
    Ok(())
}

/// Plans `set`; also returns the priority wrapper kept around the new value.
pub(crate) fn plan_set(
    src: &str,
    body: &Body,
    path: &AttrPath,
    value: &NewValue<'_>,
    unit: &str,
) -> Result<(Vec<Splice>, Option<String>), EditError> {
    let res = resolve(body, src, path)?;
    res.check_unique(src, path)?;
    if let Some(place) = res.single_exact() {
        check_rec_users(src, body, path, &place.entry)?;
        let v = value_of(&place.entry)
            .ok_or_else(|| EditError::Internal("binding without value".into()))?;
        let indent = indent_at(src, start(&place.entry));
        let unit = edit_unit(indent, unit);
        if let (Some(w), false) = (priority(&v), value.has_priority()) {
            // Replace the value inside the wrapper (inside its parentheses, if any).
            let inner_paren = (w.inner.kind() == NODE_PAREN)
                .then(|| w.inner.children().next())
                .flatten();
            let (target, text) = match inner_paren {
                Some(inside) => (inside, value.render(indent, &unit)),
                None => (w.inner.clone(), value.render_item(indent, &unit)),
            };
            return Ok((
                vec![Splice {
                    start: start(&target),
                    end: crate::syntax::end(&target),
                    text,
                }],
                Some(w.wrapper),
            ));
        }
        return Ok((
            vec![Splice {
                start: start(&v),
                end: crate::syntax::end(&v),
                text: value.render(indent, &unit),
            }],
            None,
        ));
    }
    if let Some((first, rest)) = res.places.split_first() {
        // The target is an attribute set spread over several bindings: the first one becomes
        // the new binding, the others go.
        for place in &res.places {
            check_rec_users(src, body, path, &place.entry)?;
        }
        let indent = indent_at(src, start(&first.entry));
        let unit = edit_unit(indent, unit);
        let keys = edit::render_keys(&path.segments()[first.depth..]);
        let text = format!("{keys} = {};", value.render(indent, &unit));
        let mut splices = vec![Splice {
            start: start(&first.entry),
            end: crate::syntax::end(&first.entry),
            text,
        }];
        splices.extend(delete_entries(
            src,
            path,
            &body.set,
            rest.iter().map(|p| p.entry.clone()).collect(),
        )?);
        return Ok((splices, None));
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
    Ok((
        vec![insert_binding(
            src,
            container,
            &path.segments()[container.depth..],
            value,
            unit,
        )?],
        None,
    ))
}

pub(crate) fn plan_unset(
    src: &str,
    body: &Body,
    path: &AttrPath,
) -> Result<Vec<Splice>, EditError> {
    let res = resolve(body, src, path)?;
    res.check_unique(src, path)?;
    if res.places.is_empty() {
        return Err(not_found(src, path, res.imports));
    }
    for place in &res.places {
        check_rec_users(src, body, path, &place.entry)?;
    }
    delete_entries(
        src,
        path,
        &body.set,
        res.places.iter().map(|p| p.entry.clone()).collect(),
    )
}

/// A list literal to edit, and the `with` namespace it sits under (`pkgs`), if any.
pub(crate) struct TargetList {
    pub list: SyntaxNode,
    pub namespace: Option<String>,
}

/// The list literal at `path` (through `mkForce` and `with …;`), or `Ok(None)` when the path is
/// not defined.
pub(crate) fn target_list(
    src: &str,
    body: &Body,
    path: &AttrPath,
    op: &str,
) -> Result<Option<TargetList>, EditError> {
    let res = resolve(body, src, path)?;
    res.check_unique(src, path)?;
    let Some(first) = res.places.first() else {
        return Ok(None);
    };
    let type_err = |node: &SyntaxNode, found: String| EditError::Type {
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
    let value = priority(&value).map_or(value, |w| w.inner);
    let value = match value.kind() {
        NODE_PAREN => value.children().next().unwrap_or(value),
        _ => value,
    };
    if let Some(list) = list_of(&value) {
        return Ok(Some(TargetList {
            list,
            namespace: with_namespace(&value),
        }));
    }
    match literal_kind(&value) {
        Some(kind) => Err(type_err(&value, format!("`{path}` is {kind}"))),
        None => Err(EditError::Refused {
            path: path.to_string(),
            pos: Pos::of(src, start(&value)),
            reason: format!(
                "the list is built by {}, not written as a list literal",
                crate::syntax::describe(&value)
            ),
        }),
    }
}

pub(crate) fn plan_append(
    src: &str,
    body: &Body,
    path: &AttrPath,
    value: &NewValue<'_>,
    unit: &str,
) -> Result<Vec<Splice>, EditError> {
    match target_list(src, body, path, "append to")? {
        Some(t) => {
            let unit = edit_unit(indent_at(src, start(&t.list)), unit);
            Ok(vec![insert_item(src, &t.list, value, &unit)?])
        }
        None => plan_set(src, body, path, &value.as_list(), unit).map(|(s, _)| s),
    }
}

pub(crate) fn plan_remove(
    src: &str,
    body: &Body,
    path: &AttrPath,
    value: &Value,
) -> Result<Vec<Splice>, EditError> {
    let Some(t) = target_list(src, body, path, "remove from")? else {
        return Err(not_found(src, path, None));
    };
    let ns = t.namespace.as_deref();
    let wanted = match value {
        Value::Json(v) => Wanted::Json(v),
        Value::Raw(text) => Wanted::Tokens(tokens(&parse(text).map_err(raw_error)?, ns)),
    };
    let doomed: Vec<SyntaxNode> = t
        .list
        .children()
        .filter(|item| match &wanted {
            Wanted::Json(v) => eval_literal(item).is_ok_and(|got| &got == *v),
            Wanted::Tokens(w) => &tokens(item, ns) == w,
        })
        .collect();
    Ok(delete_items(src, &doomed))
}

enum Wanted<'a> {
    Json(&'a Json),
    Tokens(Vec<String>),
}

/// The significant tokens of a node (no whitespace or comments), for comparing raw expressions.
/// Under `with NS;`, a leading `NS.` is dropped, so `pkgs.htop` and `htop` compare equal.
fn tokens(node: &SyntaxNode, namespace: Option<&str>) -> Vec<String> {
    let mut node = node.clone();
    while node.kind() == NODE_ROOT || node.kind() == NODE_PAREN {
        match node.children().next() {
            Some(inner) => node = inner,
            None => break,
        }
    }
    let mut toks: Vec<String> = node
        .descendants_with_tokens()
        .filter_map(|e| e.into_token())
        .filter(|t| !matches!(t.kind(), TOKEN_WHITESPACE | TOKEN_COMMENT))
        .map(|t| t.text().to_string())
        .collect();
    if let Some(ns) = namespace {
        if toks.len() > 2 && toks[0] == ns && toks[1] == "." {
            toks.drain(..2);
        }
    }
    toks
}

/// Verifies an edit's output: it parses, and the path reads back as the operation intended.
/// `before` is the original text with its module `body`; `after` is parsed exactly once.
pub(crate) fn check_result(
    before: &str,
    body: &Body,
    after: &str,
    module: usize,
    op: &Op,
    path: &AttrPath,
) -> Result<(), EditError> {
    let root = parse(after)
        .map_err(|e| EditError::Internal(format!("the edited file does not parse: {e}")))?;
    let bug = |what: String| EditError::Internal(format!("after {op:?}: {what}"));
    let after_body = module_body(&root, after, module, path)
        .map_err(|e| bug(format!("the module is gone: {e}")))?;
    match op {
        Op::Set(_, Value::Json(v)) => match get_in(&after_body, after, path) {
            Ok(got) if &got == v => Ok(()),
            other => Err(bug(format!("the path reads back as {other:?}"))),
        },
        Op::Set(_, Value::Raw(_)) => {
            let res = resolve(&after_body, after, path)?;
            match res.single_exact() {
                Some(_) => Ok(()),
                None => Err(bug("the path is not defined exactly once".into())),
            }
        }
        Op::Unset(_) => match get_in(&after_body, after, path) {
            Err(EditError::NotFound { .. }) => Ok(()),
            other => Err(bug(format!("the path still reads as {other:?}"))),
        },
        Op::Append(_, _) | Op::Remove(_, _) => {
            let count = |src: &str, body: &Body| -> Result<usize, EditError> {
                Ok(target_list(src, body, path, "check")?.map_or(0, |t| t.list.children().count()))
            };
            let (old, new) = (count(before, body)?, count(after, &after_body)?);
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

/// A raw value that does not parse, said of the value (its own positions), not of the file.
fn raw_error(e: EditError) -> EditError {
    match e {
        EditError::Parse { pos, message } => EditError::InvalidValue(format!(
            "the raw Nix value does not parse at {pos} (of the value): {message}"
        )),
        other => EditError::InvalidValue(format!("raw Nix value: {other}")),
    }
}
