{ lib, ... }:
with lib;
{
  hardware.pulseaudio.enable = lib.mkDefault true;
  services.openssh.ports = lib.mkDefault [ 22 ];
  boot.loader.timeout = lib.mkOverride 50 (5);
  networking.hostName = mkForce "box";
}
