//! The `validate` setting (`parse | eval | build`) and the full NixOS evaluation `build` runs
//! before a commit.
//!
//! * `parse`: rnix only; the evaluator is never started.
//! * `eval` (default): rnix, then the Nix evaluator on each changed file (see [`crate::validate`]).
//! * `build`: `eval`, then the whole configuration is evaluated by NixOS itself, forcing
//!   `config.system.build.toplevel.drvPath`: every option type, every conflicting definition and
//!   every assertion is judged as `nixos-rebuild build` would, without building.
//!   - A tree with a `flake.nix` is evaluated as the flake it is, the way
//!     `nixos-rebuild --flake` does: `builtins.getFlake "git+file://<tree>"` (the work tree's
//!     content, so the edit being validated is included; its pinned inputs, nixpkgs and
//!     osModa's module among them, come from its `flake.lock`), host
//!     `nixosConfigurations.<hostname>`, or the only one there is. Inputs that are not in the
//!     store must be fetched: where that fails (offline, no `flake.lock`) every edit is
//!     refused with [`GenError::Unavailable`] saying so.
//!   - A tree without a flake is evaluated with `<nixpkgs/nixos/lib/eval-config.nix>`, the
//!     tree's `configuration.nix` and, when given, osModa's NixOS module. This **needs
//!     nixpkgs** (`<nixpkgs>` in `NIX_PATH`, as on NixOS with channels or `nix.nixPath`);
//!     where it does not resolve every edit is refused with [`GenError::Unavailable`].
//!
//!   Either way an edit is never committed unchecked.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;

use crate::GenError;

/// How much validation a change gets before it is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Validate {
    /// rnix parse only.
    Parse,
    /// rnix, then the Nix evaluator on the changed files.
    #[default]
    Eval,
    /// `Eval`, then a full NixOS evaluation of the tree (needs nixpkgs).
    Build,
}

impl FromStr for Validate {
    type Err = String;

    fn from_str(s: &str) -> Result<Validate, String> {
        match s {
            "parse" => Ok(Validate::Parse),
            "eval" => Ok(Validate::Eval),
            "build" => Ok(Validate::Build),
            other => Err(format!(
                "unknown validate level {other:?}; expected parse, eval or build"
            )),
        }
    }
}

/// The full NixOS evaluation of `validate = build`.
#[derive(Debug, Clone)]
pub(crate) struct FullEval {
    /// osModa's NixOS module, evaluated with the tree (the tree's flake adds it on NixOS).
    pub module: Option<PathBuf>,
}

const EXPR: &str = r#"{ tree, module }:
let
  nixos = import <nixpkgs/nixos/lib/eval-config.nix> {
    system = builtins.currentSystem;
    modules = [ (/. + tree + "/configuration.nix") ]
      ++ (if module == "" then [ ] else [ (/. + module) ]);
  };
in nixos.config.system.build.toplevel.drvPath"#;

impl FullEval {
    /// Evaluates the tree in `dir` as NixOS would.
    ///
    /// # Errors
    /// [`GenError::Unavailable`] without `nix-instantiate` or `<nixpkgs>`;
    /// [`GenError::Invalid`] (naming `configuration.nix`) with NixOS's message.
    pub(crate) fn check(&self, dir: &Path, nix: Option<&Path>) -> Result<(), GenError> {
        let nix = nix.map(Path::to_path_buf).or_else(crate::validate::find_nix_instantiate).ok_or_else(|| {
            unavailable("nix-instantiate is not installed; install Nix, or set services.osmoda.agentd.validate = \"eval\" (or \"parse\")".into())
        })?;
        if dir.join("flake.nix").is_file() {
            return check_flake(dir, &nix);
        }
        let found = Command::new(&nix)
            .args(["--find-file", "nixpkgs"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !found {
            return Err(unavailable(
                "it needs nixpkgs and <nixpkgs> is not found in NIX_PATH (on NixOS: a channel or \
                 nix.nixPath); set services.osmoda.agentd.validate = \"eval\" to validate the \
                 changed files only"
                    .into(),
            ));
        }
        let out = Command::new(&nix)
            .args(["--eval", "--strict", "--readonly-mode", "--expr", EXPR])
            .arg("--argstr")
            .arg("tree")
            .arg(dir)
            .arg("--argstr")
            .arg("module")
            .arg(self.module.as_deref().unwrap_or(Path::new("")))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .map_err(|e| GenError::io("run", &nix, e))?;
        if out.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(GenError::Invalid {
            path: PathBuf::from("configuration.nix"),
            message: format!("NixOS evaluation: {}", stderr.trim()),
        })
    }
}

fn unavailable(reason: String) -> GenError {
    GenError::Unavailable {
        what: "validate = build (a full NixOS evaluation before commit)",
        reason,
    }
}

/// Evaluates the flake's NixOS system for this host (see the module docs).
const FLAKE_EXPR: &str = r#"{ tree, host }:
let
  flake = builtins.getFlake ("git+file://" + tree);
  systems = flake.nixosConfigurations or { };
  names = builtins.attrNames systems;
  name =
    if systems ? ${host} then host
    else if builtins.length names == 1 then builtins.head names
    else throw "osmoda: the flake has no nixosConfigurations.${host} (this machine's host name) and ${toString (builtins.length names)} others (${builtins.concatStringsSep ", " names}); name the machine's configuration after its host name";
in systems.${name}.config.system.build.toplevel.drvPath"#;

/// What a failed fetch of a flake input says (Nix 2.8 and later).
const FETCH_FAILED: &[&str] = &[
    "unable to download",
    "Couldn't resolve host",
    "Could not resolve host",
    "unable to access",
    "cannot fetch",
    "unable to fetch",
];

fn check_flake(dir: &Path, nix: &Path) -> Result<(), GenError> {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    let mut cmd = Command::new(nix);
    cmd.args(["--eval", "--strict"])
        .args([
            "--option",
            "extra-experimental-features",
            "nix-command flakes",
        ])
        // Inputs are normally in the store already (the running system was built from them);
        // do not spend a minute retrying a download that cannot work.
        .args(["--option", "download-attempts", "1"])
        .args(["--option", "connect-timeout", "5"])
        .arg("--argstr")
        .arg("tree")
        .arg(dir)
        .arg("--argstr")
        .arg("host")
        .arg(&host)
        .arg("--expr")
        .arg(FLAKE_EXPR)
        .current_dir(dir);
    let out = crate::evaluator::run(cmd, &crate::evaluator::Caps::VALIDATE)
        .map_err(|e| GenError::io("run", nix, e))?;
    if out.success() {
        return Ok(());
    }
    let stderr = out.stderr.trim();
    if let Some(cap) = out.exceeded {
        return Err(GenError::Invalid {
            path: PathBuf::from("flake.nix"),
            message: format!("NixOS evaluation of the flake was stopped: {cap}"),
        });
    }
    if let Some(line) = stderr
        .lines()
        .find(|l| FETCH_FAILED.iter().any(|m| l.contains(m)))
    {
        return Err(unavailable(format!(
            "the flake's inputs are not in the Nix store and could not be fetched ({}); on \
             the machine, lock them (`nix flake lock`, commit flake.lock) and build once so \
             they are in the store, or set services.osmoda.agentd.validate = \"eval\"",
            line.trim()
        )));
    }
    Err(GenError::Invalid {
        path: PathBuf::from("flake.nix"),
        message: format!("NixOS evaluation of the flake: {stderr}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_unknown_ones_are_named() {
        assert_eq!("parse".parse(), Ok(Validate::Parse));
        assert_eq!("eval".parse(), Ok(Validate::Eval));
        assert_eq!("build".parse(), Ok(Validate::Build));
        let e = "full".parse::<Validate>().expect_err("unknown");
        assert!(e.contains("parse, eval or build"), "{e}");
    }
}
