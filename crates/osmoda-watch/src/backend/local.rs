//! The `local` backend (any Linux without NixOS): renders a generation's `services.osmoda`
//! settings with the same `lib/` the NixOS module uses, keeps numbered generation directories
//! under the state dir, and activates by atomically swapping the `<etc-dir>/osmoda` symlink.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use osmoda_generations::evaluator::Caps;
use serde_json::Value;

use super::{Backend, Built};
use crate::error::{Result, WatchError};
use crate::runner::{run_ok, BoxFut, Cmd, Runner};
use crate::switch::store::{sync_dir, write_atomic};
use crate::tree::{ConfigTree, OSMODA_FILE};

/// Evaluates `osmoda.nix` (a data-only module) with `lib/`: `{ render; unsupported; }`.
const RENDER_EXPR: &str = r#"{ tree, lib }:
let
  osmodaLib = import lib;
  m = import (tree + "/osmoda.nix");
  mod = if builtins.isFunction m
    then m { config = { }; pkgs = { }; lib = { }; options = { }; modulesPath = ""; }
    else m;
  cfg = if mod ? config then (mod.config.services.osmoda or { }) else (mod.services.osmoda or { });
in { render = osmodaLib.render cfg; unsupported = osmodaLib.unsupported cfg; }"#;

/// Mode of a rendered `/etc/osmoda/<daemon>.json`, as the NixOS module writes it.
pub const RENDERED_MODE: u32 = 0o444;

/// Writes a rendered file atomically with [`RENDERED_MODE`].
fn write_rendered(path: &Path, text: &[u8]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    write_atomic(path, text)?;
    fs::set_permissions(path, fs::Permissions::from_mode(RENDERED_MODE))
        .map_err(WatchError::io("chmod", path))
}

/// Name of the symlink inside the etc dir.
pub const LINK_NAME: &str = "osmoda";
/// Metadata file written into every generation directory.
pub const META_FILE: &str = "generation.json";

/// Applies generations by swapping a symlink to a rendered directory.
pub struct LocalBackend {
    tree: Arc<ConfigTree>,
    runner: Arc<dyn Runner>,
    generations: PathBuf,
    etc_dir: PathBuf,
    lib_dir: PathBuf,
}

impl LocalBackend {
    /// A backend keeping generations under `<state_dir>/generations` and activating into
    /// `<etc_dir>/osmoda`.
    ///
    /// # Errors
    /// When the directories cannot be created or `lib_dir` has no `default.nix`.
    pub fn new(
        tree: Arc<ConfigTree>,
        runner: Arc<dyn Runner>,
        state_dir: &Path,
        etc_dir: PathBuf,
        lib_dir: PathBuf,
    ) -> Result<LocalBackend> {
        let generations = state_dir.join("generations");
        for d in [&generations, &etc_dir] {
            fs::create_dir_all(d).map_err(WatchError::io("create", d))?;
        }
        if !lib_dir.join("default.nix").is_file() {
            return Err(WatchError::Config(format!(
                "{} has no default.nix; point --lib-dir at the osModa repository's lib/ directory",
                lib_dir.display()
            )));
        }
        // Half-written builds of a daemon that died are never resumed (recovery rolls back).
        if let Ok(entries) = fs::read_dir(&generations) {
            for e in entries.flatten() {
                let name = e.file_name();
                let name = name.to_string_lossy();
                if name.starts_with(".build-") || name.starts_with(".eval-") {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        Ok(LocalBackend {
            tree,
            runner,
            generations,
            etc_dir,
            lib_dir,
        })
    }

    /// Whether `p` is one of this backend's numbered generation directories (by name, and not
    /// a symlink).
    fn is_own_generation(&self, p: &Path) -> bool {
        self.is_generation_path(p) && fs::symlink_metadata(p).is_ok_and(|m| m.is_dir())
    }

    /// True when `p` is where this backend puts a generation: a numbered name directly under
    /// its generations directory (whether or not it still exists).
    fn is_generation_path(&self, p: &Path) -> bool {
        let numbered = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        numbered && p.parent() == Some(self.generations.as_path())
    }

    /// The symlink that holds the active generation.
    pub fn link(&self) -> PathBuf {
        self.etc_dir.join(LINK_NAME)
    }

    /// Renders `osmoda.nix` at `rev`: daemon name → JSON, plus what cannot be applied.
    async fn render(
        &self,
        id: &str,
        rev: &str,
    ) -> Result<(serde_json::Map<String, Value>, Vec<String>)> {
        let text = self.tree.osmoda_file_at(rev)?;
        let work = self.generations.join(format!(".eval-{id}"));
        fs::create_dir_all(&work).map_err(WatchError::io("create", &work))?;
        let file = work.join(OSMODA_FILE);
        fs::write(&file, text).map_err(WatchError::io("write", &file))?;
        let (tree, lib) = (
            work.to_string_lossy().into_owned(),
            self.lib_dir.to_string_lossy().into_owned(),
        );
        // Restricted evaluation: only the copied file and lib/ may be read, so a value like
        // `builtins.readFile /etc/secret` fails instead of landing in a rendered file, an API
        // answer or the ledger.
        let cmd = Cmd::new([
            "nix-instantiate",
            "--eval",
            "--strict",
            "--json",
            "--restrict-eval",
            "-I",
            &tree,
            "-I",
            &lib,
            "--argstr",
            "tree",
            &tree,
            "--argstr",
            "lib",
            &lib,
            "--expr",
            RENDER_EXPR,
        ])
        .capped(Caps::RENDER);
        let out = run_ok(self.runner.as_ref(), &cmd).await;
        let _ = fs::remove_dir_all(&work);
        let out = out.map_err(|e| {
            // The evaluation directory is temporary: name the file as it is in the tree.
            let e = e.replace(&format!("{tree}/"), "").replace(&tree, ".");
            WatchError::Backend(format!(
                "rendering {OSMODA_FILE} of generation {rev} failed: {e}"
            ))
        })?;
        let v: Value = serde_json::from_str(&out.stdout).map_err(|e| {
            WatchError::Backend(format!("lib/ rendered something that is not JSON: {e}"))
        })?;
        let render = v
            .get("render")
            .and_then(Value::as_object)
            .cloned()
            .ok_or_else(|| {
                WatchError::Backend("lib/ render did not return an attribute set of daemons".into())
            })?;
        let unsupported = v
            .get("unsupported")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        Ok((render, unsupported))
    }

    /// The next generation number: above every directory and every number ever handed out
    /// (recorded in `.last`), so a number is never reused even if a directory was deleted.
    fn next_number(&self) -> Result<u64> {
        let counter = self.generations.join(".last");
        let mut max = fs::read_to_string(&counter)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        for e in
            fs::read_dir(&self.generations).map_err(WatchError::io("read", &self.generations))?
        {
            let e = e.map_err(WatchError::io("read", &self.generations))?;
            if let Some(n) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) {
                max = max.max(n);
            }
        }
        write_atomic(&counter, (max + 1).to_string().as_bytes())?;
        Ok(max + 1)
    }

    fn swap_link(&self, id: &str, target: Option<&str>) -> Result<()> {
        let link = self.link();
        match fs::symlink_metadata(&link) {
            Ok(m) if !m.file_type().is_symlink() => {
                return Err(WatchError::Backend(format!(
                    "{} is a real file or directory, not a symlink managed by osmoda-watch; move it away",
                    link.display()
                )))
            }
            _ => {}
        }
        match target {
            Some(t) => {
                let tmp = self.etc_dir.join(format!(".{LINK_NAME}.{id}.tmp"));
                let _ = fs::remove_file(&tmp);
                std::os::unix::fs::symlink(t, &tmp)
                    .map_err(WatchError::io("create symlink", &tmp))?;
                fs::rename(&tmp, &link).map_err(WatchError::io("swap symlink", &link))?;
            }
            None => match fs::remove_file(&link) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(WatchError::io("remove", &link)(e)),
            },
        }
        sync_dir(&self.etc_dir)
    }
}

impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    fn current(&self) -> BoxFut<'_, Result<Option<String>>> {
        Box::pin(async move {
            let link = self.link();
            match fs::read_link(&link) {
                Ok(t) => Ok(Some(t.to_string_lossy().into_owned())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
                Err(e) => Err(WatchError::Backend(format!(
                    "{} is not a symlink managed by osmoda-watch ({e}); move it away",
                    link.display()
                ))),
            }
        })
    }

    fn build<'a>(&'a self, id: &'a str, rev: &'a str) -> BoxFut<'a, Result<Built>> {
        Box::pin(async move {
            let (render, unsupported) = self.render(id, rev).await?;
            let mut warnings: Vec<String> = unsupported
                .iter()
                .map(|p| format!("{p} cannot be applied by the local backend (it needs NixOS)"))
                .collect();
            if let Some(deployed) = self.tree.last_deployed()? {
                for f in self.tree.changed_files(&deployed, rev)? {
                    if f != OSMODA_FILE {
                        warnings.push(format!(
                            "{f} changed; the local backend applies only services.osmoda from {OSMODA_FILE}, so this change cannot apply here"
                        ));
                    }
                }
            }
            let tmp = self.generations.join(format!(".build-{id}"));
            let _ = fs::remove_dir_all(&tmp);
            fs::create_dir_all(&tmp).map_err(WatchError::io("create", &tmp))?;
            for (daemon, cfg) in &render {
                if !osmoda_config::DAEMONS.contains(&daemon.as_str()) {
                    warnings.push(format!(
                        "lib/ rendered an unknown daemon {daemon:?}; ignored"
                    ));
                    continue;
                }
                let path = tmp.join(format!("{daemon}.json"));
                let text = serde_json::to_vec_pretty(cfg).unwrap_or_default();
                let checked = write_rendered(&path, &text).and_then(|()| {
                    osmoda_config::check_config(daemon, &path).map_err(|e| {
                        WatchError::Backend(format!(
                            "generation {rev} renders an invalid {daemon}.json: {e}"
                        ))
                    })
                });
                if let Err(e) = checked {
                    let _ = fs::remove_dir_all(&tmp);
                    return Err(e);
                }
            }
            let n = self.next_number()?;
            let meta = serde_json::json!({ "generation": n, "rev": rev, "switch": id, "warnings": warnings });
            write_atomic(&tmp.join(META_FILE), meta.to_string().as_bytes())?;
            let dir = self.generations.join(n.to_string());
            fs::rename(&tmp, &dir).map_err(WatchError::io("publish generation", &dir))?;
            sync_dir(&self.generations)?;
            Ok(Built {
                artifact: dir.to_string_lossy().into_owned(),
                warnings,
            })
        })
    }

    fn activate<'a>(&'a self, id: &'a str, artifact: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            if !Path::new(artifact).join(META_FILE).is_file() {
                return Err(WatchError::Backend(format!(
                    "{artifact} is not a rendered generation"
                )));
            }
            self.swap_link(id, Some(artifact))
        })
    }

    fn make_default<'a>(&'a self, _id: &'a str, _artifact: &'a str) -> BoxFut<'a, Result<()>> {
        // Without a boot loader the active symlink is the default; the deployed tag records it.
        Box::pin(async { Ok(()) })
    }

    fn reactivate<'a>(&'a self, id: &'a str, previous: Option<&'a str>) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            if self.current().await?.as_deref() == previous {
                return Ok(());
            }
            if let Some(p) = previous {
                // One of ours that someone deleted is gone, said so.
                if self.is_generation_path(Path::new(p)) && fs::symlink_metadata(p).is_err() {
                    return Err(WatchError::Backend(format!(
                        "the previous generation {p} is gone, so it cannot be re-activated"
                    )));
                }
                // Only a generation this backend rendered: a record naming another directory
                // (written by someone else) re-activates nothing.
                if !self.is_own_generation(Path::new(p)) {
                    return Err(WatchError::Backend(format!(
                        "{p} is not one of osmoda-watch's generations (numbered directories under {}), so it is not re-activated",
                        self.generations.display()
                    )));
                }
                if !Path::new(p).join(META_FILE).is_file() {
                    return Err(WatchError::Backend(format!(
                        "the previous generation {p} is gone, so it cannot be re-activated"
                    )));
                }
            }
            self.swap_link(&format!("{id}-rollback"), previous)
        })
    }
}

#[cfg(test)]
#[path = "local_tests.rs"]
mod tests;
