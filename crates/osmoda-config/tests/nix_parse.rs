//! Every `.nix` file in the repository parses with the real Nix parser.

mod common;

use std::path::{Path, PathBuf};

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        let ty = entry.file_type()?;
        if ty.is_dir() {
            let skip = name == ".git"
                || name == "node_modules"
                || name.starts_with("target")
                || name.starts_with("result")
                || name == ".osmoda";
            if !skip {
                walk(&path, out)?;
            }
        } else if ty.is_file() && name.ends_with(".nix") && !starts_with_bom(&path)? {
            out.push(path);
        }
    }
    Ok(())
}

/// Whether a file starts with a UTF-8 byte-order mark. Nix's parser rejects a BOM, so such files
/// are edit fixtures that pin byte preservation (osmoda-nix's golden `bom.*`), not Nix sources.
fn starts_with_bom(path: &Path) -> std::io::Result<bool> {
    Ok(std::fs::read(path)?.starts_with(b"\xEF\xBB\xBF"))
}

#[test]
fn every_nix_file_parses() -> anyhow::Result<()> {
    if !common::nix_available("every_nix_file_parses") {
        return Ok(());
    }
    let mut files = Vec::new();
    walk(&common::repo_root(), &mut files)?;
    for required in ["flake.nix", "lib/default.nix", "modules/osmoda.nix"] {
        assert!(
            files.iter().any(|f| f.ends_with(required)),
            "{required} not found under {}",
            common::repo_root().display()
        );
    }
    // osmoda-nix's golden files with a UTF-8 byte order mark test that an edit keeps it; Nix
    // 2.x itself rejects a BOM, so those inputs are not expected to parse here.
    let has_bom = |f: &PathBuf| std::fs::read(f).is_ok_and(|b| b.starts_with(b"\xEF\xBB\xBF"));
    let failures: Vec<String> = files
        .iter()
        .filter(|f| !has_bom(f))
        .filter_map(|f| common::nix_parse(f).err().map(|e| e.to_string()))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} files do not parse:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
    eprintln!("parsed {} .nix files", files.len());
    Ok(())
}

#[test]
fn parse_failure_is_reported() -> anyhow::Result<()> {
    if !common::nix_available("parse_failure_is_reported") {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let bad = dir.path().join("bad.nix");
    std::fs::write(&bad, "{ a = 1 }")?;
    let err = common::nix_parse(&bad).expect_err("a missing ';' must not parse");
    assert!(err.to_string().contains("bad.nix"), "{err}");
    Ok(())
}
