//! A long-lived Nix evaluator (`nix repl`) for validation.
//!
//! Starting `nix-instantiate` costs ~15–20 ms before it reads a byte, more than the whole budget
//! of an edit. A `nix repl` started once evaluates each check in a few milliseconds. Every check
//! imports a fresh copy of the file under a new name (Nix caches imports by path, so re-importing
//! the same path would see stale text); the process is restarted every [`MAX_USES`] checks to
//! bound that cache. Any trouble (no `nix` binary, a timeout, an unexpected answer) makes the
//! caller fall back to one `nix-instantiate` per check, so the verdict never depends on the REPL.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Checks per process before it is replaced.
const MAX_USES: u32 = 256;
/// Longest a single check may take.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A running `nix repl`.
pub(crate) struct Repl {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
    scratch: tempfile::TempDir,
    seq: u64,
    uses: u32,
}

/// What the evaluator said about one file.
pub(crate) enum Verdict {
    Valid,
    Invalid(String),
}

impl Drop for Repl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Remove ANSI colour sequences from a line of output.
fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ params... final byte in @..~
            if chars.next() == Some('[') {
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// The REPL echoes each input line after its prompt; only other lines are answers.
const PROMPT: &str = "nix-repl> ";

impl Repl {
    /// Start `nix repl` next to `nix_instantiate` (the same Nix installation).
    pub(crate) fn start(nix_instantiate: &Path) -> Option<Repl> {
        let nix = nix_instantiate.with_file_name("nix");
        if !nix.is_file() {
            return None;
        }
        // One stream: errors must arrive in order with the answers.
        let mut cmd = Command::new("sh");
        // CPU time and memory capped for the process's whole life (inherited across the exec).
        crate::evaluator::Caps::REPL.apply(&mut cmd);
        let mut child = cmd
            .arg("-c")
            .arg("exec \"$0\" --extra-experimental-features nix-command repl 2>&1")
            .arg(&nix)
            .env("NO_COLOR", "1")
            .env("TERM", "dumb")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let stdin = child.stdin.take()?;
        let stdout = child.stdout.take()?;
        let (tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("nix-repl-reader".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if tx.send(clean(&line)).is_err() {
                        break;
                    }
                }
            })
            .ok()?;
        let scratch = tempfile::Builder::new()
            .prefix("osmoda-nix-check")
            .tempdir()
            .ok()?;
        let mut repl = Repl {
            child,
            stdin,
            lines,
            scratch,
            seq: 0,
            uses: 0,
        };
        // Make sure it answers before relying on it.
        match repl.ask("true") {
            Some(Verdict::Valid) => Some(repl),
            _ => None,
        }
    }

    /// Kill the process, as if it had crashed (tests of the fallback).
    #[cfg(test)]
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether this process has served its share of checks.
    pub(crate) fn worn_out(&self) -> bool {
        self.uses >= MAX_USES
    }

    /// Evaluate `check` (a Nix expression); `None` when the REPL misbehaved.
    fn ask(&mut self, check: &str) -> Option<Verdict> {
        self.seq += 1;
        self.uses += 1;
        let (ok, end) = (
            format!("__osmoda_ok_{}", self.seq),
            format!("__osmoda_end_{}", self.seq),
        );
        let request = format!("builtins.seq ({check}) \"{ok}\"\n\"{end}\"\n");
        self.stdin.write_all(request.as_bytes()).ok()?;
        self.stdin.flush().ok()?;
        let mut said = Vec::new();
        let mut valid = false;
        let (ok, end) = (format!("\"{ok}\""), format!("\"{end}\""));
        loop {
            let line = self.lines.recv_timeout(TIMEOUT).ok()?;
            let answer = line.trim();
            if line.starts_with(PROMPT) || line.starts_with("Welcome to Nix") {
                continue;
            } else if answer == end {
                break;
            } else if answer == ok {
                valid = true;
            } else if !answer.is_empty() {
                said.push(line);
            }
        }
        Some(if valid {
            Verdict::Valid
        } else {
            Verdict::Invalid(said.join("\n"))
        })
    }

    /// Evaluate the file `text` (shown as `rel` in messages): strictly, applied to `{}` when it
    /// is a function, for data-only files; only up to its top-level value (what `--parse`
    /// checks: syntax and unbound variables) otherwise.
    pub(crate) fn check(&mut self, rel: &Path, text: &str, strict: bool) -> Option<Verdict> {
        let copy: PathBuf = self
            .scratch
            .path()
            .join(format!("check-{}.nix", self.seq + 1));
        std::fs::write(&copy, text).ok()?;
        let path = copy.to_str()?.to_string();
        if path.contains(|c: char| c.is_whitespace() || c == '"' || c == '\\' || c == '$') {
            return None; // not a plain Nix path literal; let nix-instantiate handle it
        }
        let check = if strict {
            format!(
                "let f = import {path}; in builtins.deepSeq (if builtins.isFunction f then f {{ }} else f) null"
            )
        } else {
            format!("import {path}")
        };
        let verdict = {
            let _slot = crate::evaluator::slot();
            self.ask(&check)
        };
        let _ = std::fs::remove_file(&copy);
        Some(match verdict? {
            Verdict::Invalid(msg) => {
                Verdict::Invalid(msg.replace(&path, &rel.display().to_string()))
            }
            v => v,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colours_and_prompts() {
        assert_eq!(clean("\u{1b}[35;1m\"x\"\u{1b}[0m"), "\"x\"");
        assert_eq!(clean("\u{1b}[31;1merror:\u{1b}[0m boom"), "error: boom");
    }

    #[test]
    fn judges_files_like_nix_instantiate() {
        let Some(ni) = crate::validate::find_nix_instantiate() else {
            println!("skipped: nix-instantiate not installed");
            return;
        };
        let mut repl = Repl::start(&ni).expect("nix repl starts next to nix-instantiate");
        let rel = Path::new("osmoda.nix");
        let good = "{ ... }: { services.osmoda = { enable = true; n = [ 1 2 ]; }; }";
        assert!(matches!(repl.check(rel, good, true), Some(Verdict::Valid)));
        let dup = "{ ... }: { a = 1; a = 2; }";
        match repl.check(rel, dup, true) {
            Some(Verdict::Invalid(msg)) => {
                assert!(
                    msg.contains("already defined") && msg.contains("osmoda.nix"),
                    "{msg}"
                )
            }
            _ => panic!("duplicate attribute accepted"),
        }
        let unbound = "{ ... }: { a = lib.mkForce 1; }";
        assert!(matches!(
            repl.check(rel, unbound, false),
            Some(Verdict::Invalid(_))
        ));
        let module = "{ config, pkgs, ... }: { environment.systemPackages = [ pkgs.htop ]; }";
        assert!(matches!(
            repl.check(rel, module, false),
            Some(Verdict::Valid)
        ));
        // The same path name with new text is not served from Nix's import cache.
        assert!(matches!(repl.check(rel, good, true), Some(Verdict::Valid)));
        assert!(matches!(
            repl.check(rel, "{ ... }: { x = 1 + \"a\"; }", true),
            Some(Verdict::Invalid(_))
        ));
    }
}
