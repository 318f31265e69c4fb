//! The option schema agentd checks `services.osmoda` edits against (`schema/options.json`) is
//! the module's, not a copy that can drift:
//!
//! * everywhere: its option paths are exactly the ones an rnix walk of `modules/osmoda.nix`
//!   finds, so an option added to (or renamed in) the module without re-rendering fails here;
//! * where nixpkgs' `lib` is available (nixos-eval beside the checkout or in
//!   `$OSMODA_NIXOS_EVAL`, or `<nixpkgs>`): `schema/render.nix` run on the module's options as
//!   the real module system evaluated them gives the committed file byte for byte
//!   (`UPDATE_GOLDEN=1` rewrites it); elsewhere that test prints "skipped: … not found".
//!
//! Then one table of edits → verdicts for the checker.

mod common;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use common::options::{extract, OptionDecl};
use osmoda_config::options::{self, Node, Options, Type};
use serde_json::{json, Value};

fn schema_file() -> PathBuf {
    common::repo_root().join("crates/osmoda-config/schema/options.json")
}

#[test]
fn schema_parses_strictly_and_every_type_is_described() -> Result<()> {
    let parsed: Options = serde_json::from_str(options::SCHEMA_JSON).context("options.json")?;
    fn no_unknown(t: &Type, at: &str) {
        match t {
            Type::Unknown { name } => panic!("{at}: type {name} is not described by render.nix"),
            Type::NullOr { elem } | Type::ListOf { elem } | Type::AttrsOf { elem } => {
                no_unknown(elem, at)
            }
            Type::Either { left, right } => {
                no_unknown(left, at);
                no_unknown(right, at);
            }
            Type::Submodule { options, freeform } => {
                walk(options, at);
                if let Some(f) = freeform {
                    no_unknown(f, at);
                }
            }
            _ => {}
        }
    }
    fn walk(set: &Options, at: &str) {
        for (k, n) in set {
            let here = format!("{at}.{k}");
            match n {
                Node::Option(t) => no_unknown(t, &here),
                Node::Set(s) => walk(s, &here),
            }
        }
    }
    walk(&parsed, "services.osmoda");
    assert_eq!(options::schema().len(), parsed.len());
    Ok(())
}

#[test]
fn schema_knows_every_option_the_module_declares() -> Result<()> {
    let path = common::repo_root().join("modules/osmoda.nix");
    let module = extract(&std::fs::read_to_string(&path)?)?;
    let mut declared: Vec<String> = module.options.iter().map(OptionDecl::dotted).collect();
    declared.sort();
    declared.dedup();
    let known = options::option_paths();
    let missing: Vec<&String> = declared.iter().filter(|o| !known.contains(o)).collect();
    let stale: Vec<&String> = known.iter().filter(|o| !declared.contains(o)).collect();
    assert!(
        missing.is_empty() && stale.is_empty(),
        "schema/options.json is stale: re-render it (UPDATE_GOLDEN=1 cargo test -p osmoda-config \
         --test option_schema, where nixos-eval or <nixpkgs> exists).\n  declared by the module, \
         unknown to the schema: {missing:?}\n  in the schema, not declared: {stale:?}"
    );
    assert!(known.len() > 90, "only {} options", known.len());
    Ok(())
}

/// The expression that renders the schema with the real module system, or why it cannot run.
fn renderer() -> Option<String> {
    if !common::nix_available("schema_is_what_the_module_system_renders") {
        return None;
    }
    let root = common::repo_root();
    let module = root.join("modules/osmoda.nix");
    let render = root.join("crates/osmoda-config/schema/render.nix");
    let eval_dir = std::env::var_os("OSMODA_NIXOS_EVAL")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("../shared/nixos-eval"));
    if eval_dir.join("eval.nix").is_file() {
        return Some(format!(
            "let r = import {} {{ modules = [ {} ]; raw = true; }}; in import {} {{ inherit (r) lib; options = r.evaluated.options.services.osmoda; }}",
            eval_dir.join("eval.nix").display(),
            module.display(),
            render.display()
        ));
    }
    let nixpkgs = Command::new("nix-instantiate")
        .args(["--find-file", "nixpkgs"])
        .output()
        .is_ok_and(|o| o.status.success());
    if nixpkgs {
        return Some(format!(
            "let n = import <nixpkgs/nixos/lib/eval-config.nix> {{ system = builtins.currentSystem; modules = [ {} ]; }}; \
             in import {} {{ lib = import <nixpkgs/lib>; options = n.options.services.osmoda; }}",
            module.display(),
            render.display()
        ));
    }
    eprintln!(
        "skipped: schema_is_what_the_module_system_renders: nixos-eval not found ({}) and <nixpkgs> not found",
        eval_dir.display()
    );
    None
}

#[test]
fn schema_is_what_the_module_system_renders_if_present() -> Result<()> {
    let Some(expr) = renderer() else {
        return Ok(());
    };
    let out = Command::new("nix-instantiate")
        .args([
            "--readonly-mode",
            "--eval",
            "--strict",
            "--json",
            "-E",
            &expr,
        ])
        .output()?;
    if !out.status.success() {
        bail!(
            "render.nix failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rendered: Value = serde_json::from_slice(&out.stdout)?;
    let text = format!("{}\n", serde_json::to_string_pretty(&rendered)?);
    if std::env::var("UPDATE_GOLDEN").as_deref() == Ok("1") {
        std::fs::write(schema_file(), &text)?;
    }
    let committed = std::fs::read_to_string(schema_file())?;
    assert!(
        committed == text,
        "schema/options.json differs from what the module renders; run UPDATE_GOLDEN=1 cargo \
         test -p osmoda-config --test option_schema and review the diff"
    );
    Ok(())
}

/// `path = value` → `None` (accepted) or fragments the error must contain.
fn verdict(path: &str, value: Option<Value>) -> Result<(), String> {
    let parts: Vec<&str> = path.split('.').collect();
    options::check(&parts, value.as_ref()).map_err(|e| {
        format!(
            "{e} | expected: {} | did_you_mean: {:?}",
            e.expected, e.did_you_mean
        )
    })
}

#[test]
fn edits_are_checked_against_the_schema() {
    let w = "services.osmoda.watch.watchers.web";
    let cases: Vec<(String, Option<Value>, &[&str])> = vec![
        // Accepted.
        (format!("{w}.intervalSecs"), Some(json!(10)), &[]),
        (format!("{w}.check.type"), Some(json!("http")), &[]),
        (
            format!("{w}.check"),
            Some(json!({ "type": "systemd", "unit": "nginx.service" })),
            &[],
        ),
        (format!("{w}.check.expectStatus"), Some(json!(null)), &[]),
        (
            format!("{w}.actions"),
            Some(json!(["restart", "notify"])),
            &[],
        ),
        (
            "services.osmoda.watch".into(),
            Some(json!({ "watchers": { "a": { "intervalSecs": 5 } } })),
            &[],
        ),
        (
            "services.osmoda.routines.daily.trigger.type".into(),
            Some(json!("cron")),
            &[],
        ),
        (
            "services.osmoda.routines.enable".into(),
            Some(json!(true)),
            &[],
        ),
        (
            "services.osmoda.routines.daily.action.body".into(),
            Some(json!({ "any": [1, "x"] })),
            &[],
        ),
        (
            "services.osmoda.keyd.policy.chains.ethereum.perTxMax".into(),
            Some(json!("1000000000000000000000")),
            &[],
        ),
        (
            "services.osmoda.keyd.policy.chains.ethereum.perTxMax".into(),
            Some(json!(5)),
            &[],
        ),
        (
            "services.osmoda.gateway.port".into(),
            Some(json!(65535)),
            &[],
        ),
        (
            "services.osmoda.wach.x".into(),
            None,
            &["did you mean `services.osmoda.watch`"],
        ),
        (
            "services".into(),
            Some(json!({ "openssh": { "enable": true } })),
            &[],
        ),
        (
            "services".into(),
            Some(json!({ "osmoda": { "enable": true } })),
            &[],
        ),
        ("networking.hostName".into(), Some(json!(1)), &[]),
        // Refused: unknown option with a did-you-mean.
        (
            "services.osmoda.wach.watchers.x".into(),
            Some(json!({})),
            &[
                "services.osmoda.wach",
                "did you mean `services.osmoda.watch`",
            ],
        ),
        (
            format!("{w}.intervalSec"),
            Some(json!(3)),
            &["intervalSec", "did you mean", "intervalSecs"],
        ),
        (
            format!("{w}.check.typo"),
            Some(json!("x")),
            &["check.typo", "one of:", "expectStatus"],
        ),
        (
            "services".into(),
            Some(json!({ "osmoda": { "enabel": true } })),
            &["services.osmoda.enabel", "enable"],
        ),
        // Wrong types.
        (
            format!("{w}.intervalSecs"),
            Some(json!("ten")),
            &["intervalSecs", "positive integer", "the string \"ten\""],
        ),
        (
            format!("{w}.intervalSecs"),
            Some(json!(0)),
            &["positive integer", "the number 0"],
        ),
        (
            format!("{w}.intervalSecs"),
            Some(json!(1.5)),
            &["positive integer"],
        ),
        (
            "services.osmoda.gateway.port".into(),
            Some(json!(65536)),
            &["between 0 and 65535"],
        ),
        (
            "services.osmoda.enable".into(),
            Some(json!("yes")),
            &["boolean"],
        ),
        (
            format!("{w}.check.expectStatus"),
            Some(json!(99)),
            &["null or an integer between 100 and 599"],
        ),
        (
            format!("{w}.actions"),
            Some(json!(["restart", "reboot"])),
            &["actions.[1]", "\"reboot\" is not allowed"],
        ),
        (
            "services.osmoda.keyd.policy.chains.ethereum.perTxMax".into(),
            Some(json!("12abc")),
            &["matching `[0-9]+`"],
        ),
        (
            format!("{w}.intervalSecs.deeper"),
            Some(json!(1)),
            &["intervalSecs", "no attribute `deeper`"],
        ),
        // Bad enum with a did-you-mean.
        (
            format!("{w}.check.type"),
            Some(json!("htp")),
            &[
                "check.type",
                "\"htp\" is not allowed",
                "\"systemd\"",
                "did you mean \"http\"",
            ],
        ),
        (
            format!("{w}.check"),
            Some(json!({ "type": "tpc" })),
            &["check.type", "did you mean \"tcp\""],
        ),
    ];
    for (path, value, want) in cases {
        let got = verdict(&path, value.clone());
        match (want.is_empty(), got) {
            (true, Ok(())) => {}
            (true, Err(e)) => panic!("{path} = {value:?}: refused: {e}"),
            (false, Ok(())) => panic!("{path} = {value:?}: accepted, expected {want:?}"),
            (false, Err(e)) => {
                for w in want {
                    assert!(e.contains(w), "{path} = {value:?}: {e:?} lacks {w:?}");
                }
            }
        }
    }
}

#[test]
fn list_elements_are_checked() {
    let actions = ["services", "osmoda", "watch", "watchers", "w", "actions"];
    assert!(options::check_element(&actions, Some(&json!("notify"))).is_ok());
    let e = options::check_element(&actions, Some(&json!("reboot"))).expect_err("bad element");
    assert!(e.to_string().contains("actions.*"), "{e}");
    let port = ["services", "osmoda", "gateway", "port"];
    let e = options::check_element(&port, Some(&json!(1))).expect_err("not a list");
    assert!(e.to_string().contains("is not a list"), "{e}");
    let ports = ["services", "osmoda", "egress", "capabilities", "c", "ports"];
    assert!(options::check_element(&ports, Some(&json!(443))).is_ok());
    assert!(options::check_element(&ports, Some(&json!(70000))).is_err());
}

#[test]
fn a_typo_inside_a_list_element_suggests_a_name_not_a_path() {
    // A chain step's `comand`: there is no option path `….steps.*.command` to set; the
    // suggestion is the name inside the element.
    let steps = ["services", "osmoda", "routines", "r", "action", "steps"];
    let e = options::check_element(
        &steps,
        Some(&json!({ "type": "command", "comand": ["true"] })),
    )
    .expect_err("typo");
    assert_eq!(e.did_you_mean.as_deref(), Some("command"), "{e}");
    assert!(e.to_string().contains("did you mean `command`?"), "{e}");
    // Outside a list, the suggestion is still the whole option path.
    let e = options::check(
        &["services", "osmoda", "routines", "r", "action", "comand"],
        Some(&json!(["true"])),
    )
    .expect_err("typo");
    assert_eq!(
        e.did_you_mean.as_deref(),
        Some("services.osmoda.routines.r.action.command"),
        "{e}"
    );
}
