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

/// Asserts that `json` (from [`eval`]) renders `/etc/osmoda/<daemon>.json`, that the daemon's
/// binary `bin` accepts that file with `check-config`, and that the module checks it at build
/// time too (`osmoda-<daemon>-json-checked` in `system.checks`); returns the file, parsed.
#[allow(dead_code)] // not every crate that includes this file checks a daemon's file
pub fn checked_config(json: &Value, daemon: &str, bin: &str) -> Value {
    let rendered = json["etc"][format!("osmoda/{daemon}.json")]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no /etc/osmoda/{daemon}.json in {}", json["etc"]));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join(format!("{daemon}.json"));
    std::fs::write(&f, rendered).unwrap();
    let out = Command::new(bin)
        .arg("check-config")
        .arg(&f)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{bin} check-config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let check = format!("osmoda-{daemon}-json-checked");
    assert!(
        json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| *c == *check),
        "{check} not in {}",
        json["checks"]
    );
    serde_json::from_str(rendered).unwrap()
}
