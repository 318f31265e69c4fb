//! Crash recovery: a mutation interrupted after its intent was persisted is rolled back (or,
//! if its commit landed, recognised as committed) when the tree is recovered; stale git locks
//! left by a crash are cleared, and a lock held by a live process is named.

mod common;

use std::fs;

use common::{agent, git, new_tree, porcelain};
use osmoda_generations::{GenError, Recovery, Tree};

/// Leaves `.git/osmoda-intent` behind as a process killed mid-edit would.
fn leave_intent(dir: &std::path::Path, head: &str, event: i64) {
    fs::write(
        dir.join(".git/osmoda-intent"),
        format!("head {head}\nevent {event}\n"),
    )
    .expect("intent");
}

#[test]
fn an_interrupted_edit_is_rolled_back_to_head() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let root = tree.dir().to_path_buf();
    let head = git(&root, &["rev-parse", "HEAD"])?.trim().to_string();
    leave_intent(&root, &head, 41);
    let osmoda = &root.join("osmoda.nix");
    let original = fs::read_to_string(osmoda)?;
    fs::write(
        osmoda,
        original.replace("{ ... }:", "{ ... }: # half-landed"),
    )?;
    drop(tree);
    let tree = Tree::open(&root)?;
    let outcome = tree.recover()?;
    assert_eq!(
        outcome,
        Some(Recovery::RolledBack {
            event_id: Some(41),
            files: vec!["osmoda.nix".into()]
        })
    );
    assert_eq!(fs::read_to_string(osmoda)?, original);
    assert_eq!(porcelain(&root)?, "");
    assert_eq!(tree.recover()?, None, "the intent is gone");
    Ok(())
}

#[test]
fn an_edit_whose_commit_landed_is_recognised_as_committed() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let root = tree.dir().to_path_buf();
    let head = git(&root, &["rev-parse", "HEAD"])?.trim().to_string();
    let generation = tree.mutate(&agent(), "landed", Some(7), |root| {
        common::insert_setting(root, "services.osmoda.enable = true;")
    })?;
    // The process died after the commit but before it removed its intent.
    leave_intent(&root, &head, 7);
    let outcome = tree.recover()?;
    assert_eq!(
        outcome,
        Some(Recovery::Committed {
            event_id: Some(7),
            rev: generation.rev
        })
    );
    assert_eq!(porcelain(&root)?, "");
    Ok(())
}

#[test]
fn stale_git_locks_are_cleared_and_live_ones_named() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let root = tree.dir().to_path_buf();
    let lock = &root.join(".git/index.lock");
    fs::write(lock, "")?;
    fs::write(root.join(".git/refs/heads/main.lock"), "")?;
    tree.mutate(&agent(), "after a crash", None, |root| {
        common::insert_setting(root, "services.osmoda.enable = true;")
    })?;
    let mut cleared = tree.take_cleared_locks();
    cleared.sort();
    assert_eq!(cleared, [".git/index.lock", ".git/refs/heads/main.lock"]);
    assert!(!lock.exists());

    // A live holder (this process, holding the file open) is named and nothing changes.
    let held = fs::File::create(lock)?;
    let err = tree
        .mutate(&agent(), "blocked", None, |root| {
            common::insert_setting(root, "services.osmoda.x = 1;")
        })
        .expect_err("a held lock");
    assert!(matches!(err, GenError::Locked { .. }), "{err}");
    assert!(
        err.to_string()
            .contains(&format!("pid {}", std::process::id())),
        "{err}"
    );
    drop(held);
    fs::remove_file(lock)?;
    Ok(())
}

#[test]
fn a_detached_head_is_refused_naming_the_fix() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let root = tree.dir().to_path_buf();
    let head = git(&root, &["rev-parse", "HEAD"])?.trim().to_string();
    git(&root, &["checkout", "-q", &head])?;
    let err = tree
        .mutate(&agent(), "x", None, |root| {
            common::insert_setting(root, "a = 1;")
        })
        .expect_err("detached");
    assert!(err.to_string().contains("checkout main"), "{err}");
    Ok(())
}

#[test]
fn a_tree_owned_by_another_user_is_refused_saying_what_to_do() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let root = tree.dir().to_path_buf();
    drop(tree);
    // Hand the repository to `nobody`; git refuses to open a repository another user owns.
    std::os::unix::fs::chown(&root, Some(65534), Some(65534))?;
    std::os::unix::fs::chown(root.join(".git"), Some(65534), Some(65534))?;
    match Tree::open(&root) {
        Ok(_) => println!("skipped: this git lets the current user open another user's repository"),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains("chown") && !msg.contains("config init"),
                "{msg}"
            );
        }
    }
    Ok(())
}
