# Headless server: osModa with the gateway, SSH only, no desktop. The gateway's token is
# created at first boot; add model keys to /var/lib/osmoda/gateway.env. Adjust fileSystems / boot
# loader to the machine (or import its hardware-configuration.nix). Deploy changes to it with
# scripts/push-deploy.sh.
{ lib, ... }:

{
  imports = [ ./gateway-token.nix ];

  networking.hostName = lib.mkDefault "osmoda-server";

  services.osmoda = {
    enable = true;
    # Overridden off by the flake until the bridge package exists.
    gateway.enable = lib.mkDefault true;
    gateway.environmentFile = "/var/lib/osmoda/gateway.env";
    watch.watchers.sshd = {
      check = { type = "systemd"; unit = "sshd.service"; };
      actions = [ "restart" "rollback" "notify" ];
    };
    watch.watchers.root-disk = {
      check = { type = "disk"; path = "/"; minFreePercent = 10; };
      intervalSecs = 300;
      actions = [ "notify" ];
    };
  };

  services.openssh = {
    enable = true;
    settings.PasswordAuthentication = false;
    settings.PermitRootLogin = "prohibit-password";
  };
  networking.firewall.allowedTCPPorts = [ 22 ];

  boot.loader.grub.enable = lib.mkDefault true;
  boot.loader.grub.device = lib.mkDefault "/dev/sda";
  fileSystems."/" = lib.mkDefault { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };

  nix.settings.experimental-features = [ "nix-command" "flakes" ];
  system.stateVersion = "24.11";
}
