//! `lib.mkMerge [ … ]`: the module system merges its parts as if each were written on its own,
//! so a definition inside an attribute set part is found, read and edited in place (priority
//! wrappers kept), a second definition is refused with both places, and a part under a
//! condition (`mkIf`) or computed (a variable) is refused where it may define the path — the
//! same rules as outside `mkMerge`.

use osmoda_nix::{definitions, edit, get, set, unset, AttrPath, EditError, Op, Value};
use serde_json::json;

fn p(s: &str) -> AttrPath {
    s.parse().unwrap_or_else(|e| panic!("bad path {s}: {e}"))
}

fn refused<T: std::fmt::Debug>(result: Result<T, EditError>, needles: &[&str]) -> String {
    let msg = result.expect_err("expected a refusal").to_string();
    for n in needles {
        assert!(msg.contains(n), "message {msg:?} does not mention {n:?}");
    }
    msg
}

const MERGED: &str = "{ lib, config, ... }:
{
  config = lib.mkMerge [
    {
      time.timeZone = \"UTC\"; # where the box is
      services.openssh.enable = true;
    }
    (lib.mkIf config.services.nginx.enable {
      networking.firewall.allowedTCPPorts = [ 80 ];
    })
    (lib.mkForce {
      networking.hostName = \"box\";
    })
  ];
}
";

#[test]
fn a_definition_inside_a_merge_part_is_edited_in_place() {
    let out = set(
        MERGED,
        &p("config.time.timeZone"),
        &Value::Json(json!("Europe/Berlin")),
    )
    .expect("set inside the first part");
    assert_eq!(
        out,
        MERGED.replace("\"UTC\"; # where", "\"Europe/Berlin\"; # where")
    );
    // Inside a part under a priority: the priority stays.
    let out = set(
        MERGED,
        &p("config.networking.hostName"),
        &Value::Json(json!("web")),
    )
    .expect("set inside the forced part");
    assert_eq!(out, MERGED.replace("\"box\"", "\"web\""));
    assert_eq!(
        get(MERGED, &p("config.services.openssh.enable")).expect("get"),
        json!(true)
    );
    let out = unset(MERGED, &p("config.services.openssh.enable")).expect("unset");
    assert_eq!(
        out,
        MERGED.replace("      services.openssh.enable = true;\n", "")
    );
}

#[test]
fn a_new_definition_goes_into_a_plain_part_not_beside_the_merge() {
    let out = set(
        MERGED,
        &p("config.services.openssh.ports"),
        &Value::Json(json!([2222])),
    )
    .expect("set a new option");
    assert_eq!(
        out,
        MERGED.replace(
            "      services.openssh.enable = true;\n",
            "      services.openssh.enable = true;\n      services.openssh.ports = [ 2222 ];\n"
        )
    );
    // The result still has one definition of `config`, so NixOS sees no conflict.
    assert_eq!(out.matches("config =").count(), 1, "{out}");
}

#[test]
fn definitions_inside_merge_parts_are_reported_with_their_place() {
    let defs = definitions(MERGED, &p("config.time.timeZone")).expect("defs");
    let places: Vec<(usize, usize, bool)> = defs
        .iter()
        .map(|d| (d.pos.line, d.pos.col, d.exact))
        .collect();
    assert_eq!(places, [(5, 7, true)], "{defs:?}");
    let defs = definitions(MERGED, &p("config.networking.firewall.allowedTCPPorts")).expect("defs");
    assert_eq!(defs.len(), 1, "{defs:?}");
    assert!(
        defs[0]
            .hidden
            .as_deref()
            .is_some_and(|r| r.contains("mkIf")),
        "{defs:?}"
    );
    assert_eq!((defs[0].pos.line, defs[0].pos.col), (8, 6), "{defs:?}");
}

#[test]
fn a_conditional_or_computed_part_is_refused_where_it_may_define_the_path() {
    // The `mkIf` part defines the path: refused there, like `mkIf` outside a merge.
    refused(
        set(
            MERGED,
            &p("config.networking.firewall.allowedTCPPorts"),
            &Value::Json(json!([443])),
        ),
        &["mkIf", "8:6", "config.networking.firewall.allowedTCPPorts"],
    );
    refused(
        get(MERGED, &p("config.networking.firewall.allowedTCPPorts")),
        &["mkIf"],
    );
    // A sibling the `mkIf` part does not define is edited (asserted above), and so is a path
    // whose prefix the `mkIf` part defines only elsewhere in the tree.
    set(
        MERGED,
        &p("config.networking.firewall.enable"),
        &Value::Json(json!(true)),
    )
    .expect("the mkIf part does not define networking.firewall.enable");
    // A part that is a variable may define anything.
    let src = "{ lib, ... }:\nlet extra = { time.timeZone = \"UTC\"; };\nin {\n  config = lib.mkMerge [ { networking.hostName = \"a\"; } extra ];\n}\n";
    refused(
        set(src, &p("config.time.timeZone"), &Value::Json(json!("x"))),
        &["mkMerge", "the variable `extra`", "4:57"],
    );
    refused(
        set(
            src,
            &p("config.networking.hostName"),
            &Value::Json(json!("b")),
        ),
        &["mkMerge", "extra"],
    );
}

#[test]
fn two_parts_defining_one_value_are_listed() {
    let src = "{ lib, ... }:\n{\n  services.openssh = lib.mkMerge [\n    { ports = [ 22 ]; }\n    { ports = [ 2222 ]; }\n  ];\n}\n";
    let msg = refused(
        set(src, &p("services.openssh.ports"), &Value::Json(json!([1]))),
        &["several places", "4:7", "5:7"],
    );
    assert!(!msg.contains("3:"), "{msg}");
    // Parts that define different names merge: each is edited where it is.
    let src = "{ lib, ... }:\n{\n  services.openssh = lib.mkMerge [\n    { ports = [ 22 ]; }\n    { enable = true; }\n  ];\n}\n";
    let out = edit(
        src,
        &Op::Set(p("services.openssh.enable"), Value::Json(json!(false))),
    )
    .expect("edit")
    .text;
    assert_eq!(out, src.replace("enable = true", "enable = false"));
}

#[test]
fn a_merge_that_is_not_of_a_list_literal_is_still_refused() {
    let src = "{ lib, parts, ... }:\n{\n  services.openssh = lib.mkMerge parts;\n}\n";
    refused(
        set(
            src,
            &p("services.openssh.enable"),
            &Value::Json(json!(true)),
        ),
        &["mkMerge", "3:22"],
    );
}
