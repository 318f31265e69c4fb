//! Files NixOS writes under `/etc` that decide who logs in or how: sshd's configuration and
//! authorized keys, PAM, sudo, the account databases, shell start-up files. NixOS's own modules
//! write most of them; a definition in the tree replaces or turns off what they write, so any
//! difference in such a file's entry (added, changed, replaced, turned off) needs approval.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{json, Value};

use super::*;

/// The kind and words for a login file at `target` (relative to /etc); `None` for other files.
fn login_kind(target: &str) -> Option<(&'static str, &'static str)> {
    let t = target.trim_start_matches('/');
    let real = Path::new("/etc").join(t);
    crate::api::secrets::login_path(&real, &Default::default())?;
    Some(if t.starts_with("ssh/authorized_keys.d") {
        ("user.credentials", "the SSH keys a user logs in with")
    } else if t.starts_with("ssh/") || t == "ssh" {
        ("ssh.access", "how sshd lets people log in")
    } else {
        (
            "user.demote",
            "who logs in, with which rights, or what runs at login",
        )
    })
}

/// `environment.etc` of `t` by target file (the attribute name unless `target` says otherwise);
/// `None` when the set itself cannot be decided. Entries whose target cannot be decided are
/// under `"<undecidable>"`.
fn by_target(t: &Value) -> Option<BTreeMap<String, Vec<(String, Value)>>> {
    let m = match at(t, &["environment", "etc"]) {
        V::Absent => return Some(BTreeMap::new()),
        V::Known(Value::Object(m)) => m,
        _ => return None,
    };
    let mut out: BTreeMap<String, Vec<(String, Value)>> = BTreeMap::new();
    for (name, e) in m {
        let target = match at(e, &["target"]) {
            V::Absent | V::Known(Value::Null) if !is_undecidable(e) => name.clone(),
            V::Known(Value::String(s)) => s.clone(),
            _ => "<undecidable>".to_string(),
        };
        out.entry(target)
            .or_default()
            .push((name.clone(), e.clone()));
    }
    Some(out)
}

pub(super) fn etc_login_files(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let base = ["environment", "etc"];
    let (b, a) = (at(ctx.before, &base), at(ctx.after, &base));
    if b == a {
        return;
    }
    let (Some(old), Some(new)) = (by_target(ctx.before), by_target(ctx.after)) else {
        push(
            out,
            "ssh.access",
            &base,
            b,
            a,
            "the files NixOS writes to /etc may change, sshd's and PAM's among them",
        );
        return;
    };
    let none = Vec::new();
    let mut targets: Vec<&String> = old.keys().chain(new.keys()).collect();
    targets.sort();
    targets.dedup();
    for t in targets {
        let (was, now) = (old.get(t).unwrap_or(&none), new.get(t).unwrap_or(&none));
        if was == now {
            continue;
        }
        let (kind, what) = if t == "<undecidable>" {
            (
                "ssh.access",
                "a file under /etc whose name cannot be decided (it may be a login file)",
            )
        } else {
            match login_kind(t) {
                Some(k) => k,
                None => continue,
            }
        };
        let shown = |v: &Vec<(String, Value)>| -> Value {
            match v.as_slice() {
                [] => json!("<absent>"),
                [(_, e)] => e.clone(),
                many => Value::Object(many.iter().cloned().collect()),
            }
        };
        push_values(
            out,
            kind,
            &["environment", "etc", t],
            shown(was),
            shown(now),
            &format!("changes /etc/{t}, which decides {what}; NixOS writes it from the configuration and this replaces or removes that"),
        );
    }
}
