//! Rendering JSON values as idiomatic Nix source: escaping, key quoting and indentation.

use serde_json::Value as Json;

use crate::error::EditError;

/// Nix keywords that cannot be used as bare attribute names.
const KEYWORDS: &[&str] = &[
    "assert", "else", "if", "in", "inherit", "let", "or", "rec", "then", "with",
];

/// Is `s` usable as a bare (unquoted) attribute name?
pub(crate) fn is_plain_ident(s: &str) -> bool {
    let mut chars = s.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    first_ok
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '\'' | '-'))
        && !KEYWORDS.contains(&s)
}

/// Renders an attribute name, quoted only when it is not a plain identifier.
pub(crate) fn render_key(s: &str) -> String {
    if is_plain_ident(s) {
        s.to_string()
    } else {
        quote(s)
    }
}

/// Renders `s` as a double-quoted Nix string, escaping `"`, `\`, `${` and control characters.
pub(crate) fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' if chars.peek() == Some(&'{') => out.push_str("\\$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Checks that every part of `value` can be written as Nix: integers within Nix's signed 64-bit
/// range (excluding its minimum, which has no literal form) and no NUL characters in strings.
pub(crate) fn check_value(value: &Json) -> Result<(), EditError> {
    match value {
        Json::Number(n) => {
            // Decided by how the number is written: `1e400` is a float too large for a double,
            // not an integer out of range (with `arbitrary_precision`, `is_f64` is false for it).
            let text = n.to_string();
            if n.is_f64() || text.contains(['.', 'e', 'E']) {
                return check_float(&text);
            }
            match n.as_i64() {
                Some(i) if i > i64::MIN => Ok(()),
                _ => Err(EditError::InvalidValue(format!(
                    "integer {n} is outside Nix's integer range (±9223372036854775807)"
                ))),
            }
        }
        Json::String(s) => check_str(s),
        Json::Array(items) => items.iter().try_for_each(check_value),
        Json::Object(map) => map.iter().try_for_each(|(k, v)| {
            check_str(k)?;
            check_value(v)
        }),
        Json::Null | Json::Bool(_) => Ok(()),
    }
}

/// A JSON number with a fraction or exponent must be the one a Nix float (a double) holds:
/// its decimal value equals that of the double's shortest form (`1.50` and `1.5e0` pass,
/// `1.0000000000000001` does not).
fn check_float(text: &str) -> Result<(), EditError> {
    let exact = text
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite())
        .and_then(serde_json::Number::from_f64)
        .is_some_and(|n| decimal(&n.to_string()) == decimal(text));
    if exact {
        Ok(())
    } else if text.parse::<f64>().map_or(true, |f| !f.is_finite()) {
        Err(EditError::InvalidValue(format!(
            "number {text} is beyond the range of a Nix float (a 64-bit double, at most about 1.8e308); write it as a string"
        )))
    } else {
        Err(EditError::InvalidValue(format!(
            "number {text} cannot be carried exactly by a Nix float (a 64-bit double); write it with at most 15–17 significant digits, or as a string"
        )))
    }
}

/// A decimal number's sign, significant digits and exponent of its first digit, so that equal
/// values compare equal however they are written.
fn decimal(text: &str) -> (bool, String, i64) {
    let (neg, t) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let (mant, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], t[i + 1..].parse::<i64>().unwrap_or(0)),
        None => (t, 0),
    };
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let all: String = format!("{int}{frac}");
    let lead = all.len() - all.trim_start_matches('0').len();
    let digits = all
        .trim_start_matches('0')
        .trim_end_matches('0')
        .to_string();
    if digits.is_empty() {
        return (false, String::new(), 0);
    }
    let point = i64::try_from(int.len()).unwrap_or(0) - i64::try_from(lead).unwrap_or(0) + exp;
    (neg, digits, point)
}

fn check_str(s: &str) -> Result<(), EditError> {
    if s.contains('\0') {
        Err(EditError::InvalidValue(format!(
            "{s:?} contains a NUL character, which Nix strings cannot hold"
        )))
    } else {
        Ok(())
    }
}

fn render_float(f: f64) -> String {
    // `Display` gives the shortest text that round-trips and never uses an exponent; Nix needs
    // a dot to read it as a float.
    let s = format!("{f}");
    if s.contains('.') {
        s
    } else {
        format!("{s}.0")
    }
}

fn is_scalar(v: &Json) -> bool {
    !matches!(v, Json::Array(a) if !a.is_empty()) && !matches!(v, Json::Object(o) if !o.is_empty())
}

/// Renders `value` as idiomatic Nix. `indent` is the indentation of the line the value starts on;
/// nested lines are indented by two more spaces. Attribute sets are written one binding per line,
/// short lists of scalars on one line.
///
/// Integers outside Nix's range are rendered as floats; `set` and friends reject such values
/// before rendering (see [`crate::EditError::InvalidValue`]).
pub fn to_nix(value: &Json, indent: &str) -> String {
    to_nix_with(value, indent, "  ")
}

/// [`to_nix`] with an explicit indentation unit (for example a tab).
pub(crate) fn to_nix_with(value: &Json, indent: &str, unit: &str) -> String {
    let mut out = String::new();
    write_value(&mut out, value, indent, unit, false);
    out
}

fn write_value(out: &mut String, value: &Json, indent: &str, unit: &str, in_list: bool) {
    match value {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => {
            let text = match n.as_i64() {
                Some(i) => i.to_string(),
                None => render_float(n.as_f64().unwrap_or(0.0)),
            };
            if in_list && text.starts_with('-') {
                out.push('(');
                out.push_str(&text);
                out.push(')');
            } else {
                out.push_str(&text);
            }
        }
        Json::String(s) => out.push_str(&quote(s)),
        Json::Array(items) if items.is_empty() => out.push_str("[ ]"),
        Json::Array(items) => {
            let inner = format!("{indent}{unit}");
            if items.iter().all(is_scalar) {
                let parts: Vec<String> = items
                    .iter()
                    .map(|i| {
                        let mut s = String::new();
                        write_value(&mut s, i, &inner, unit, true);
                        s
                    })
                    .collect();
                let one_line = format!("[ {} ]", parts.join(" "));
                if one_line.len() <= 60 && !one_line.contains('\n') {
                    out.push_str(&one_line);
                    return;
                }
            }
            out.push_str("[\n");
            for item in items {
                out.push_str(&inner);
                write_value(out, item, &inner, unit, true);
                out.push('\n');
            }
            out.push_str(indent);
            out.push(']');
        }
        Json::Object(map) if map.is_empty() => out.push_str("{ }"),
        Json::Object(map) => {
            let inner = format!("{indent}{unit}");
            out.push_str("{\n");
            for (k, v) in map {
                out.push_str(&inner);
                out.push_str(&render_key(k));
                out.push_str(" = ");
                write_value(out, v, &inner, unit, false);
                out.push_str(";\n");
            }
            out.push_str(indent);
            out.push('}');
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_judged_by_how_they_are_written() {
        let msg = |v: &str| {
            let v: Json = serde_json::from_str(v).expect("json");
            check_value(&v)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        for huge in ["1e400", "-1E400", "1.5e999"] {
            let m = msg(huge);
            assert!(m.contains("beyond the range of a Nix float"), "{huge}: {m}");
            assert!(!m.contains("integer"), "{huge}: {m}");
        }
        assert!(msg("1.0000000000000001").contains("cannot be carried exactly"));
        assert!(msg("99999999999999999999").contains("integer"));
        assert_eq!(msg("1e3"), "");
        assert_eq!(msg("-42"), "");
    }
    use serde_json::json;

    #[test]
    fn keys_are_quoted_only_when_needed() {
        for (k, want) in [
            ("enable", "enable"),
            ("foo-bar'", "foo-bar'"),
            ("_x1", "_x1"),
            ("my.name", "\"my.name\""),
            ("if", "\"if\""),
            ("or", "\"or\""),
            ("1abc", "\"1abc\""),
            ("", "\"\""),
            ("a b", "\"a b\""),
        ] {
            assert_eq!(render_key(k), want, "key {k:?}");
        }
    }

    #[test]
    fn strings_escape_quotes_backslashes_and_interpolation() {
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
        assert_eq!(quote("${x} $y $${z} $"), r#""\${x} $y $\${z} $""#);
        assert_eq!(quote("l1\nl2\t\r"), r#""l1\nl2\t\r""#);
    }

    #[test]
    fn renders_nested_values_idiomatically() {
        let v = json!({"enable": true, "ports": [80, -1], "name": "x", "sub": {"f": 1.0, "n": null}, "e": {}, "l": []});
        let want = "{\n    e = { };\n    enable = true;\n    l = [ ];\n    name = \"x\";\n    ports = [ 80 (-1) ];\n    sub = {\n      f = 1.0;\n      n = null;\n    };\n  }";
        assert_eq!(to_nix(&v, "  "), want);
        assert_eq!(to_nix(&json!([{"a": 1}]), ""), "[\n  {\n    a = 1;\n  }\n]");
        assert_eq!(to_nix(&json!(-3), ""), "-3");
        assert_eq!(to_nix(&json!(1e300), "").len(), 303);
    }

    #[test]
    fn value_checks() {
        assert!(check_value(&json!({"a": [1, "x", i64::MAX]})).is_ok());
        assert!(check_value(&json!(u64::MAX)).is_err());
        assert!(check_value(&json!(i64::MIN)).is_err());
        assert!(check_value(&json!({"k\u{0}": 1})).is_err());
    }

    #[test]
    fn floats_must_be_exact_doubles() {
        let num = |t: &str| serde_json::from_str::<Json>(t).expect("json");
        for ok in [
            "1.5", "1.50", "1.5e0", "0.1", "-2.25", "1e300", "0.0", "-0.0", "100.0", "1E2",
        ] {
            assert!(check_value(&num(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "1.0000000000000001",
            "0.10000000000000000001",
            "[2.00000000000000000001]",
        ] {
            let e = check_value(&num(bad)).expect_err(bad).to_string();
            assert!(
                e.contains("cannot be carried exactly by a Nix float"),
                "{bad}: {e}"
            );
        }
    }
}
