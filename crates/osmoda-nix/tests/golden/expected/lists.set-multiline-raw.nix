{ config, pkgs, ... }:
{
  networking.firewall.allowedTCPPorts = [
    80
    32400 # media
  ];

  environment.systemPackages = with pkgs; [
    # editors
    vim
    git # version control
    pkgs.curl
  ];
  services.nginx.virtualHosts.x = {
    root = "/srv";
    # served by nginx
    locations."/".index = "index.html";
  };
}
