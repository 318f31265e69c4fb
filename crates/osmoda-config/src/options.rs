//! The option schema of `services.osmoda.*`, and a checker for edits made under it.
//!
//! The schema is not written by hand: `schema/render.nix` renders the option declarations of
//! `modules/osmoda.nix`, as the real NixOS module system evaluated them, to
//! `schema/options.json`, which is compiled in here. The test `tests/option_schema.rs` fails
//! when the file is stale: it re-renders it with the real evaluator where nixpkgs' `lib` is
//! available (nixos-eval or `<nixpkgs>`), and everywhere compares its option paths with the
//! ones an rnix walk of the module finds.
//!
//! [`check`] answers, before anything is written, whether `path = value` can be a definition of
//! the module's options: the path names an option (or a set of options, or a place inside an
//! `attrsOf`/submodule value), and the value has the option's type (bool, string, integer with
//! bounds, enum, pattern, list, attribute set, submodule, null, either). It does not know which
//! submodule fields are required (an incremental edit may add them one by one); the module's
//! own evaluation and the daemons' `check-config` judge the whole value.

use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;
use std::collections::BTreeMap;

use serde_json::Value;

/// A set of option nodes by attribute name.
pub type Options = BTreeMap<String, Node>;

/// The rendered schema (see the module docs).
pub const SCHEMA_JSON: &str = include_str!("../schema/options.json");

/// The attribute path every schema path is below.
pub const PREFIX: [&str; 2] = ["services", "osmoda"];

/// A node of the option tree: an option with a type, or a set of further nodes.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "lowercase", deny_unknown_fields)]
pub enum Node {
    /// `mkOption { type = …; }`.
    Option(Type),
    /// An attribute set of options (`watch = { … }`).
    Set(Options),
}

/// An option type as the module system declares it.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum Type {
    /// `types.bool`.
    Bool,
    /// `types.str`.
    Str,
    /// `types.path` (a string naming a path here).
    Path,
    /// `types.package`: only expressible as Nix (`pkgs.NAME`).
    Package,
    /// `types.float`.
    Float,
    /// Any JSON value (`pkgs.formats.json {}.type`).
    Json,
    /// Integers, with inclusive bounds.
    Int {
        /// Smallest allowed value.
        min: Option<i64>,
        /// Largest allowed value.
        max: Option<i64>,
    },
    /// `types.enum [ … ]`.
    Enum {
        /// The allowed values.
        values: Vec<Value>,
    },
    /// `types.strMatching PATTERN` (a POSIX extended regex matching the whole string).
    StrMatching {
        /// The pattern.
        pattern: String,
    },
    /// `types.nullOr T`.
    NullOr {
        /// `T`.
        elem: Box<Type>,
    },
    /// `types.listOf T`.
    ListOf {
        /// `T`.
        elem: Box<Type>,
    },
    /// `types.attrsOf T`.
    AttrsOf {
        /// `T`.
        elem: Box<Type>,
    },
    /// `types.either L R`.
    Either {
        /// `L`.
        left: Box<Type>,
        /// `R`.
        right: Box<Type>,
    },
    /// `types.submodule { options = …; freeformType = …; }`.
    Submodule {
        /// Declared options.
        options: Options,
        /// The free-form type of the other attributes, if any.
        freeform: Option<Box<Type>>,
    },
    /// A type the renderer does not describe; the checker says so instead of guessing.
    Unknown {
        /// The type's `name`.
        name: String,
    },
}

/// Why an edit does not fit the option schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{option}: {problem}")]
pub struct OptionError {
    /// The option path where the problem is, e.g. `services.osmoda.watch.watchers.web.check.type`.
    pub option: String,
    /// What is wrong, e.g. `no such option; did you mean \`watch\`?`.
    pub problem: String,
    /// What is allowed there (option names, a type, enum values).
    pub expected: String,
    /// The closest allowed name or value, if one is close.
    pub did_you_mean: Option<String>,
}

/// The parsed schema, shared.
///
/// # Panics
/// Never in a build whose tests pass: `tests/option_schema.rs` parses the same file.
pub fn schema() -> &'static Options {
    static SCHEMA: OnceLock<Options> = OnceLock::new();
    SCHEMA.get_or_init(|| serde_json::from_str(SCHEMA_JSON).unwrap_or_default())
}

/// True if an edit of `path` concerns osModa's options (`services.osmoda…`, or a prefix of it
/// such as `services` whose value then carries `osmoda`).
pub fn concerns(path: &[&str]) -> bool {
    path.iter().zip(PREFIX).all(|(a, b)| *a == b)
}

/// Checks an edit of `path` (a full attribute path) to `value` (`None`: an unset, or a value
/// given as Nix that cannot be evaluated on its own, so only the path is checked).
///
/// # Errors
/// [`OptionError`] naming the option path, the problem and what is allowed.
pub fn check(path: &[&str], value: Option<&Value>) -> Result<(), OptionError> {
    if !concerns(path) {
        return Ok(());
    }
    if path.len() < PREFIX.len() {
        // `services = { osmoda = …; }` or `services.osmoda`'s parent: check the part inside.
        let mut v = value;
        for key in &PREFIX[path.len()..] {
            v = match v {
                Some(Value::Object(m)) => m.get(*key),
                _ => None,
            };
        }
        return match v {
            Some(inner) => check_set(&PREFIX.join("."), schema(), inner),
            None => Ok(()),
        };
    }
    let mut here = PREFIX.join(".");
    let mut at = Place::Set(schema());
    for seg in &path[PREFIX.len()..] {
        at = step(&here, at, seg)?;
        here = format!("{here}.{}", show_name(seg));
    }
    match (value, at) {
        (None, _) => Ok(()),
        (Some(v), Place::Set(s)) => check_set(&here, s, v),
        (Some(v), Place::Type(t)) => check_value(&here, t, v),
    }
}

/// Checks one list element appended to (or removed from) the list at `path`.
///
/// # Errors
/// [`OptionError`] when the path is not a list option or the element has the wrong type.
pub fn check_element(path: &[&str], element: Option<&Value>) -> Result<(), OptionError> {
    if !concerns(path) {
        return Ok(());
    }
    check(path, None)?;
    let here = path.join(".");
    let mut at = Place::Set(schema());
    let mut shown = PREFIX.join(".");
    for seg in path.iter().skip(PREFIX.len()) {
        at = step(&shown, at, seg)?;
        shown = format!("{shown}.{}", show_name(seg));
    }
    let elem = match at {
        Place::Type(t) => list_elem(t),
        Place::Set(_) => None,
    };
    match (elem, element) {
        (Some(t), Some(v)) => check_value(&format!("{here}.*"), t, v),
        (Some(_), None) => Ok(()),
        (None, _) => Err(OptionError {
            option: here,
            problem: "is not a list, so it has no elements to append or remove".into(),
            expected: match at {
                Place::Type(t) => describe(t),
                Place::Set(_) => "a set of options".into(),
            },
            did_you_mean: None,
        }),
    }
}

fn list_elem(t: &Type) -> Option<&Type> {
    match t {
        Type::ListOf { elem } => Some(elem),
        Type::NullOr { elem } => list_elem(elem),
        Type::Either { left, right } => list_elem(left).or_else(|| list_elem(right)),
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum Place<'a> {
    Set(&'a Options),
    Type(&'a Type),
}

fn set_member<'a>(here: &str, set: &'a Options, seg: &str) -> Result<Place<'a>, OptionError> {
    match set.get(seg) {
        Some(Node::Option(t)) => Ok(Place::Type(t)),
        Some(Node::Set(s)) => Ok(Place::Set(s)),
        None => Err(unknown(here, seg, set)),
    }
}

/// One attribute-path step from `at`.
fn step<'a>(here: &str, at: Place<'a>, seg: &str) -> Result<Place<'a>, OptionError> {
    match at {
        Place::Set(set) => set_member(here, set, seg),
        Place::Type(t) => match t {
            Type::Submodule { options, freeform } => match (options.get(seg), freeform) {
                (Some(_), _) => set_member(here, options, seg),
                (None, Some(f)) => step(here, Place::Type(f), seg),
                (None, None) => Err(unknown(here, seg, options)),
            },
            Type::AttrsOf { elem } => Ok(Place::Type(elem)),
            Type::NullOr { elem } => step(here, Place::Type(elem), seg),
            Type::Either { left, right } => {
                step(here, Place::Type(left), seg).or_else(|_| step(here, Place::Type(right), seg))
            }
            Type::Json | Type::Unknown { .. } => Ok(Place::Type(t)),
            _ => Err(OptionError {
                option: here.to_string(),
                problem: format!(
                    "is {}, so it has no attribute `{}`",
                    describe(t),
                    show_name(seg)
                ),
                expected: describe(t),
                did_you_mean: None,
            }),
        },
    }
}

fn unknown(here: &str, seg: &str, set: &Options) -> OptionError {
    let names: Vec<&str> = set.keys().map(String::as_str).collect();
    let guess = closest(seg, names.iter().copied());
    let mut problem = format!("`{}` is not an option here", show_name(seg));
    // Inside a list element (`….steps.*`) there is no path to set: suggest the name itself.
    let suggestion = match &guess {
        Some(g) if here.split('.').any(|s| s == "*") => Some(g.clone()),
        Some(g) => Some(format!("{here}.{g}")),
        None => None,
    };
    if let Some(s) = &suggestion {
        problem.push_str(&format!("; did you mean `{s}`?"));
    }
    OptionError {
        option: format!("{here}.{}", show_name(seg)),
        problem,
        expected: format!("one of: {}", names.join(", ")),
        did_you_mean: suggestion,
    }
}

/// The closest candidate by edit distance, if it is close enough to be a typo.
fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<String> {
    candidates
        .map(|c| (strsim::damerau_levenshtein(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3) && *d < c.len().max(word.len()))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.to_string())
}

fn show_name(seg: &str) -> String {
    let plain = seg
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && seg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '\''));
    if plain {
        seg.to_string()
    } else {
        format!("{seg:?}")
    }
}

fn check_set(here: &str, set: &Options, v: &Value) -> Result<(), OptionError> {
    let Value::Object(m) = v else {
        return Err(mismatch(here, "an attribute set of options", v));
    };
    for (k, inner) in m {
        let option = format!("{here}.{}", show_name(k));
        match set_member(here, set, k)? {
            Place::Set(s) => check_set(&option, s, inner)?,
            Place::Type(t) => check_value(&option, t, inner)?,
        }
    }
    Ok(())
}

/// Checks a JSON value against a type; `here` names its place.
fn check_value(here: &str, t: &Type, v: &Value) -> Result<(), OptionError> {
    let ok = match (t, v) {
        (Type::Json | Type::Unknown { .. }, _) => true,
        (Type::Bool, Value::Bool(_)) => true,
        (Type::Str | Type::Path, Value::String(_)) => true,
        (Type::Float, Value::Number(_)) => true,
        (Type::Int { min, max }, Value::Number(n)) => match n.as_i64() {
            Some(i) => min.is_none_or(|m| i >= m) && max.is_none_or(|m| i <= m),
            None => false,
        },
        (Type::Enum { values }, _) => {
            if values.contains(v) {
                true
            } else {
                let guess = v
                    .as_str()
                    .and_then(|s| closest(s, values.iter().filter_map(Value::as_str)));
                let mut problem = format!("{} is not allowed; expected {}", shown(v), describe(t));
                if let Some(g) = &guess {
                    problem.push_str(&format!("; did you mean \"{g}\"?"));
                }
                return Err(OptionError {
                    option: here.to_string(),
                    problem,
                    expected: describe(t),
                    did_you_mean: guess,
                });
            }
        }
        (Type::StrMatching { pattern }, Value::String(s)) => full_match(pattern, s),
        (Type::NullOr { .. }, Value::Null) => true,
        (Type::NullOr { elem }, _) => {
            return check_value(here, elem, v).map_err(|e| {
                // A plain mismatch at this place says that null was allowed too.
                if e.option == here && e.problem.starts_with("expected ") {
                    mismatch(here, &describe(t), v)
                } else {
                    e
                }
            });
        }
        (Type::ListOf { elem }, Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                check_value(&format!("{here}.[{i}]"), elem, item)?;
            }
            true
        }
        (Type::AttrsOf { elem }, Value::Object(m)) => {
            for (k, item) in m {
                check_value(&format!("{here}.{}", show_name(k)), elem, item)?;
            }
            true
        }
        (Type::Either { left, right }, _) => {
            if check_value(here, left, v).is_ok() {
                true
            } else {
                return check_value(here, right, v).map_err(|_| mismatch(here, &describe(t), v));
            }
        }
        (Type::Submodule { options, freeform }, Value::Object(m)) => {
            for (k, inner) in m {
                let option = format!("{here}.{}", show_name(k));
                match (options.get(k), freeform) {
                    (Some(_), _) => match set_member(here, options, k)? {
                        Place::Set(s) => check_set(&option, s, inner)?,
                        Place::Type(t) => check_value(&option, t, inner)?,
                    },
                    (None, Some(f)) => match &**f {
                        Type::AttrsOf { elem } => check_value(&option, elem, inner)?,
                        other => check_value(&option, other, inner)?,
                    },
                    (None, None) => return Err(unknown(here, k, options)),
                }
            }
            true
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(mismatch(here, &describe(t), v))
    }
}

fn full_match(pattern: &str, s: &str) -> bool {
    // Nix's `builtins.match` is a POSIX extended regex matching the whole string; for the
    // patterns the module uses, Rust's syntax is the same. A pattern it cannot read is not
    // judged here (the module's evaluation still is).
    match regex_automata::meta::Regex::new(&format!("^(?:{pattern})$")) {
        Ok(re) => re.is_match(s),
        Err(_) => true,
    }
}

fn mismatch(here: &str, expected: &str, v: &Value) -> OptionError {
    OptionError {
        option: here.to_string(),
        problem: format!("expected {expected}, got {}", shown(v)),
        expected: expected.to_string(),
        did_you_mean: None,
    }
}

fn shown(v: &Value) -> String {
    let kind = match v {
        Value::Null => return "null".into(),
        Value::Bool(_) => "the boolean",
        Value::Number(_) => "the number",
        Value::String(_) => "the string",
        Value::Array(_) => return "a list".into(),
        Value::Object(_) => return "an attribute set".into(),
    };
    let mut text = v.to_string();
    if text.len() > 60 {
        text = format!("{}…", text.chars().take(57).collect::<String>());
    }
    format!("{kind} {text}")
}

/// A type in words, as the NixOS manual would say it.
pub fn describe(t: &Type) -> String {
    match t {
        Type::Bool => "a boolean (true or false)".into(),
        Type::Str => "a string".into(),
        Type::Path => "a path (as a string)".into(),
        Type::Package => "a package (give it as Nix, e.g. `pkgs.NAME`)".into(),
        Type::Float => "a number".into(),
        Type::Json => "any JSON value".into(),
        Type::Int { min, max } => match (min, max) {
            (Some(1), None) => "a positive integer (≥ 1)".into(),
            (Some(0), None) => "an unsigned integer (≥ 0)".into(),
            (Some(a), Some(b)) => format!("an integer between {a} and {b}"),
            (Some(a), None) => format!("an integer ≥ {a}"),
            (None, Some(b)) => format!("an integer ≤ {b}"),
            (None, None) => "an integer".into(),
        },
        Type::Enum { values } => format!(
            "one of {}",
            values
                .iter()
                .map(Value::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Type::StrMatching { pattern } => format!("a string matching `{pattern}`"),
        Type::NullOr { elem } => format!("null or {}", describe(elem)),
        Type::ListOf { elem } => format!("a list of {}", plural(elem)),
        Type::AttrsOf { elem } => format!("an attribute set of {}", plural(elem)),
        Type::Either { left, right } => format!("{} or {}", describe(left), describe(right)),
        Type::Submodule { options, .. } => format!(
            "an attribute set with the options {}",
            options.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
        Type::Unknown { name } => format!("a value of type {name}"),
    }
}

fn plural(t: &Type) -> String {
    let d = describe(t);
    d.strip_prefix("a ")
        .or_else(|| d.strip_prefix("an "))
        .map_or(d.clone(), |s| format!("({s})"))
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&describe(self))
    }
}

/// Every option path of the schema, below `services.osmoda`, with `<name>` for an attribute of
/// an `attrsOf` (or a submodule's free-form part) and `*` for a list element — the notation of
/// the rnix walk in the tests, so both can be compared.
pub fn option_paths() -> Vec<String> {
    let mut out = Vec::new();
    walk_set(schema(), &mut Vec::new(), &mut out);
    out.sort();
    out
}

fn walk_set(set: &Options, at: &mut Vec<String>, out: &mut Vec<String>) {
    for (name, node) in set {
        at.push(name.clone());
        match node {
            Node::Option(t) => {
                out.push(at.join("."));
                walk_type(t, at, out);
            }
            Node::Set(s) => walk_set(s, at, out),
        }
        at.pop();
    }
}

fn walk_type(t: &Type, at: &mut Vec<String>, out: &mut Vec<String>) {
    match t {
        Type::Submodule { options, freeform } => {
            walk_set(options, at, out);
            if let Some(f) = freeform {
                walk_type(f, at, out);
            }
        }
        Type::AttrsOf { elem } | Type::ListOf { elem } => {
            at.push(
                if matches!(t, Type::AttrsOf { .. }) {
                    "<name>"
                } else {
                    "*"
                }
                .into(),
            );
            walk_type(elem, at, out);
            at.pop();
        }
        Type::NullOr { elem } => walk_type(elem, at, out),
        _ => {}
    }
}
