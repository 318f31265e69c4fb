# This file is yours: edit it by hand like any NixOS configuration.
# agentd notices uncommitted edits and reports them as drift; record them as a
# generation with `agentctl config commit -m "why"`.
#
# Settings the agent manages live in ./osmoda.nix (plain data, one value per
# option), so that its edits and yours rarely touch the same file.
{ config, pkgs, lib, ... }:

{
  imports = [ ./osmoda.nix ];

  networking.hostName = "osmoda";
  time.timeZone = "UTC";
  i18n.defaultLocale = "en_US.UTF-8";

  # Adjust to your disk layout (nixos-generate-config writes these for you).
  boot.loader.grub.enable = true;
  boot.loader.grub.device = "/dev/vda";
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };

  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
    settings.PermitRootLogin = "prohibit-password";
  };

  networking.firewall = {
    enable = true;
    allowedTCPPorts = [ 22 ];
  };

  environment.systemPackages = with pkgs; [
    git
    htop
    curl
  ];

  nix.settings.experimental-features = [ "nix-command" "flakes" ];

  # The NixOS release this machine was first installed with; do not bump it
  # on upgrades (see `man configuration.nix`).
  system.stateVersion = "24.11";
}
