//! The one table of rules that decides which differences between two evaluated configurations
//! are destructive. Each rule reads the merged before/after values (see [`super::merge`]) and
//! reports findings; a value the evaluator could not decide counts as possibly destructive.

use serde_json::{json, Value};

use super::merge::is_undecidable;

mod audit;
mod boot;
mod code;
mod etc;
mod network;
mod osmoda;
mod policy;
mod services;
mod ssh;
mod users;

use audit::*;
use boot::*;
use code::*;
use osmoda::*;
pub use osmoda::{read_by, DISABLED_ELSEWHERE, FOREIGN_IMPORTS};
use policy::*;
use services::*;
use ssh::*;
use users::*;

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

/// A value under [`super::eval::CODE`] the gate cannot read (a function, a string naming
/// packages, ...), in a module whose file the change touches: it is bound to that file's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opaque {
    /// Option path of the value.
    pub path: Vec<String>,
    /// File of the module defining it.
    pub file: String,
    /// SHA-256 of the file before (`"sha256:…"` or `"<absent>"`).
    pub was: Value,
    /// And after.
    pub now: Value,
}

/// What the rules see.
pub struct Ctx<'a> {
    /// Merged protected values before the change.
    pub before: &'a Value,
    /// And after.
    pub after: &'a Value,
    /// What cannot be evaluated after the change: changed modules (with the SHA-256 of their
    /// text before and after) and [`DISABLED_ELSEWHERE`] (with the entries before and after).
    pub unevaluable: &'a [(String, Value, Value)],
    /// Package names whose removal needs approval.
    pub critical: &'a [String],
    /// Collections NixOS's own modules define too that the tree replaces, before the change
    /// (see [`super::forced`]).
    pub forced_before: &'a super::forced::Forced,
    /// And after.
    pub forced_after: &'a super::forced::Forced,
    /// The kind critical package removal is reported as (`package.remove_critical` for edits,
    /// `switch.remove_critical` for switches).
    pub package_kind: &'static str,
    /// Code values the gate cannot read in files the change touches.
    pub opaque: &'a [Opaque],
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
    Rule { kind: "service.remove", protects: "a `services.<name>` or `systemd.services.<name>` block removed (unless it was disabled); `systemd.services`/`sockets` forced (every unit NixOS defines goes away)", check: service_removed },
    Rule { kind: "service.disable", protects: "`enable` of a service going from true to false or away (`systemd.services.*.enable` defaults to true; also a unit by its file name, `systemd.units.\"sshd.service\".enable`); a unit (service, socket, target, timer, path) that comes to conflict with another (`conflicts`, `unitConfig.Conflicts`): starting it stops that one", check: service_disabled },
    Rule { kind: "user.remove", protects: "a `users.users.<name>` removed, turned off (`enable = false`, also for a user NixOS itself defines), or renamed by `name` (the old login goes away); `users.users` forced (root, sshd, nobody go away)", check: user_removed },
    Rule { kind: "user.demote", protects: "a user losing `isNormalUser`, the `wheel` group (also `users.groups.wheel.members`) or a login shell, or getting an expiry date or `isSystemUser`; wheel users losing sudo (`security.sudo.enable` off, `wheelNeedsPassword` on, its `configFile`/`extraConfig`/`extraRules` changed, PAM's `sudo`/`su` changed); `users.groups`, a group's `members` or sudo's `extraRules` forced (what NixOS puts there goes away)", check: user_demoted },
    Rule { kind: "user.credentials", protects: "a user losing an SSH authorized key or key file, its password (hash) changed or removed, its `home` or `uid` changed; `users.mutableUsers` turned off; and any file NixOS writes under /etc that decides who logs in or how (`environment.etc.\"ssh/…\"`, `pam.d/…`, `sudoers`, `passwd`, shell start-up files, ...; by `target`, also under another attribute name) defined, changed, replaced (`text`, `source`) or turned off (`enable = false`), reported as `user.credentials` for `ssh/authorized_keys.d/…`, `ssh.access` for the rest of `ssh/`, `user.demote` elsewhere", check: user_credentials },
    Rule { kind: "ssh.access", protects: "sshd kept on but how it listens, authenticates or starts changes so current logins may fail: ports, listen addresses, `PermitRootLogin`, password, keyboard-interactive or public-key authentication, `Allow/Deny Users/Groups`, authorized-keys files or command, `package`, `startWhenNeeded`, any other `settings` key or `extraConfig` keyword not known to be harmless, `systemd.services.sshd` (but `enable`) or `systemd.sockets.sshd`, PAM's `sshd`/`login`; and the machine losing its address (`useDHCP`, dhcpcd, NetworkManager, `useNetworkd`, an interface's addresses or DHCP, the default gateway, systemd-networkd's units where it runs); `environment.etc` or `security.pam.services` forced", check: ssh_access },
    Rule { kind: "firewall.ssh", protects: "the firewall closing a port sshd listens on (globally, per interface or by trusted interfaces), or its custom rules (`extraCommands`, `extraInputRules`, backend, nftables rules) changing while sshd is on; a forced `allowedTCPPorts` drops the port `openFirewall` adds", check: firewall_ssh },
    Rule { kind: "boot.loader", protects: "the boot loader changing beyond its look and menu (which loader is enabled, the disk or EFI partition it installs to, how it installs, the default entry, ...)", check: boot_loader },
    Rule { kind: "boot.kernel", protects: "the kernel (`boot.kernelPackages`, which no health check sees before the next boot) changed, kernel parameters other than the known harmless ones (`quiet`, `loglevel=`, `console=`, ...) added or removed (`root=`, `init=`, `boot.debug1`, `boot.shell_on_fail`, blacklists, ...), a module the initrd loads removed, an encrypted disk the initrd opens removed or pointed at another device; any other setting under `boot` that is part of the boot chain changed (the initrd's commands such as `preLVMCommands`/`postDeviceCommands`, `postBootCommands`, stage-1 systemd, initrd networking, ...; a module or file system removed from `kernelModules`/`supportedFilesystems`, a module added to `blacklistedKernelModules`), but not `tmp`, `kernel.sysctl`, `binfmt`, `plymouth`, `consoleLogLevel`", check: boot_kernel },
    Rule { kind: "filesystem.change", protects: "a mount the machine boots from removed (`/`, `/boot`, `/nix`, `/var`, ..., or `neededForBoot`), or the device, label or type of any mounted file system changed; a file system or mount unit (`systemd.mounts`/`automounts`) added over files that decide who logs in (a home, `/etc/ssh`, …) or at a place that cannot be decided", check: file_systems },
    Rule { kind: "wallet.delete", protects: "a wallet removed from `services.osmoda.keyd.policy.wallets`", check: wallet_removed },
    Rule { kind: "mesh.peer.remove", protects: "a peer removed from `services.osmoda.mesh.peers`", check: peer_removed },
    Rule { kind: "capability.remove", protects: "an egress capability removed from `services.osmoda.egress.capabilities`", check: capability_removed },
    Rule { kind: "audit.weaken", protects: "the ledger's tamper evidence and the backups weakened: `services.osmoda.agentd.ledger.checkpoint.enable` turned off, its `everyEvents`/`intervalSecs` raised, its `keyFile` or the witness `keyFile` changed, a witness peer removed or its key replaced, a peer's log no longer cosigned, `backup.keep` lowered (or set where it was null), `backup.dir` changed, `services.osmoda.stateDir` changed (a new ledger and key), the mesh turned off or its socket moved while witnesses are configured; the whole `ledger` or `backup` block undecidable", check: audit_weakened },
    Rule { kind: "policy.weaken", protects: "what decides which operations need a person loosened: keyd's signing policy (`services.osmoda.keyd.policy`: a chain or token newly allowed, `perTxMax`/`dailyLimit`/`approvalThreshold` raised or removed, `recipientAllowlist` widened or removed, `chainIds` or `typedData` entries added, a wallet's `dailyLimit` raised or `recipientAllowlist` widened) and agentd's bounds (`writableRoots` gaining an entry, `approvalTtlSecs` raised); the keyd policy undecidable", check: policy_weakened },
    Rule { kind: "package.remove_critical", protects: "a package named in `critical_packages` removed from `environment.systemPackages`, or the list forced (the packages NixOS adds go away) (`switch.remove_critical` for a switch)", check: critical_packages },
    Rule { kind: "code.root", protects: "new or changed code that runs as root, as an account people log in with or as one of osModa's own accounts (a program can stop sshd or remove keys, which the gate cannot judge; the gateway's user can pass on approvals, keyd's holds the wallets): a unit's `script`/`preStart`/…/`Exec*`/`path`/`environment` where the unit has no `User` (nor `DynamicUser`), names root, a login account or an `osmoda`/`osmoda-*` account, or elevates (`+`/`!` lines, `PermissionsStartOnly`, ambient capabilities beyond `CAP_NET_BIND_SERVICE`, wheel or an `osmoda`/`osmoda-*` group); user units; `system.activationScripts`/`userActivationScripts` entries, `powerManagement` commands, `networking.localCommands`, shell start-up code (`environment.shellInit`, …, bash's, zsh's), cron jobs as root, udev rules running programs; tmpfiles rules (and `settings`) on login files (a home, `/etc/ssh`, … or a path with specifiers or globs); what `pkgs.X` is (`nixpkgs.overlays`, `nixpkgs.pkgs`, `packageOverrides`, `_module.args`); such code the gate cannot read (a function, a string naming packages) is bound to the text of the file defining it", check: root_code },
    Rule { kind: "gate.undecidable", protects: "a changed module that the evaluator cannot evaluate at all, a changed flake.nix, changed `disabledModules` entries naming modules outside the tree, `imports` entries it cannot read (a module outside the tree, a string, a computed path) added or removed, or a changed file whose `imports` cannot be decided; a module `key` (NixOS keeps one module per key) added or changed; a `specialisation` (a second system the gate does not judge) added, changed or removed; a file read with `readFile` by a module with a value the gate cannot decide, rewritten", check: unevaluable },
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
            // Below a value that is not an attribute set there is nothing: NixOS refuses such a
            // configuration (a type error), so nothing under it reaches the machine.
            None => return V::Absent,
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

/// Collections under `prefix` that the change replaces (see [`super::forced`]): what NixOS's own
/// modules define there (`what`) goes away.
fn replaced(
    ctx: &Ctx<'_>,
    out: &mut Vec<Finding>,
    kind: &'static str,
    prefix: &[&str],
    what: &str,
) {
    for p in ctx.forced_after.iter().filter(|p| {
        p.len() >= prefix.len()
            && p.iter().zip(prefix).all(|(a, b)| a == b)
            && !ctx.forced_before.contains(*p)
    }) {
        let path: Vec<&str> = p.iter().map(String::as_str).collect();
        push(
            out,
            kind,
            &path,
            at(ctx.before, &path),
            at(ctx.after, &path),
            &format!(
                "{what}, because the new definition beats NixOS's own (mkForce) and replaces them"
            ),
        );
    }
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

#[cfg(test)]
mod tests;
