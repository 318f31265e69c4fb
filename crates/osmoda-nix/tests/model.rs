//! Property test: random sequences of set/unset/append on random trees. After every step the file
//! parses, and (where `nix-instantiate` is installed) evaluates to exactly the JSON model of what
//! was written.

use std::path::Path;
use std::process::Command;

use osmoda_nix::{edit, to_nix, validate, AttrPath, Op, Value};
use proptest::prelude::*;
use serde_json::{Map, Value as Json};

const KEYS: &[&str] = &["a", "b", "c", "if", "my.name", "x-y"];

fn key() -> impl Strategy<Value = String> {
    prop::sample::select(KEYS).prop_map(str::to_string)
}

fn leaf() -> impl Strategy<Value = Json> {
    prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::Bool),
        (-1000i64..1000).prop_map(Json::from),
        prop::sample::select(vec![i64::MAX, -i64::MAX, 0]).prop_map(Json::from),
        (-800i32..800).prop_map(|i| Json::from(f64::from(i) / 8.0)),
        "[a-z\"\\\\${}'\n\t é]{0,8}".prop_map(Json::String),
    ]
}

fn value() -> impl Strategy<Value = Json> {
    leaf().prop_recursive(3, 16, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Json::Array),
            prop::collection::btree_map(key(), inner, 0..3)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

fn path() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(key(), 1..4)
}

#[derive(Debug, Clone)]
enum Step {
    Set(Vec<String>, Json),
    Unset(Vec<String>),
    Append(Vec<String>, Json),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (path(), value()).prop_map(|(p, v)| Step::Set(p, v)),
        2 => path().prop_map(Step::Unset),
        2 => (path(), leaf()).prop_map(|(p, v)| Step::Append(p, v)),
    ]
}

/// Renders an initial tree; `flat` decides per nesting level whether sub-attributes are written
/// dotted (`a.b = 1;`) or nested (`a = { b = 1; };`).
fn render_tree(obj: &Map<String, Json>, flat: &[bool], module: bool) -> String {
    fn bindings(
        out: &mut String,
        prefix: &str,
        obj: &Map<String, Json>,
        flat: &[bool],
        depth: usize,
    ) {
        for (k, v) in obj {
            let key = format!(
                "{prefix}{}",
                AttrPath::new([k.as_str()])
                    .map(|p| p.to_string())
                    .unwrap_or_default()
            );
            match v {
                Json::Object(m) if !m.is_empty() && flat.get(depth).copied().unwrap_or(false) => {
                    bindings(out, &format!("{key}."), m, flat, depth + 1);
                }
                _ => out.push_str(&format!("  {key} = {};\n", to_nix(v, "  "))),
            }
        }
    }
    let mut out = String::new();
    if module {
        out.push_str("{ config, ... }:\n");
    }
    out.push_str("{\n");
    bindings(&mut out, "", obj, flat, 0);
    out.push_str("}\n");
    out
}

/// Applies a step to the JSON model; `None` means the editor must refuse it.
fn model_step(model: &Json, step: &Step) -> Option<Json> {
    let mut m = model.clone();
    match step {
        Step::Set(p, v) => {
            let mut cur = &mut m;
            for k in &p[..p.len() - 1] {
                let obj = cur.as_object_mut()?;
                cur = obj
                    .entry(k.clone())
                    .or_insert_with(|| Json::Object(Map::new()));
            }
            cur.as_object_mut()?
                .insert(p[p.len() - 1].clone(), v.clone());
        }
        Step::Unset(p) => {
            remove_prune(&mut m, p)?;
        }
        Step::Append(p, v) => {
            let mut cur = &mut m;
            for k in &p[..p.len() - 1] {
                let obj = cur.as_object_mut()?;
                cur = obj
                    .entry(k.clone())
                    .or_insert_with(|| Json::Object(Map::new()));
            }
            let slot = cur
                .as_object_mut()?
                .entry(p[p.len() - 1].clone())
                .or_insert_with(|| Json::Array(vec![]));
            slot.as_array_mut()?.push(v.clone());
        }
    }
    Some(m)
}

/// Removes `p` and any ancestor (not the root) that becomes empty.
fn remove_prune(m: &mut Json, p: &[String]) -> Option<()> {
    let obj = m.as_object_mut()?;
    if p.len() == 1 {
        obj.remove(&p[0])?;
        return Some(());
    }
    let child = obj.get_mut(&p[0])?;
    remove_prune(child, &p[1..])?;
    if child.as_object().is_some_and(Map::is_empty) {
        obj.remove(&p[0]);
    }
    Some(())
}

fn to_op(step: &Step) -> Op {
    let path = |p: &Vec<String>| AttrPath::new(p.clone()).expect("non-empty path");
    match step {
        Step::Set(p, v) => Op::Set(path(p), Value::Json(v.clone())),
        Step::Unset(p) => Op::Unset(path(p)),
        Step::Append(p, v) => Op::Append(path(p), Value::Json(v.clone())),
    }
}

/// Numbers compare as f64: Nix prints `1.0` as `1`.
fn norm(v: &Json) -> Json {
    match v {
        Json::Number(n) => serde_json::Number::from_f64(n.as_f64().unwrap_or(f64::NAN))
            .map_or(Json::Null, Json::Number),
        Json::Array(a) => Json::Array(a.iter().map(norm).collect()),
        Json::Object(o) => Json::Object(o.iter().map(|(k, v)| (k.clone(), norm(v))).collect()),
        other => other.clone(),
    }
}

fn nix_available() -> bool {
    Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Evaluates every file in one `nix-instantiate` call.
fn nix_eval_all(dir: &Path, files: &[String]) -> Vec<Json> {
    let mut expr = String::from("[");
    for (i, text) in files.iter().enumerate() {
        let f = dir.join(format!("s{i}.nix"));
        std::fs::write(&f, text).expect("write step file");
        expr.push_str(&format!(
            " (let f = import {}; in if builtins.isFunction f then f {{ config = null; }} else f)",
            f.display()
        ));
    }
    expr.push_str(" ]");
    let out = Command::new("nix-instantiate")
        .args(["--eval", "--strict", "--json", "-E", &expr])
        .output()
        .expect("run nix-instantiate");
    assert!(
        out.status.success(),
        "nix-instantiate failed: {}\nfiles: {files:#?}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Json = serde_json::from_slice(&out.stdout).expect("nix JSON");
    v.as_array().cloned().expect("a list")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
    #[test]
    fn edits_match_the_model(
        init in prop::collection::btree_map(key(), value(), 0..4),
        flat in prop::collection::vec(any::<bool>(), 3),
        module in any::<bool>(),
        steps in prop::collection::vec(step(), 1..8),
    ) {
        let init: Map<String, Json> = init.into_iter().collect();
        let mut src = render_tree(&init, &flat, module);
        prop_assert!(validate(&src).is_ok(), "initial tree does not parse:\n{}", src);
        let mut model = Json::Object(init);
        let mut files = vec![src.clone()];
        let mut models = vec![model.clone()];
        for step in &steps {
            let expected = model_step(&model, step);
            match (edit(&src, &to_op(step)), expected) {
                (Ok(e), Some(m)) => {
                    prop_assert!(validate(&e.text).is_ok(), "{:?} produced unparsable:\n{}", step, e.text);
                    let keep_tail = src.len() - e.changed.end;
                    prop_assert_eq!(&e.text[..e.changed.start], &src[..e.changed.start]);
                    prop_assert_eq!(&e.text[e.text.len() - keep_tail..], &src[e.changed.end..]);
                    src = e.text;
                    model = m;
                }
                (Err(_), None) => {}
                (got, want) => prop_assert!(false, "{:?} on\n{}\neditor: {:?}\nmodel: {:?}", step, src, got, want),
            }
            files.push(src.clone());
            models.push(model.clone());
        }
        if nix_available() {
            let dir = tempfile::tempdir().expect("tempdir");
            let evaluated = nix_eval_all(dir.path(), &files);
            for ((got, want), file) in evaluated.iter().zip(&models).zip(&files) {
                prop_assert_eq!(norm(got), norm(want), "file:\n{}", file);
            }
        }
    }
}

#[test]
fn reports_whether_nix_checks_ran() {
    if !nix_available() {
        println!("skipped: nix-instantiate not found; the property test only checked parsing");
    }
}
