//! Shared by the crates' `tests/module.rs`: the NixOS module evaluated through nixos-eval (the
//! real nixpkgs declarations of systemd, users and etc; `../shared/nixos-eval/check.sh` beside
//! the checkout or `$OSMODA_NIXOS_EVAL`). Included with `#[path]`, so `CARGO_MANIFEST_DIR` is the
//! including crate's directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// nixos-eval's `check.sh`, or `None` after printing "skipped: …" when it or `nix-instantiate`
/// is missing.
pub fn check_sh() -> Option<PathBuf> {
    let p = match std::env::var_os("OSMODA_NIXOS_EVAL") {
        Some(d) => PathBuf::from(d).join("check.sh"),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/nixos-eval/check.sh"),
    };
    let nix = Command::new("nix-instantiate")
        .arg("--version")
        .output()
        .is_ok();
    if p.is_file() && nix {
        Some(p)
    } else {
        eprintln!(
            "skipped: nixos-eval or nix-instantiate not found ({})",
            p.display()
        );
        None
    }
}

/// `modules/osmoda.nix` plus a module `{ <body> system.stateVersion = "24.11"; }` through
/// `check.sh`: its JSON output. Panics with the evaluator's stderr when evaluation fails.
pub fn eval(check: &Path, body: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.nix");
    std::fs::write(&m, format!("{{ {body} system.stateVersion = \"24.11\"; }}")).unwrap();
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../modules/osmoda.nix");
    let out = Command::new(check).arg(&module).arg(&m).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
