//! The bodies of the `edit` and `raw_value` fuzz targets, shared with stable-Rust property tests.

use crate::{edit, edit_in, validate, AttrPath, Op, Value};

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
    check_op(file, &op, usize::from(selector >> 5));
}

/// Every read and edit entry point on one file and operation, in module `module` too.
fn check_op(file: &str, op: &Op, module: usize) {
    let path = match op {
        Op::Set(p, _) | Op::Unset(p) | Op::Append(p, _) | Op::Remove(p, _) => p,
    };
    let _ = crate::file_info(file);
    let _ = crate::definitions(file, path);
    let _ = crate::read(file, module, path);
    if let Ok(result) = edit_in(file, module, op) {
        assert!(
            validate(&result.text).is_ok(),
            "edit_in produced an unparsable file: {op:?} on {file:?}"
        );
    }
    let _ = crate::get(
        file,
        match &op {
            Op::Set(p, _) | Op::Unset(p) | Op::Append(p, _) | Op::Remove(p, _) => p,
        },
    );
    if let Ok(result) = edit(file, op) {
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

/// Runs one case of the `raw_value` fuzz target: a raw Nix value (possibly a fragment repeated
/// into a deep or long expression) and an attribute path, edited into a realistic module.
/// Panics (a bug) if the editor panics, overflows its stack, or returns an unparsable file.
pub fn fuzz_raw(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let (path_text, fragment) = text.split_once('\n').unwrap_or(("a", &text));
    // Repeat the fragment up to 65,536 times: `[`, `-`, `1+`, `(`, `{a=`, `with x;` … become the
    // deep inputs that once overflowed the parser.
    let times = 1usize << (selector & 0x0f);
    let raw = fragment.repeat(times.min(65_536 / fragment.len().max(1)).max(1));
    let path_text = if selector & 0x10 != 0 {
        // A long path made of the given one.
        vec![path_text; 150].join(".")
    } else {
        path_text.to_string()
    };
    let _ = crate::free_variables(&raw);
    let _ = crate::budget::check(&raw);
    let Ok(path) = path_text.parse::<AttrPath>() else {
        return;
    };
    let op = match selector >> 6 {
        0 => Op::Set(path, Value::Raw(raw)),
        1 => Op::Append(path, Value::Raw(raw)),
        2 => Op::Remove(path, Value::Raw(raw)),
        _ => Op::Unset(path),
    };
    check_op(MODULE, &op, usize::from(selector & 0x20 != 0));
}

/// The module `fuzz_raw` edits: let/with, inline imports, priorities and `with pkgs` lists.
const MODULE: &str = "{ config, lib, pkgs, ... }:\nlet\n  user = \"a\";\nin\nwith lib;\n{\n  imports = [ ./hw.nix { services.x.enable = true; } ];\n  a = 1;\n  hardware.pulseaudio.enable = lib.mkForce false;\n  environment.systemPackages = with pkgs; [\n    git # vcs\n  ];\n  services.osmoda.watch.watchers = rec { w = { }; v = w // { }; };\n}\n";
