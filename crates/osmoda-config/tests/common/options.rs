//! Extracts every option a NixOS module declares, with rnix: the attribute path of each
//! `mkOption` / `mkEnableOption` / `mkPackageOption`, following let-bound helpers (inlined
//! with their arguments) and submodule types (`attrsOf` adds `<name>`, `listOf` adds `*`,
//! `freeformType` adds `<name>` beside the declared options).

use std::collections::HashMap;

use anyhow::{bail, Context, Result};
use rnix::ast::{self, HasEntry};
use rowan::ast::AstNode;

/// One declared option.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct OptionDecl {
    /// Path below `options.services.osmoda`, e.g. `["watch", "watchers", "<name>", "intervalSecs"]`.
    pub path: Vec<String>,
}

impl OptionDecl {
    /// The path joined with dots.
    pub fn dotted(&self) -> String {
        self.path.join(".")
    }
}

/// The module's declared options and the source text of its `config` attribute.
pub struct Module {
    /// Every declared option.
    pub options: Vec<OptionDecl>,
    /// Text of the `config = ...;` value.
    pub config_text: String,
    /// Let-bound aliases of option subtrees: `tg = cfg.gateway.channels.telegram;`.
    pub aliases: Vec<(String, String)>,
}

struct Walker {
    scopes: Vec<HashMap<String, ast::Expr>>,
    out: Vec<OptionDecl>,
    depth: usize,
}

fn attr_name(a: &ast::Attr) -> Option<String> {
    match a {
        ast::Attr::Ident(i) => i.ident_token().map(|t| t.text().to_string()),
        ast::Attr::Str(s) => {
            let parts = s.normalized_parts();
            match parts.as_slice() {
                [ast::InterpolPart::Literal(l)] => Some(l.clone()),
                _ => None,
            }
        }
        ast::Attr::Dynamic(_) => None,
    }
}

fn attrpath(p: &ast::Attrpath) -> Option<Vec<String>> {
    p.attrs().map(|a| attr_name(&a)).collect()
}

/// Last identifier of `f`, `lib.f`, `types.f`.
fn head_name(e: &ast::Expr) -> Option<String> {
    match e {
        ast::Expr::Ident(i) => i.ident_token().map(|t| t.text().to_string()),
        ast::Expr::Select(s) => s
            .attrpath()
            .and_then(|p| p.attrs().last())
            .and_then(|a| attr_name(&a)),
        ast::Expr::Paren(p) => p.expr().and_then(|e| head_name(&e)),
        _ => None,
    }
}

/// Splits `f a b` into (`f`, [`a`, `b`]).
fn unapply(e: &ast::Expr) -> (ast::Expr, Vec<ast::Expr>) {
    let mut args = Vec::new();
    let mut cur = e.clone();
    while let ast::Expr::Apply(a) = &cur {
        let (Some(f), Some(x)) = (a.lambda(), a.argument()) else {
            break;
        };
        args.push(x);
        cur = f;
    }
    args.reverse();
    (cur, args)
}

fn binding(set: &impl HasEntry, name: &str) -> Option<ast::Expr> {
    set.attrpath_values().find_map(|av| {
        let p = attrpath(&av.attrpath()?)?;
        (p.len() == 1 && p[0] == name).then(|| av.value()).flatten()
    })
}

impl Walker {
    fn lookup(&self, name: &str) -> Option<ast::Expr> {
        self.scopes.iter().rev().find_map(|s| s.get(name).cloned())
    }

    fn resolve(&self, e: &ast::Expr) -> ast::Expr {
        let mut cur = e.clone();
        for _ in 0..16 {
            cur = match &cur {
                ast::Expr::Paren(p) => match p.expr() {
                    Some(x) => x,
                    None => return cur,
                },
                ast::Expr::Ident(i) => match i.ident_token().and_then(|t| self.lookup(t.text())) {
                    Some(x) => x,
                    None => return cur,
                },
                _ => return cur,
            };
        }
        cur
    }

    /// Calls `f` with a let-bound lambda's parameters bound to `args`; returns its body.
    fn inline(&mut self, f: &ast::Expr, args: &[ast::Expr]) -> Option<ast::Expr> {
        let mut body = self.resolve(f);
        let mut scope = HashMap::new();
        for arg in args {
            let ast::Expr::Lambda(l) = &body else {
                return None;
            };
            if let Some(ast::Param::IdentParam(p)) = l.param() {
                if let Some(name) = p.ident().and_then(|i| i.ident_token()) {
                    scope.insert(name.text().to_string(), arg.clone());
                }
            }
            body = l.body()?;
        }
        self.scopes.push(scope);
        Some(body)
    }

    fn option_at(&mut self, prefix: &[String]) {
        self.out.push(OptionDecl {
            path: prefix.to_vec(),
        });
    }

    /// An expression in option position: an attrset of options, an mkOption call, `a // b`.
    fn options(&mut self, e: &ast::Expr, prefix: &[String]) {
        self.depth += 1;
        if self.depth > 64 {
            self.depth -= 1;
            return;
        }
        let e = self.resolve(e);
        match &e {
            ast::Expr::AttrSet(set) => {
                for av in set.attrpath_values() {
                    let (Some(p), Some(v)) =
                        (av.attrpath().as_ref().and_then(attrpath), av.value())
                    else {
                        continue;
                    };
                    let mut path = prefix.to_vec();
                    path.extend(p);
                    self.options(&v, &path);
                }
            }
            ast::Expr::BinOp(b) => {
                if let Some(l) = b.lhs() {
                    self.options(&l, prefix);
                }
                if let Some(r) = b.rhs() {
                    self.options(&r, prefix);
                }
            }
            ast::Expr::Apply(_) => {
                let (f, args) = unapply(&e);
                match head_name(&f).as_deref() {
                    Some("mkEnableOption") | Some("mkPackageOption") => self.option_at(prefix),
                    Some("mkOption") => {
                        self.option_at(prefix);
                        if let Some(ast::Expr::AttrSet(set)) = args.first().map(|a| self.resolve(a))
                        {
                            if let Some(t) = binding(&set, "type") {
                                self.types(&t, prefix);
                            }
                        }
                    }
                    _ => {
                        if let Some(body) = self.inline(&f, &args) {
                            self.options(&body, prefix);
                            self.scopes.pop();
                        }
                    }
                }
            }
            _ => {}
        }
        self.depth -= 1;
    }

    /// A type expression: finds submodules below `attrsOf` / `listOf` / `nullOr`.
    fn types(&mut self, e: &ast::Expr, prefix: &[String]) {
        let e = self.resolve(e);
        let ast::Expr::Apply(_) = &e else { return };
        let (f, args) = unapply(&e);
        let Some(arg) = args.last() else { return };
        let mut path = prefix.to_vec();
        match head_name(&f).as_deref() {
            Some("attrsOf") | Some("lazyAttrsOf") => {
                path.push("<name>".into());
                self.types(arg, &path);
            }
            Some("listOf") => {
                path.push("*".into());
                self.types(arg, &path);
            }
            Some("nullOr") | Some("uniq") | Some("unique") => self.types(arg, prefix),
            Some("submodule") => self.submodule(arg, prefix),
            _ => {}
        }
    }

    fn submodule(&mut self, e: &ast::Expr, prefix: &[String]) {
        let mut e = self.resolve(e);
        if let ast::Expr::Lambda(l) = &e {
            match l.body() {
                Some(b) => e = self.resolve(&b),
                None => return,
            }
        }
        let ast::Expr::AttrSet(set) = &e else { return };
        if let Some(opts) = binding(set, "options") {
            self.options(&opts, prefix);
        }
        if let Some(ff) = binding(set, "freeformType") {
            self.types(&ff, prefix);
        }
    }
}

/// Parses `text` (modules/osmoda.nix) and extracts options below `options.services.osmoda`.
///
/// # Errors
/// When the module does not parse or does not have the expected top-level shape.
pub fn extract(text: &str) -> Result<Module> {
    let parse = rnix::Root::parse(text);
    if let Some(e) = parse.errors().first() {
        bail!("modules/osmoda.nix does not parse: {e}");
    }
    let root = parse.tree().expr().context("empty module")?;
    let ast::Expr::Lambda(lambda) = root else {
        bail!("module is not a function")
    };
    let ast::Expr::LetIn(let_in) = lambda.body().context("module has no body")? else {
        bail!("module body is not `let ... in`")
    };
    let mut scope = HashMap::new();
    let mut aliases = Vec::new();
    for av in let_in.attrpath_values() {
        let (Some(p), Some(v)) = (av.attrpath().as_ref().and_then(attrpath), av.value()) else {
            continue;
        };
        if p.len() == 1 {
            let text = v.syntax().text().to_string();
            if let Some(rest) = text.strip_prefix("cfg.") {
                if rest
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_' || c == '-')
                {
                    aliases.push((p[0].clone(), rest.to_string()));
                }
            }
            scope.insert(p[0].clone(), v);
        }
    }
    let ast::Expr::AttrSet(body) = let_in.body().context("no let body")? else {
        bail!("module does not return an attrset")
    };
    let mut walker = Walker {
        scopes: vec![scope],
        out: Vec::new(),
        depth: 0,
    };
    let mut config_text = None;
    for av in body.attrpath_values() {
        let (Some(p), Some(v)) = (av.attrpath().as_ref().and_then(attrpath), av.value()) else {
            continue;
        };
        if p == ["options", "services", "osmoda"] {
            walker.options(&v, &[]);
        } else if p == ["config"] {
            config_text = Some(v.syntax().text().to_string());
        }
    }
    let mut options = walker.out;
    options.sort();
    options.dedup();
    if options.is_empty() {
        bail!("no options found under options.services.osmoda");
    }
    Ok(Module {
        options,
        config_text: config_text.context("module has no `config`")?,
        aliases,
    })
}

impl Module {
    /// True when the `config` text reads this (wildcard-free) option as `cfg.<path>` or
    /// through a let alias.
    pub fn used_in_config(&self, opt: &OptionDecl) -> bool {
        if opt.path.iter().any(|s| s == "<name>" || s == "*") {
            return false;
        }
        let dotted = opt.dotted();
        let mut needles = vec![format!("cfg.{dotted}")];
        for (alias, target) in &self.aliases {
            if let Some(rest) = dotted.strip_prefix(&format!("{target}.")) {
                needles.push(format!("{alias}.{rest}"));
            }
        }
        needles
            .iter()
            .any(|n| contains_ident_path(&self.config_text, n))
    }
}

/// `hay` contains `needle` not followed by another identifier character.
fn contains_ident_path(hay: &str, needle: &str) -> bool {
    hay.match_indices(needle).any(|(i, _)| {
        let before_ok = i == 0
            || !hay[..i].ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        let after = hay[i + needle.len()..].chars().next();
        before_ok
            && !after
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '\'')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ident_path_boundaries() {
        assert!(contains_ident_path("x cfg.a.b;", "cfg.a.b"));
        assert!(!contains_ident_path("x cfg.a.bc;", "cfg.a.b"));
        assert!(!contains_ident_path("x mycfg.a.b;", "cfg.a.b"));
    }
}
