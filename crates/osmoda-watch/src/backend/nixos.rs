//! The `nixos` backend: `nixos-rebuild build`, `switch-to-configuration test` in a transient
//! systemd unit (so the switch survives this daemon), profile + boot entry on commit, and rollback
//! to the recorded store path (never a relative `--rollback`).
//!
//! It cannot run without NixOS; its exact command sequence is unit-tested with a
//! [`RecordingRunner`](crate::runner::RecordingRunner), the real flow by the flake's VM test.

use std::path::PathBuf;
use std::sync::Arc;

use super::{Backend, Built};
use crate::error::{Result, WatchError};
use crate::runner::{run_ok, BoxFut, Cmd, Runner};

/// The profile `nixos-rebuild switch` would set.
pub const SYSTEM_PROFILE: &str = "/nix/var/nix/profiles/system";
/// The running system.
pub const CURRENT_SYSTEM: &str = "/run/current-system";
/// NixOS's unit for `services.openssh`.
pub const SSHD_UNIT: &str = "sshd.service";

/// Applies generations with nixos-rebuild and switch-to-configuration.
pub struct NixosBackend {
    runner: Arc<dyn Runner>,
    tree: PathBuf,
    host: String,
    work_dir: PathBuf,
}

impl NixosBackend {
    /// A backend building `<tree>#<host>`, keeping `result` links under `work_dir`.
    pub fn new(runner: Arc<dyn Runner>, tree: PathBuf, host: String, work_dir: PathBuf) -> Self {
        NixosBackend {
            runner,
            tree,
            host,
            work_dir,
        }
    }

    fn flake_ref(&self, rev: &str) -> String {
        format!("git+file://{}?rev={rev}#{}", self.tree.display(), self.host)
    }

    async fn run(&self, cmd: Cmd) -> Result<String> {
        run_ok(self.runner.as_ref(), &cmd)
            .await
            .map(|o| o.stdout.trim().to_string())
            .map_err(WatchError::Backend)
    }
}

fn store_path(s: String, what: &str) -> Result<String> {
    if s.starts_with("/nix/store/") && !s.contains(char::is_whitespace) {
        Ok(s)
    } else {
        Err(WatchError::Backend(format!(
            "{what} is not a Nix store path: {s:?}"
        )))
    }
}

/// Checks that `system` names a NixOS system's store path: `/nix/store/<hash>-nixos-system-…`,
/// one component below the store (which only the Nix daemon writes).
///
/// # Errors
/// Why it is not, in words.
fn store_system(system: &str) -> std::result::Result<(), &'static str> {
    let Some(name) = system.strip_prefix("/nix/store/") else {
        return Err("is not in /nix/store");
    };
    if name.is_empty() || name.contains('/') || name.starts_with('.') {
        return Err("is not a store path");
    }
    if !name.contains("-nixos-system-") {
        return Err("is not a NixOS system");
    }
    Ok(())
}

fn stc(system: &str) -> String {
    format!("{system}/bin/switch-to-configuration")
}

impl Backend for NixosBackend {
    fn name(&self) -> &'static str {
        "nixos"
    }

    fn current(&self) -> BoxFut<'_, Result<Option<String>>> {
        Box::pin(async move {
            let out = self
                .run(Cmd::new(["readlink", "-f", CURRENT_SYSTEM]))
                .await?;
            store_path(out, CURRENT_SYSTEM).map(Some)
        })
    }

    fn build<'a>(&'a self, id: &'a str, rev: &'a str) -> BoxFut<'a, Result<Built>> {
        Box::pin(async move {
            let dir = self.work_dir.join(format!("build-{id}"));
            std::fs::create_dir_all(&dir).map_err(WatchError::io("create", &dir))?;
            let flake = self.flake_ref(rev);
            self.run(Cmd::new(["nixos-rebuild", "build", "--flake", flake.as_str()]).in_dir(&dir))
                .await?;
            let result = dir.join("result");
            let link = result.to_string_lossy().into_owned();
            let built = self
                .run(Cmd::new(["readlink", "-f", link.as_str()]))
                .await?;
            Ok(Built {
                artifact: store_path(built, "the build result")?,
                warnings: Vec::new(),
            })
        })
    }

    fn activate<'a>(&'a self, id: &'a str, artifact: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let unit = format!("osmoda-switch-{id}");
            let prog = stc(artifact);
            self.run(Cmd::new([
                "systemd-run",
                "--unit",
                &unit,
                "--wait",
                "--collect",
                &prog,
                "test",
            ]))
            .await
            .map(drop)
        })
    }

    fn make_default<'a>(&'a self, _id: &'a str, artifact: &'a str) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            self.run(Cmd::new([
                "nix-env",
                "-p",
                SYSTEM_PROFILE,
                "--set",
                artifact,
            ]))
            .await?;
            self.run(Cmd::new([stc(artifact), "boot".to_string()]))
                .await
                .map(drop)
        })
    }

    fn reactivate<'a>(&'a self, id: &'a str, previous: Option<&'a str>) -> BoxFut<'a, Result<()>> {
        Box::pin(async move {
            let Some(previous) = previous else {
                return Err(WatchError::Backend(
                    "no previous system was recorded, so there is nothing to re-activate".into(),
                ));
            };
            // Re-activating the running system would only restart units for nothing.
            if self.current().await?.as_deref() == Some(previous) {
                return Ok(());
            }
            // Only a NixOS system in the store: root runs its switch-to-configuration, so a
            // record naming anything else (written by someone else) runs nothing.
            if let Err(why) = store_system(previous) {
                return Err(WatchError::Backend(format!(
                    "the recorded previous system {previous:?} {why}, so it is not re-activated"
                )));
            }
            let unit = format!("osmoda-switch-{id}-rollback");
            let prog = stc(previous);
            self.run(Cmd::new([
                "systemd-run",
                "--unit",
                &unit,
                "--wait",
                "--collect",
                &prog,
                "switch",
            ]))
            .await
            .map(drop)
        })
    }

    fn default_checks(&self) -> BoxFut<'_, Vec<osmoda_config::HealthCheck>> {
        Box::pin(async move {
            // `services.openssh.enable` on NixOS means sshd.service runs; if it runs before the
            // switch it must still run after.
            let cmd = Cmd::new(["systemctl", "is-active", "--", SSHD_UNIT]);
            let state = self
                .runner
                .run(&cmd)
                .await
                .map(|o| o.stdout)
                .unwrap_or_default();
            match state.trim() {
                "active" | "reloading" | "activating" => {
                    vec![osmoda_config::HealthCheck::Systemd {
                        unit: SSHD_UNIT.to_string(),
                        timeout_secs: None,
                        retries: None,
                    }]
                }
                _ => Vec::new(),
            }
        })
    }

    fn preview_extra<'a>(&'a self, rev: &'a str) -> BoxFut<'a, Option<String>> {
        Box::pin(async move {
            let built = self.build("preview", rev).await.ok()?;
            let cmd = Cmd::new([
                "nix",
                "store",
                "diff-closures",
                CURRENT_SYSTEM,
                &built.artifact,
            ]);
            self.run(cmd).await.ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runner::{CmdOutput, RecordingRunner};

    const PREV: &str = "/nix/store/aaaa-nixos-system-prev";
    const NEW: &str = "/nix/store/bbbb-nixos-system-new";

    fn out(stdout: &str) -> CmdOutput {
        CmdOutput {
            code: Some(0),
            stdout: format!("{stdout}\n"),
            stderr: String::new(),
        }
    }

    fn backend(r: &Arc<RecordingRunner>, work: &std::path::Path) -> NixosBackend {
        let runner: Arc<dyn Runner> = r.clone();
        NixosBackend::new(
            runner,
            "/var/lib/osmoda/tree".into(),
            "myhost".into(),
            work.into(),
        )
    }

    #[tokio::test]
    async fn a_committed_switch_runs_exactly_these_commands() {
        let work = tempfile::tempdir().unwrap();
        let r = Arc::new(RecordingRunner::default());
        r.answer("readlink -f /run/current-system", out(PREV));
        r.answer("readlink -f", out(NEW));
        let b = backend(&r, work.path());
        assert_eq!(b.current().await.unwrap().as_deref(), Some(PREV));
        let built = b.build("7", "0123abcd").await.unwrap();
        assert_eq!(built.artifact, NEW);
        b.activate("7", NEW).await.unwrap();
        b.make_default("7", NEW).await.unwrap();
        let result = work
            .path()
            .join("build-7/result")
            .to_string_lossy()
            .into_owned();
        let want: Vec<Vec<String>> = [
            vec!["readlink", "-f", "/run/current-system"],
            vec![
                "nixos-rebuild",
                "build",
                "--flake",
                "git+file:///var/lib/osmoda/tree?rev=0123abcd#myhost",
            ],
            vec!["readlink", "-f", &result],
            vec![
                "systemd-run",
                "--unit",
                "osmoda-switch-7",
                "--wait",
                "--collect",
                "/nix/store/bbbb-nixos-system-new/bin/switch-to-configuration",
                "test",
            ],
            vec![
                "nix-env",
                "-p",
                "/nix/var/nix/profiles/system",
                "--set",
                NEW,
            ],
            vec![
                "/nix/store/bbbb-nixos-system-new/bin/switch-to-configuration",
                "boot",
            ],
        ]
        .iter()
        .map(|v| v.iter().map(|s| s.to_string()).collect())
        .collect();
        assert_eq!(r.argvs(), want);
        let calls = r.calls.lock().unwrap();
        assert_eq!(
            calls[1].cwd.as_deref(),
            Some(work.path().join("build-7").as_path())
        );
    }

    #[tokio::test]
    async fn rollback_switches_to_the_recorded_store_path() {
        let work = tempfile::tempdir().unwrap();
        let r = Arc::new(RecordingRunner::default());
        r.answer("readlink -f /run/current-system", out(NEW));
        let b = backend(&r, work.path());
        b.reactivate("7", Some(PREV)).await.unwrap();
        assert_eq!(
            r.argvs()[1],
            [
                "systemd-run",
                "--unit",
                "osmoda-switch-7-rollback",
                "--wait",
                "--collect",
                "/nix/store/aaaa-nixos-system-prev/bin/switch-to-configuration",
                "switch"
            ]
        );
        assert!(!r.argvs().concat().iter().any(|a| a == "--rollback"));
    }

    #[tokio::test]
    async fn only_a_nixos_system_in_the_store_is_reactivated() {
        for bad in [
            "/tmp/evil-system",
            "/nix/store/aaaa-nixos-system-prev/../../../tmp/evil",
            "/nix/store/aaaa-hello-2.12",
            "/nix/store/",
            "/nix/store/.links",
            "nix/store/aaaa-nixos-system-prev",
        ] {
            assert!(store_system(bad).is_err(), "{bad}");
            let work = tempfile::tempdir().unwrap();
            let r = Arc::new(RecordingRunner::default());
            r.answer("readlink -f /run/current-system", out(PREV));
            let e = backend(&r, work.path())
                .reactivate("7", Some(bad))
                .await
                .unwrap_err();
            assert!(e.to_string().contains("not re-activated"), "{bad}: {e}");
            assert!(
                !r.argvs()
                    .iter()
                    .any(|a| a.iter().any(|w| w.contains("switch-to-configuration"))),
                "{bad}: ran {:?}",
                r.argvs()
            );
        }
        assert!(store_system(PREV).is_ok());
    }

    #[tokio::test]
    async fn rollback_is_a_no_op_when_the_previous_system_is_running() {
        let work = tempfile::tempdir().unwrap();
        let r = Arc::new(RecordingRunner::default());
        r.answer("readlink -f /run/current-system", out(PREV));
        backend(&r, work.path())
            .reactivate("7", Some(PREV))
            .await
            .unwrap();
        assert_eq!(r.argvs().len(), 1);
        let e = backend(&r, work.path())
            .reactivate("7", None)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no previous system"));
    }

    #[tokio::test]
    async fn failures_carry_the_command_and_its_stderr() {
        let work = tempfile::tempdir().unwrap();
        let r = Arc::new(RecordingRunner::default());
        r.answer(
            "nixos-rebuild",
            CmdOutput {
                code: Some(1),
                stdout: String::new(),
                stderr: "error: attribute 'myhost' missing".into(),
            },
        );
        let e = backend(&r, work.path())
            .build("8", "ff")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("nixos-rebuild build") && e.contains("attribute 'myhost' missing"),
            "{e}"
        );
        r.answer("readlink -f /run/current-system", out("not-a-store-path"));
        let e = backend(&r, work.path())
            .current()
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a Nix store path"), "{e}");
    }
}
