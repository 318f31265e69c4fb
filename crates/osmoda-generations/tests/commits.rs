//! Init from the template, one commit per mutation with author/message/trailers, and refusals
//! of bad input.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use osmoda_generations::{Actor, GenError, Tree};

#[test]
fn init_copies_the_template_and_makes_the_first_generation() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let dir = tree.dir();
    for f in ["flake.nix", "configuration.nix", "osmoda.nix", ".gitignore"] {
        assert_eq!(
            std::fs::read(dir.join(f))?,
            std::fs::read(template().join(f))?,
            "{f}"
        );
    }
    assert_eq!(log(dir)?.len(), 1);
    assert_eq!(
        git(dir, &["log", "-1", "--format=%an <%ae>%n%s"])?,
        "Alice Admin <alice@example.org>\nInitial generation\n"
    );
    assert_eq!(
        git(dir, &["ls-files"])?,
        ".gitignore\nconfiguration.nix\nflake.nix\nosmoda.nix\n"
    );
    assert_eq!(
        git(dir, &["rev-parse", "--abbrev-ref", "HEAD"])?.trim(),
        "main"
    );
    assert_eq!(porcelain(dir)?, "");
    let gens = tree.generations(10)?;
    assert_eq!(gens.len(), 1);
    assert_eq!(gens[0].reason, "Initial generation");
    assert_eq!(gens[0].actor.as_deref(), Some("Alice Admin"));
    assert_eq!(tree.head()?, gens[0].rev);
    // Opening it again works, and from a sub-path it is refused.
    Tree::open(dir)?;
    Ok(())
}

#[test]
fn mutate_makes_exactly_one_commit_with_author_message_and_trailers() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let dir = tree.dir().to_path_buf();
    let before = log(&dir)?;
    let gen = tree.mutate(&agent(), "Open the web port for nginx", Some(17), |root| {
        insert_setting(root, "agentd.port = 8080;")
    })?;
    let after = log(&dir)?;
    assert_eq!(after.len(), before.len() + 1);
    assert_eq!(
        after[1..],
        before[..],
        "linear history on top of the previous head"
    );
    assert_eq!(after[0], gen.rev);
    assert_eq!(
        git(&dir, &["log", "-1", "--format=%an%n%ae%n%B"])?,
        "openclaw[uid=0,pid=42,exe=openclaw]\nagent@osmoda.local\nOpen the web port for nginx\n\n\
         Osmoda-Event: 17\nOsmoda-Actor: openclaw[uid=0,pid=42,exe=openclaw]\n\n"
    );
    // git itself reads the trailers the same way.
    assert_eq!(
        git(
            &dir,
            &[
                "log",
                "-1",
                "--format=%(trailers:key=Osmoda-Event,valueonly)"
            ]
        )?
        .trim(),
        "17"
    );
    assert_eq!(
        git(&dir, &["show", "--name-only", "--format=", "HEAD"])?,
        "osmoda.nix\n"
    );
    assert_eq!(porcelain(&dir)?, "");
    assert_eq!(gen.reason, "Open the web port for nginx");
    assert_eq!(gen.event_id, Some(17));
    assert_eq!(gen.author, agent());
    assert_eq!(gen.parents, vec![before[0].clone()]);
    assert!(tree
        .read_file_at(&gen.rev, Path::new("osmoda.nix"))?
        .contains("agentd.port = 8080;"));

    // Absolute paths inside the tree are accepted too.
    let gen_abs = tree.mutate(&agent(), "absolute", None, |root| {
        insert_setting(root, "agentd.verbose = true;")?;
        Ok(vec![root.join("osmoda.nix")])
    })?;
    assert_eq!(log(&dir)?[0], gen_abs.rev);

    // Without an event id there is no Osmoda-Event trailer.
    let gen2 = tree.mutate(&alice(), "second", None, |root| {
        insert_setting(root, "agentd.debug = true;")
    })?;
    assert_eq!(gen2.event_id, None);
    assert_eq!(
        git(&dir, &["log", "-1", "--format=%B"])?,
        "second\n\nOsmoda-Actor: Alice Admin\n\n"
    );
    Ok(())
}

#[test]
fn an_edit_that_changes_nothing_records_nothing() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let before = log(tree.dir())?;
    let err = tree
        .mutate(&agent(), "noop", None, |_| {
            Ok(vec![PathBuf::from("osmoda.nix")])
        })
        .err();
    assert!(matches!(err, Some(GenError::NoChange(_))), "{err:?}");
    assert_eq!(log(tree.dir())?, before);
    Ok(())
}

#[test]
fn bad_input_is_refused_with_a_clear_message() -> anyhow::Result<()> {
    let (tmp, tree) = new_tree()?;
    let dir = tree.dir().to_path_buf();
    let before = log(&dir)?;
    let ok_edit = |root: &Path| insert_setting(root, "x = 1;");

    let err = tree
        .mutate(&agent(), "  ", None, ok_edit)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("reason") && err.contains("empty"), "{err}");
    let bad_actor = Actor::new("evil <x>", "e@x");
    let err = tree
        .mutate(&bad_actor, "why", None, ok_edit)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("actor name"), "{err}");
    for bad in ["../escape.nix", "/etc/passwd", ".git/config"] {
        let err = tree
            .mutate(&agent(), "why", None, |_| Ok(vec![PathBuf::from(bad)]))
            .err();
        assert!(
            matches!(err, Some(GenError::BadPath { .. })),
            "{bad}: {err:?}"
        );
    }
    assert_eq!(log(&dir)?, before);
    assert_eq!(porcelain(&dir)?, "");

    let err = tree
        .show("no-such-rev")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("unknown generation") && err.contains("agentctl config log"),
        "{err}"
    );
    assert!(matches!(
        tree.diff("--all", "HEAD"),
        Err(GenError::UnknownRevision { .. })
    ));

    // init refuses a non-empty directory; open refuses a non-tree.
    assert!(matches!(
        Tree::init(&dir, &template(), &alice()),
        Err(GenError::NotEmpty { .. })
    ));
    let plain = tmp.path().join("plain");
    std::fs::create_dir(&plain)?;
    let err = Tree::open(&plain)
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("is not a configuration tree"), "{err}");
    std::fs::create_dir(dir.join("sub"))?;
    let err = Tree::open(&dir.join("sub"))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("is not a configuration tree"), "{err}");
    std::fs::remove_dir(dir.join("sub"))?;
    let err = Tree::open(&dir.join("missing")).err();
    assert!(matches!(err, Some(GenError::NotATree { .. })), "{err:?}");
    Ok(())
}

#[test]
fn init_refuses_an_invalid_template() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let tpl = tmp.path().join("tpl");
    std::fs::create_dir(&tpl)?;
    std::fs::write(tpl.join("osmoda.nix"), "{ ... }: { services.osmoda = ; }\n")?;
    let err = Tree::init(&tmp.path().join("t"), &tpl, &alice()).err();
    assert!(
        matches!(&err, Some(GenError::Invalid { path, .. }) if path == Path::new("osmoda.nix")),
        "{err:?}"
    );
    assert!(!tmp.path().join("t").exists());
    Ok(())
}
