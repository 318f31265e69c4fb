//! The approval gate: judges every change of the configuration tree by its **effect**. The tree
//! before and after the change is evaluated with the Nix evaluator ([`eval`]), module wrappers
//! are resolved ([`merge`]), and one table of rules ([`rules::RULES`]) names the destructive
//! differences. A destructive change needs a human-approved ticket bound to the canonical form
//! of its effect ([`canon`]), so the same effect phrased differently uses the same ticket and a
//! different effect cannot; without one, the refusal opens the ticket and says how to approve it.

pub mod aliases;
pub mod canon;
pub mod eval;
pub mod forced;
pub mod guard;
pub(crate) mod homes;
pub mod merge;
pub mod rules;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::AppState;
use eval::{EvalError, Files};
use rules::Finding;

/// Operation kinds that always need a human approval. Configuration (`approval.required`) can
/// add kinds, never remove these.
pub const DEFAULT_REQUIRED: &[&str] = &[
    "service.remove",
    "service.disable",
    "user.remove",
    "user.demote",
    "user.credentials",
    "ssh.access",
    "firewall.ssh",
    "boot.loader",
    "boot.kernel",
    "filesystem.change",
    "wallet.delete",
    "wallet.send.over_threshold",
    "mesh.peer.remove",
    "capability.remove",
    "audit.weaken",
    "policy.weaken",
    "package.remove_critical",
    "switch.remove_critical",
    "gate.undecidable",
    "code.root",
    "fs.login",
    "fs.outside_roots",
];

/// `detail.kind` of the gate's 403 (also when osmoda-watch passes it on).
pub const APPROVAL_REQUIRED: &str = "approval_required";

/// Packages whose removal always needs approval; `approval.critical_packages` adds more.
pub const DEFAULT_CRITICAL_PACKAGES: &[&str] = &["openssh", "systemd", "nix", "osmoda-agentd"];

/// The module people edit and every other module is imported from, when the tree has one.
const ENTRY: &str = "configuration.nix";

/// The destructive part of a change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Effect {
    /// Findings, sorted by kind and path.
    pub findings: Vec<Finding>,
}

/// What kind of change is judged (it decides how critical package removal is named).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutation {
    /// An edit, revert, restore or commit of the tree.
    Edit,
    /// Switching the running system to another generation.
    Switch,
}

/// Compare two tree states.
///
/// # Errors
/// [`EvalError`] when the evaluator is missing or fails even after skipping undecidable values.
pub fn judge(
    before: &Files,
    after: &Files,
    critical: &[String],
    mutation: Mutation,
) -> Result<Effect, EvalError> {
    let changed: Vec<PathBuf> = before
        .keys()
        .chain(after.keys())
        .filter(|p| before.get(*p) != after.get(*p))
        .cloned()
        .collect();
    let is_changed = |f: &str| changed.iter().any(|c| c.to_string_lossy() == f);
    if changed.is_empty() {
        return Ok(Effect::default());
    }
    // Changed modules count even when nothing imports them yet; other files count where a
    // module imports or names them.
    let mut roots: Vec<PathBuf> = vec![PathBuf::from(ENTRY)];
    roots.extend(changed.iter().filter(|p| snapshot::is_nix(p)).cloned());
    let (b, a) = std::thread::scope(|s| {
        let b = s.spawn(|| eval::evaluate(before, &roots));
        let a = eval::evaluate(after, &roots);
        (
            b.join()
                .unwrap_or_else(|_| Err(EvalError::Failed("evaluator thread panicked".into()))),
            a,
        )
    });
    let (b, a) = match (b, a) {
        (Ok(b), Ok(a)) => (b, a),
        // Too slow to judge: every changed file is undecidable (a ticket bound to its text).
        (Err(EvalError::TooSlow(k)), _) | (_, Err(EvalError::TooSlow(k))) => {
            return Ok(too_slow(before, after, &changed, &k))
        }
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    // A ticket for an effect the gate cannot decide is bound to the exact new text (or list).
    let mut unevaluable: Vec<(String, Value, Value)> = a
        .failed
        .iter()
        .filter(|f| !b.failed.contains(f) || is_changed(eval::module_file(f)))
        .map(|f| eval::module_file(f).to_string())
        // A flake's module list (inline modules, `nixosSystem` arguments) is not a module the
        // gate evaluates, so any change of a flake cannot be judged.
        .chain(
            changed
                .iter()
                .filter(|c| c.file_name().is_some_and(|n| n == "flake.nix"))
                .map(|c| c.to_string_lossy().into_owned()),
        )
        .map(|f| {
            (
                f.clone(),
                digest(before, Path::new(&f)),
                digest(after, Path::new(&f)),
            )
        })
        .collect();
    // `disabledModules` naming a module outside the tree (a NixOS module, by path or string)
    // turns off definitions the gate does not see.
    if a.disabled_elsewhere != b.disabled_elsewhere {
        unevaluable.push((
            rules::DISABLED_ELSEWHERE.to_string(),
            Value::Array(b.disabled_elsewhere.clone()),
            Value::Array(a.disabled_elsewhere.clone()),
        ));
    }
    unevaluable.extend(foreign_imports(before, after, &b, &a, &is_changed));
    // A file read with `readFile` is part of the values it feeds: those the gate decides show
    // the change; where the reading module has a value it cannot decide, rewriting the file is
    // undecidable (bound to the file's text).
    let undecided = |m: &String| {
        b.undecided.contains(m)
            || a.undecided.contains(m)
            || b.failed
                .iter()
                .chain(&a.failed)
                .any(|f| eval::module_file(f) == m)
    };
    for (read, module) in b.reads.iter().chain(&a.reads) {
        if is_changed(read) && undecided(module) {
            unevaluable.push((
                rules::read_by(read, module),
                digest(before, Path::new(read)),
                digest(after, Path::new(read)),
            ));
        }
    }
    unevaluable.sort_by_key(|(f, w, n)| (f.clone(), w.to_string(), n.to_string()));
    unevaluable.dedup();
    // Code the gate cannot read, in files the change touches, is bound to their text.
    let opaque: Vec<rules::Opaque> = b
        .opaque
        .iter()
        .chain(&a.opaque)
        .filter(|(_, f)| is_changed(f))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|(path, file)| rules::Opaque {
            path: path.clone(),
            file: file.clone(),
            was: digest(before, Path::new(file)),
            now: digest(after, Path::new(file)),
        })
        .collect();
    let ctx = rules::Ctx {
        before: &b.tree,
        after: &a.tree,
        unevaluable: &unevaluable,
        critical,
        forced_before: &b.forced,
        forced_after: &a.forced,
        package_kind: match mutation {
            Mutation::Edit => "package.remove_critical",
            Mutation::Switch => "switch.remove_critical",
        },
        opaque: &opaque,
    };
    Ok(Effect {
        findings: rules::findings(&ctx),
    })
}

/// `imports` entries the gate cannot read (a module outside the tree, a string, an entry whose
/// value cannot be decided) hide their definitions, so a change of them is undecidable: readable
/// entries (paths, strings) are compared as a set, and an undecidable entry is bound to the text
/// of its file (any change of that file is undecidable).
fn foreign_imports(
    before: &Files,
    after: &Files,
    b: &eval::Evaluated,
    a: &eval::Evaluated,
    is_changed: &dyn Fn(&str) -> bool,
) -> Vec<(String, Value, Value)> {
    let readable = |e: &eval::Evaluated| -> Vec<Value> {
        let mut v: Vec<Value> = e
            .foreign_imports
            .iter()
            .filter(|(_, x)| !merge::is_undecidable(x))
            .map(|(_, x)| x.clone())
            .collect();
        v.sort_by_key(Value::to_string);
        v.dedup();
        v
    };
    let mut out = Vec::new();
    let (rb, ra) = (readable(b), readable(a));
    if rb != ra {
        out.push((
            rules::FOREIGN_IMPORTS.to_string(),
            Value::Array(rb),
            Value::Array(ra),
        ));
    }
    for (m, _) in b
        .foreign_imports
        .iter()
        .chain(&a.foreign_imports)
        .filter(|(_, x)| merge::is_undecidable(x))
    {
        let f = eval::module_file(m);
        if is_changed(f) {
            out.push((
                f.to_string(),
                digest(before, Path::new(f)),
                digest(after, Path::new(f)),
            ));
        }
    }
    out
}

fn digest(files: &Files, f: &Path) -> Value {
    files.get(f).map_or(json!("<absent>"), |t| {
        json!(format!(
            "sha256:{}",
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(t))
        ))
    })
}

/// The effect of a change the evaluator could not judge within its budget.
fn too_slow(before: &Files, after: &Files, changed: &[PathBuf], last: &str) -> Effect {
    let findings = changed
        .iter()
        .map(|f| Finding {
            kind: "gate.undecidable",
            path: f.to_string_lossy().into_owned(),
            was: digest(before, f),
            now: digest(after, f),
            words: format!(
                "{} is too slow to judge (evaluating it took longer than the gate's budget; last value {last}), so the effect of changing it cannot be decided",
                f.display()
            ),
        })
        .collect();
    Effect { findings }
}

/// Judge a change on the blocking pool, with the daemon's critical packages.
async fn judge_async(
    st: &AppState,
    before: Files,
    after: Files,
    mutation: Mutation,
) -> Result<Effect, ApiError> {
    let critical = st.settings.critical_packages.clone();
    tokio::task::spawn_blocking(move || judge(&before, &after, &critical, mutation))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
                .with_detail(json!({ "hint": "the approval gate evaluates every change with nix-instantiate; install Nix (Debian: nix-bin)" }))
        })
}

/// The operation a ticket for `findings` is bound to: the effect only (kind, path, old and new
/// value), plus the `context` (e.g. a switch's generations).
fn operation(context: &Value, findings: &[&Finding]) -> Value {
    let effect: Vec<Value> = findings
        .iter()
        .map(|f| json!({ "kind": f.kind, "path": f.path, "was": f.was, "now": f.now }))
        .collect();
    json!({ "gate": context, "effect": effect })
}

/// Let a change through when its effect needs no approval or `ticket` is an approved ticket for
/// exactly this effect (returned, to be marked used when the change has landed: an approved
/// change that then fails validation keeps its ticket for the corrected retry); otherwise refuse
/// with 403 and a pending ticket.
///
/// # Errors
/// 403 with `detail.ticket` (the id to have approved), `detail.effect` (the effect in words) and
/// `detail.approve` (the command a person runs); the errors of
/// [`crate::api::approvals::consume`] for a ticket that does not fit.
async fn enforce(
    st: &AppState,
    actor: &str,
    context: Value,
    effect: &Effect,
    ticket: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let gated: Vec<&Finding> = effect
        .findings
        .iter()
        .filter(|f| st.settings.needs_approval(f.kind))
        .collect();
    if gated.is_empty() {
        return Ok(None);
    }
    let op = operation(&context, &gated);
    if let Some(id) = ticket {
        use crate::api::approvals::{verify, GATE};
        return verify(st, id, &op, GATE)
            .await
            .map(|()| Some(id.to_string()));
    }
    let words: Vec<String> = gated.iter().map(|f| f.words.clone()).collect();
    let kinds: Vec<&str> = gated.iter().map(|f| f.kind).collect();
    let t = crate::api::approvals::open(st, actor, &op, &words).await?;
    let approve = match &st.settings.approval_socket {
        Some(p) => format!(
            "agentctl --approval-socket {} approvals approve {}",
            p.display(),
            t.id
        ),
        None => format!("agentctl approvals approve {}", t.id),
    };
    Err(ApiError::new(
        StatusCode::FORBIDDEN,
        format!(
            "this change is destructive and needs a human approval: {}. Ask a person to run `{approve}`, then retry with the approval {}",
            words.join("; "),
            t.id
        ),
    )
    .with_detail(json!({
        "kind": APPROVAL_REQUIRED, "ticket": t.id, "status": t.status, "kinds": kinds, "effect": words,
        "approve": approve, "operation": op, "expires_at": t.expires_at,
        "hint": format!("retry the same request with \"approval\": \"{}\" (agentctl: --approval {}) once a person approved it", t.id, t.id),
    })))
}

/// Held from judging a change until it has landed (or failed): changes of one tree are judged
/// one at a time against the `HEAD` they will be committed on, so two changes that are each
/// harmless against the same old `HEAD` (say `mkOverride 900 false` next to `mkOverride 950
/// true`) cannot land together unjudged.
#[must_use = "hold the guard until the change has landed, then call `landed`"]
pub struct Guard {
    _held: Option<tokio::sync::OwnedMutexGuard<()>>,
    /// The verified ticket (and who used it), marked used once the change has landed.
    ticket: Option<(String, String)>,
}

impl Guard {
    fn open() -> Guard {
        Guard {
            _held: None,
            ticket: None,
        }
    }

    fn with(mut self, ticket: Option<String>, actor: &str) -> Guard {
        self.ticket = ticket.map(|t| (t, actor.to_string()));
        self
    }

    /// The change has landed: its ticket (if one let it through) is used now. A ticket that
    /// cannot be marked (the ledger failed) is logged; the change itself has landed.
    pub async fn landed(self, st: &AppState) {
        if let Some((id, actor)) = &self.ticket {
            if let Err(e) = crate::api::approvals::mark_used(st, id, actor).await {
                tracing::error!(ticket = %id, error = %e.error, "a landed change's ticket could not be marked used");
            }
        }
    }
}

/// Serialises changes of the tree at `dir` (also taken by a backup restore resetting it).
pub(crate) async fn lock(dir: &Path) -> Guard {
    static LOCKS: std::sync::Mutex<Vec<(PathBuf, Arc<tokio::sync::Mutex<()>>)>> =
        std::sync::Mutex::new(Vec::new());
    let m = {
        let mut locks = LOCKS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match locks.iter().find(|(d, _)| d == dir) {
            Some((_, m)) => m.clone(),
            None => {
                let m = Arc::new(tokio::sync::Mutex::new(()));
                locks.push((dir.to_path_buf(), m.clone()));
                m
            }
        }
    };
    Guard {
        _held: Some(m.lock_owned().await),
        ticket: None,
    }
}

fn tree_dir(st: &AppState) -> Option<PathBuf> {
    st.config_tree.as_ref().map(|t| t.dir().to_path_buf())
}

async fn read(
    f: impl FnOnce() -> Result<Files, snapshot::SnapshotError> + Send + 'static,
) -> Result<Files, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)
}

/// Gate a `/fs/write` whose destructive part is `findings` (none: it passes). The ticket is bound
/// to `{gate: "fs.write", effect}`; hold the returned [`Guard`] until the file is in place.
///
/// # Errors
/// As [`enforce`].
pub async fn check_fs_write(
    st: &AppState,
    actor: &str,
    findings: Vec<Finding>,
    ticket: Option<&str>,
) -> Result<Guard, ApiError> {
    let effect = Effect { findings };
    let used = enforce(st, actor, json!("fs.write"), &effect, ticket).await?;
    Ok(Guard::open().with(used, actor))
}

/// Gate a `/system/exec` whose destructive part is `findings` (writable paths holding login
/// files or credentials, or outside the writable roots; none: it passes). The ticket is bound
/// to `{gate: "system.exec", effect}` and used up here, before the command runs: a command runs
/// once per approval, also when two requests carry the same ticket at once. Returns the ticket
/// used.
///
/// # Errors
/// As [`enforce`] without a ticket; with one, those of [`crate::api::approvals::consume`].
pub async fn consume_exec(
    st: &AppState,
    actor: &str,
    findings: Vec<Finding>,
    ticket: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let effect = Effect { findings };
    let context = json!("system.exec");
    let Some(id) = ticket else {
        return enforce(st, actor, context, &effect, None).await;
    };
    let gated: Vec<&Finding> = effect
        .findings
        .iter()
        .filter(|f| st.settings.needs_approval(f.kind))
        .collect();
    if gated.is_empty() {
        return Ok(None);
    }
    let op = operation(&context, &gated);
    crate::api::approvals::consume(st, id, &op, actor, crate::api::approvals::GATE).await?;
    Ok(Some(id.to_string()))
}

/// Gate an edit of one file, planned as `(from, after)`: the file's text at `HEAD` it was
/// planned from and its new text (the rest of the tree is `HEAD`'s). When the file at `HEAD`
/// under the gate's lock is no longer `from` (another edit of it landed meanwhile), `replan`
/// plans the edit again under the lock and its texts are judged instead, so what is judged is
/// what lands. Hold the returned [`Guard`] until the edit has landed.
///
/// # Errors
/// As [`enforce`]; 503 when the evaluator is unavailable; `replan`'s own.
pub async fn check_edit<F>(
    st: &AppState,
    actor: &str,
    file: &Path,
    planned: (String, String),
    replan: F,
    ticket: Option<&str>,
) -> Result<Guard, ApiError>
where
    F: FnOnce() -> Result<(String, String), ApiError> + Send + 'static,
{
    let Some(dir) = tree_dir(st) else {
        return Ok(Guard::open());
    };
    let guard = lock(&dir).await;
    let before = read(move || snapshot::at(&dir, "HEAD")).await?;
    let (from, mut after) = planned;
    if before.get(file).map_or("", String::as_str) != from {
        let (again_from, again) = tokio::task::spawn_blocking(replan)
            .await
            .map_err(ApiError::internal)??;
        if before.get(file).map_or("", String::as_str) != again_from {
            return Err(ApiError::internal(format!(
                "{} read differently by the plan and the gate at the same HEAD",
                file.display()
            )));
        }
        after = again;
    }
    let mut new = before.clone();
    new.insert(file.to_path_buf(), after);
    let effect = judge_async(st, before, new, Mutation::Edit).await?;
    let used = enforce(st, actor, json!("config"), &effect, ticket).await?;
    Ok(guard.with(used, actor))
}

/// Gate a revert of generation `rev` (a conflicting revert passes here and fails on its own).
///
/// # Errors
/// As [`check_edit`].
pub async fn check_revert(
    st: &AppState,
    actor: &str,
    rev: &str,
    ticket: Option<&str>,
) -> Result<Guard, ApiError> {
    let Some(dir) = tree_dir(st) else {
        return Ok(Guard::open());
    };
    let guard = lock(&dir).await;
    let rev = rev.to_string();
    let (before, after) = tokio::task::spawn_blocking(move || {
        Ok::<_, snapshot::SnapshotError>((
            snapshot::at(&dir, "HEAD")?,
            snapshot::after_revert(&dir, &rev)?,
        ))
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let Some(after) = after else { return Ok(guard) };
    let effect = judge_async(st, before, after, Mutation::Edit).await?;
    let used = enforce(st, actor, json!("config"), &effect, ticket).await?;
    Ok(guard.with(used, actor))
}

/// Gate bringing back generation `rev`'s whole tree (a restore, or the commit before switching
/// to an older generation). It is judged against the **running** generation (the last deployed
/// one; `HEAD` when none was deployed), so recording a rollback to what already runs passes, and
/// the ticket is bound to both generations and the effect (critical packages as
/// `switch.remove_critical`).
///
/// # Errors
/// As [`check_edit`]; 404 for an unknown generation.
pub async fn check_restore(
    st: &AppState,
    actor: &str,
    rev: &str,
    ticket: Option<&str>,
) -> Result<Guard, ApiError> {
    let Some(tree) = st.config_tree.clone() else {
        return Ok(Guard::open());
    };
    let guard = lock(tree.dir()).await;
    let t = tree.clone();
    let current = tokio::task::spawn_blocking(move || t.last_deployed())
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::internal)?
        .map_or_else(|| "HEAD".to_string(), |g| g.rev);
    let used = switch(st, actor, tree.dir(), rev, &current, ticket).await?;
    Ok(guard.with(used, actor))
}

/// Gate committing the work tree (hand edits) as a generation.
///
/// # Errors
/// As [`check_edit`].
pub async fn check_commit(
    st: &AppState,
    actor: &str,
    ticket: Option<&str>,
) -> Result<Guard, ApiError> {
    let Some(dir) = tree_dir(st) else {
        return Ok(Guard::open());
    };
    let guard = lock(&dir).await;
    let d2 = dir.clone();
    let before = read(move || snapshot::at(&dir, "HEAD")).await?;
    let after = read(move || snapshot::worktree(&d2)).await?;
    let effect = judge_async(st, before, after, Mutation::Edit).await?;
    let used = enforce(st, actor, json!("config"), &effect, ticket).await?;
    Ok(guard.with(used, actor))
}

async fn switch(
    st: &AppState,
    actor: &str,
    dir: &Path,
    target: &str,
    current: &str,
    ticket: Option<&str>,
) -> Result<Option<String>, ApiError> {
    let dir = dir.to_path_buf();
    let resolve = |rev: String| {
        let dir = dir.clone();
        move || -> Result<(String, Files), snapshot::SnapshotError> {
            let id = snapshot::resolve(&dir, &rev)?;
            Ok((id.clone(), snapshot::at(&dir, &id)?))
        }
    };
    let (t, c) = (resolve(target.to_string()), resolve(current.to_string()));
    let ((tid, after), (cid, before)) =
        tokio::task::spawn_blocking(move || Ok::<_, snapshot::SnapshotError>((t()?, c()?)))
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| ApiError::not_found(e.to_string()))?;
    let effect = judge_async(st, before, after, Mutation::Switch).await?;
    enforce(
        st,
        actor,
        json!({ "switch": { "target": tid, "current": cid } }),
        &effect,
        ticket,
    )
    .await
}

#[cfg(test)]
mod judge_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_flake_cannot_be_judged_and_an_unchanged_tree_has_no_effect() {
        let mut before = Files::new();
        before.insert("flake.nix".into(), "{ outputs = _: { }; }".into());
        let mut after = before.clone();
        let same = judge(&before, &after, &[], Mutation::Edit).expect("judge");
        assert!(same.findings.is_empty());
        after.insert(
            "flake.nix".into(),
            "{ outputs = _: { modules = [ { services.openssh.enable = false; } ]; }; }".into(),
        );
        let e = judge(&before, &after, &[], Mutation::Edit).expect("judge");
        let kinds: Vec<&str> = e.findings.iter().map(|f| f.kind).collect();
        assert_eq!(kinds, ["gate.undecidable"]);
    }
}
