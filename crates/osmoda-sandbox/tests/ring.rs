//! The Ring 2 sandbox for real (bubblewrap, seccomp, cgroups or rlimits), each test inside a
//! network namespace it creates with only `lo`: no inet socket, no secrets, no daemon socket,
//! no capabilities; killed at its timeout with its children; memory, task and output limits.
//! Ring 1 (the egress relay) is tested end to end in osmoda-egress's `tests/ring1.rs` and
//! through agentd in `agentd/tests/sandbox.rs`. Needs root; prints `skipped:` otherwise.
#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use osmoda_sandbox::{Bind, Boundary, Exit, Limits, RingOutput, RingSpec};

#[path = "support/netns.rs"]
mod netns;
#[path = "support/swap.rs"]
mod swap;
use netns::in_netns;
use swap::Swapper;

async fn sh(script: &str) -> RingOutput {
    let mut spec = RingSpec::new(["sh", "-c", script]);
    spec.timeout = Duration::from_secs(30);
    Boundary::osmoda_default().run_ring(&spec).await.unwrap()
}

fn chmod(p: &Path, mode: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

const PERL_SOCKET: &str = r#"use Socket; for my $f (["inet", AF_INET], ["inet6", AF_INET6], ["netlink", 16], ["packet", 17], ["unix", AF_UNIX]) { if (socket(my $s, $f->[1], ($f->[1] == 16 || $f->[1] == 17) ? SOCK_RAW : SOCK_STREAM, 0)) { print "$f->[0] opened\n" } else { print "$f->[0] refused: $!\n" } }"#;

#[test]
fn ring2_cannot_open_an_inet_socket_and_sees_only_loopback() {
    in_netns("ring2_network", || async {
        let mut spec = RingSpec::new(["perl", "-e", PERL_SOCKET]);
        spec.timeout = Duration::from_secs(30);
        let out = Boundary::osmoda_default().run_ring(&spec).await.unwrap();
        let text = out.output.stdout_lossy();
        assert!(out.output.success(), "{out:?}");
        for fam in ["inet", "inet6", "netlink", "packet"] {
            assert!(
                text.contains(&format!("{fam} refused: Operation not permitted")),
                "{fam}: {text}"
            );
        }
        assert!(text.contains("unix opened"), "{text}");
        // Its namespace has only loopback (the host's interfaces are not there).
        let out = sh("cat /proc/net/dev").await;
        let ifaces: Vec<_> = out
            .output
            .stdout_lossy()
            .lines()
            .skip(2)
            .map(|l| l.split(':').next().unwrap().trim().to_string())
            .collect();
        assert_eq!(ifaces, ["lo"], "{out:?}");
    });
}

#[test]
fn ring2_sees_no_secrets_no_daemon_state_and_no_daemon_socket() {
    in_netns("ring2_secrets", || async {
        // Stand-ins for keyd's state and agentd's socket, outside /tmp and readable by all, so
        // only the sandbox's file system can hide them.
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        chmod(d.path(), 0o755);
        let keyd = d.path().join("keyd");
        std::fs::create_dir(&keyd).unwrap();
        chmod(&keyd, 0o755);
        std::fs::write(keyd.join("wallets.enc"), "secret-wallet").unwrap();
        chmod(&keyd.join("wallets.enc"), 0o644);
        let sock = d.path().join("agentd.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        chmod(&sock, 0o666);
        // The same socket is reachable from outside (so the test can fail).
        std::os::unix::net::UnixStream::connect(&sock).unwrap();
        drop(listener.accept().unwrap());
        let script = format!(
            "cat /etc/shadow; echo shadow=$?; cat {k}/wallets.enc; echo keyd=$?; \
             ls /var/lib/osmoda /run/osmoda; echo state=$?; \
             perl -e 'use Socket; socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die; \
               connect($s, pack_sockaddr_un(\"{s}\")) ? print \"connected\\n\" : print \"refused: $!\\n\"'; \
             id -u; ls /",
            k = keyd.display(),
            s = sock.display()
        );
        let out = sh(&script).await;
        let text = out.output.stdout_lossy();
        assert!(text.contains("shadow=1"), "{text}");
        assert!(text.contains("keyd=1"), "{text}");
        assert!(!text.contains("secret-wallet"), "{text}");
        assert!(text.contains("state=2"), "{text}");
        assert!(
            text.contains("refused: No such file or directory"),
            "{text}"
        );
        assert!(!text.contains("connected"), "{text}");
        assert!(text.contains("\n65534\n"), "runs as nobody: {text}");
        // The root holds the software and nothing else of the host's.
        for absent in ["root", "home", "srv", "boot"] {
            assert!(!text.lines().any(|l| l == absent), "{absent}: {text}");
        }
    });
}

#[test]
fn ring2_has_no_capabilities_and_no_way_to_regain_them() {
    in_netns("ring2_caps", || async {
        let out = sh(
            "grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; \
             unshare -U true; echo unshare=$?; \
             touch /x; echo root_write=$?; \
             touch /tmp/x; echo tmp_write=$?",
        )
        .await;
        let text = out.output.stdout_lossy();
        for line in [
            "CapEff:\t0000000000000000",
            "CapPrm:\t0000000000000000",
            "CapBnd:\t0000000000000000",
            "CapAmb:\t0000000000000000",
            "NoNewPrivs:\t1",
            "Seccomp:\t2",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert!(text.contains("unshare=1"), "{text}");
        assert!(text.contains("root_write=1"), "{text}");
        assert!(text.contains("tmp_write=0"), "{text}");
    });
}

/// x32 calls of each kind the deny list refuses, and a harmless one: x86_64's second ABI
/// (the x86_64 audit architecture, the number plus `__X32_SYSCALL_BIT`), which a list of x86_64
/// numbers never matches.
const PERL_X32: &str = r#"my $bit = 0x40000000; for my $c (["getpid", 39], ["socket", 41, 2, 1, 0], ["unshare", 272, 0x10000000], ["mount", 165, 0, 0, 0, 0, 0], ["ptrace", 521, 16, 1, 0, 0], ["keyctl", 250, 0, 0, 0, 0, 0]) { my ($name, $nr, @a) = @$c; $! = 0; my $r = syscall($bit | $nr, @a); print "$name $r ", $! + 0, "\n" } print "native ", (syscall(39) > 0 ? "ok" : "failed"), "\n""#;

#[cfg(target_arch = "x86_64")]
#[test]
fn ring2_refuses_the_x32_abi_outright() {
    in_netns("ring2_x32", || async {
        let mut spec = RingSpec::new(["perl", "-e", PERL_X32]);
        spec.timeout = Duration::from_secs(30);
        let out = Boundary::osmoda_default().run_ring(&spec).await.unwrap();
        let text = out.output.stdout_lossy();
        assert!(out.output.success(), "{out:?}");
        // EPERM (1) from the sandbox's filter for every x32 call, the harmless one too.
        for name in ["getpid", "socket", "unshare", "mount", "ptrace", "keyctl"] {
            assert!(text.contains(&format!("{name} -1 1\n")), "{name}: {text}");
        }
        assert!(text.contains("native ok"), "{text}");
        // Outside, the same calls reach the kernel: ENOSYS (38) on a kernel without x32, or
        // run on one with it; never the filter's EPERM for getpid.
        let host = std::process::Command::new("perl")
            .args(["-e", PERL_X32])
            .output()
            .unwrap();
        let host = String::from_utf8_lossy(&host.stdout);
        assert!(!host.contains("getpid -1 1\n"), "{host}");
        assert!(host.contains("native ok"), "{host}");
    });
}

fn processes_with(marker: &str) -> usize {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(marker))
        })
        .count()
}

#[test]
fn ring2_is_killed_at_its_timeout_with_its_children() {
    in_netns("ring2_timeout", || async {
        let marker = format!("{}", 7_000_000 + std::process::id());
        let mut spec = RingSpec::new([
            "sh".to_string(),
            "-c".to_string(),
            format!("sleep {marker} & sleep {marker} & (sleep {marker} &) ; echo started; wait"),
        ]);
        spec.timeout = Duration::from_secs(2);
        let out = Boundary::osmoda_default().run_ring(&spec).await.unwrap();
        assert_eq!(out.output.exit, Exit::TimedOut, "{out:?}");
        assert_eq!(out.output.stdout_lossy(), "started\n");
        assert_eq!(processes_with(&marker), 0, "every child is gone");
    });
}

#[test]
fn ring2_limits_memory_tasks_and_output() {
    in_netns("ring2_limits", || async {
        let b = Boundary::osmoda_default();
        // Memory: 300 MiB touched under a 64 MiB budget is killed (or refused by the rlimit).
        let mut spec = RingSpec::new([
            "perl",
            "-e",
            "my $x = 'a' x (300 * 1024 * 1024); print length($x), \"\\n\"",
        ]);
        spec.timeout = Duration::from_secs(60);
        spec.limits = Limits {
            memory_bytes: 64 << 20,
            tasks: 64,
        };
        let out = b.run_ring(&spec).await.unwrap();
        assert!(!out.output.success(), "{out:?}");
        assert!(!out.output.stdout_lossy().contains("314572800"), "{out:?}");
        if out.enforced_by != osmoda_sandbox::Enforcement::Rlimit {
            assert!(out.memory_exceeded, "{out:?}");
        }
        // Tasks: 40 background sleeps cannot all start under a budget of 16, and can under 128.
        for (tasks, started) in [(16, false), (128, true)] {
            let mut spec = RingSpec::new([
                "sh",
                "-c",
                "for i in $(seq 40); do sleep 30 & done; echo all-started",
            ]);
            spec.timeout = Duration::from_secs(20);
            spec.limits = Limits {
                memory_bytes: 256 << 20,
                tasks,
            };
            let out = b.run_ring(&spec).await.unwrap();
            assert_eq!(
                out.output.stdout_lossy().contains("all-started"),
                started,
                "{tasks}: {out:?}"
            );
            if !started {
                assert!(out.output.stderr_lossy().contains("fork"), "{out:?}");
            }
        }
        // Output: capped and marked.
        let mut spec = RingSpec::new(["head", "-c", "200000", "/dev/zero"]);
        spec.output_limit = 1000;
        spec.timeout = Duration::from_secs(20);
        let out = b.run_ring(&spec).await.unwrap();
        assert_eq!(out.output.stdout.len(), 1000);
        assert!(out.output.truncated);
    });
}

#[test]
fn declared_binds_are_visible_and_masks_hold_inside_them() {
    in_netns("ring_binds", || async {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        chmod(d.path(), 0o777);
        let data = d.path().join("data");
        std::fs::create_dir(&data).unwrap();
        chmod(&data, 0o777);
        std::fs::write(data.join("in"), "declared\n").unwrap();
        chmod(&data.join("in"), 0o644);
        let hidden = data.join("admin");
        std::fs::create_dir(&hidden).unwrap();
        std::fs::write(hidden.join("token"), "s3cret").unwrap();
        chmod(&hidden, 0o755);
        chmod(&hidden.join("token"), 0o644);
        let ro = d.path().join("ro");
        std::fs::create_dir(&ro).unwrap();
        chmod(&ro, 0o777);
        let mut spec = RingSpec::new([
            "sh".to_string(),
            "-c".to_string(),
            format!(
                "cat {data}/in; echo x > {data}/out; echo w=$?; cat {data}/admin/token; echo h=$?; \
                 echo y > {ro}/out; echo ro=$?",
                data = data.display(),
                ro = ro.display()
            ),
        ]);
        spec.timeout = Duration::from_secs(20);
        spec.binds = vec![
            Bind {
                path: data.clone(),
                writable: true,
            },
            Bind {
                path: ro.clone(),
                writable: false,
            },
        ];
        let out = Boundary::new([hidden.clone()])
            .run_ring(&spec)
            .await
            .unwrap();
        let text = out.output.stdout_lossy();
        assert!(text.starts_with("declared\nw=0\n"), "{out:?}");
        assert!(text.contains("h=1") && !text.contains("s3cret"), "{out:?}");
        assert!(!text.contains("ro=0"), "{out:?}");
        assert!(data.join("out").exists());
        assert!(!ro.join("out").exists());
        // A bind that does not exist is refused before anything runs.
        spec.binds = vec![Bind {
            path: d.path().join("missing"),
            writable: false,
        }];
        let e = Boundary::osmoda_default()
            .run_ring(&spec)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("must exist"), "{e}");
    });
}

#[test]
fn binds_never_show_daemon_sockets_credentials_or_kernel_trees() {
    in_netns("ring_bind_rules", || async {
        // A stand-in daemon socket where the module puts them (/run/osmoda), connectable by all.
        let made_dir = !Path::new("/run/osmoda").exists();
        std::fs::create_dir_all("/run/osmoda").unwrap();
        let sock = Path::new("/run/osmoda").join(format!("ring-test-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        chmod(&sock, 0o666);
        std::os::unix::net::UnixStream::connect(&sock).unwrap();
        drop(listener.accept().unwrap());
        // /run and /etc bound read-only: what they hold is visible, except the hidden parts.
        let script = format!(
            "test -f /etc/os-release && echo etc-visible; test -d /run/lock && echo run-visible; \
             test -s /etc/shadow && echo shadow-visible; ls -A /etc/ssh | wc -l; \
             perl -e 'use Socket; socket(my $s, AF_UNIX, SOCK_STREAM, 0) or die; \
               connect($s, pack_sockaddr_un(\"{}\")) ? print \"connected\\n\" : print \"refused: $!\\n\"'",
            sock.display()
        );
        let mut spec = RingSpec::new(["sh", "-c", &script]);
        spec.timeout = Duration::from_secs(20);
        spec.binds = ["/run", "/etc"]
            .map(|p| Bind {
                path: p.into(),
                writable: false,
            })
            .to_vec();
        let out = Boundary::osmoda_default().run_ring(&spec).await.unwrap();
        let text = out.output.stdout_lossy();
        let cleanup = || {
            let _ = std::fs::remove_file(&sock);
            if made_dir {
                let _ = std::fs::remove_dir("/run/osmoda");
            }
        };
        cleanup();
        assert!(text.starts_with("etc-visible\n"), "{out:?}");
        if Path::new("/run/lock").is_dir() {
            assert!(text.contains("run-visible"), "{out:?}");
        }
        assert!(!text.contains("shadow-visible"), "{out:?}");
        assert!(text.contains("\n0\n"), "/etc/ssh is empty inside: {out:?}");
        assert!(text.contains("refused: No such file"), "{out:?}");
        // Binds of or inside those paths, and of kernel interfaces, are refused before anything
        // runs; so is a bind inside a path the boundary hides.
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        let hidden = d.path().join("hidden");
        std::fs::create_dir_all(hidden.join("inner")).unwrap();
        let boundary = Boundary::new([hidden.clone()]);
        for (path, why) in [
            ("/run/dbus", "never shown"),
            ("/etc/shadow", "never shown"),
            ("/etc/ssh", "never shown"),
            ("/root", "never shown"),
            ("/proc", "kernel interfaces"),
            ("/proc/self", "kernel interfaces"),
            ("/sys/fs", "kernel interfaces"),
            ("/dev/shm", "kernel interfaces"),
            (hidden.join("inner").to_str().unwrap(), "boundary hides"),
            (hidden.to_str().unwrap(), "boundary hides"),
        ] {
            if !Path::new(path).exists() {
                continue;
            }
            spec.binds = vec![Bind {
                path: path.into(),
                writable: false,
            }];
            let e = boundary.run_ring(&spec).await.unwrap_err();
            assert!(e.to_string().contains(why), "{path}: {e}");
        }
    });
}

#[test]
fn nested_masks_are_applied_once_from_the_outermost() {
    in_netns("ring_nested_masks", || async {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        chmod(d.path(), 0o755);
        let outer = d.path().join("state");
        let inner = outer.join("agentd");
        std::fs::create_dir_all(&inner).unwrap();
        std::fs::write(inner.join("key"), "s3cret").unwrap();
        std::fs::write(outer.join("other"), "s3cret").unwrap();
        for p in [&outer, &inner] {
            chmod(p, 0o755);
        }
        for f in [inner.join("key"), outer.join("other")] {
            chmod(&f, 0o644);
        }
        std::fs::write(d.path().join("visible"), "shown\n").unwrap();
        chmod(&d.path().join("visible"), 0o644);
        let script = format!(
            "cat {d}/visible; cat {d}/state/other {d}/state/agentd/key; echo hidden=$?",
            d = d.path().display()
        );
        // Both orders: the inner mask given first or last.
        for masks in [[&inner, &outer], [&outer, &inner]] {
            let b = Boundary::new(masks.map(|p| p.to_path_buf()));
            let mut spec = RingSpec::new(["sh", "-c", &script]);
            spec.timeout = Duration::from_secs(20);
            spec.binds = vec![Bind {
                path: d.path().to_path_buf(),
                writable: false,
            }];
            let out = b.run_ring(&spec).await.unwrap();
            let text = out.output.stdout_lossy();
            assert!(text.starts_with("shown\n"), "{out:?}");
            assert!(
                text.contains("hidden=1") && !text.contains("s3cret"),
                "{out:?}"
            );
            // The Ring 0 boundary: the same masks, nested.
            let out = b
                .run(&osmoda_sandbox::Spec::new(["sh", "-c", &script]))
                .await
                .unwrap();
            let text = out.stdout_lossy();
            assert!(text.starts_with("shown\n"), "{out:?}");
            assert!(
                text.contains("hidden=1") && !text.contains("s3cret"),
                "{out:?}"
            );
        }
    });
}

/// A declared bind is bound by what was checked (review of issue 11, finding 4): while its
/// last component is swapped with a symlink to a hidden directory (`renameat2`
/// `RENAME_EXCHANGE`), every run binds the directory or is refused; none shows the hidden
/// directory's file. 200 attempts.
#[test]
fn a_symlink_raced_into_a_declared_bind_never_binds_a_hidden_path() {
    in_netns("ring_bind_race", || async {
        let d = tempfile::tempdir_in("/var/tmp").unwrap();
        chmod(d.path(), 0o755);
        let secret = d.path().join("secret");
        std::fs::create_dir(&secret).unwrap();
        chmod(&secret, 0o755);
        std::fs::write(secret.join("token"), "s3cret").unwrap();
        chmod(&secret.join("token"), 0o644);
        let race = d.path().join("race");
        std::fs::create_dir_all(race.join("d")).unwrap();
        chmod(&race, 0o755);
        chmod(&race.join("d"), 0o755);
        std::os::unix::fs::symlink("../secret", race.join("s")).unwrap();
        let racer = Swapper::start(race.join("d"), race.join("s"));
        let b = Boundary::new([secret.clone()]);
        let bound = race.join("d");
        let (mut ran, mut refused) = (0, 0);
        for i in 0..200 {
            let mut spec = RingSpec::new([
                "sh".to_string(),
                "-c".to_string(),
                format!("cat {}/token 2>/dev/null; true", bound.display()),
            ]);
            spec.timeout = Duration::from_secs(20);
            spec.binds = vec![Bind {
                path: bound.clone(),
                writable: true,
            }];
            match b.run_ring(&spec).await {
                Ok(out) => {
                    ran += 1;
                    assert!(
                        !out.output.stdout_lossy().contains("s3cret"),
                        "attempt {i} bound the hidden directory: {out:?}"
                    );
                }
                Err(e) => {
                    assert!(
                        matches!(e, osmoda_sandbox::SandboxError::BadPath { .. }),
                        "attempt {i}: {e}"
                    );
                    refused += 1;
                }
            }
        }
        let swaps = racer.stop();
        println!("ring race: {ran} ran, {refused} refused, {swaps} swaps");
        assert!(swaps > 200, "the race ran ({swaps} swaps)");
        assert!(ran > 0 && refused > 0, "ran {ran}, refused {refused}");
    });
}

/// systemd's `ProtectHostname=` (every osModa unit has it) refuses `sethostname` and
/// `setdomainname` with EPERM in a seccomp filter the unit's processes inherit, bubblewrap
/// included. A ring must start under it: it asked bubblewrap for `--hostname sandbox`, and on
/// NixOS every sandbox failed "Can't set hostname to sandbox" (audit of issue 14, twelfth
/// session). The filter is systemd's rule (seccomp-util.c, `seccomp_protect_hostname`) on this
/// thread alone; what the thread starts inherits it.
#[test]
fn a_ring_starts_under_systemds_protect_hostname_filter() {
    if !nix::unistd::geteuid().is_root() {
        println!("skipped: a_ring_starts_under_systemds_protect_hostname_filter needs root for bubblewrap's namespaces");
        return;
    }
    std::thread::spawn(|| {
        let rules = [libc::SYS_sethostname, libc::SYS_setdomainname]
            .into_iter()
            .map(|nr| (nr, Vec::new()))
            .collect();
        let filter = seccompiler::SeccompFilter::new(
            rules,
            seccompiler::SeccompAction::Allow,
            seccompiler::SeccompAction::Errno(libc::EPERM as u32),
            std::env::consts::ARCH.try_into().unwrap(),
        )
        .unwrap();
        let program: seccompiler::BpfProgram = filter.try_into().unwrap();
        seccompiler::apply_filter(&program).unwrap();
        // The filter holds on this thread (the name is never changed: the call is refused).
        let err = nix::unistd::sethostname("osmoda-test").unwrap_err();
        assert_eq!(err, nix::errno::Errno::EPERM);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let out = sh("echo started").await;
                assert!(out.output.success(), "{out:?}");
                assert_eq!(out.output.stdout_lossy(), "started\n", "{out:?}");
            });
    })
    .join()
    .unwrap();
}
