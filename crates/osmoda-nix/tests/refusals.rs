//! Refusals: hidden or ambiguous targets and bad input give an error saying where and why.

use osmoda_nix::{append, get, set, unset, AttrPath, EditError, Value};
use serde_json::json;

fn p(s: &str) -> AttrPath {
    s.parse().unwrap_or_else(|e| panic!("bad path {s}: {e}"))
}

fn one() -> Value {
    Value::Json(json!(1))
}

/// Asserts that `result` failed and its message contains every one of `needles`.
fn refused<T: std::fmt::Debug>(result: Result<T, EditError>, needles: &[&str]) -> EditError {
    let err = result.expect_err("expected a refusal");
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} does not mention {n:?}");
    }
    err
}

#[test]
fn with_inside_a_value_is_refused_but_a_top_level_with_is_edited_through() {
    let src = "{ pkgs, ... }:\nwith pkgs; {\n  a = 1;\n}\n";
    assert_eq!(
        set(src, &p("a"), &Value::Json(json!(2))).expect("through a top-level with"),
        "{ pkgs, ... }:\nwith pkgs; {\n  a = 2;\n}\n"
    );
    let src = "{\n  a = with x; { b = 1; };\n}\n";
    refused(set(src, &p("a.b"), &one()), &["`with`", "2:7", "`a`"]);
    let err = refused(get(src, &p("a.b")), &["cannot read", "`with`"]);
    assert!(matches!(err, EditError::Unreadable { .. }));
}

#[test]
fn let_inside_a_value_is_refused_but_a_top_level_let_is_edited_through() {
    let src = "let\n  port = 80;\nin {\n  a = port;\n}\n";
    // The value names a `let` binding: it cannot be read, but it can be replaced.
    refused(get(src, &p("a")), &["the variable `port`", "4:7"]);
    assert_eq!(
        set(src, &p("a"), &one()).expect("through a top-level let"),
        "let\n  port = 80;\nin {\n  a = 1;\n}\n"
    );
    let src = "{ a = let x = { }; in x; }";
    refused(set(src, &p("a.b"), &one()), &["`let ... in`", "1:7"]);
}

#[test]
fn mkif_is_refused() {
    let src = "{ lib, config, ... }:\n{\n  services.nginx = lib.mkIf config.x {\n    enable = true;\n  };\n}\n";
    let err = refused(
        set(src, &p("services.nginx.enable"), &one()),
        &["mkIf", "3:20"],
    );
    assert!(matches!(err, EditError::Refused { .. }));
    refused(get(src, &p("services.nginx.enable")), &["mkIf"]);
    refused(unset(src, &p("services.nginx.enable")), &["mkIf"]);
}

#[test]
fn duplicated_definitions_are_refused() {
    let src = "{\n  a.b = 1;\n  a = {\n    b = 2;\n  };\n}\n";
    let err = refused(
        set(src, &p("a.b"), &one()),
        &["defined in several places", "2:3", "4:5"],
    );
    assert!(matches!(err, EditError::Duplicate { .. }));
    refused(get(src, &p("a.b")), &["several places"]);
    refused(unset(src, &p("a.b")), &["several places"]);
    // A value and a deeper definition below it: also a conflict.
    refused(get("{ a.b = 1; a.b.c = 2; }", &p("a")), &["several places"]);
    // Attribute sets spread over several bindings are not duplicates: Nix merges them.
    assert_eq!(
        get("{ a = { b = 1; }; a = { c = 2; }; }", &p("a")).expect("merged"),
        json!({"b": 1, "c": 2})
    );
}

#[test]
fn non_literal_reads_are_refused() {
    let err = refused(
        get("{ a = pkgs.hello; }", &p("a")),
        &["not a literal", "pkgs.hello", "1:7"],
    );
    assert!(matches!(err, EditError::NonLiteral { .. }));
    refused(get("{ a = \"x${y}\"; }", &p("a")), &["interpolation"]);
    refused(
        get("{ a = [ 1 (f 2) ]; }", &p("a")),
        &["function application"],
    );
    refused(get("{ a = 1 + 2; }", &p("a")), &["operator"]);
    refused(get("{ a = { inherit b; }; }", &p("a")), &["inherit"]);
}

#[test]
fn other_hidden_targets_are_refused() {
    refused(
        set("{ inherit (pkgs) a; }", &p("a.b"), &one()),
        &["inherit"],
    );
    refused(
        set("{ ${x} = 1; }", &p("a"), &one()),
        &["dynamic attribute"],
    );
    refused(set("rec { a = 1; }", &p("b"), &one()), &["rec"]);
    refused(unset("rec { a = 1; b = a; }", &p("a")), &["rec"]);
    // A module with a top-level `config`: its settings are edited under `config`.
    assert_eq!(
        set(
            "{ config, ... }: { config = { }; options = { }; }",
            &p("services.x"),
            &one(),
        )
        .expect("under config"),
        "{ config, ... }: { config = {\n  services.x = 1;\n}; options = { }; }"
    );
    refused(
        set(
            "{ lib, ... }: { config = lib.mkIf true { }; }",
            &p("services.x"),
            &one(),
        ),
        &["`config.services.x`", "mkIf"],
    );
    refused(
        set("{ imports = [ ]; }", &p("imports.x"), &one()),
        &["imports"],
    );
    refused(
        get("{ imports = [ ./a.nix ]; }", &p("services.a")),
        &["imported at 1:3"],
    );
    refused(set("[ 1 ]", &p("a"), &one()), &["not an attribute set"]);
    // A refused edit of a value that is not a list literal.
    refused(
        append("{ a = [ 1 ] ++ b; }", &p("a"), &one()),
        &["operator", "not written as a list literal"],
    );
}

#[test]
fn type_errors_say_what_was_found() {
    let err = refused(
        set("{ a = 1; }", &p("a.b"), &one()),
        &["`a` is a number", "attribute set"],
    );
    assert!(matches!(err, EditError::Type { .. }));
    refused(
        append("{ a = \"x\"; }", &p("a"), &one()),
        &["`a` is a string", "a list"],
    );
    refused(
        append("{ a.b = 1; }", &p("a"), &one()),
        &["attribute set", "a list"],
    );
}

#[test]
fn bad_input_is_rejected() {
    refused(
        set("{ a = ; }", &p("a"), &one()),
        &["does not parse", "1:7"],
    );
    refused(
        set("{ }", &p("a"), &Value::Raw("1 +".into())),
        &["raw Nix value does not parse at 1:4 (of the value)"],
    );
    refused(
        set("{ }", &p("a"), &Value::Raw("1; 2".into())),
        &["raw Nix value does not parse at 1:2"],
    );
    refused(
        set("{ }", &p("a"), &Value::Raw("  # only a comment".into())),
        &["raw Nix value does not parse"],
    );
    refused(
        set("{ }", &p("a"), &Value::Json(json!(u64::MAX))),
        &["outside Nix's integer range"],
    );
    refused(
        set("{ }", &p("a"), &Value::Json(json!("nul\u{0}"))),
        &["NUL"],
    );
    refused(unset("{ a = 1; }", &p("b")), &["not defined"]);
}

#[test]
fn positions_point_at_the_node_not_the_file_start() {
    // A flake below a comment header: the refusal names the flake's attribute set.
    let src = "# my machine\n# more\n{\n  outputs = { ... }: { };\n}\n";
    refused(set(src, &p("services.x"), &one()), &["flake", "at 3:1"]);
    // A path below `imports` is the request's fault: no position, and the operations named exist.
    let err = refused(
        set("# header\n{ a = 1; }\n", &p("imports.x"), &one()),
        &[
            "agentctl config append imports",
            "agentctl config remove imports",
        ],
    );
    assert!(matches!(err, EditError::InvalidPath { .. }), "{err:?}");
}
