{ lib, ... }:
{
  services.nginx = lib.mkForce {
    enable = true;
  };
  networking.firewall.allowedTCPPorts = [
    80
    # media server
    32400
    443
  ];
}
