//! The daemons' own load-time checks, run before an edit of `services.osmoda` is committed: the
//! edited file's `services.osmoda` is rendered with `lib/` (the same expression the NixOS module
//! and osmoda-watch's local backend use) and every daemon's JSON is checked exactly as that
//! daemon checks it when it loads the file (`osmoda_config::check_text`, the body of each
//! daemon's `check-config`): a cron expression croner cannot parse, an unknown time zone, an
//! empty command, a relative `stateDir`, a watcher without its `check`, … are refused at edit
//! time with the daemon's own message instead of at the next switch.

use std::path::Path;
use std::process::Command;

use axum::http::StatusCode;
use osmoda_generations::evaluator::Caps;
use osmoda_generations::Tree;
use serde_json::{json, Value};

use crate::error::ApiError;

/// `lib/default.nix` of the same osModa as this agentd (the module renders with it too).
const LIB: &str = include_str!("../../../../../lib/default.nix");

/// Renders the `services.osmoda` a file defines (imported with stand-in module arguments, as
/// the local backend does).
const RENDER: &str = r#"{ file, lib }:
let
  m = import file;
  mod = if builtins.isFunction m
    then m { config = { }; pkgs = { }; lib = { }; options = { }; modulesPath = ""; }
    else m;
  cfg = if mod ? config then (mod.config.services.osmoda or { }) else (mod.services.osmoda or { });
in (import lib).render cfg"#;

/// The check for a planned edit of osModa's options: runs [`check`] on the edited file when it
/// holds every definition of `services.osmoda`; returns the notes for the answer.
///
/// # Errors
/// As [`check`].
pub fn run(tree: &Tree, planned: &super::Planned) -> Result<Vec<String>, ApiError> {
    let file = &planned.target.file;
    if !planned.osmoda_elsewhere.is_empty() {
        let places: Vec<String> = planned
            .osmoda_elsewhere
            .iter()
            .map(|p| format!("{}:{}", p.file, p.line))
            .collect();
        return Ok(vec![format!(
            "the daemons' load-time checks (check-config) were not run before the commit: \
             services.osmoda is also defined at {}, and only NixOS merges the definitions; they \
             run when the configuration is built",
            places.join(", ")
        )]);
    }
    let data_only = osmoda_generations::validate::parse_check(file, &planned.after)
        .map(|p| osmoda_generations::validate::is_data_only(&p.syntax()))
        .unwrap_or(false);
    Ok(match check(tree, file, &planned.after, data_only)? {
        Checked::Passed => Vec::new(),
        Checked::Skipped(why) => vec![why],
    })
}

/// What the check found when it did not refuse.
pub enum Checked {
    /// Every daemon would load its rendered file.
    Passed,
    /// Not checked, and why (for the answer's `notes`).
    Skipped(String),
}

/// Renders `after` (the text of `file` after the edit) and checks each daemon's file.
/// `data_only` says whether the file is plain data (see
/// `osmoda_generations::validate::is_data_only`): only then is a failure to render a refusal,
/// since a file that uses its module arguments (`pkgs`, `lib`) cannot be rendered outside NixOS.
///
/// # Errors
/// 422 naming the daemon and its message (`detail.daemon`, `detail.field`), or the render's
/// error for a data-only file.
pub fn check(tree: &Tree, file: &Path, after: &str, data_only: bool) -> Result<Checked, ApiError> {
    let Some(nix) = tree.nix_instantiate() else {
        return Ok(Checked::Skipped(
            "the daemons' load-time checks (check-config) were not run: no Nix evaluator \
             (validate = parse); they run when the configuration is built"
                .into(),
        ));
    };
    let work = tempfile::Builder::new()
        .prefix("osmoda-render-")
        .tempdir()
        .map_err(ApiError::internal)?;
    let (at, lib) = (work.path().join("module.nix"), work.path().join("lib.nix"));
    std::fs::write(&at, after)
        .and_then(|()| std::fs::write(&lib, LIB))
        .map_err(ApiError::internal)?;
    let mut cmd = Command::new(nix);
    cmd.args(["--eval", "--strict", "--json", "--readonly-mode"])
        .args(["--option", "restrict-eval", "true"])
        .args(["--option", "allowed-uris", ""])
        .arg("-I")
        .arg(work.path())
        .arg("--arg")
        .arg("file")
        .arg(&at)
        .arg("--arg")
        .arg("lib")
        .arg(&lib)
        .arg("--expr")
        .arg(RENDER)
        .current_dir(work.path())
        .env("NIX_PATH", "");
    let out = osmoda_generations::evaluator::run(cmd, &Caps::RENDER).map_err(ApiError::internal)?;
    if !out.success() {
        let why = match &out.exceeded {
            Some(cap) => cap.to_string(),
            None => {
                let shown = work.path().display().to_string();
                first_error(&out.stderr)
                    .replace(&format!("{shown}/module.nix"), &file.display().to_string())
            }
        };
        if !data_only {
            return Ok(Checked::Skipped(format!(
                "the daemons' load-time checks (check-config) were not run: {} uses its module \
                 arguments, so its services.osmoda renders only when NixOS builds it ({why})",
                file.display()
            )));
        }
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "services.osmoda in {} does not render with lib/ (as the NixOS module and the \
                 local backend render it): {why}; nothing was changed",
                file.display()
            ),
        )
        .with_detail(json!({ "evaluator": out.stderr.trim() })));
    }
    let rendered: Value = serde_json::from_slice(&out.stdout).map_err(ApiError::internal)?;
    let Some(daemons) = rendered.as_object() else {
        return Err(ApiError::internal(
            "lib/ render did not return an attribute set",
        ));
    };
    for (daemon, cfg) in daemons {
        if !osmoda_config::DAEMONS.contains(&daemon.as_str()) {
            continue;
        }
        let text = serde_json::to_string_pretty(cfg).map_err(ApiError::internal)?;
        let path = format!("/etc/osmoda/{daemon}.json");
        if let Err(e) = osmoda_config::check_text(daemon, Path::new(&path), &text) {
            return Err(refusal(daemon, file, &e));
        }
    }
    Ok(Checked::Passed)
}

/// The daemon's own words, without the rendered file's line and column (which only exist in
/// the JSON the person never sees).
fn refusal(daemon: &str, file: &Path, e: &osmoda_config::ConfigError) -> ApiError {
    use osmoda_config::ConfigError as E;
    let (field, message) = match e {
        E::Parse { field, message, .. } => {
            (Some(field.clone()), format!("at `{field}`: {message}"))
        }
        E::Invalid { message, .. } => (None, message.clone()),
        other => (None, other.to_string()),
    };
    let name = if daemon == "agentd" {
        "agentd".to_string()
    } else {
        format!("osmoda-{daemon}")
    };
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        format!(
            "{name} would refuse this configuration when it loads /etc/osmoda/{daemon}.json: \
             {message}; nothing was changed"
        ),
    )
    .with_detail(json!({
        "daemon": daemon,
        "field": field,
        "file": file,
        "hint": format!("fix the services.osmoda option behind `{daemon}.json` field {}; the same check runs at build time (`{name} check-config`)", field.as_deref().unwrap_or("named above")),
    }))
}

/// The evaluator's `error: …` line.
fn first_error(stderr: &str) -> String {
    stderr
        .lines()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .unwrap_or(stderr.trim())
        .to_string()
}
