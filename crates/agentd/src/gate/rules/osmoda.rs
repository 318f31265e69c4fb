//! osModa's own things (wallets, mesh peers, egress capabilities), critical packages and
//! modules that cannot be evaluated.

use serde_json::Value;

use super::*;

pub(super) fn removed_names(
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

pub(super) fn wallet_removed(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    removed_names(
        ctx,
        out,
        "wallet.delete",
        &["services", "osmoda", "keyd", "policy", "wallets"],
        "wallet",
    );
}

pub(super) fn peer_removed(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    removed_names(
        ctx,
        out,
        "mesh.peer.remove",
        &["services", "osmoda", "mesh", "peers"],
        "mesh peer",
    );
}

pub(super) fn capability_removed(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    removed_names(
        ctx,
        out,
        "capability.remove",
        &["services", "osmoda", "egress", "capabilities"],
        "egress capability",
    );
}

/// Package names in a `systemPackages` list (`None` when it cannot be decided).
pub(super) fn package_names(v: V<'_>) -> Option<Vec<String>> {
    v.list(&[])?
        .iter()
        .map(|p| match p {
            Value::String(s) => Some(s.clone()),
            Value::Object(_) if p["__osmoda"] == "pkg" => p["name"].as_str().map(str::to_string),
            _ => None,
        })
        .collect()
}

pub(super) fn is_named(pkg: &str, critical: &str) -> bool {
    pkg == critical || pkg.rsplit('.').next() == Some(critical) || pkg.replace('.', "-") == critical
}

pub(super) fn critical_packages(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    replaced(
        ctx,
        out,
        ctx.package_kind,
        &["environment", "systemPackages"],
        "the packages NixOS itself installs (nix, systemd, openssh, …) leave the system",
    );
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

/// The name [`unevaluable`] gets for a change of `disabledModules` entries outside the tree.
pub const DISABLED_ELSEWHERE: &str = "disabledModules";

/// Names the finding of `imports` entries the gate cannot read (modules outside the tree,
/// strings) that were added or removed.
pub const FOREIGN_IMPORTS: &str = "imports";

/// How [`unevaluable`] names a file read (`readFile`) by a module with a value the gate cannot
/// decide.
pub fn read_by(file: &str, module: &str) -> String {
    format!("{file} (read by {module})")
}

/// A `specialisation` is a second system (a boot entry, one `switch-to-configuration` away)
/// whose configuration the gate does not judge: any change of one is undecidable.
fn specialisations(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let base = ["specialisation"];
    let (b, a) = (at(ctx.before, &base), at(ctx.after, &base));
    let words = "a specialisation is a second system (a boot entry, and one switch-to-configuration away) whose configuration the gate does not judge";
    if b != a {
        let names = names(ctx, &base);
        if names.is_empty() || a == V::Unknown || b == V::Unknown {
            push(out, "gate.undecidable", &base, b, a, words);
        }
        for n in names {
            let p = ["specialisation", n.as_str()];
            let (bn, an) = (at(ctx.before, &p), at(ctx.after, &p));
            if bn != an {
                push(out, "gate.undecidable", &p, bn, an, words);
            }
        }
    }
    for o in ctx
        .opaque
        .iter()
        .filter(|o| o.path.first().is_some_and(|f| f == "specialisation"))
    {
        out.push(Finding {
            kind: "gate.undecidable",
            path: format!("{} in {}", o.path.join("."), o.file),
            was: o.was.clone(),
            now: o.now.clone(),
            words: format!("{words}; it holds values the gate cannot read, so it is bound to the text of {}, which changes", o.file),
        });
    }
}

pub(super) fn unevaluable(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    specialisations(ctx, out);
    for (f, was, now) in ctx.unevaluable {
        let words = if let Some((file, module)) =
            f.strip_suffix(')').and_then(|x| x.split_once(" (read by "))
        {
            format!("{file} is read (readFile) by {module}, which has a value the gate cannot decide, so the effect of rewriting it cannot be decided")
        } else if f == DISABLED_ELSEWHERE {
            "disabledModules changes which modules outside the tree are turned off, so the effect cannot be decided".to_string()
        } else if f == FOREIGN_IMPORTS {
            format!("imports a module the gate cannot read (outside the tree, a string, a computed value, or a module `key`, which decides the modules NixOS keeps: {was} → {now}), so its effect cannot be decided")
        } else {
            format!("{f} cannot be evaluated, so the effect of changing it cannot be decided")
        };
        out.push(Finding {
            kind: "gate.undecidable",
            path: f.clone(),
            was: was.clone(),
            now: now.clone(),
            words,
        });
    }
}
