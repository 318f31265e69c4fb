{ config, pkgs, ... }:
{
  services.openssh = {
    enable = true;
  };
}
