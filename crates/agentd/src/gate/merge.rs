//! Resolving module wrappers the way the NixOS module system does, for the values the gate
//! reads: `mkOverride` priorities (lower wins, plain definitions are 100), `mkIf` (a condition
//! that is not a literal boolean after evaluation makes the value undecidable), `mkMerge`, and
//! attribute sets merged key by key across modules. Conflicting definitions of one value at the
//! same priority (which NixOS would refuse) are undecidable. A value whose strongest definition
//! is weaker than the option's default (`mkOverride 1600`) is absent (the default wins); one as
//! weak as the default (`mkOptionDefault`) merges with a default the gate does not know, so it is
//! undecidable.

use serde_json::{Map, Value};

/// Priority of a plain definition (`lib.modules.defaultOverridePriority`).
const DEFAULT_PRIORITY: i64 = 100;
/// Priority of an option's own default (`mkOptionDefault`): a definition weaker than it loses
/// to the default, one as weak is merged with it (which the gate cannot see).
const OPTION_DEFAULT_PRIORITY: i64 = 1500;

/// The marker for a value the gate cannot decide.
pub fn undecidable() -> Value {
    serde_json::json!({ "__osmoda": "undecidable" })
}

/// Whether `v` is the undecidable marker.
pub fn is_undecidable(v: &Value) -> bool {
    marker(v) == Some("undecidable")
}

fn marker(v: &Value) -> Option<&str> {
    v.get("__osmoda").and_then(Value::as_str)
}

/// Merge the definitions of several modules (each a JSON tree with wrapper markers) into one
/// plain tree; a missing value is a missing key.
pub fn merge_modules(modules: &[Value]) -> Value {
    let mut defs = Vec::new();
    for m in modules {
        flatten(m, DEFAULT_PRIORITY, &mut defs);
    }
    merge(defs).unwrap_or_else(|| Value::Object(Map::new()))
}

/// Unwrap `v` into prioritised plain definitions.
fn flatten(v: &Value, priority: i64, out: &mut Vec<(i64, Value)>) {
    match marker(v) {
        Some("override") => match v["priority"].as_i64() {
            Some(p) => flatten(&v["content"], p, out),
            None => out.push((priority, undecidable())),
        },
        Some("if") => match v["condition"] {
            Value::Bool(true) => flatten(&v["content"], priority, out),
            Value::Bool(false) => {}
            _ => out.push((priority, undecidable())),
        },
        Some("merge") => match v["contents"].as_array() {
            Some(items) => items.iter().for_each(|c| flatten(c, priority, out)),
            None => out.push((priority, undecidable())),
        },
        _ => out.push((priority, v.clone())),
    }
}

fn is_plain_object(v: &Value) -> bool {
    v.is_object() && marker(v).is_none()
}

fn merge(defs: Vec<(i64, Value)>) -> Option<Value> {
    if defs.is_empty() {
        return None;
    }
    if defs.iter().any(|(_, v)| is_undecidable(v)) {
        return Some(undecidable());
    }
    if defs.iter().all(|(_, v)| is_plain_object(v)) {
        let mut keys: Vec<&String> = defs
            .iter()
            .flat_map(|(_, v)| v.as_object().into_iter().flat_map(Map::keys))
            .collect();
        keys.sort();
        keys.dedup();
        let mut out = Map::new();
        for k in keys {
            let mut child = Vec::new();
            for (p, v) in &defs {
                if let Some(c) = v.get(k) {
                    flatten(c, *p, &mut child);
                }
            }
            if let Some(v) = merge(child) {
                out.insert(k.clone(), v);
            }
        }
        return Some(Value::Object(out));
    }
    if defs.iter().any(|(_, v)| is_plain_object(v)) {
        return Some(undecidable());
    }
    let best = defs
        .iter()
        .map(|(p, _)| *p)
        .min()
        .unwrap_or(DEFAULT_PRIORITY);
    // Weaker than the option's default: the default is the value, as when nothing is defined.
    if best > OPTION_DEFAULT_PRIORITY {
        return None;
    }
    if best == OPTION_DEFAULT_PRIORITY {
        return Some(undecidable());
    }
    let winners: Vec<Value> = defs
        .into_iter()
        .filter(|(p, _)| *p == best)
        .map(|(_, v)| v)
        .collect();
    if winners.iter().all(Value::is_array) {
        return Some(Value::Array(
            winners
                .into_iter()
                .flat_map(|v| match v {
                    Value::Array(a) => a,
                    _ => Vec::new(),
                })
                .collect(),
        ));
    }
    if winners.windows(2).all(|w| w[0] == w[1]) {
        return winners.into_iter().next();
    }
    Some(undecidable())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(modules: &[Value], expected: Value) {
        assert_eq!(merge_modules(modules), expected, "{modules:?}");
    }

    #[test]
    fn priorities_conditions_and_merges_resolve_like_the_module_system() {
        let force = |v| json!({"__osmoda": "override", "priority": 50, "content": v});
        let default = |v| json!({"__osmoda": "override", "priority": 1000, "content": v});
        let when = |c, v| json!({"__osmoda": "if", "condition": c, "content": v});
        check(
            &[
                json!({"s": {"enable": true}}),
                json!({"s": {"enable": force(json!(false))}}),
            ],
            json!({"s": {"enable": false}}),
        );
        check(
            &[
                json!({"s": {"enable": default(json!(false))}}),
                json!({"s": {"enable": true}}),
            ],
            json!({"s": {"enable": true}}),
        );
        check(
            &[json!({"s": when(json!(false), json!({"enable": true}))})],
            json!({}),
        );
        check(
            &[json!({"s": when(json!(true), json!({"enable": true}))})],
            json!({"s": {"enable": true}}),
        );
        check(
            &[json!({"s": when(undecidable(), json!({"enable": true}))})],
            json!({"s": undecidable()}),
        );
        check(
            &[json!({"s": {"__osmoda": "merge", "contents": [{"a": 1}, {"b": [1]}, {"b": [2]}]}})],
            json!({"s": {"a": 1, "b": [1, 2]}}),
        );
        // Same priority, different values: NixOS refuses it, so nothing is decided.
        check(
            &[
                json!({"s": {"enable": true}}),
                json!({"s": {"enable": false}}),
            ],
            json!({"s": {"enable": undecidable()}}),
        );
        // Weaker than the option's default: the default is the value; as weak: merged with it.
        let weak = |p, v| json!({"__osmoda": "override", "priority": p, "content": v});
        check(
            &[json!({"s": {"enable": weak(1600, json!(true)), "ports": weak(1500, json!([22]))}})],
            json!({"s": {"ports": undecidable()}}),
        );
        check(
            &[json!({"s": weak(2000, json!({"enable": true}))})],
            json!({"s": {}}),
        );
        // A forced attribute set forces every value under it.
        check(
            &[
                json!({"s": {"enable": true}}),
                json!({"s": force(json!({"enable": false}))}),
            ],
            json!({"s": {"enable": false}}),
        );
    }
}
