//! Users: removed, demoted, or losing what they log in with.

use serde_json::{json, Value};

use super::*;

/// Whether the tree keeps account `n`: `Some(true)` defined and on, `Some(false)` turned off
/// (`enable = false`, NixOS creates no such account), `None` when that cannot be decided;
/// `Err(())` when the tree does not define it (it may still come from a NixOS module).
fn account(t: &Value, n: &str) -> Result<Option<bool>, ()> {
    match at(t, &["users", "users", n]) {
        V::Absent => Err(()),
        V::Unknown => Ok(None),
        V::Known(_) => Ok(at(t, &["users", "users", n, "enable"]).flag(true)),
    }
}

pub(super) fn user_removed(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    replaced(
        ctx,
        out,
        "user.remove",
        &["users", "users"],
        "every user NixOS itself defines (root, sshd, nobody, …) goes away",
    );
    // An account that goes away: its definition removed, or turned off (`enable = false`, also
    // for a user the tree did not define, such as root). Reported as the account's existence,
    // so every phrasing of the removal is one effect.
    for n in names(ctx, &["users", "users"]) {
        let (b, a) = (account(ctx.before, &n), account(ctx.after, &n));
        let now = match (b, a) {
            (Ok(Some(false)), _) | (_, Ok(Some(true))) => continue,
            (Err(()), Err(()) | Ok(None)) => continue,
            (_, Err(()) | Ok(Some(false))) => json!(false),
            (_, Ok(None)) => json!("<undecidable>"),
        };
        let was = match b {
            Ok(None) => json!("<undecidable>"),
            _ => json!(true),
        };
        let p = ["users", "users", n.as_str()];
        if was == now {
            continue;
        }
        push_values(
            out,
            "user.remove",
            &p,
            was,
            now,
            &format!("removes user {n} (no such account after the change)"),
        );
    }
    // `name` is the account's login name: another one is the old account gone.
    for n in existing_users(ctx) {
        let p = ["users", "users", n.as_str(), "name"];
        let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
        let login = |v: V<'_>| match v {
            V::Absent => Some(n.clone()),
            V::Known(Value::String(s)) => Some(s.clone()),
            _ => None,
        };
        if b != a && (login(a).is_none() || login(a) != login(b)) {
            push(
                out,
                "user.remove",
                &p,
                b,
                a,
                &format!("renames user {n}: the login {n} goes away"),
            );
        }
    }
}

/// Users present before and after the change (a new user loses nothing).
fn existing_users(ctx: &Ctx<'_>) -> Vec<String> {
    kept_users(ctx)
        .into_iter()
        .filter(|n| at(ctx.before, &["users", "users", n]) != V::Absent)
        .collect()
}

/// Users present after the change (the others are `user.remove`).
pub(super) fn kept_users(ctx: &Ctx<'_>) -> Vec<String> {
    names(ctx, &["users", "users"])
        .into_iter()
        .filter(|n| matches!(at(ctx.after, &["users", "users", n]), V::Known(_)))
        .collect()
}

/// Whether a login shell is one nobody can log in with (`nologin`, `false`, `true`); `None`
/// when it cannot be decided.
fn no_login(v: V<'_>) -> Option<bool> {
    let shell = match v {
        V::Absent | V::Known(Value::Null) => return Some(false),
        V::Known(Value::String(s)) => s.clone(),
        V::Known(p) if p["__osmoda"] == "pkg" => p["name"].as_str()?.to_string(),
        V::Known(p) if p["__osmoda"] == "path" => p["path"].as_str()?.to_string(),
        _ => return None,
    };
    let last = shell.rsplit(['/', '.']).next().unwrap_or_default();
    Some(matches!(last, "nologin" | "false" | "true" | "shadow"))
}

/// A user's account stops working for logins: shell, expiry, system user.
fn account_demotions(ctx: &Ctx<'_>, out: &mut Vec<Finding>, n: &str) {
    let p = ["users", "users", n, "shell"];
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    if b != a && no_login(b) == Some(false) && no_login(a) != Some(false) {
        push(
            out,
            "user.demote",
            &p,
            b,
            a,
            &format!("user {n} gets a shell nobody can log in with"),
        );
    }
    let p = ["users", "users", n, "expires"];
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    if b != a && !matches!(a, V::Absent | V::Known(Value::Null)) {
        push(
            out,
            "user.demote",
            &p,
            b,
            a,
            &format!("user {n}'s account gets an expiry date"),
        );
    }
    let p = ["users", "users", n, "isSystemUser"];
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    if b != a && b.flag(false) != Some(true) && a.flag(false) != Some(false) {
        push(
            out,
            "user.demote",
            &p,
            b,
            a,
            &format!("user {n} becomes a system user"),
        );
    }
}

/// `users.groups.wheel.members` losing a name.
fn wheel_members(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let p = ["users", "groups", "wheel", "members"];
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    if b == a {
        return;
    }
    let lost = match (b.list(&[]), a.list(&[])) {
        (Some(old), Some(new)) => old.iter().any(|x| !new.contains(x)),
        (Some(old), None) => !old.is_empty(),
        (None, _) => true,
    };
    if lost {
        push(
            out,
            "user.demote",
            &p,
            b,
            a,
            "a member of wheel (admin) loses it",
        );
    }
}

/// Whether any user is in wheel (`None`: cannot be decided).
fn any_admin(t: &Value) -> Option<bool> {
    let users = match at(t, &["users", "users"]) {
        V::Absent => return Some(false),
        V::Known(Value::Object(m)) => m,
        _ => return None,
    };
    let mut unknown = false;
    for u in users.values() {
        match at(u, &["extraGroups"]).list(&[]) {
            Some(l) if l.contains(&json!("wheel")) => return Some(true),
            Some(_) => {}
            None => unknown = true,
        }
    }
    match at(t, &["users", "groups", "wheel", "members"]).list(&[]) {
        Some(l) if !l.is_empty() => Some(true),
        Some(_) if !unknown => Some(false),
        _ => None,
    }
}

/// sudo stops giving wheel users root: turned off, a password required where none was, or its
/// rules replaced.
fn sudo_access(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    if any_admin(ctx.before) == Some(false) {
        return;
    }
    let s = |k: &'static str| -> [&'static str; 3] { ["security", "sudo", k] };
    lose_flag(
        ctx,
        out,
        "user.demote",
        &s("enable"),
        true,
        "wheel users lose sudo",
    );
    let p = s("wheelNeedsPassword");
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    if b != a && b.flag(true) != Some(true) && a.flag(true) != Some(false) {
        push(
            out,
            "user.demote",
            &p,
            b,
            a,
            "wheel users need a password for sudo (those without one lose root)",
        );
    }
    for k in ["configFile", "extraConfig", "execWheelOnly", "package"] {
        let p = s(k);
        let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
        if b != a {
            push(
                out,
                "user.demote",
                &p,
                b,
                a,
                "sudo's rules change (they can take root from wheel users)",
            );
        }
    }
    let p = s("extraRules");
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    let lost = match (b.list(&[]), a.list(&[])) {
        (Some(old), Some(new)) => old.iter().any(|x| !new.contains(x)),
        _ => true,
    };
    if b != a && lost {
        push(
            out,
            "user.demote",
            &p,
            b,
            a,
            "a sudo rule is removed or changed",
        );
    }
}

/// `security.pam.loginLimits` gaining a limit that can refuse a login: `maxlogins` or
/// `maxsyslogins` at any value, any other item at 0 or 1.
fn login_limits(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let p = ["security", "pam", "loginLimits"];
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    if b == a {
        return;
    }
    let refuses = |e: &Value| {
        let item = e["item"].as_str().unwrap_or_default();
        let value = match &e["value"] {
            Value::String(s) => s.trim().to_string(),
            v => v.to_string(),
        };
        matches!(item, "maxlogins" | "maxsyslogins")
            || matches!(value.as_str(), "0" | "1")
            || !e["item"].is_string()
    };
    let gained = match (b.list(&[]), a.list(&[])) {
        (Some(old), Some(new)) => new.iter().any(|e| !old.contains(e) && refuses(e)),
        (_, None) => true,
        (None, Some(new)) => new.iter().any(refuses),
    };
    if gained {
        push(
            out,
            "user.demote",
            &p,
            b,
            a,
            "a login limit that can refuse logins (maxlogins, or a limit of 0 or 1) is added",
        );
    }
}

/// PAM's configuration of the `services` that logins go through changes (`kind` for the
/// finding).
pub(super) fn pam(ctx: &Ctx<'_>, out: &mut Vec<Finding>, services: &[&str], kind: &'static str) {
    for s in services {
        let p = ["security", "pam", "services", s];
        let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
        if b != a {
            push(
                out,
                kind,
                &p,
                b,
                a,
                &format!("how PAM authenticates {s} logins changes"),
            );
        }
    }
}

pub(super) fn user_demoted(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    wheel_members(ctx, out);
    sudo_access(ctx, out);
    replaced(ctx, out, "user.demote", &["users", "groups"], "the groups NixOS defines, or the members it gives them (each user with the group in extraGroups), go away");
    replaced(
        ctx,
        out,
        "user.demote",
        &["security", "sudo", "extraRules"],
        "sudo's own rules (wheel runs anything as root) go away",
    );
    replaced(
        ctx,
        out,
        "user.demote",
        &["security", "wrappers"],
        "the setuid wrappers NixOS installs (sudo, su, passwd, …) go away",
    );
    for w in ["sudo", "sudoedit", "su", "doas", "run0"] {
        let p = ["security", "wrappers", w];
        let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
        if b != a {
            push(
                out,
                "user.demote",
                &p,
                b,
                a,
                &format!("{w}'s setuid wrapper changes (its users may lose root)"),
            );
        }
    }
    login_limits(ctx, out);
    pam(ctx, out, &["sudo", "su"], "user.demote");
    for n in existing_users(ctx) {
        account_demotions(ctx, out, &n);
    }
    for n in kept_users(ctx) {
        let p = ["users", "users", n.as_str(), "isNormalUser"];
        lose_flag(
            ctx,
            out,
            "user.demote",
            &p,
            false,
            &format!("user {n} stops being a normal (login) user"),
        );
        let g = ["users", "users", n.as_str(), "extraGroups"];
        let (b, a) = (at(ctx.before, &g), at(ctx.after, &g));
        let had = b.list(&[]).is_none_or(|l| l.contains(&json!("wheel")));
        let has = a.list(&[]).is_some_and(|l| l.contains(&json!("wheel")));
        if b != a && had && !has {
            let now = a.list(&[]).map(|l| l.contains(&json!("wheel")));
            let was = b.list(&[]).map(|l| l.contains(&json!("wheel")));
            let what = format!("user {n} loses the wheel (admin) group");
            push_values(
                out,
                "user.demote",
                &[&g[..], &["wheel"]].concat(),
                decided(was),
                decided(now),
                &what,
            );
        }
    }
}

pub(super) fn user_credentials(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    super::etc::etc_login_files(ctx, out);
    lose_flag(
        ctx,
        out,
        "user.credentials",
        &["users", "mutableUsers"],
        true,
        "passwords set with passwd (not in the configuration) are discarded",
    );
    for n in kept_users(ctx) {
        for (field, what) in [
            ("home", "moves away from its ~/.ssh/authorized_keys"),
            (
                "uid",
                "changes uid (its files and keys stay with the old one)",
            ),
        ] {
            let p = ["users", "users", n.as_str(), field];
            let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
            if b != a && b != V::Absent {
                push(
                    out,
                    "user.credentials",
                    &p,
                    b,
                    a,
                    &format!("user {n}'s account {what}"),
                );
            }
        }
        let p = ["users", "users", n.as_str(), "homeMode"];
        let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
        let writable = |v: V<'_>| match v {
            V::Absent => Some(false),
            V::Known(Value::String(s)) => u32::from_str_radix(s, 8).ok().map(|m| m & 0o022 != 0),
            _ => None,
        };
        if b != a && writable(a) != Some(false) && writable(b) != Some(true) {
            push(out, "user.credentials", &p, b, a, &format!("user {n}'s home becomes writable by others, so sshd (StrictModes) refuses its keys"));
        }
        for field in ["keys", "keyFiles"] {
            let p = [
                "users",
                "users",
                n.as_str(),
                "openssh",
                "authorizedKeys",
                field,
            ];
            let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
            if b == a {
                continue;
            }
            // A key file of the tree counts by its lines (keys), so adding a key to it is not
            // losing one; a file without lines (too big) by its content.
            let keys = |l: Vec<Value>| -> Vec<Value> {
                l.into_iter()
                    .flat_map(|k| match k.get("lines").and_then(Value::as_array) {
                        Some(lines) => lines.clone(),
                        None => vec![k],
                    })
                    .collect()
            };
            let lost = match (b.list(&[]).map(keys), a.list(&[]).map(keys)) {
                (Some(old), Some(new)) => old.iter().any(|k| !new.contains(k)),
                (Some(old), None) => !old.is_empty(),
                (None, _) => true,
            };
            if lost {
                let what = format!("user {n} loses an SSH authorized key");
                push_values(
                    out,
                    "user.credentials",
                    &p,
                    decided(b.list(&[])),
                    decided(a.list(&[])),
                    &what,
                );
            }
        }
        for field in [
            "hashedPassword",
            "hashedPasswordFile",
            "initialHashedPassword",
            "password",
            "initialPassword",
            "passwordFile",
        ] {
            let p = ["users", "users", n.as_str(), field];
            let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
            let had = !matches!(b, V::Absent | V::Known(Value::Null));
            if had && b != a {
                push(
                    out,
                    "user.credentials",
                    &p,
                    b,
                    a,
                    &format!("user {n}'s password changes or goes away"),
                );
            }
        }
    }
}
