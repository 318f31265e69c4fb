{ config, pkgs, ... }:
{
  # the host
  networking.hostName = "box";
  services.openssh = {
    enable = true;
  };
  services.nginx.enable = true;
}
