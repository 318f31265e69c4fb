//! One recursion and size budget for every Nix text that is parsed: files, raw values and
//! attribute paths are checked here, with the iterative rnix tokenizer, before the recursive
//! parser (or the recursive drop of a deep syntax tree) can see them.
//!
//! rnix 0.15 bounds `parse_expr` at 512 levels, but lists (`[[[…`), negation (`---…`),
//! right-associative operators and long left-associative chains (`1+1+…`, whose tree is one level
//! deeper per operator and is freed recursively by rowan) recurse without a bound. The budget
//! estimates the depth of the tree the parser would build from the tokens alone:
//!
//! * every open bracket (`[`, `(`, `{`, `${`) is one level, at most [`MAX_NESTING`] deep;
//! * inside one bracket, the tokens of one expression (between `;`/`,` separators; in a list,
//!   each element on its own) may each add a level, at most [`MAX_CHAIN`] in all;
//! * `let`, `with` and `assert` are one level each too, from the keyword to the end of their
//!   body (the `;`, `,` or closing bracket of the expression around them): their own `;` does
//!   not end an expression, so `let x = 1; in let …`, `assert true; assert …` and `with {}; with …`
//!   chains count as the nesting they parse into.
//!
//! The estimate never undercounts what the unbounded parser paths build, and real configurations
//! stay far below it (a 1,000-line NixOS configuration nests about 10 deep and its longest
//! expression has a few dozen tokens).

use rnix::SyntaxKind::*;

use crate::error::{EditError, Pos};

/// Deepest bracket nesting accepted (`[`, `(`, `{`, `${`).
pub const MAX_NESTING: usize = 200;
/// Largest depth estimate accepted: brackets plus the tokens of the open expressions.
pub const MAX_CHAIN: usize = 2_000;
/// Most segments in an attribute path (NixOS options have about ten).
pub const MAX_PATH_SEGMENTS: usize = 100;
/// Longest attribute name, in bytes.
pub const MAX_NAME_BYTES: usize = 1_024;
/// Longest run of path characters (`[A-Za-z0-9_.+-]`, no `/`) holding `+`, `.` or `-`: rnix's
/// tokenizer looks ahead over the rest of such a run for every token in it, so a long run costs
/// quadratic time (`1+1+…`, `---…`).
pub const MAX_RUN: usize = 1_024;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Prefix {
    /// `let`'s bindings, up to `in` (each `;` ends one binding).
    Bindings,
    /// `with`'s or `assert`'s expression, up to its `;`.
    Head,
    /// The body, which the next `;`, `,`, `in` or closing bracket around it ends.
    Body,
}

struct Level {
    /// Is this bracket a list (where each element starts a new expression)?
    list: bool,
    /// What a `let`/`with`/`assert` level is in; `None` for a bracket.
    prefix: Option<Prefix>,
    /// Tokens of the current expression at this level.
    chain: usize,
}

/// Checks `src` against the budget without parsing it. Linear in `src`, constant stack.
///
/// # Errors
/// [`EditError::TooComplex`] with the position where the budget ran out.
pub fn check(src: &str) -> Result<(), EditError> {
    check_runs(src)?;
    let mut levels = vec![Level {
        list: false,
        prefix: None,
        chain: 0,
    }];
    // Sum of `chain` over `levels`, kept up to date so each token costs O(1).
    let mut chains = 0usize;
    let mut offset = 0usize;
    for (kind, text) in rnix::tokenize(src) {
        let at = offset;
        offset += text.len();
        if matches!(
            kind,
            TOKEN_WHITESPACE | TOKEN_COMMENT | TOKEN_STRING_CONTENT
        ) {
            continue;
        }
        if matches!(
            kind,
            TOKEN_SEMICOLON
                | TOKEN_COMMA
                | TOKEN_IN
                | TOKEN_R_BRACK
                | TOKEN_R_PAREN
                | TOKEN_R_BRACE
                | TOKEN_INTERPOL_END
        ) {
            // These end every `let`/`with`/`assert` body open at this point.
            while levels.len() > 1
                && levels
                    .last()
                    .is_some_and(|l| l.prefix == Some(Prefix::Body))
            {
                if let Some(l) = levels.pop() {
                    chains -= l.chain;
                }
            }
        }
        match kind {
            TOKEN_LET | TOKEN_WITH | TOKEN_ASSERT => {
                bump(&mut levels, &mut chains);
                levels.push(Level {
                    list: false,
                    prefix: Some(if kind == TOKEN_LET {
                        Prefix::Bindings
                    } else {
                        Prefix::Head
                    }),
                    chain: 0,
                });
                if levels.len() > MAX_NESTING {
                    return Err(too_complex(
                        src,
                        at,
                        format!("`let`, `with`, `assert` and brackets nest more than {MAX_NESTING} levels deep"),
                    ));
                }
            }
            TOKEN_IN
                if levels
                    .last()
                    .is_some_and(|l| l.prefix == Some(Prefix::Bindings)) =>
            {
                if let Some(l) = levels.last_mut() {
                    chains -= l.chain;
                    l.chain = 0;
                    l.prefix = Some(Prefix::Body);
                }
            }
            TOKEN_SEMICOLON
                if levels
                    .last()
                    .is_some_and(|l| l.prefix == Some(Prefix::Head)) =>
            {
                // `with e;` and `assert e;` end their head here.
                if let Some(l) = levels.last_mut() {
                    chains -= l.chain;
                    l.chain = 0;
                    l.prefix = Some(Prefix::Body);
                }
            }
            TOKEN_L_BRACK | TOKEN_L_PAREN | TOKEN_L_BRACE | TOKEN_INTERPOL_START => {
                levels.push(Level {
                    list: kind == TOKEN_L_BRACK,
                    prefix: None,
                    chain: 0,
                });
                if levels.len() > MAX_NESTING {
                    return Err(too_complex(
                        src,
                        at,
                        format!("brackets nest more than {MAX_NESTING} levels deep"),
                    ));
                }
            }
            TOKEN_R_BRACK | TOKEN_R_PAREN | TOKEN_R_BRACE | TOKEN_INTERPOL_END => {
                if levels.len() > 1 {
                    if let Some(l) = levels.pop() {
                        chains -= l.chain;
                    }
                }
                // The closed bracket is one operand of the enclosing expression.
                bump(&mut levels, &mut chains);
            }
            TOKEN_SEMICOLON | TOKEN_COMMA => {
                if let Some(l) = levels.last_mut() {
                    chains -= l.chain;
                    l.chain = 0;
                }
            }
            _ => bump(&mut levels, &mut chains),
        }
        if levels.len() + chains > MAX_CHAIN {
            return Err(too_complex(
                src,
                at,
                format!("an expression here nests or chains more than {MAX_CHAIN} levels deep"),
            ));
        }
    }
    Ok(())
}

/// Refuses runs that would make rnix's tokenizer quadratic (see [`MAX_RUN`]). One pass.
fn check_runs(src: &str) -> Result<(), EditError> {
    let (mut run, mut splits, mut begin) = (0usize, false, 0usize);
    for (i, b) in src.bytes().enumerate() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'+' | b'-') {
            if run == 0 {
                begin = i;
                splits = false;
            }
            run += 1;
            splits |= matches!(b, b'.' | b'+' | b'-');
            if run > MAX_RUN && splits {
                return Err(too_complex(
                    src,
                    begin,
                    format!(
                        "more than {MAX_RUN} letters, digits and `._+-` in a row without a space"
                    ),
                ));
            }
        } else {
            run = 0;
        }
    }
    Ok(())
}

/// Counts one token in the innermost open expression (a list element resets it).
fn bump(levels: &mut [Level], chains: &mut usize) {
    if let Some(l) = levels.last_mut() {
        if l.list {
            // `[ a b c ]` is three elements side by side, not a chain.
            *chains -= l.chain;
            l.chain = 1;
            *chains += 1;
        } else {
            l.chain += 1;
            *chains += 1;
        }
    }
}

fn too_complex(src: &str, at: usize, what: String) -> EditError {
    EditError::TooComplex {
        pos: Pos::of(src, at),
        what,
    }
}

/// Checks an attribute path's size: at most [`MAX_PATH_SEGMENTS`] names of at most
/// [`MAX_NAME_BYTES`] bytes each.
pub(crate) fn check_path(segments: usize, longest: usize) -> Result<(), String> {
    if segments > MAX_PATH_SEGMENTS {
        return Err(format!(
            "{segments} attribute names; at most {MAX_PATH_SEGMENTS} are accepted"
        ));
    }
    if longest > MAX_NAME_BYTES {
        return Err(format!(
            "an attribute name of {longest} bytes; at most {MAX_NAME_BYTES} are accepted"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_shapes_pass() {
        let list: String = (0..5_000).map(|i| format!(" p{i}")).collect();
        for ok in [
            "{ a = 1; }".to_string(),
            format!("{{ environment.systemPackages = with pkgs; [{list} ]; }}"),
            format!("{{ a = {}1; }}", "1 + ".repeat(400)),
            "{ x = \"[[[[[[[[[[[[\"; }".repeat(300),
            format!(
                "{}{}",
                "[".repeat(MAX_NESTING - 1),
                "]".repeat(MAX_NESTING - 1)
            ),
            // Many `let`/`with`/`assert` side by side close one by one: bindings, list elements
            // and attributes of a real configuration.
            format!(
                "{{ {} }}",
                "a = let x = 1; y = with x; [ x ]; in assert y != [ ]; y; ".repeat(5_000)
            ),
            format!("[ {} ]", "(with pkgs; hello) ".repeat(5_000)),
            format!("{}1", "let x = 1; in ".repeat(MAX_NESTING - 2)),
            "{ pkgs, ... }: let a = with pkgs; [ hello ]; b = let c = 1; in c; in { x = a; y = b; }"
                .to_string(),
        ] {
            assert_eq!(check(&ok), Ok(()), "{}", &ok[..ok.len().min(60)]);
        }
    }

    #[test]
    fn deep_inputs_are_refused() {
        for bad in [
            "[".repeat(12_000),
            "-".repeat(100_000),
            format!("{}1", "1+".repeat(100_000)),
            "(".repeat(50_000),
            "{a=".repeat(30_000),
            "!".repeat(10_000),
            format!("{}1", "a ++ ".repeat(5_000)),
            format!("f{}", " x".repeat(5_000)),
            "\"${".repeat(5_000),
            format!("[ ({}1) ]", "-".repeat(5_000)),
            // The review's chains (issue 11, finding 9): each keyword is one level of nesting.
            format!("{}1", "let x = 1; in ".repeat(60_000)),
            format!("{}1", "assert true; ".repeat(60_000)),
            format!("{}1", "with {}; ".repeat(80_000)),
            format!("{}1", "let x = 1; in ".repeat(MAX_NESTING)),
            format!("{}1", "assert true; with {}; ".repeat(MAX_NESTING / 2)),
            format!(
                "{{ a = {}1; }}",
                "let b = [ ]; in with b; ".repeat(MAX_NESTING / 2)
            ),
        ] {
            assert!(
                matches!(check(&bad), Err(EditError::TooComplex { .. })),
                "{} accepted",
                &bad[..20]
            );
        }
    }
}
