//! Hand edits: a dirty tree refuses agent edits with a clear message, `commit_worktree` records the
//! person's change as their generation, and the drift watcher reports it.

mod common;

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use osmoda_generations::{watch_drift_with, Change, ChangeKind, GenError};

#[test]
fn an_agent_edit_on_a_dirty_tree_is_refused_and_the_person_commits_theirs() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let dir = tree.dir().to_path_buf();
    let conf = dir.join("configuration.nix");
    let edited = std::fs::read_to_string(&conf)?
        .replace("allowedTCPPorts = [ 22 ];", "allowedTCPPorts = [ 22 443 ];");
    std::fs::write(&conf, &edited)?;
    std::fs::write(dir.join("notes.txt"), "remember to renew the certificate\n")?;
    let before = log(&dir)?;

    assert_eq!(
        tree.status()?,
        vec![
            Change {
                path: "configuration.nix".into(),
                kind: ChangeKind::Modified
            },
            Change {
                path: "notes.txt".into(),
                kind: ChangeKind::Added
            },
        ]
    );
    let mut ran = false;
    let err = tree.mutate(&agent(), "agent change", Some(3), |root| {
        ran = true;
        insert_setting(root, "x = 1;")
    });
    assert!(!ran, "the edit closure must not run on a dirty tree");
    let msg = err
        .as_ref()
        .err()
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(matches!(err, Err(GenError::Dirty { .. })), "{err:?}");
    assert!(
        msg.contains("uncommitted changes (modified configuration.nix, added notes.txt)")
            && msg.contains("agentctl config commit -m"),
        "{msg}"
    );
    // The person's edits are untouched and nothing was committed.
    assert_eq!(std::fs::read_to_string(&conf)?, edited);
    assert_eq!(log(&dir)?, before);

    let gen = tree.commit_worktree(&alice(), "Open HTTPS", Some(9))?;
    assert_eq!(
        git(&dir, &["log", "-1", "--format=%an <%ae>"])?,
        "Alice Admin <alice@example.org>\n"
    );
    assert_eq!(
        git(&dir, &["show", "--name-only", "--format=", "HEAD"])?,
        "configuration.nix\nnotes.txt\n"
    );
    assert_eq!(gen.event_id, Some(9));
    assert_eq!(gen.actor.as_deref(), Some("Alice Admin"));
    assert_eq!(porcelain(&dir)?, "");
    assert_eq!(tree.status()?, vec![]);

    // Now the agent may edit again.
    tree.mutate(&agent(), "agent change", Some(10), |root| {
        insert_setting(root, "x = 1;")
    })?;
    // A deletion by hand is recorded too.
    std::fs::remove_file(dir.join("notes.txt"))?;
    tree.commit_worktree(&alice(), "Drop notes", None)?;
    assert_eq!(
        git(&dir, &["show", "--name-status", "--format=", "HEAD"])?,
        "D\tnotes.txt\n"
    );
    assert!(matches!(
        tree.commit_worktree(&alice(), "nothing", None),
        Err(GenError::NoChange(_))
    ));
    Ok(())
}

#[test]
fn an_invalid_hand_edit_is_not_recorded_and_not_touched() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let dir = tree.dir().to_path_buf();
    std::fs::write(dir.join("osmoda.nix"), "{ ... }: { services.osmoda = {\n")?;
    let before = log(&dir)?;
    let err = tree.commit_worktree(&alice(), "half-written", None).err();
    assert!(
        matches!(&err, Some(GenError::Invalid { path, .. }) if path == &PathBuf::from("osmoda.nix")),
        "{err:?}"
    );
    assert_eq!(log(&dir)?, before);
    assert_eq!(
        std::fs::read_to_string(dir.join("osmoda.nix"))?,
        "{ ... }: { services.osmoda = {\n"
    );
    assert_eq!(porcelain(&dir)?, " M osmoda.nix\n");
    Ok(())
}

#[test]
fn the_drift_watcher_reports_hand_edits_and_their_commit() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let dir = tree.dir().to_path_buf();
    let (tx, rx) = mpsc::channel();
    let watcher = watch_drift_with(&dir, Duration::from_millis(50), move |status| {
        let _ = tx.send(status.map_err(|e| e.to_string()));
    })?;
    let wait = || {
        rx.recv_timeout(Duration::from_secs(20))
            .map_err(|e| anyhow::anyhow!("no drift report: {e}"))
    };

    // An agent mutation is not drift: the watcher reads the status under the writer lock.
    tree.mutate(&agent(), "agent", None, |root| {
        insert_setting(root, "a = 1;")
    })?;
    std::fs::write(dir.join("configuration.nix"), "{ ... }: { }\n")?;
    let report = wait()?.map_err(anyhow::Error::msg)?;
    assert_eq!(
        report,
        vec![Change {
            path: "configuration.nix".into(),
            kind: ChangeKind::Modified
        }]
    );

    tree.commit_worktree(&alice(), "minimal config", None)?;
    let report = wait()?.map_err(anyhow::Error::msg)?;
    assert_eq!(report, vec![], "clean again after the commit");
    drop(watcher);
    Ok(())
}
