//! The modules a file holds and the modules it imports: the file's own body, inline modules in
//! `imports = [ { … } ]` (and in a flake's `modules = [ … ]` lists), static import paths, and the
//! value wrappers that do not change where a value is written (`mkForce`, `with pkgs; [ … ]`).

use rnix::{SyntaxKind::*, SyntaxNode};

use crate::error::{EditError, Pos};
use crate::path::AttrPath;
use crate::resolve::{body, body_of, Body};
use crate::syntax::{attrs_of, key_of, start, value_of, Key};

/// What kind of file this is, as far as editing options goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A NixOS module (a function returning an attribute set) or a plain attribute set.
    Module,
    /// A flake (`{ inputs = …; outputs = …; }`): options belong in its modules, not here.
    Flake,
    /// Anything else (a list, a package expression, …): options cannot be set in it.
    Other,
}

/// A static module path in an `imports` (or a flake's `modules`) list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// The path as written, relative to the importing file (`./hardware-configuration.nix`).
    pub path: String,
    /// Where it is written.
    pub pos: Pos,
}

/// The modules of one file: index 0 is the file's own body (absent for flakes and other
/// files), then the inline modules in file order.
pub(crate) struct Modules {
    pub kind: FileKind,
    pub bodies: Vec<Option<Body>>,
    pub imports: Vec<Import>,
    pub unfollowed: Vec<Import>,
}

/// Finds the modules and imports of a parsed file.
pub(crate) fn modules(root: &SyntaxNode, src: &str) -> Modules {
    let probe = AttrPath::new(["_"]).expect("a one-name path");
    let main = body(root, src, &probe).ok();
    let flake = main
        .as_ref()
        .is_some_and(|b| !b.module && top_key(&b.set, "outputs").is_some());
    let kind = match (&main, flake) {
        (_, true) => FileKind::Flake,
        (Some(_), false) => FileKind::Module,
        (None, _) => FileKind::Other,
    };
    let mut out = Modules {
        kind,
        bodies: vec![if flake { None } else { main.clone() }],
        imports: Vec::new(),
        unfollowed: Vec::new(),
    };
    let lists: Vec<SyntaxNode> = match (&main, flake) {
        (Some(b), true) => b
            .set
            .descendants()
            .filter(|n| n.kind() == NODE_ATTRPATH_VALUE)
            .filter(|n| last_key(n).as_deref() == Some("modules"))
            .filter_map(|n| value_of(&n))
            .filter_map(|v| list_of(&v))
            .collect(),
        (Some(b), false) => top_key(&b.set, "imports")
            .and_then(|e| value_of(&e))
            .and_then(|v| list_of(&v))
            .into_iter()
            .collect(),
        (None, _) => Vec::new(),
    };
    for list in lists {
        for item in list.children() {
            let mut item = item;
            while item.kind() == NODE_PAREN {
                match item.children().next() {
                    Some(inner) => item = inner,
                    None => break,
                }
            }
            match item.kind() {
                NODE_PATH_REL | NODE_PATH_ABS if item.children().next().is_none() => {
                    out.imports.push(Import {
                        path: item.text().to_string(),
                        pos: Pos::of(src, start(&item)),
                    });
                }
                NODE_ATTR_SET | NODE_LAMBDA | NODE_LET_IN | NODE_WITH => {
                    if let Ok(mut b) = body_of(item.clone(), src, &probe) {
                        b.module = true;
                        out.bodies.push(Some(b));
                    }
                }
                _ => {
                    let pos = Pos::of(src, start(&item));
                    match folded_path(&item) {
                        Some(path) => out.imports.push(Import { path, pos }),
                        // A module computed from a path of the tree (`./. + "/${host}.nix"`,
                        // `import ./m.nix { }`): it may define anything, and cannot be read.
                        None if item.descendants().any(|d| d.kind() == NODE_PATH_REL) => {
                            out.unfollowed.push(Import {
                                path: item.text().to_string(),
                                pos,
                            });
                        }
                        // Modules from outside the tree (`inputs.x.nixosModules.y`, `<nixpkgs/…>`)
                        // declare and default options like nixpkgs' own modules.
                        None => {}
                    }
                }
            }
        }
    }
    out
}

/// A path written as a relative path literal plus plain strings (`./. + "/dyn.nix"`,
/// `(./hosts + "/web.nix")`): the path it names, relative to the file, when it is that simple.
fn folded_path(item: &SyntaxNode) -> Option<String> {
    fn parts(node: &SyntaxNode, out: &mut Vec<String>) -> Option<()> {
        match node.kind() {
            NODE_PAREN => parts(&node.children().next()?, out),
            NODE_BIN_OP => {
                let op = node
                    .children_with_tokens()
                    .filter_map(|t| t.into_token())
                    .find(|t| !t.kind().is_trivia())?;
                if op.kind() != TOKEN_ADD {
                    return None;
                }
                let mut kids = node.children();
                let (l, r) = (kids.next()?, kids.next()?);
                parts(&l, out)?;
                parts(&r, out)
            }
            NODE_PATH_REL if out.is_empty() && node.children().next().is_none() => {
                out.push(node.text().to_string());
                Some(())
            }
            NODE_STRING if !out.is_empty() => {
                if node.children().next().is_some() {
                    return None; // interpolated
                }
                let text = node.text().to_string();
                let inner = text.strip_prefix('"')?.strip_suffix('"')?;
                if inner.contains('\\') || inner.contains('$') {
                    return None;
                }
                out.push(inner.to_string());
                Some(())
            }
            _ => None,
        }
    }
    let mut out = Vec::new();
    parts(item, &mut out)?;
    if out.len() < 2 {
        return None;
    }
    // `./.` + "/x.nix" → `././x.nix`; `./hosts` + "/web.nix" → `./hosts/web.nix`; a string
    // without a leading `/` continues the last name (`./host` + "s/web.nix"), as in Nix.
    let mut path = out.remove(0);
    for s in out {
        path.push_str(&s);
    }
    Some(path)
}

/// The binding `name = …;` (one name) at the top of attribute set `set`.
pub(crate) fn top_key(set: &SyntaxNode, name: &str) -> Option<SyntaxNode> {
    set.children()
        .filter(|c| c.kind() == NODE_ATTRPATH_VALUE)
        .find(|e| {
            let mut keys = attrs_of(e);
            matches!((keys.next().map(|a| key_of(&a)), keys.next()), (Some(Key::Static(k)), None) if k == name)
        })
}

fn last_key(entry: &SyntaxNode) -> Option<String> {
    match attrs_of(entry).last().map(|a| key_of(&a)) {
        Some(Key::Static(k)) => Some(k),
        _ => None,
    }
}

/// The list literal of a value, looking through `with …;` (`with pkgs; [ … ]`).
pub(crate) fn list_of(value: &SyntaxNode) -> Option<SyntaxNode> {
    match value.kind() {
        NODE_LIST => Some(value.clone()),
        NODE_WITH => value.children().nth(1).and_then(|b| list_of(&b)),
        _ => None,
    }
}

/// The namespace of a `with NS; [ … ]` value (`pkgs`), if the list sits under one.
pub(crate) fn with_namespace(value: &SyntaxNode) -> Option<String> {
    (value.kind() == NODE_WITH)
        .then(|| value.children().next())
        .flatten()
        .map(|ns| ns.text().to_string())
}

/// Functions that set a definition's priority without changing its value.
const PRIORITY: &[(&str, usize)] = &[
    ("mkForce", 0),
    ("mkDefault", 0),
    ("mkOptionDefault", 0),
    ("mkVMOverride", 0),
    ("mkImageMediaOverride", 0),
    ("mkOverride", 1),
];

/// A priority wrapper around a definition's value (`lib.mkForce false`).
pub(crate) struct Wrapped {
    /// The wrapper as written, without the value (`lib.mkForce`, `mkOverride 50`).
    pub wrapper: String,
    /// The wrapped value (inside parentheses if it is written in them).
    pub inner: SyntaxNode,
}

/// Recognises `mkForce v`, `lib.mkDefault v`, `lib.mkOverride 50 v`, …
pub(crate) fn priority(value: &SyntaxNode) -> Option<Wrapped> {
    if value.kind() != NODE_APPLY {
        return None;
    }
    // An application `f a b` is APPLY(APPLY(f, a), b): collect the arguments outermost last.
    let mut args = Vec::new();
    let mut head = value.clone();
    while head.kind() == NODE_APPLY {
        let mut children = head.children();
        let (f, arg) = (children.next()?, children.next()?);
        args.push(arg);
        head = f;
    }
    args.reverse();
    let name = match head.kind() {
        NODE_IDENT => head.text().to_string(),
        NODE_SELECT => match attrs_of_select(&head)? {
            Key::Static(k) => k,
            Key::Dynamic => return None,
        },
        _ => return None,
    };
    let &(_, extra) = PRIORITY.iter().find(|(n, _)| *n == name)?;
    if args.len() != extra + 1 {
        return None;
    }
    let inner = args.pop()?;
    let wrapper = value.text().to_string()[..start(&inner) - start(value)]
        .trim_end()
        .to_string();
    Some(Wrapped { wrapper, inner })
}

/// The name of the function applied in `value` and its arguments, first argument first
/// (`lib.mkIf c x` → `("mkIf", [c, x])`); `None` when `value` is not an application of a name.
fn applied(value: &SyntaxNode) -> Option<(String, Vec<SyntaxNode>)> {
    if value.kind() != NODE_APPLY {
        return None;
    }
    let mut args = Vec::new();
    let mut head = value.clone();
    while head.kind() == NODE_APPLY {
        let mut children = head.children();
        let (f, arg) = (children.next()?, children.next()?);
        args.push(arg);
        head = f;
    }
    args.reverse();
    let name = match head.kind() {
        NODE_IDENT => head.text().to_string(),
        NODE_SELECT => match attrs_of_select(&head)? {
            Key::Static(k) => k,
            Key::Dynamic => return None,
        },
        _ => return None,
    };
    Some((name, args))
}

/// `node` without the parentheses around it.
pub(crate) fn unparen(node: &SyntaxNode) -> SyntaxNode {
    let mut node = node.clone();
    while node.kind() == NODE_PAREN {
        match node.children().next() {
            Some(inner) => node = inner,
            None => break,
        }
    }
    node
}

/// The parts of `lib.mkMerge [ a b … ]` (also under a priority wrapper and parentheses), each
/// without its parentheses; `None` when `value` is not such a merge of a list literal.
pub(crate) fn merge_parts(value: &SyntaxNode) -> Option<Vec<SyntaxNode>> {
    let mut value = unparen(value);
    if let Some(w) = priority(&value) {
        value = unparen(&w.inner);
    }
    let (name, args) = applied(&value)?;
    match (name.as_str(), args.as_slice()) {
        ("mkMerge", [list]) => {
            let list = unparen(list);
            (list.kind() == NODE_LIST).then(|| list.children().map(|p| unparen(&p)).collect())
        }
        _ => None,
    }
}

/// The attribute set literal a condition guards (`lib.mkIf c { … }`, also under a priority
/// wrapper and parentheses).
pub(crate) fn conditional_set(value: &SyntaxNode) -> Option<SyntaxNode> {
    let mut value = unparen(value);
    if let Some(w) = priority(&value) {
        value = unparen(&w.inner);
    }
    let (name, args) = applied(&value)?;
    match (name.as_str(), args.as_slice()) {
        ("mkIf", [_, set]) => Some(unparen(set)).filter(|s| s.kind() == NODE_ATTR_SET),
        _ => None,
    }
}

/// The last name of a selection (`lib.mkForce` → `mkForce`).
fn attrs_of_select(select: &SyntaxNode) -> Option<Key> {
    let path = select.children().find(|c| c.kind() == NODE_ATTRPATH)?;
    path.children().last().map(|a| key_of(&a))
}

/// Refuses an option edit in a flake's own attribute set.
pub(crate) fn check_flake_path(
    root: &rnix::SyntaxNode,
    src: &str,
    path: &AttrPath,
) -> Result<(), EditError> {
    let first = path.segments()[0].as_str();
    if matches!(first, "inputs" | "description" | "nixConfig") {
        return Ok(());
    }
    // The position of the flake's attribute set (not the file's first byte, which may be a
    // comment header).
    let at = root
        .children()
        .next()
        .map_or(0, |n| usize::from(n.text_range().start()));
    Err(EditError::Refused {
        path: path.to_string(),
        pos: Pos::of(src, at),
        reason: "this file is a flake, not a NixOS module: only `inputs`, `description` and \
                 `nixConfig` are data here; set options in configuration.nix or a module it \
                 imports (leave `file` out and the option is edited where it is defined)"
            .into(),
    })
}
