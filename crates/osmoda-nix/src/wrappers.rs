//! The value a definition gives once its module-system wrappers are looked through: priorities
//! (`mkForce`, `mkDefault`, `mkOverride N`, …), conditions (`mkIf c`) and list order
//! (`mkBefore`, `mkAfter`, `mkOrder N`) do not change what type the value must have, so a check
//! of the value (osModa's option schema) must see through them, wherever they sit in the value.
//! `mkMerge [ a b … ]` becomes the merge of its parts as the module system merges values of
//! attribute-set and list types (attribute sets recursively, lists concatenated; of two other
//! values the later is kept, where NixOS would report a conflict or take the higher priority),
//! so each part's values are checked where they land.

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

/// A Nix function merging a list of values as the module system merges attribute sets and lists
/// (see the module docs). Its parts are its arguments, outside its `let`, so they cannot see
/// its names.
const MERGE: &str = "(let m = xs: builtins.foldl' (a: b: if builtins.isAttrs a && builtins.isAttrs b then builtins.zipAttrsWith (n: vs: m vs) [ a b ] else if builtins.isList a && builtins.isList b then a ++ b else b) (builtins.head xs) (builtins.tail xs); in xs: if builtins.length xs == 0 then { } else m xs)";

/// `src` with every module-system wrapper (see the module docs) replaced by its parenthesised
/// value, at any depth: `lib.mkForce { a = mkDefault "x"; }` → `({ a = ("x"); })`, and every
/// `mkMerge [ … ]` of a list literal by the merge of its parts. Returns `None` when `src` has
/// no wrapper. A `mkMerge` of anything but a list literal is left as it is.
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
    if let Some(parts) = merged(node) {
        *found = true;
        let parts: Vec<String> = parts
            .iter()
            .map(|p| format!("({})", rewrite(p, found)))
            .collect();
        return format!("({MERGE} [ {} ])", parts.join(" "));
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

/// The parts of `mkMerge [ … ]` when `node` is that application of a list literal.
fn merged(node: &SyntaxNode) -> Option<Vec<SyntaxNode>> {
    if node.kind() != NODE_APPLY {
        return None;
    }
    let mut children = node.children();
    let (f, arg) = (children.next()?, children.next()?);
    let name = match f.kind() {
        NODE_IDENT => f.text().to_string(),
        NODE_SELECT => {
            let path = f.children().find(|c| c.kind() == NODE_ATTRPATH)?;
            match path.children().last().map(|a| key_of(&a))? {
                Key::Static(k) => k,
                Key::Dynamic => return None,
            }
        }
        _ => return None,
    };
    if name != "mkMerge" {
        return None;
    }
    let mut list = arg;
    while list.kind() == NODE_PAREN {
        list = list.children().next()?;
    }
    (list.kind() == NODE_LIST).then(|| list.children().collect())
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
        check("lib.mkMerge parts", None);
        check("f \"mkForce\"", None);
    }

    #[test]
    fn merges_are_looked_through_and_merge_like_the_module_system() {
        let merged = without_wrappers("lib.mkMerge [ { a = 1; } (mkForce { b = 2; }) ]")
            .expect("parses")
            .expect("a wrapper");
        assert!(
            merged.ends_with(" [ ({ a = 1; }) ((({ b = 2; }))) ])"),
            "{merged}"
        );
        let nix = "nix-instantiate";
        if std::process::Command::new(nix)
            .arg("--version")
            .output()
            .is_err()
        {
            println!("skipped: nix-instantiate not installed");
            return;
        }
        for (src, want) in [
            ("lib.mkMerge [ ]", "{ }"),
            ("lib.mkMerge [ { a = 1; } ]", "{ a = 1; }"),
            (
                "lib.mkMerge [ { a.b = 1; a.c = [ 1 ]; } (lib.mkIf true { a.c = [ 2 ]; d = \"x\"; }) ]",
                "{ a = { b = 1; c = [ 1 2 ]; }; d = \"x\"; }",
            ),
            (
                "{ w = lib.mkMerge [ { i = lib.mkForce \"ten\"; } { j = 2; } ]; }",
                "{ w = { i = \"ten\"; j = 2; }; }",
            ),
            ("lib.mkMerge [ [ 1 ] [ 2 3 ] ]", "[ 1 2 3 ]"),
            // Parts cannot see the merge's own names.
            ("let m = 5; in lib.mkMerge [ { x = m; } ]", "{ x = 5; }"),
        ] {
            let out = without_wrappers(src).expect("parses").expect("a wrapper");
            let got = std::process::Command::new(nix)
                .args(["--eval", "--strict", "-E", &out])
                .output()
                .expect("nix-instantiate");
            let want_out = std::process::Command::new(nix)
                .args(["--eval", "--strict", "-E", want])
                .output()
                .expect("nix-instantiate");
            assert!(got.status.success(), "{src} → {out}: {}", String::from_utf8_lossy(&got.stderr));
            assert_eq!(got.stdout, want_out.stdout, "{src} → {out}");
        }
    }
}
