//! One writer at a time: 50 parallel mutations from two `Tree` handles (each with its own
//! repository handle and lock file descriptor, as two processes would have) → 50 commits, a
//! linear history, and a final file holding all 50 settings.

mod common;

use std::sync::Arc;

use common::*;
use osmoda_generations::Tree;

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
                    insert_setting(root, &format!("test.k{i} = {i};"))
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
        assert_eq!(
            text.matches(&format!("test.k{i} = {i};")).count(),
            1,
            "k{i} in\n{text}"
        );
    }
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
