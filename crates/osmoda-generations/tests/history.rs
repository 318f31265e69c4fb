//! Revert and restore make new commits (history kept); show and diff content; deployed tags.

mod common;

use std::path::Path;

use common::*;
use osmoda_generations::{Change, ChangeKind, GenError};

#[test]
fn revert_undoes_one_generation_and_keeps_the_later_ones() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let dir = tree.dir().to_path_buf();
    let a = tree.mutate(&agent(), "add a", Some(1), |root| {
        insert_setting(root, "a = 1;")
    })?;
    let b = tree.mutate(&agent(), "rename host", Some(2), |root| {
        let text =
            std::fs::read_to_string(root.join("configuration.nix")).map_err(GenError::edit)?;
        write_file(
            root,
            "configuration.nix",
            &text.replace("hostName = \"osmoda\"", "hostName = \"web1\""),
        )
    })?;
    let before = log(&dir)?;

    let r = tree.revert(&a.short, &alice(), "a broke the build", Some(3))?;
    let after = log(&dir)?;
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(after[1..], before[..], "history kept");
    assert_eq!(
        r.reason,
        format!("Revert generation {} \"add a\": a broke the build", a.short)
    );
    assert_eq!(r.reverts.as_deref(), Some(a.rev.as_str()));
    assert_eq!(r.event_id, Some(3));
    assert_eq!(
        std::fs::read(dir.join("osmoda.nix"))?,
        std::fs::read(template().join("osmoda.nix"))?
    );
    assert!(std::fs::read_to_string(dir.join("configuration.nix"))?.contains("hostName = \"web1\""));
    assert_eq!(porcelain(&dir)?, "");
    assert_eq!(
        tree.diff(&b.rev, &r.rev)?,
        git(&dir, &["diff", &b.rev, &r.rev])?
    );

    // The first generation has nothing before it; the error says to restore instead.
    let first = before.last().cloned().unwrap_or_default();
    let err = tree
        .revert(&first, &alice(), "why", None)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("first generation"), "{err}");
    assert_eq!(log(&dir)?.len(), after.len());
    Ok(())
}

#[test]
fn a_conflicting_revert_is_refused_and_changes_nothing() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let dir = tree.dir().to_path_buf();
    let set = |v: u32| {
        move |root: &Path| {
            let path = root.join("osmoda.nix");
            let text = std::fs::read_to_string(&path).map_err(GenError::edit)?;
            let text = text.replace(
                &format!("intervalSecs = {};", v - 1),
                &format!("intervalSecs = {v};"),
            );
            std::fs::write(&path, text).map_err(GenError::edit)?;
            Ok(vec![path
                .strip_prefix(root)
                .map_err(GenError::edit)?
                .to_path_buf()])
        }
    };
    tree.mutate(&agent(), "prepare", None, |root| {
        let path = root.join("osmoda.nix");
        let text = std::fs::read_to_string(&path)
            .map_err(GenError::edit)?
            .replace("intervalSecs = 30;", "intervalSecs = 40;");
        std::fs::write(&path, text).map_err(GenError::edit)?;
        Ok(vec!["osmoda.nix".into()])
    })?;
    let g41 = tree.mutate(&agent(), "41", None, set(41))?;
    tree.mutate(&agent(), "42", None, set(42))?;
    let before = log(&dir)?;
    let err = tree.revert(&g41.rev, &alice(), "undo 41", None).err();
    assert!(
        matches!(&err, Some(GenError::Conflict { paths, .. }) if paths == &vec!["osmoda.nix".to_string()]),
        "{err:?}"
    );
    assert!(err
        .map(|e| e.to_string())
        .unwrap_or_default()
        .contains("agentctl config restore <rev>"));
    assert_eq!(log(&dir)?, before);
    assert_eq!(porcelain(&dir)?, "");
    Ok(())
}

#[test]
fn restore_brings_back_a_whole_generation_as_a_new_commit() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let dir = tree.dir().to_path_buf();
    let initial = tree.head()?;
    tree.mutate(&agent(), "add a", None, |root| {
        insert_setting(root, "a = 1;")
    })?;
    tree.mutate(&agent(), "add file", None, |root| {
        write_file(root, "hosts.nix", "{ ... }: { }\n")
    })?;
    let before = log(&dir)?;

    let r = tree.restore(
        &initial,
        &agent(),
        "health check failed after switch",
        Some(8),
    )?;
    assert_eq!(
        r.reason,
        format!(
            "Revert to generation {}: health check failed after switch",
            &initial[..12]
        )
    );
    assert_eq!(r.restores.as_deref(), Some(initial.as_str()));
    assert_eq!(log(&dir)?[1..], before[..]);
    assert_eq!(
        git(&dir, &["diff", &initial, &r.rev])?,
        "",
        "same tree as the restored generation"
    );
    assert!(!dir.join("hosts.nix").exists());
    assert_eq!(porcelain(&dir)?, "");
    assert_eq!(
        std::fs::read(dir.join("osmoda.nix"))?,
        std::fs::read(template().join("osmoda.nix"))?
    );

    let err = tree.restore(&initial, &agent(), "again", None).err();
    assert!(matches!(err, Some(GenError::NoChange(_))), "{err:?}");
    Ok(())
}

#[test]
fn show_and_diff_give_the_patch() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let dir = tree.dir().to_path_buf();
    let initial = tree.head()?;
    let g = tree.mutate(&agent(), "port", Some(5), |root| {
        insert_setting(root, "agentd.port = 8080;")
    })?;
    let detail = tree.show(&g.rev)?;
    assert_eq!(detail.generation, g);
    assert_eq!(
        detail.files,
        vec![Change {
            path: "osmoda.nix".into(),
            kind: ChangeKind::Modified
        }]
    );
    assert!(
        detail
            .patch
            .starts_with("diff --git a/osmoda.nix b/osmoda.nix\n"),
        "{}",
        detail.patch
    );
    assert!(
        detail.patch.contains("\n+    agentd.port = 8080;\n"),
        "{}",
        detail.patch
    );
    assert_eq!(detail.patch, git(&dir, &["diff", &initial, &g.rev])?);
    assert_eq!(tree.diff(&initial, "HEAD")?, detail.patch);
    assert_eq!(tree.diff("HEAD", "HEAD")?, "");

    let first = tree.show(&initial)?;
    assert_eq!(first.files.len(), 4);
    assert!(first.files.iter().all(|c| c.kind == ChangeKind::Added));
    assert!(first.patch.contains("+    watch.watchers.sshd = {"));

    let err = tree.read_file_at(&initial, Path::new("missing.nix")).err();
    assert!(matches!(err, Some(GenError::BadPath { .. })), "{err:?}");
    Ok(())
}

#[test]
fn deployed_tags_count_up_and_mark_generations() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let dir = tree.dir().to_path_buf();
    assert_eq!(tree.last_deployed()?, None);
    let g0 = tree.head()?;
    assert_eq!(tree.tag_deployed(&g0)?, "deployed/1");
    assert_eq!(
        tree.tag_deployed("HEAD")?,
        "deployed/1",
        "tagging the last deployed again is a no-op"
    );
    let g1 = tree.mutate(&agent(), "x", None, |root| insert_setting(root, "x = 1;"))?;
    assert!(!g1.deployed);
    assert_eq!(tree.tag_deployed(&g1.rev)?, "deployed/2");
    // Rolling back to g0 deploys it again under a new number.
    assert_eq!(tree.tag_deployed(&g0)?, "deployed/3");
    let last = tree
        .last_deployed()?
        .ok_or_else(|| anyhow::anyhow!("no deployed generation"))?;
    assert_eq!(last.rev, g0);
    assert_eq!(
        last.tags,
        vec!["deployed/1".to_string(), "deployed/3".to_string()]
    );
    assert_eq!(
        git(&dir, &["tag", "--list"])?,
        "deployed/1\ndeployed/2\ndeployed/3\n"
    );
    let gens = tree.generations(10)?;
    assert_eq!(
        gens.iter().map(|g| g.deployed).collect::<Vec<_>>(),
        vec![true, true]
    );
    assert_eq!(tree.generations(1)?.len(), 1);
    assert!(matches!(
        tree.tag_deployed("nope"),
        Err(GenError::UnknownRevision { .. })
    ));
    Ok(())
}
