# Installer ISO: the minimal NixOS installer plus the osModa daemons, so a machine can be
# inspected with agentctl before installation, and osModa's installer: after nixos-install,
# `osmoda-install --root /mnt` turns the new system into osModa: its tree (history from the
# fresh /etc/nixos), the gateway's token file, and `nixos-install --root /mnt --flake <tree>#HOST`
# so the installed system boots osModa (the flake's inputs are fetched: it needs the network).
# The ISO's own gateway stays off (no credentials on a live system).
#   nix build .#nixosConfigurations.osmoda-iso.config.system.build.isoImage
{ lib, pkgs, modulesPath, ... }:

{
  imports = [ "${modulesPath}/installer/cd-dvd/installation-cd-minimal.nix" ];

  networking.hostName = "osmoda-installer";

  services.osmoda = {
    enable = true;
    gateway.enable = false;
    # Nothing to roll back on a live system; keep the default health checks only.
    watch.watchers = { };
  };

  environment.systemPackages = [
    (pkgs.writeShellScriptBin "osmoda-install" (builtins.readFile ../../scripts/install.sh))
    pkgs.git
  ];
  services.getty.helpLine = lib.mkAfter ''

    osModa: install NixOS as usual (nixos-generate-config --root /mnt, nixos-install), then run
    `osmoda-install --root /mnt` (online) before you reboot: it installs the new system as osModa.
  '';

  nix.settings.experimental-features = [ "nix-command" "flakes" ];
}
