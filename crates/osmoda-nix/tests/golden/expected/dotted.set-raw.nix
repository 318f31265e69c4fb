{ config, lib, pkgs, ... }:
{
  services.nginx.enable = true;
  services.nginx.recommendedTlsSettings = true;
  services.nginx.virtualHosts."example.org".root = "/var/www";
  services.postgresql.enable = lib.mkForce true;

  networking.firewall.allowedTCPPorts = [ 80 443 ];
  networking.firewall.enable = true;

  services.osmoda.enable = true;
  services.osmoda.watch.watchers.nginx = {
    check = { type = "systemd"; unit = "nginx.service"; };
    interval = "30s";
  };
}
