//! The tree's `.gitattributes` decide what a change is, as they do for git: status, an agent
//! edit and a person's commit agree with `git add`'s view for each attribute kind (`text=auto`,
//! `eol=crlf`, `-text`, `binary`) when a file is re-saved with other line endings.

mod common;

use std::path::Path;

use common::{agent, alice, git, new_tree, porcelain};
use osmoda_generations::{GenError, Tree};

/// Commits `.gitattributes` with `line` as a person's generation, through the real git CLI, and
/// checks the files out again so the work tree has the attribute's line endings.
fn with_attributes(tree: &Tree, line: &str) -> anyhow::Result<()> {
    std::fs::write(tree.dir().join(".gitattributes"), format!("{line}\n"))?;
    tree.commit_worktree(&alice(), "line endings", None)?;
    git(tree.dir(), &["rm", "-q", "--cached", "-r", "."])?;
    git(tree.dir(), &["reset", "-q", "--hard"])?;
    Ok(())
}

/// Re-saves osmoda.nix with the same text and CRLF (or LF) line endings.
fn resave(dir: &Path, crlf: bool) -> anyhow::Result<()> {
    let p = dir.join("osmoda.nix");
    let text = std::fs::read_to_string(&p)?.replace("\r\n", "\n");
    let text = if crlf {
        text.replace('\n', "\r\n")
    } else {
        text
    };
    std::fs::write(&p, text)?;
    Ok(())
}

/// What git itself says after staging everything: is there a change to commit?
fn git_sees_a_change(dir: &Path) -> anyhow::Result<bool> {
    let scratch = tempfile::tempdir()?;
    let index = scratch.path().join("index");
    std::fs::copy(dir.join(".git/index"), &index)?;
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .env("GIT_INDEX_FILE", &index)
            .output()
    };
    run(&["add", "-A"])?;
    let out = run(&["diff", "--cached", "--quiet", "HEAD"])?;
    Ok(!out.status.success())
}

#[test]
fn status_edit_and_commit_agree_with_git_for_each_attribute_kind() -> anyhow::Result<()> {
    for (attrs, crlf, changed) in [
        ("* text=auto", true, false),
        ("* text eol=crlf", false, false),
        ("* text eol=crlf", true, false),
        ("* -text", true, true),
        ("*.nix binary", true, true),
    ] {
        let case = format!(
            "{attrs:?}, re-saved with {}",
            if crlf { "CRLF" } else { "LF" }
        );
        let (_tmp, tree) = new_tree()?;
        with_attributes(&tree, attrs)?;
        assert!(tree.status()?.is_empty(), "{case}: clean after checkout");
        resave(tree.dir(), crlf)?;
        assert_eq!(
            git_sees_a_change(tree.dir())?,
            changed,
            "{case}: git's own view"
        );
        let status = tree.status()?;
        assert_eq!(!status.is_empty(), changed, "{case}: status {status:?}");
        let edit = tree.mutate(&agent(), "agent edit", None, |root| {
            let p = root.join("osmoda.nix");
            let text = std::fs::read_to_string(&p).map_err(GenError::edit)?;
            std::fs::write(&p, text.replace("intervalSecs = 30;", "intervalSecs = 31;"))
                .map_err(GenError::edit)?;
            Ok(vec!["osmoda.nix".into()])
        });
        if changed {
            assert!(
                matches!(edit, Err(GenError::Dirty { .. })),
                "{case}: {edit:?}"
            );
            let g = tree.commit_worktree(&alice(), "re-saved", None)?;
            assert_eq!(g.author.name, "Alice Admin");
            assert!(tree.status()?.is_empty(), "{case}: clean after the commit");
        } else {
            edit.map_err(|e| anyhow::anyhow!("{case}: the edit was refused: {e}"))?;
            match tree.commit_worktree(&alice(), "nothing", None) {
                Err(GenError::NoChange(_)) => {}
                other => panic!("{case}: commit of a clean tree: {other:?}"),
            }
            assert!(tree.status()?.is_empty(), "{case}: clean after the edit");
        }
        // Whatever happened, git agrees that nothing is left to commit.
        assert!(
            !git_sees_a_change(tree.dir())?,
            "{case}: {}",
            porcelain(tree.dir())?
        );
    }
    Ok(())
}

/// `core.autocrlf` is the repository's setting at the time of each operation, not when the
/// tree was opened: a person who sets it later gets the same answers from status, an edit and a
/// commit as from git (and unsetting it again is followed too).
#[test]
fn core_autocrlf_is_read_at_each_operation() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    assert!(tree.status()?.is_empty());
    resave(tree.dir(), true)?;
    assert!(
        git_sees_a_change(tree.dir())?,
        "without autocrlf git sees CRLF"
    );
    assert!(!tree.status()?.is_empty(), "and so does the tree");
    // Set after the tree was opened (and used).
    git(tree.dir(), &["config", "core.autocrlf", "input"])?;
    assert!(!git_sees_a_change(tree.dir())?, "git normalises now");
    assert!(tree.status()?.is_empty(), "status follows the new setting");
    tree.mutate(&agent(), "agent edit", None, |root| {
        let p = root.join("osmoda.nix");
        let text = std::fs::read_to_string(&p).map_err(GenError::edit)?;
        std::fs::write(&p, text.replace("intervalSecs = 30;", "intervalSecs = 31;"))
            .map_err(GenError::edit)?;
        Ok(vec!["osmoda.nix".into()])
    })?;
    assert!(
        !git_sees_a_change(tree.dir())?,
        "{}",
        porcelain(tree.dir())?
    );
    // And unset again: the CRLF file is a change once more, for git and the tree alike.
    git(tree.dir(), &["config", "--unset", "core.autocrlf"])?;
    resave(tree.dir(), true)?;
    assert!(git_sees_a_change(tree.dir())?);
    assert!(!tree.status()?.is_empty(), "status follows the unset");
    Ok(())
}
