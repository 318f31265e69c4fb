{ lib, ... }:
{
  services.nginx = lib.mkForce {
    enable = true;
    # the proxy
    recommendedProxySettings = true;
  };
  networking.firewall.allowedTCPPorts = [
    80
    # media server
    32400
    443
  ];
}
