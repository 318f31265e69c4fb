//! The NixOS module evaluated with nixpkgs' own module system (`nixos/lib/eval-config.nix`)
//! writes exactly the golden /etc/osmoda/*.json that lib renders. Needs `<nixpkgs>`; where
//! it does not resolve (this CI) the test prints "skipped: <nixpkgs> not found".

mod common;

use std::process::Command;

use anyhow::{Context, Result};

fn nixpkgs_found() -> bool {
    Command::new("nix-instantiate")
        .args(["--find-file", "nixpkgs"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

const EVAL: &str = r#"{ repo, fixture }:
let
  L = import (/. + repo + "/lib");
  nixos = import <nixpkgs/nixos/lib/eval-config.nix> {
    system = builtins.currentSystem;
    modules = [
      (/. + repo + "/modules/osmoda.nix")
      {
        services.osmoda = import (/. + fixture) // { enable = true; };
        boot.loader.grub.enable = false;
        fileSystems."/" = { device = "none"; fsType = "tmpfs"; };
        system.stateVersion = "24.11";
      }
    ];
  };
  inherit (nixos) config;
  etc = config.environment.etc;
  present = builtins.filter (n: etc ? "osmoda/${n}.json") L.daemonNames;
in {
  files = builtins.listToAttrs (map (n: { name = n; value = builtins.fromJSON etc."osmoda/${n}.json".text; }) present);
  enabled = builtins.filter (n: config.services.osmoda.${n}.enable) L.daemonNames;
  failedAssertions = map (a: a.message) (builtins.filter (a: !a.assertion) config.assertions);
  watchRestartIfChanged = config.systemd.services.osmoda-watch.restartIfChanged or null;
  keydPrivateNetwork = config.systemd.services.osmoda-keyd.serviceConfig.PrivateNetwork or null;
}"#;

#[test]
fn module_writes_the_golden_files() -> Result<()> {
    if !common::nix_available("module_writes_the_golden_files") {
        return Ok(());
    }
    if !nixpkgs_found() {
        eprintln!("skipped: <nixpkgs> not found (module_writes_the_golden_files needs nixpkgs' module system)");
        return Ok(());
    }
    let root = common::repo_root();
    for fixture in common::fixtures()? {
        let stem = fixture
            .file_stem()
            .context("stem")?
            .to_string_lossy()
            .into_owned();
        let out = common::nix_eval_json(
            EVAL,
            &[
                ("repo", &root.to_string_lossy()),
                ("fixture", &fixture.to_string_lossy()),
            ],
        )?;
        assert_eq!(
            out["failedAssertions"],
            serde_json::json!([]),
            "{stem}: module assertions fail"
        );
        let golden: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(
            root.join("tests/nix/golden").join(format!("{stem}.json")),
        )?)?;
        let files = out["files"].as_object().context("files")?;
        let enabled: Vec<String> = serde_json::from_value(out["enabled"].clone())?;
        let mut present: Vec<String> = files.keys().cloned().collect();
        present.sort();
        let mut want = enabled.clone();
        want.sort();
        assert_eq!(
            present, want,
            "{stem}: the module writes a file for each enabled daemon"
        );
        for (daemon, json) in files {
            assert_eq!(
                json, &golden[daemon],
                "{stem}: /etc/osmoda/{daemon}.json differs from the golden file"
            );
        }
        if enabled.iter().any(|d| d == "watch") {
            assert_eq!(
                out["watchRestartIfChanged"], false,
                "{stem}: a switch must not restart watch"
            );
        }
        if enabled.iter().any(|d| d == "keyd") {
            assert_eq!(
                out["keydPrivateNetwork"], true,
                "{stem}: keyd has no network"
            );
        }
    }
    Ok(())
}
