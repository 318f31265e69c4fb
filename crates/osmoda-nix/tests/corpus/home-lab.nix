{ config, pkgs, lib, ... }:
with lib;
let
  media = "/srv/media";
in
{
  imports = [
    { services.jellyfin.enable = mkDefault true; }
  ];
  services.jellyfin.openFirewall = true;
  services.samba = {
    enable = true;
    openFirewall = true;
    settings.media = {
      path = media;
      "read only" = "yes";
    };
  };
  users.users.media = {
    isSystemUser = true;
    group = "media";
  };
  users.groups.media = { };
  networking.firewall.allowedTCPPorts = [
    8096 # jellyfin
    32400 # plex
  ];
  boot.kernel.sysctl."vm.swappiness" = 10;
}
