//! The `generations/` starter tree: every file parses, osmoda.nix is data only and renders
//! through the repository's `lib/` exactly as written, and the flake wires the osmoda module,
//! configuration.nix and `system.configurationRevision` together.

mod common;

use std::process::Command;

use common::*;
use osmoda_generations::validate::{is_data_only, parse_check};
use serde_json::{json, Value};

/// `nix-instantiate --eval --strict --json -E expr`, run in the template directory.
fn eval(expr: &str) -> anyhow::Result<Value> {
    let out = Command::new("nix-instantiate")
        .current_dir(template())
        .args(["--eval", "--strict", "--json", "-E", expr])
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "{expr}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[test]
fn every_template_file_parses_and_osmoda_nix_is_data_only() -> anyhow::Result<()> {
    for f in ["flake.nix", "configuration.nix", "osmoda.nix"] {
        let text = std::fs::read_to_string(template().join(f))?;
        let parsed = parse_check(f.as_ref(), &text)?;
        assert_eq!(is_data_only(&parsed.syntax()), f == "osmoda.nix", "{f}");
        if have_nix("nix-instantiate --parse of the template") {
            let ok = Command::new("nix-instantiate")
                .arg("--parse")
                .arg(template().join(f))
                .output()?;
            assert!(
                ok.status.success(),
                "{f}: {}",
                String::from_utf8_lossy(&ok.stderr)
            );
        }
    }
    let text = std::fs::read_to_string(template().join("osmoda.nix"))?;
    assert!(
        !text.contains("let ") && !text.contains("with "),
        "osmoda.nix must stay data only"
    );
    Ok(())
}

#[test]
fn osmoda_nix_holds_one_watcher_and_one_routine() -> anyhow::Result<()> {
    if !have_nix("evaluating osmoda.nix") {
        return Ok(());
    }
    let cfg = eval("(import ./osmoda.nix { }).services.osmoda")?;
    assert_eq!(
        cfg,
        json!({
            "enable": true,
            "watch": { "watchers": { "sshd": {
                "check": { "type": "systemd", "unit": "sshd.service" },
                "intervalSecs": 30,
                "actions": ["restart", "rollback", "notify"],
            }}},
            "routines": { "disk-usage": {
                "trigger": { "type": "interval", "seconds": 300 },
                "action": { "type": "command", "command": ["df", "--output=pcent", "/"] },
            }},
        })
    );
    // The repository's lib/ (shared by the NixOS module and the local backend) accepts it all.
    let rendered = eval("let l = import ../lib; c = (import ./osmoda.nix { }).services.osmoda; in { r = l.render c; u = l.unsupported c; }")?;
    assert_eq!(rendered["u"], json!([]));
    let sshd = &rendered["r"]["watch"]["watchers"]["sshd"];
    assert_eq!(sshd["interval_secs"], json!(30));
    assert_eq!(sshd["check"]["unit"], json!("sshd.service"));
    assert_eq!(
        rendered["r"]["routines"]["routines"]["disk-usage"]["trigger"],
        json!({"type": "interval", "seconds": 300})
    );
    Ok(())
}

#[test]
fn the_flake_wires_module_configuration_and_revision() -> anyhow::Result<()> {
    if !have_nix("evaluating flake.nix outputs") {
        return Ok(());
    }
    // Inputs are stand-ins (no nixpkgs offline): nixosSystem returns its arguments.
    let expr = |self_: &str| {
        format!(
            "let flake = import ./flake.nix;
                 out = flake.outputs {{ self = {self_}; nixpkgs = {{ lib.nixosSystem = args: args; }};
                                        osmoda = {{ nixosModules.default = \"osmoda-module\"; }}; }};
                 m = out.nixosConfigurations.osmoda.modules;
             in {{ n = builtins.length m; first = builtins.elemAt m 0; second = baseNameOf (builtins.elemAt m 1);
                  rev = (builtins.elemAt m 2).system.configurationRevision;
                  nixpkgs = flake.inputs.nixpkgs.url; osmoda = flake.inputs.osmoda.url; }}"
        )
    };
    let clean = eval(&expr("{ rev = \"abc123\"; }"))?;
    assert_eq!(
        clean,
        json!({ "n": 3, "first": "osmoda-module", "second": "configuration.nix", "rev": "abc123",
                "nixpkgs": "github:NixOS/nixpkgs/nixos-unstable", "osmoda": "github:osmoda/osmoda" })
    );
    assert_eq!(
        eval(&expr("{ dirtyRev = \"abc123-dirty\"; }"))?["rev"],
        json!("abc123-dirty")
    );
    assert_eq!(eval(&expr("{ }"))?["rev"], json!(null));
    Ok(())
}

#[test]
fn configuration_nix_imports_osmoda_nix() -> anyhow::Result<()> {
    if !have_nix("evaluating configuration.nix") {
        return Ok(());
    }
    let cfg = eval(
        "let c = import ./configuration.nix { config = { }; lib = { }; pkgs = { git = \"git\"; htop = \"htop\"; curl = \"curl\"; }; };
         in { imports = map baseNameOf c.imports; host = c.networking.hostName;
              pkgs = c.environment.systemPackages; ssh = c.services.openssh.enable; }",
    )?;
    assert_eq!(
        cfg,
        json!({ "imports": ["osmoda.nix"], "host": "osmoda", "pkgs": ["git", "htop", "curl"], "ssh": true })
    );
    // A full NixOS evaluation needs nixpkgs.
    let found = Command::new("nix-instantiate")
        .args(["--find-file", "nixpkgs"])
        .output()?;
    if !found.status.success() {
        eprintln!("skipped: full NixOS evaluation of the template: <nixpkgs> not found");
        return Ok(());
    }
    let host = eval(
        "(import <nixpkgs/nixos/lib/eval-config.nix> {
            system = \"x86_64-linux\";
            modules = [ ../modules/osmoda.nix ./configuration.nix ];
         }).config.networking.hostName",
    )?;
    assert_eq!(host, json!("osmoda"));
    Ok(())
}
