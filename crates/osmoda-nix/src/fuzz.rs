//! The body of the `edit` fuzz target, shared with a stable-Rust property test.

use crate::{edit, validate, AttrPath, Op, Value};

/// Runs one fuzz case: the first bytes choose an operation, a path and a value; the rest is the
/// file. Panics (that is, reports a bug) if the editor panics or returns a file that does not
/// parse, or an edit changes bytes outside the range it reports.
pub fn fuzz_one(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    // Layout: "<path>\n<value>\n<file>", each part optional.
    let mut parts = text.splitn(3, '\n');
    let path_text = parts.next().unwrap_or("a");
    let value_text = parts.next().unwrap_or("1");
    let file = parts.next().unwrap_or("{ }");
    let Ok(path) = path_text.parse::<AttrPath>() else {
        return;
    };
    let value = if selector & 0x10 == 0 {
        match serde_json::from_str(value_text) {
            Ok(v) => Value::Json(v),
            Err(_) => Value::Json(serde_json::Value::String(value_text.to_string())),
        }
    } else {
        Value::Raw(value_text.to_string())
    };
    let op = match selector % 4 {
        0 => Op::Set(path, value),
        1 => Op::Unset(path),
        2 => Op::Append(path, value),
        _ => Op::Remove(path, value),
    };
    let _ = crate::get(
        file,
        match &op {
            Op::Set(p, _) | Op::Unset(p) | Op::Append(p, _) | Op::Remove(p, _) => p,
        },
    );
    if let Ok(result) = edit(file, &op) {
        assert!(
            validate(&result.text).is_ok(),
            "edit produced an unparsable file: {op:?} on {file:?}"
        );
        let suffix = file.len() - result.changed.end;
        assert_eq!(
            result.text[..result.changed.start],
            file[..result.changed.start],
            "prefix changed"
        );
        assert_eq!(
            result.text[result.text.len() - suffix..],
            file[result.changed.end..],
            "suffix changed"
        );
    }
}
