//! Options NixOS knows under a second name (`mkAliasOptionModule`, `mkRenamedOptionModule`): a
//! definition of the old name is a definition of the new one, with its priority and conditions,
//! so `services.sshd.enable = false` disables sshd exactly as `services.openssh.enable = false`
//! does. Before modules are merged, each module's definitions under an old name are taken out
//! and given back as definitions of the new name (see [`split`]); the rules only read new names.

use serde_json::{json, Map, Value};

use super::merge::{is_undecidable, undecidable};

/// `(old name, new name)`, from nixpkgs' `sshd.nix`, `users-groups.nix` and `systemd.nix` (a
/// rename of a rename points at the last name).
pub const ALIASES: &[(&[&str], &[&str])] = &[
    (
        &["services", "sshd", "enable"],
        &["services", "openssh", "enable"],
    ),
    (&["users", "extraUsers"], &["users", "users"]),
    (&["users", "extraGroups"], &["users", "groups"]),
    (&["jobs"], &["systemd", "services"]),
    (&["boot", "systemd", "services"], &["systemd", "services"]),
    (&["boot", "systemd", "sockets"], &["systemd", "sockets"]),
    (&["boot", "systemd", "targets"], &["systemd", "targets"]),
    (
        &["services", "openssh", "challengeResponseAuthentication"],
        &[
            "services",
            "openssh",
            "settings",
            "KbdInteractiveAuthentication",
        ],
    ),
    (
        &["services", "openssh", "kbdInteractiveAuthentication"],
        &[
            "services",
            "openssh",
            "settings",
            "KbdInteractiveAuthentication",
        ],
    ),
    (
        &["services", "openssh", "passwordAuthentication"],
        &["services", "openssh", "settings", "PasswordAuthentication"],
    ),
    (
        &["services", "openssh", "permitRootLogin"],
        &["services", "openssh", "settings", "PermitRootLogin"],
    ),
    (
        &["services", "openssh", "useDns"],
        &["services", "openssh", "settings", "UseDns"],
    ),
    (
        &["services", "openssh", "logLevel"],
        &["services", "openssh", "settings", "LogLevel"],
    ),
    (
        &["services", "openssh", "macs"],
        &["services", "openssh", "settings", "Macs"],
    ),
    (
        &["services", "openssh", "ciphers"],
        &["services", "openssh", "settings", "Ciphers"],
    ),
    (
        &["services", "openssh", "kexAlgorithms"],
        &["services", "openssh", "settings", "KexAlgorithms"],
    ),
    (
        &["services", "openssh", "gatewayPorts"],
        &["services", "openssh", "settings", "GatewayPorts"],
    ),
    (
        &["services", "openssh", "forwardX11"],
        &["services", "openssh", "settings", "X11Forwarding"],
    ),
];

fn marker(v: &Value) -> Option<&str> {
    v.get("__osmoda").and_then(Value::as_str)
}

/// Take the definitions under every old name out of `module` (one module's values, with the
/// evaluator's wrapper markers) and return them as modules of their own at the new names, each
/// still inside the `mkOverride`/`mkIf` wrappers it was found in. A value that cannot be decided
/// on the way to an old name makes the new name undecidable.
pub fn split(module: &mut Value) -> Vec<Value> {
    let mut out = Vec::new();
    for (old, new) in ALIASES {
        for v in take(module, old) {
            out.push(nest(new, v));
        }
    }
    out
}

fn take(v: &mut Value, path: &[&str]) -> Vec<Value> {
    let Some((first, rest)) = path.split_first() else {
        return vec![std::mem::take(v)];
    };
    match marker(v) {
        Some("override") => {
            let priority = v["priority"].clone();
            take(&mut v["content"], path)
                .into_iter()
                .map(|c| json!({"__osmoda": "override", "priority": priority, "content": c}))
                .collect()
        }
        Some("if") => {
            let condition = v["condition"].clone();
            take(&mut v["content"], path)
                .into_iter()
                .map(|c| json!({"__osmoda": "if", "condition": condition, "content": c}))
                .collect()
        }
        Some("merge") => match v["contents"].as_array_mut() {
            Some(items) => items.iter_mut().flat_map(|c| take(c, path)).collect(),
            None => vec![undecidable()],
        },
        _ if is_undecidable(v) => vec![undecidable()],
        Some(_) => Vec::new(),
        None => match v.as_object_mut() {
            Some(m) if rest.is_empty() => m.remove(*first).into_iter().collect(),
            Some(m) => m.get_mut(*first).map(|c| take(c, rest)).unwrap_or_default(),
            None => Vec::new(),
        },
    }
}

fn nest(path: &[&str], v: Value) -> Value {
    path.iter().rev().fold(v, |acc, k| {
        let mut m = Map::new();
        m.insert((*k).to_string(), acc);
        Value::Object(m)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_names_move_to_new_ones_inside_their_wrappers() {
        let force = |v| json!({"__osmoda": "override", "priority": 50, "content": v});
        let mut m = json!({
            "services": {"sshd": {"enable": force(json!(false))}, "nginx": {"enable": true}},
            "users": {"__osmoda": "if", "condition": true, "content": {"extraUsers": {"a": {"isNormalUser": false}}}},
            "jobs": {"__osmoda": "undecidable"},
        });
        let extra = split(&mut m);
        assert_eq!(
            extra,
            vec![
                json!({"services": {"openssh": {"enable": force(json!(false))}}}),
                json!({"users": {"users": {"__osmoda": "if", "condition": true, "content": {"a": {"isNormalUser": false}}}}}),
                json!({"systemd": {"services": undecidable()}}),
            ]
        );
        // What was moved is gone from the old place; the rest stays.
        assert_eq!(
            m["services"],
            json!({"sshd": {}, "nginx": {"enable": true}})
        );
        assert_eq!(m["users"]["content"], json!({}));
    }
}
