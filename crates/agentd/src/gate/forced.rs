//! Collections that NixOS's own modules define too: `users.users` (root, sshd, nobody, …),
//! `systemd.services` (sshd, …), the wheel group's members (every user with `wheel` in
//! `extraGroups`), sshd's port in `networking.firewall.allowedTCPPorts`, sudo's wheel rule, the
//! packages every system has, the kernel modules hardware needs. Their definitions have the
//! default priority, so a definition of the tree that beats it (`lib.mkForce`, `mkOverride 99`)
//! does not add to the collection: it replaces it, and what NixOS put there goes away unseen by
//! the tree's own values. [`forced`] names the collections a tree state replaces so.

use std::collections::BTreeSet;

use serde_json::Value;

use super::merge::is_undecidable;

/// Priority of a plain definition: NixOS's modules define their parts of these collections at
/// it (or weaker).
const DEFAULT_PRIORITY: i64 = 100;

/// Option paths of the collections (`*`: any name).
pub const SHARED: &[&[&str]] = &[
    &["users", "users"],
    &["users", "groups"],
    &["users", "groups", "*", "members"],
    &["systemd", "services"],
    &["systemd", "sockets"],
    &["environment", "etc"],
    &["security", "pam", "services"],
    &["security", "sudo", "extraRules"],
    &["security", "wrappers"],
    &["networking", "firewall", "allowedTCPPorts"],
    &["networking", "firewall", "allowedTCPPortRanges"],
    &["environment", "systemPackages"],
    &["boot", "kernelParams"],
    &["boot", "kernelModules"],
    &["boot", "initrd", "kernelModules"],
    &["boot", "initrd", "availableKernelModules"],
    &["fileSystems"],
    &["system", "activationScripts"],
];

/// Collections (option paths with names filled in) that a tree state replaces.
pub type Forced = BTreeSet<Vec<String>>;

/// The [`SHARED`] collections that some module of `modules` (each a module's values with the
/// evaluator's wrapper markers) defines with a priority stronger than the default. A condition
/// that cannot be decided counts as true (the collection may be replaced).
pub fn forced(modules: &[Value]) -> Forced {
    let mut out = Forced::new();
    for m in modules {
        for pattern in SHARED {
            walk(m, DEFAULT_PRIORITY, pattern, &mut Vec::new(), &mut out);
        }
    }
    out
}

fn walk(v: &Value, priority: i64, rest: &[&str], at: &mut Vec<String>, out: &mut Forced) {
    match v.get("__osmoda").and_then(Value::as_str) {
        Some("override") => {
            let p = v["priority"].as_i64().unwrap_or(0);
            return walk(&v["content"], p, rest, at, out);
        }
        Some("if") => {
            if v["condition"] != Value::Bool(false) {
                walk(&v["content"], priority, rest, at, out);
            }
            return;
        }
        Some("merge") => {
            for c in v["contents"].as_array().into_iter().flatten() {
                walk(c, priority, rest, at, out);
            }
            return;
        }
        _ if is_undecidable(v) => return,
        _ => {}
    }
    let Some((first, rest)) = rest.split_first() else {
        // Only a collection replaces one (anything else there is a type error NixOS refuses).
        if priority < DEFAULT_PRIORITY && (v.is_object() || v.is_array()) {
            out.insert(at.clone());
        }
        return;
    };
    let Some(m) = v.as_object() else { return };
    let names: Vec<&String> = if *first == "*" {
        m.keys().collect()
    } else {
        m.get_key_value(*first)
            .map(|(k, _)| k)
            .into_iter()
            .collect()
    };
    for n in names {
        at.push(n.clone());
        walk(&m[n.as_str()], priority, rest, at, out);
        at.pop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_collection_defined_stronger_than_the_default_is_replaced() {
        let force = |v| json!({"__osmoda": "override", "priority": 50, "content": v});
        let default = |v| json!({"__osmoda": "override", "priority": 1000, "content": v});
        let when = |c, v| json!({"__osmoda": "if", "condition": c, "content": v});
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let f = forced(&[
            json!({"users": {"users": force(json!({"alice": {}}))}}),
            // Forcing a parent forces what is under it.
            json!({"networking": force(json!({"firewall": {"allowedTCPPorts": [80]}}))}),
            json!({"users": {"groups": {"wheel": {"members": when(json!(true), force(json!([])))}}}}),
            // Not stronger, or never defined: nothing is replaced.
            json!({"systemd": {"services": default(json!({}))}}),
            json!({"environment": {"etc": when(json!(false), force(json!({})))}}),
            json!({"boot": {"kernelParams": ["quiet"]}}),
            json!({"networking": {"firewall": {"allowedTCPPortRanges": force(json!(false))}}}),
        ]);
        assert_eq!(
            f,
            Forced::from([
                path(&["users", "users"]),
                path(&["networking", "firewall", "allowedTCPPorts"]),
                path(&["users", "groups", "wheel", "members"]),
            ])
        );
    }
}
