//! The crate's error type and source-position helpers used in its messages.

use std::fmt;

/// A 1-based line and column (in characters) inside the edited file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    /// 1-based line number.
    pub line: usize,
    /// 1-based column, counted in characters.
    pub col: usize,
}

impl Pos {
    /// Position of byte `offset` in `src` (clamped to the end of `src`).
    pub fn of(src: &str, offset: usize) -> Pos {
        let mut offset = offset.min(src.len());
        while !src.is_char_boundary(offset) {
            offset -= 1;
        }
        let before = &src[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = before[line_start..].chars().count() + 1;
        Pos { line, col }
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

fn join(positions: &[Pos]) -> String {
    positions
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Everything that can go wrong when reading or editing a Nix file. An error never comes with
/// a partially edited file: the caller's source is left as it was.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EditError {
    /// The file (or the edit's input) does not parse as Nix.
    #[error("the file does not parse as Nix at {pos}: {message}; fix the syntax error first")]
    Parse {
        /// Where the first parse error is.
        pos: Pos,
        /// The parser's message.
        message: String,
    },
    /// The attribute path given by the caller is malformed.
    #[error("invalid attribute path {input:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        input: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The value given by the caller cannot be written as Nix.
    #[error("invalid value: {0}")]
    InvalidValue(String),
    /// The target is hidden behind a construct the editor does not see through (`with`, `let`,
    /// a function application such as `mkIf`, `inherit`, a dynamic attribute, ...).
    #[error("refusing to edit `{path}`: {reason} at {pos}; edit this part of the file by hand")]
    Refused {
        /// The attribute path asked for.
        path: String,
        /// Where the obstacle is.
        pos: Pos,
        /// Why the editor will not go on.
        reason: String,
    },
    /// A read met a value the editor cannot see through (the read-side twin of `Refused`).
    #[error("cannot read `{path}`: {reason} at {pos}")]
    Unreadable {
        /// The attribute path asked for.
        path: String,
        /// Where the obstacle is.
        pos: Pos,
        /// Why the value cannot be read.
        reason: String,
    },
    /// The target path is defined in two or more places whose values cannot be merged.
    #[error(
        "refusing to edit `{path}`: it is defined in several places ({}); duplicate definitions \
         are ambiguous, keep one of them by hand",
        join(.positions)
    )]
    Duplicate {
        /// The attribute path asked for.
        path: String,
        /// Every place that defines it.
        positions: Vec<Pos>,
    },
    /// The path does not exist in this file.
    #[error("`{path}` is not defined in this file{hint}")]
    NotFound {
        /// The attribute path asked for.
        path: String,
        /// Extra context (for example that the file imports other modules), with a leading "; ".
        hint: String,
    },
    /// `get` met a value that is not a literal (a variable, a function call, an interpolation).
    #[error("`{path}` is not a literal value at {pos}: {what}; only literals can be read")]
    NonLiteral {
        /// The attribute path asked for.
        path: String,
        /// Where the non-literal expression is.
        pos: Pos,
        /// What was found there.
        what: String,
    },
    /// The value found has the wrong type for the operation (for example appending to a string,
    /// or setting `a.b` where `a` is an integer).
    #[error("cannot {op} `{path}`: {found} at {pos}, expected {expected}")]
    Type {
        /// The operation attempted.
        op: String,
        /// The attribute path asked for.
        path: String,
        /// Where the offending value is.
        pos: Pos,
        /// What the operation needs.
        expected: String,
        /// What was found.
        found: String,
    },
    /// The text (a file, a raw value) nests or chains deeper than the parser's budget allows
    /// (see [`crate::budget`]); nothing was parsed.
    #[error(
        "the Nix text is too deeply nested to parse safely at {pos}: {what}; split the expression \
         or write it with fewer levels"
    )]
    TooComplex {
        /// Where the budget ran out.
        pos: Pos,
        /// Which limit was hit.
        what: String,
    },
    /// The editor produced output that failed its own checks. This is a bug; nothing was written.
    #[error("internal editor error (a bug, nothing was changed): {0}")]
    Internal(String),
}
