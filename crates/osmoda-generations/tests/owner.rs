//! A tree owned by another user keeps its owner: run as root on a tree chowned to `nobody`,
//! every object, ref, log, index and edited file a change writes belongs to `nobody` afterwards.
//! (Its own binary: it points `HOME` at a git config that trusts the tree, `safe.directory`, as
//! an operator sharing a tree with agentd does.)

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{agent, alice, template};
use osmoda_generations::{GenError, Tree};

const NOBODY: u32 = 65534;

fn all_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("list").flatten() {
        let p = e.path();
        out.push(p.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            all_files(&p, out);
        }
    }
}

fn not_nobodys(dir: &Path) -> Vec<PathBuf> {
    not_owned_by(dir, NOBODY)
}

fn not_owned_by(dir: &Path, uid: u32) -> Vec<PathBuf> {
    let mut files = vec![dir.to_path_buf()];
    all_files(dir, &mut files);
    files
        .into_iter()
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() != uid || m.gid() != uid))
        .collect()
}

#[test]
fn a_tree_owned_by_another_user_keeps_its_owner() -> anyhow::Result<()> {
    if std::fs::metadata("/proc/self")?.uid() != 0 {
        println!("skipped: a_tree_owned_by_another_user_keeps_its_owner needs root (chown)");
        return Ok(());
    }
    let tmp = tempfile::tempdir()?;
    let home = tmp.path().join("home");
    std::fs::create_dir_all(&home)?;
    std::fs::write(home.join(".gitconfig"), "[safe]\n\tdirectory = *\n")?;
    std::env::set_var("HOME", &home);
    std::env::remove_var("XDG_CONFIG_HOME");

    let dir = tmp.path().join("tree");
    drop(Tree::init(&dir, &template(), &alice())?);
    for p in std::iter::once(dir.clone()).chain({
        let mut v = Vec::new();
        all_files(&dir, &mut v);
        v
    }) {
        std::os::unix::fs::lchown(&p, Some(NOBODY), Some(NOBODY))?;
    }
    let tree = Tree::open(&dir)?;
    tree.mutate(&agent(), "an agent edit", Some(1), |root| {
        let p = root.join("osmoda.nix");
        let text = std::fs::read_to_string(&p).map_err(GenError::edit)?;
        std::fs::write(&p, text.replace("intervalSecs = 30;", "intervalSecs = 31;"))
            .map_err(GenError::edit)?;
        // A file the change creates, in a directory it creates.
        std::fs::create_dir_all(root.join("hosts")).map_err(GenError::edit)?;
        std::fs::write(root.join("hosts/new.nix"), "{ }\n").map_err(GenError::edit)?;
        Ok(vec!["osmoda.nix".into(), "hosts/new.nix".into()])
    })?;
    assert_eq!(
        not_nobodys(&dir),
        Vec::<PathBuf>::new(),
        "after an agent edit"
    );

    // A person's hand edit, committed through the tree.
    std::fs::write(dir.join("extra.nix"), "{ }\n")?;
    std::os::unix::fs::lchown(dir.join("extra.nix"), Some(NOBODY), Some(NOBODY))?;
    tree.commit_worktree(&alice(), "a hand edit", None)?;
    assert_eq!(
        not_nobodys(&dir),
        Vec::<PathBuf>::new(),
        "after a person's commit"
    );

    // Given to another user while the tree is open: the next change keeps the new owner.
    const DAEMON: u32 = 1;
    let mut all = vec![dir.clone()];
    all_files(&dir, &mut all);
    for p in all {
        std::os::unix::fs::lchown(&p, Some(DAEMON), Some(DAEMON))?;
    }
    tree.mutate(&agent(), "after a chown", Some(2), |root| {
        std::fs::write(root.join("later.nix"), "{ }\n").map_err(GenError::edit)?;
        Ok(vec!["later.nix".into()])
    })?;
    assert_eq!(
        not_owned_by(&dir, DAEMON),
        Vec::<PathBuf>::new(),
        "after a chown while the tree was open"
    );
    Ok(())
}
