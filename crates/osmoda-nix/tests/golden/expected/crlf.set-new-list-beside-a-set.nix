{ config, pkgs, ... }:
{
  # the host
  networking.hostName = "box";
  services.openssh = {
    enable = true;
  };
  services.nginx.ports = [
    80
    443
    8080
    8443
    9000
    9001
    9002
    9003
    9004
    9005
    9006
    9007
    9008
  ];
}
