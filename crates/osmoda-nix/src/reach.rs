//! What a raw value could read outside the configuration tree, found in its syntax.
//!
//! Evaluating a raw value before the commit stops at the first use of a module argument
//! (`pkgs`, `lib`, `config`), so an evaluation cannot be relied on to find a read of a file
//! outside the tree behind one (`pkgs.writeText "x" (builtins.readFile /etc/shadow)`; review of
//! issue 11, finding 6). The syntax can: every path literal, search path and path-reading
//! builtin is looked at wherever it is nested, before anything is evaluated.

use rnix::{SyntaxKind::*, SyntaxNode};

use crate::error::EditError;
use crate::syntax::parse;

/// Builtins that read (or import, or copy into the store) what their argument names.
const READERS: &[&str] = &[
    "readFile",
    "readDir",
    "readFileType",
    "pathExists",
    "hashFile",
    "import",
    "scopedImport",
    "path",
    "filterSource",
    "toPath",
    "storePath",
    "findFile",
    "fetchurl",
    "fetchTarball",
    "fetchGit",
    "fetchTree",
    "fetchClosure",
    "getFlake",
    "getEnv",
];

/// A part of a raw value that reaches outside the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reach {
    /// The expression as written (at most 200 characters).
    pub text: String,
    /// Why it is refused.
    pub why: &'static str,
}

fn shown(node: &SyntaxNode) -> String {
    let text = node.text().to_string();
    match text.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// Whether a relative path (`./a`, `../b/c`, `d/e`) written in a file `depth` directories
/// below the tree's root leaves the tree.
fn leaves_tree(path: &str, depth: usize) -> bool {
    let mut level = depth as i64;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                level -= 1;
                if level < 0 {
                    return true;
                }
            }
            _ => level += 1,
        }
    }
    false
}

/// The name a function expression calls: `readFile`, `builtins.readFile`, `__readFile`.
fn called_name(f: &SyntaxNode) -> Option<String> {
    let name = match f.kind() {
        NODE_IDENT => f.text().to_string(),
        NODE_SELECT => f
            .children()
            .find(|c| c.kind() == NODE_ATTRPATH)?
            .children()
            .last()?
            .text()
            .to_string(),
        NODE_PAREN => return called_name(&f.children().next()?),
        _ => return None,
    };
    Some(name.trim_start_matches("__").to_string())
}

/// The first part of the Nix expression `src` that reaches outside the tree, for a value
/// written in a file `depth` directories below the tree's root: an absolute (`/etc/shadow`,
/// `/. + "…"`), home (`~/…`) or search (`<nixpkgs>`) path, a relative path leaving the tree or
/// built with `${…}`, or a path-reading builtin (`readFile`, `import`, `fetchurl`, …) given
/// anything but a path literal.
///
/// # Errors
/// [`EditError::Parse`] / [`EditError::TooComplex`] if `src` does not parse.
pub fn reaches_outside(src: &str, depth: usize) -> Result<Option<Reach>, EditError> {
    let root = parse(src)?;
    for node in root.descendants() {
        let why = match node.kind() {
            NODE_PATH_ABS => Some("an absolute path, outside the tree"),
            NODE_PATH_HOME => Some("a path in a home directory, outside the tree"),
            NODE_PATH_SEARCH => Some("a search path (`<…>`), resolved outside the tree"),
            NODE_PATH_REL if node.children().any(|c| c.kind() == NODE_INTERPOL) => {
                Some("a path built with `${…}`, which may lead outside the tree")
            }
            NODE_PATH_REL if leaves_tree(&node.text().to_string(), depth) => {
                Some("a relative path that leads outside the tree")
            }
            NODE_APPLY => {
                let mut parts = node.children();
                let (f, arg) = (parts.next(), parts.next());
                match (f.as_ref().and_then(called_name), arg) {
                    (Some(name), Some(mut arg)) if READERS.contains(&name.as_str()) => {
                        while arg.kind() == NODE_PAREN {
                            match arg.children().next() {
                                Some(inner) => arg = inner,
                                None => break,
                            }
                        }
                        // A path literal is judged on its own (it is visited next); anything
                        // else names a file that only evaluation could tell.
                        let literal = matches!(
                            arg.kind(),
                            NODE_PATH_ABS | NODE_PATH_HOME | NODE_PATH_SEARCH | NODE_PATH_REL
                        );
                        (!literal).then_some(
                            "a builtin that reads a file, given something other than a path in the tree",
                        )
                    }
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(why) = why {
            return Ok(Some(Reach {
                text: shown(&node),
                why,
            }));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(src: &str, depth: usize, expected: Option<&str>) {
        let found = reaches_outside(src, depth).expect("parses");
        assert_eq!(
            found.as_ref().map(|r| r.text.as_str()),
            expected,
            "{src}: {found:?}"
        );
    }

    #[test]
    fn reads_outside_the_tree_are_found_wherever_they_are_nested() {
        // The review's values (finding 6) and their siblings.
        check(
            "pkgs.writeText \"x\" (builtins.readFile /etc/shadow)",
            0,
            Some("/etc/shadow"),
        );
        check(
            "if pkgs.stdenv.isLinux then builtins.readFile /etc/shadow else \"\"",
            0,
            Some("/etc/shadow"),
        );
        check(
            "lib.mkForce (builtins.readFile /etc/shadow)",
            0,
            Some("/etc/shadow"),
        );
        check(
            "f (x: builtins.readFile /etc/shadow)",
            0,
            Some("/etc/shadow"),
        );
        check("/. + \"etc/shadow\"", 0, Some("/."));
        check("import <nixpkgs> { }", 0, Some("<nixpkgs>"));
        check(
            "builtins.readFile ~/.ssh/id_ed25519",
            0,
            Some("~/.ssh/id_ed25519"),
        );
        check(
            "builtins.readFile ../../etc/shadow",
            1,
            Some("../../etc/shadow"),
        );
        check("builtins.readFile ./${name}", 0, Some("./${name}"));
        check(
            "builtins.readFile \"/etc/shadow\"",
            0,
            Some("builtins.readFile \"/etc/shadow\""),
        );
        check(
            "pkgs.lib.id (__readFile config.secretPath)",
            0,
            Some("__readFile config.secretPath"),
        );
        check(
            "with builtins; readFile (\"/etc\" + \"/shadow\")",
            0,
            Some("readFile (\"/etc\" + \"/shadow\")"),
        );
        check(
            "builtins.getEnv \"HOME\"",
            0,
            Some("builtins.getEnv \"HOME\""),
        );
        // `+` on a path resolves `..`, so a computed path may leave the tree.
        check(
            "builtins.readFile (./files + \"/../../etc/shadow\")",
            0,
            Some("builtins.readFile (./files + \"/../../etc/shadow\")"),
        );
    }

    #[test]
    fn values_inside_the_tree_and_plain_strings_pass() {
        check("[ ./keys/alice.pub ]", 0, None);
        check("builtins.readFile ./motd.txt", 0, None);
        check("import ../common/users.nix", 1, None);
        check("\"/etc/foo.conf\"", 0, None);
        check("with pkgs; [ vim git ]", 0, None);
        check(
            "lib.mkForce { enable = true; path = \"/var/lib/x\"; }",
            0,
            None,
        );
    }
}
