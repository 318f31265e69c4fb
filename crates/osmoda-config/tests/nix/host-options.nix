# Stand-in declarations of the NixOS options the osModa hosts (modules/hosts/*.nix) set that
# nixos-eval declares neither for real nor in its `--host-stubs` (see its README), used only by
# tests/nixos_eval.rs. Names and types are those of nixpkgs master in 2026:
# - services.getty.helpLine: nixos/modules/services/ttys/getty.nix (`types.lines`, default "").
# Where <nixpkgs> resolves, the hosts are evaluated whole with the real modules instead
# (real_nixpkgs_if_found_flake_hosts_evaluate).
{ lib, ... }:
{
  options.services.getty.helpLine = lib.mkOption {
    type = lib.types.lines;
    default = "";
    description = "stand-in (tests/nix/host-options.nix) for nixpkgs' getty.nix";
  };
}
