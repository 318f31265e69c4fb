//! The approval socket agentctl uses by default is the one the NixOS module renders
//! (lib/default.nix's `approvalSocket`), so a printed `agentctl approvals approve` works there.

#[test]
fn default_approval_socket_is_the_modules() {
    let lib = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../lib/default.nix"
    ))
    .expect("lib/default.nix");
    let line = lib
        .lines()
        .find(|l| l.trim_start().starts_with("approvalSocket = \""))
        .expect("approvalSocket default in lib/default.nix");
    let path = line.split('"').nth(1).expect("quoted path");
    let help = std::process::Command::new(env!("CARGO_BIN_EXE_agentctl"))
        .arg("--help")
        .env_remove("OSMODA_APPROVAL_SOCKET")
        .output()
        .expect("run --help");
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains(&format!("[default: {path}]")),
        "{path} not the default:\n{help}"
    );
}
