{ config, lib, pkgs, ... }:
{
  services.postgresql.enable = lib.mkDefault false;

  networking.firewall.allowedTCPPorts = [ 80 443 ];
  networking.firewall.enable = true;

  services.osmoda.enable = true;
  services.osmoda.watch.watchers.nginx = {
    check = { type = "systemd"; unit = "nginx.service"; };
    interval = "30s";
  };
}
