//! Unit tests of the command line; the real sandbox is exercised in `tests/boundary.rs`.

use super::*;

#[test]
fn rejects_bad_input_before_running_anything() {
    let b = Boundary::new(["/nonexistent-osmoda-mask"]);
    assert!(matches!(
        b.argv(&Spec::new(Vec::<String>::new())),
        Err(SandboxError::EmptyCommand)
    ));
    assert!(matches!(
        b.argv(&Spec::new([""])),
        Err(SandboxError::EmptyCommand)
    ));
    let e = b
        .argv(&Spec::new(["true"]).user("no-such-user-osmoda"))
        .unwrap_err();
    assert!(matches!(e, SandboxError::UnknownUser(_)), "{e}");
    assert!(e.to_string().contains("`root`"), "{e}");
    for bad in ["relative/path", "/a/../b", "/"] {
        let e = Boundary::new([bad]).argv(&Spec::new(["true"])).unwrap_err();
        assert!(matches!(e, SandboxError::BadPath { .. }), "{bad}: {e}");
        // A writable path is opened first; what opens is still checked by the argv.
        let e = match Pinned::open(Path::new(bad)) {
            Err(e) => e,
            Ok(p) => b.argv(&Spec::new(["true"]).writable(p)).unwrap_err(),
        };
        assert!(matches!(e, SandboxError::BadPath { .. }), "{bad}: {e}");
    }
}

fn strings(v: &[OsString]) -> Vec<String> {
    v.iter().map(|s| s.to_string_lossy().into_owned()).collect()
}

#[test]
fn a_user_command_drops_every_capability_and_masks_last() {
    let dir = tempfile::tempdir().unwrap();
    let masked = dir.path().join("admin");
    std::fs::create_dir(&masked).unwrap();
    let b = Boundary::new([masked.clone()]);
    let a = strings(
        &b.argv(
            &Spec::new(["id", "-u"])
                .writable(Pinned::open(&dir.path().canonicalize().unwrap()).unwrap()),
        )
        .unwrap(),
    );
    let masked = masked.canonicalize().unwrap().display().to_string();
    let tmpfs = a.iter().rposition(|s| *s == masked).unwrap();
    let bind = a.iter().position(|s| s == "--bind-fd").unwrap();
    assert!(
        bind < tmpfs,
        "the mask must be mounted over the writable bind: {a:?}"
    );
    for flag in [
        "--die-with-parent",
        "--new-session",
        "--unshare-pid",
        "--clearenv",
    ] {
        assert!(a.contains(&flag.to_string()), "{flag} missing: {a:?}");
    }
    assert!(a.contains(&"--bounding-set=-all".to_string()), "{a:?}");
    assert!(a.contains(&"--no-new-privs".to_string()), "{a:?}");
    assert!(
        a.iter().any(|s| s == "--reuid=65534"),
        "nobody by default: {a:?}"
    );
    assert_eq!(&a[a.len() - 3..], ["--", "id", "-u"]);
}

#[test]
fn a_root_command_keeps_root_without_the_dangerous_capabilities() {
    let a = strings(
        &Boundary::osmoda_default()
            .argv(&Spec::new(["true"]).user("root"))
            .unwrap(),
    );
    let bset = a.iter().find(|s| s.starts_with("--bounding-set=")).unwrap();
    for cap in [
        "-sys_admin",
        "-sys_ptrace",
        "-sys_module",
        "-dac_read_search",
    ] {
        assert!(bset.contains(cap), "{cap} not dropped: {bset}");
    }
    assert!(!a.iter().any(|s| s.starts_with("--reuid")), "{a:?}");
}

#[test]
fn missing_mask_paths_hide_nothing_and_are_left_out() {
    let a = strings(
        &Boundary::new(["/nonexistent-osmoda-mask"])
            .argv(&Spec::new(["true"]))
            .unwrap(),
    );
    assert!(
        !a.iter().any(|s| s.contains("nonexistent-osmoda-mask")),
        "{a:?}"
    );
}

#[test]
fn an_unprivileged_caller_runs_commands_as_itself_in_a_user_namespace() {
    let b = Boundary::osmoda_default();
    let a = strings(&b.argv_as(&Spec::new(["id"]), 1000).unwrap());
    assert!(a.contains(&"--unshare-user".to_string()), "{a:?}");
    assert!(a.contains(&"--disable-userns".to_string()), "{a:?}");
    assert!(!a.iter().any(|s| s.ends_with("setpriv")), "{a:?}");
    assert_eq!(&a[a.len() - 2..], ["--", "id"]);
    let e = b
        .argv_as(&Spec::new(["id"]).user("root"), 1000)
        .unwrap_err();
    assert!(matches!(e, SandboxError::NotRoot { .. }), "{e}");
}
