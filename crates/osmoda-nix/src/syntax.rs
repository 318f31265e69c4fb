//! Read-only helpers over the rnix syntax tree: parsing, attribute names, literal evaluation and
//! text-layout queries (line starts, indentation).

use rnix::ast;
use rnix::{ParseError, SyntaxKind, SyntaxKind::*, SyntaxNode};
use rowan::ast::AstNode;
use serde_json::{Map, Value as Json};

use crate::error::{EditError, Pos};

/// Parses `src`, failing with the position of the first parse error.
pub(crate) fn parse(src: &str) -> Result<SyntaxNode, EditError> {
    crate::budget::check(src)?;
    let parsed = rnix::Root::parse(src);
    if let Some(err) = parsed.errors().first() {
        let offset = match err {
            ParseError::Unexpected(r)
            | ParseError::UnexpectedExtra(r)
            | ParseError::UnexpectedWanted(_, r, _)
            | ParseError::UnexpectedDoubleBind(r)
            | ParseError::DuplicatedArgs(r, _) => usize::from(r.start()),
            _ => src.len(),
        };
        return Err(EditError::Parse {
            pos: Pos::of(src, offset),
            message: err.to_string(),
        });
    }
    Ok(parsed.syntax())
}

/// Byte offset where `node` starts.
pub(crate) fn start(node: &SyntaxNode) -> usize {
    usize::from(node.text_range().start())
}

/// Byte offset where `node` ends.
pub(crate) fn end(node: &SyntaxNode) -> usize {
    usize::from(node.text_range().end())
}

/// The first child node of `node` that is an expression-like node (skips attrpaths).
pub(crate) fn value_of(entry: &SyntaxNode) -> Option<SyntaxNode> {
    entry.children().find(|c| c.kind() != NODE_ATTRPATH)
}

/// An attribute name as written in a binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Key {
    /// A name known without evaluation.
    Static(String),
    /// `${expr}` or an interpolated string: unknown until evaluated.
    Dynamic,
}

/// The name of one attribute node (`NODE_IDENT`, `NODE_STRING` or `NODE_DYNAMIC`).
pub(crate) fn key_of(attr: &SyntaxNode) -> Key {
    match attr.kind() {
        NODE_IDENT => Key::Static(attr.text().to_string()),
        NODE_STRING => static_string(attr).map_or(Key::Dynamic, Key::Static),
        NODE_DYNAMIC => attr
            .children()
            .next()
            .filter(|n| n.kind() == NODE_STRING)
            .and_then(|n| static_string(&n))
            .map_or(Key::Dynamic, Key::Static),
        _ => Key::Dynamic,
    }
}

/// Is the name of attribute node `attr` `want`? `None` if the name is dynamic. Same answer as
/// comparing [`key_of`], without allocating for plain identifiers (the common case, on the hot
/// path of resolving).
pub(crate) fn key_is(attr: &SyntaxNode, want: &str) -> Option<bool> {
    if attr.kind() == NODE_IDENT {
        let green = attr.green();
        let mut children = green.children();
        if let (Some(rowan::NodeOrToken::Token(tok)), None) = (children.next(), children.next()) {
            return Some(tok.text() == want);
        }
    }
    match key_of(attr) {
        Key::Static(name) => Some(name == want),
        Key::Dynamic => None,
    }
}

/// The attribute nodes of a binding's attrpath (`a.b."c"` → the nodes `a`, `b` and `"c"`).
pub(crate) fn attrs_of(entry: &SyntaxNode) -> impl Iterator<Item = SyntaxNode> {
    entry
        .children()
        .find(|c| c.kind() == NODE_ATTRPATH)
        .into_iter()
        .flat_map(|p| p.children())
}

/// The names of a binding's attrpath (`a.b."c"` → `[a, b, c]`).
pub(crate) fn keys_of(entry: &SyntaxNode) -> Vec<(Key, SyntaxNode)> {
    entry
        .children()
        .find(|c| c.kind() == NODE_ATTRPATH)
        .map(|p| p.children().map(|a| (key_of(&a), a)).collect())
        .unwrap_or_default()
}

/// The value of a string node without interpolations, or `None` if it interpolates.
pub(crate) fn static_string(node: &SyntaxNode) -> Option<String> {
    let s = ast::Str::cast(node.clone())?;
    let mut out = String::new();
    for part in s.normalized_parts() {
        match part {
            ast::InterpolPart::Literal(text) => out.push_str(&text),
            ast::InterpolPart::Interpolation(_) => return None,
        }
    }
    Some(out)
}

/// Does an indented string contain `''\n` or `''\r`? Nix strips indentation after such an
/// escaped line break, rnix does not; such strings are not read rather than read wrongly.
fn escaped_line_break(node: &SyntaxNode) -> bool {
    node.first_token().is_some_and(|t| t.text() == "''")
        && node
            .children_with_tokens()
            .filter(|c| c.kind() == TOKEN_STRING_CONTENT)
            .any(|c| {
                let text = c.to_string();
                text.contains("''\\n") || text.contains("''\\r")
            })
}

/// A short description of an expression, used to explain refusals.
pub(crate) fn describe(node: &SyntaxNode) -> String {
    match node.kind() {
        NODE_WITH => "a `with` expression (which hides where names come from)".into(),
        NODE_LET_IN | NODE_LEGACY_LET => "a `let ... in` expression".into(),
        NODE_APPLY => {
            let mut head = node.clone();
            while head.kind() == NODE_APPLY {
                match head.children().next() {
                    Some(h) => head = h,
                    None => break,
                }
            }
            format!("a function application (`{}`)", snippet(&head))
        }
        NODE_IF_ELSE => "an `if ... then ... else` expression".into(),
        NODE_BIN_OP => format!("an operator expression (`{}`)", snippet(node)),
        NODE_IDENT => format!("the variable `{}`", snippet(node)),
        NODE_SELECT => format!("the attribute selection `{}`", snippet(node)),
        NODE_LAMBDA => "a function".into(),
        NODE_ASSERT => "an `assert` expression".into(),
        NODE_PAREN => format!("a parenthesised expression (`{}`)", snippet(node)),
        NODE_STRING => "a string with interpolation".into(),
        NODE_LIST => "a list".into(),
        NODE_ATTR_SET => "an attribute set".into(),
        NODE_LITERAL => "a literal".into(),
        k if is_path(k) => "a path".into(),
        _ => format!("the expression `{}`", snippet(node)),
    }
}

/// The kind of literal a node is, for type errors; `None` if it is not a plain literal.
pub(crate) fn literal_kind(node: &SyntaxNode) -> Option<&'static str> {
    match node.kind() {
        NODE_LITERAL => Some("a number"),
        NODE_STRING => Some("a string"),
        NODE_LIST => Some("a list"),
        NODE_ATTR_SET => Some("an attribute set"),
        NODE_UNARY_OP => Some("a number"),
        NODE_IDENT if matches!(node.text().to_string().as_str(), "true" | "false") => {
            Some("a boolean")
        }
        NODE_IDENT if node.text() == "null" => Some("null"),
        k if is_path(k) => Some("a path"),
        _ => None,
    }
}

fn is_path(k: SyntaxKind) -> bool {
    matches!(
        k,
        NODE_PATH_ABS | NODE_PATH_REL | NODE_PATH_HOME | NODE_PATH_SEARCH
    )
}

fn snippet(node: &SyntaxNode) -> String {
    let text = node.text().to_string();
    let one_line = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 40 {
        format!("{}...", one_line.chars().take(40).collect::<String>())
    } else {
        one_line
    }
}

/// Why a literal could not be read: the offending node and a description.
pub(crate) struct NotLiteral {
    pub offset: usize,
    pub what: String,
}

/// Merges `value` into `obj` at `keys`, the way Nix merges attribute set literals.
/// Fails (returning the conflicting key path) when two leaves collide.
pub(crate) fn merge_at(
    obj: &mut Map<String, Json>,
    keys: &[String],
    value: Json,
) -> Result<(), ()> {
    let Some((first, rest)) = keys.split_first() else {
        return match value {
            Json::Object(m) => {
                for (k, v) in m {
                    merge_at(obj, std::slice::from_ref(&k), v)?;
                }
                Ok(())
            }
            _ => Err(()),
        };
    };
    if rest.is_empty() {
        match (obj.get_mut(first), value) {
            (None, value) => {
                obj.insert(first.clone(), value);
                Ok(())
            }
            (Some(Json::Object(existing)), Json::Object(m)) => {
                for (k, v) in m {
                    merge_at(existing, std::slice::from_ref(&k), v)?;
                }
                Ok(())
            }
            _ => Err(()),
        }
    } else {
        let slot = obj
            .entry(first.clone())
            .or_insert_with(|| Json::Object(Map::new()));
        match slot {
            Json::Object(inner) => merge_at(inner, rest, value),
            _ => Err(()),
        }
    }
}

/// Evaluates a literal expression to JSON (strings, numbers, booleans, null, lists, attribute
/// sets, paths as strings). Anything else is reported as not literal.
pub(crate) fn eval_literal(node: &SyntaxNode) -> Result<Json, NotLiteral> {
    let fail = |n: &SyntaxNode| NotLiteral {
        offset: start(n),
        what: describe(n),
    };
    match node.kind() {
        NODE_LITERAL => {
            let tok = node.first_token().ok_or_else(|| fail(node))?;
            let text = tok.text();
            match tok.kind() {
                TOKEN_INTEGER => text.parse::<i64>().map(Json::from).map_err(|_| NotLiteral {
                    offset: start(node),
                    what: format!("integer {text} overflows Nix's 64-bit range"),
                }),
                TOKEN_FLOAT => text
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Json::Number)
                    .ok_or_else(|| fail(node)),
                TOKEN_URI => Ok(Json::String(text.to_string())),
                _ => Err(fail(node)),
            }
        }
        NODE_UNARY_OP => {
            let is_neg = node.children_with_tokens().any(|c| c.kind() == TOKEN_SUB);
            let inner = node.children().next().ok_or_else(|| fail(node))?;
            let tok = inner
                .first_token()
                .filter(|_| is_neg && inner.kind() == NODE_LITERAL);
            match tok.as_ref().map(|t| (t.kind(), t.text())) {
                Some((TOKEN_INTEGER, t)) => t
                    .parse::<i128>()
                    .ok()
                    .and_then(|v| i64::try_from(-v).ok())
                    .map(Json::from)
                    .ok_or_else(|| fail(node)),
                Some((TOKEN_FLOAT, t)) => t
                    .parse::<f64>()
                    .ok()
                    .and_then(|f| serde_json::Number::from_f64(-f))
                    .map(Json::Number)
                    .ok_or_else(|| fail(node)),
                _ => Err(fail(node)),
            }
        }
        NODE_STRING if escaped_line_break(node) => Err(NotLiteral {
            offset: start(node),
            what: "an indented string with an escaped line break (`''\\n`), whose indentation \
                   rules this reader does not model"
                .into(),
        }),
        NODE_STRING => static_string(node)
            .map(Json::String)
            .ok_or_else(|| NotLiteral {
                offset: start(node),
                what: "a string with `${...}` interpolation".into(),
            }),
        k if is_path(k) => {
            if node.children().next().is_some() {
                Err(NotLiteral {
                    offset: start(node),
                    what: "a path with interpolation".into(),
                })
            } else {
                Ok(Json::String(node.text().to_string()))
            }
        }
        NODE_IDENT => match node.text().to_string().as_str() {
            "true" => Ok(Json::Bool(true)),
            "false" => Ok(Json::Bool(false)),
            "null" => Ok(Json::Null),
            _ => Err(fail(node)),
        },
        NODE_PAREN => eval_literal(&node.children().next().ok_or_else(|| fail(node))?),
        NODE_LIST => node
            .children()
            .map(|c| eval_literal(&c))
            .collect::<Result<Vec<_>, _>>()
            .map(Json::Array),
        NODE_ATTR_SET => {
            let mut obj = Map::new();
            for entry in node.children() {
                if entry.kind() != NODE_ATTRPATH_VALUE {
                    return Err(NotLiteral {
                        offset: start(&entry),
                        what: "an `inherit`".into(),
                    });
                }
                let mut names = Vec::new();
                for (key, attr) in keys_of(&entry) {
                    match key {
                        Key::Static(s) => names.push(s),
                        Key::Dynamic => {
                            return Err(NotLiteral {
                                offset: start(&attr),
                                what: "a dynamic attribute name".into(),
                            })
                        }
                    }
                }
                let value = value_of(&entry).ok_or_else(|| fail(&entry))?;
                let value = eval_literal(&value)?;
                merge_at(&mut obj, &names, value).map_err(|()| NotLiteral {
                    offset: start(&entry),
                    what: format!("`{}` is defined twice", names.join(".")),
                })?;
            }
            Ok(Json::Object(obj))
        }
        _ => Err(fail(node)),
    }
}

/// Start of the line containing byte `offset`.
pub(crate) fn line_start(src: &str, offset: usize) -> usize {
    src[..offset].rfind('\n').map_or(0, |i| i + 1)
}

/// The leading whitespace of the line containing byte `offset`.
pub(crate) fn indent_at(src: &str, offset: usize) -> &str {
    let ls = line_start(src, offset);
    let rest = &src[ls..];
    let n = rest.len() - rest.trim_start_matches([' ', '\t']).len();
    &src[ls..ls + n]
}

/// Is the text before `offset` on its line only spaces and tabs?
pub(crate) fn starts_line(src: &str, offset: usize) -> bool {
    src[line_start(src, offset)..offset]
        .chars()
        .all(|c| c == ' ' || c == '\t')
}

/// Skips spaces and tabs from `offset`.
pub(crate) fn skip_hspace(src: &str, offset: usize) -> usize {
    offset + (src[offset..].len() - src[offset..].trim_start_matches([' ', '\t']).len())
}

/// If the rest of the line after `offset` is blank or a `#` comment, the offset where its line
/// break starts (the `\r` of a CRLF, so text inserted there never splits one; or the end of
/// the file); otherwise `None`.
pub(crate) fn rest_of_line_blank(src: &str, offset: usize) -> Option<usize> {
    let p = skip_hspace(src, offset);
    let rest = &src[p..];
    let mut eol = p + rest.find('\n').unwrap_or(rest.len());
    if eol > p && src.as_bytes()[eol - 1] == b'\r' && eol < src.len() {
        eol -= 1;
    }
    let line = &src[p..eol];
    (line.is_empty() || line.starts_with('#')).then_some(eol)
}

/// The length of the line break at `offset` (2 for CRLF, 1 for LF, 0 elsewhere).
pub(crate) fn line_break_len(src: &str, offset: usize) -> usize {
    if src[offset..].starts_with("\r\n") {
        2
    } else if src[offset..].starts_with('\n') {
        1
    } else {
        0
    }
}
