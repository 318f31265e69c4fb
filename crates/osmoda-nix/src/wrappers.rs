//! The value a definition gives once its module-system wrappers are looked through: priorities
//! (`mkForce`, `mkDefault`, `mkOverride N`, …), conditions (`mkIf c`) and list order
//! (`mkBefore`, `mkAfter`, `mkOrder N`) do not change what type the value must have, so a check
//! of the value (osModa's option schema) must see through them, wherever they sit in the value.

use rnix::{NodeOrToken, SyntaxKind::*, SyntaxNode};

use crate::error::EditError;
use crate::syntax::{key_of, parse, Key};

/// Wrappers that keep their last argument as the value, with the number of arguments before it.
const WRAPPERS: &[(&str, usize)] = &[
    ("mkForce", 0),
    ("mkDefault", 0),
    ("mkOptionDefault", 0),
    ("mkVMOverride", 0),
    ("mkImageMediaOverride", 0),
    ("mkOverride", 1),
    ("mkIf", 1),
    ("mkBefore", 0),
    ("mkAfter", 0),
    ("mkOrder", 1),
];

/// `src` with every module-system wrapper (see the module docs) replaced by its parenthesised
/// value, at any depth: `lib.mkForce { a = mkDefault "x"; }` → `({ a = ("x"); })`. Returns
/// `None` when `src` has no wrapper. `mkMerge` is not looked through (its parts merge by the
/// option's type, which only the module system knows).
///
/// # Errors
/// [`EditError::Parse`] / [`EditError::TooComplex`] if `src` does not parse.
pub fn without_wrappers(src: &str) -> Result<Option<String>, EditError> {
    let root = parse(src)?;
    let mut found = false;
    let out = rewrite(&root, &mut found);
    Ok(found.then_some(out))
}

fn rewrite(node: &SyntaxNode, found: &mut bool) -> String {
    if let Some(inner) = wrapped_value(node) {
        *found = true;
        return format!("({})", rewrite(&inner, found));
    }
    let mut out = String::new();
    for child in node.children_with_tokens() {
        match child {
            NodeOrToken::Node(n) => out.push_str(&rewrite(&n, found)),
            NodeOrToken::Token(t) => out.push_str(t.text()),
        }
    }
    out
}

/// The value of `wrapper args… value` when `node` is such an application.
fn wrapped_value(node: &SyntaxNode) -> Option<SyntaxNode> {
    if node.kind() != NODE_APPLY {
        return None;
    }
    let mut args = Vec::new();
    let mut head = node.clone();
    while head.kind() == NODE_APPLY {
        let mut children = head.children();
        let (f, arg) = (children.next()?, children.next()?);
        args.push(arg);
        head = f;
    }
    let name = match head.kind() {
        NODE_IDENT => head.text().to_string(),
        NODE_SELECT => {
            let path = head.children().find(|c| c.kind() == NODE_ATTRPATH)?;
            match path.children().last().map(|a| key_of(&a))? {
                Key::Static(k) => k,
                Key::Dynamic => return None,
            }
        }
        _ => return None,
    };
    let &(_, before) = WRAPPERS.iter().find(|(n, _)| *n == name)?;
    // `args` is outermost first: the value is the first one pushed (the last argument).
    (args.len() == before + 1).then(|| args.swap_remove(0))
}

#[cfg(test)]
mod tests {
    use super::without_wrappers;

    fn check(src: &str, expected: Option<&str>) {
        assert_eq!(
            without_wrappers(src).expect("parses").as_deref(),
            expected,
            "{src}"
        );
    }

    #[test]
    fn wrappers_are_looked_through_at_any_depth() {
        check("lib.mkForce \"ten\"", Some("(\"ten\")"));
        check("mkDefault 3", Some("(3)"));
        check("lib.mkOverride 50 true", Some("(true)"));
        check("lib.mkIf config.x.enable 5", Some("(5)"));
        check(
            "{ a = lib.mkForce { b = mkDefault 1; }; }",
            Some("{ a = ({ b = (1); }); }"),
        );
        check("[ (lib.mkBefore [ 1 ]) ]", Some("[ (([ 1 ])) ]"));
        check("lib.mkOrder 10 [ 2 ]", Some("([ 2 ])"));
        check("lib.mkForce (lib.mkIf true 1)", Some("(((1)))"));
        // Not wrappers, or not fully applied.
        check("{ a = 1; }", None);
        check("lib.mkForce", None);
        check("lib.mkOverride 50", None);
        check("lib.mkMerge [ { a = 1; } ]", None);
        check("f \"mkForce\"", None);
    }
}
