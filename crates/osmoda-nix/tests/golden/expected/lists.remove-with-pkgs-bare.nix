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
  ];
}
