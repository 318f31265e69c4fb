//! The canonical form an approval ticket is bound to: JSON with object keys sorted at every
//! level and numbers written as their exact decimal value (`digits` `e` `exponent`, no
//! floating point), so two operations hash alike exactly when they mean the same thing.
//!
//! serde_json is built with `arbitrary_precision`, so a number reaches this module as the text
//! the client sent; `1`, `1.0` and `10e-1` are the same number here, `100000000000000000000`
//! and `100000000000000008191` are not.

use serde_json::Value;
use sha2::{Digest, Sha256};

/// A number that has no exact canonical form (its exponent does not fit in 64 bits).
#[derive(Debug, thiserror::Error)]
#[error("the number {0} cannot be represented exactly (exponent out of range)")]
pub struct Unrepresentable(pub String);

/// The exact decimal value of JSON number text `n` as `[-]DIGITSeEXP` with no leading or
/// trailing zeros in `DIGITS` (`0` for zero): `1.50` → `15e-1`, `100` → `1e2`, `-0.0` → `0`.
///
/// # Errors
/// [`Unrepresentable`] when the exponent does not fit in an `i64`, or `n` is not JSON number
/// text.
pub fn number(n: &str) -> Result<String, Unrepresentable> {
    let bad = || Unrepresentable(n.to_string());
    let (neg, rest) = match n.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, n),
    };
    let (mantissa, exp) = match rest.find(['e', 'E']) {
        Some(i) => (&rest[..i], rest[i + 1..].parse::<i64>().map_err(|_| bad())?),
        None => (rest, 0),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let frac_len = i64::try_from(frac.len()).map_err(|_| bad())?;
    let digits = format!("{int}{frac}");
    let digits = digits.trim_start_matches('0');
    let trimmed = digits.trim_end_matches('0');
    if trimmed.is_empty() {
        return Ok("0".into());
    }
    let zeros = i64::try_from(digits.len() - trimmed.len()).map_err(|_| bad())?;
    let exp = exp
        .checked_sub(frac_len)
        .and_then(|e| e.checked_add(zeros))
        .ok_or_else(bad)?;
    Ok(format!("{}{trimmed}e{exp}", if neg { "-" } else { "" }))
}

/// Canonical text of `v`: keys sorted (by their UTF-16-agnostic byte order), no whitespace,
/// strings escaped as serde_json does, numbers as [`number`].
///
/// # Errors
/// [`Unrepresentable`] for a number without an exact form.
pub fn text(v: &Value) -> Result<String, Unrepresentable> {
    let mut out = String::new();
    write(&mut out, v)?;
    Ok(out)
}

fn write(out: &mut String, v: &Value) -> Result<(), Unrepresentable> {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                write(out, &m[k])?;
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write(out, x)?;
            }
            out.push(']');
        }
        Value::Number(n) => out.push_str(&number(&n.to_string())?),
        other => out.push_str(&other.to_string()),
    }
    Ok(())
}

/// Hex SHA-256 of the canonical text of `op`: the hash a ticket is bound to.
///
/// # Errors
/// [`Unrepresentable`] for a number without an exact form.
pub fn hash(op: &Value) -> Result<String, Unrepresentable> {
    Ok(hex::encode(Sha256::digest(text(op)?.as_bytes())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> String {
        hash(&serde_json::from_str(s).expect("json")).expect("hash")
    }

    #[test]
    fn numbers_have_one_exact_form() {
        for (text, canon) in [
            ("0", "0"),
            ("-0.0", "0"),
            ("1", "1e0"),
            ("1.0", "1e0"),
            ("10e-1", "1e0"),
            ("1.50", "15e-1"),
            ("100", "1e2"),
            ("-12.5E3", "-125e2"),
            ("0.001", "1e-3"),
            (
                "123456789012345678901234567890",
                "12345678901234567890123456789e1",
            ),
        ] {
            assert_eq!(number(text).expect(text), canon, "{text}");
        }
        assert!(number("1e99999999999999999999").is_err());
    }

    #[test]
    fn close_numbers_hash_apart_and_equal_numbers_together() {
        for (a, b) in [
            ("100000000000000000000", "100000000000000008191"),
            ("18446744073709551616", "18446744073709551617"),
            ("1.0", "1.0000000000000001"),
            (
                "123456789012345678901234567890",
                "123456789012345678901234567891",
            ),
        ] {
            assert_ne!(
                h(&format!("{{\"amount\":{a}}}")),
                h(&format!("{{\"amount\":{b}}}")),
                "{a} vs {b}"
            );
        }
        assert_eq!(h("{\"a\":1.0,\"b\":[1e2]}"), h("{\"b\":[100],\"a\":1}"));
    }

    #[test]
    fn key_order_does_not_matter_values_do() {
        assert_eq!(
            h(r#"{"op":"wallet.delete","args":{"id":"w1","chain":"eth"}}"#),
            h(r#"{"args":{"chain":"eth","id":"w1"},"op":"wallet.delete"}"#)
        );
        assert_ne!(
            h(r#"{"op":"wallet.delete","args":{"id":"w1"}}"#),
            h(r#"{"op":"wallet.delete","args":{"id":"w2"}}"#)
        );
    }
}
