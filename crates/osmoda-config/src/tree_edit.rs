//! Helpers for daemons whose runtime APIs add configuration by editing their own
//! `services.osmoda.*` options through agentd's config API (osmoda-watch's `/watcher/add`,
//! osmoda-routines' `/routine/add`): the names such an API accepts, the JSON → option-name
//! mapping, and the commit an edit produced.

use serde_json::{Map, Value};

/// Whether `name` can be an attribute of an option set such as
/// `services.osmoda.watch.watchers.<name>`: 1..=64 of `[A-Za-z0-9_-]`, starting with a letter
/// or `_` (no quoting needed in Nix, no path separator).
pub fn valid_attr_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// snake_case JSON keys → the camelCase NixOS option names (`expect_status` → `expectStatus`),
/// recursively; null values are dropped (an unset option). The inverse of `lib/`'s `toSnake`.
/// Keys under `keep_keys` objects (e.g. `env`, whose keys are variable names) stay as they are.
pub fn option_keys(v: &Value, keep_keys: &[&str]) -> Value {
    match v {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                if v.is_null() {
                    continue;
                }
                let value = if keep_keys.contains(&k.as_str()) {
                    v.clone()
                } else {
                    option_keys(v, keep_keys)
                };
                out.insert(camel(k), value);
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| option_keys(x, keep_keys)).collect()),
        other => other.clone(),
    }
}

fn camel(k: &str) -> String {
    let mut key = String::new();
    let mut up = false;
    for c in k.chars() {
        if c == '_' {
            up = true;
        } else if up {
            key.extend(c.to_uppercase());
            up = false;
        } else {
            key.push(c);
        }
    }
    key
}

/// The commit (`generation.rev`, or a top-level `rev`) in agentd's answer to a config edit.
pub fn landed_rev(answer: &Value) -> Option<&str> {
    answer
        .get("rev")
        .or_else(|| answer.get("generation").and_then(|g| g.get("rev")))
        .and_then(Value::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_keys_and_revs() {
        assert!(valid_attr_name("web-1") && valid_attr_name("_x"));
        for bad in ["", "1a", "a.b", "a b", "a\"b", &"x".repeat(65)] {
            assert!(!valid_attr_name(bad), "{bad:?}");
        }
        let v = option_keys(
            &json!({ "type": "http", "expect_status": 200, "body_contains": null,
                     "x": [{ "min_free_percent": 1 }], "env": { "MY_VAR": "1" } }),
            &["env"],
        );
        assert_eq!(
            v,
            json!({ "type": "http", "expectStatus": 200, "x": [{ "minFreePercent": 1 }], "env": { "MY_VAR": "1" } })
        );
        assert_eq!(
            landed_rev(&json!({ "generation": { "rev": "abc" } })),
            Some("abc")
        );
        assert_eq!(landed_rev(&json!({ "rev": "def" })), Some("def"));
        assert_eq!(landed_rev(&json!({})), None);
    }
}
