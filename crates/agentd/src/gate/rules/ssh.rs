//! Remote access: sshd and the firewall in front of it.

use serde_json::{json, Value};

use super::*;

pub(super) fn sshd_on(t: &Value) -> Option<bool> {
    at(t, &["services", "openssh", "enable"]).flag(false)
}

pub(super) fn ssh_ports(t: &Value) -> Option<Vec<Value>> {
    at(t, &["services", "openssh", "ports"]).list(&[json!(22)])
}

/// `PermitRootLogin` from the most to the least permissive.
pub(super) fn root_login_rank(v: V<'_>) -> Option<u8> {
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
pub(super) fn either<'a>(t: &'a Value, paths: &[&[&str]]) -> (Vec<String>, V<'a>) {
    for p in paths {
        let v = at(t, p);
        if v != V::Absent {
            return (p.iter().map(|s| s.to_string()).collect(), v);
        }
    }
    (paths[0].iter().map(|s| s.to_string()).collect(), V::Absent)
}

/// `sshd_config` keywords that cannot end a login that works today (matched case-insensitively,
/// in `settings` and in `extraConfig` lines). Any other keyword changed needs approval:
/// `DenyUsers *`, `Match`, `AuthenticationMethods`, ciphers, ... can all lock a person out.
const HARMLESS_SSHD: &[&str] = &[
    "acceptenv",
    "allowagentforwarding",
    "allowstreamlocalforwarding",
    "allowtcpforwarding",
    "banner",
    "clientalivecountmax",
    "clientaliveinterval",
    "compression",
    "gatewayports",
    "loglevel",
    "maxsessions",
    "permittunnel",
    "permituserenvironment",
    "printlastlog",
    "printmotd",
    "streamlocalbindunlink",
    "syslogfacility",
    "tcpkeepalive",
    "usedns",
    "x11displayoffset",
    "x11forwarding",
    "x11uselocalhost",
    "xauthlocation",
];

/// Keywords the other checks of [`ssh_access`] judge by their value.
const JUDGED_SSHD: &[&str] = &[
    "permitrootlogin",
    "passwordauthentication",
    "kbdinteractiveauthentication",
    "pubkeyauthentication",
    "allowusers",
    "allowgroups",
    "denyusers",
    "denygroups",
];

pub(super) fn ssh_access(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    // Without an address nothing reaches the machine, sshd or not.
    super::network::network_access(ctx, out);
    replaced(
        ctx,
        out,
        "ssh.access",
        &["environment", "etc"],
        "the /etc files NixOS writes (ssh/sshd_config, pam.d, passwd, …) go away",
    );
    replaced(
        ctx,
        out,
        "ssh.access",
        &["security", "pam", "services"],
        "the PAM services NixOS defines (sshd, login, sudo, …) go away",
    );
    // Turning sshd off is `service.disable`; here it stays on.
    if sshd_on(ctx.before) == Some(false) || sshd_on(ctx.after) == Some(false) {
        return;
    }
    let p = ["services", "openssh", "ports"];
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    let removed = match (b.list(&[json!(22)]), a.list(&[json!(22)])) {
        (Some(old), Some(new)) => old.iter().any(|x| !new.contains(x)),
        _ => true,
    };
    if b != a && removed {
        push(
            out,
            "ssh.access",
            &p,
            b,
            a,
            "sshd stops listening where it listened",
        );
    }
    // No listen address (`[ ]`, the default) is every address: any list narrows it.
    let p = ["services", "openssh", "listenAddresses"];
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    let narrowed = match (b.list(&[]), a.list(&[])) {
        (Some(old), Some(new)) => {
            !new.is_empty() && (old.is_empty() || old.iter().any(|x| !new.contains(x)))
        }
        _ => true,
    };
    if b != a && narrowed {
        push(
            out,
            "ssh.access",
            &p,
            b,
            a,
            "sshd stops listening on addresses it listened on (an empty list is every address; loopback alone is unreachable from outside)",
        );
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
    pubkeys_and_key_files(ctx, out);
    other_settings(ctx, out);
    sshd_units(ctx, out);
    super::users::pam(ctx, out, &["sshd", "login"], "ssh.access");
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

/// Key logins: `PubkeyAuthentication` turned off, an authorized-keys file or command changed.
fn pubkeys_and_key_files(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let s = |k: &'static str| -> [&'static str; 4] { ["services", "openssh", "settings", k] };
    let (pb, b) = either(ctx.before, &[&s("PubkeyAuthentication")]);
    let (_, a) = either(ctx.after, &[&s("PubkeyAuthentication")]);
    if b != a && loses(b.flag(true), a.flag(true)) {
        let pb: Vec<&str> = pb.iter().map(String::as_str).collect();
        push(
            out,
            "ssh.access",
            &pb,
            b,
            a,
            "SSH logins by key stop working",
        );
    }
    let o = |k: &'static str| -> [&'static str; 3] { ["services", "openssh", k] };
    let files = o("authorizedKeysFiles");
    let (b, a) = (at(ctx.before, &files), at(ctx.after, &files));
    let lost = match (b.list(&[]), a.list(&[])) {
        (Some(old), Some(new)) => old.iter().any(|x| !new.contains(x)),
        _ => true,
    };
    if b != a && lost {
        push(
            out,
            "ssh.access",
            &files,
            b,
            a,
            "sshd stops reading an authorized-keys file",
        );
    }
    lose_flag(
        ctx,
        out,
        "ssh.access",
        &o("authorizedKeysInHomedir"),
        true,
        "sshd stops reading ~/.ssh/authorized_keys",
    );
    for p in [
        &s("AuthorizedKeysFile")[..],
        &o("authorizedKeysCommand"),
        &o("authorizedKeysCommandUser"),
        &o("package"),
        &o("startWhenNeeded"),
    ] {
        let (b, a) = (at(ctx.before, p), at(ctx.after, p));
        if b != a {
            push(
                out,
                "ssh.access",
                p,
                b,
                a,
                "how sshd runs or finds keys changes",
            );
        }
    }
}

/// `settings` keys and `extraConfig` lines other than those judged by value: a change of any
/// keyword that is not known to be harmless needs approval.
fn other_settings(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let settings = ["services", "openssh", "settings"];
    let (sb, sa) = (at(ctx.before, &settings), at(ctx.after, &settings));
    if sb != sa {
        for k in names(ctx, &settings) {
            let lower = k.to_ascii_lowercase();
            if HARMLESS_SSHD.contains(&lower.as_str())
                || JUDGED_SSHD.contains(&lower.as_str())
                || lower == "authorizedkeysfile"
            {
                continue;
            }
            let p = ["services", "openssh", "settings", k.as_str()];
            let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
            if b != a {
                push(
                    out,
                    "ssh.access",
                    &p,
                    b,
                    a,
                    "an sshd setting that can refuse logins changes",
                );
            }
        }
    }
    let p = ["services", "openssh", "extraConfig"];
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    if b == a {
        return;
    }
    let lines = |v: V<'_>| -> Option<Vec<String>> {
        match v {
            V::Absent | V::Known(Value::Null) => Some(Vec::new()),
            V::Known(Value::String(s)) => Some(
                s.lines()
                    .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .collect(),
            ),
            _ => None,
        }
    };
    let risky = match (lines(b), lines(a)) {
        (Some(old), Some(new)) => old
            .iter()
            .filter(|l| !new.contains(l))
            .chain(new.iter().filter(|l| !old.contains(l)))
            .any(|l| {
                let word = l.split([' ', '=']).next().unwrap_or_default();
                !HARMLESS_SSHD.contains(&word.to_ascii_lowercase().as_str())
            }),
        _ => true,
    };
    if risky {
        push(
            out,
            "ssh.access",
            &p,
            b,
            a,
            "sshd's extra configuration changes in a way that can refuse logins",
        );
    }
}

/// sshd's systemd units: anything set on `systemd.services.sshd` other than `enable` (judged as
/// `service.disable`), or on `systemd.sockets.sshd`, changes how sshd starts (`ExecStart`,
/// `wantedBy`, ...).
fn sshd_units(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    if sshd_on(ctx.before) == Some(false) || sshd_on(ctx.after) == Some(false) {
        return;
    }
    for base in [
        &["systemd", "services", "sshd"][..],
        &["systemd", "sockets", "sshd"],
    ] {
        let (b, a) = (at(ctx.before, base), at(ctx.after, base));
        if b == a {
            continue;
        }
        let strip = |v: V<'_>| match v {
            V::Known(Value::Object(m)) => {
                let mut m = m.clone();
                m.remove("enable");
                Some(Value::Object(m))
            }
            V::Absent => Some(Value::Object(Default::default())),
            _ => None,
        };
        let (sb, sa) = (strip(b), strip(a));
        if sb.is_none() || sa.is_none() || sb != sa {
            push(
                out,
                "ssh.access",
                base,
                b,
                a,
                "sshd's systemd unit changes how (or whether) sshd starts",
            );
        }
    }
}

/// Custom firewall rules (iptables commands, nftables rules) can drop the SSH port whatever
/// the allowed ports say: while sshd is on, a change of them needs approval.
fn firewall_rules(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    if sshd_on(ctx.before) == Some(false) || sshd_on(ctx.after) == Some(false) {
        return;
    }
    for p in [
        &["networking", "firewall", "extraCommands"][..],
        &["networking", "firewall", "extraInputRules"],
        &["networking", "firewall", "extraPackages"],
        &["networking", "firewall", "backend"],
        &["networking", "firewall", "package"],
        &["networking", "nftables", "enable"],
        &["networking", "nftables", "ruleset"],
        &["networking", "nftables", "rulesetFile"],
        &["networking", "nftables", "tables"],
        &["networking", "nftables", "flushRuleset"],
    ] {
        let (b, a) = (at(ctx.before, p), at(ctx.after, p));
        let empty = |v: V<'_>| match v {
            V::Absent | V::Known(Value::Null) => true,
            V::Known(Value::String(s)) => s.is_empty(),
            _ => false,
        };
        if b != a && !(empty(b) && empty(a)) {
            push(
                out,
                "firewall.ssh",
                p,
                b,
                a,
                "custom firewall rules change; they can drop the SSH port",
            );
        }
    }
}

/// Whether TCP `port` is reachable through the firewall of `t` (`None`: cannot be decided);
/// `forced`: the collections `t` replaces (a forced `allowedTCPPorts` drops the port sshd's
/// `openFirewall` adds).
pub(super) fn reachable(
    t: &Value,
    forced: &super::super::forced::Forced,
    port: &Value,
) -> Option<bool> {
    let replaced =
        |k: &str| forced.contains(&["networking", "firewall", k].map(String::from).to_vec());
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
        // Per-interface openings and trusted interfaces count: a person may come in through one.
        || any(match fw("interfaces") {
            V::Absent => Some(false),
            V::Known(Value::Object(m)) => m
                .values()
                .map(|i| at(i, &["allowedTCPPorts"]).list(&[]).map(|l| l.contains(port)))
                .try_fold(false, |acc, x| x.map(|x| acc || x)),
            _ => None,
        })
        || any(fw("trustedInterfaces").list(&[]).map(|l| !l.is_empty()))
        || any(
            match (
                at(t, &["services", "openssh", "openFirewall"])
                    .flag(true)
                    .map(|of| of && !replaced("allowedTCPPorts")),
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

pub(super) fn firewall_ssh(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    firewall_rules(ctx, out);
    if sshd_on(ctx.before) != Some(true) || sshd_on(ctx.after) == Some(false) {
        return;
    }
    for port in ssh_ports(ctx.before).unwrap_or_default() {
        if reachable(ctx.before, ctx.forced_before, &port) == Some(true)
            && reachable(ctx.after, ctx.forced_after, &port) != Some(true)
        {
            let p = ["networking", "firewall", &format!("tcp/{port}")];
            let now = decided(reachable(ctx.after, ctx.forced_after, &port));
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
