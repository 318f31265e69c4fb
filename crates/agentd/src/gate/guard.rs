//! The attribute tests of a module as the gate evaluates them. Nix answers `e ? a.b` and
//! `e.a.b or d` inside the evaluator, where no stand-in can intercept them, and the stand-ins
//! answer to every name of the files: `pkgs ? ${"hel" + "lo"}` is `false` in both of the gate's
//! worlds and `true` with real nixpkgs. So each such test is rewritten, in the private copy only,
//! into a call of the gate's own functions (named with the process's nonce, so a module cannot
//! shadow or call them by name), which answer like Nix for ordinary sets and refuse to answer for
//! a stand-in: the value is then undecidable.

use rnix::ast;
use rnix::{NodeOrToken, SyntaxKind, SyntaxNode};
use rowan::ast::AstNode;

/// `text` with every `?` and `or` test rewritten; unchanged when it does not parse (or is beyond
/// the parse budget), which the evaluator then reports as it would anyway.
pub fn attr_tests(text: &str, nonce: &str) -> String {
    if osmoda_nix::budget::check(text).is_err() {
        return text.to_string();
    }
    let parse = rnix::Root::parse(text);
    if !parse.errors().is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 64);
    render(&parse.syntax(), nonce, &mut out);
    out
}

fn render(node: &SyntaxNode, nonce: &str, out: &mut String) {
    match node.kind() {
        SyntaxKind::NODE_HAS_ATTR => {
            if let Some(h) = ast::HasAttr::cast(node.clone()) {
                if let (Some(e), Some(p)) = (h.expr(), h.attrpath()) {
                    out.push_str(&format!("(__osmodaHas{nonce} ("));
                    render(e.syntax(), nonce, out);
                    out.push_str(") ");
                    path(&p, nonce, out);
                    out.push(')');
                    return;
                }
            }
        }
        SyntaxKind::NODE_SELECT => {
            if let Some(s) = ast::Select::cast(node.clone()) {
                if let (Some(e), Some(p), Some(d)) = (s.expr(), s.attrpath(), s.default_expr()) {
                    out.push_str(&format!("(__osmodaOr{nonce} ("));
                    render(e.syntax(), nonce, out);
                    out.push_str(") ");
                    path(&p, nonce, out);
                    out.push_str(" (");
                    render(d.syntax(), nonce, out);
                    out.push_str("))");
                    return;
                }
            }
        }
        _ => {}
    }
    for child in node.children_with_tokens() {
        match child {
            NodeOrToken::Node(n) => render(&n, nonce, out),
            NodeOrToken::Token(t) => out.push_str(t.text()),
        }
    }
}

/// An attribute path as a Nix list of its names (each an expression evaluating to a string).
fn path(p: &ast::Attrpath, nonce: &str, out: &mut String) {
    out.push('[');
    for a in p.attrs() {
        out.push_str(" (");
        match a {
            // An identifier's characters need no escaping in a Nix string.
            ast::Attr::Ident(i) => out.push_str(&format!("\"{}\"", i.syntax().text())),
            ast::Attr::Dynamic(d) => match d.expr() {
                Some(e) => render(e.syntax(), nonce, out),
                None => render(d.syntax(), nonce, out),
            },
            ast::Attr::Str(s) => render(s.syntax(), nonce, out),
        }
        out.push(')');
    }
    out.push_str(" ]");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_tests_become_calls_and_everything_else_stays() {
        for (src, want) in [
            ("x ? a", "(__osmodaHasN (x) [ (\"a\") ])"),
            (
                "x ? a.\"b c\".${y}",
                "(__osmodaHasN (x) [ (\"a\") (\"b c\") (y) ])",
            ),
            ("x.a.b or 1", "(__osmodaOrN (x) [ (\"a\") (\"b\") ] (1))"),
            // `or` binds tighter than `?`.
            (
                "(x.a or y ? b)",
                "((__osmodaHasN ((__osmodaOrN (x) [ (\"a\") ] (y))) [ (\"b\") ]))",
            ),
            (
                "x.a or (z.c or 2)",
                "(__osmodaOrN (x) [ (\"a\") ] (((__osmodaOrN (z) [ (\"c\") ] (2)))))",
            ),
            ("{ a = x.b; # c\n}", "{ a = x.b; # c\n}"),
            ("{ a = ", "{ a = "),
        ] {
            assert_eq!(attr_tests(src, "N"), want, "{src}");
        }
    }

    /// On ordinary sets the rewritten tests answer as Nix does (the real evaluator as oracle),
    /// with `step`, `hasPath` and `selectOr` taken from extract.nix.
    #[test]
    fn rewritten_tests_answer_like_nix_on_ordinary_sets() {
        let Some(nix) = osmoda_generations::validate::find_nix_instantiate() else {
            println!("skipped: nix-instantiate not installed");
            return;
        };
        let extract = include_str!("extract.nix");
        let helpers: String = ["  step = ", "  hasPath = ", "  selectOr = "]
            .iter()
            .map(|start| {
                let from = extract.find(start).expect("helper in extract.nix");
                let len = extract[from..].find(";\n").expect("end of helper") + 2;
                extract[from..from + len].to_string()
            })
            .collect();
        let cases = r#"[
            ({ a = 1; } ? a) ({ a = 1; } ? b) ({ a.b = 1; } ? a.b) ({ a = 1; } ? a.b)
            ({ a = { }; } ? a.b) ({ "x y" = 1; } ? "x y") ({ ab = 1; } ? ${"a" + "b"})
            ({ a = 1; }.a or 2) ({ a = 1; }.b or 2) ({ a = 1; }.a.b or 3) ({ a.b.c = 4; }.a.b.c or 5)
            (let s = { a = 1; }; in s ? a && !(s ? b)) ({ }.a or { b = 1; } ? b)
        ]"#;
        let wrap = |body: &str| {
            format!(
                "let isStandIn = x: builtins.isAttrs x && x ? __osmodaStandIn; refuse = w: throw w;\n\
                 inherit (builtins) isAttrs hasAttr getAttr;\n{helpers}\n\
                 __osmodaHasN = hasPath; __osmodaOrN = selectOr;\nin {body}"
            )
        };
        let eval = |expr: &str| {
            let out = std::process::Command::new(&nix)
                .args(["--eval", "--strict", "--json", "-E", expr])
                .output()
                .expect("nix-instantiate");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8(out.stdout).expect("utf8")
        };
        let plain = eval(&wrap(cases));
        let rewritten = eval(&wrap(&attr_tests(cases, "N")));
        assert_eq!(plain, rewritten);
        assert_eq!(
            plain.trim(),
            "[true,false,true,false,false,true,true,1,2,3,4,true,true]"
        );
    }
}
