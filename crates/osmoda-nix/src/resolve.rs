//! Finding where an attribute path is defined: the module body, the bindings that define the
//! path (exactly or through longer dotted paths) and the attribute sets a new binding could go in.

use rnix::{SyntaxKind::*, SyntaxNode};

use crate::error::{EditError, Pos};
use crate::path::AttrPath;
use crate::syntax::{attrs_of, describe, key_is, key_of, literal_kind, start, value_of, Key};

/// Top-level names of the explicit NixOS module form, which may sit next to `config`/`options`.
const MODULE_META: &[&str] = &[
    "config",
    "options",
    "imports",
    "disabledModules",
    "meta",
    "_file",
    "key",
];

/// How a binding relates to the path asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlaceKind {
    /// The binding's full path is the target path.
    Exact,
    /// The binding defines something below the target (`a.b.c = 1;` for target `a.b`).
    Deeper,
}

/// One binding that defines (part of) the target.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    pub kind: PlaceKind,
    /// The `NODE_ATTRPATH_VALUE` node.
    pub entry: SyntaxNode,
    /// How many path segments the enclosing attribute sets account for.
    pub depth: usize,
}

/// An attribute set literal that stands for a prefix of the target path.
#[derive(Debug, Clone)]
pub(crate) struct Container {
    pub set: SyntaxNode,
    /// Length of the prefix it stands for (0 for the file's body).
    pub depth: usize,
    /// Bindings in this set that share `n ≥ 1` leading names with the rest of the target but
    /// diverge after them (used to insert next to related bindings).
    pub siblings: Vec<(SyntaxNode, usize)>,
}

/// Everything known about a path in one file.
#[derive(Debug)]
pub(crate) struct Resolution {
    pub places: Vec<Place>,
    pub containers: Vec<Container>,
    /// Position of a top-level `imports`, if any (other modules may define the path).
    pub imports: Option<usize>,
}

/// The attribute set that holds a module's settings.
#[derive(Clone)]
pub(crate) struct Body {
    pub set: SyntaxNode,
    /// True for a NixOS module (a function, or an inline module in `imports`), where top-level
    /// `config`/`options` change how the other names are read.
    pub module: bool,
}

/// Finds the body attribute set of the expression `node`: the attribute set itself, or the one
/// under a module function, a top-level `let … in`, `with …;`, `assert …;` or parentheses.
/// Names and literal values inside do not depend on those scopes, so they are edited through.
pub(crate) fn body_of(node: SyntaxNode, src: &str, path: &AttrPath) -> Result<Body, EditError> {
    let refuse = |node: &SyntaxNode, reason: String| EditError::Refused {
        path: path.to_string(),
        pos: Pos::of(src, start(node)),
        reason,
    };
    let mut node = node;
    let mut module = false;
    loop {
        let inner = match node.kind() {
            NODE_ATTR_SET => return Ok(Body { set: node, module }),
            NODE_LAMBDA => {
                module = true;
                node.children().nth(1)
            }
            // `let` bindings come first; the body is the last child.
            NODE_LET_IN => node.children().last(),
            NODE_WITH | NODE_ASSERT => node.children().nth(1),
            NODE_PAREN => node.children().next(),
            _ => {
                return Err(refuse(
                    &node,
                    format!(
                        "the file's body is {}, not an attribute set",
                        describe(&node)
                    ),
                ))
            }
        };
        node = inner.ok_or_else(|| refuse(&node, format!("{} without a body", describe(&node))))?;
    }
}

/// Finds the body attribute set of the whole file.
pub(crate) fn body(root: &SyntaxNode, src: &str, path: &AttrPath) -> Result<Body, EditError> {
    let node = root.children().next().ok_or_else(|| EditError::Refused {
        path: path.to_string(),
        pos: Pos::of(src, 0),
        reason: "the file holds no expression".into(),
    })?;
    body_of(node, src, path)
}

fn is_rec(set: &SyntaxNode) -> bool {
    set.children_with_tokens().any(|c| c.kind() == TOKEN_REC)
}

/// Is this attribute set `rec { ... }`?
pub(crate) fn rec_set(set: &SyntaxNode) -> bool {
    is_rec(set)
}

/// Resolves `path` in the module body `body` of `src`.
pub(crate) fn resolve(body: &Body, src: &str, path: &AttrPath) -> Result<Resolution, EditError> {
    let segs = path.segments();
    let mut imports = None;
    for entry in body
        .set
        .children()
        .filter(|c| c.kind() == NODE_ATTRPATH_VALUE)
    {
        if let Some(Key::Static(first)) = attrs_of(&entry).next().map(|a| key_of(&a)) {
            if first == "imports" {
                imports = Some(start(&entry));
            }
            let explicit = first == "config" || first == "options";
            if body.module && explicit && !MODULE_META.contains(&segs[0].as_str()) {
                return Err(EditError::Refused {
                    path: path.to_string(),
                    pos: Pos::of(src, start(&entry)),
                    reason: format!(
                        "this module declares a top-level `{first}`, so its settings live under \
                         `config`; address the option as `config.{path}`"
                    ),
                });
            }
        }
    }
    crate::path::not_into_imports(path)?;
    let mut res = Resolution {
        places: Vec::new(),
        containers: Vec::new(),
        imports,
    };
    walk(&body.set, 0, src, path, &mut res)?;
    Ok(res)
}

fn walk(
    set: &SyntaxNode,
    depth: usize,
    src: &str,
    path: &AttrPath,
    res: &mut Resolution,
) -> Result<(), EditError> {
    let segs = path.segments();
    let refuse = |node: &SyntaxNode, reason: String| EditError::Refused {
        path: path.to_string(),
        pos: Pos::of(src, start(node)),
        reason,
    };
    let mut siblings = Vec::new();
    for entry in set.children() {
        if entry.kind() == NODE_INHERIT {
            for attr in entry.children().filter(|c| c.kind() != NODE_INHERIT_FROM) {
                match key_of(&attr) {
                    Key::Static(name) if name != segs[depth] => {}
                    _ => {
                        return Err(refuse(
                            &entry,
                            format!(
                            "`{}` is brought in by `inherit`, so its value is defined elsewhere",
                            path.prefix(depth + 1)
                        ),
                        ))
                    }
                }
            }
            continue;
        }
        if entry.kind() != NODE_ATTRPATH_VALUE {
            continue;
        }
        // Match the binding's names against the path without collecting them: `names` counts
        // all of them; once the path is used up, the remaining names are counted, not inspected.
        let mut names = 0;
        let mut matched = 0;
        let mut diverged = false;
        for attr in attrs_of(&entry) {
            names += 1;
            let Some(want) = segs.get(depth + matched) else {
                continue;
            };
            match key_is(&attr, want) {
                None => {
                    return Err(refuse(
                        &attr,
                        "a dynamic attribute name (`${...}`) could be any name, so the target \
                         cannot be located without evaluating"
                            .into(),
                    ))
                }
                Some(true) => matched += 1,
                Some(false) => {
                    diverged = true;
                    break;
                }
            }
        }
        if diverged {
            if matched > 0 {
                siblings.push((entry.clone(), matched));
            }
            continue;
        }
        let full = depth + names;
        if full == segs.len() {
            res.places.push(Place {
                kind: PlaceKind::Exact,
                entry,
                depth,
            });
        } else if full > segs.len() {
            res.places.push(Place {
                kind: PlaceKind::Deeper,
                entry,
                depth,
            });
        } else {
            // The binding defines a prefix of the target: look inside its value.
            let Some(value) = value_of(&entry) else {
                continue;
            };
            if value.kind() == NODE_ATTR_SET {
                walk(&value, full, src, path, res)?;
            } else if let Some(inner) = forced_set(&value) {
                // `x = lib.mkForce { a = 1; };`: the priority covers the whole set, and the
                // names inside are edited in place, under it.
                walk(&inner, full, src, path, res)?;
            } else if let Some(parts) = crate::modules::merge_parts(&value) {
                walk_merge(&parts, full, src, path, res)?;
            } else if let Some(kind) = literal_kind(&value) {
                return Err(EditError::Type {
                    op: "reach".into(),
                    path: path.to_string(),
                    pos: Pos::of(src, start(&value)),
                    expected: format!("`{}` to be an attribute set", path.prefix(full)),
                    found: format!("`{}` is {kind}", path.prefix(full)),
                });
            } else {
                return Err(refuse(
                    &value,
                    format!("`{}` is defined by {}", path.prefix(full), describe(&value)),
                ));
            }
        }
    }
    res.containers.push(Container {
        set: set.clone(),
        depth,
        siblings,
    });
    Ok(())
}

/// Walks the parts of `x = lib.mkMerge [ … ];` (`x` being the path's first `depth` names). The
/// module system merges the parts as if each were written on its own, so an attribute set part
/// (plain or under a priority) is edited like any other set. A part under a condition
/// (`mkIf c { … }`) is read only to find out whether it defines the path: if it does, the edit
/// is refused there, as for `mkIf` anywhere (whether it applies depends on evaluation). Any
/// other part (a variable, a function call) may define anything, so the edit is refused.
fn walk_merge(
    parts: &[SyntaxNode],
    depth: usize,
    src: &str,
    path: &AttrPath,
    res: &mut Resolution,
) -> Result<(), EditError> {
    let refuse = |node: &SyntaxNode, reason: String| EditError::Refused {
        path: path.to_string(),
        pos: Pos::of(src, start(node)),
        reason,
    };
    let prefix = path.prefix(depth);
    for part in parts {
        if part.kind() == NODE_ATTR_SET {
            walk(part, depth, src, path, res)?;
            continue;
        }
        if let Some(inner) = forced_set(part) {
            walk(&inner, depth, src, path, res)?;
            continue;
        }
        if let Some(set) = crate::modules::conditional_set(part) {
            let mut scratch = Resolution {
                places: Vec::new(),
                containers: Vec::new(),
                imports: None,
            };
            // A part that cannot be read through is treated as defining the path.
            let defines = walk(&set, depth, src, path, &mut scratch)
                .map_or(true, |()| !scratch.places.is_empty());
            if defines {
                return Err(refuse(
                    part,
                    format!(
                        "`{prefix}` is a `mkMerge` whose part here is under a condition \
                         (`mkIf`), which defines `{path}`: whether it applies depends on \
                         evaluation"
                    ),
                ));
            }
            continue;
        }
        return Err(refuse(
            part,
            format!(
                "`{prefix}` is a `mkMerge` whose part here is {}, which may define `{path}` \
                 without saying so",
                describe(part)
            ),
        ));
    }
    Ok(())
}

/// The attribute set literal inside a priority wrapper (`mkForce { … }`, `mkDefault ({ … })`).
fn forced_set(value: &SyntaxNode) -> Option<SyntaxNode> {
    let mut inner = crate::modules::priority(value)?.inner;
    while inner.kind() == NODE_PAREN {
        inner = inner.children().next()?;
    }
    (inner.kind() == NODE_ATTR_SET).then_some(inner)
}

impl Resolution {
    /// Checks that the places can be treated as one value: a single binding, or several whose
    /// values are all attribute set literals (which Nix merges).
    pub(crate) fn check_unique(&self, src: &str, path: &AttrPath) -> Result<(), EditError> {
        if self.places.len() <= 1 {
            return Ok(());
        }
        let mergeable = self.places.iter().all(|p| {
            p.kind == PlaceKind::Deeper
                || value_of(&p.entry).is_some_and(|v| v.kind() == NODE_ATTR_SET)
        });
        if mergeable {
            Ok(())
        } else {
            Err(EditError::Duplicate {
                path: path.to_string(),
                positions: self
                    .places
                    .iter()
                    .map(|p| Pos::of(src, start(&p.entry)))
                    .collect(),
            })
        }
    }

    /// The single binding that defines exactly the target, if the target has exactly one place.
    pub(crate) fn single_exact(&self) -> Option<&Place> {
        match self.places.as_slice() {
            [p] if p.kind == PlaceKind::Exact => Some(p),
            _ => None,
        }
    }

    /// The deepest container (ties: the one with the most closely related bindings, then the
    /// first in the file).
    pub(crate) fn best_container(&self) -> Option<&Container> {
        let deepest = self.containers.iter().map(|c| c.depth).max()?;
        let score = |c: &Container| c.siblings.iter().map(|s| s.1).max().unwrap_or(0);
        let mut best: Option<&Container> = None;
        for c in self.containers.iter().filter(|c| c.depth == deepest) {
            let better = match best {
                None => true,
                Some(b) => {
                    score(c) > score(b) || (score(c) == score(b) && start(&c.set) < start(&b.set))
                }
            };
            if better {
                best = Some(c);
            }
        }
        best
    }
}
