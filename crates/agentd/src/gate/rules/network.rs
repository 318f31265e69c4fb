//! Reaching the machine at all: addresses, DHCP and the network stack. Losing them ends every
//! remote login, so they are reported as `ssh.access`.

use serde_json::Value;

use super::*;

/// The flags that keep an address: `(path, default)`.
const FLAGS: &[(&[&str], bool)] = &[
    (&["networking", "useDHCP"], true),
    (&["networking", "dhcpcd", "enable"], true),
    (&["networking", "networkmanager", "enable"], false),
];

pub(super) fn network_access(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for (p, default) in FLAGS {
        lose_flag(
            ctx,
            out,
            "ssh.access",
            p,
            *default,
            "the machine may stop getting a network address",
        );
    }
    let p = ["networking", "useNetworkd"];
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    if b.flag(false) != a.flag(false) || (b != a && a.flag(false).is_none()) {
        push(
            out,
            "ssh.access",
            &p,
            b,
            a,
            "the machine's network stack changes",
        );
    }
    for p in [
        ["networking", "defaultGateway"],
        ["networking", "defaultGateway6"],
    ] {
        let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
        if b != a {
            push(
                out,
                "ssh.access",
                &p,
                b,
                a,
                "the default route changes, so the machine may become unreachable",
            );
        }
    }
    interfaces(ctx, out);
}

/// Whether an interface gets its address by DHCP: its own `useDHCP`, else the global one.
fn dhcp(t: &Value, name: &str) -> Option<bool> {
    match at(t, &["networking", "interfaces", name, "useDHCP"]) {
        V::Absent | V::Known(Value::Null) => at(t, &["networking", "useDHCP"]).flag(true),
        v => v.flag(false),
    }
}

fn interfaces(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let base = ["networking", "interfaces"];
    let (b, a) = (at(ctx.before, &base), at(ctx.after, &base));
    if b == a {
        return;
    }
    if a == V::Unknown && b != V::Absent {
        push(
            out,
            "ssh.access",
            &base,
            b,
            a,
            "the network interfaces may lose their addresses",
        );
        return;
    }
    for n in names(ctx, &base) {
        let p = [&base[..], &[n.as_str()]].concat();
        let (bn, an) = (at(ctx.before, &p), at(ctx.after, &p));
        if bn == an {
            continue;
        }
        let mut lost = bn.exists() && !an.exists();
        lost |= loses(dhcp(ctx.before, &n), dhcp(ctx.after, &n)) && bn.exists();
        for v in ["ipv4", "ipv6"] {
            let q = [&p[..], &[v, "addresses"]].concat();
            lost |= match (at(ctx.before, &q).list(&[]), at(ctx.after, &q).list(&[])) {
                (Some(old), Some(new)) => old.iter().any(|x| !new.contains(x)),
                (Some(old), None) => !old.is_empty(),
                (None, _) => true,
            };
        }
        if lost {
            push(
                out,
                "ssh.access",
                &p,
                bn,
                an,
                &format!("interface {n} may lose its address"),
            );
        }
    }
}
