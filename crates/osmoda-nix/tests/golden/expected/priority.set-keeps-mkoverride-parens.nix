{ lib, ... }:
with lib;
{
  hardware.pulseaudio.enable = lib.mkForce false;
  services.openssh.ports = lib.mkDefault [ 22 ];
  boot.loader.timeout = lib.mkOverride 50 (-1);
  networking.hostName = mkForce "box";
}
