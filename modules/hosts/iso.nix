# Installer ISO: the minimal NixOS installer plus the osModa daemons, so a machine can be
# inspected with agentctl before installation. The gateway stays off (no credentials).
#   nix build .#nixosConfigurations.osmoda-iso.config.system.build.isoImage
{ modulesPath, ... }:

{
  imports = [ "${modulesPath}/installer/cd-dvd/installation-cd-minimal.nix" ];

  networking.hostName = "osmoda-installer";

  services.osmoda = {
    enable = true;
    gateway.enable = false;
    # Nothing to roll back on a live system; keep the default health checks only.
    watch.watchers = { };
  };

  nix.settings.experimental-features = [ "nix-command" "flakes" ];
}
