# A stand-in for the option declarations of nixpkgs' services.llama-cpp (NixOS module
# nixos/modules/services/misc/llama-cpp.nix), used by tests/module.rs only where that module
# is not available (nixos-eval has no declarations for it). The names and types are those of
# nixpkgs master in 2026 (`model` and `modelsDir` nullable paths without defaults, `port` a
# port); the unit it renders is not modelled. Where <nixpkgs> resolves, the test uses the real
# module instead.
{ lib, ... }:
{
  options.services.llama-cpp = {
    enable = lib.mkEnableOption "llama.cpp server";
    model = lib.mkOption { type = lib.types.nullOr lib.types.path; };
    modelsDir = lib.mkOption { type = lib.types.nullOr lib.types.path; };
    extraFlags = lib.mkOption { type = lib.types.listOf lib.types.str; default = [ ]; };
    host = lib.mkOption { type = lib.types.str; default = "127.0.0.1"; };
    port = lib.mkOption { type = lib.types.port; default = 8080; };
  };
}
