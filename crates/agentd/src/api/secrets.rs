//! What `/fs/*` and `/system/exec` never touch for the agent, beyond agentd's own state and the
//! boundary paths (`fs::Fence`): credentials nobody may read (password hashes, private keys,
//! process memory and environments), and the files that decide who logs in and what a person's
//! shell runs (account databases, sudo, PAM, sshd, shell start-up files, `authorized_keys`, the
//! directories on `PATH`), which only a person changes.

use std::path::{Component, Path, PathBuf};

/// Files whose bytes are credentials.
const SECRET_FILES: &[&str] = &[
    "/etc/shadow",
    "/etc/shadow-",
    "/etc/gshadow",
    "/etc/gshadow-",
    "/proc/kcore",
    "/dev/mem",
    "/dev/kmem",
    "/dev/port",
];
/// Directories of credentials.
const SECRET_DIRS: &[&str] = &[
    "/run/secrets",
    "/run/credentials",
    "/run/keys",
    "/root/.ssh",
    "/root/.gnupg",
];
/// Per-process files that expose another process's memory, environment or registers.
const PROC_SECRETS: &[&str] = &[
    "mem",
    "environ",
    "pagemap",
    "syscall",
    "auxv",
    "stack",
    "personality",
];

/// Files and directories that decide who logs in, with which rights, and what runs at login.
const LOGIN_FILES: &[&str] = &[
    "/etc/passwd",
    "/etc/group",
    "/etc/sudoers",
    "/etc/sudoers.d",
    "/etc/pam.d",
    "/etc/ssh",
    "/etc/profile",
    "/etc/profile.d",
    "/etc/bashrc",
    "/etc/bash.bashrc",
    "/etc/zshrc",
    "/etc/zshenv",
    "/etc/zprofile",
    "/etc/environment",
    "/etc/security",
    "/etc/login.defs",
    "/etc/nsswitch.conf",
    "/etc/doas.conf",
    "/etc/systemd",
    "/etc/cron.d",
    "/etc/crontab",
    "/var/spool/cron",
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/run/current-system",
    "/run/wrappers",
    "/nix/var/nix/profiles",
    "/root",
];
/// Names in a home directory that a shell or sshd reads at login.
const HOME_LOGIN: &[&str] = &[
    ".ssh",
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".profile",
    ".zshrc",
    ".zshenv",
    ".zprofile",
    ".zlogin",
    ".login",
    ".cshrc",
    ".tcshrc",
    ".pam_environment",
    ".config",
    ".local",
    ".nix-profile",
    "bin",
    ".gnupg",
];

/// Home directories of the machine's accounts: every home `/etc/passwd` names (the accounts
/// the running system has) and every home the configuration tree gives a user (the accounts the
/// next generation has). When a home in the tree cannot be decided, `undecided` is set and a
/// login file is recognised by its name anywhere (`.ssh`, shell start-up files).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Homes {
    /// Absolute home directories (`/home/*` is recognised without being listed).
    pub(crate) dirs: Vec<PathBuf>,
    /// Some home could not be decided.
    pub(crate) undecided: bool,
}

impl Homes {
    /// The homes of an `/etc/passwd` text (the sixth field of each line; malformed lines and
    /// relative homes are skipped).
    pub(crate) fn from_passwd(text: &str) -> Homes {
        let mut h = Homes::default();
        for line in text.lines() {
            if let Some(home) = line.split(':').nth(5) {
                h.add(Path::new(home));
            }
        }
        h
    }

    /// Add a home (relative ones are ignored: NixOS refuses them).
    pub(crate) fn add(&mut self, home: &Path) {
        if home.is_absolute() && !self.dirs.iter().any(|d| d == home) {
            self.dirs.push(home.to_path_buf());
        }
    }
}

fn names(p: &Path) -> Vec<String> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_string_lossy().into_owned()),
            _ => None,
        })
        .collect()
}

/// Whether `real` (a resolved absolute path) is a credential; the reason when it is.
pub(crate) fn unreadable(real: &Path) -> Option<&'static str> {
    if SECRET_FILES.iter().any(|f| real == Path::new(f))
        || SECRET_DIRS.iter().any(|d| real.starts_with(d))
    {
        return Some("credentials (password hashes, keys, secrets) are never shown to the agent");
    }
    let n = names(real);
    if n.first().is_some_and(|f| f == "proc")
        && n.len() >= 3
        && PROC_SECRETS.contains(&n[n.len() - 1].as_str())
    {
        return Some("a process's memory, environment and registers are never shown to the agent");
    }
    // Private keys in any `.ssh` directory (`id_ed25519`, `ssh_host_ed25519_key`, ...).
    if let (Some(dir), Some(file)) = (n.len().checked_sub(2).and_then(|i| n.get(i)), n.last()) {
        let ssh_dir = dir == ".ssh" || (dir == "ssh" && n.len() == 3 && n[0] == "etc");
        if ssh_dir && !file.ends_with(".pub") && (file.starts_with("id_") || file.ends_with("_key"))
        {
            return Some("private SSH keys are never shown to the agent");
        }
    }
    None
}

/// Whether `real` is never written through `/fs/write`, approved or not: kernel and process
/// memory and the like, which are not files one replaces.
pub(crate) fn never_written(real: &Path) -> Option<&'static str> {
    let n = names(real);
    let proc_secret = n.first().is_some_and(|f| f == "proc" || f == "sys");
    let dev = ["/dev/mem", "/dev/kmem", "/dev/port"]
        .iter()
        .any(|f| real == Path::new(f));
    (proc_secret || dev)
        .then_some("kernel and process memory and state are not files the agent replaces")
}

const HOME_WHY: &str = "a home directory's login files (.ssh, shell start-up files, ~/bin) decide who logs in and what a person's shell runs; a person changes them";

/// Whether writing `real` changes who can log in or what runs at login; the reason when so.
/// A home's login files count under every home in `homes` (and `/home/*`).
pub(crate) fn login_path(real: &Path, homes: &Homes) -> Option<&'static str> {
    if unreadable(real).is_some() {
        return Some("credentials are changed by a person, not the agent");
    }
    if LOGIN_FILES.iter().any(|f| real.starts_with(f)) {
        return Some("this file decides who logs in, with which rights, or what runs at login (accounts, sudo, PAM, sshd, shell start-up, PATH); a person changes it, or the agent through the configuration (config_set) and SafeSwitch");
    }
    let n = names(real);
    if n.len() >= 3 && n[0] == "home" && HOME_LOGIN.contains(&n[2].as_str()) {
        return Some(HOME_WHY);
    }
    let in_home = |h: &PathBuf| {
        real.strip_prefix(h)
            .ok()
            .and_then(|r| names(r).into_iter().next())
            .is_some_and(|first| HOME_LOGIN.contains(&first.as_str()))
    };
    if homes.dirs.iter().any(in_home) {
        return Some(HOME_WHY);
    }
    // A home that cannot be decided may be anywhere: a login file's own name decides.
    if homes.undecided
        && n.iter()
            .any(|c| c.starts_with('.') && HOME_LOGIN.contains(&c.as_str()))
    {
        return Some("a home directory's login files (.ssh, shell start-up files) decide who logs in; where the configuration's homes cannot be decided, such a name anywhere counts; a person changes them");
    }
    None
}

/// Whether binding `real` writable would expose a login path under it (the reason when so):
/// it is one, or it holds one, or it holds a home.
pub(crate) fn contains_login_path(real: &Path, homes: &Homes) -> Option<&'static str> {
    if let Some(w) = login_path(real, homes) {
        return Some(w);
    }
    let n = names(real);
    let home = n.first().is_some_and(|f| f == "home") && n.len() <= 2;
    if home
        || homes.dirs.iter().any(|h| h.starts_with(real))
        || homes.undecided
        || LOGIN_FILES
            .iter()
            .chain(SECRET_FILES)
            .chain(SECRET_DIRS)
            .any(|f| Path::new(f).starts_with(real))
    {
        return Some("it contains files that decide who logs in or what runs at login; name a directory below them");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_login_files_are_told_apart_from_ordinary_files() {
        let none = Homes::default();
        for p in [
            "/etc/shadow",
            "/proc/self/mem",
            "/proc/1/environ",
            "/proc/self/task/5/mem",
            "/root/.ssh/id_ed25519",
            "/home/alice/.ssh/id_rsa",
            "/etc/ssh/ssh_host_ed25519_key",
            "/run/secrets/db",
            "/dev/mem",
        ] {
            assert!(unreadable(Path::new(p)).is_some(), "{p} is a credential");
        }
        for p in [
            "/etc/hosts",
            "/proc/self/status",
            "/proc/meminfo",
            "/home/alice/.ssh/id_rsa.pub",
            "/etc/ssh/ssh_host_ed25519_key.pub",
            "/etc/passwd",
            "/home/alice/notes.txt",
        ] {
            assert!(unreadable(Path::new(p)).is_none(), "{p} can be read");
        }
        for p in [
            "/etc/passwd",
            "/etc/sudoers.d/x",
            "/etc/pam.d/sshd",
            "/home/alice/.bashrc",
            "/home/alice/.ssh/authorized_keys",
            "/home/alice/bin/agentctl",
            "/usr/local/bin/agentctl",
            "/run/current-system/sw/bin/agentctl",
            "/root/.profile",
            "/etc/shadow",
            "/etc/ssh/sshd_config",
        ] {
            assert!(
                login_path(Path::new(p), &none).is_some(),
                "{p} needs a person"
            );
        }
        for p in [
            "/etc/hosts",
            "/home/alice/project/main.rs",
            "/var/lib/app/data",
            "/srv/www/index.html",
            "/tmp/x",
        ] {
            assert!(login_path(Path::new(p), &none).is_none(), "{p} is ordinary");
        }
        for p in ["/", "/etc", "/home", "/home/alice", "/usr", "/run"] {
            assert!(
                contains_login_path(Path::new(p), &none).is_some(),
                "{p} contains login files"
            );
        }
        for p in ["/home/alice/project", "/srv/www", "/var/lib/app"] {
            assert!(
                contains_login_path(Path::new(p), &none).is_none(),
                "{p} is ordinary"
            );
        }
    }

    #[test]
    fn login_files_are_found_under_every_home_the_accounts_name() {
        let homes = Homes::from_passwd(
            "root:x:0:0:root:/root:/bin/sh\nsvc:x:990:990::/var/lib/svc:/bin/sh\nweb:x:991:991::/srv/www:/bin/sh\nop:x:992:992::/opt/op:/bin/sh\nbroken line\nrel:x:1:1::relative:/bin/sh\n",
        );
        assert_eq!(homes.dirs.len(), 4, "{homes:?}");
        for p in [
            "/var/lib/svc/.ssh/authorized_keys",
            "/var/lib/svc/.bashrc",
            "/srv/www/.ssh/authorized_keys2",
            "/srv/www/.profile",
            "/opt/op/.ssh",
            "/opt/op/bin/ls",
            "/root/.ssh/authorized_keys",
        ] {
            assert!(
                login_path(Path::new(p), &homes).is_some(),
                "{p} needs a person"
            );
        }
        for p in [
            "/var/lib/svc/data/db",
            "/var/lib/svcx/.ssh/authorized_keys",
            "/srv/www/index.html",
            "/srv/other/.bashrc",
            "/opt/op/share/.ssh",
        ] {
            assert!(
                login_path(Path::new(p), &homes).is_none(),
                "{p} is ordinary"
            );
        }
        // A writable bind holding a home exposes its login files; one below it does not.
        for p in ["/var/lib", "/var/lib/svc", "/srv", "/opt"] {
            assert!(contains_login_path(Path::new(p), &homes).is_some(), "{p}");
        }
        for p in ["/var/lib/svc/data", "/srv/other", "/opt/other"] {
            assert!(contains_login_path(Path::new(p), &homes).is_none(), "{p}");
        }
        // A home that cannot be decided: login files are known by name anywhere.
        let unknown = Homes {
            dirs: Vec::new(),
            undecided: true,
        };
        assert!(login_path(Path::new("/srv/x/.ssh/authorized_keys"), &unknown).is_some());
        assert!(login_path(Path::new("/srv/x/.bashrc"), &unknown).is_some());
        assert!(login_path(Path::new("/srv/x/index.html"), &unknown).is_none());
        assert!(contains_login_path(Path::new("/srv/x"), &unknown).is_some());
    }

    #[test]
    fn the_machines_own_accounts_homes_are_recognised() {
        let text = std::fs::read_to_string("/etc/passwd").expect("/etc/passwd");
        let homes = Homes::from_passwd(&text);
        for line in text.lines() {
            let Some(home) = line.split(':').nth(5).filter(|h| h.starts_with('/')) else {
                continue;
            };
            let keys = Path::new(home).join(".ssh/authorized_keys");
            assert!(login_path(&keys, &homes).is_some(), "{}", keys.display());
        }
    }
}

/// agentd's own key files wherever the configuration puts them (the capability signing key, the
/// checkpoint and witness keys): masked from every command it runs, beside the boundary's
/// [`osmoda_sandbox::CREDENTIALS`]. Keys left in the state dir are hidden with it.
pub(crate) fn key_files(st: &crate::AppState) -> impl Iterator<Item = &std::path::Path> {
    let s = &st.settings;
    [
        s.capability_key.as_deref(),
        s.checkpoint.as_ref().and_then(|c| c.key_file.as_deref()),
        s.witness.as_ref().and_then(|w| w.key_file.as_deref()),
    ]
    .into_iter()
    .flatten()
}
