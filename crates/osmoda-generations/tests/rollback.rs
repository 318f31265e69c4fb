//! A failed edit (closure error, invalid Nix, evaluation failure, panic, bad path) leaves the
//! work tree, the index, HEAD and the history exactly as they were, checked with the real git CLI.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use osmoda_generations::{GenError, Tree};

/// Snapshot of everything a failed edit must not change.
#[derive(Debug, PartialEq)]
struct State {
    log: Vec<String>,
    head_ref: String,
    index: Vec<u8>,
    files: Vec<(String, Vec<u8>)>,
}

fn state(dir: &Path) -> anyhow::Result<State> {
    let mut files = Vec::new();
    for f in git(dir, &["ls-files"])?.lines() {
        files.push((f.to_string(), std::fs::read(dir.join(f))?));
    }
    Ok(State {
        log: log(dir)?,
        head_ref: git(dir, &["symbolic-ref", "HEAD"])?,
        index: git(dir, &["ls-files", "--stage"])?.into_bytes(),
        files,
    })
}

/// Runs a failing mutation and checks that nothing changed.
fn assert_untouched<F>(tree: &Tree, edit: F) -> anyhow::Result<GenError>
where
    F: FnOnce(&Path) -> Result<Vec<PathBuf>, GenError>,
{
    let dir = tree.dir().to_path_buf();
    let before = state(&dir)?;
    let err = match tree.mutate(&agent(), "a change that must fail", Some(1), edit) {
        Ok(g) => anyhow::bail!("the mutation unexpectedly succeeded: {g:?}"),
        Err(e) => e,
    };
    assert_eq!(porcelain(&dir)?, "", "git status after {err}");
    assert_eq!(state(&dir)?, before, "state after {err}");
    assert_eq!(tree.status()?, vec![], "status after {err}");
    Ok(err)
}

#[test]
fn invalid_raw_nix_is_rolled_back() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let err = assert_untouched(&tree, |root| insert_setting(root, "agentd.port = 9090 +;"))?;
    let msg = err.to_string();
    assert!(matches!(err, GenError::Invalid { .. }), "{err:?}");
    assert!(
        msg.contains("osmoda.nix is not valid Nix") && msg.contains("line "),
        "{msg}"
    );
    Ok(())
}

#[test]
fn an_edit_closure_error_is_rolled_back_even_after_it_wrote_files() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let err = assert_untouched(&tree, |root| {
        insert_setting(root, "x = 1;")?;
        std::fs::write(root.join("configuration.nix"), "# clobbered\n").map_err(GenError::edit)?;
        std::fs::create_dir_all(root.join("hosts/new")).map_err(GenError::edit)?;
        std::fs::write(root.join("hosts/new/extra.nix"), "{ }\n").map_err(GenError::edit)?;
        std::fs::remove_file(root.join("flake.nix")).map_err(GenError::edit)?;
        Err(GenError::edit(
            "the path services.osmoda.x goes through a list",
        ))
    })?;
    assert!(
        err.to_string()
            .contains("edit failed, nothing was committed: the path"),
        "{err}"
    );
    assert!(
        !tree.dir().join("hosts").exists(),
        "directories the edit created are removed"
    );
    Ok(())
}

#[test]
fn a_panicking_edit_is_rolled_back() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let err = assert_untouched(&tree, |root| {
        let _ = insert_setting(root, "x = 1;");
        panic!("bug in an edit closure");
    })?;
    assert!(err.to_string().contains("panicked"), "{err}");
    Ok(())
}

#[test]
fn an_unreported_or_escaping_path_is_rolled_back() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let err = assert_untouched(&tree, |root| {
        insert_setting(root, "x = 1;")?;
        Ok(vec![
            PathBuf::from("osmoda.nix"),
            PathBuf::from("../outside.nix"),
        ])
    })?;
    assert!(matches!(err, GenError::BadPath { .. }), "{err:?}");
    Ok(())
}

#[test]
fn an_evaluation_failure_of_a_data_only_file_is_rolled_back() -> anyhow::Result<()> {
    if !have_nix("evaluation failure") {
        return Ok(());
    }
    let (_tmp, tree) = new_tree()?;
    // Parses fine (rnix and --parse) but fails to evaluate.
    let err = assert_untouched(&tree, |root| {
        insert_setting(root, "agentd.port = 1 + \"x\";")
    })?;
    let msg = err.to_string();
    // The Nix evaluator's own message, naming the tree's file.
    assert!(
        msg.contains("cannot add a string to an integer") && msg.contains("osmoda.nix"),
        "{msg}"
    );
    // A free variable (no `lib` in `{ ... }:`) is caught by Nix's parser.
    let err = assert_untouched(&tree, |root| {
        insert_setting(root, "agentd.port = lib.mkForce 9090;")
    })?;
    assert!(
        err.to_string().contains("undefined variable 'lib'"),
        "{err}"
    );
    // Duplicate definitions are rejected by Nix's parser, which rnix accepts.
    let err = assert_untouched(&tree, |root| insert_setting(root, "enable = false;"))?;
    assert!(err.to_string().contains("already defined"), "{err}");
    Ok(())
}

#[test]
fn a_nix_parse_failure_of_a_non_data_file_is_rolled_back() -> anyhow::Result<()> {
    if !have_nix("nix-instantiate --parse failure") {
        return Ok(());
    }
    let (_tmp, tree) = new_tree()?;
    let err = assert_untouched(&tree, |root| {
        let path = root.join("configuration.nix");
        let text = std::fs::read_to_string(&path).map_err(GenError::edit)?;
        let text = text.replace(
            "time.timeZone = \"UTC\";",
            "time.timeZone = \"UTC\";\n  time.timeZone = \"CET\";",
        );
        std::fs::write(&path, text).map_err(GenError::edit)?;
        Ok(vec![PathBuf::from("configuration.nix")])
    })?;
    assert!(err.to_string().contains("configuration.nix"), "{err}");
    Ok(())
}

#[test]
fn non_utf8_nix_is_refused() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let err = assert_untouched(&tree, |root| {
        std::fs::write(root.join("osmoda.nix"), b"{ a = \"\xff\"; }\n").map_err(GenError::edit)?;
        Ok(vec![PathBuf::from("osmoda.nix")])
    })?;
    assert!(err.to_string().contains("not UTF-8"), "{err}");
    Ok(())
}

#[test]
fn a_later_mutation_after_a_failure_still_works() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    assert_untouched(&tree, |root| insert_setting(root, "broken = ;"))?;
    let gen = tree.mutate(&agent(), "fine", None, |root| {
        insert_setting(root, "fine = true;")
    })?;
    assert_eq!(log(tree.dir())?[0], gen.rev);
    assert_eq!(porcelain(tree.dir())?, "");
    Ok(())
}
