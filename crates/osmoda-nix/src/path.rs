//! Attribute paths (`services.osmoda."my.name"`): parsing, display and JSON conversion.

use std::fmt;
use std::str::FromStr;

use crate::error::EditError;
use crate::render::render_key;

/// A non-empty attribute path: a list of attribute names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttrPath(Vec<String>);

impl AttrPath {
    /// Builds a path from its segments.
    ///
    /// # Errors
    /// [`EditError::InvalidPath`] if there are no segments or a segment contains a NUL byte.
    pub fn new<I, S>(segments: I) -> Result<AttrPath, EditError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let segs: Vec<String> = segments.into_iter().map(Into::into).collect();
        let invalid = |reason: &str| EditError::InvalidPath {
            input: shorten(&format!("{segs:?}")),
            reason: reason.to_string(),
        };
        if segs.is_empty() {
            return Err(invalid("a path needs at least one attribute name"));
        }
        if segs.iter().any(|s| s.contains('\0')) {
            return Err(invalid("attribute names cannot contain NUL bytes"));
        }
        let longest = segs.iter().map(String::len).max().unwrap_or(0);
        crate::budget::check_path(segs.len(), longest).map_err(|r| invalid(&r))?;
        Ok(AttrPath(segs))
    }

    /// Parses a path from a JSON value: either a dotted string or an array of strings.
    ///
    /// # Errors
    /// [`EditError::InvalidPath`] for any other JSON, or a malformed path.
    pub fn from_json(value: &serde_json::Value) -> Result<AttrPath, EditError> {
        match value {
            serde_json::Value::String(s) => s.parse(),
            serde_json::Value::Array(items) => {
                let mut segs = Vec::with_capacity(items.len());
                for item in items {
                    match item.as_str() {
                        Some(s) => segs.push(s.to_string()),
                        None => {
                            return Err(EditError::InvalidPath {
                                input: value.to_string(),
                                reason: "every segment of a path array must be a string".into(),
                            })
                        }
                    }
                }
                AttrPath::new(segs)
            }
            other => Err(EditError::InvalidPath {
                input: other.to_string(),
                reason: "a path is a dotted string or an array of strings".into(),
            }),
        }
    }

    /// The attribute names, outermost first.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// Number of segments (never zero).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Path made of the first `n` segments (`n` ≥ 1 and ≤ `len`, clamped).
    pub(crate) fn prefix(&self, n: usize) -> AttrPath {
        AttrPath(self.0[..n.clamp(1, self.0.len())].to_vec())
    }
}

/// The first 80 characters of `s` (for error messages about huge inputs).
fn shorten(s: &str) -> String {
    match s.char_indices().nth(80) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Refuses a path below `imports` (a list of modules, not an attribute set), naming the
/// operations that do add or remove a module.
///
/// # Errors
/// [`EditError::InvalidPath`] for `imports.<anything>`.
pub fn not_into_imports(path: &AttrPath) -> Result<(), EditError> {
    let segs = path.segments();
    if segs.len() > 1 && segs[0] == "imports" {
        return Err(EditError::InvalidPath {
            input: path.to_string(),
            reason: "`imports` is a list of modules, not an attribute set; add or remove a \
                     module with `agentctl config append imports --nix ./module.nix` or \
                     `agentctl config remove imports --nix ./module.nix`"
                .into(),
        });
    }
    Ok(())
}

impl FromStr for AttrPath {
    type Err = EditError;

    /// Parses `a.b."c.d".e`: names separated by dots; a name that is not a plain identifier is
    /// written in double quotes with `\"` and `\\` escapes.
    fn from_str(input: &str) -> Result<AttrPath, EditError> {
        let invalid = |reason: &str| EditError::InvalidPath {
            input: shorten(input),
            reason: reason.to_string(),
        };
        let mut segs = Vec::new();
        let mut chars = input.chars().peekable();
        loop {
            let mut seg = String::new();
            if chars.peek() == Some(&'"') {
                chars.next();
                loop {
                    match chars.next() {
                        None => return Err(invalid("unterminated quoted name")),
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c) => seg.push(c),
                            None => return Err(invalid("unterminated quoted name")),
                        },
                        Some(c) => seg.push(c),
                    }
                }
                match chars.peek() {
                    None | Some('.') => {}
                    Some(_) => return Err(invalid("a quoted name must be followed by '.' or end")),
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == '.' {
                        break;
                    }
                    if c == '"' {
                        return Err(invalid("a quote may only start a name"));
                    }
                    seg.push(c);
                    chars.next();
                }
                if seg.is_empty() {
                    return Err(invalid(
                        "empty attribute name (quote it as \"\" if you mean it)",
                    ));
                }
            }
            segs.push(seg);
            if segs.len() > crate::budget::MAX_PATH_SEGMENTS {
                return Err(invalid(&format!(
                    "more than {} attribute names",
                    crate::budget::MAX_PATH_SEGMENTS
                )));
            }
            match chars.next() {
                None => break,
                Some(_dot) => {}
            }
        }
        // Keep the rule `new` found (NUL byte, or a name or path over the budget).
        AttrPath::new(segs).map_err(|e| match e {
            EditError::InvalidPath { reason, .. } => invalid(&reason),
            other => other,
        })
    }
}

impl fmt::Display for AttrPath {
    /// Renders the path the way Nix source writes it (names quoted only when needed).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(|s| render_key(s)).collect();
        f.write_str(&parts.join("."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_quoted_name_is_reported_as_too_long_not_as_nul() {
        let long = format!("a.\"{}\"", "x".repeat(100_000));
        let e = long.parse::<AttrPath>().expect_err("too long").to_string();
        assert!(!e.contains("NUL"), "{e}");
        assert!(e.contains("long") || e.contains("bytes"), "{e}");
        let e = AttrPath::new(["a", "b\0c"]).expect_err("NUL").to_string();
        assert!(e.contains("NUL"), "{e}");
    }

    fn segs(s: &str) -> Vec<String> {
        match s.parse::<AttrPath>() {
            Ok(p) => p.0,
            Err(e) => vec![format!("ERR {e}")],
        }
    }

    #[test]
    fn parses_dotted_and_quoted() {
        assert_eq!(
            segs("services.osmoda.enable"),
            ["services", "osmoda", "enable"]
        );
        assert_eq!(segs("services.\"my.name\".x"), ["services", "my.name", "x"]);
        assert_eq!(segs("a.\"q\\\"uote\""), ["a", "q\"uote"]);
        assert_eq!(segs("\"\""), [""]);
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "a..b", "a.", ".a", "a.\"b", "a.\"b\"c", "a\"b\""] {
            assert!(segs(bad)[0].starts_with("ERR"), "{bad:?} accepted");
        }
    }

    #[test]
    fn json_forms_and_display_roundtrip() {
        let p = AttrPath::from_json(&serde_json::json!(["a", "b.c", "if"])).expect("path");
        assert_eq!(p.to_string(), "a.\"b.c\".\"if\"");
        assert_eq!(p.to_string().parse::<AttrPath>().expect("reparse"), p);
        assert!(AttrPath::from_json(&serde_json::json!([])).is_err());
        assert!(AttrPath::from_json(&serde_json::json!([1])).is_err());
        assert!(AttrPath::from_json(&serde_json::json!(3)).is_err());
    }

    #[test]
    fn huge_paths_are_refused_at_once() {
        let long = vec!["a"; 100_000].join(".");
        let err = long.parse::<AttrPath>().expect_err("100,000 names");
        assert!(err.to_string().contains("more than 100"), "{err}");
        assert!(err.to_string().len() < 400, "the message repeats the input");
        assert!(AttrPath::new(vec!["a"; 101]).is_err());
        assert!(AttrPath::new(vec!["a"; 100]).is_ok());
        assert!(AttrPath::new(["x".repeat(1_025)]).is_err());
    }
}
