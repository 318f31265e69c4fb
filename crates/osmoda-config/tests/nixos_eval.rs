//! The NixOS module and the flake's three hosts checked against real NixOS option types.
//!
//! With `nixos-eval` (`../shared/nixos-eval/check.sh` beside the checkout, or the directory in
//! `$OSMODA_NIXOS_EVAL`): the real nixpkgs declarations of systemd, users, etc, firewall and sshd,
//! offline. Without it (a clean CI clone) these tests print "skipped: nixos-eval not found"
//! and check nothing; their names say `if_present`. With real nixpkgs (`<nixpkgs>` resolves) the
//! hosts are also evaluated whole; elsewhere that test prints "skipped: <nixpkgs> not found".

mod common;

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::Value;

/// `check.sh` of nixos-eval, or why there is none.
fn nixos_eval(test: &str) -> Option<PathBuf> {
    if !common::nix_available(test) {
        return None;
    }
    let check = match std::env::var_os("OSMODA_NIXOS_EVAL") {
        Some(dir) => {
            let check = PathBuf::from(dir).join("check.sh");
            // Asked for explicitly: not finding it is an error, not a skip.
            assert!(check.is_file(), "OSMODA_NIXOS_EVAL: no {}", check.display());
            check
        }
        None => common::repo_root().join("../shared/nixos-eval/check.sh"),
    };
    if check.is_file() {
        Some(check)
    } else {
        eprintln!(
            "skipped: {test}: nixos-eval not found ({}; set OSMODA_NIXOS_EVAL to its directory)",
            check.display()
        );
        None
    }
}

/// The result of one `check.sh` run.
struct Checked {
    code: i32,
    json: Value,
    stderr: String,
}

fn run_check(check: &Path, args: &[OsString]) -> Result<Checked> {
    let o = Command::new(check)
        .args(args)
        .env("OSMODA_REPO", common::repo_root())
        .output()
        .context("running check.sh")?;
    Ok(Checked {
        code: o.status.code().unwrap_or(-1),
        json: serde_json::from_slice(&o.stdout).unwrap_or(Value::Null),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    })
}

fn ok(check: &Path, args: &[OsString], what: &str) -> Result<Value> {
    let c = run_check(check, args)?;
    if c.code != 0 {
        bail!("{what}: check.sh exited {}:\n{}", c.code, c.stderr);
    }
    assert_eq!(c.json["failedAssertions"], serde_json::json!([]), "{what}");
    Ok(c.json)
}

fn write(dir: &Path, name: &str, text: &str) -> Result<OsString> {
    let p = dir.join(name);
    std::fs::write(&p, text)?;
    Ok(p.into_os_string())
}

fn os(p: impl AsRef<Path>) -> OsString {
    p.as_ref().as_os_str().to_owned()
}

/// The `/etc/osmoda/<d>.json` files of a result, parsed.
fn osmoda_files(json: &Value) -> Result<serde_json::Map<String, Value>> {
    let mut out = serde_json::Map::new();
    for (k, v) in json["etc"].as_object().context("etc")? {
        if let Some(d) = k
            .strip_prefix("osmoda/")
            .and_then(|k| k.strip_suffix(".json"))
        {
            let text = v["text"]
                .as_str()
                .with_context(|| format!("{k} has no text"))?;
            out.insert(d.to_string(), serde_json::from_str(text)?);
        }
    }
    Ok(out)
}

/// Every daemon with a file has a hardened unit (no new privileges, a bounding set) that
/// starts it with that file.
fn assert_units(json: &Value, files: &serde_json::Map<String, Value>, what: &str) {
    for d in files.keys() {
        let unit = &json["units"][format!("osmoda-{d}")];
        let text = unit["text"].as_str().unwrap_or_default();
        assert!(
            text.contains(&format!("--config /etc/osmoda/{d}.json")),
            "{what}: osmoda-{d}.service does not start with its file:\n{text}"
        );
        assert!(
            text.contains("NoNewPrivileges=true") && text.contains("CapabilityBoundingSet="),
            "{what}: osmoda-{d}.service lost its hardening:\n{text}"
        );
        // The daemons that run commands in osmoda-sandbox leave W+X memory to them (JIT
        // runtimes die under MemoryDenyWriteExecute, which a command inherits); the rest keep it.
        let runs_commands = ["agentd", "watch", "routines"].contains(&d.as_str());
        assert!(
            text.contains(&format!("MemoryDenyWriteExecute={}\n", !runs_commands)),
            "{what}: osmoda-{d}.service MemoryDenyWriteExecute:\n{text}"
        );
    }
}

#[test]
fn nixos_eval_if_present_module_renders_the_golden_files() -> Result<()> {
    let Some(check) = nixos_eval("nixos_eval_if_present_module_renders_the_golden_files") else {
        return Ok(());
    };
    let root = common::repo_root();
    let tmp = tempfile::tempdir()?;
    for fixture in common::fixtures()? {
        let stem = fixture
            .file_stem()
            .context("stem")?
            .to_string_lossy()
            .into_owned();
        let m = write(
            tmp.path(),
            &format!("{stem}.nix"),
            &format!(
                "{{ services.osmoda = import {} // {{ enable = true; }}; system.stateVersion = \"24.11\"; }}",
                fixture.display()
            ),
        )?;
        let json = ok(&check, &[os(root.join("modules/osmoda.nix")), m], &stem)?;
        assert_eq!(json["warnings"], serde_json::json!([]), "{stem}");
        let golden: Value = serde_json::from_str(&std::fs::read_to_string(
            root.join("tests/nix/golden").join(format!("{stem}.json")),
        )?)?;
        let files = osmoda_files(&json)?;
        // agentd's `daemons` map names the other enabled daemons: exactly those get a file.
        let mut want: BTreeSet<String> = golden["agentd"]["daemons"]
            .as_object()
            .context("daemons")?
            .keys()
            .cloned()
            .collect();
        want.insert("agentd".into());
        let have: BTreeSet<String> = files.keys().cloned().collect();
        assert_eq!(have, want, "{stem}: one file per enabled daemon");
        for (d, v) in &files {
            assert_eq!(
                v, &golden[d],
                "{stem}: /etc/osmoda/{d}.json differs from the golden file"
            );
        }
        assert_units(&json, &files, &stem);
    }
    Ok(())
}

/// The flake's hosts through nixos-eval: modules/flake-module.nix (what the flake wraps around
/// the module, with a flake revision) + the host (+ `extra`) + the stand-in declarations of the
/// options nixos-eval lacks (`tests/nix/host-options.nix`). Hosts that import a profile from
/// `modulesPath` are checked without their imports (`--strip-imports`; see nixos-eval's README);
/// their imports of files beside them (`./gateway-token.nix`) are added back as modules.
fn host(check: &Path, tmp: &Path, name: &str, extra: Option<&str>) -> Result<Checked> {
    let root = common::repo_root();
    let eval_dir = check.parent().context("nixos-eval dir")?;
    let flake = write(
        tmp,
        "flake-module.nix",
        &format!(
            "import {} {{ revision = \"flake-rev\"; }}",
            root.join("modules/flake-module.nix").display()
        ),
    )?;
    let mut args = vec![
        os("--host-stubs"),
        os("--pkgs"),
        os(eval_dir.join("examples/osmoda-flake-pkgs.nix")),
        flake,
    ];
    if let Some(e) = extra {
        args.push(write(tmp, "extra.nix", e)?);
    }
    args.push(os(
        root.join("crates/osmoda-config/tests/nix/host-options.nix")
    ));
    let file = root.join(format!("modules/hosts/{name}.nix"));
    let text = std::fs::read_to_string(&file)?;
    if text.contains("modulesPath}/") {
        for local in local_imports(&text) {
            args.push(os(root.join("modules/hosts").join(local)));
        }
        args.push(os("--strip-imports"));
    }
    args.push(os(file));
    run_check(check, &args)
}

/// The files a host imports from beside it: each `./name.nix` in its text.
fn local_imports(text: &str) -> Vec<String> {
    text.split(|c: char| c.is_whitespace() || c == '[' || c == ']')
        .filter_map(|w| w.strip_prefix("./"))
        .filter(|w| w.ends_with(".nix") && !w.contains('/'))
        .map(str::to_string)
        .collect()
}

#[test]
fn nixos_eval_if_present_flake_hosts_typecheck_and_render() -> Result<()> {
    let Some(check) = nixos_eval("nixos_eval_if_present_flake_hosts_typecheck_and_render") else {
        return Ok(());
    };
    let tmp = tempfile::tempdir()?;
    for (name, watchers, ssh) in [
        ("server", &["root-disk", "sshd"][..], true),
        ("dev-vm", &["sshd"], true),
        ("iso", &[], false),
    ] {
        let c = host(&check, tmp.path(), name, None)?;
        assert_eq!(c.code, 0, "{name}: {}", c.stderr);
        let json = c.json;
        assert_eq!(json["failedAssertions"], serde_json::json!([]), "{name}");
        let files = osmoda_files(&json)?;
        assert!(
            files.contains_key("agentd") && files.contains_key("watch"),
            "{name}: {files:?}"
        );
        assert_units(&json, &files, name);
        // What install.sh's and push-deploy.sh's probes and a person run: agentctl, and git
        // for the tree's history (push-deploy pushes into it).
        for bin in ["agentctl", "git"] {
            assert!(
                json["systemPackages"]
                    .as_array()
                    .is_some_and(|p| p.contains(&serde_json::json!(bin))),
                "{name}: {bin} on the system's PATH: {}",
                json["systemPackages"]
            );
        }
        let names: Vec<&String> = files["watch"]["watchers"]
            .as_object()
            .context("watchers")?
            .keys()
            .collect();
        assert_eq!(
            names, watchers,
            "{name}: watchers in /etc/osmoda/watch.json"
        );
        assert_eq!(json["units"]["sshd"].is_object(), ssh, "{name}: sshd unit");
        // The gateway runs on the dev VM and the server from the first boot: its token file is
        // made by a oneshot the gateway requires (modules/hosts/gateway-token.nix); the ISO has
        // no gateway (no credentials on a live system).
        let gateway = name != "iso";
        assert_eq!(
            json["units"]["osmoda-gateway"].is_object(),
            gateway,
            "{name}: gateway unit"
        );
        if gateway {
            let gw = &json["units"]["osmoda-gateway"];
            assert_eq!(
                gw["wantedBy"],
                serde_json::json!(["multi-user.target"]),
                "{name}"
            );
            let token = &json["units"]["osmoda-gateway-token"];
            assert!(
                gw["requires"].as_array().is_some_and(|r| r.contains(&serde_json::json!("osmoda-gateway-token.service"))),
                "{name}: the gateway requires its token: {gw}"
            );
            assert_eq!(token["serviceConfig"]["Type"], "oneshot", "{name}");
            // Runs when either file is missing; an existing one is never overwritten (the
            // script's `mv -n`), and routines and voice get the token-only file.
            assert_eq!(
                token["unitConfig"]["ConditionPathExists"],
                serde_json::json!([
                    "|!/var/lib/osmoda/gateway.env",
                    "|!/var/lib/osmoda/gateway-token"
                ]),
                "{name}: {token}"
            );
            assert!(
                token["script"]
                    .as_str()
                    .is_some_and(|s| s.matches("mv -n").count() == 2),
                "{name}: an existing token file is never touched: {token}"
            );
            for unit in ["osmoda-routines", "osmoda-voice"] {
                let text = json["units"][unit]["text"].as_str().unwrap_or_default();
                assert!(
                    text.is_empty()
                        || text.contains(
                            "LoadCredential=gateway-token:/var/lib/osmoda/gateway-token\n"
                        ),
                    "{name}: {unit} gets the token alone:\n{text}"
                );
            }
            assert!(
                token["script"].as_str().is_some_and(
                    |s| s.contains("/dev/urandom") && s.contains("OPENCLAW_GATEWAY_TOKEN=")
                ),
                "{name}: {token}"
            );
        }
        assert_eq!(json["configurationRevision"], "flake-rev", "{name}");
        // NixOS's own warnings are a finding too; a stripped installer profile is what sets
        // the ISO's stateVersion, so that one warning is the harness's, not ours.
        for w in json["warnings"].as_array().into_iter().flatten() {
            let w = w.as_str().unwrap_or_default();
            assert!(
                name == "iso" && w.contains("system.stateVersion"),
                "{name}: {w}"
            );
        }
    }
    // The dev VM's desktop: the operator logs into Sway (greetd's sessions are checked against
    // their TOML type), in the groups the desktop and osModa need.
    // ... and Sway gets a DRM device it can use (a virtio GPU, not QEMU's default VGA, as
    // nixpkgs' own sway test does) and renders in software.
    let dev = host(
        &check,
        tmp.path(),
        "dev-vm",
        Some(
            r#"{ config, lib, ... }: { assertions = [ {
              assertion = lib.elem "-device virtio-gpu-pci" config.virtualisation.qemu.options
                && lib.elem "-vga none" config.virtualisation.qemu.options
                && config.environment.variables.WLR_RENDERER_ALLOW_SOFTWARE == "1";
              message = "the dev VM's display: a virtio GPU and software rendering";
            } ]; }"#,
        ),
    )?
    .json;
    assert_eq!(dev["failedAssertions"], serde_json::json!([]));
    let groups = &dev["users"]["operator"]["extraGroups"];
    for g in ["wheel", "osmoda", "video", "audio"] {
        assert!(
            groups
                .as_array()
                .is_some_and(|a| a.contains(&serde_json::json!(g))),
            "operator in {g}: {groups}"
        );
    }
    // The ISO carries osModa's installer for the system nixos-install makes.
    let iso = host(&check, tmp.path(), "iso", None)?.json;
    assert!(
        iso["systemPackages"]
            .as_array()
            .is_some_and(|p| p.iter().any(|p| p.as_str() == Some("osmoda-install"))),
        "{}",
        iso["systemPackages"]
    );

    let server = host(&check, tmp.path(), "server", None)?.json;
    assert_eq!(
        server["firewall"]["allowedTCPPorts"],
        serde_json::json!([22])
    );

    // A host's services.osmoda.configRevision beats the flake's own revision (it used to be
    // dropped silently: the flake set it at normal priority, the module only as a default).
    let rev = "0123456789abcdef0123456789abcdef01234567";
    let c = host(
        &check,
        tmp.path(),
        "server",
        Some(&format!(
            "{{ services.osmoda.configRevision = \"{rev}\"; }}"
        )),
    )?;
    assert_eq!(c.code, 0, "{}", c.stderr);
    assert_eq!(c.json["configurationRevision"], rev);
    Ok(())
}

#[test]
fn nixos_eval_if_present_fails_on_planted_type_errors() -> Result<()> {
    let Some(check) = nixos_eval("nixos_eval_if_present_fails_on_planted_type_errors") else {
        return Ok(());
    };
    let root = common::repo_root();
    let tmp = tempfile::tempdir()?;
    let enable = write(
        tmp.path(),
        "enable.nix",
        "{ services.osmoda.enable = true; }",
    )?;

    // A wrong type next to the module, in an option of the real systemd module...
    let bad = write(
        tmp.path(),
        "bad.nix",
        "{ systemd.services.osmoda-agentd.wantedBy = \"multi-user.target\"; }",
    )?;
    let c = run_check(
        &check,
        &[os(root.join("modules/osmoda.nix")), enable.clone(), bad],
    )?;
    assert_eq!(c.code, 1, "{}", c.stderr);
    assert!(
        c.stderr
            .contains("`systemd.services.osmoda-agentd.wantedBy' is not of type"),
        "{}",
        c.stderr
    );

    // ... and inside a copy of the module itself (users.groups.<name>.gid is `null or int`).
    let copy = tmp.path().join("copy");
    for dir in ["modules", "lib", "generations"] {
        copy_dir(&root.join(dir), &copy.join(dir))?;
    }
    let module = copy.join("modules/osmoda.nix");
    let text = std::fs::read_to_string(&module)?;
    let anchor = "users.groups.osmoda = { };";
    assert!(
        text.contains(anchor),
        "the planted error's anchor moved: {anchor}"
    );
    std::fs::write(
        &module,
        text.replacen(anchor, "users.groups.osmoda = { gid = \"osmoda\"; };", 1),
    )?;
    let c = run_check(&check, &[os(&module), enable.clone()])?;
    assert_eq!(c.code, 1, "{}", c.stderr);
    assert!(
        c.stderr
            .contains("`users.groups.osmoda.gid' is not of type `null or signed integer'"),
        "{}",
        c.stderr
    );

    // A misspelled option of a real NixOS module does not pass either.
    let typo = write(
        tmp.path(),
        "typo.nix",
        "{ services.openssh.setings.PermitRootLogin = \"no\"; }",
    )?;
    let c = run_check(&check, &[os(root.join("modules/osmoda.nix")), enable, typo])?;
    assert_eq!(c.code, 1, "{}", c.stderr);
    assert!(
        c.stderr.contains("services.openssh.setings"),
        "{}",
        c.stderr
    );
    Ok(())
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()))?;
        } else {
            std::fs::copy(e.path(), to.join(e.file_name()))?;
        }
    }
    Ok(())
}

/// The hosts through real nixpkgs (`<nixpkgs/nixos/lib/eval-config.nix>`), whole (with their
/// `modulesPath` imports), with stand-in osmoda packages (nothing is built).
const REAL_HOST: &str = r#"{ repo, host }:
let
  nixos = import <nixpkgs/nixos/lib/eval-config.nix> {
    system = "x86_64-linux";
    modules = [
      (import (/. + repo + "/modules/flake-module.nix") {
        revision = "flake-rev";
        overlay = final: prev: {
          osmoda = prev.lib.genAttrs [ "agentd" "watch" "routines" "keyd" "mesh" "egress" "voice" "agentctl" "check-config" "bridge" ]
            (n: prev.writeShellScriptBin n "exit 0");
        };
      })
      (/. + repo + "/modules/hosts/${host}.nix")
    ];
  };
  inherit (nixos) config;
  etc = config.environment.etc;
in {
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
  files = builtins.filter (n: etc ? "osmoda/${n}.json") (import (/. + repo + "/lib")).daemonNames;
  watchers = builtins.attrNames (builtins.fromJSON etc."osmoda/watch.json".text).watchers;
  revision = config.system.configurationRevision;
  agentdExec = config.systemd.services.osmoda-agentd.serviceConfig.ExecStart;
}"#;

#[test]
fn real_nixpkgs_if_found_flake_hosts_evaluate() -> Result<()> {
    if !common::nix_available("real_nixpkgs_if_found_flake_hosts_evaluate") {
        return Ok(());
    }
    let found = Command::new("nix-instantiate")
        .args(["--find-file", "nixpkgs"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        eprintln!("skipped: real_nixpkgs_if_found_flake_hosts_evaluate: <nixpkgs> not found");
        return Ok(());
    }
    let root = common::repo_root();
    for (name, watchers) in [
        ("server", &["root-disk", "sshd"][..]),
        ("dev-vm", &["sshd"]),
        ("iso", &[]),
    ] {
        let out = common::nix_eval_json(
            REAL_HOST,
            &[("repo", &root.to_string_lossy()), ("host", name)],
        )?;
        assert_eq!(out["failedAssertions"], serde_json::json!([]), "{name}");
        let files: Vec<&str> = out["files"]
            .as_array()
            .context("files")?
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            files.contains(&"agentd") && files.contains(&"watch"),
            "{name}: {files:?}"
        );
        assert_eq!(out["watchers"], serde_json::json!(watchers), "{name}");
        assert_eq!(out["revision"], "flake-rev", "{name}");
        assert!(
            out["agentdExec"]
                .as_str()
                .unwrap_or_default()
                .contains("--config /etc/osmoda/agentd.json"),
            "{name}: {}",
            out["agentdExec"]
        );
    }
    Ok(())
}

#[test]
fn nixos_eval_if_present_validate_option_reaches_agentds_flags() -> Result<()> {
    let Some(check) = nixos_eval("nixos_eval_if_present_validate_option_reaches_agentds_flags")
    else {
        return Ok(());
    };
    let root = common::repo_root();
    let tmp = tempfile::tempdir()?;
    for (level, want, module) in [
        (None, "--validate eval", false),
        (Some("parse"), "--validate parse", false),
        (Some("build"), "--validate build", true),
    ] {
        let set = level.map_or(String::new(), |l| {
            format!("services.osmoda.agentd.validate = \"{l}\";")
        });
        let m = write(
            tmp.path(),
            "v.nix",
            &format!("{{ services.osmoda.enable = true; {set} }}"),
        )?;
        let json = ok(&check, &[os(root.join("modules/osmoda.nix")), m], want)?;
        let exec = json["units"]["osmoda-agentd"]["ExecStart"]
            .as_str()
            .context("ExecStart")?
            .to_string();
        assert!(exec.contains(want), "{want}: {exec}");
        assert_eq!(
            exec.contains("--nixos-module") && exec.contains("/modules/osmoda.nix"),
            module,
            "{exec}"
        );
    }
    let bad = write(
        tmp.path(),
        "bad.nix",
        "{ services.osmoda.enable = true; services.osmoda.agentd.validate = \"full\"; }",
    )?;
    let c = run_check(&check, &[os(root.join("modules/osmoda.nix")), bad])?;
    assert_eq!(c.code, 1, "{}", c.stderr);
    assert!(c.stderr.contains("validate"), "{}", c.stderr);
    Ok(())
}
