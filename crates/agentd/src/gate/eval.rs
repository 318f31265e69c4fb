//! Evaluating a tree state with the real Nix evaluator (`extract.nix`): every module reachable
//! from the roots, values under the protected roots only, merged across modules by priority.
//!
//! The evaluator runs with `restrict-eval` on a private copy of the files, so a configuration
//! cannot make agentd read anything outside it. nixpkgs' `lib` is used where `<nixpkgs>`
//! resolves, a minimal `lib` with the same module wrappers elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::merge;

const EXTRACT: &str = include_str!("extract.nix");

/// The option subtrees the rules read; nothing else is evaluated.
pub const PROTECTED: &[&[&str]] = &[
    &["services"],
    &["systemd", "services"],
    &["systemd", "sockets"],
    &["systemd", "units"],
    &["systemd", "targets"],
    &["systemd", "timers"],
    &["systemd", "paths"],
    &["users"],
    &["networking"],
    &["systemd", "network"],
    &["boot"],
    &["fileSystems"],
    &["systemd", "mounts"],
    &["systemd", "automounts"],
    &["security", "sudo"],
    &["security", "pam", "services"],
    &["security", "pam", "loginLimits"],
    &["security", "wrappers"],
    &["environment", "systemPackages"],
    &["environment", "etc"],
    // The old name of `systemd.services` (see [`super::aliases`]).
    &["jobs"],
    // Code the configuration runs as root (or as each user), what `pkgs.X` is, and second
    // systems: see [`CODE`].
    &["system", "activationScripts"],
    &["system", "userActivationScripts"],
    &["systemd", "tmpfiles"],
    &["systemd", "user"],
    &["powerManagement"],
    &["environment", "shellInit"],
    &["environment", "loginShellInit"],
    &["environment", "interactiveShellInit"],
    &["programs", "bash"],
    &["programs", "zsh"],
    &["nixpkgs"],
    &["_module", "args"],
    &["specialisation"],
];

/// Option subtrees holding code (or what decides which code runs) whose value the gate may not
/// be able to read (a function, a string naming packages): such a value is bound to the text of
/// the module that defines it ([`Evaluated::opaque`]).
pub const CODE: &[&[&str]] = &[
    &["systemd", "services"],
    &["systemd", "sockets"],
    &["systemd", "user"],
    &["systemd", "tmpfiles"],
    &["system", "activationScripts"],
    &["system", "userActivationScripts"],
    &["powerManagement"],
    &["networking", "localCommands"],
    &["environment", "shellInit"],
    &["environment", "loginShellInit"],
    &["environment", "interactiveShellInit"],
    &["programs", "bash", "shellInit"],
    &["programs", "bash", "loginShellInit"],
    &["programs", "bash", "interactiveShellInit"],
    &["programs", "zsh", "shellInit"],
    &["programs", "zsh", "loginShellInit"],
    &["programs", "zsh", "interactiveShellInit"],
    &["services", "cron", "systemCronJobs"],
    &["services", "udev", "extraRules"],
    &["nixpkgs", "overlays"],
    &["nixpkgs", "pkgs"],
    &["nixpkgs", "config", "packageOverrides"],
    &["_module", "args"],
    &["specialisation"],
];

/// Longest a single evaluator run may take (wall clock; the CPU cap below usually ends it first).
const TIMEOUT: Duration = Duration::from_secs(20);
/// CPU seconds one evaluator run may use (`RLIMIT_CPU`); the value it was forcing when it hit
/// the cap is then skipped as undecidable ("too slow to judge") and remembered for its file.
const CPU_SECS: u64 = 6;
/// Address space of one evaluator run (`RLIMIT_AS`): a value that needs more fails (undecidable).
const MEMORY: u64 = 2 << 30;
/// Evaluator runs at once, over every tree and request (a judgement runs two).
const CONCURRENT: usize = 2;
/// Longest one tree state may take to evaluate, reruns included; past it the state is "too
/// slow to judge" ([`EvalError::TooSlow`]).
const BUDGET: Duration = Duration::from_secs(45);
/// Slow values remembered (by file content and value), so a tree with one is not slow again.
const MAX_SLOW: usize = 1024;
/// Reruns allowed after errors `tryEval` cannot catch (each one skips the failing value).
const MAX_RERUNS: usize = 24;
/// Identifiers offered to stubs; beyond this, a file's other names read as undecidable.
const MAX_IDENTS: usize = 20_000;

/// A tree state: its files (text) by path relative to the tree.
pub type Files = BTreeMap<PathBuf, String>;

/// The evaluated protected values of one tree state.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated {
    /// Merged values under [`PROTECTED`], with `{"__osmoda": "undecidable"}` where a value
    /// could not be decided and `{"__osmoda": "pkg", "name"}` for packages.
    pub tree: Value,
    /// Modules that could not be evaluated at all (their values are unknown).
    pub failed: Vec<String>,
    /// `disabledModules` entries the gate cannot apply (modules outside the tree, strings
    /// naming NixOS modules, undecidable values), sorted: a change of them cannot be judged.
    /// Entries naming a module of the tree are applied (the module and what only it imports are
    /// left out).
    pub disabled_elsewhere: Vec<Value>,
    /// `imports` entries the gate cannot read, as `(module, entry)`: paths outside the tree (or
    /// missing), strings, and `{"__osmoda": "undecidable"}` for an entry (or a whole list) whose
    /// value cannot be decided. Modules are named by file, inline ones as
    /// `file.nix#imports.N` (see [`module_file`]).
    pub foreign_imports: Vec<(String, Value)>,
    /// Collections NixOS's own modules define too that a module replaces (see
    /// [`super::forced`]).
    pub forced: super::forced::Forced,
    /// Values under [`CODE`] the gate cannot read (functions, undecidable values), as `(option
    /// path, file of the module defining it)`: such a value is bound to that file's text.
    pub opaque: BTreeSet<(Vec<String>, String)>,
    /// Files of the tree read with `readFile`, as `(file read, file of the module whose
    /// evaluation read it)`.
    pub reads: BTreeSet<(String, String)>,
    /// Files of modules with a protected value the gate cannot decide.
    pub undecided: BTreeSet<String>,
}

/// The file a module key names: inline modules are keyed `file.nix#imports.N[#imports.M…]`.
pub fn module_file(key: &str) -> &str {
    key.split_once('#').map_or(key, |(f, _)| f)
}

/// Why a tree state could not be evaluated.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// `nix-instantiate` is not installed.
    #[error("nix-instantiate is not installed; the approval gate needs the Nix evaluator")]
    NoNix,
    /// The evaluator failed in a way that skipping values does not fix.
    #[error("the Nix evaluator failed: {0}")]
    Failed(String),
    /// The tree state took longer than the gate's budget to evaluate, even with the slow values
    /// skipped.
    #[error("the configuration is too slow to judge: evaluating it took longer than the gate's budget (last value: {0})")]
    TooSlow(String),
    /// Writing the private copy failed.
    #[error("cannot prepare the evaluation: {0}")]
    Io(#[from] std::io::Error),
}

/// At most [`CONCURRENT`] evaluator processes at once: a permit, released on drop.
struct Permit;

static RUNNING: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

impl Permit {
    fn take() -> Permit {
        let (m, cv) = &RUNNING;
        let mut n = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *n >= CONCURRENT {
            n = cv
                .wait(n)
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *n += 1;
        Permit
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let (m, cv) = &RUNNING;
        let mut n = m.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *n -= 1;
        cv.notify_one();
    }
}

/// Values that hit the CPU cap, as `sha256(file text) + " " + key`.
static SLOW: std::sync::Mutex<BTreeSet<String>> = std::sync::Mutex::new(BTreeSet::new());

fn slow_id(files: &Files, key: &str) -> Option<String> {
    // The key is `[world, file, path...]`.
    let k: Vec<String> = serde_json::from_str(key).ok()?;
    let text = files.get(Path::new(module_file(k.get(1)?)))?;
    Some(format!(
        "{} {key}",
        hex::encode(<sha2::Sha256 as sha2::Digest>::digest(text))
    ))
}

/// The remembered slow values of `files`, as skip keys.
fn known_slow(files: &Files) -> Vec<String> {
    let slow = SLOW
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let digests: BTreeSet<String> = files
        .values()
        .map(|t| hex::encode(<sha2::Sha256 as sha2::Digest>::digest(t)))
        .collect();
    slow.iter()
        .filter_map(|s| s.split_once(' '))
        .filter(|(d, _)| digests.contains(*d))
        .map(|(_, k)| k.to_string())
        .collect()
}

fn remember_slow(files: &Files, key: &str) {
    if let Some(id) = slow_id(files, key) {
        let mut slow = SLOW
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if slow.len() >= MAX_SLOW {
            slow.clear();
        }
        slow.insert(id);
    }
}

fn nix_instantiate() -> Option<&'static PathBuf> {
    static NIX: OnceLock<Option<PathBuf>> = OnceLock::new();
    NIX.get_or_init(osmoda_generations::validate::find_nix_instantiate)
        .as_ref()
}

/// Where `<nixpkgs>` resolves for agentd's environment, if anywhere.
fn nixpkgs() -> Option<&'static PathBuf> {
    static NIXPKGS: OnceLock<Option<PathBuf>> = OnceLock::new();
    NIXPKGS
        .get_or_init(|| {
            let out = Command::new(nix_instantiate()?)
                .args(["--find-file", "nixpkgs/lib"])
                .stderr(Stdio::null())
                .output()
                .ok()?;
            let lib = PathBuf::from(String::from_utf8(out.stdout).ok()?.trim());
            (out.status.success() && lib.join("default.nix").exists())
                .then(|| lib.parent().map(Path::to_path_buf))
                .flatten()
        })
        .as_ref()
}

/// A random word for this process that the gate's package stubs carry: a module cannot forge a
/// stub (or tell one by its store path) without reading it, and it cannot read it.
fn nonce() -> &'static str {
    static NONCE: OnceLock<String> = OnceLock::new();
    NONCE.get_or_init(|| {
        let mut b = [0u8; 16];
        // Without randomness the stubs are merely guessable, which only weakens forging checks.
        let _ = getrandom::fill(&mut b);
        hex::encode(b)
    })
}

/// Every identifier-like word of the files: the names stubs must answer to.
fn identifiers(files: &Files) -> Vec<String> {
    let mut out = BTreeSet::new();
    for text in files.values() {
        let mut word = String::new();
        for c in text.chars().chain(std::iter::once(' ')) {
            let part = c.is_ascii_alphanumeric() || matches!(c, '_' | '\'' | '-');
            if part && !(word.is_empty() && (c.is_ascii_digit() || c == '\'' || c == '-')) {
                word.push(c);
            } else if !word.is_empty() {
                out.insert(std::mem::take(&mut word));
            }
        }
    }
    out.into_iter().take(MAX_IDENTS).collect()
}

/// Evaluate `files` starting from `roots` (each must be one of the files).
///
/// # Errors
/// [`EvalError::NoNix`] without `nix-instantiate`; [`EvalError::Failed`] when the evaluator
/// fails even after skipping the values it names.
pub fn evaluate(files: &Files, roots: &[PathBuf]) -> Result<Evaluated, EvalError> {
    let nix = nix_instantiate().ok_or(EvalError::NoNix)?;
    let dir = tempfile::Builder::new().prefix("osmoda-gate").tempdir()?;
    let root = dir.path().join("tree");
    // The tree as the evaluator imports it, and as `readFile` reads it (the bytes unchanged).
    let raw = dir.path().join("raw");
    for (rel, text) in files {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap_or(&root))?;
        std::fs::write(p, super::guard::attr_tests(text, nonce()))?;
        let r = raw.join(rel);
        std::fs::create_dir_all(r.parent().unwrap_or(&raw))?;
        std::fs::write(r, text)?;
    }
    let names: Vec<String> = files
        .keys()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    std::fs::write(dir.path().join("extract.nix"), EXTRACT)?;
    let roots: Vec<String> = roots
        .iter()
        .filter(|r| files.contains_key(*r))
        .map(|r| r.to_string_lossy().into_owned())
        .collect();
    let mut skip: Vec<String> = known_slow(files);
    let start = Instant::now();
    let mut last = String::from("none");
    for _ in 0..=MAX_RERUNS {
        if start.elapsed() > BUDGET {
            return Err(EvalError::TooSlow(last));
        }
        let args = json!({
            "roots": roots, "idents": identifiers(files), "skip": skip,
            "protected": PROTECTED, "nixpkgs": nixpkgs().is_some(), "nonce": nonce(),
            "files": names,
        });
        std::fs::write(dir.path().join("args.json"), args.to_string())?;
        let (result, stderr) = match run(nix, dir.path())? {
            Run::Done(out, stderr) => {
                let mut e = assemble(&out, &roots);
                with_contents(&mut e.tree, files);
                e.reads = reads(&stderr);
                return Ok(e);
            }
            Run::Failed(stderr) => (None, stderr),
            Run::Slow(stderr) => (Some(()), stderr),
        };
        let failing = stderr
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("trace: osmoda-gate:"))
            .map(str::to_string);
        match failing {
            Some(k) if !skip.contains(&k) => {
                if result.is_some() {
                    remember_slow(files, &k);
                }
                last = k.clone();
                skip.push(k);
            }
            _ if result.is_some() => return Err(EvalError::TooSlow(last)),
            _ => return Err(EvalError::Failed(last_error(&stderr))),
        }
    }
    Err(EvalError::Failed(format!(
        "more than {MAX_RERUNS} values could not be evaluated"
    )))
}

/// A path of the tree stands for its file: each `{"__osmoda": "path"}` naming a file of `files`
/// gets its content's SHA-256 (`sha256`), so rewriting the file is a change of the value, and a
/// small file's lines (`lines`, up to [`LINES_UP_TO`] bytes; rules read key files by line).
fn with_contents(v: &mut Value, files: &Files) {
    match v {
        Value::Object(m) if m.get("__osmoda").and_then(Value::as_str) == Some("path") => {
            let text = m
                .get("path")
                .and_then(Value::as_str)
                .and_then(|p| files.get(Path::new(p)));
            if let Some(t) = text {
                let d = <sha2::Sha256 as sha2::Digest>::digest(t);
                m.insert("sha256".into(), Value::String(hex::encode(d)));
                if t.len() <= LINES_UP_TO {
                    let lines = t.lines().map(str::trim).filter(|l| !l.is_empty());
                    m.insert("lines".into(), lines.map(Value::from).collect());
                }
            }
        }
        Value::Object(m) => m.values_mut().for_each(|x| with_contents(x, files)),
        Value::Array(a) => a.iter_mut().for_each(|x| with_contents(x, files)),
        _ => {}
    }
}

/// Largest file whose lines a path value carries.
const LINES_UP_TO: usize = 16 << 10;

/// How one evaluator run ended.
enum Run {
    /// The JSON it printed, and its stderr (the values announced, the files read).
    Done(Value, String),
    /// Nix reported an error (its stderr).
    Failed(String),
    /// It hit the CPU, memory-time or wall-clock cap (its stderr so far).
    Slow(String),
}

fn last_error(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| !l.starts_with("trace: "))
        .take(4)
        .collect::<Vec<_>>()
        .join(" ")
}

/// One evaluator run, capped: [`CPU_SECS`] of CPU, [`MEMORY`] of address space, no core file,
/// [`TIMEOUT`] of wall clock, and at most [`CONCURRENT`] runs at once.
fn run(nix: &Path, dir: &Path) -> Result<Run, EvalError> {
    // The caps are set by `sh`'s `ulimit` before it execs the evaluator (no `unsafe` pre-exec
    // hook); `-t` is CPU seconds, `-v` KiB of address space, `-c` core file blocks.
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!(
            "ulimit -t {CPU_SECS} && ulimit -v {} && ulimit -c 0 && exec \"$0\" \"$@\"",
            MEMORY / 1024
        ))
        .arg(nix)
        .args(["--eval", "--strict", "--json", "--readonly-mode"])
        .args(["--option", "restrict-eval", "true"])
        .args(["--option", "allowed-uris", ""])
        .arg("-I")
        .arg(format!("osmoda-gate={}", dir.display()));
    if let Some(p) = nixpkgs() {
        cmd.arg("-I").arg(format!("nixpkgs={}", p.display()));
    }
    cmd.arg(dir.join("extract.nix"))
        .arg("--arg")
        .arg("root")
        .arg(dir.join("tree"))
        .arg("--arg")
        .arg("args")
        .arg(dir.join("args.json"))
        .env_remove("NIX_PATH")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let _permit = Permit::take();
    let mut child = cmd.spawn()?;
    let (mut so, mut se) = (child.stdout.take(), child.stderr.take());
    let out_reader = std::thread::spawn(move || {
        let mut s = String::new();
        so.as_mut().map(|o| o.read_to_string(&mut s));
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        se.as_mut().map(|e| e.read_to_string(&mut s));
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break Some(s);
        }
        if start.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    use std::os::unix::process::ExitStatusExt;
    let capped = |s: &std::process::ExitStatus| {
        use nix::sys::signal::Signal;
        s.signal()
            .is_some_and(|n| n == Signal::SIGXCPU as i32 || n == Signal::SIGKILL as i32)
    };
    match status {
        None => Ok(Run::Slow(stderr)),
        Some(s) if capped(&s) => Ok(Run::Slow(stderr)),
        Some(s) if !s.success() => Ok(Run::Failed(stderr)),
        Some(_) => serde_json::from_str(&stdout)
            .map(|v| Run::Done(v, stderr))
            .map_err(|e| EvalError::Failed(format!("unreadable evaluator output: {e}"))),
    }
}

/// The files of the tree read with `readFile`, each with the module whose value was being
/// evaluated when it was read (the last value announced before it; keys are `[world, module,
/// path…]`).
fn reads(stderr: &str) -> BTreeSet<(String, String)> {
    let mut module = String::new();
    let mut out = BTreeSet::new();
    for l in stderr.lines() {
        if let Some(k) = l.strip_prefix("trace: osmoda-gate:") {
            if let Ok(k) = serde_json::from_str::<Vec<String>>(k) {
                if let Some(m) = k.get(1) {
                    module = module_file(m).to_string();
                }
            }
        } else if let Some(f) = l.strip_prefix("trace: osmoda-gate-read:") {
            out.insert((f.to_string(), module.clone()));
        }
    }
    out
}

/// Option paths (wrappers left out) of the values under `v` that the gate cannot read: functions
/// and undecidable values, and conditions that cannot be decided.
fn opaque_paths(v: &Value, path: &mut Vec<String>, out: &mut BTreeSet<Vec<String>>) {
    match v.get("__osmoda").and_then(Value::as_str) {
        Some("undecidable" | "function") => {
            out.insert(path.clone());
        }
        Some("override") => opaque_paths(&v["content"], path, out),
        Some("if") => {
            if !v["condition"].is_boolean() {
                out.insert(path.clone());
            }
            opaque_paths(&v["content"], path, out);
        }
        Some("merge") => v["contents"]
            .as_array()
            .into_iter()
            .flatten()
            .for_each(|c| opaque_paths(c, path, out)),
        Some(_) => {}
        None => match v {
            Value::Object(m) => {
                for (k, x) in m {
                    path.push(k.clone());
                    opaque_paths(x, path, out);
                    path.pop();
                }
            }
            Value::Array(a) => a.iter().for_each(|x| opaque_paths(x, path, out)),
            _ => {}
        },
    }
}

/// The opaque values of one module under [`CODE`] (or above it: a whole `systemd` that cannot be
/// decided holds every unit), as `(path, file)`.
fn opaque_code(module: &Value, file: &str, out: &mut BTreeSet<(Vec<String>, String)>) {
    let mut all = BTreeSet::new();
    opaque_paths(module, &mut Vec::new(), &mut all);
    for p in all {
        let under = |c: &&[&str]| {
            let n = c.len().min(p.len());
            c[..n].iter().zip(&p[..n]).all(|(a, b)| *a == b.as_str())
        };
        if CODE.iter().any(|c| under(&c)) {
            out.insert((p, file.to_string()));
        }
    }
}

/// The modules `disabledModules` turns off, as tree files, and the entries that name anything
/// else.
fn disabled_modules(out: &[Value]) -> (BTreeSet<String>, Vec<Value>) {
    let (mut files, mut other) = (BTreeSet::new(), Vec::new());
    for m in out.iter().filter(|m| m["ok"] == Value::Bool(true)) {
        let bare = if m["bare"]["ok"] == Value::Bool(true) {
            &m["bare"]["disabled"]
        } else {
            &Value::Null
        };
        match agree(&m["disabled"], bare) {
            Value::Array(items) => {
                for d in items {
                    match d["path"].as_str() {
                        Some(p) if d["__osmoda"] == "path" && !p.starts_with('/') => {
                            files.insert(p.to_string());
                            files.insert(format!("{p}/default.nix"));
                        }
                        _ => other.push(d),
                    }
                }
            }
            v => other.push(v),
        }
    }
    other.sort_by_key(Value::to_string);
    other.dedup();
    (files, other)
}

/// Put each module's values at their paths and merge the modules by priority. Each value is
/// the agreement of its two worlds (see [`agree`]). Only modules reachable from `roots` without
/// passing a disabled module count, as in the module system.
fn assemble(out: &Value, roots: &[String]) -> Evaluated {
    let all: Vec<Value> = out.as_array().cloned().unwrap_or_default();
    let (off, disabled_elsewhere) = disabled_modules(&all);
    let by_file: BTreeMap<&str, &Value> = all
        .iter()
        .map(|m| (m["file"].as_str().unwrap_or_default(), m))
        .collect();
    let mut kept = BTreeSet::new();
    let mut todo: Vec<&str> = roots.iter().map(String::as_str).collect();
    while let Some(f) = todo.pop() {
        if off.contains(f) || !kept.insert(f) {
            continue;
        }
        if let Some(m) = by_file.get(f) {
            todo.extend(
                m["imports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str),
            );
        }
    }
    let mut modules = Vec::new();
    let mut failed = Vec::new();
    let mut foreign_imports = Vec::new();
    let mut opaque = BTreeSet::new();
    let mut undecided = BTreeSet::new();
    for m in all
        .iter()
        .filter(|m| kept.contains(m["file"].as_str().unwrap_or_default()))
    {
        let file = m["file"].as_str().unwrap_or_default().to_string();
        if m["ok"] != Value::Bool(true) {
            failed.push(file);
            continue;
        }
        // Both worlds' unreadable entries: the bare world names an import list chosen by a
        // stand-in (the worlds disagree on it) as undecidable.
        let mut seen: Vec<&Value> = Vec::new();
        for e in [&m["foreign"], &m["bare"]["foreign"]]
            .into_iter()
            .filter_map(Value::as_array)
            .flatten()
        {
            if !seen.contains(&e) {
                seen.push(e);
                foreign_imports.push((file.clone(), e.clone()));
            }
        }
        let bare_ok = m["bare"]["ok"] == Value::Bool(true);
        let bare = m["bare"]["roots"].as_array();
        let mut tree = Value::Object(Map::new());
        for (i, r) in m["roots"].as_array().into_iter().flatten().enumerate() {
            let b = bare.and_then(|b| b.get(i)).filter(|_| bare_ok);
            let (path, value) = match b {
                Some(b) if b["path"] == r["path"] => (&r["path"], agree(&r["value"], &b["value"])),
                Some(b) if r["value"].is_null() && b["value"].is_null() => continue,
                // The worlds disagree on where the value is, or the bare world failed.
                _ if r["value"].is_null() => match b {
                    Some(b) => (&b["path"], merge::undecidable()),
                    None => continue,
                },
                _ => (&r["path"], agree(&r["value"], &merge::undecidable())),
            };
            if value.is_null() {
                continue;
            }
            let path: Vec<&str> = path
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            insert(&mut tree, &path, value);
        }
        let renamed = super::aliases::split(&mut tree);
        let f = module_file(&file).to_string();
        for t in std::iter::once(&tree).chain(&renamed) {
            opaque_code(t, &f, &mut opaque);
            if t.to_string().contains(r#""__osmoda":"undecidable""#) {
                undecided.insert(f.clone());
            }
        }
        modules.push(tree);
        modules.extend(renamed);
    }
    foreign_imports.sort_by_key(|(f, e)| (f.clone(), e.to_string()));
    Evaluated {
        forced: super::forced::forced(&modules),
        tree: merge::merge_modules(&modules),
        failed,
        disabled_elsewhere,
        foreign_imports,
        opaque,
        reads: BTreeSet::new(),
        undecided,
    }
}

/// The value of `a` (stand-in world) where `b` (bare world) agrees, undecidable where not. A
/// package is taken from the stand-in world: naming one is all the bare world cannot do.
fn agree(a: &Value, b: &Value) -> Value {
    let marker = |v: &Value| {
        v.get("__osmoda")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    if marker(a).as_deref() == Some("pkg") || merge::is_undecidable(a) {
        return a.clone();
    }
    match (a, b) {
        (Value::Object(x), Value::Object(y)) if marker(a) == marker(b) => {
            if x.len() != y.len() || x.keys().any(|k| !y.contains_key(k)) {
                return merge::undecidable();
            }
            Value::Object(
                x.iter()
                    .map(|(k, v)| (k.clone(), agree(v, &y[k])))
                    .collect(),
            )
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            Value::Array(x.iter().zip(y).map(|(v, w)| agree(v, w)).collect())
        }
        _ if a == b => a.clone(),
        _ => merge::undecidable(),
    }
}

fn insert(tree: &mut Value, path: &[&str], value: Value) {
    let Some((first, rest)) = path.split_first() else {
        *tree = value;
        return;
    };
    if !tree.is_object() {
        *tree = Value::Object(Map::new());
    }
    if let Value::Object(m) = tree {
        let slot = m
            .entry(first.to_string())
            .or_insert(Value::Object(Map::new()));
        insert(slot, rest, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRICKY: &str = r#"{ config, lib, pkgs, inputs, ... }:
let off = !true; in {
  imports = [ ./other.nix ./missing.nix <nixpkgs/nixos/modules/profiles/minimal.nix> ];
  services.openssh.enable = lib.mkForce off;
  services.nginx = lib.mkIf config.services.foo.enable { enable = true; };
  services.x.enable = !config.services.y.enable;
  services.secret.text = builtins.readFile /etc/passwd;
  services.typo.enable = 1 + "a";
  users.users.alice = { isNormalUser = true; extraGroups = [ "wheel" ]; };
  environment.systemPackages = with pkgs; [ openssh python3Packages.requests ] ++ lib.optional true pkgs.vim;
  networking.hostName = throw "not read";
}
"#;

    #[test]
    fn the_real_evaluator_decides_what_it_can_and_marks_the_rest() {
        if nix_instantiate().is_none() {
            eprintln!("skipped: nix-instantiate not found");
            return;
        }
        let mut f = Files::new();
        f.insert("configuration.nix".into(), TRICKY.into());
        f.insert(
            "other.nix".into(),
            "{ lib, ... }: { services.openssh = lib.mkMerge [ { ports = [ 2222 ]; } (lib.mkIf false { enable = true; }) ]; }".into(),
        );
        let e = evaluate(&f, &["configuration.nix".into()]).expect("evaluates");
        let s = &e.tree["services"];
        assert_eq!(s["openssh"], json!({"enable": false, "ports": [2222]}));
        assert_eq!(s["nginx"], merge::undecidable(), "depends on config");
        assert_eq!(s["x"]["enable"], merge::undecidable());
        // Reading outside the tree is refused (restrict-eval), not performed.
        assert_eq!(s["secret"]["text"], merge::undecidable());
        assert_eq!(s["typo"]["enable"], merge::undecidable());
        assert_eq!(
            e.tree["users"]["users"]["alice"]["extraGroups"],
            json!(["wheel"])
        );
        let names: Vec<&str> = e.tree["environment"]["systemPackages"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert_eq!(names, ["openssh", "python3Packages.requests", "vim"]);
        assert!(e.failed.is_empty());
    }

    /// Raw values that would tell the gate's stand-ins (or its evaluator) from the real
    /// configuration: each must be undecidable, never a harmless literal.
    const TELLS: &[&str] = &[
        "!(builtins.isString pkgs.openssh.version)",
        "pkgs.openssh.version == \"9.6p1\"",
        "(builtins.tryEval (throw \"x\")).success",
        "builtins.pathExists ./hardware.nix",
        "builtins.getEnv \"HOME\" == \"\"",
        "__getEnv \"HOME\" == \"\"",
        "builtins.length (builtins.attrNames pkgs) < 1000",
        "builtins.hasAttr \"openssh\" pkgs",
        "builtins.currentSystem != \"x86_64-linux\"",
        "(builtins.readDir ./.) ? secrets",
        "builtins ? newerBuiltin",
        "builtins.newerBuiltin or true",
        "builtins.nixVersion == \"2.8.0\"",
        "builtins.attrNames config == [ ]",
        "\"${pkgs.openssh}\" != \"/nix/store/00000000000000000000000000000000-openssh\"",
        "(import ./impure.nix) == \"\"",
        "lib.mkForce (builtins.typeOf pkgs.openssh.meta == \"set\")",
        "builtins.toJSON pkgs.openssh == \"{}\"",
    ];

    #[test]
    fn a_value_that_can_tell_the_stand_ins_from_the_real_thing_is_undecidable() {
        if nix_instantiate().is_none() {
            eprintln!("skipped: nix-instantiate not found");
            return;
        }
        let mut text = String::from("{ config, lib, pkgs, ... }: {\n");
        for (i, t) in TELLS.iter().enumerate() {
            text.push_str(&format!("  services.s{i}.enable = {t};\n"));
        }
        text.push_str("  services.plain.enable = !false;\n  users.users.a.shell = pkgs.zsh;\n");
        text.push_str(
            "  environment.systemPackages = with pkgs; [ git python3Packages.requests ];\n}\n",
        );
        let mut f = Files::new();
        f.insert("configuration.nix".into(), text);
        f.insert("impure.nix".into(), "builtins.getEnv \"X\"".into());
        let e = evaluate(&f, &["configuration.nix".into()]).expect("evaluates");
        for (i, t) in TELLS.iter().enumerate() {
            let v = &e.tree["services"][format!("s{i}")]["enable"];
            assert_eq!(v, &merge::undecidable(), "{t} must be undecidable");
        }
        // What does not depend on a stand-in stays decided; packages keep their names.
        assert_eq!(e.tree["services"]["plain"]["enable"], json!(true));
        assert_eq!(
            e.tree["users"]["users"]["a"]["shell"],
            json!({"__osmoda": "pkg", "name": "zsh"})
        );
        assert_eq!(
            e.tree["environment"]["systemPackages"],
            json!([{"__osmoda": "pkg", "name": "git"}, {"__osmoda": "pkg", "name": "python3Packages.requests"}])
        );
    }

    #[test]
    fn a_forged_package_stub_is_not_a_package() {
        if nix_instantiate().is_none() {
            eprintln!("skipped: nix-instantiate not found");
            return;
        }
        let mut f = Files::new();
        f.insert(
            "configuration.nix".into(),
            "{ pkgs, ... }: { environment.systemPackages = [ { __osmodaPkg = \"openssh\"; __osmodaStandIn = \"guess\"; } ]; }".into(),
        );
        let e = evaluate(&f, &["configuration.nix".into()]).expect("evaluates");
        assert_ne!(
            e.tree["environment"]["systemPackages"][0]["__osmoda"],
            json!("pkg")
        );
    }

    #[test]
    fn a_value_too_slow_to_judge_is_undecidable_and_remembered() {
        if nix_instantiate().is_none() {
            eprintln!("skipped: nix-instantiate not found");
            return;
        }
        // About 10^9 additions with little memory: far past the CPU cap.
        let slow = "builtins.foldl' (a: i: builtins.foldl' (b: j: b + 1) a (builtins.genList (x: x) 10000)) 0 (builtins.genList (x: x) 100000) > 0";
        let mut f = Files::new();
        f.insert(
            "configuration.nix".into(),
            format!("{{ lib, ... }}: {{\n  services.openssh.enable = {slow};\n  services.nginx.enable = true;\n}}\n"),
        );
        assert!(known_slow(&f).is_empty());
        let e = evaluate(&f, &["configuration.nix".into()]).expect("evaluates");
        assert_eq!(
            e.tree["services"]["openssh"]["enable"],
            merge::undecidable()
        );
        assert_eq!(e.tree["services"]["nginx"]["enable"], json!(true));
        // The next evaluation of the same text skips it from the start.
        let known = known_slow(&f);
        assert!(known.iter().any(|k| k.contains("openssh")), "{known:?}");
        let again = evaluate(&f, &["configuration.nix".into()]).expect("evaluates");
        assert_eq!(again.tree, e.tree);
    }

    #[test]
    fn identifiers_cover_attribute_names_and_skip_numbers() {
        let mut f = Files::new();
        f.insert(
            "a.nix".into(),
            "{ pkgs, ... }: with pkgs; [ htop python3Packages.requests x-y 42 ]".into(),
        );
        let ids = identifiers(&f);
        for w in ["pkgs", "with", "htop", "python3Packages", "requests", "x-y"] {
            assert!(ids.contains(&w.to_string()), "{w}");
        }
        assert!(!ids.iter().any(|w| w == "42"));
    }
}
