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
    out
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
