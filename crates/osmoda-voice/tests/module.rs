//! The NixOS module's voice lines, through nixos-eval (the real nixpkgs declarations of systemd,
//! users and etc; `../shared/nixos-eval/check.sh` beside the checkout or `$OSMODA_NIXOS_EVAL`):
//! the unit is hardened with no network, reaches PipeWire's socket directory and reads only the
//! audio dirs; it gets the gateway's token alone as a credential (never the gateway's
//! environment file with the model API keys), dumps no core and has a `MemoryMax`; with the
//! gateway on, voice.json names the forwarding socket, which a socket unit owned by osmoda-voice
//! and `osmoda-voice gateway-proxy` to the gateway's port (held by the gateway's user) provide, and a missing token file is a
//! warning; the rendered voice.json passes the daemon's own check; directories the unit cannot
//! see are refused at evaluation; `source` and `pipewireUser` (a person's session PipeWire)
//! shape the unit. The real piper, pw-play and pw-record run under the unit's own
//! seccomp filter. Without nixos-eval it prints "skipped".
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};
use serde_json::Value;

#[path = "../../../tests/rust/nixos_eval.rs"]
mod nixos_eval;
use nixos_eval::{check_sh, eval};

#[test]
fn nixos_eval_if_present_voice_unit_pipewire_and_gateway_socket() {
    let Some(check) = check_sh() else { return };
    let json = eval(
        &check,
        r#"services.osmoda = { enable = true;
             voice = { enable = true; whisperModel = "/var/lib/models/ggml-tiny.en.bin"; audioDirs = [ "/srv/audio" ]; pipewireRuntimeDir = "/run/pw";
                       gatewayTokenFile = "/var/lib/secrets/gw-token"; memoryMax = "2G"; };
             routines.gatewayTokenFile = "/var/lib/secrets/gw-token";
             gateway = { enable = true; port = 18790; environmentFile = "/var/lib/secrets/gw.env"; }; };"#,
    );
    let unit = &json["units"]["osmoda-voice"];
    let exec = unit["ExecStart"].as_str().unwrap();
    assert!(
        exec.contains("--config /etc/osmoda/voice.json --state-dir /var/lib/osmoda/voice"),
        "{exec}"
    );
    assert!(
        exec.ends_with("--gateway-token-file /run/credentials/osmoda-voice.service/gateway-token"),
        "{exec}"
    );
    let text = unit["text"].as_str().unwrap();
    for want in [
        "PrivateNetwork=true",
        "RestrictAddressFamilies=AF_UNIX\n",
        "PrivateDevices=true",
        "CapabilityBoundingSet=\n",
        "User=osmoda-voice",
        "Environment=PIPEWIRE_RUNTIME_DIR=/run/pw",
        "ReadWritePaths=-/run/pw",
        "ReadOnlyPaths=-/srv/audio",
        "SupplementaryGroups=pipewire",
        "LoadCredential=gateway-token:/var/lib/secrets/gw-token\n",
        "LimitCORE=0",
        "MemoryMax=2G",
        // piper and PipeWire's clients need @resources; other calls fail soft, never SIGSYS.
        "SystemCallFilter=@system-service\nSystemCallFilter=~@privileged\n",
        "SystemCallErrorNumber=EPERM\n",
        "Type=notify",
    ] {
        assert!(text.contains(want), "{want}:\n{text}");
    }
    assert!(!text.contains("AF_INET"), "{text}");
    // The gateway's environment file (model API keys) is the gateway's alone.
    assert!(!text.contains("EnvironmentFile"), "{text}");
    assert!(!text.contains("gw.env"), "{text}");
    assert_eq!(json["warnings"], serde_json::json!([]));

    let voice: Value =
        serde_json::from_str(json["etc"]["osmoda/voice.json"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(voice["gateway_url"], "unix:/run/osmoda/voice-gateway.sock");
    assert_eq!(voice["audio_dirs"], serde_json::json!(["/srv/audio"]));
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), voice.to_string()).unwrap();
    osmoda_config::check_config("voice", file.path()).unwrap();

    let sock = json["sockets"]["osmoda-voice-gateway"].as_str().unwrap();
    for want in [
        "ListenStream=/run/osmoda/voice-gateway.sock",
        "SocketUser=osmoda-voice",
        "SocketMode=0600",
    ] {
        assert!(sock.contains(want), "{want}:\n{sock}");
    }
    let proxy = json["units"]["osmoda-voice-gateway"]["text"]
        .as_str()
        .unwrap();
    for want in [
        // The proxy that verifies who holds the port (osmoda-voice gateway-proxy), not
        // systemd-socket-proxyd, which hands the token to whoever binds the port first.
        "/bin/osmoda-voice gateway-proxy --to 127.0.0.1:18790 --gateway-user osmoda-gateway\n",
        "ProcSubset=all",
        "Type=notify",
        "DynamicUser=true",
        "IPAddressDeny=any",
        "IPAddressAllow=127.0.0.1",
    ] {
        assert!(proxy.contains(want), "{want}:\n{proxy}");
    }
    assert!(!proxy.contains("systemd-socket-proxyd"), "{proxy}");
    // Without a source named, recordings take the default source (no --source).
    assert!(!exec.contains("--source"), "{exec}");

    // The gateway on but no token file: the unit still gets no environment file, and the
    // operator is told what the voice will lack; the default memory limit applies.
    let json = eval(
        &check,
        r#"services.osmoda = { enable = true; voice.enable = true;
             routines.gatewayTokenFile = "/var/lib/secrets/gw-token";
             gateway = { enable = true; environmentFile = "/var/lib/secrets/gw.env"; }; };"#,
    );
    let text = json["units"]["osmoda-voice"]["text"].as_str().unwrap();
    for absent in ["EnvironmentFile", "LoadCredential", "--gateway-token-file"] {
        assert!(!text.contains(absent), "{absent}:\n{text}");
    }
    assert!(text.contains("MemoryMax=1536M\n"), "{text}");
    let warnings = json["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("services.osmoda.voice.gatewayTokenFile"),
        "{warnings:?}"
    );

    // Without the gateway: no forwarding socket, no gateway_url, no warning.
    let json = eval(
        &check,
        r#"services.osmoda = { enable = true; voice.enable = true; };"#,
    );
    assert!(json["sockets"].get("osmoda-voice-gateway").is_none());
    let voice: Value =
        serde_json::from_str(json["etc"]["osmoda/voice.json"]["text"].as_str().unwrap()).unwrap();
    assert!(voice.get("gateway_url").is_none(), "{voice}");
    assert_eq!(json["warnings"], serde_json::json!([]));
}

/// Directories the hardened unit cannot see (ProtectHome, PrivateTmp) are refused by name.
#[test]
fn nixos_eval_if_present_voice_dirs_the_unit_cannot_see_are_refused() {
    let Some(check) = check_sh() else { return };
    for (option, value) in [
        ("audioDirs", r#"[ "/home/alice/voice" ]"#),
        ("audioDirs", r#"[ "/srv/ok" "/tmp/audio" ]"#),
        ("audioDirs", r#"[ "/var/tmp" ]"#),
        ("audioDirs", r#"[ "/root/a" ]"#),
        ("pipewireRuntimeDir", r#""/run/user/1000""#),
    ] {
        let json = eval_failing(
            &check,
            &format!("services.osmoda = {{ enable = true; voice = {{ enable = true; {option} = {value}; }}; }};"),
        );
        let failed = json["failedAssertions"].as_array().unwrap();
        assert_eq!(failed.len(), 1, "{option} = {value}: {failed:?}");
        let m = failed[0].as_str().unwrap();
        assert!(
            m.contains(&format!("services.osmoda.voice.{option}")),
            "{m}"
        );
        assert!(m.contains("cannot see"), "{m}");
    }
    // Look-alikes outside the hidden trees pass.
    let json = eval(
        &check,
        r#"services.osmoda = { enable = true; voice = { enable = true; audioDirs = [ "/homework" "/srv/tmp" ]; pipewireRuntimeDir = "/run/pipewire"; }; };"#,
    );
    assert_eq!(json["failedAssertions"], serde_json::json!([]));
}

/// `source` pins what is recorded to one PipeWire node (`--source`), and `pipewireUser` gives
/// the unit that user's session PipeWire: its runtime dir alone under an empty /run/user, the
/// socket granted by ACL at each start, that user's manager kept running with the unit. A user
/// without a uid, or both ways to name a PipeWire, are refused at evaluation.
#[test]
fn nixos_eval_if_present_voice_source_and_a_persons_session_pipewire() {
    let Some(check) = check_sh() else { return };
    let json = eval(
        &check,
        r#"users.users.alice = { isNormalUser = true; uid = 1000; };
           services.osmoda = { enable = true; voice = { enable = true; pipewireUser = "alice";
             source = "alsa_input.pci-0000_00_1f.3.analog-stereo"; }; };"#,
    );
    assert_eq!(json["failedAssertions"], serde_json::json!([]));
    let unit = &json["units"]["osmoda-voice"];
    let exec = unit["ExecStart"].as_str().unwrap();
    assert!(
        exec.ends_with("--source alsa_input.pci-0000_00_1f.3.analog-stereo"),
        "{exec}"
    );
    let text = unit["text"].as_str().unwrap();
    // The grant runs as the person (setpriv), never as root on the person's names.
    let acl = "-util-linux/bin/setpriv --reuid=1000 --regid=users --clear-groups /nix/store/00000000000000000000000000000000-acl/bin/setfacl -m u:osmoda-voice:";
    for want in [
        "Environment=PIPEWIRE_RUNTIME_DIR=/run/user/1000\n",
        "ProtectHome=tmpfs\n",
        "BindReadOnlyPaths=/run/user/1000\n",
        // Root (`+`) grants search on the dir and the socket alone; a missing socket does not
        // stop the unit (`-`).
        &format!("ExecStartPre=+/nix/store/00000000000000000000000000000000{acl}x /run/user/1000\n"),
        &format!("ExecStartPre=-+/nix/store/00000000000000000000000000000000{acl}rw /run/user/1000/pipewire-0\n"),
        "Wants=user@1000.service\n",
        "After=network.target osmoda-agentd.service user@1000.service\n",
        "WantedBy=multi-user.target user@1000.service\n",
        "User=osmoda-voice\n",
        "PrivateNetwork=true",
    ] {
        assert!(text.contains(want), "{want}:\n{text}");
    }
    // Nothing else of /run/user or /home: no writable path there, the rest stays hidden.
    assert!(!text.contains("ReadWritePaths=-/run/user"), "{text}");
    assert!(!text.contains("/home"), "{text}");

    for (body, says) in [
        (
            r#"users.users.alice = { isNormalUser = true; }; services.osmoda = { enable = true; voice = { enable = true; pipewireUser = "alice"; }; };"#,
            "users.users.alice.uid",
        ),
        (
            r#"services.osmoda = { enable = true; voice = { enable = true; pipewireUser = "nobody-here"; }; };"#,
            "users.users.nobody-here.uid",
        ),
        (
            r#"users.users.alice = { isNormalUser = true; uid = 1000; }; services.osmoda = { enable = true; voice = { enable = true; pipewireUser = "alice"; pipewireRuntimeDir = "/srv/pw"; }; };"#,
            "set one",
        ),
    ] {
        let json = eval_failing(&check, body);
        let failed = json["failedAssertions"].as_array().unwrap();
        assert_eq!(failed.len(), 1, "{body}: {failed:?}");
        let m = failed[0].as_str().unwrap();
        assert!(m.contains("services.osmoda.voice.pipewireUser"), "{m}");
        assert!(m.contains(says), "{m}");
    }
}

/// `services.osmoda.voice.source` is a PipeWire node name or nothing: a number (`0` makes
/// pw-record link nothing), an empty or blank name, white space at either end or a control
/// character is refused at evaluation, naming the option and what it takes (the daemon checks
/// `--source` again at start: `device::check_source`).
#[test]
fn nixos_eval_if_present_voice_source_must_be_a_node_name() {
    let Some(check) = check_sh() else { return };
    // Nix expressions for the value.
    for bad in [
        r#""0""#,
        r#""42""#,
        r#""-1""#,
        r#""0x1f""#,
        r#""1e3""#,
        r#""""#,
        r#"" ""#,
        r#""mic ""#,
        r#""\tmic""#,
        r#""mic\n""#,
        r#""mi" + builtins.fromJSON "\"\\u0007\"" + "c""#,
    ] {
        let body = format!(
            r#"services.osmoda = {{ enable = true; voice = {{ enable = true; source = {bad}; }}; }};"#
        );
        let err = eval_error(&check, &body);
        assert!(
            err.contains("services.osmoda.voice.source") && err.contains("PipeWire node name"),
            "{bad}: {err}"
        );
    }
    let long = "m".repeat(257);
    let err = eval_error(
        &check,
        &format!(
            r#"services.osmoda = {{ enable = true; voice = {{ enable = true; source = "{long}"; }}; }};"#
        ),
    );
    assert!(err.contains("PipeWire node name"), "{err}");
    for good in [
        "osmoda-test-mic",
        "bluez_input.00:11:22:33:44:55.0",
        "mic 2",
        "m".repeat(256).as_str(),
    ] {
        let json = eval(
            &check,
            &format!(
                r#"services.osmoda = {{ enable = true; voice = {{ enable = true; source = "{good}"; }}; }};"#
            ),
        );
        let exec = json["units"]["osmoda-voice"]["ExecStart"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(exec.contains("--source ") && exec.contains(good), "{exec}");
    }
}

/// check.sh's run on the module with `body` as a configuration; asserts its exit `code`.
fn run_check(check: &Path, body: &str, code: i32) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.nix");
    std::fs::write(&m, format!("{{ {body} system.stateVersion = \"24.11\"; }}")).unwrap();
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../modules/osmoda.nix");
    let out = Command::new(check).arg(&module).arg(&m).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{body}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// NixOS's error for a configuration that does not evaluate (check.sh exits 1).
fn eval_error(check: &Path, body: &str) -> String {
    String::from_utf8_lossy(&run_check(check, body, 1).stderr).into_owned()
}

/// [`eval`] for a configuration whose assertions fail (check.sh exits 3 with the JSON).
fn eval_failing(check: &Path, body: &str) -> Value {
    serde_json::from_slice(&run_check(check, body, 3).stdout).unwrap()
}

/// The real piper, pw-play and pw-record run under the seccomp filters the voice unit declares
/// (its `SystemCallFilter` lines and `SystemCallErrorNumber` as systemd reads them, with the
/// groups expanded by the host's `systemd-analyze`, plus what `RestrictRealtime` and
/// `MemoryDenyWriteExecute` add) and do their work: a call the unit kills would end them with
/// SIGSYS.
#[test]
fn nixos_eval_if_present_piper_and_pipewire_clients_run_under_the_units_syscall_filter() {
    let Some(check) = check_sh() else { return };
    let json = eval(
        &check,
        r#"services.osmoda = { enable = true; voice.enable = true; };"#,
    );
    let text = json["units"]["osmoda-voice"]["text"].as_str().unwrap();
    let programs = unit_seccomp(text);

    let m = common::models();
    let dir = tempfile::tempdir().unwrap();
    let speech = dir.path().join("speech.wav");
    let mut piper = Command::new(&m.piper);
    piper
        .arg("--model")
        .arg(&m.piper_model)
        .arg("--output_file")
        .arg(&speech)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    confine(&mut piper, &programs);
    let mut child = piper.spawn().unwrap();
    {
        use std::io::Write;
        writeln!(child.stdin.take().unwrap(), "Hello there.").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "piper under the unit's filter: {} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        common::read_i16(&speech).1.len() > 10_000,
        "piper wrote no speech"
    );

    let pw = common::pipewire::PipeWire::start();
    let mut play = Command::new("pw-play");
    play.envs(pw.env()).arg(&speech).stdin(Stdio::null());
    confine(&mut play, &programs);
    let st = play.status().unwrap();
    assert!(st.success(), "pw-play under the unit's filter: {st}");

    let rec = dir.path().join("rec.wav");
    let mut record = Command::new("pw-record");
    record
        .envs(pw.env())
        .args(["--rate", "16000", "--channels", "1", "--format", "s16"])
        .arg(&rec)
        .stdin(Stdio::null());
    confine(&mut record, &programs);
    let mut child = record.spawn().unwrap();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let early = child.try_wait().unwrap();
    assert!(
        early.is_none(),
        "pw-record under the unit's filter ended: {early:?}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let st = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(st.signal(), None, "pw-record under the unit's filter: {st}");
    let frames = hound::WavReader::open(&rec).unwrap().duration();
    assert!(
        frames > 8_000,
        "pw-record under the unit's filter recorded {frames} frames"
    );
}

/// Applies `programs` in the child before it executes (seccomp filters are inherited and kept
/// across execve).
fn confine(cmd: &mut Command, programs: &[BpfProgram]) {
    let programs = programs.to_vec();
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure only calls prctl(2) and seccomp(2) through seccompiler, on programs
    // compiled before the fork.
    #[allow(unsafe_code)]
    unsafe {
        cmd.pre_exec(move || {
            for p in &programs {
                seccompiler::apply_filter(p).map_err(|e| std::io::Error::other(e.to_string()))?;
            }
            Ok(())
        });
    }
}

/// Calls in a systemd group (`@name`), expanded by `systemd-analyze syscall-filter`.
fn syscall_group(name: &str, out: &mut BTreeSet<String>) {
    let o = Command::new("systemd-analyze")
        .args(["syscall-filter", name])
        .output()
        .expect(
            "systemd-analyze (package systemd) is needed to expand the unit's SystemCallFilter",
        );
    assert!(
        o.status.success(),
        "systemd-analyze syscall-filter {name}: {o:?}"
    );
    let text = String::from_utf8(o.stdout).unwrap();
    for line in text.lines().skip(1) {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if l.starts_with('@') {
            syscall_group(l, out);
        } else {
            out.insert(l.to_owned());
        }
    }
}

/// The unit's seccomp filters: `RestrictRealtime` (real-time scheduling classes: EPERM) and
/// `MemoryDenyWriteExecute` (writable+executable mappings, making memory executable: EPERM),
/// then `SystemCallFilter` (an allow-list: the first line's sets minus every `~` line's; the
/// rest gets `SystemCallErrorNumber`, or is killed without one).
fn unit_seccomp(text: &str) -> Vec<BpfProgram> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
    let (mut allow, mut deny) = (BTreeSet::new(), BTreeSet::new());
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
        .collect();
    assert!(
        !lines.is_empty(),
        "the unit has no SystemCallFilter:\n{text}"
    );
    for line in lines {
        let (set, words) = match line.strip_prefix('~') {
            Some(rest) => (&mut deny, rest),
            None => (&mut allow, line),
        };
        for w in words.split_whitespace() {
            if w.starts_with('@') {
                syscall_group(w, set);
            } else {
                set.insert(w.to_owned());
            }
        }
    }
    let errno = text
        .lines()
        .find_map(|l| l.strip_prefix("SystemCallErrorNumber="))
        .map(|e| match e {
            "EPERM" => libc::EPERM,
            "EACCES" => libc::EACCES,
            "ENOSYS" => libc::ENOSYS,
            other => panic!("SystemCallErrorNumber={other}: not known to this test"),
        });
    let mismatch = match errno {
        Some(e) => serde_json::json!({ "errno": e }),
        None => serde_json::json!("kill_process"),
    };
    // Names this architecture does not have (arm_fadvise64_64, ...) are dropped, as systemd does.
    let known = |name: &str| {
        let f = serde_json::json!({ "f": { "mismatch_action": "kill_process", "match_action": "allow",
            "filter": [ { "syscall": name } ] } });
        seccompiler::compile_from_json(f.to_string().as_bytes(), arch).is_ok()
    };
    let filter: Vec<Value> = allow
        .difference(&deny)
        .filter(|n| known(n))
        .map(|n| serde_json::json!({ "syscall": n }))
        .collect();
    assert!(filter.len() > 200, "{} calls allowed", filter.len());
    let f = serde_json::json!({ "unit": { "mismatch_action": mismatch, "match_action": "allow",
        "filter": filter } });
    let unit = seccompiler::compile_from_json(f.to_string().as_bytes(), arch)
        .unwrap()
        .remove("unit")
        .unwrap();
    // The allow-list goes last: installing a filter after it needs calls it may refuse.
    let mut programs = Vec::new();

    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let cond = |arg, op, val| SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, val).unwrap();
    if text.contains("RestrictRealtime=true") {
        // Anything but SCHED_OTHER (0), SCHED_BATCH (3) and SCHED_IDLE (5).
        let not_normal = SeccompRule::new(vec![
            cond(1, SeccompCmpOp::Ne, 0),
            cond(1, SeccompCmpOp::Ne, 3),
            cond(1, SeccompCmpOp::Ne, 5),
        ])
        .unwrap();
        rules.insert(libc::SYS_sched_setscheduler, vec![not_normal]);
    }
    if text.contains("MemoryDenyWriteExecute=true") {
        let wx = (libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        let x = libc::PROT_EXEC as u64;
        rules.insert(
            libc::SYS_mmap,
            vec![SeccompRule::new(vec![cond(2, SeccompCmpOp::MaskedEq(wx), wx)]).unwrap()],
        );
        for call in [libc::SYS_mprotect, libc::SYS_pkey_mprotect] {
            rules.insert(
                call,
                vec![SeccompRule::new(vec![cond(2, SeccompCmpOp::MaskedEq(x), x)]).unwrap()],
            );
        }
    }
    if !rules.is_empty() {
        let f = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .unwrap();
        programs.push(f.try_into().unwrap());
    }
    programs.push(unit);
    programs
}
