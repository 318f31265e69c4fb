//! Planning edits as text splices of the original source: replacing a value, inserting a
//! binding or list item with matching indentation, and deleting bindings or items line-aware.

use std::ops::Range;

use rnix::{SyntaxKind::*, SyntaxNode};
use serde_json::Value as Json;

use crate::error::{EditError, Pos};
use crate::path::AttrPath;
use crate::render::{render_key, to_nix_with};
use crate::resolve::{rec_set, Container};
use crate::syntax::{
    end, indent_at, line_break_len, line_start, rest_of_line_blank, skip_hspace, start, starts_line,
};

/// Replace `start..end` of the original source with `text`.
#[derive(Debug, Clone)]
pub(crate) struct Splice {
    pub start: usize,
    pub end: usize,
    pub text: String,
}

/// Does the file end its lines with CRLF (judged by its first line break)?
pub(crate) fn crlf(src: &str) -> bool {
    src.find('\n')
        .is_some_and(|i| i > 0 && src.as_bytes()[i - 1] == b'\r')
}

/// `text` with every bare `\n` written as `eol`.
fn with_eol(text: &str, eol: &str) -> String {
    if eol == "\n" || !text.contains('\n') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 16);
    let mut prev = '\0';
    for c in text.chars() {
        if c == '\n' && prev != '\r' {
            out.push('\r');
        }
        out.push(c);
        prev = c;
    }
    out
}

/// Applies non-overlapping splices; returns the new text and the original byte range touched.
/// New text is written with the file's line ending `eol`.
pub(crate) fn apply(
    src: &str,
    mut splices: Vec<Splice>,
    eol: &str,
) -> Result<(String, Range<usize>), EditError> {
    splices.sort_by_key(|s| (s.start, s.end));
    let mut out = String::with_capacity(src.len() + 64);
    let mut pos = 0;
    for s in &splices {
        if s.start < pos || s.end < s.start || s.end > src.len() {
            return Err(EditError::Internal(format!(
                "overlapping edits at byte {}",
                s.start
            )));
        }
        out.push_str(&src[pos..s.start]);
        out.push_str(&with_eol(&s.text, eol));
        pos = s.end;
    }
    out.push_str(&src[pos..]);
    let span = match (splices.first(), splices.iter().map(|s| s.end).max()) {
        (Some(first), Some(last)) => first.start..last,
        _ => 0..0,
    };
    Ok((out, span))
}

/// A value about to be written: JSON rendered as Nix, or a checked raw Nix expression.
pub(crate) enum NewValue<'a> {
    Json(&'a Json),
    /// The expression's text, whether it must be parenthesised inside a list (or as a
    /// function argument), whether it brings its own priority wrapper (`mkForce …`), and
    /// whether its later lines may be indented for the place it lands.
    Raw {
        text: String,
        needs_parens_in_list: bool,
        priority: bool,
        reindent: bool,
    },
}

/// Can the lines of `expr` after the first be shifted right without changing its value? Not when
/// a string spans lines (a `"…"` string keeps its spaces, and a `''…''` string whose first line
/// holds text counts that line in its indentation).
pub(crate) fn can_reindent(expr: &SyntaxNode) -> bool {
    expr.descendants()
        .filter(|n| n.kind() == NODE_STRING && n.text().contains_char('\n'))
        .all(|n| {
            let t = n.text().to_string();
            t.strip_prefix("''").is_some_and(|rest| {
                rest.trim_start_matches([' ', '\t'])
                    .starts_with(['\n', '\r'])
            })
        })
}

/// Indents every non-blank line after the first by `indent`.
fn reindent(text: &str, indent: &str) -> String {
    let mut lines = text.split('\n');
    let mut out = lines.next().unwrap_or_default().to_string();
    for line in lines {
        out.push('\n');
        if !line.trim().is_empty() {
            out.push_str(indent);
        }
        out.push_str(line);
    }
    out
}

impl NewValue<'_> {
    pub(crate) fn render(&self, indent: &str, unit: &str) -> String {
        match self {
            NewValue::Json(v) => to_nix_with(v, indent, unit),
            NewValue::Raw {
                text,
                reindent: true,
                ..
            } => reindent(text, indent),
            NewValue::Raw { text, .. } => text.clone(),
        }
    }

    /// Does the value bring its own priority (`lib.mkForce 1`)?
    pub(crate) fn has_priority(&self) -> bool {
        matches!(self, NewValue::Raw { priority: true, .. })
    }

    pub(crate) fn render_item(&self, indent: &str, unit: &str) -> String {
        match self {
            NewValue::Json(v) => {
                let s = to_nix_with(v, indent, unit);
                if s.starts_with('-') {
                    format!("({s})")
                } else {
                    s
                }
            }
            NewValue::Raw {
                needs_parens_in_list: true,
                ..
            } => format!("({})", self.render(indent, unit)),
            NewValue::Raw { .. } => self.render(indent, unit),
        }
    }

    /// The value as a one-element list (for appending to a list that does not exist yet).
    pub(crate) fn as_list(&self) -> NewValue<'static> {
        match self {
            NewValue::Json(v) => NewValue::Raw {
                text: to_nix_with(&Json::Array(vec![(*v).clone()]), "", "  "),
                needs_parens_in_list: false,
                priority: false,
                reindent: true,
            },
            NewValue::Raw { reindent, .. } => NewValue::Raw {
                text: format!("[ {} ]", self.render_item("", "  ")),
                needs_parens_in_list: false,
                priority: false,
                reindent: *reindent,
            },
        }
    }
}

/// The indentation unit the file uses: the smallest indentation of any non-blank line (tabs
/// win). One pass over the bytes: only the indentation at the start of each line is looked at.
pub(crate) fn detect_unit(src: &str) -> String {
    let bytes = src.as_bytes();
    let mut best: Option<usize> = None;
    let mut line = 0;
    while line < bytes.len() {
        let text = bytes[line..]
            .iter()
            .position(|&b| b != b' ' && b != b'\t')
            .map_or(bytes.len(), |n| line + n);
        // A line holding only spaces and tabs (before `\n`, `\r\n` or the end) is blank.
        let blank = match bytes.get(text) {
            None | Some(b'\n') => true,
            Some(b'\r') => bytes.get(text + 1) == Some(&b'\n'),
            Some(_) => false,
        };
        if !blank {
            if bytes[line] == b'\t' {
                return "\t".into();
            }
            let ws = text - line;
            if ws > 0 && best.is_none_or(|b| ws < b) {
                best = Some(ws);
            }
        }
        line = bytes[text..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(bytes.len(), |n| text + n + 1);
    }
    " ".repeat(best.unwrap_or(2).clamp(1, 8))
}

/// Renders the names of a binding (`a.b."c.d"`).
pub(crate) fn render_keys(keys: &[String]) -> String {
    keys.iter()
        .map(|k| render_key(k))
        .collect::<Vec<_>>()
        .join(".")
}

fn brace(set: &SyntaxNode, kind: rnix::SyntaxKind) -> Option<usize> {
    let toks = set.children_with_tokens().filter(|c| c.kind() == kind);
    let tok = if kind == TOKEN_R_BRACE {
        toks.last()
    } else {
        toks.into_iter().next()
    };
    tok.map(|t| usize::from(t.text_range().start()))
}

/// Plans the insertion of `keys = value;` into `container`.
pub(crate) fn insert_binding(
    src: &str,
    container: &Container,
    keys: &[String],
    value: &NewValue<'_>,
    unit: &str,
) -> Result<Splice, EditError> {
    let set = &container.set;
    let (Some(l), Some(r)) = (brace(set, TOKEN_L_BRACE), brace(set, TOKEN_R_BRACE)) else {
        return Err(EditError::Internal("attribute set without braces".into()));
    };
    let brace_indent = indent_at(src, l);
    let entries: Vec<SyntaxNode> = set
        .children()
        .filter(|c| matches!(c.kind(), NODE_ATTRPATH_VALUE | NODE_INHERIT))
        .collect();
    let sibling_indent = entries
        .iter()
        .find(|e| starts_line(src, start(e)))
        .map(|e| indent_at(src, start(e)).to_string());
    let unit = match &sibling_indent {
        Some(si) if si.len() > brace_indent.len() && si.starts_with(brace_indent) => {
            si[brace_indent.len()..].to_string()
        }
        _ => unit.to_string(),
    };
    let ind = sibling_indent.unwrap_or_else(|| format!("{brace_indent}{unit}"));
    let binding = |ind: &str| format!("{} = {};", render_keys(keys), value.render(ind, &unit));
    let interior = &src[l + 1..r];
    if !interior.contains('\n') {
        let trimmed = interior.trim();
        if trimmed.is_empty() {
            return Ok(Splice {
                start: l + 1,
                end: r,
                text: format!("\n{ind}{}\n{brace_indent}", binding(&ind)),
            });
        }
        let b = binding(&ind);
        if !b.contains('\n') && indent_at(src, r).len() + (r - line_start(src, r)) + b.len() <= 100
        {
            let text = if interior.ends_with([' ', '\t']) {
                format!("{b} ")
            } else {
                format!(" {b}")
            };
            return Ok(Splice {
                start: r,
                end: r,
                text,
            });
        }
        return Ok(Splice {
            start: l + 1,
            end: r,
            text: format!("\n{ind}{trimmed}\n{ind}{b}\n{brace_indent}"),
        });
    }
    // Multi-line: next to the closest related binding, else before the closing brace.
    let best_share = container.siblings.iter().map(|s| s.1).max().unwrap_or(0);
    let anchor = container
        .siblings
        .iter()
        .rev()
        .find(|s| s.1 == best_share)
        .map(|s| &s.0);
    if let Some(a) = anchor {
        if let Some(eol) = rest_of_line_blank(src, end(a)) {
            let ind = if starts_line(src, start(a)) {
                indent_at(src, start(a)).to_string()
            } else {
                ind
            };
            return Ok(Splice {
                start: eol,
                end: eol,
                text: format!("\n{ind}{}", binding(&ind)),
            });
        }
    }
    if starts_line(src, r) {
        let ls = line_start(src, r);
        return Ok(Splice {
            start: ls,
            end: ls,
            text: format!("{ind}{}\n", binding(&ind)),
        });
    }
    let last = set
        .children_with_tokens()
        .filter(|c| !matches!(c.kind(), TOKEN_WHITESPACE | TOKEN_R_BRACE))
        .last()
        .map_or(l + 1, |c| usize::from(c.text_range().end()));
    Ok(Splice {
        start: last,
        end: last,
        text: format!("\n{ind}{}", binding(&ind)),
    })
}

/// The start of the `#` comment lines directly above the line starting at `ls` (no blank line
/// between): they describe the binding on that line and go with it.
fn attached_comments(src: &str, ls: usize) -> usize {
    let mut start = ls;
    while start > 0 {
        let prev = line_start(src, start - 1);
        let line = src[prev..start].trim();
        if line.starts_with('#') {
            start = prev;
        } else {
            break;
        }
    }
    start
}

/// The byte range to delete so that `node` disappears with its line (when it is alone on it,
/// including a trailing `#` comment) or with the spaces after it.
/// With `comments`, the `#` comment lines attached above it go too.
fn deletion_range(src: &str, node: &SyntaxNode, comments: bool) -> (usize, usize) {
    let (s, e) = (start(node), end(node));
    let alone_start = starts_line(src, s);
    match rest_of_line_blank(src, e) {
        Some(eol) if alone_start => {
            let after = eol + line_break_len(src, eol);
            let ls = line_start(src, s);
            let from = if comments {
                attached_comments(src, ls)
            } else {
                ls
            };
            // Between two blank lines, take one of them too, so no double gap is left.
            let blank_before = from > 0 && src[line_start(src, from - 1)..from].trim().is_empty();
            let next_eol = src[after..].find('\n').map(|i| after + i + 1);
            match next_eol {
                Some(n) if blank_before && from > 1 && src[after..n].trim().is_empty() => (from, n),
                _ => (from, after),
            }
        }
        Some(eol) => {
            let before = src[..s].trim_end_matches([' ', '\t']).len();
            (before, eol)
        }
        None => (s, skip_hspace(src, e)),
    }
}

/// Plans deleting bindings; an attribute set left without bindings and comments is deleted with
/// the binding that holds it (except the file's body).
pub(crate) fn delete_entries(
    src: &str,
    path: &AttrPath,
    body: &SyntaxNode,
    entries: Vec<SyntaxNode>,
) -> Result<Vec<Splice>, EditError> {
    let mut doomed = entries;
    loop {
        let mut changed = false;
        let parents: Vec<SyntaxNode> = doomed.iter().filter_map(SyntaxNode::parent).collect();
        for set in parents {
            if &set == body || set.kind() != NODE_ATTR_SET || doomed.iter().any(|d| d == &set) {
                continue;
            }
            let all_gone = set
                .children()
                .filter(|c| matches!(c.kind(), NODE_ATTRPATH_VALUE | NODE_INHERIT))
                .all(|c| doomed.contains(&c));
            let has_comment = set
                .children_with_tokens()
                .any(|c| c.kind() == TOKEN_COMMENT);
            let holder = set.parent().filter(|p| p.kind() == NODE_ATTRPATH_VALUE);
            if let (true, false, Some(holder)) = (all_gone, has_comment, holder) {
                if !doomed.contains(&holder) {
                    doomed.retain(|d| d.parent().as_ref() != Some(&set));
                    doomed.push(holder);
                    changed = true;
                    break;
                }
            }
        }
        if !changed {
            break;
        }
    }
    let mut splices = Vec::new();
    for entry in &doomed {
        if let Some(set) = entry.parent().filter(rec_set) {
            return Err(EditError::Refused {
                path: path.to_string(),
                pos: Pos::of(src, start(&set)),
                reason: "removing a name from a `rec` attribute set could break other values that \
                         refer to it"
                    .into(),
            });
        }
        let (s, e) = deletion_range(src, entry, true);
        splices.push(Splice {
            start: s,
            end: e,
            text: String::new(),
        });
    }
    Ok(merge_overlaps(splices))
}

/// Deletions may touch (two bindings on one line); merge them into disjoint ranges.
fn merge_overlaps(mut splices: Vec<Splice>) -> Vec<Splice> {
    splices.sort_by_key(|s| s.start);
    let mut out: Vec<Splice> = Vec::new();
    for s in splices {
        match out.last_mut() {
            Some(prev) if prev.text.is_empty() && s.text.is_empty() && s.start <= prev.end => {
                prev.end = prev.end.max(s.end);
            }
            _ => out.push(s),
        }
    }
    out
}

/// Plans appending `value` to the list literal `list`.
pub(crate) fn insert_item(
    src: &str,
    list: &SyntaxNode,
    value: &NewValue<'_>,
    unit: &str,
) -> Result<Splice, EditError> {
    let l = list
        .children_with_tokens()
        .find(|c| c.kind() == TOKEN_L_BRACK);
    let r = list
        .children_with_tokens()
        .filter(|c| c.kind() == TOKEN_R_BRACK)
        .last();
    let (Some(l), Some(r)) = (l, r) else {
        return Err(EditError::Internal("list without brackets".into()));
    };
    let (l, r) = (
        usize::from(l.text_range().start()),
        usize::from(r.text_range().start()),
    );
    let open_indent = indent_at(src, l).to_string();
    let items: Vec<SyntaxNode> = list.children().collect();
    let item_indent = items
        .iter()
        .find(|i| starts_line(src, start(i)))
        .map_or_else(
            || format!("{open_indent}{unit}"),
            |i| indent_at(src, start(i)).to_string(),
        );
    let interior = &src[l + 1..r];
    if !interior.contains('\n') {
        let trimmed = interior.trim();
        let item = value.render_item(&item_indent, unit);
        if trimmed.is_empty() && !item.contains('\n') {
            return Ok(Splice {
                start: l + 1,
                end: r,
                text: format!(" {item} "),
            });
        }
        let line_len = r - line_start(src, r) + item.len();
        if !item.contains('\n') && line_len <= 100 {
            let text = if interior.ends_with([' ', '\t']) {
                format!("{item} ")
            } else {
                format!(" {item}")
            };
            return Ok(Splice {
                start: r,
                end: r,
                text,
            });
        }
        let existing = if trimmed.is_empty() {
            String::new()
        } else {
            format!("\n{item_indent}{trimmed}")
        };
        return Ok(Splice {
            start: l + 1,
            end: r,
            text: format!("{existing}\n{item_indent}{item}\n{open_indent}"),
        });
    }
    let item = value.render_item(&item_indent, unit);
    if starts_line(src, r) {
        let ls = line_start(src, r);
        return Ok(Splice {
            start: ls,
            end: ls,
            text: format!("{item_indent}{item}\n"),
        });
    }
    let last = items.last().map_or(l + 1, end);
    Ok(Splice {
        start: last,
        end: last,
        text: format!("\n{item_indent}{item}"),
    })
}

/// Plans deleting list items.
pub(crate) fn delete_items(src: &str, items: &[SyntaxNode]) -> Vec<Splice> {
    merge_overlaps(
        items
            .iter()
            .map(|i| {
                // An element's own `#` comment lines above it go with it, as with a binding.
                let (s, e) = deletion_range(src, i, true);
                Splice {
                    start: s,
                    end: e,
                    text: String::new(),
                }
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::detect_unit;

    /// The straightforward definition `detect_unit` must agree with.
    fn unit_by_lines(src: &str) -> String {
        let mut best: Option<usize> = None;
        for line in src.lines() {
            let trimmed = line.trim_start_matches([' ', '\t']);
            if trimmed.is_empty() {
                continue;
            }
            let ws = &line[..line.len() - trimmed.len()];
            if ws.starts_with('\t') {
                return "\t".into();
            }
            if !ws.is_empty() && best.is_none_or(|b| ws.len() < b) {
                best = Some(ws.len());
            }
        }
        " ".repeat(best.unwrap_or(2).clamp(1, 8))
    }

    #[test]
    fn detect_unit_agrees_with_the_line_definition() {
        let cases = [
            "",
            "\n",
            "{ }",
            "{\n  a = 1;\n}\n",
            "{\n    a = 1;\n  \n}",
            "{\n\ta = 1;\n}\n",
            "{\n \ta = 1;\n}\n",
            "{\n\t\n   a = 1;\n}",
            "{\r\n    a = 1;\r\n  \r\n}\r\n",
            "{\n  \r\n   a;\n}",
            "{\n  \rx\n    a;\n}",
            "{\n   a;\n  \r",
            "{\n   a;\n  ",
            "{\n           a;\n}",
            "\u{e9}\n \u{e9}\n",
        ];
        for src in cases {
            assert_eq!(detect_unit(src), unit_by_lines(src), "{src:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn detect_unit_agrees_on_any_layout(src in "[ \t\r\na\u{e9}]{0,40}") {
            proptest::prop_assert_eq!(detect_unit(&src), unit_by_lines(&src));
        }
    }
}
