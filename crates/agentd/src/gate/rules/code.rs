//! Code the configuration runs as root, or as an account people log in with: a unit's script
//! and `Exec*` lines, activation scripts, boot, power and network hooks, cron jobs, udev `RUN`
//! rules, tmpfiles rules on login paths, and what `pkgs.X` is (overlays, `packageOverrides`,
//! `_module.args`). A program can do anything (`systemctl stop sshd`, `rm -r ~/.ssh`) and the
//! gate cannot judge what it does, so new or changed root code needs a person; code that runs
//! as a service account does not, nor does removing code.

use std::path::Path;

use serde_json::{json, Value};

use super::*;
use crate::api::secrets::{contains_login_path, Homes};

/// A unit's settings (relative to the unit) that are, or choose, the code it runs.
const UNIT_CODE: &[&str] = &[
    "script",
    "preStart",
    "postStart",
    "preStop",
    "postStop",
    "reload",
    "path",
    "environment",
];

/// `Exec*` lines of a unit's section (`serviceConfig`, `socketConfig`).
const EXEC: &[&str] = &[
    "ExecStart",
    "ExecStartPre",
    "ExecStartPost",
    "ExecCondition",
    "ExecReload",
    "ExecStop",
    "ExecStopPre",
    "ExecStopPost",
];

/// Other settings of the section that decide what runs (environment, root directory).
const SECTION_CODE: &[&str] = &[
    "Environment",
    "EnvironmentFile",
    "ExecSearchPath",
    "RootDirectory",
    "RootImage",
];

/// Settings of the section that decide who the code runs as.
const WHO: &[&str] = &[
    "User",
    "Group",
    "DynamicUser",
    "PermissionsStartOnly",
    "AmbientCapabilities",
    "SupplementaryGroups",
];

/// Ambient capabilities a service account may hold without being root in effect.
const HARMLESS_CAPS: &[&str] = &["CAP_NET_BIND_SERVICE"];

/// Unit collections: `(path, section holding Exec* and User, runs as each logged-in user)`.
const UNITS: &[(&[&str], &str, bool)] = &[
    (&["systemd", "services"], "serviceConfig", false),
    (&["systemd", "sockets"], "socketConfig", false),
    (&["systemd", "user", "services"], "serviceConfig", true),
];

/// Whether a name is one of osModa's own accounts or groups (`osmoda`, `osmoda-gateway`,
/// `osmoda-relay`, `osmoda-keyd`, …, all defined by the module): they carry standing no other
/// service account has — the gateway's user may pass on a person's decision through agentd's
/// approval relay, keyd's user holds the wallets — so code running as them counts as root code.
/// Found by the fresh review of issue 8 (thirteenth session, H2): a unit with
/// `User = "osmoda-gateway"` approved the agent's own ticket through the relay.
fn osmoda_standing(name: &str) -> bool {
    name == "osmoda" || name.starts_with("osmoda-")
}

/// Whether account `u` of tree `t` is root, one people log in with (`uid = 0`, a normal user,
/// in wheel) or one of osModa's own ([`osmoda_standing`]); any other account the tree does not
/// define is a service account NixOS or a package defines. `None`: cannot be decided.
fn account_privileged(t: &Value, u: &str) -> Option<bool> {
    // systemd strips the blanks around `User=`; a number is a uid, which may be any account's
    // (the gateway's, root's): it counts as one with standing.
    let u = u.trim();
    if u == "root" || u.parse::<u32>().is_ok() || osmoda_standing(u) {
        return Some(true);
    }
    let base = ["users", "users", u];
    match at(t, &base) {
        V::Absent => return Some(false),
        V::Unknown => return None,
        V::Known(_) => {}
    }
    let field = |k: &str| at(t, &[&base[..], &[k]].concat());
    match field("uid") {
        V::Known(Value::Number(n)) if n.as_u64() == Some(0) => return Some(true),
        V::Unknown => return None,
        _ => {}
    }
    if field("isNormalUser").flag(false)? {
        return Some(true);
    }
    Some(field("extraGroups").list(&[])?.contains(&json!("wheel")))
}

/// The strings of a value that is a string or a list of them (`None`: anything else).
fn strings(v: V<'_>) -> Option<Vec<String>> {
    match v {
        V::Absent | V::Known(Value::Null) => Some(Vec::new()),
        V::Known(Value::String(s)) => Some(vec![s.clone()]),
        V::Known(Value::Array(a)) => a.iter().map(|x| x.as_str().map(str::to_string)).collect(),
        _ => None,
    }
}

/// Whether the unit at `unit` runs its code as root or as a login account: no `User` (and no
/// `DynamicUser`), `User` naming such an account, an `Exec*` line prefixed `+` or `!` (full
/// privileges whatever `User` says), `PermissionsStartOnly`, ambient capabilities beyond
/// binding low ports, or wheel or one of osModa's groups as its group or a supplementary group.
/// User units run as each user.
fn privileged(t: &Value, unit: &[&str], section: &str, per_user: bool) -> Option<bool> {
    if per_user {
        return Some(true);
    }
    let s = |k: &str| at(t, &[unit, &[section, k]].concat());
    for f in EXEC {
        let lines = strings(s(f))?;
        let elevated = lines.iter().any(|l| {
            l.chars()
                .take_while(|c| "@-:+!|".contains(*c))
                .any(|c| c == '+' || c == '!')
        });
        if elevated {
            return Some(true);
        }
    }
    if s("PermissionsStartOnly").flag(false)? {
        return Some(true);
    }
    let caps = strings(s("AmbientCapabilities"))?;
    if caps
        .iter()
        .flat_map(|c| c.split_whitespace())
        .any(|c| !HARMLESS_CAPS.contains(&c.trim_start_matches('~')))
    {
        return Some(true);
    }
    let mut groups = strings(s("SupplementaryGroups"))?;
    groups.extend(strings(s("Group"))?);
    if groups
        .iter()
        .flat_map(|g| g.split_whitespace())
        .any(|g| g == "wheel" || g.parse::<u32>().is_ok() || osmoda_standing(g))
    {
        return Some(true);
    }
    let dynamic = s("DynamicUser").flag(false)?;
    match s("User") {
        V::Absent | V::Known(Value::Null) => Some(!dynamic),
        V::Known(Value::String(u)) => account_privileged(t, u),
        _ => None,
    }
}

/// The code settings of a unit (empty values left out); `None` when one cannot be decided.
fn unit_code(t: &Value, unit: &[&str], section: &str) -> Option<Value> {
    let mut m = serde_json::Map::new();
    let fields = UNIT_CODE.iter().map(|f| (vec![*f], f.to_string())).chain(
        EXEC.iter()
            .chain(SECTION_CODE)
            .map(|f| (vec![section, *f], format!("{section}.{f}"))),
    );
    for (rel, key) in fields {
        match at(t, &[unit, &rel[..]].concat()) {
            V::Absent | V::Known(Value::Null) => {}
            V::Known(Value::String(s)) if s.is_empty() => {}
            V::Known(Value::Array(a)) if a.is_empty() => {}
            V::Known(Value::Object(o)) if o.is_empty() => {}
            V::Known(v) => {
                m.insert(key, v.clone());
            }
            V::Unknown => return None,
        }
    }
    Some(Value::Object(m))
}

/// The code a unit runs as root (or a login account): `Some(None)` none (no code, turned off,
/// or a service account), `None` when that cannot be decided.
fn unit_root_code(
    t: &Value,
    unit: &[&str],
    section: &str,
    per_user: bool,
) -> Option<Option<Value>> {
    let p = privileged(t, unit, section, per_user);
    if p == Some(false) {
        return Some(None);
    }
    let code = unit_code(t, unit, section)?;
    if code.as_object().is_none_or(serde_json::Map::is_empty) {
        return Some(None);
    }
    if !at(t, &[unit, &["enable"]].concat()).flag(true)? {
        return Some(None);
    }
    p?;
    Some(Some(code))
}

fn shown(v: &Option<Option<Value>>) -> Value {
    match v {
        None => json!("<undecidable>"),
        Some(None) => json!("<none>"),
        Some(Some(c)) => c.clone(),
    }
}

fn units(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for (base, section, per_user) in UNITS {
        let (b, a) = (at(ctx.before, base), at(ctx.after, base));
        if b == a {
            continue;
        }
        if a == V::Unknown {
            push(
                out,
                "code.root",
                base,
                b,
                a,
                "units that cannot be decided may run code as root",
            );
            continue;
        }
        for n in names(ctx, base) {
            let unit = [*base, &[n.as_str()]].concat();
            let rb = unit_root_code(ctx.before, &unit, section, *per_user);
            let ra = unit_root_code(ctx.after, &unit, section, *per_user);
            if ra == Some(None) || rb == ra {
                continue;
            }
            push_values(
                out,
                "code.root",
                &unit,
                shown(&rb),
                shown(&ra),
                &format!(
                    "unit {n} runs new or changed code as root (or as a login account); the gate cannot judge what a program does (it may stop sshd or remove keys)"
                ),
            );
        }
    }
}

/// Hooks that run as root (or as every user), each entry of which is code.
const HOOKS: &[(&[&str], &str)] = &[
    (
        &["system", "activationScripts"],
        "an activation script (runs as root at every switch and boot)",
    ),
    (
        &["system", "userActivationScripts"],
        "a user activation script (runs as every user at activation)",
    ),
    (
        &["powerManagement", "powerUpCommands"],
        "commands run as root at boot and resume",
    ),
    (
        &["powerManagement", "powerDownCommands"],
        "commands run as root at shutdown and suspend",
    ),
    (
        &["powerManagement", "resumeCommands"],
        "commands run as root at resume",
    ),
    (
        &["networking", "localCommands"],
        "commands run as root when the network is set up",
    ),
    (
        &["environment", "shellInit"],
        "shell start-up code (runs as every user at login; `exit` there ends every login)",
    ),
    (
        &["environment", "loginShellInit"],
        "login shell start-up code (runs as every user at login)",
    ),
    (
        &["environment", "interactiveShellInit"],
        "interactive shell start-up code (runs as every user at login)",
    ),
    (
        &["programs", "bash", "shellInit"],
        "bash start-up code (runs as every user at login)",
    ),
    (
        &["programs", "bash", "loginShellInit"],
        "bash login start-up code (runs as every user at login)",
    ),
    (
        &["programs", "bash", "interactiveShellInit"],
        "bash interactive start-up code (runs as every user at login)",
    ),
    (
        &["programs", "zsh", "shellInit"],
        "zsh start-up code (runs as every user at login)",
    ),
    (
        &["programs", "zsh", "loginShellInit"],
        "zsh login start-up code (runs as every user at login)",
    ),
    (
        &["programs", "zsh", "interactiveShellInit"],
        "zsh interactive start-up code (runs as every user at login)",
    ),
];

/// New or changed hook code: attribute sets entry by entry, strings whole (removing code is
/// not reported).
fn hooks(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    replaced(
        ctx,
        out,
        "code.root",
        &["system", "activationScripts"],
        "NixOS's own activation (accounts, /etc, …) goes away",
    );
    for (p, what) in HOOKS {
        let (b, a) = (at(ctx.before, p), at(ctx.after, p));
        if b == a || !a.exists() || matches!(a, V::Known(Value::String(s)) if s.trim().is_empty()) {
            continue;
        }
        match a {
            V::Known(Value::Object(_)) if matches!(b, V::Absent | V::Known(Value::Object(_))) => {
                for n in names(ctx, p) {
                    let q = [*p, &[n.as_str()]].concat();
                    let (bn, an) = (at(ctx.before, &q), at(ctx.after, &q));
                    if bn != an && an.exists() {
                        push(
                            out,
                            "code.root",
                            &q,
                            bn,
                            an,
                            &format!("adds or changes {what}"),
                        );
                    }
                }
            }
            _ => push(
                out,
                "code.root",
                p,
                b,
                a,
                &format!("adds or changes {what}"),
            ),
        }
    }
}

/// The account a cron line runs as (`min hour dom month dow user cmd`, `@reboot user cmd`).
fn cron_user(line: &str) -> Option<&str> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.first()?.starts_with('@') {
        f.get(1).copied()
    } else {
        f.get(5).copied()
    }
}

/// Cron jobs added that run as root or a login account; udev rules added that run programs.
fn cron_and_udev(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let p = ["services", "cron", "systemCronJobs"];
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    if b != a {
        match (b.list(&[]), strings(a)) {
            (Some(old), Some(new)) => {
                for l in new.iter().filter(|l| !old.contains(&json!(l))) {
                    let who = cron_user(l).map(|u| account_privileged(ctx.after, u));
                    if who != Some(Some(false)) {
                        push_values(
                            out,
                            "code.root",
                            &p,
                            json!("<absent>"),
                            json!(l),
                            "adds a cron job that runs as root or a login account",
                        );
                    }
                }
            }
            _ => push(
                out,
                "code.root",
                &p,
                b,
                a,
                "cron jobs that cannot be decided may run as root",
            ),
        }
    }
    let p = ["services", "udev", "extraRules"];
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    if b != a {
        let lines = |v: V<'_>| {
            strings(v).map(|s| {
                s.join("\n")
                    .lines()
                    .map(str::trim)
                    .map(String::from)
                    .collect::<Vec<_>>()
            })
        };
        let runs = match (lines(b), lines(a)) {
            (Some(old), Some(new)) => new.iter().filter(|l| !old.contains(l)).any(|l| {
                ["RUN", "PROGRAM", "IMPORT{program}"]
                    .iter()
                    .any(|k| l.contains(k))
            }),
            _ => true,
        };
        if runs {
            push(
                out,
                "code.root",
                &p,
                b,
                a,
                "udev rules that run programs as root change",
            );
        }
    }
}

/// The homes of both tree states (a rule on either side's home counts).
pub(super) fn homes(ctx: &Ctx<'_>) -> Homes {
    let (b, a) = (
        crate::gate::homes::homes(ctx.before),
        crate::gate::homes::homes(ctx.after),
    );
    let mut h = a;
    h.undecided |= b.undecided;
    h.dirs.extend(b.dirs);
    h
}

/// Whether a tmpfiles rule (`type path mode user group age argument`) may touch a login file:
/// its path is one or holds one (a home, `/etc/ssh`, …), or cannot be decided (specifiers such
/// as `%h`, globs, quotes, relative or dotted paths). Exclusions (`x`, `X`) touch nothing.
fn tmpfile_touches_login(ty: &str, path: &str, homes: &Homes) -> bool {
    !ty.starts_with(['x', 'X']) && login_place(path, homes)
}

/// Whether `path` is, holds or lies inside a login file (a home, `/etc/ssh`, …), or cannot be
/// decided (specifiers such as `%h`, globs, quotes, relative or dotted paths).
pub(super) fn login_place(path: &str, homes: &Homes) -> bool {
    if !path.starts_with('/')
        || path.contains(['%', '*', '?', '[', '"', '\'', '\\'])
        || path.split('/').any(|c| c == "." || c == "..")
    {
        return true;
    }
    contains_login_path(Path::new(path), homes).is_some()
}

/// tmpfiles rules (run as root at boot) added that create, remove or change login files; a
/// rule elsewhere (`d /var/lib/app 0750 app app`) is harmless.
fn tmpfiles(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let homes = homes(ctx);
    let p = ["systemd", "tmpfiles", "rules"];
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    if b != a {
        match (b.list(&[]), strings(a)) {
            (Some(old), Some(new)) => {
                for l in new.iter().filter(|l| !old.contains(&json!(l))) {
                    let mut f = l.split_whitespace();
                    let touches = match (f.next(), f.next()) {
                        (Some(ty), _) if ty.starts_with('#') => false,
                        (Some(ty), Some(path)) => tmpfile_touches_login(ty, path, &homes),
                        (None, _) => false,
                        _ => true,
                    };
                    if touches {
                        push_values(
                            out,
                            "code.root",
                            &p,
                            json!("<absent>"),
                            json!(l),
                            "adds a tmpfiles rule (run as root at boot) on files that decide who logs in",
                        );
                    }
                }
            }
            _ => push(
                out,
                "code.root",
                &p,
                b,
                a,
                "tmpfiles rules that cannot be decided may touch login files",
            ),
        }
    }
    let base = ["systemd", "tmpfiles", "settings"];
    let (b, a) = (at(ctx.before, &base), at(ctx.after, &base));
    if b == a {
        return;
    }
    if a == V::Unknown {
        push(
            out,
            "code.root",
            &base,
            b,
            a,
            "tmpfiles settings that cannot be decided may touch login files",
        );
        return;
    }
    for n in names(ctx, &base) {
        let q = [&base[..], &[n.as_str()]].concat();
        let (bn, an) = (at(ctx.before, &q), at(ctx.after, &q));
        if bn == an {
            continue;
        }
        let V::Known(Value::Object(paths)) = an else {
            if an != V::Absent {
                push(
                    out,
                    "code.root",
                    &q,
                    bn,
                    an,
                    "tmpfiles settings that cannot be decided may touch login files",
                );
            }
            continue;
        };
        for (path, types) in paths {
            if at(ctx.before, &[&q[..], &[path.as_str()]].concat()) == V::Known(types) {
                continue;
            }
            let touches = match types.as_object() {
                Some(t) if !is_undecidable(types) => {
                    t.keys().any(|ty| tmpfile_touches_login(ty, path, &homes))
                }
                _ => true,
            };
            if touches {
                push(
                    out,
                    "code.root",
                    &[&q[..], &[path.as_str()]].concat(),
                    at(ctx.before, &[&q[..], &[path.as_str()]].concat()),
                    V::Known(types),
                    "adds or changes a tmpfiles entry (run as root at boot) on files that decide who logs in",
                );
            }
        }
    }
}

/// What `pkgs.X` is: every root service runs the packages the configuration names, so a change
/// of what a name means (an overlay swapping openssh or sudo) is a change of root code.
const PACKAGE_SETS: &[&[&str]] = &[
    &["nixpkgs", "overlays"],
    &["nixpkgs", "pkgs"],
    &["nixpkgs", "config", "packageOverrides"],
    &["_module", "args"],
];

fn packages(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for p in PACKAGE_SETS {
        let (b, a) = (at(ctx.before, p), at(ctx.after, p));
        if b != a {
            push(
                out,
                "code.root",
                p,
                b,
                a,
                "what the packages are changes: pkgs.X (openssh, sudo, systemd, …) may become other code, which runs as root",
            );
        }
    }
    // `nixpkgs.config` as a whole (a function, or a value that cannot be decided) may hold an
    // override too.
    let p = ["nixpkgs", "config"];
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    let opaque =
        |v: V<'_>| v == V::Unknown || matches!(v, V::Known(x) if x["__osmoda"] == "function");
    if b != a && (opaque(b) || opaque(a)) {
        push(out, "code.root", &p, b, a, "nixpkgs' configuration, which can override packages, changes in a way the gate cannot read");
    }
}

/// Whether option path `p` (under [`UNITS`]) is a unit's code or who runs it; `Some` with the
/// unit, its section and whether it runs per user.
fn unit_setting(p: &[String]) -> Option<(Vec<&str>, &'static str, bool)> {
    for (base, section, per_user) in UNITS {
        if p.len() <= base.len() || !p.iter().zip(*base).all(|(a, b)| a == b) {
            continue;
        }
        let unit: Vec<&str> = p[..=base.len()].iter().map(String::as_str).collect();
        let rest = &p[base.len() + 1..];
        let code = match rest {
            [] => true,
            [f, ..] if UNIT_CODE.contains(&f.as_str()) || f == "enable" => true,
            [s] if s == section => true,
            [s, f, ..] if s == section => {
                EXEC.iter().chain(SECTION_CODE).chain(WHO).any(|x| x == f)
            }
            _ => false,
        };
        return code.then_some((unit, section, *per_user));
    }
    None
}

/// Values under these code subtrees the gate cannot read, in modules whose text changes: bound to
/// that text (a unit's only where it may run as root after the change).
fn opaque(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    for o in ctx.opaque {
        let first = o.path.first().map(String::as_str);
        if first == Some("specialisation") {
            continue;
        }
        let under_units = UNITS
            .iter()
            .any(|(b, _, _)| o.path.len() > b.len() && o.path.iter().zip(*b).all(|(a, b)| a == b));
        if under_units {
            match unit_setting(&o.path) {
                None => continue,
                Some((unit, section, per_user)) => {
                    if privileged(ctx.after, &unit, section, per_user) == Some(false) {
                        continue;
                    }
                }
            }
        } else if o
            .path
            .starts_with(&["nixpkgs".to_string(), "config".to_string()])
            && o.path.len() > 2
            && o.path[2] != "packageOverrides"
        {
            // Other settings of nixpkgs (`allowUnfreePredicate`, …) choose no code.
            continue;
        }
        let path = o.path.join(".");
        out.push(Finding {
            kind: "code.root",
            path: format!("{path} in {}", o.file),
            was: o.was.clone(),
            now: o.now.clone(),
            words: format!(
                "{path} is code run as root that the gate cannot read (it names packages or depends on values it cannot decide), so it is bound to the text of {}, which changes",
                o.file
            ),
        });
    }
}

pub(super) fn root_code(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    units(ctx, out);
    hooks(ctx, out);
    cron_and_udev(ctx, out);
    tmpfiles(ctx, out);
    packages(ctx, out);
    opaque(ctx, out);
}
