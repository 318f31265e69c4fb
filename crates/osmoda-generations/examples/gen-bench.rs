//! gen-bench: set + validate + commit on a 5,000-line tree, against a bare `git commit -qam` of
//! the same one-line change, measured in the same run.
//!
//! `cargo run --release -p osmoda-generations --example gen-bench [-- ITERATIONS]` (default 200).
//! Prints p50/p99 per phase and the ratios; validation is measured with rnix only and with the
//! Nix evaluator (when installed: the tree's long-lived `nix repl`, as agentd uses it).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use osmoda_generations::{Actor, NixCheck, Tree};
use osmoda_nix::{AttrPath, Value};

#[path = "../../osmoda-nix/examples/fixture/big_osmoda_nix.rs"]
mod fixture;
use fixture::{big_osmoda_nix, WATCHERS};

fn main() -> Result<()> {
    let iterations: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(200);
    let tmp = tempfile::tempdir()?;
    let template = tmp.path().join("template");
    std::fs::create_dir(&template)?;
    let repo_template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../generations");
    for f in ["flake.nix", "configuration.nix", ".gitignore"] {
        std::fs::copy(repo_template.join(f), template.join(f))?;
    }
    let osmoda = big_osmoda_nix();
    std::fs::write(template.join("osmoda.nix"), &osmoda)?;
    let lines = osmoda.lines().count();
    println!(
        "tree: osmoda.nix {lines} lines ({} KiB), plus flake.nix and configuration.nix",
        osmoda.len() / 1024
    );

    let actor = Actor::new("bench", "bench@osmoda.local");
    let nix_available = osmoda_generations::validate::find_nix_instantiate().is_some();

    // 1. The editor alone (in memory).
    let mut set_only = Vec::new();
    let mut text = osmoda.clone();
    for i in 0..iterations {
        let start = Instant::now();
        text = osmoda_nix::set(&text, &path(i)?, &Value::Json((31 + i).into()))?;
        set_only.push(start.elapsed());
    }
    report("osmoda-nix set (in memory)", &mut set_only);

    // 1b. Validation parse alone (rnix), for the breakdown.
    let mut parse = Vec::new();
    for _ in 0..iterations {
        let start = Instant::now();
        let parsed = osmoda_generations::validate::parse_check(Path::new("osmoda.nix"), &osmoda)?;
        ensure!(
            osmoda_generations::validate::is_data_only(&parsed.syntax()),
            "bench file is data only"
        );
        parse.push(start.elapsed());
    }
    report("rnix parse + data-only check (in memory)", &mut parse);

    // 2. The transactions and the bare git commit, interleaved per iteration so that every
    //    variant sees the same machine load (the ratios are what matters).
    let splice_tree =
        Tree::init(&tmp.path().join("splice"), &template, &actor)?.with_nix_check(NixCheck::Off)?;
    let off_tree =
        Tree::init(&tmp.path().join("off"), &template, &actor)?.with_nix_check(NixCheck::Off)?;
    let nix_tree = if nix_available {
        Some(
            Tree::init(&tmp.path().join("nix"), &template, &actor)?
                .with_nix_check(NixCheck::Required)?,
        )
    } else {
        println!("skipped: mutate with nix-instantiate: nix-instantiate not found");
        None
    };
    let git_dir = tmp.path().join("git");
    Tree::init(&git_dir, &template, &actor)?;
    let mut git_text = osmoda.clone();
    let (mut splice, mut off, mut nix, mut bare) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..iterations {
        splice.push(timed(|| {
            mutate_once(&splice_tree, &actor, i, Edit::Splice)
        })?);
        off.push(timed(|| mutate_once(&off_tree, &actor, i, Edit::Editor))?);
        if let Some(tree) = &nix_tree {
            nix.push(timed(|| mutate_once(tree, &actor, i, Edit::Editor))?);
        }
        // The same one-line change, committed by the real git CLI (only `git commit` is timed).
        git_text = osmoda_nix::set(&git_text, &path(i)?, &Value::Json((31 + i).into()))?;
        std::fs::write(git_dir.join("osmoda.nix"), &git_text)?;
        bare.push(timed(|| {
            let status = Command::new("git")
                .arg("-C")
                .arg(&git_dir)
                .args([
                    "-c",
                    "user.name=bench",
                    "-c",
                    "user.email=bench@osmoda.local",
                    "commit",
                    "-qam",
                ])
                .arg(format!("set {i}"))
                .status()
                .context("run git")?;
            ensure!(status.success(), "git commit failed");
            Ok(())
        })?);
    }
    for tree in [Some(&splice_tree), Some(&off_tree), nix_tree.as_ref()]
        .into_iter()
        .flatten()
    {
        ensure!(
            tree.generations(iterations + 1)?.len() == iterations + 1,
            "one commit per mutation"
        );
    }
    let p50_splice = report("mutate: text splice + rnix validate + commit", &mut splice);
    let p50_off = report("mutate: osmoda-nix set + rnix validate + commit", &mut off);
    let p50_nix = (!nix.is_empty()).then(|| {
        report(
            "mutate: set + rnix + Nix evaluator (nix repl) + commit",
            &mut nix,
        )
    });
    let p50_git = report("bare `git commit -qam` (CLI)", &mut bare);

    println!();
    println!(
        "ratio p50 transaction without editor / git commit: {:.2}x",
        ratio(p50_splice, p50_git)
    );
    println!(
        "ratio p50 mutate(rnix only) / git commit: {:.2}x (target <= 2x, p50 <= 15 ms)",
        ratio(p50_off, p50_git)
    );
    if let Some(p50_nix) = p50_nix {
        println!(
            "ratio p50 mutate(with nix)  / git commit: {:.2}x",
            ratio(p50_nix, p50_git)
        );
    }
    Ok(())
}

fn path(i: usize) -> Result<AttrPath> {
    let name = format!("w{:03}", i % WATCHERS);
    Ok(AttrPath::new([
        "services",
        "osmoda",
        "watch",
        "watchers",
        name.as_str(),
        "intervalSecs",
    ])?)
}

#[derive(Clone, Copy)]
enum Edit {
    /// A plain one-line text splice (isolates the transaction's own cost).
    Splice,
    /// The real rnix editor (`osmoda_nix::set`).
    Editor,
}

fn mutate_once(tree: &Tree, actor: &Actor, i: usize, how: Edit) -> Result<()> {
    use osmoda_generations::GenError;
    tree.mutate(
        actor,
        &format!("set interval {i}"),
        Some(i as i64),
        |root| {
            let file = root.join("osmoda.nix");
            let text = std::fs::read_to_string(&file).map_err(GenError::edit)?;
            let new = match how {
                Edit::Editor => osmoda_nix::set(
                    &text,
                    &path(i).map_err(GenError::edit)?,
                    &Value::Json((31 + i).into()),
                )
                .map_err(GenError::edit)?,
                Edit::Splice => {
                    let at = text.find("intervalSecs = ").unwrap_or(0);
                    let rest = text[at..].split_once(';').map_or("", |x| x.1);
                    format!("{}intervalSecs = {};{}", &text[..at], 1000 + i, rest)
                }
            };
            std::fs::write(&file, new).map_err(GenError::edit)?;
            Ok(vec!["osmoda.nix".into()])
        },
    )?;
    Ok(())
}

fn timed(f: impl FnOnce() -> Result<()>) -> Result<Duration> {
    let start = Instant::now();
    f()?;
    Ok(start.elapsed())
}

fn report(what: &str, times: &mut [Duration]) -> Duration {
    times.sort();
    let pick = |q: f64| {
        times
            .get(((times.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    let (p50, p99) = (pick(0.50), pick(0.99));
    println!(
        "{what:<58} p50 {:>7.2} ms   p99 {:>7.2} ms   (n={})",
        ms(p50),
        ms(p99),
        times.len()
    );
    p50
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(f64::EPSILON)
}
