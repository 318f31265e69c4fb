{ config, pkgs, ... }:
{
  # the host
  networking.hostName = "box";
  services.openssh = {
    enable = true;
    settings = {
      PasswordAuthentication = false;
    };
  };
}
