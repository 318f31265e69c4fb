//! Readers in parallel threads always find HEAD and its files, while writers commit.

mod common;

use std::sync::Arc;

use common::{agent, insert_setting, new_tree};

#[test]
fn parallel_readers_and_writers_always_see_a_whole_generation() -> anyhow::Result<()> {
    let (_tmp, tree) = new_tree()?;
    let tree = Arc::new(tree);
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let t = tree.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                for _ in 0..200 {
                    let files = t.nix_files_at("HEAD")?;
                    anyhow::ensure!(files.len() == 3, "{files:?}");
                    t.status()?;
                }
                Ok(())
            })
        })
        .collect();
    let writers: Vec<_> = (0..10)
        .map(|i| {
            let t = tree.clone();
            std::thread::spawn(move || -> anyhow::Result<()> {
                t.mutate(&agent(), &format!("edit {i}"), None, |root| {
                    insert_setting(root, &format!("x{i} = {i};"))
                })?;
                Ok(())
            })
        })
        .collect();
    for h in readers.into_iter().chain(writers) {
        h.join()
            .map_err(|_| anyhow::anyhow!("a thread panicked"))??;
    }
    Ok(())
}
