//! Booting at all: the boot loader, kernel parameters and initrd modules that decide whether the
//! next boot reaches a login, and the file systems it mounts. A remote machine that does not
//! boot cannot be reached to pick an older generation from the boot menu.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;

/// `boot.loader` settings that cannot stop a boot that works today (relative to `boot.loader`).
/// Any other loader setting changed needs approval: which loader is enabled, the disk or EFI
/// partition it installs to, how it installs, extra install commands, the default entry, ...
const HARMLESS_LOADER: &[&str] = &[
    "timeout",
    "grub.configurationLimit",
    "grub.configurationName",
    "grub.splashImage",
    "grub.splashMode",
    "grub.theme",
    "grub.backgroundColor",
    "grub.font",
    "grub.fontSize",
    "grub.gfxmodeEfi",
    "grub.gfxmodeBios",
    "grub.useOSProber",
    "grub.memtest86.enable",
    "grub.extraEntries",
    "systemd-boot.configurationLimit",
    "systemd-boot.consoleMode",
    "systemd-boot.editor",
    "systemd-boot.memtest86.enable",
    "systemd-boot.extraEntries",
];

/// Defaults of loader settings where leaving one out is not the same as `null`.
const LOADER_DEFAULTS: &[(&str, bool)] = &[
    ("grub.enable", true),
    ("systemd-boot.enable", false),
    ("grub.efiSupport", false),
    ("efi.canTouchEfiVariables", false),
];

/// Kernel parameters (the name before `=`) known not to stop a boot that works today: how much
/// the kernel and systemd print, where the console is, the splash screen. Any other parameter
/// added or removed needs approval: besides `root=`, `init=` or `systemd.unit=rescue.target`,
/// NixOS's stage 1 reads its own (`boot.debug1` stops in a shell, `boot.shell_on_fail`,
/// `boot.panic_on_fail`), and drivers, blacklists, memory and CPU limits can all end the boot.
const HARMLESS_PARAMS: &[&str] = &[
    "quiet",
    "splash",
    "loglevel",
    "console",
    "consoleblank",
    "nomodeset",
    "vga",
    "fbcon",
    "vt.global_cursor_default",
    "udev.log_level",
    "udev.log_priority",
    "rd.udev.log_level",
    "rd.udev.log_priority",
    "systemd.log_level",
    "systemd.log_target",
    "systemd.log_color",
    "systemd.show_status",
    "rd.systemd.show_status",
    "printk.devkmsg",
    "plymouth.enable",
    "nowatchdog",
    "nmi_watchdog",
    "mitigations",
    "transparent_hugepage",
    "zswap.enabled",
    "random.trust_cpu",
    "audit",
];

/// `boot` settings (relative to `boot`) with rules of their own: the loader, the kernel, its
/// parameters, the initrd's modules and encrypted disks.
const JUDGED_BOOT: &[&str] = &[
    "loader",
    "kernelPackages",
    "kernelParams",
    "initrd.availableKernelModules",
    "initrd.kernelModules",
    "initrd.luks",
];

/// `boot` settings that are not the boot chain: temporary files, the console's look, sysctls
/// (applied at run time, where a health check sees them), binfmt emulation, containers.
const HARMLESS_BOOT: &[&str] = &[
    "tmp",
    "cleanTmpDir",
    "tmpOnTmpfs",
    "consoleLogLevel",
    "plymouth",
    "kernel.sysctl",
    "binfmt",
    "enableContainers",
];

/// Lists where adding is harmless and removing is not (a driver or file system the boot needs).
const ONLY_REMOVAL: &[&str] = &[
    "kernelModules",
    "extraModulePackages",
    "supportedFilesystems",
    "initrd.supportedFilesystems",
];

/// Lists where removing is harmless and adding is not (a blacklisted NIC or disk driver).
const ONLY_ADDITION: &[&str] = &["blacklistedKernelModules"];

/// Mount points the machine needs to boot: removing one of them leaves it unbootable.
const BOOT_MOUNTS: &[&str] = &[
    "/",
    "/boot",
    "/boot/efi",
    "/efi",
    "/nix",
    "/nix/store",
    "/usr",
    "/var",
];

/// `boot.kernelPackages` when a configuration leaves it out (NixOS's default).
static DEFAULT_KERNEL: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| json!({ "__osmoda": "pkg", "name": "linuxPackages" }));

/// Every leaf under `v` by its dotted path (a list or an undecidable value is one leaf).
pub(super) fn leaves(v: V<'_>, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match v {
        V::Absent => {}
        V::Unknown => {
            out.insert(prefix.to_string(), json!("<undecidable>"));
        }
        V::Known(Value::Object(m)) => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                let x = if is_undecidable(x) {
                    V::Unknown
                } else {
                    V::Known(x)
                };
                leaves(x, &p, out);
            }
        }
        V::Known(x) => {
            out.insert(prefix.to_string(), x.clone());
        }
    }
}

pub(super) fn boot_loader(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let base = ["boot", "loader"];
    let (b, a) = (at(ctx.before, &base), at(ctx.after, &base));
    if b == a {
        return;
    }
    let (mut old, mut new) = (BTreeMap::new(), BTreeMap::new());
    leaves(b, "", &mut old);
    leaves(a, "", &mut new);
    // The whole of `boot.loader` undecidable on one side: it may change anything.
    if old.contains_key("") || new.contains_key("") {
        push(
            out,
            "boot.loader",
            &base,
            b,
            a,
            "the boot loader may change, so the machine may not boot again",
        );
        return;
    }
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        if HARMLESS_LOADER
            .iter()
            .any(|h| k == h || k.starts_with(&format!("{h}.")))
        {
            continue;
        }
        let default = LOADER_DEFAULTS
            .iter()
            .find(|(p, _)| p == k)
            .map(|(_, d)| json!(d));
        let value = |m: &BTreeMap<String, Value>| {
            m.get(k)
                .cloned()
                .or_else(|| default.clone())
                .unwrap_or_else(|| json!("<absent>"))
        };
        let (was, now) = (value(&old), value(&new));
        if was != now {
            let path: Vec<&str> = base.iter().copied().chain(k.split('.')).collect();
            push_values(
                out,
                "boot.loader",
                &path,
                was,
                now,
                "the boot loader changes, so the machine may not boot again",
            );
        }
    }
}

/// The name of a kernel parameter (`root=/dev/sda1` → `root`).
fn param_name(p: &Value) -> Option<&str> {
    p.as_str().map(|s| s.split_once('=').map_or(s, |(n, _)| n))
}

pub(super) fn boot_kernel(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    boot_chain(ctx, out);
    replaced(
        ctx,
        out,
        "boot.kernel",
        &["boot"],
        "kernel parameters or modules NixOS itself sets go away",
    );
    let p = ["boot", "kernelParams"];
    let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
    if b != a {
        let risky = |x: &Value| param_name(x).is_none_or(|n| !HARMLESS_PARAMS.contains(&n));
        let changed = match (b.list(&[]), a.list(&[])) {
            (Some(old), Some(new)) => old
                .iter()
                .filter(|x| !new.contains(x))
                .chain(new.iter().filter(|x| !old.contains(x)))
                .any(risky),
            _ => true,
        };
        if changed {
            push(
                out,
                "boot.kernel",
                &p,
                b,
                a,
                "kernel parameters that decide what the kernel mounts and starts change, so the machine may not boot again",
            );
        }
    }
    // Another kernel: SafeSwitch's `switch-to-configuration test` keeps the running kernel, so
    // no health check ever sees the new one; it first runs at the next boot. Left out means
    // NixOS's default (`pkgs.linuxPackages`).
    let k = ["boot", "kernelPackages"];
    fn kernel<'a>(t: &'a Value) -> V<'a> {
        match at(t, &["boot", "kernelPackages"]) {
            V::Absent | V::Known(Value::Null) => V::Known(&DEFAULT_KERNEL),
            v => v,
        }
    }
    let (b, a) = (kernel(ctx.before), kernel(ctx.after));
    if b != a {
        push(
            out,
            "boot.kernel",
            &k,
            b,
            a,
            "the kernel changes; it first runs at the next boot, where no health check can catch a kernel that does not find the disks or the network, so the machine may not boot again",
        );
    }
    // A driver the initrd loaded (a disk, a file system, a RAID) taken out of it.
    for p in [
        ["boot", "initrd", "availableKernelModules"],
        ["boot", "initrd", "kernelModules"],
    ] {
        let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
        let lost = match (b.list(&[]), a.list(&[])) {
            (Some(old), Some(new)) => old.iter().any(|x| !new.contains(x)),
            (Some(old), None) => !old.is_empty(),
            (None, _) => b != a,
        };
        if lost {
            push(
                out,
                "boot.kernel",
                &p,
                b,
                a,
                "a module the initrd loads to find the root file system goes away, so the machine may not boot again",
            );
        }
    }
    // An encrypted disk the initrd opens, removed or pointed elsewhere.
    let luks = ["boot", "initrd", "luks", "devices"];
    for n in names(ctx, &luks) {
        let q = [&luks[..], &[n.as_str()]].concat();
        let dev = [&q[..], &["device"]].concat();
        let (bn, an) = (at(ctx.before, &q), at(ctx.after, &q));
        let gone = bn.exists() && !an.exists();
        let moved = bn.exists() && at(ctx.before, &dev) != at(ctx.after, &dev);
        if gone || moved || (bn.exists() && an == V::Unknown && bn != V::Unknown) {
            push(
                out,
                "boot.kernel",
                &q,
                bn,
                an,
                &format!("the initrd no longer opens encrypted disk {n} as before, so the machine may not boot again"),
            );
        }
    }
    let base = ["boot", "initrd", "luks", "devices"];
    let (b, a) = (at(ctx.before, &base), at(ctx.after, &base));
    if a == V::Unknown && b != V::Unknown && b.exists() {
        push(
            out,
            "boot.kernel",
            &base,
            b,
            a,
            "the encrypted disks the initrd opens may change, so the machine may not boot again",
        );
    }
}

/// Everything else under `boot` that decides how the machine boots (the initrd's commands,
/// `postBootCommands`, blacklisted modules, stage-1 systemd, initrd networking, ...): judged by
/// leaf, a change of any setting not known to be harmless needs approval.
fn boot_chain(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let base = ["boot"];
    let (b, a) = (at(ctx.before, &base), at(ctx.after, &base));
    if b == a {
        return;
    }
    let (mut old, mut new) = (BTreeMap::new(), BTreeMap::new());
    leaves(b, "", &mut old);
    leaves(a, "", &mut new);
    let under = |k: &str, set: &[&str]| {
        set.iter()
            .any(|h| k == *h || k.starts_with(&format!("{h}.")))
    };
    if old.contains_key("") || new.contains_key("") {
        push(
            out,
            "boot.kernel",
            &base,
            b,
            a,
            "how the machine boots may change, so it may not boot again",
        );
        return;
    }
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let absent = json!("<absent>");
    for k in keys {
        if under(k, JUDGED_BOOT) || under(k, HARMLESS_BOOT) {
            continue;
        }
        let (was, now) = (old.get(k).unwrap_or(&absent), new.get(k).unwrap_or(&absent));
        if was == now {
            continue;
        }
        let list = |v: &Value| match v {
            Value::Array(l) => Some(l.clone()),
            Value::String(s) if s == "<absent>" => Some(Vec::new()),
            _ => None,
        };
        let (lo, ln) = (list(was), list(now));
        let risky = match (&lo, &ln) {
            (Some(o), Some(n)) if ONLY_REMOVAL.contains(&k.as_str()) => {
                o.iter().any(|x| !n.contains(x))
            }
            (Some(o), Some(n)) if ONLY_ADDITION.contains(&k.as_str()) => {
                n.iter().any(|x| !o.contains(x))
            }
            _ => true,
        };
        if risky {
            let path: Vec<&str> = base.iter().copied().chain(k.split('.')).collect();
            push_values(
                out,
                "boot.kernel",
                &path,
                was.clone(),
                now.clone(),
                "how the machine boots changes (a setting of the boot chain not known to be harmless), so it may not boot again",
            );
        }
    }
}

/// How a file system is found: its `device` (NixOS's default for one given by `label` is
/// `/dev/disk/by-label/<label>`) and type.
fn source(t: &Value, mount: &str) -> Value {
    let get = |k: &str| at(t, &["fileSystems", mount, k]);
    let device = match (get("device"), get("label")) {
        (V::Absent | V::Known(Value::Null), V::Known(Value::String(l))) => {
            json!(format!("/dev/disk/by-label/{l}"))
        }
        (d, _) => d.shown(),
    };
    json!({ "device": device, "fsType": get("fsType").shown() })
}

pub(super) fn file_systems(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    mount_units(ctx, out);
    replaced(
        ctx,
        out,
        "filesystem.change",
        &["fileSystems"],
        "file systems NixOS itself mounts go away",
    );
    let base = ["fileSystems"];
    let (b, a) = (at(ctx.before, &base), at(ctx.after, &base));
    if b == a {
        return;
    }
    if a == V::Unknown && b.exists() {
        push(
            out,
            "filesystem.change",
            &base,
            b,
            a,
            "the mounted file systems may change, so the machine may not boot again",
        );
        return;
    }
    let homes = super::code::homes(ctx);
    for m in names(ctx, &base) {
        let p = ["fileSystems", m.as_str()];
        let (bm, am) = (at(ctx.before, &p), at(ctx.after, &p));
        if bm == am {
            continue;
        }
        // NixOS mounts at `mountPoint` (the name is only its default): a new mount, or one
        // whose place moves, over a place the machine or its logins depend on hides what is
        // there (a tmpfs on /home or /etc/ssh/authorized_keys.d: the users lose their keys; on
        // /etc/static or /nix/store: sshd's configuration, every program).
        let point = |t: &Value, v: V<'_>| match at(t, &[&p[..], &["mountPoint"]].concat()) {
            V::Known(Value::String(s)) => Some(s.clone()),
            V::Absent | V::Known(Value::Null) if v.exists() => Some(m.clone()),
            V::Absent | V::Known(Value::Null) => None,
            _ => Some(String::new()),
        };
        let (was_at, now_at) = (point(ctx.before, bm), point(ctx.after, am));
        if now_at.is_some() && now_at != was_at {
            let now_at = now_at.unwrap_or_default();
            if mount_hides(&now_at, &homes) {
                push(
                    out,
                    "filesystem.change",
                    &p,
                    bm,
                    am,
                    &format!("mounts a file system at {now_at:?}, over files the machine or its logins depend on"),
                );
            }
        }
        if !bm.exists() {
            continue;
        }
        let needed =
            at(ctx.before, &["fileSystems", &m, "neededForBoot"]).flag(false) != Some(false);
        if !am.exists() {
            if BOOT_MOUNTS.contains(&m.as_str()) || needed {
                push(
                    out,
                    "filesystem.change",
                    &p,
                    bm,
                    V::Absent,
                    &format!("removes the mount of {m}, which the machine needs to boot"),
                );
            }
            continue;
        }
        let (was, now) = (source(ctx.before, &m), source(ctx.after, &m));
        if was != now {
            push_values(
                out,
                "filesystem.change",
                &p,
                was,
                now,
                &format!("changes which device is mounted at {m} (its data may not be there, and the boot may stop)"),
            );
        }
    }
}

/// Mount units (`systemd.mounts`, `systemd.automounts`: lists of units with `where`) added over
/// a login place, or that cannot be decided: the same as a new `fileSystems` entry there.
/// Places a new mount may not cover without a person: the ones NixOS and osModa run from
/// (`/`, `/etc`, `/nix`, `/boot`, `/usr`, `/run`, `/var/lib/osmoda`, the binaries'), anything
/// holding or inside them, and login places (homes, `/root`, `/etc/ssh`, …); a place that is
/// not a clean absolute path counts too.
fn mount_hides(point: &str, homes: &crate::api::secrets::Homes) -> bool {
    const SYSTEM: &[&str] = &[
        "/etc",
        "/nix",
        "/boot",
        "/usr",
        "/run",
        "/bin",
        "/sbin",
        "/lib",
        "/lib64",
        "/var/lib/osmoda",
    ];
    let p = std::path::Path::new(point);
    super::code::login_place(point, homes)
        || SYSTEM
            .iter()
            .any(|s| p.starts_with(s) || std::path::Path::new(s).starts_with(p))
}

fn mount_units(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let homes = super::code::homes(ctx);
    for kind in ["mounts", "automounts"] {
        let p = ["systemd", kind];
        let (b, a) = (at(ctx.before, &p), at(ctx.after, &p));
        if b == a {
            continue;
        }
        let old = b.list(&[]).unwrap_or_default();
        let hides = match a.list(&[]) {
            Some(new) => new.iter().filter(|u| !old.contains(u)).any(|u| {
                u.get("where")
                    .and_then(Value::as_str)
                    .is_none_or(|w| mount_hides(w, &homes))
            }),
            None => a != V::Absent,
        };
        if hides {
            push(
                out,
                "filesystem.change",
                &p,
                b,
                a,
                "adds a mount unit over files the machine or its logins depend on (or one whose place cannot be decided)",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(before: Value, after: Value) -> Vec<&'static str> {
        let ctx = Ctx {
            before: &before,
            after: &after,
            unevaluable: &[],
            critical: &[],
            forced_before: &Default::default(),
            forced_after: &Default::default(),
            package_kind: "package.remove_critical",
            opaque: &[],
        };
        let mut k: Vec<&str> = findings(&ctx).iter().map(|f| f.kind).collect();
        k.dedup();
        k
    }

    fn undecidable() -> Value {
        json!({ "__osmoda": "undecidable" })
    }

    #[test]
    fn boot_loader_kernel_and_mounts_are_gated_and_their_harmless_siblings_are_not() {
        let grub = |x: Value| json!({"boot": {"loader": {"grub": x}}});
        let params = |p: Value| json!({"boot": {"kernelParams": p}});
        let initrd = |m: Value| json!({"boot": {"initrd": {"availableKernelModules": m}}});
        let fs = |x: Value| json!({"fileSystems": x});
        let kernel = |k: Value| json!({"boot": {"kernelPackages": k}});
        let pkg = |n: &str| json!({"__osmoda": "pkg", "name": n});
        let root = json!({"device": "/dev/disk/by-label/nixos", "fsType": "ext4"});
        let net = |x: Value| json!({"systemd": {"network": x}});
        let wired = json!({"matchConfig": {"Name": "en*"}, "networkConfig": {"DHCP": "yes"}});
        for (before, after, expected) in [
            // The loader.
            (
                grub(json!({"device": "/dev/vda"})),
                grub(json!({"device": "/dev/vdb"})),
                vec!["boot.loader"],
            ),
            (
                grub(json!({"enable": true, "device": "/dev/vda"})),
                grub(json!({"enable": false, "device": "/dev/vda"})),
                vec!["boot.loader"],
            ),
            (
                grub(json!({"device": "/dev/vda"})),
                grub(json!({"enable": false, "device": "/dev/vda"})),
                vec!["boot.loader"],
            ),
            (
                grub(json!({"device": "/dev/vda"})),
                json!({}),
                vec!["boot.loader"],
            ),
            (
                grub(json!({"device": "/dev/vda"})),
                grub(json!({"device": undecidable()})),
                vec!["boot.loader"],
            ),
            (
                grub(json!({"device": "/dev/vda"})),
                json!({"boot": {"loader": undecidable()}}),
                vec!["boot.loader"],
            ),
            (
                json!({}),
                json!({"boot": {"loader": {"systemd-boot": {"enable": true}}}}),
                vec!["boot.loader"],
            ),
            // ... not its look or menu, and not saying the default out loud.
            (
                grub(json!({"device": "/dev/vda"})),
                grub(
                    json!({"device": "/dev/vda", "enable": true, "configurationLimit": 10, "theme": "x"}),
                ),
                vec![],
            ),
            (
                grub(json!({"device": "/dev/vda"})),
                json!({"boot": {"loader": {"timeout": 3, "grub": {"device": "/dev/vda"}}}}),
                vec![],
            ),
            // Kernel parameters that decide what boots; not the quiet ones.
            (
                params(json!(["quiet"])),
                params(json!(["quiet", "init=/bin/sh"])),
                vec!["boot.kernel"],
            ),
            (
                params(json!(["root=/dev/vda1"])),
                params(json!([])),
                vec!["boot.kernel"],
            ),
            (
                json!({}),
                params(json!(["systemd.unit=rescue.target"])),
                vec!["boot.kernel"],
            ),
            (
                params(json!([])),
                params(json!(["panic=1"])),
                vec!["boot.kernel"],
            ),
            (
                params(json!(["quiet"])),
                params(undecidable()),
                vec!["boot.kernel"],
            ),
            (
                params(json!(["quiet"])),
                params(json!(["quiet", "loglevel=4", "nomodeset"])),
                vec![],
            ),
            (json!({}), params(json!(["console=ttyS0"])), vec![]),
            // Another kernel; saying the default out loud is none.
            (
                json!({}),
                kernel(pkg("linuxPackages_latest")),
                vec!["boot.kernel"],
            ),
            (
                kernel(pkg("linuxPackages_6_6")),
                kernel(pkg("linuxKernel.packages.linux_6_12")),
                vec!["boot.kernel"],
            ),
            (
                kernel(pkg("linuxPackages_6_6")),
                json!({}),
                vec!["boot.kernel"],
            ),
            (
                kernel(pkg("linuxPackages_6_6")),
                kernel(undecidable()),
                vec!["boot.kernel"],
            ),
            (json!({}), kernel(pkg("linuxPackages")), vec![]),
            (
                kernel(pkg("linuxPackages_6_6")),
                json!({"boot": {"kernelPackages": pkg("linuxPackages_6_6"), "kernelParams": ["quiet"]}}),
                vec![],
            ),
            // The initrd's drivers and encrypted disks.
            (
                initrd(json!(["virtio_blk", "ahci"])),
                initrd(json!(["ahci"])),
                vec!["boot.kernel"],
            ),
            (
                initrd(json!(["ahci"])),
                initrd(json!(["ahci", "nvme"])),
                vec![],
            ),
            (
                json!({"boot": {"initrd": {"luks": {"devices": {"root": {"device": "/dev/vda2"}}}}}}),
                json!({"boot": {"initrd": {"luks": {"devices": {"root": {"device": "/dev/vda3"}}}}}}),
                vec!["boot.kernel"],
            ),
            (
                json!({"boot": {"initrd": {"luks": {"devices": {"root": {"device": "/dev/vda2"}}}}}}),
                json!({}),
                vec!["boot.kernel"],
            ),
            (
                json!({"boot": {"initrd": {"luks": {"devices": {"root": {"device": "/dev/vda2"}}}}}}),
                json!({"boot": {"initrd": {"luks": {"devices": {"root": {"device": "/dev/vda2", "allowDiscards": true}}}}}}),
                vec![],
            ),
            // File systems: a boot mount removed, any mount's device changed.
            (
                fs(json!({"/": root})),
                fs(json!({})),
                vec!["filesystem.change"],
            ),
            (
                fs(json!({"/boot": {"device": "/dev/vda1"}})),
                json!({}),
                vec!["filesystem.change"],
            ),
            (
                fs(json!({"/": root})),
                fs(json!({"/": {"device": "/dev/vdb1", "fsType": "ext4"}})),
                vec!["filesystem.change"],
            ),
            (
                fs(json!({"/": root})),
                fs(json!({"/": {"label": "nixos2", "fsType": "ext4"}})),
                vec!["filesystem.change"],
            ),
            // The same device by its label.
            (
                fs(json!({"/": root})),
                fs(json!({"/": {"label": "nixos", "fsType": "ext4"}})),
                vec![],
            ),
            (
                fs(json!({"/": root})),
                fs(json!({"/": {"device": "/dev/disk/by-label/nixos", "fsType": "btrfs"}})),
                vec!["filesystem.change"],
            ),
            (
                fs(json!({"/srv": {"device": "/dev/vdc"}})),
                fs(json!({"/srv": {"device": "/dev/vdd"}})),
                vec!["filesystem.change"],
            ),
            (
                fs(json!({"/srv": {"device": "/dev/vdc", "neededForBoot": true}})),
                fs(json!({})),
                vec!["filesystem.change"],
            ),
            (
                fs(json!({"/": root})),
                fs(undecidable()),
                vec!["filesystem.change"],
            ),
            (
                fs(json!({"/": root})),
                fs(json!({"/": root, "/srv": {"device": "/dev/vdc"}})),
                vec![],
            ),
            (
                fs(json!({"/srv": {"device": "/dev/vdc"}})),
                fs(json!({})),
                vec![],
            ),
            (
                fs(json!({"/": root})),
                fs(
                    json!({"/": {"device": "/dev/disk/by-label/nixos", "fsType": "ext4", "options": ["noatime"]}}),
                ),
                vec![],
            ),
            // systemd-networkd, where it runs.
            (
                net(json!({"enable": true, "networks": {"10-wired": wired}})),
                net(json!({"enable": true})),
                vec!["ssh.access"],
            ),
            (
                net(json!({"enable": true, "networks": {"10-wired": wired}})),
                net(json!({"enable": false, "networks": {"10-wired": wired}})),
                vec!["ssh.access"],
            ),
            (
                net(json!({"enable": true, "networks": {"10-wired": wired}})),
                net(
                    json!({"enable": true, "networks": {"10-wired": {"matchConfig": {"Name": "en*"}, "networkConfig": {"DHCP": "no"}}}}),
                ),
                vec!["ssh.access"],
            ),
            (
                net(json!({"enable": true, "networks": {"10-wired": wired}})),
                net(
                    json!({"enable": true, "networks": {"10-wired": wired, "00-all": {"matchConfig": {"Name": "*"}}}}),
                ),
                vec!["ssh.access"],
            ),
            (
                net(json!({"enable": true, "networks": {"10-wired": wired}})),
                net(json!({"enable": true, "networks": undecidable()})),
                vec!["ssh.access"],
            ),
            (
                net(json!({"enable": true, "networks": {"10-wired": wired}})),
                net(
                    json!({"enable": true, "networks": {"10-wired": {"matchConfig": {"Name": "en*"}, "networkConfig": {"DHCP": "yes", "DNS": ["1.1.1.1"]}}}}),
                ),
                vec![],
            ),
            (
                net(json!({"networks": {"10-wired": wired}})),
                net(json!({})),
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
}
