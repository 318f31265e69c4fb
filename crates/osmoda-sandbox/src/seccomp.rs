//! The seccomp filters of the Ring 1 and Ring 2 sandboxes, compiled with `seccompiler` (the
//! rust-vmm crate Firecracker uses) and handed to bubblewrap as BPF programs
//! (`--add-seccomp-fd`).
//!
//! A deny list in the manner of Docker's and Flatpak's default profiles: everything that
//! changes the kernel's or another process's state from inside (`ptrace`, module loading,
//! `kexec`, mounts, new namespaces, `bpf`, `perf_event_open`, keyrings, `userfaultfd`,
//! `io_uring`, handle-based opens, clock setting, ...) fails with `EPERM`. Sockets are limited by
//! family: Ring 2 may create only `AF_UNIX` sockets (so no inet socket at all, even on its own
//! loopback), Ring 1 also `AF_INET`/`AF_INET6` (its namespace has only loopback, where the
//! egress relay listens). `clone3` answers `ENOSYS` from a second program, so the C library
//! falls back to `clone`, whose namespace flags the first program can inspect. On x86_64 a
//! third program refuses the whole x32 ABI ([`x32_program`]): its calls carry the x86_64
//! architecture and their number plus [`X32_SYSCALL_BIT`], so a list of x86_64 numbers never
//! matches them.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};

/// Which sockets a sandbox may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sockets {
    /// `AF_UNIX` only (Ring 2).
    UnixOnly,
    /// `AF_UNIX`, `AF_INET`, `AF_INET6` (Ring 1; its network namespace has only loopback).
    UnixAndInet,
}

/// System calls no sandboxed command may make (the answer is `EPERM`).
pub const DENIED: &[(&str, i64)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("chroot", libc::SYS_chroot),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("fsopen", libc::SYS_fsopen),
    ("fsmount", libc::SYS_fsmount),
    ("fsconfig", libc::SYS_fsconfig),
    ("fspick", libc::SYS_fspick),
    ("unshare", libc::SYS_unshare),
    ("setns", libc::SYS_setns),
    ("swapon", libc::SYS_swapon),
    ("swapoff", libc::SYS_swapoff),
    ("reboot", libc::SYS_reboot),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("open_by_handle_at", libc::SYS_open_by_handle_at),
    ("name_to_handle_at", libc::SYS_name_to_handle_at),
    ("acct", libc::SYS_acct),
    ("quotactl", libc::SYS_quotactl),
    ("syslog", libc::SYS_syslog),
    ("settimeofday", libc::SYS_settimeofday),
    ("clock_settime", libc::SYS_clock_settime),
    ("clock_adjtime", libc::SYS_clock_adjtime),
    ("adjtimex", libc::SYS_adjtimex),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("fanotify_init", libc::SYS_fanotify_init),
    ("vhangup", libc::SYS_vhangup),
    ("sethostname", libc::SYS_sethostname),
    ("setdomainname", libc::SYS_setdomainname),
];

/// Why a filter could not be built.
#[derive(Debug, thiserror::Error)]
#[error("cannot build the sandbox's seccomp filter for {arch}: {source}; Ring 1 and Ring 2 sandboxes need x86_64, aarch64 or riscv64")]
pub struct FilterError {
    arch: &'static str,
    source: seccompiler::BackendError,
}

fn cond(
    arg: u8,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, seccompiler::BackendError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value)
}

fn arch() -> Result<TargetArch, FilterError> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|source| FilterError {
        arch: std::env::consts::ARCH,
        source,
    })
}

/// The namespace flags `clone` may not be given.
const NEW_NAMESPACES: &[u64] = &[
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// The main program: [`DENIED`], `clone` with a namespace flag, sockets outside `sockets`,
/// and the terminal-injection `ioctl`s (`TIOCSTI`, `TIOCLINUX`) → `EPERM`; the rest allowed.
///
/// # Errors
/// On an architecture seccompiler does not know.
#[allow(clippy::unnecessary_cast)] // the ioctl numbers' C type differs between libcs
pub fn deny_program(sockets: Sockets) -> Result<BpfProgram, FilterError> {
    let arch = arch()?;
    let build = || -> Result<BpfProgram, seccompiler::BackendError> {
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
        for (_, nr) in DENIED {
            rules.insert(*nr, Vec::new());
        }
        let clone_rules = NEW_NAMESPACES
            .iter()
            .map(|f| SeccompRule::new(vec![cond(0, SeccompCmpOp::MaskedEq(*f), *f)?]))
            .collect::<Result<Vec<_>, _>>()?;
        rules.insert(libc::SYS_clone, clone_rules);
        let mut family = vec![cond(0, SeccompCmpOp::Ne, libc::AF_UNIX as u64)?];
        if sockets == Sockets::UnixAndInet {
            family.push(cond(0, SeccompCmpOp::Ne, libc::AF_INET as u64)?);
            family.push(cond(0, SeccompCmpOp::Ne, libc::AF_INET6 as u64)?);
        }
        rules.insert(libc::SYS_socket, vec![SeccompRule::new(family)?]);
        rules.insert(
            libc::SYS_ioctl,
            vec![
                SeccompRule::new(vec![cond(1, SeccompCmpOp::Eq, libc::TIOCSTI as u64)?])?,
                SeccompRule::new(vec![cond(1, SeccompCmpOp::Eq, libc::TIOCLINUX as u64)?])?,
            ],
        );
        SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )?
        .try_into()
    };
    build().map_err(|source| FilterError {
        arch: std::env::consts::ARCH,
        source,
    })
}

/// The second program: `clone3` → `ENOSYS` (its flags are in memory a filter cannot read; the C
/// library then uses `clone`).
///
/// # Errors
/// On an architecture seccompiler does not know.
pub fn clone3_program() -> Result<BpfProgram, FilterError> {
    let arch = arch()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    rules.insert(libc::SYS_clone3, Vec::new());
    SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .and_then(TryInto::try_into)
    .map_err(|source| FilterError {
        arch: std::env::consts::ARCH,
        source,
    })
}

/// The bit x86_64 sets in the number of an x32 system call (`__X32_SYSCALL_BIT`).
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// `AUDIT_ARCH_X86_64` (`EM_X86_64 | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE`), the architecture
/// the kernel reports for both x86_64 and x32 calls.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;

/// The third program, on x86_64 only (`None` elsewhere: no other architecture has a second
/// ABI under the same audit architecture): every system call whose number has
/// [`X32_SYSCALL_BIT`] set → `EPERM`. Without it a kernel built with `CONFIG_X86_X32_ABI` would
/// run x32 `ptrace`, `mount`, `unshare`, ... past [`deny_program`], which lists x86_64 numbers
/// (seccompiler matches numbers exactly). Written by hand: seccompiler has no rule for a range
/// of numbers. Calls of another architecture fall through to `Allow` here; the first program
/// kills them.
pub fn x32_program() -> Option<BpfProgram> {
    if std::env::consts::ARCH != "x86_64" {
        return None;
    }
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump = |code: u32, k: u32, jt: u8, jf: u8| sock_filter {
        code: code as u16,
        jt,
        jf,
        k,
    };
    // `struct seccomp_data`: `nr` at offset 0, `arch` at 4.
    Some(vec![
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 4),
        // Not x86_64's audit architecture: on to the last instruction, `Allow`.
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH_X86_64,
            0,
            3,
        ),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        jump(
            libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K,
            X32_SYSCALL_BIT,
            0,
            1,
        ),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32,
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ])
}

/// Every program a sandbox gets, in the order bwrap installs them: [`deny_program`],
/// [`clone3_program`] and, on x86_64, [`x32_program`].
///
/// # Errors
/// On an architecture seccompiler does not know.
pub fn programs(sockets: Sockets) -> Result<Vec<BpfProgram>, FilterError> {
    let mut all = vec![deny_program(sockets)?, clone3_program()?];
    all.extend(x32_program());
    Ok(all)
}

/// The program as the kernel (and bwrap) read it: `struct sock_filter` in native byte order.
pub fn to_bytes(program: &BpfProgram) -> Vec<u8> {
    let mut out = Vec::with_capacity(program.len() * 8);
    for i in program {
        out.extend_from_slice(&i.code.to_ne_bytes());
        out.push(i.jt);
        out.push(i.jf);
        out.extend_from_slice(&i.k.to_ne_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_rings_compile_and_differ_only_in_sockets() {
        let r2 = deny_program(Sockets::UnixOnly).unwrap();
        let r1 = deny_program(Sockets::UnixAndInet).unwrap();
        assert!(!r2.is_empty() && r1.len() > r2.len());
        assert_eq!(to_bytes(&r2).len(), r2.len() * 8);
        assert!(!clone3_program().unwrap().is_empty());
        // x86_64 gets the x32 program too; nothing else has that ABI.
        let n = programs(Sockets::UnixOnly).unwrap().len();
        assert_eq!(n, if cfg!(target_arch = "x86_64") { 3 } else { 2 });
    }
}
