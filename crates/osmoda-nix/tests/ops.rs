//! Data-driven checks of each operation on small inputs (expected output written out in full).

use osmoda_nix::{append, get, remove, set, unset, AttrPath, EditError, Value};
use serde_json::json;

fn p(s: &str) -> AttrPath {
    s.parse().unwrap_or_else(|e| panic!("bad path {s}: {e}"))
}

fn check_set(src: &str, path: &str, value: serde_json::Value, want: &str) {
    let got = set(src, &p(path), &Value::Json(value)).unwrap_or_else(|e| panic!("set {path}: {e}"));
    assert_eq!(got, want, "\n--- got ---\n{got}\n--- want ---\n{want}");
}

#[test]
fn set_into_empty_and_single_line_sets() {
    check_set("{ }", "a", json!(1), "{\n  a = 1;\n}");
    check_set("{}\n", "a.b", json!("x"), "{\n  a.b = \"x\";\n}\n");
    check_set("{ a = 1; }", "b", json!(true), "{ a = 1; b = true; }");
    check_set(
        "{ x = { }; }",
        "x.y",
        json!(null),
        "{ x = {\n  y = null;\n}; }",
    );
    check_set(
        "{ config, ... }:\n{\n  services.nginx.enable = true;\n}\n",
        "services.osmoda.enable",
        json!(true),
        "{ config, ... }:\n{\n  services.nginx.enable = true;\n  services.osmoda.enable = true;\n}\n",
    );
}

#[test]
fn set_replaces_existing_value_in_place() {
    check_set(
        "{\n  a.b = 1; # c\n}\n",
        "a.b",
        json!(2),
        "{\n  a.b = 2; # c\n}\n",
    );
    check_set(
        "{\n  a = {\n    b = 1;\n  };\n}\n",
        "a.b",
        json!({"x": [1, 2]}),
        "{\n  a = {\n    b = {\n      x = [ 1 2 ];\n    };\n  };\n}\n",
    );
}

#[test]
fn set_merges_into_nested_form() {
    check_set(
        "{\n  services = {\n    nginx.enable = true;\n  };\n}\n",
        "services.osmoda.enable",
        json!(true),
        "{\n  services = {\n    nginx.enable = true;\n    osmoda.enable = true;\n  };\n}\n",
    );
}

#[test]
fn set_groups_with_related_dotted_bindings() {
    check_set(
        "{\n  a.x = 1;\n  b = 2;\n}\n",
        "a.y",
        json!(3),
        "{\n  a.x = 1;\n  a.y = 3;\n  b = 2;\n}\n",
    );
}

#[test]
fn set_replaces_a_spread_attrset() {
    check_set(
        "{\n  a.x = 1;\n  b = 2;\n  a.y = 3;\n}\n",
        "a",
        json!({"z": 4}),
        "{\n  a = {\n    z = 4;\n  };\n  b = 2;\n}\n",
    );
}

#[test]
fn unset_removes_line_and_prunes_empty_parents() {
    assert_eq!(
        unset("{\n  a = 1; # one\n  b = 2;\n}\n", &p("a")).expect("unset"),
        "{\n  b = 2;\n}\n"
    );
    assert_eq!(
        unset("{\n  a = {\n    b = 1;\n  };\n  c = 1;\n}\n", &p("a.b")).expect("unset"),
        "{\n  c = 1;\n}\n"
    );
    assert_eq!(
        unset("{ a = 1; b = 2; }", &p("a")).expect("unset"),
        "{ b = 2; }"
    );
    assert_eq!(
        unset("{ a = 1; b = 2; }", &p("b")).expect("unset"),
        "{ a = 1; }"
    );
    assert!(matches!(
        unset("{ a = 1; }", &p("b")),
        Err(EditError::NotFound { .. })
    ));
}

#[test]
fn append_and_remove_on_lists() {
    let src = "{\n  l = [ \"a\" ];\n}\n";
    let out = append(src, &p("l"), &Value::Json(json!("b"))).expect("append");
    assert_eq!(out, "{\n  l = [ \"a\" \"b\" ];\n}\n");
    let out = remove(&out, &p("l"), &Value::Json(json!("a"))).expect("remove");
    assert_eq!(out, "{\n  l = [ \"b\" ];\n}\n");
    let out = append("{ }", &p("x.l"), &Value::Raw("pkgs.htop".into())).expect("append new");
    assert_eq!(out, "{\n  x.l = [ pkgs.htop ];\n}");
    let multi = "{\n  l = [\n    1\n    2\n  ];\n}\n";
    let out = append(multi, &p("l"), &Value::Raw("lib.mkForce 3".into())).expect("append");
    assert_eq!(
        out,
        "{\n  l = [\n    1\n    2\n    (lib.mkForce 3)\n  ];\n}\n"
    );
    let out = remove(multi, &p("l"), &Value::Json(json!(1))).expect("remove");
    assert_eq!(out, "{\n  l = [\n    2\n  ];\n}\n");
}

#[test]
fn get_reads_literals_and_merges() {
    let src = "{ a.b = 1; a.c = [ \"x\" (-2) 3.5 null true ./p ]; a = { d = ''\n    hi\n  ''; }; }";
    assert_eq!(
        get(src, &p("a")).expect("get"),
        json!({"b": 1, "c": ["x", -2, 3.5, null, true, "./p"], "d": "hi\n"})
    );
    assert_eq!(get(src, &p("a.b")).expect("get"), json!(1));
}

/// Every operation on a CRLF file writes only CRLF line breaks: a new binding inserted after a
/// related multi-line one (at the end of its line, never between its `\r` and `\n`), a binding
/// unset from a line it shares, a list element removed, JSON rendered over several lines.
#[test]
fn crlf_files_never_get_a_bare_lf() {
    let src = "{ ... }:\r\n{\r\n  a = 1; b = 2;\r\n  services.x = {\r\n    enable = true;\r\n  };\r\n  l = [\r\n    1\r\n    # two\r\n    2\r\n  ];\r\n}\r\n";
    let big = json!({ "k": [1, 2, 3], "m": { "n": "o" } });
    let outs = [
        set(src, &p("services.y.enable"), &Value::Json(json!(true))),
        set(src, &p("services.x.port"), &Value::Json(json!(80))),
        set(src, &p("services.z"), &Value::Json(big.clone())),
        set(
            src,
            &p("l"),
            &Value::Json(json!([
                "aaaaaaaaaaaaaaaaaaaa",
                "bbbbbbbbbbbbbbbbbbbbbbb",
                "cccccccccccccccccccccccccc"
            ])),
        ),
        unset(src, &p("b")),
        unset(src, &p("a")),
        unset(src, &p("services.x")),
        remove(src, &p("l"), &Value::Json(json!(2))),
        append(src, &p("l"), &Value::Json(big)),
    ];
    for out in outs {
        let out = out.expect("edit");
        assert_eq!(
            out.replace("\r\n", "").matches(['\n', '\r']).count(),
            0,
            "{out:?}"
        );
    }
}
