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
    networkd(ctx, out);
}

/// systemd-networkd settings (relative to a unit) that cannot take an address away.
const HARMLESS_NETWORKD: &[&str] = &[
    "dns",
    "ntp",
    "domains",
    "networkConfig.DNS",
    "networkConfig.NTP",
    "networkConfig.Domains",
    "networkConfig.LLMNR",
    "networkConfig.MulticastDNS",
    "networkConfig.DNSSEC",
    "networkConfig.DNSOverTLS",
    "linkConfig.RequiredForOnline",
];

/// systemd-networkd, where it runs (`systemd.network.enable` or `networking.useNetworkd` on
/// either side): a `.network`, `.netdev` or `.link` unit removed, added (a new unit can match
/// the interface first and take its configuration over) or changed beyond DNS/NTP settings, or
/// networkd turned off.
fn networkd(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    // On when either switch is on; off only when both are known to be off.
    let on = |t: &Value| {
        let flags = [
            at(t, &["systemd", "network", "enable"]).flag(false),
            at(t, &["networking", "useNetworkd"]).flag(false),
        ];
        if flags.contains(&Some(true)) {
            Some(true)
        } else if flags.iter().all(|f| *f == Some(false)) {
            Some(false)
        } else {
            None
        }
    };
    if on(ctx.before) == Some(false) && on(ctx.after) == Some(false) {
        return;
    }
    lose_flag(
        ctx,
        out,
        "ssh.access",
        &["systemd", "network", "enable"],
        false,
        "systemd-networkd stops, so the machine may lose its address",
    );
    for kind in ["networks", "netdevs", "links"] {
        let base = ["systemd", "network", kind];
        let (b, a) = (at(ctx.before, &base), at(ctx.after, &base));
        if b == a {
            continue;
        }
        if a == V::Unknown || b == V::Unknown {
            push(
                out,
                "ssh.access",
                &base,
                b,
                a,
                "systemd-networkd's units may change, so the machine may lose its address",
            );
            continue;
        }
        for n in names(ctx, &base) {
            let p = [&base[..], &[n.as_str()]].concat();
            let (bn, an) = (at(ctx.before, &p), at(ctx.after, &p));
            if bn == an {
                continue;
            }
            let (mut old, mut new) = (
                std::collections::BTreeMap::new(),
                std::collections::BTreeMap::new(),
            );
            super::boot::leaves(bn, "", &mut old);
            super::boot::leaves(an, "", &mut new);
            let harmless = |k: &String| {
                HARMLESS_NETWORKD
                    .iter()
                    .any(|h| k == h || k.starts_with(&format!("{h}.")))
            };
            let changed = old
                .keys()
                .chain(new.keys())
                .filter(|k| !harmless(k))
                .any(|k| old.get(k) != new.get(k));
            if changed {
                push(
                    out,
                    "ssh.access",
                    &p,
                    bn,
                    an,
                    &format!(
                        "systemd-networkd unit {n} changes, so the machine may lose its address"
                    ),
                );
            }
        }
    }
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
