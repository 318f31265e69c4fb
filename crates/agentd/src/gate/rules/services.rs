//! Services: a block removed or an `enable` lost.

use super::*;

/// Service blocks: `services.<name>`, `services.osmoda.<daemon>` and `systemd.services.<name>`,
/// with the default of their `enable`.
/// The osModa daemons under `services.osmoda` are settings blocks: removing one is not removing
/// the service (their `enable` has its own default), so only their `enable` is checked.
pub(super) fn services(ctx: &Ctx<'_>) -> Vec<(Vec<String>, bool, bool)> {
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
    // A unit by its file name (`systemd.units."sshd.service".enable = false`): NixOS defines the
    // unit itself, so only its `enable` is the tree's.
    for n in names(ctx, &["systemd", "units"]) {
        out.push((vec!["systemd".into(), "units".into(), n], true, false));
    }
    out
}

/// Unit kinds a tree defines whose `conflicts` can stop another unit.
const UNIT_KINDS: &[(&str, &str)] = &[
    ("services", "service"),
    ("sockets", "socket"),
    ("targets", "target"),
    ("timers", "timer"),
    ("paths", "path"),
];

/// The units `t`'s unit at `path` conflicts with (`conflicts`, `unitConfig.Conflicts`); `None`
/// when that cannot be decided.
fn conflicts(t: &Value, path: &[&str]) -> Option<Vec<Value>> {
    let mut out = Vec::new();
    for field in [&["conflicts"][..], &["unitConfig", "Conflicts"]] {
        let p = [path, field].concat();
        match at(t, &p) {
            V::Absent => {}
            V::Known(Value::String(s)) => out.extend(s.split_whitespace().map(Value::from)),
            v => out.extend(v.list(&[])?),
        }
    }
    Some(out)
}

/// Conflicting with these stops nothing that runs (it only orders stopping at shutdown).
const STOPS_NOTHING: &[&str] = &[
    "shutdown.target",
    "halt.target",
    "poweroff.target",
    "reboot.target",
    "kexec.target",
    "final.target",
    "umount.target",
    "emergency.target",
    "emergency.service",
    "rescue.target",
    "rescue.service",
];

/// Starting a unit stops every unit it conflicts with: a unit (new or changed) that comes to
/// conflict with another stops that one (`service.disable` of the unit stopped).
fn service_conflicts(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for (kind, suffix) in UNIT_KINDS {
        for n in names(ctx, &["systemd", kind]) {
            let p = ["systemd", kind, n.as_str()];
            let (b, a) = (conflicts(ctx.before, &p), conflicts(ctx.after, &p));
            if b == a {
                continue;
            }
            let old = b.clone().unwrap_or_default();
            let gained: Vec<Value> = match a {
                Some(new) => new.into_iter().filter(|u| !old.contains(u)).collect(),
                None => vec![json!("<undecidable>")],
            };
            // Units that conflict with the shutdown targets stop at shutdown: nothing is stopped.
            let harmless = |u: &Value| u.as_str().is_some_and(|u| STOPS_NOTHING.contains(&u));
            for u in gained.into_iter().filter(|u| !harmless(u)) {
                let name = u.as_str().unwrap_or("<undecidable>");
                let stopped = ["systemd", "conflicts", name];
                push_values(
                    out,
                    "service.disable",
                    &stopped,
                    decided(b.clone()),
                    json!(format!("{n}.{suffix}")),
                    &format!("starting {n}.{suffix} stops {name}, which it now conflicts with"),
                );
            }
        }
    }
}

pub(super) fn service_removed(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    replaced(
        ctx,
        out,
        "service.remove",
        &["systemd"],
        "every unit NixOS itself defines (sshd, …) goes away",
    );
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

pub(super) fn service_disabled(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    service_conflicts(ctx, out);
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
