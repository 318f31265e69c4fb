//! Free variables of an expression: which names it takes from its surroundings. A raw value
//! without free variables (other than Nix's global builtins) can be evaluated on its own.

use std::collections::BTreeSet;

use rnix::{SyntaxKind::*, SyntaxNode};

use crate::error::EditError;
use crate::syntax::{attrs_of, key_of, parse, Key};

/// Names Nix provides everywhere.
const GLOBALS: &[&str] = &[
    "builtins",
    "true",
    "false",
    "null",
    "import",
    "toString",
    "throw",
    "abort",
    "map",
    "baseNameOf",
    "dirOf",
    "isNull",
    "removeAttrs",
    "derivation",
    "placeholder",
    "fetchTarball",
    "scopedImport",
];

/// The free variables of the Nix expression `src`, or `None` when it uses `with` (whose names
/// cannot be known without evaluating).
///
/// # Errors
/// [`EditError::Parse`] / [`EditError::TooComplex`] if `src` does not parse.
pub fn free_variables(src: &str) -> Result<Option<BTreeSet<String>>, EditError> {
    let root = parse(src)?;
    let mut free = BTreeSet::new();
    for node in root.descendants() {
        match node.kind() {
            NODE_WITH => return Ok(None),
            NODE_IDENT if is_variable(&node) => {
                let name = node.text().to_string();
                if !GLOBALS.contains(&name.as_str())
                    && !name.starts_with("__")
                    && !bound(&node, &name)
                {
                    free.insert(name);
                }
            }
            _ => {}
        }
    }
    Ok(Some(free))
}

/// Is this identifier a variable use (not an attribute name or a parameter)?
fn is_variable(ident: &SyntaxNode) -> bool {
    !matches!(
        ident.parent().map(|p| p.kind()),
        Some(NODE_ATTRPATH | NODE_PAT_ENTRY | NODE_PAT_BIND | NODE_IDENT_PARAM)
    )
}

/// Is `name` bound by an enclosing function, `let` or `rec` set?
fn bound(ident: &SyntaxNode, name: &str) -> bool {
    let mut child = ident.clone();
    while let Some(parent) = child.parent() {
        let binds = match parent.kind() {
            NODE_LAMBDA => parent.children().next().is_some_and(|param| {
                param.kind() == NODE_IDENT_PARAM && param.text().to_string().trim() == name
                    || param.descendants().any(|n| {
                        matches!(n.kind(), NODE_IDENT)
                            && n.text() == name
                            && matches!(
                                n.parent().map(|p| p.kind()),
                                Some(NODE_PAT_ENTRY | NODE_PAT_BIND)
                            )
                    })
            }),
            NODE_LET_IN | NODE_LEGACY_LET => binds_name(&parent, name),
            NODE_ATTR_SET if parent.children_with_tokens().any(|c| c.kind() == TOKEN_REC) => {
                binds_name(&parent, name)
            }
            _ => false,
        };
        if binds {
            return true;
        }
        child = parent;
    }
    false
}

/// Does this `let` or `rec` set bind `name` (by `name = …` or `inherit … name`)?
fn binds_name(set: &SyntaxNode, name: &str) -> bool {
    set.children().any(|entry| match entry.kind() {
        NODE_ATTRPATH_VALUE => {
            matches!(attrs_of(&entry).next().map(|a| key_of(&a)), Some(Key::Static(k)) if k == name)
        }
        NODE_INHERIT => entry
            .children()
            .filter(|c| c.kind() != NODE_INHERIT_FROM)
            .any(|a| matches!(key_of(&a), Key::Static(k) if k == name)),
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::free_variables;

    fn free(src: &str) -> Option<Vec<String>> {
        free_variables(src)
            .expect("parses")
            .map(|s| s.into_iter().collect())
    }

    #[test]
    fn finds_free_names() {
        assert_eq!(free("1 + \"a\""), Some(vec![]));
        assert_eq!(free("builtins.readFile /x"), Some(vec![]));
        assert_eq!(free("pkgs.htop"), Some(vec!["pkgs".into()]));
        assert_eq!(
            free("lib.mkForce (x: x + y)"),
            Some(vec!["lib".into(), "y".into()])
        );
        assert_eq!(free("let a = 1; b = a; in a + b"), Some(vec![]));
        assert_eq!(free("rec { a = 1; b = a; }"), Some(vec![]));
        assert_eq!(free("{ a = 1; b = a; }"), Some(vec!["a".into()]));
        assert_eq!(free("{ x ? 1, ... }@args: x + args.y"), Some(vec![]));
        assert_eq!(
            free("let inherit (pkgs) git; in git"),
            Some(vec!["pkgs".into()])
        );
        assert_eq!(free("with pkgs; [ git ]"), None);
    }
}
