//! The NixOS module's memory lines through nixos-eval (the real nixpkgs declarations of
//! systemd, users and etc; `../shared/nixos-eval/check.sh` beside the checkout or
//! `$OSMODA_NIXOS_EVAL`; without it this prints "skipped"): `memory.llamaCpp` wires nixpkgs'
//! `services.llama-cpp` on loopback with embeddings on, points agentd's
//! `memory.embedding_endpoint` at it (instead of the in-process model) and orders agentd after
//! it; without the llama-cpp module, or without a model, the evaluation fails with an
//! assertion that says what is missing.
//!
//! nixos-eval does not declare `services.llama-cpp`: the module's definitions are checked
//! against nixpkgs' own `llama-cpp.nix` where `<nixpkgs>` resolves, else against the stand-in
//! declarations in `tests/nix/llama-cpp-options.nix` (and the unit llama.cpp would run is then
//! not rendered).
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

// Only its `check_sh` is used here (this test needs the exit code and extra modules).
#[allow(dead_code)]
#[path = "../../../tests/rust/nixos_eval.rs"]
mod nixos_eval;
use nixos_eval::check_sh;

/// `modules/osmoda.nix`, `extra` modules and `{ <body> system.stateVersion = …; }` through
/// check.sh: (exit code, JSON output, stderr).
fn eval_with(check: &Path, extra: &[PathBuf], body: &str) -> (i32, Value, String) {
    let dir = tempfile::tempdir().unwrap();
    let m = dir.path().join("m.nix");
    std::fs::write(&m, format!("{{ {body} system.stateVersion = \"24.11\"; }}")).unwrap();
    // The package the real module's ExecStart names; nixos-eval's fake pkgs lacks it.
    let pkgs = dir.path().join("pkgs.nix");
    std::fs::write(
        &pkgs,
        "self: super: { llama-cpp = self.writeText \"llama-cpp\" \"\"; }",
    )
    .unwrap();
    let module = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../modules/osmoda.nix");
    let out = Command::new(check)
        .arg(&module)
        .args(extra)
        .arg(&m)
        .arg("--pkgs")
        .arg(&pkgs)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out.status.code().unwrap_or(-1), json, stderr)
}

/// nixpkgs' llama-cpp module when `<nixpkgs>` resolves, else the stand-in declarations.
fn llama_cpp_module() -> (PathBuf, bool) {
    let found = Command::new("nix-instantiate")
        .args(["--find-file", "nixpkgs"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
                .join("nixos/modules/services/misc/llama-cpp.nix")
        })
        .filter(|p| p.is_file());
    match found {
        Some(p) => (p, true),
        None => {
            eprintln!("<nixpkgs> not found: services.llama-cpp's declarations from the stand-in");
            (
                Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/nix/llama-cpp-options.nix"),
                false,
            )
        }
    }
}

fn agentd_memory(json: &Value) -> Value {
    let text = json["etc"]["osmoda/agentd.json"]["text"].as_str().unwrap();
    serde_json::from_str::<Value>(text).unwrap()["memory"].clone()
}

#[test]
fn nixos_eval_if_present_llama_cpp_serves_the_embedding_endpoint() {
    let Some(check) = check_sh() else { return };
    let (llama, real) = llama_cpp_module();
    let (code, json, stderr) = eval_with(
        &check,
        std::slice::from_ref(&llama),
        r#"services.osmoda = { enable = true;
             memory.llamaCpp = { enable = true; model = "/var/lib/models/nomic-embed-text-v2-moe.Q8_0.gguf"; port = 8431; }; };"#,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        agentd_memory(&json)["embedding_endpoint"],
        "http://127.0.0.1:8431/v1/embeddings"
    );
    let agentd = &json["units"]["osmoda-agentd"];
    let text = agentd["text"].as_str().unwrap();
    assert!(text.contains("Wants=llama-cpp.service"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("After=") && l.contains("llama-cpp.service")),
        "{text}"
    );
    // The endpoint replaces the in-process model.
    let exec = agentd["ExecStart"].as_str().unwrap();
    assert!(!exec.contains("--memory-model"), "{exec}");
    if real {
        let exec = json["units"]["llama-cpp"]["ExecStart"].as_str().unwrap();
        for want in [
            "\"--host\" \"127.0.0.1\"",
            "\"--port\" \"8431\"",
            "\"-m\" \"/var/lib/models/nomic-embed-text-v2-moe.Q8_0.gguf\"",
            "\"--embeddings\" \"--pooling\" \"mean\"",
        ] {
            assert!(exec.contains(want), "{want}: {exec}");
        }
    }

    // An endpoint the operator names wins over the default one.
    let (code, json, stderr) = eval_with(
        &check,
        std::slice::from_ref(&llama),
        r#"services.osmoda = { enable = true; memory.embeddingEndpoint = "http://127.0.0.1:9000/v1/embeddings";
             memory.llamaCpp = { enable = true; model = "/m.gguf"; }; };"#,
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(
        agentd_memory(&json)["embedding_endpoint"],
        "http://127.0.0.1:9000/v1/embeddings"
    );
}

#[test]
fn nixos_eval_if_present_llama_cpp_refusals_and_the_default() {
    let Some(check) = check_sh() else { return };
    let (llama, _) = llama_cpp_module();
    // No model: the assertion names the option.
    let (code, _, stderr) = eval_with(
        &check,
        std::slice::from_ref(&llama),
        "services.osmoda = { enable = true; memory.llamaCpp.enable = true; };",
    );
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("services.osmoda.memory.llamaCpp.model: set the GGUF file"),
        "{stderr}"
    );
    // A nixpkgs without services.llama-cpp (here: nixos-eval alone): the assertion says so.
    let (code, _, stderr) = eval_with(
        &check,
        &[],
        r#"services.osmoda = { enable = true; memory.llamaCpp = { enable = true; model = "/m.gguf"; }; };"#,
    );
    assert_eq!(code, 3, "{stderr}");
    assert!(
        stderr.contains("needs nixpkgs' services.llama-cpp module"),
        "{stderr}"
    );
    // Off (the default), nothing of it: no endpoint, no ordering, and the module evaluates
    // where services.llama-cpp is not declared at all.
    let (code, json, stderr) = eval_with(&check, &[], "services.osmoda.enable = true;");
    assert_eq!(code, 0, "{stderr}");
    assert!(agentd_memory(&json).get("embedding_endpoint").is_none());
    let text = json["units"]["osmoda-agentd"]["text"].as_str().unwrap();
    assert!(!text.contains("llama-cpp"), "{text}");
}
