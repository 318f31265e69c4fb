{ lib, ... }:
with lib;
{
  hardware.pulseaudio.enable = lib.mkForce false;
  services.openssh.ports = lib.mkDefault [ 2222 ];
  boot.loader.timeout = lib.mkOverride 50 (5);
  networking.hostName = mkForce "box";
}
