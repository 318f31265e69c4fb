//! `validate = build` on a tree with a `flake.nix` evaluates the flake, as `nixos-rebuild
//! --flake` does (`builtins.getFlake` of the work tree, so the edit being validated is part of
//! it): what its NixOS configuration refuses is refused before the commit, and inputs that
//! cannot be fetched make every edit "unavailable", never committed unchecked.
//!
//! The flakes here have no nixpkgs (there is none offline): their `nixosConfigurations` entry
//! stands in for `nixosSystem` with a plain derivation whose evaluation reads the tree's
//! `osmoda.nix` and throws on a value the "system" refuses.

mod common;

use common::{agent, alice, new_tree};
use osmoda_generations::{GenError, Tree, Validate};

const SELF_CONTAINED: &str = r#"{
  outputs = { self }: {
    nixosConfigurations.any-host.config.system.build.toplevel.drvPath =
      let
        cfg = (import ./osmoda.nix { }).services.osmoda;
        interval = cfg.watch.watchers.sshd.intervalSecs;
      in
      if interval > 100 then throw "osmoda-test: intervalSecs ${toString interval} is over 100"
      else (derivation { name = "system"; system = "x86_64-linux"; builder = "/bin/sh"; }).drvPath;
  };
}
"#;

const UNFETCHABLE: &str = r#"{
  inputs.nixpkgs.url = "git+https://osmoda-test.invalid/nixpkgs";
  outputs = { self, nixpkgs }: { nixosConfigurations.any-host = nixpkgs.lib.nixosSystem { }; };
}
"#;

fn set_interval(tree: &Tree, n: u32) -> Result<osmoda_generations::Generation, GenError> {
    tree.mutate(&agent(), &format!("interval {n}"), None, |root| {
        let p = root.join("osmoda.nix");
        let text = std::fs::read_to_string(&p).map_err(GenError::edit)?;
        let at = text
            .find("intervalSecs = ")
            .ok_or_else(|| GenError::edit("no intervalSecs"))?;
        let end = at + text[at..].find(';').ok_or_else(|| GenError::edit("no ;"))?;
        let new = format!("{}intervalSecs = {n}{}", &text[..at], &text[end..]);
        std::fs::write(&p, new).map_err(GenError::edit)?;
        Ok(vec!["osmoda.nix".into()])
    })
}

/// A tree whose flake.nix is `flake`, opened with `validate = build`.
fn flake_tree(flake: &str) -> anyhow::Result<(tempfile::TempDir, Tree)> {
    let (tmp, tree) = new_tree()?;
    std::fs::write(tree.dir().join("flake.nix"), flake)?;
    tree.commit_worktree(&alice(), "this machine's flake", None)?;
    let dir = tree.dir().to_path_buf();
    drop(tree);
    Ok((tmp, Tree::open(&dir)?.with_validate(Validate::Build, None)))
}

fn nix_with_flakes() -> bool {
    if !common::have_nix("build_flake") {
        return false;
    }
    // Evaluating a flake writes to the Nix store.
    use std::os::unix::fs::MetadataExt;
    let store_owner = std::fs::metadata("/nix/store").map(|m| m.uid());
    let me = std::fs::metadata("/proc/self").map(|m| m.uid());
    let writable = matches!((store_owner, me), (Ok(a), Ok(b)) if a == b);
    if !writable {
        eprintln!("skipped: build_flake: /nix/store is not writable by this user");
    }
    writable
}

#[test]
fn a_flake_tree_is_validated_by_evaluating_the_flake() -> anyhow::Result<()> {
    if !nix_with_flakes() {
        return Ok(());
    }
    let (_tmp, tree) = flake_tree(SELF_CONTAINED)?;
    let head = tree.head()?;
    match set_interval(&tree, 500) {
        Err(GenError::Invalid { path, message }) => {
            assert_eq!(path, std::path::Path::new("flake.nix"));
            assert!(
                message.contains("intervalSecs 500 is over 100"),
                "{message}"
            );
        }
        other => panic!("an edit the flake's system refuses: {other:?}"),
    }
    assert_eq!(tree.head()?, head, "nothing was committed");
    assert!(tree.status()?.is_empty(), "the work tree is back");
    let g = set_interval(&tree, 45)?;
    assert_ne!(g.rev, head);
    Ok(())
}

#[test]
fn a_flake_whose_inputs_cannot_be_fetched_makes_build_unavailable() -> anyhow::Result<()> {
    if !nix_with_flakes() {
        return Ok(());
    }
    let (_tmp, tree) = flake_tree(UNFETCHABLE)?;
    let head = tree.head()?;
    match set_interval(&tree, 45) {
        Err(e @ GenError::Unavailable { .. }) => {
            let m = e.to_string();
            assert!(
                m.contains("could not be fetched") && m.contains("nix flake lock"),
                "{m}"
            );
        }
        other => panic!("unfetchable inputs: {other:?}"),
    }
    assert_eq!(tree.head()?, head);
    assert!(tree.status()?.is_empty());
    Ok(())
}
