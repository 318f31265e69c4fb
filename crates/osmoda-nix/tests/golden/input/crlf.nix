{ config, pkgs, ... }:
{
  # the host
  networking.hostName = "box";
  services.openssh = {
    enable = true;
  };
}
