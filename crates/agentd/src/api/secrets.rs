//! What `/fs/*` and `/system/exec` never touch for the agent, beyond agentd's own state and the
//! boundary paths (`fs::Fence`): credentials nobody may read (password hashes, private keys,
//! process memory and environments), and the files that decide who logs in and what a person's
//! shell runs (account databases, sudo, PAM, sshd, shell start-up files, `authorized_keys`, the
//! directories on `PATH`), which only a person changes.

use std::path::{Component, Path};

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

/// Whether writing `real` changes who can log in or what runs at login; the reason when so.
pub(crate) fn login_path(real: &Path) -> Option<&'static str> {
    if unreadable(real).is_some() {
        return Some("credentials are changed by a person, not the agent");
    }
    if LOGIN_FILES.iter().any(|f| real.starts_with(f)) {
        return Some("this file decides who logs in, with which rights, or what runs at login (accounts, sudo, PAM, sshd, shell start-up, PATH); a person changes it, or the agent through the configuration (config_set) and SafeSwitch");
    }
    let n = names(real);
    if n.len() >= 3 && n[0] == "home" && HOME_LOGIN.contains(&n[2].as_str()) {
        return Some("a home directory's login files (.ssh, shell start-up files, ~/bin) decide who logs in and what a person's shell runs; a person changes them");
    }
    None
}

/// Whether binding `real` writable would expose a login path under it (the reason when so).
pub(crate) fn contains_login_path(real: &Path) -> Option<&'static str> {
    if let Some(w) = login_path(real) {
        return Some(w);
    }
    let n = names(real);
    let home = n.first().is_some_and(|f| f == "home") && n.len() <= 2;
    if home
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
            assert!(login_path(Path::new(p)).is_some(), "{p} needs a person");
        }
        for p in [
            "/etc/hosts",
            "/home/alice/project/main.rs",
            "/var/lib/app/data",
            "/srv/www/index.html",
            "/tmp/x",
        ] {
            assert!(login_path(Path::new(p)).is_none(), "{p} is ordinary");
        }
        for p in ["/", "/etc", "/home", "/home/alice", "/usr", "/run"] {
            assert!(
                contains_login_path(Path::new(p)).is_some(),
                "{p} contains login files"
            );
        }
        for p in ["/home/alice/project", "/srv/www", "/var/lib/app"] {
            assert!(
                contains_login_path(Path::new(p)).is_none(),
                "{p} is ordinary"
            );
        }
    }
}
