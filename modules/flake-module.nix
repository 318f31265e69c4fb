# modules/osmoda.nix as the flake exports it, in one file so that flake.nix and the module
# tests (crates/osmoda-config/tests/nixos_eval.rs) evaluate exactly the same thing:
#   nixosModules.default          = import ./modules/flake-module.nix { overlay = self.overlays.default; };
#   nixosConfigurations.<host>    = that with `revision = self.rev or self.dirtyRev or null`, plus the host.
{ overlay ? null, revision ? null }:
{ lib, ... }:
let
  daemonCrates = import ./crates.nix;
  crateExists = crate: builtins.pathExists (../crates + "/${crate}/Cargo.toml");
  # Daemons whose crate is not in this tree yet are disabled by default instead of pointing
  # the module at a package that cannot be built.
  missingDaemons = lib.filter (d: !(crateExists daemonCrates.${d})) (import ../lib).daemonNames;
  # The OpenClaw plugin is built only once bridge/ (with its package-lock.json) exists.
  hasBridge = builtins.pathExists ../bridge/package-lock.json;
in
{
  imports = [ ./osmoda.nix ];
  nixpkgs.overlays = lib.optional (overlay != null) overlay;
  services.osmoda = lib.genAttrs missingDaemons (_: { enable = lib.mkDefault false; })
    # Without the bridge there is nothing for the gateway to load. Stronger than the hosts'
    # `mkDefault true`, weaker than a user's explicit setting.
    // lib.optionalAttrs (!hasBridge) { gateway.enable = lib.mkOverride 900 false; };
  # The flake's own commit, only as a default: a host's services.osmoda.configRevision (or an
  # explicit system.configurationRevision) wins.
  system.configurationRevision = lib.mkIf (revision != null) (lib.mkDefault revision);
}
