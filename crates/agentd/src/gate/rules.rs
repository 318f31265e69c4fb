//! The one table of rules that decides which differences between two evaluated configurations
//! are destructive. Each rule reads the merged before/after values (see [`super::merge`]) and
//! reports findings; a value the evaluator could not decide counts as possibly destructive.

use serde_json::{json, Value};

use super::merge::is_undecidable;

/// One destructive difference.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Finding {
    /// Operation kind, matched against the approval rules (`service.disable`, ...).
    pub kind: &'static str,
    /// Option path (`services.openssh.enable`) or file the finding is about.
    pub path: String,
    /// Effective value before (`"<absent>"`, `"<undecidable>"` or the value).
    pub was: Value,
    /// Effective value after.
    pub now: Value,
    /// The effect in words, for the person deciding.
    pub words: String,
}

/// What the rules see.
pub struct Ctx<'a> {
    /// Merged protected values before the change.
    pub before: &'a Value,
    /// And after.
    pub after: &'a Value,
    /// Changed modules that cannot be evaluated at all after the change.
    pub unevaluable: &'a [String],
    /// Package names whose removal needs approval.
    pub critical: &'a [String],
    /// The kind critical package removal is reported as (`package.remove_critical` for edits,
    /// `switch.remove_critical` for switches).
    pub package_kind: &'static str,
}

/// A rule: the kind it reports, what it protects (for docs and listings), and its check.
pub struct Rule {
    /// Kind reported (matched against `approval.required` and the code defaults).
    pub kind: &'static str,
    /// What the rule protects, in words.
    pub protects: &'static str,
    check: fn(&Ctx<'_>, &mut Vec<Finding>),
}

/// Every rule of the gate.
pub const RULES: &[Rule] = &[
    Rule { kind: "service.remove", protects: "a `services.<name>` or `systemd.services.<name>` block removed (unless it was disabled)", check: service_removed },
    Rule { kind: "service.disable", protects: "`enable` of a service going from true to false or away (`systemd.services.*.enable` defaults to true)", check: service_disabled },
    Rule { kind: "user.remove", protects: "a `users.users.<name>` removed", check: user_removed },
    Rule { kind: "user.demote", protects: "a user losing `isNormalUser` or the `wheel` group", check: user_demoted },
    Rule { kind: "user.credentials", protects: "a user losing an SSH authorized key or key file, or its password (hash) changed or removed", check: user_credentials },
    Rule { kind: "ssh.access", protects: "sshd kept on but its ports, listen addresses, `PermitRootLogin`, `PasswordAuthentication`, `KbdInteractiveAuthentication` or `Allow/Deny Users/Groups` changed so current logins may fail", check: ssh_access },
    Rule { kind: "firewall.ssh", protects: "the firewall closing a port sshd listens on", check: firewall_ssh },
    Rule { kind: "wallet.delete", protects: "a wallet removed from `services.osmoda.keyd.policy.wallets`", check: wallet_removed },
    Rule { kind: "mesh.peer.remove", protects: "a peer removed from `services.osmoda.mesh.peers`", check: peer_removed },
    Rule { kind: "capability.remove", protects: "an egress capability removed from `services.osmoda.egress.capabilities`", check: capability_removed },
    Rule { kind: "package.remove_critical", protects: "a package named in `critical_packages` removed from `environment.systemPackages` (`switch.remove_critical` for a switch)", check: critical_packages },
    Rule { kind: "gate.undecidable", protects: "a changed module that the evaluator cannot evaluate at all, or a changed flake.nix", check: unevaluable },
];

/// Apply every rule.
pub fn findings(ctx: &Ctx<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    for r in RULES {
        (r.check)(ctx, &mut out);
    }
    out.sort_by(|a, b| (a.kind, &a.path).cmp(&(b.kind, &b.path)));
    out.dedup();
    out
}

/// A value as the rules see it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum V<'a> {
    Absent,
    Unknown,
    Known(&'a Value),
}

impl V<'_> {
    fn shown(self) -> Value {
        match self {
            V::Absent => json!("<absent>"),
            V::Unknown => json!("<undecidable>"),
            V::Known(v) => v.clone(),
        }
    }

    /// Present as a non-empty attribute set (or unknown); `{}` is the same as absent.
    fn exists(self) -> bool {
        match self {
            V::Absent => false,
            V::Unknown => true,
            V::Known(v) => v.as_object().is_none_or(|o| !o.is_empty()),
        }
    }

    /// A boolean option with `default`; `None` when it cannot be decided.
    fn flag(self, default: bool) -> Option<bool> {
        match self {
            V::Absent => Some(default),
            V::Known(Value::Bool(b)) => Some(*b),
            _ => None,
        }
    }

    /// A list's elements; `None` when it (or an element) cannot be decided.
    fn list(self, default: &[Value]) -> Option<Vec<Value>> {
        match self {
            V::Absent => Some(default.to_vec()),
            V::Known(Value::Array(a)) if !a.iter().any(is_undecidable) => Some(a.clone()),
            _ => None,
        }
    }
}

fn at<'a>(tree: &'a Value, path: &[&str]) -> V<'a> {
    let mut cur = tree;
    for seg in path {
        if is_undecidable(cur) {
            return V::Unknown;
        }
        match cur.as_object() {
            Some(m) => match m.get(*seg) {
                Some(v) => cur = v,
                None => return V::Absent,
            },
            None => return V::Unknown,
        }
    }
    if is_undecidable(cur) {
        V::Unknown
    } else {
        V::Known(cur)
    }
}

/// Names under `path` in either tree.
fn names(ctx: &Ctx<'_>, path: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = [ctx.before, ctx.after]
        .into_iter()
        .filter_map(|t| match at(t, path) {
            V::Known(Value::Object(m)) => Some(m.keys().cloned().collect::<Vec<_>>()),
            _ => None,
        })
        .flatten()
        .collect();
    out.sort();
    out.dedup();
    out
}

fn push(
    out: &mut Vec<Finding>,
    kind: &'static str,
    path: &[&str],
    was: V<'_>,
    now: V<'_>,
    what: &str,
) {
    push_values(out, kind, path, was.shown(), now.shown(), what);
}

/// `Some(x)` as `x`, `None` (cannot be decided) as `"<undecidable>"`.
fn decided<T: Into<Value>>(x: Option<T>) -> Value {
    x.map_or_else(|| json!("<undecidable>"), Into::into)
}

/// Report effective values (defaults applied), so phrasings of one effect report alike.
fn push_values(
    out: &mut Vec<Finding>,
    kind: &'static str,
    path: &[&str],
    was: Value,
    now: Value,
    what: &str,
) {
    let undecided = if now == json!("<undecidable>") {
        " (the new value cannot be decided, so it may)"
    } else {
        ""
    };
    let path = path.join(".");
    out.push(Finding {
        kind,
        words: format!("{what}{undecided}: {path} {was} → {now}"),
        path,
        was,
        now,
    });
}

/// `true` → not `true`, where the old value was not known to be off.
fn loses(was: Option<bool>, now: Option<bool>) -> bool {
    was != Some(false) && now != Some(true) && was != now
}

/// A boolean `enable`-like value that is being lost.
fn lose_flag(
    ctx: &Ctx<'_>,
    out: &mut Vec<Finding>,
    kind: &'static str,
    path: &[&str],
    default: bool,
    what: &str,
) {
    let (b, a) = (at(ctx.before, path), at(ctx.after, path));
    let (was, now) = (b.flag(default), a.flag(default));
    if b != a && loses(was, now) {
        push_values(out, kind, path, decided(was), decided(now), what);
    }
}

/// Service blocks: `services.<name>`, `services.osmoda.<daemon>` and `systemd.services.<name>`,
/// with the default of their `enable`.
/// The osModa daemons under `services.osmoda` are settings blocks: removing one is not removing
/// the service (their `enable` has its own default), so only their `enable` is checked.
fn services(ctx: &Ctx<'_>) -> Vec<(Vec<String>, bool, bool)> {
    let mut out = Vec::new();
    for n in names(ctx, &["services"]) {
        out.push((vec!["services".into(), n], false, true));
    }
    for d in ["agentd", "watch", "routines", "keyd", "egress"] {
        out.push((
            vec!["services".into(), "osmoda".into(), d.into()],
            true,
            false,
        ));
    }
    for d in ["mesh", "voice", "gateway"] {
        out.push((
            vec!["services".into(), "osmoda".into(), d.into()],
            false,
            false,
        ));
    }
    for n in names(ctx, &["systemd", "services"]) {
        out.push((vec!["systemd".into(), "services".into(), n], true, true));
    }
    out
}

fn service_removed(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for (path, default, removable) in services(ctx) {
        if !removable {
            continue;
        }
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
        let enable = [p.as_slice(), &["enable"]].concat();
        let was_off = at(ctx.before, &enable).flag(default) == Some(false);
        if b.exists() && !was_off && (!a.exists() || (a == V::Unknown && b != V::Unknown)) {
            // `{}` and no block at all are the same configuration.
            let a = if a.exists() { a } else { V::Absent };
            push(
                out,
                "service.remove",
                &p,
                b,
                a,
                &format!("removes service {}", p[p.len() - 1]),
            );
        }
    }
}

fn service_disabled(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for (path, default, removable) in services(ctx) {
        let p: Vec<&str> = path.iter().map(String::as_str).collect();
        // A block that goes away is `service.remove`.
        let gone = !at(ctx.after, &p).exists() || at(ctx.after, &p) == V::Unknown;
        if removable && gone && at(ctx.before, &p).exists() {
            continue;
        }
        let enable = [p.as_slice(), &["enable"]].concat();
        lose_flag(
            ctx,
            out,
            "service.disable",
            &enable,
            default,
            &format!("disables service {}", p[p.len() - 1]),
        );
    }
}

fn user_removed(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for n in names(ctx, &["users", "users"]) {
        let p = ["users", "users", n.as_str()];
        let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
        if b != V::Absent && b != a && (a == V::Absent || a == V::Unknown) {
            push(out, "user.remove", &p, b, a, &format!("removes user {n}"));
        }
    }
}

/// Users present after the change (the others are `user.remove`).
fn kept_users(ctx: &Ctx<'_>) -> Vec<String> {
    names(ctx, &["users", "users"])
        .into_iter()
        .filter(|n| matches!(at(ctx.after, &["users", "users", n]), V::Known(_)))
        .collect()
}

fn user_demoted(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
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

fn user_credentials(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for n in kept_users(ctx) {
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
            let lost = match (b.list(&[]), a.list(&[])) {
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

fn sshd_on(t: &Value) -> Option<bool> {
    at(t, &["services", "openssh", "enable"]).flag(false)
}

fn ssh_ports(t: &Value) -> Option<Vec<Value>> {
    at(t, &["services", "openssh", "ports"]).list(&[json!(22)])
}

/// `PermitRootLogin` from the most to the least permissive.
fn root_login_rank(v: V<'_>) -> Option<u8> {
    match v {
        V::Absent => Some(2),
        V::Known(Value::String(s)) => match s.as_str() {
            "yes" => Some(3),
            "prohibit-password" | "without-password" => Some(2),
            "forced-commands-only" => Some(1),
            "no" => Some(0),
            _ => None,
        },
        // Anything else is not a value sshd accepts (NixOS types it as an enum of strings).
        _ => None,
    }
}

/// The first of several spellings (`settings.X`, then the old top-level option) that is set.
fn either<'a>(t: &'a Value, paths: &[&[&str]]) -> (Vec<String>, V<'a>) {
    for p in paths {
        let v = at(t, p);
        if v != V::Absent {
            return (p.iter().map(|s| s.to_string()).collect(), v);
        }
    }
    (paths[0].iter().map(|s| s.to_string()).collect(), V::Absent)
}

fn ssh_access(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    // Turning sshd off is `service.disable`; here it stays on.
    if sshd_on(ctx.before) == Some(false) || sshd_on(ctx.after) == Some(false) {
        return;
    }
    for p in [
        &["services", "openssh", "ports"][..],
        &["services", "openssh", "listenAddresses"],
    ] {
        let (b, a) = (at(ctx.before, p), at(ctx.after, p));
        let removed = match (b.list(&[json!(22)]), a.list(&[json!(22)])) {
            (Some(old), Some(new)) => old.iter().any(|x| !new.contains(x)),
            _ => true,
        };
        if b != a && removed && !(p[2] == "listenAddresses" && b == V::Absent) {
            push(
                out,
                "ssh.access",
                p,
                b,
                a,
                "sshd stops listening where it listened",
            );
        }
    }
    let s = |k: &'static str| -> [&'static str; 4] { ["services", "openssh", "settings", k] };
    let (pb, b) = either(
        ctx.before,
        &[
            &s("PermitRootLogin"),
            &["services", "openssh", "permitRootLogin"],
        ],
    );
    let (_, a) = either(
        ctx.after,
        &[
            &s("PermitRootLogin"),
            &["services", "openssh", "permitRootLogin"],
        ],
    );
    if b != a && root_login_rank(a).is_none_or(|ra| root_login_rank(b).is_none_or(|rb| ra < rb)) {
        let pb: Vec<&str> = pb.iter().map(String::as_str).collect();
        push(
            out,
            "ssh.access",
            &pb,
            b,
            a,
            "root may no longer log in over SSH as before",
        );
    }
    for (k, old) in [
        ("PasswordAuthentication", "passwordAuthentication"),
        (
            "KbdInteractiveAuthentication",
            "kbdInteractiveAuthentication",
        ),
    ] {
        let (pb, b) = either(ctx.before, &[&s(k), &["services", "openssh", old]]);
        let (_, a) = either(ctx.after, &[&s(k), &["services", "openssh", old]]);
        if b != a && loses(b.flag(true), a.flag(true)) {
            let pb: Vec<&str> = pb.iter().map(String::as_str).collect();
            push(
                out,
                "ssh.access",
                &pb,
                b,
                a,
                "SSH logins by password stop working",
            );
        }
    }
    for k in ["AllowUsers", "AllowGroups", "DenyUsers", "DenyGroups"] {
        let p = s(k);
        let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
        if b != a {
            push(
                out,
                "ssh.access",
                &p,
                b,
                a,
                "the users allowed to log in over SSH change",
            );
        }
    }
}

/// Whether TCP `port` is reachable through the firewall of `t` (`None`: cannot be decided).
fn reachable(t: &Value, port: &Value) -> Option<bool> {
    let fw = |k: &str| at(t, &["networking", "firewall", k]);
    let mut unknown = false;
    let mut any = |x: Option<bool>| match x {
        Some(true) => true,
        Some(false) => false,
        None => {
            unknown = true;
            false
        }
    };
    let open = any(fw("enable").flag(true).map(|on| !on))
        || any(fw("allowedTCPPorts").list(&[]).map(|l| l.contains(port)))
        || any(fw("allowedTCPPortRanges").list(&[]).map(|l| {
            l.iter().any(|r| {
                port.as_i64().is_some_and(|p| {
                    r["from"].as_i64().is_some_and(|f| f <= p)
                        && r["to"].as_i64().is_some_and(|e| p <= e)
                })
            })
        }))
        || any(
            match (
                at(t, &["services", "openssh", "openFirewall"]).flag(true),
                sshd_on(t),
                ssh_ports(t),
            ) {
                (Some(of), Some(on), Some(ports)) => Some(of && on && ports.contains(port)),
                _ => None,
            },
        );
    if open {
        Some(true)
    } else if unknown {
        None
    } else {
        Some(false)
    }
}

fn firewall_ssh(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    if sshd_on(ctx.before) != Some(true) || sshd_on(ctx.after) == Some(false) {
        return;
    }
    for port in ssh_ports(ctx.before).unwrap_or_default() {
        if reachable(ctx.before, &port) == Some(true) && reachable(ctx.after, &port) != Some(true) {
            let p = ["networking", "firewall", &format!("tcp/{port}")];
            let now = decided(reachable(ctx.after, &port));
            push_values(
                out,
                "firewall.ssh",
                &p,
                json!(true),
                now,
                &format!("the firewall closes SSH port {port}"),
            );
        }
    }
}

fn removed_names(
    ctx: &Ctx<'_>,
    out: &mut Vec<Finding>,
    kind: &'static str,
    base: &[&str],
    what: &str,
) {
    let (b, a) = (at(ctx.before, base), at(ctx.after, base));
    if b == a {
        return;
    }
    for n in names(ctx, base) {
        let p = [base, &[n.as_str()]].concat();
        let (bn, an) = (at(ctx.before, &p), at(ctx.after, &p));
        if bn != V::Absent && (an == V::Absent || an == V::Unknown) && bn != an {
            push(out, kind, &p, bn, an, &format!("removes {what} {n}"));
        }
    }
    if matches!(b, V::Known(Value::Object(m)) if !m.is_empty()) && a == V::Unknown {
        push(out, kind, base, b, a, &format!("may remove every {what}"));
    }
}

fn wallet_removed(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    removed_names(
        ctx,
        out,
        "wallet.delete",
        &["services", "osmoda", "keyd", "policy", "wallets"],
        "wallet",
    );
}

fn peer_removed(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    removed_names(
        ctx,
        out,
        "mesh.peer.remove",
        &["services", "osmoda", "mesh", "peers"],
        "mesh peer",
    );
}

fn capability_removed(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    removed_names(
        ctx,
        out,
        "capability.remove",
        &["services", "osmoda", "egress", "capabilities"],
        "egress capability",
    );
}

/// Package names in a `systemPackages` list (`None` when it cannot be decided).
fn package_names(v: V<'_>) -> Option<Vec<String>> {
    v.list(&[])?
        .iter()
        .map(|p| match p {
            Value::String(s) => Some(s.clone()),
            Value::Object(_) if p["__osmoda"] == "pkg" => p["name"].as_str().map(str::to_string),
            _ => None,
        })
        .collect()
}

fn is_named(pkg: &str, critical: &str) -> bool {
    pkg == critical || pkg.rsplit('.').next() == Some(critical) || pkg.replace('.', "-") == critical
}

fn critical_packages(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let p = ["environment", "systemPackages"];
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    if b == a {
        return;
    }
    let after = package_names(a);
    for c in ctx.critical {
        let had = package_names(b).is_none_or(|l| l.iter().any(|n| is_named(n, c)));
        let has = after
            .as_ref()
            .is_some_and(|l| l.iter().any(|n| is_named(n, c)));
        if had && !has {
            let path = ["environment", "systemPackages", c.as_str()];
            let now = decided(after.as_ref().map(|_| false));
            let was = decided(package_names(b).map(|_| true));
            push_values(
                out,
                ctx.package_kind,
                &path,
                was,
                now,
                &format!("removes critical package {c}"),
            );
        }
    }
}

fn unevaluable(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for f in ctx.unevaluable {
        out.push(Finding {
            kind: "gate.undecidable",
            path: f.clone(),
            was: json!("<evaluated>"),
            now: json!("<undecidable>"),
            words: format!(
                "{f} cannot be evaluated, so the effect of changing it cannot be decided"
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const U: &str = "__osmoda";

    /// The kinds the rules report for `before` → `after` (edits; critical: openssh).
    fn kinds(before: Value, after: Value) -> Vec<&'static str> {
        kinds_with(before, after, &[], "package.remove_critical")
    }

    fn kinds_with(
        before: Value,
        after: Value,
        unevaluable: &[String],
        package_kind: &'static str,
    ) -> Vec<&'static str> {
        let critical = vec!["openssh".to_string()];
        let ctx = Ctx {
            before: &before,
            after: &after,
            unevaluable,
            critical: &critical,
            package_kind,
        };
        let mut k: Vec<&str> = findings(&ctx).iter().map(|f| f.kind).collect();
        k.dedup();
        k
    }

    fn undecidable() -> Value {
        json!({ U: "undecidable" })
    }

    fn ssh(extra: Value) -> Value {
        let mut s = json!({"services": {"openssh": {"enable": true}}, "networking": {"firewall": {"allowedTCPPorts": [22]}}});
        if let (Some(o), Some(e)) = (s.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                o.insert(k.clone(), v.clone());
            }
        }
        s
    }

    #[test]
    fn every_rule_fires_on_its_effect_and_not_on_harmless_changes() {
        let alice = json!({"isNormalUser": true, "extraGroups": ["wheel"], "openssh": {"authorizedKeys": {"keys": ["k1"]}}, "hashedPassword": "h"});
        let users = |a: Value| json!({"users": {"users": {"alice": a}}});
        let osm = |k: &str, v: Value| json!({"services": {"osmoda": {k: v}}});
        for (before, after, expected) in [
            (
                json!({"services": {"nginx": {"enable": true}}}),
                json!({"services": {}}),
                vec!["service.remove"],
            ),
            (
                json!({"services": {"nginx": {"enable": true}}}),
                json!({"services": {"nginx": {}}}),
                vec!["service.remove"],
            ),
            (
                json!({"services": {"nginx": {"enable": false}}}),
                json!({}),
                vec![],
            ),
            (
                json!({"services": {"nginx": {"enable": true}}}),
                json!({"services": {"nginx": {"enable": false}}}),
                vec!["service.disable"],
            ),
            (
                json!({"services": {"nginx": {"enable": true}}}),
                json!({"services": {"nginx": {"enable": undecidable()}}}),
                vec!["service.disable"],
            ),
            (
                json!({"services": {"nginx": {"enable": false}}}),
                json!({"services": {"nginx": {"enable": true}}}),
                vec![],
            ),
            (
                json!({}),
                json!({"systemd": {"services": {"sshd": {"enable": false}}}}),
                vec!["service.disable"],
            ),
            (
                json!({"systemd": {"services": {"app": {"script": "x"}}}}),
                json!({}),
                vec!["service.remove"],
            ),
            (
                json!({}),
                osm("watch", json!({"enable": false})),
                vec!["service.disable"],
            ),
            (
                osm("egress", json!({"capabilities": {"web": {}}})),
                osm("egress", json!({})),
                vec!["capability.remove"],
            ),
            (
                users(alice.clone()),
                json!({"users": {"users": {}}}),
                vec!["user.remove"],
            ),
            (
                users(alice.clone()),
                json!({"users": {"users": undecidable()}}),
                vec!["user.remove"],
            ),
            (
                users(alice.clone()),
                users(
                    json!({"isNormalUser": false, "extraGroups": ["wheel"], "openssh": {"authorizedKeys": {"keys": ["k1"]}}, "hashedPassword": "h"}),
                ),
                vec!["user.demote"],
            ),
            (
                users(alice.clone()),
                users(
                    json!({"isNormalUser": true, "extraGroups": [], "openssh": {"authorizedKeys": {"keys": ["k1"]}}, "hashedPassword": "h"}),
                ),
                vec!["user.demote"],
            ),
            (
                users(alice.clone()),
                users(
                    json!({"isNormalUser": true, "extraGroups": ["wheel"], "openssh": {"authorizedKeys": {"keys": ["k2"]}}, "hashedPassword": "h"}),
                ),
                vec!["user.credentials"],
            ),
            (
                users(alice.clone()),
                users(
                    json!({"isNormalUser": true, "extraGroups": ["wheel"], "openssh": {"authorizedKeys": {"keys": ["k1"]}}, "hashedPassword": "h2"}),
                ),
                vec!["user.credentials"],
            ),
            (
                users(alice.clone()),
                users(
                    json!({"isNormalUser": true, "extraGroups": ["wheel", "docker"], "openssh": {"authorizedKeys": {"keys": ["k1", "k2"]}}, "hashedPassword": "h"}),
                ),
                vec![],
            ),
            (
                ssh(json!({})),
                ssh(json!({"services": {"openssh": {"enable": true, "ports": [2222]}}})),
                vec!["ssh.access"],
            ),
            (
                ssh(json!({})),
                ssh(json!({"services": {"openssh": {"enable": true, "ports": [22, 2222]}}})),
                vec![],
            ),
            (
                ssh(json!({})),
                ssh(
                    json!({"services": {"openssh": {"enable": true, "settings": {"PermitRootLogin": "no"}}}}),
                ),
                vec!["ssh.access"],
            ),
            (
                ssh(json!({})),
                ssh(
                    json!({"services": {"openssh": {"enable": true, "settings": {"PermitRootLogin": "yes"}}}}),
                ),
                vec![],
            ),
            (
                ssh(json!({})),
                ssh(
                    json!({"services": {"openssh": {"enable": true, "settings": {"PasswordAuthentication": false}}}}),
                ),
                vec!["ssh.access"],
            ),
            (
                ssh(json!({})),
                ssh(
                    json!({"services": {"openssh": {"enable": true, "settings": {"X11Forwarding": false}}}}),
                ),
                vec![],
            ),
            // 22 stays open through openFirewall (default true) ...
            (
                ssh(json!({})),
                ssh(json!({"networking": {"firewall": {"allowedTCPPorts": []}}})),
                vec![],
            ),
            // ... unless that is off too.
            (
                ssh(json!({"services": {"openssh": {"enable": true, "openFirewall": false}}})),
                ssh(
                    json!({"services": {"openssh": {"enable": true, "openFirewall": false}}, "networking": {"firewall": {"allowedTCPPorts": [80]}}}),
                ),
                vec!["firewall.ssh"],
            ),
            (
                ssh(
                    json!({"services": {"openssh": {"enable": true, "openFirewall": false}}, "networking": {"firewall": {"enable": false}}}),
                ),
                ssh(
                    json!({"services": {"openssh": {"enable": true, "openFirewall": false}}, "networking": {"firewall": {"enable": true, "allowedTCPPortRanges": [{"from": 20, "to": 30}]}}}),
                ),
                vec![],
            ),
            (
                osm("keyd", json!({"policy": {"wallets": {"main": {}}}})),
                osm("keyd", json!({"policy": {"wallets": {}}})),
                vec!["wallet.delete"],
            ),
            (
                osm("mesh", json!({"peers": {"a": {}, "b": {}}})),
                osm("mesh", json!({"peers": {"a": {}}})),
                vec!["mesh.peer.remove"],
            ),
            (
                osm("mesh", json!({"peers": {"a": {}}})),
                osm("mesh", json!({"peers": undecidable()})),
                vec!["mesh.peer.remove"],
            ),
            (
                osm("mesh", json!({"peers": {"a": {}}})),
                osm("mesh", json!({"peers": {"a": {}, "b": {}}})),
                vec![],
            ),
            (
                json!({"environment": {"systemPackages": [{U: "pkg", "name": "openssh"}, "git"]}}),
                json!({"environment": {"systemPackages": ["git"]}}),
                vec!["package.remove_critical"],
            ),
            (
                json!({"environment": {"systemPackages": [{U: "pkg", "name": "openssh"}]}}),
                json!({"environment": {"systemPackages": [undecidable()]}}),
                vec!["package.remove_critical"],
            ),
            (
                json!({"environment": {"systemPackages": ["git"]}}),
                json!({"environment": {"systemPackages": []}}),
                vec![],
            ),
        ] {
            assert_eq!(
                kinds(before.clone(), after.clone()),
                expected,
                "{before} → {after}"
            );
        }
    }

    #[test]
    fn switches_report_critical_packages_as_their_own_kind_and_unevaluable_modules_are_gated() {
        let b = json!({"environment": {"systemPackages": [{U: "pkg", "name": "openssh"}]}});
        let a = json!({});
        assert_eq!(
            kinds_with(b, a, &[], "switch.remove_critical"),
            vec!["switch.remove_critical"]
        );
        let f = vec!["hosts/web.nix".to_string()];
        assert_eq!(
            kinds_with(json!({}), json!({}), &f, "package.remove_critical"),
            vec!["gate.undecidable"]
        );
    }

    #[test]
    fn every_rule_in_the_table_has_a_distinct_kind() {
        let mut k: Vec<&str> = RULES.iter().map(|r| r.kind).collect();
        k.sort();
        k.dedup();
        assert_eq!(k.len(), RULES.len());
        for r in RULES {
            assert!(
                crate::gate::DEFAULT_REQUIRED.contains(&r.kind),
                "{} is gated by default",
                r.kind
            );
        }
    }
}
