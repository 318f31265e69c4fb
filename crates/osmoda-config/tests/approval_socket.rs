//! The approval socket agentd binds and agentctl calls by default (both take
//! [`osmoda_config::DEFAULT_APPROVAL_SOCKET`] as their `--approval-socket` default) is the one the
//! NixOS module renders (lib/default.nix's `approvalSocket`), so a printed
//! `agentctl approvals approve` works there.

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
    assert_eq!(path, osmoda_config::DEFAULT_APPROVAL_SOCKET);
}
