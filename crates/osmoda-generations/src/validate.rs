//! Validation of changed Nix files: rnix parse always, then the real Nix evaluator where installed.
//!
//! Files that are *data only* (an attrset, or a function of `{ ... }` returning one, made of
//! literals: no identifiers other than `true`/`false`/`null`, no `let`, `with`, interpolation or
//! `<search>` paths) are pure, so they are evaluated strictly (`nix-instantiate --eval --strict`,
//! applied to `{}` when they are a function). Every other file is checked with
//! `nix-instantiate --parse`, because evaluating it needs its module arguments (`pkgs`, ...).
//! All files of one change go to at most two `nix-instantiate` processes — or, in a [`crate::Tree`],
//! to its long-lived `nix repl` (see `repl.rs`), which answers the same question without paying
//! Nix's start-up on every edit.

use std::path::{Path, PathBuf};
use std::process::Command;

use rnix::SyntaxKind;

use crate::GenError;

/// Whether (and how) the real Nix evaluator takes part in validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NixCheck {
    /// Use `nix-instantiate` if it is on `PATH`, otherwise rnix only.
    #[default]
    Auto,
    /// rnix parsing only (fastest; the evaluator is not started).
    Off,
    /// Require `nix-instantiate`; validation fails with a clear error if it is missing.
    Required,
}

/// One file to validate: its path relative to the tree and its text.
pub(crate) struct Candidate<'a> {
    pub rel: &'a Path,
    pub abs: PathBuf,
    pub text: &'a str,
}

/// Finds `nix-instantiate` on `PATH`.
pub fn find_nix_instantiate() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("nix-instantiate"))
        .find(|p| p.is_file())
}

/// Parses `text` with rnix and reports the first error with its line and column.
///
/// # Errors
/// [`GenError::Invalid`] naming `rel` and the position of the first parse error, or of the
/// place where the text exceeds `osmoda_nix::budget`.
pub fn parse_check(rel: &Path, text: &str) -> Result<rnix::Parse<rnix::Root>, GenError> {
    // The recursive parser only ever sees text within the shared recursion budget.
    osmoda_nix::budget::check(text).map_err(|e| GenError::Invalid {
        path: rel.to_path_buf(),
        message: e.to_string(),
    })?;
    let parse = rnix::Root::parse(text);
    if let Some(err) = parse.errors().first() {
        let message = match error_offset(err) {
            Some(off) => {
                let (line, col) = line_col(text, off);
                format!("line {line}, column {col}: {err}")
            }
            None => err.to_string(),
        };
        return Err(GenError::Invalid {
            path: rel.to_path_buf(),
            message,
        });
    }
    Ok(parse)
}

fn error_offset(err: &rnix::ParseError) -> Option<usize> {
    use rnix::ParseError as E;
    let range = match err {
        E::Unexpected(r)
        | E::UnexpectedExtra(r)
        | E::UnexpectedWanted(_, r, _)
        | E::UnexpectedDoubleBind(r) => *r,
        E::DuplicatedArgs(r, _) => *r,
        _ => return None,
    };
    Some(usize::from(range.start()))
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

/// True if the parsed file is data only (see the module docs), so evaluating it is pure.
pub fn is_data_only(root: &rnix::SyntaxNode) -> bool {
    let Some(expr) = root.children().next() else {
        return false;
    };
    let body = match expr.kind() {
        SyntaxKind::NODE_ATTR_SET => expr,
        SyntaxKind::NODE_LAMBDA => {
            let mut children = expr.children();
            let (Some(param), Some(body)) = (children.next(), children.next()) else {
                return false;
            };
            // `{ ... }:` or `{ a ? 1, ... }:` can be applied to `{}`; `x:` or `{ pkgs, ... }:` cannot.
            if param.kind() != SyntaxKind::NODE_PATTERN {
                return false;
            }
            let all_defaulted = param
                .children()
                .filter(|c| c.kind() == SyntaxKind::NODE_PAT_ENTRY)
                .all(|e| {
                    e.children_with_tokens()
                        .any(|t| t.kind() == SyntaxKind::TOKEN_QUESTION)
                });
            if !all_defaulted
                || param
                    .children()
                    .any(|c| c.kind() == SyntaxKind::NODE_PAT_BIND)
            {
                return false;
            }
            body
        }
        _ => return false,
    };
    if body.kind() != SyntaxKind::NODE_ATTR_SET {
        return false;
    }
    body.descendants().all(|n| match n.kind() {
        SyntaxKind::NODE_IDENT => {
            let in_attrpath = n
                .parent()
                .is_some_and(|p| p.kind() == SyntaxKind::NODE_ATTRPATH);
            in_attrpath || matches!(n.text().to_string().as_str(), "true" | "false" | "null")
        }
        SyntaxKind::NODE_WITH
        | SyntaxKind::NODE_LET_IN
        | SyntaxKind::NODE_LEGACY_LET
        | SyntaxKind::NODE_INTERPOL
        | SyntaxKind::NODE_PATH_SEARCH
        | SyntaxKind::NODE_INHERIT
        | SyntaxKind::NODE_DYNAMIC
        | SyntaxKind::NODE_ASSERT => false,
        _ => true,
    })
}

/// Validates changed files: rnix first (in process), then `nix-instantiate` when `nix` says so.
/// Validate with the long-lived evaluator in `repl` (started on first use), falling back to
/// [`validate`]'s `nix-instantiate` processes whenever the REPL cannot give an answer.
pub(crate) fn validate_with(
    files: &[Candidate<'_>],
    nix: Option<&Path>,
    repl: &mut Option<crate::repl::Repl>,
) -> Result<(), GenError> {
    let Some(nix) = nix else {
        return validate(files, None);
    };
    let mut parsed = Vec::with_capacity(files.len());
    for f in files {
        parsed.push(is_data_only(&parse_check(f.rel, f.text)?.syntax()));
    }
    if repl.as_ref().is_none_or(crate::repl::Repl::worn_out) {
        *repl = crate::repl::Repl::start(nix);
    }
    for (f, strict) in files.iter().zip(parsed) {
        let verdict = repl.as_mut().and_then(|r| r.check(f.rel, f.text, strict));
        match verdict {
            Some(crate::repl::Verdict::Valid) => {}
            Some(crate::repl::Verdict::Invalid(message)) => {
                return Err(GenError::Invalid {
                    path: f.rel.to_path_buf(),
                    message: format!("nix: {}", message.trim()),
                })
            }
            None => {
                // The REPL misbehaved: drop it and let nix-instantiate decide.
                *repl = None;
                return validate(files, Some(nix));
            }
        }
    }
    Ok(())
}

pub(crate) fn validate(files: &[Candidate<'_>], nix: Option<&Path>) -> Result<(), GenError> {
    let mut eval = Vec::new();
    let mut parse_only = Vec::new();
    for f in files {
        let parsed = parse_check(f.rel, f.text)?;
        if nix.is_none() {
            // The classification only decides how nix-instantiate is run; skip it without one.
            continue;
        }
        if is_data_only(&parsed.syntax()) {
            eval.push(f);
        } else {
            parse_only.push(f);
        }
    }
    let Some(nix) = nix else { return Ok(()) };
    if !eval.is_empty() {
        // Each file is passed as a string argument, so no path ever needs quoting inside Nix.
        let mut cmd = Command::new(nix);
        cmd.args(["--eval", "--strict", "--expr"]).arg(
            "{ ... }@args: map (p: let f = import (/. + p); in builtins.deepSeq (if builtins.isFunction f then f { } else f) null) \
             (builtins.attrValues args)",
        );
        for (i, f) in eval.iter().enumerate() {
            cmd.arg("--argstr").arg(format!("f{i}")).arg(&f.abs);
        }
        run(cmd, &eval)?;
    }
    if !parse_only.is_empty() {
        let mut cmd = Command::new(nix);
        cmd.arg("--parse");
        for f in &parse_only {
            cmd.arg(&f.abs);
        }
        run(cmd, &parse_only)?;
    }
    Ok(())
}

fn run(cmd: Command, files: &[&Candidate<'_>]) -> Result<(), GenError> {
    let first = files
        .first()
        .map(|f| f.rel.to_path_buf())
        .unwrap_or_default();
    let out = crate::evaluator::run(cmd, &crate::evaluator::Caps::VALIDATE)
        .map_err(|e| GenError::io("run", "nix-instantiate", e))?;
    if out.success() {
        return Ok(());
    }
    let stderr = out.stderr;
    // Name the file the evaluator complained about, if its message mentions one.
    let path = files
        .iter()
        .find(|f| stderr.contains(&*f.abs.to_string_lossy()))
        .map_or(first, |f| f.rel.to_path_buf());
    let message = match out.exceeded {
        Some(cap) => format!("the evaluator was stopped: {cap}"),
        None => format!("nix-instantiate: {}", stderr.trim()),
    };
    Err(GenError::Invalid { path, message })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data_only(src: &str) -> bool {
        let parse = rnix::Root::parse(src);
        assert!(parse.errors().is_empty(), "{src}: {:?}", parse.errors());
        is_data_only(&parse.syntax())
    }

    #[test]
    fn classifies_data_only_files() {
        assert!(data_only(
            "{ ... }: { services.osmoda = { enable = true; x = [ 1 \"a\" null ./p ]; }; }"
        ));
        assert!(data_only("{ a.b = 1.5; \"c d\" = { e = false; }; }"));
        assert!(data_only("{ x ? 1, ... }: { y = -3; }"));
        assert!(!data_only("{ pkgs, ... }: { y = pkgs.hello; }"));
        assert!(!data_only("{ ... }: { y = builtins.map; }"));
        assert!(!data_only("{ ... }: with x; { }"));
        assert!(!data_only("{ ... }: let a = 1; in { b = a; }"));
        assert!(!data_only("{ a = \"${toString 1}\"; }"));
        assert!(!data_only("{ a = <nixpkgs>; }"));
        assert!(!data_only("x: { }"));
        assert!(!data_only("[ 1 ]"));
    }

    #[test]
    fn a_dead_repl_falls_back_to_nix_instantiate() {
        let Some(nix) = find_nix_instantiate() else {
            println!("skipped: nix-instantiate not installed");
            return;
        };
        let dir = tempfile::tempdir().expect("tempdir");
        let abs = dir.path().join("osmoda.nix");
        let text = "{ ... }: { a = 1; a = 2; }";
        std::fs::write(&abs, text).expect("write");
        let files = [Candidate {
            rel: Path::new("osmoda.nix"),
            abs,
            text,
        }];
        let mut repl = crate::repl::Repl::start(&nix);
        repl.as_mut().expect("repl").kill();
        let err = validate_with(&files, Some(&nix), &mut repl).expect_err("invalid");
        assert!(
            err.to_string().contains("nix-instantiate")
                && err.to_string().contains("already defined"),
            "{err}"
        );
        assert!(repl.is_none(), "the dead REPL was dropped");
        // Next time a fresh one is started and answers.
        let ok = "{ ... }: { a = 1; }";
        std::fs::write(&files[0].abs, ok).expect("write");
        let files = [Candidate {
            rel: Path::new("osmoda.nix"),
            abs: files[0].abs.clone(),
            text: ok,
        }];
        validate_with(&files, Some(&nix), &mut repl).expect("valid");
        assert!(repl.is_some());
    }

    #[test]
    fn parse_errors_name_line_and_column() {
        let err = parse_check(Path::new("osmoda.nix"), "{\n  a = ;\n}\n")
            .err()
            .map(|e| e.to_string());
        let err = err.unwrap_or_default();
        assert!(
            err.contains("osmoda.nix") && err.contains("line 2"),
            "{err}"
        );
    }
}
