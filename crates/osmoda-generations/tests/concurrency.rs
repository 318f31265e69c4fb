//! One writer at a time: 50 parallel mutations from two `Tree` handles (each with its own
//! repository handle and lock file descriptor, as two processes would have) → 50 commits, a
//! linear history, and a final file holding all 50 settings.

mod common;

use std::sync::Arc;

use common::*;
use osmoda_generations::{GenError, Tree};
use osmoda_nix::{AttrPath, Value};

fn key(i: i64) -> Result<AttrPath, osmoda_nix::EditError> {
    AttrPath::new([
        "services".to_string(),
        "osmoda".into(),
        "test".into(),
        format!("k{i}"),
    ])
}

/// Sets `services.osmoda.test.k<i> = <i>` in osmoda.nix with the real rnix editor.
fn set_with_editor(root: &std::path::Path, i: i64) -> Result<Vec<std::path::PathBuf>, GenError> {
    let path = root.join("osmoda.nix");
    let text = std::fs::read_to_string(&path).map_err(GenError::edit)?;
    let new = osmoda_nix::set(
        &text,
        &key(i).map_err(GenError::edit)?,
        &Value::Json(i.into()),
    )
    .map_err(GenError::edit)?;
    std::fs::write(&path, new).map_err(GenError::edit)?;
    Ok(vec!["osmoda.nix".into()])
}

#[test]
fn fifty_parallel_mutations_are_serialized_and_none_is_lost() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let dir = tree.dir().to_path_buf();
    let first = Arc::new(tree);
    // A second handle on the same tree: separate git2 repository and flock descriptor, so only
    // the file lock serializes it against the first one.
    let second = Arc::new(Tree::open(&dir)?);
    let base = log(&dir)?;

    let threads: Vec<_> = (0..50)
        .map(|i| {
            let tree = if i % 2 == 0 {
                Arc::clone(&first)
            } else {
                Arc::clone(&second)
            };
            std::thread::spawn(move || {
                tree.mutate(&agent(), &format!("set k{i}"), Some(i), |root| {
                    set_with_editor(root, i)
                })
            })
        })
        .collect();
    let mut revs = Vec::new();
    for t in threads {
        let gen = t
            .join()
            .map_err(|_| anyhow::anyhow!("a mutation thread panicked"))??;
        revs.push(gen.rev);
    }

    let history = log(&dir)?;
    assert_eq!(history.len(), base.len() + 50);
    // Linear: every commit has exactly one parent, and the first-parent chain is the whole log.
    assert_eq!(git(&dir, &["rev-list", "--merges", "HEAD"])?, "");
    assert_eq!(
        git(&dir, &["rev-list", "--first-parent", "HEAD"])?
            .lines()
            .count(),
        history.len()
    );
    revs.sort();
    let mut new: Vec<String> = history[..50].to_vec();
    new.sort();
    assert_eq!(revs, new, "every returned generation is in the history");

    let text = std::fs::read_to_string(dir.join("osmoda.nix"))?;
    for i in 0..50 {
        let value = osmoda_nix::get(&text, &key(i)?)?;
        assert_eq!(value, serde_json::json!(i), "k{i} in\n{text}");
    }
    // Everything else in the file is the template's text, byte for byte.
    let template_text = std::fs::read_to_string(template().join("osmoda.nix"))?;
    let mut reverted = text.clone();
    for i in 0..50 {
        reverted = osmoda_nix::unset(&reverted, &key(i)?)?;
    }
    assert_eq!(reverted, template_text);
    assert_eq!(porcelain(&dir)?, "");
    // Event ids and reasons match one to one.
    for g in first.generations(50)? {
        let id = g
            .event_id
            .ok_or_else(|| anyhow::anyhow!("no event id on {}", g.rev))?;
        assert_eq!(g.reason, format!("set k{id}"));
    }
    if have_nix("evaluating the final osmoda.nix") {
        let out = std::process::Command::new("nix-instantiate")
            .args(["--eval", "--strict", "--json", "-E"])
            .arg(format!(
                "(import {}/osmoda.nix {{}}).services.osmoda.test",
                dir.display()
            ))
            .output()?;
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        assert_eq!(json.as_object().map(|o| o.len()), Some(50), "{json}");
    }
    Ok(())
}
